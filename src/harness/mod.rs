//! A harness: the manifest (`harness.yaml`), its declared editable surfaces, and the files of
//! those surfaces, loaded from a commit's tree or from a directory.

pub mod ci;
pub mod init;
mod manifest;

use std::collections::BTreeMap;
use std::path::Path;

pub use manifest::{Bounds, Manifest, Protocol, Surface, SurfaceKind};

use crate::error::{Error, GitContext, IoContext, Result};

pub const MANIFEST: &str = "harness.yaml";
/// Fixed experiment state; never an editable surface.
pub const FIXED_DIR: &str = ".harness";

/// A harness as committed (or as in a worktree): manifest plus every file outside `.harness/`.
#[derive(Debug, Clone)]
pub struct Harness {
    pub manifest: Manifest,
    /// Path (relative, `/`-separated) -> UTF-8 content, for every file of the harness except
    /// `.harness/`.
    pub files: BTreeMap<String, String>,
}

impl Harness {
    /// Build from already-read files; validates the manifest.
    pub fn from_files(files: BTreeMap<String, String>) -> Result<Self> {
        let text = files.get(MANIFEST).ok_or_else(|| {
            Error::usage_hint(
                format!("no {MANIFEST} in the harness"),
                "run `git harness init` to create a harness repository",
            )
        })?;
        let manifest = Manifest::parse(text, Path::new(MANIFEST))?;
        Ok(Harness { manifest, files })
    }

    /// Load from a commit's tree (not the worktree).
    pub fn from_commit(repo: &git2::Repository, commit: &git2::Commit<'_>) -> Result<Self> {
        let tree = commit.tree().git("read the harness tree")?;
        let mut files = BTreeMap::new();
        let mut failure = None;
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if dir.is_empty() && entry.name().ok() == Some(FIXED_DIR) {
                return git2::TreeWalkResult::Skip;
            }
            if entry.kind() == Some(git2::ObjectType::Blob) {
                let path = format!("{dir}{}", entry.name().unwrap_or_default());
                match entry.to_object(repo).and_then(|o| o.peel_to_blob()) {
                    Ok(blob) => {
                        // Binary files are not surfaces; leave them out.
                        if let Ok(s) = std::str::from_utf8(blob.content()) {
                            files.insert(path, s.to_string());
                        }
                    }
                    Err(e) => {
                        failure = Some(e);
                        return git2::TreeWalkResult::Abort;
                    }
                }
            }
            git2::TreeWalkResult::Ok
        })
        .git("walk the harness tree")?;
        if let Some(e) = failure {
            return Err(e).git("read a harness file");
        }
        Self::from_files(files)
    }

    /// Load from a directory on disk (the worktree), skipping `.git` and `.harness`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut files = BTreeMap::new();
        read_dir_into(dir, dir, &mut files)?;
        Self::from_files(files)
    }

    pub fn file(&self, path: &str) -> Option<&str> {
        self.files.get(path).map(String::as_str)
    }

    /// The surface that declares `path`, if any.
    pub fn surface_for(&self, path: &str) -> Option<&Surface> {
        self.manifest.surface_for(path)
    }
}

/// Check that a harness file parses as what its location says it is (YAML of tools, middleware,
/// checks; prompt templates compile). Used by `init` and by the proposal checker.
pub fn validate_file(path: &str, content: &str) -> Result<()> {
    if path.ends_with(".yaml") || path.ends_with(".yml") {
        serde_yaml::from_str::<serde_yaml::Value>(content).map_err(|e| {
            Error::config(
                path,
                e.location().map(|l| l.line()),
                "(document)",
                e.to_string(),
            )
        })?;
    }
    if path.starts_with("prompts/") && path.ends_with(".md") {
        let env = minijinja::Environment::new();
        env.template_from_str(content).map_err(|e| {
            Error::config(
                path,
                e.line(),
                "(template)",
                format!("does not compile: {e}"),
            )
        })?;
    }
    Ok(())
}

fn read_dir_into(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .at(dir)?
        .collect::<std::io::Result<_>>()
        .at(dir)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        if dir == root && (name == ".git" || name == FIXED_DIR) {
            continue;
        }
        let ft = entry.file_type().at(&path)?;
        if ft.is_dir() {
            read_dir_into(root, &path, out)?;
        } else if ft.is_file() {
            let bytes = std::fs::read(&path).at(&path)?;
            if let Ok(s) = String::from_utf8(bytes) {
                let rel = path
                    .strip_prefix(root)
                    .expect("walked below root")
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(rel, s);
            }
        }
    }
    Ok(())
}
