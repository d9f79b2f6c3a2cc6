//! A harness: the manifest (`harness.yaml`), its declared editable surfaces, and the files of
//! those surfaces, loaded from a commit's tree or from a directory.

pub mod ci;
pub mod init;
mod manifest;

use std::collections::BTreeMap;
use std::path::Path;

pub use manifest::{AgentApi, AgentSpec, Bounds, Manifest, Protocol, Surface, SurfaceKind};

use crate::error::{Error, GitContext, IoContext, Result};

pub const MANIFEST: &str = "harness.yaml";
pub use crate::lineage::FIXED_DIR;

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
        let mut broken = None;
        let walked = tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if dir.is_empty() && entry.name().ok() == Some(FIXED_DIR) {
                return git2::TreeWalkResult::Skip;
            }
            if entry.kind() == Some(git2::ObjectType::Blob) {
                let path = format!("{dir}{}", entry.name().unwrap_or_default());
                match entry.to_object(repo).and_then(|o| o.peel_to_blob()) {
                    Ok(blob) => match must_be_text(&path, blob.content().to_vec()) {
                        Ok(Some(s)) => {
                            files.insert(path, s);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            broken = Some(e);
                            return git2::TreeWalkResult::Abort;
                        }
                    },
                    Err(e) => {
                        failure = Some(e);
                        return git2::TreeWalkResult::Abort;
                    }
                }
            }
            git2::TreeWalkResult::Ok
        });
        // An aborted walk reports itself as a git error; the reason recorded is the real one.
        if let Some(e) = broken {
            return Err(e);
        }
        if let Some(e) = failure {
            return Err(e).git("read a harness file");
        }
        walked.git("walk the harness tree")?;
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

/// The directories the built-in runtime reads, with the extension of the files it loads from
/// each: only direct children are loaded.
const RUNTIME_DIRS: [(&str, &str); 4] = [
    ("tools", ".yaml"),
    ("middleware", ".yaml"),
    ("checks", ".yaml"),
    ("prompts", ".md"),
];

/// Whether the runtime reads `path`: `Some(true)` loaded, `Some(false)` inside one of its
/// directories but ignored (nested, or another extension), `None` elsewhere.
fn runtime_reads(path: &str) -> Option<bool> {
    RUNTIME_DIRS.iter().find_map(|(dir, ext)| {
        let rest = path.strip_prefix(dir)?.strip_prefix('/')?;
        Some(!rest.contains('/') && rest.ends_with(ext))
    })
}

/// Why the runtime would ignore `path` although it lies in one of the directories it reads.
pub fn ignored_by_runtime(path: &str) -> Option<String> {
    let (dir, ext) = RUNTIME_DIRS
        .iter()
        .find(|(dir, _)| path.strip_prefix(dir).is_some_and(|r| r.starts_with('/')))?;
    (runtime_reads(path) == Some(false))
        .then(|| format!("`{path}` would be ignored: the runtime loads only `{dir}/<name>{ext}`"))
}

/// Files that must be text because they are read as such: the manifest and what the runtime
/// loads. Other binary files are simply not surfaces.
fn must_be_text(path: &str, bytes: Vec<u8>) -> Result<Option<String>> {
    match String::from_utf8(bytes) {
        Ok(s) => Ok(Some(s)),
        Err(e) if path == MANIFEST || runtime_reads(path) == Some(true) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
            Err(Error::Config {
                file: path.into(),
                line: Some(line),
                field: "(file)".into(),
                message: format!(
                    "is not UTF-8 text (invalid byte 0x{:02x} at offset {at})",
                    bytes[at]
                ),
                hint: Some("save the file as UTF-8".into()),
            })
        }
        Err(_) => Ok(None),
    }
}

/// Why `path` cannot name a harness file, if it cannot. A harness path is relative,
/// `/`-separated and already normal: no `.`, `..` or empty components, no backslashes, nothing
/// inside `.git`. Checked before anything else looks at a path, so a path that merely matches a
/// surface glob (`tools/../harness.yaml`) can never slip past the other checks.
pub fn path_problem(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("the path is empty".into());
    }
    if path.starts_with('/') {
        return Some(format!(
            "`{path}` is absolute; harness paths are relative to the repository root"
        ));
    }
    if path.contains('\\') {
        return Some(format!(
            "`{path}` contains a backslash; harness paths use `/`"
        ));
    }
    if path.chars().any(char::is_control) {
        return Some(format!(
            "`{}` contains a control character",
            path.escape_debug()
        ));
    }
    for c in path.split('/') {
        let why = match c {
            "" => "an empty component",
            "." => "a `.` component",
            ".." => "a `..` component",
            _ if c.eq_ignore_ascii_case(".git") => "a `.git` component",
            _ => continue,
        };
        return Some(format!("`{path}` has {why}; give the file's normal path"));
    }
    None
}

/// Check that a `.yaml`/`.yml`/`.json` file parses (the files of agent programs).
pub fn validate_yaml(path: &str, content: &str) -> Result<()> {
    if path.ends_with(".yaml") || path.ends_with(".yml") || path.ends_with(".json") {
        serde_yaml::from_str::<serde_yaml::Value>(content).map_err(|e| {
            Error::config(
                path,
                e.location().map(|l| l.line()),
                "(document)",
                e.to_string(),
            )
        })?;
    }
    Ok(())
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
            let rel = path
                .strip_prefix(root)
                .expect("walked below root")
                .to_string_lossy()
                .replace('\\', "/");
            if let Some(s) = must_be_text(&rel, bytes)? {
                out.insert(rel, s);
            }
        }
    }
    Ok(())
}
