//! The repository a command works on, and the fixed experiment state read from a commit.

use std::path::{Path, PathBuf};

use git2::Repository;

use crate::error::{Error, GitContext, IoContext, Result};
use crate::experiment::{EXPERIMENT_FILE, Experiment, SPLITS_FILE, Splits};
use crate::lineage;

/// An open harness repository.
pub struct Workspace {
    pub repo: Repository,
}

/// The fixed experiment state of one commit.
#[derive(Debug, Clone)]
pub struct Fixed {
    pub experiment: Experiment,
    pub splits: Splits,
}

impl Workspace {
    /// Open the repository of the current directory as it is; commands open it through
    /// `method::open_workspace`, which also finishes what a killed earlier command left.
    pub fn open() -> Result<Self> {
        Ok(Workspace {
            repo: lineage::open_repo()?,
        })
    }

    pub fn from_repo(repo: Repository) -> Self {
        Workspace { repo }
    }

    /// The worktree root, or the git dir for bare repositories.
    pub fn root(&self) -> PathBuf {
        self.repo
            .workdir()
            .unwrap_or_else(|| self.repo.path())
            .to_path_buf()
    }

    /// Where rebuildable local state lives (`.git/harness/`).
    /// The repository's git directory (`.git`, or wherever `GIT_DIR` points).
    pub fn git_dir(&self) -> PathBuf {
        self.repo.path().to_path_buf()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.repo.path().join("harness")
    }

    /// `.harness/experiment.yaml` and `.harness/splits.yaml` as committed in `commit`.
    pub fn fixed_at(&self, commit: &git2::Commit<'_>) -> Result<Fixed> {
        let tree = commit.tree().git("read tree")?;
        let read = |path: &str| -> Result<String> {
            let entry = tree.get_path(Path::new(path)).map_err(|_| {
                Error::usage_hint(
                    format!(
                        "{path} is missing in commit {}",
                        lineage::short(commit.id())
                    ),
                    "run `git harness init` to create the fixed experiment files",
                )
            })?;
            let blob = self
                .repo
                .find_blob(entry.id())
                .git(format!("read {path}"))?;
            String::from_utf8(blob.content().to_vec())
                .map_err(|_| Error::config(path, None, "(document)", "is not UTF-8 text"))
        };
        let experiment = Experiment::parse(&read(EXPERIMENT_FILE)?, Path::new(EXPERIMENT_FILE))?;
        let splits = Splits::parse(&read(SPLITS_FILE)?, Path::new(SPLITS_FILE))?;
        Ok(Fixed { experiment, splits })
    }

    /// Harness files (the manifest and paths its declared surfaces match) that the worktree
    /// changes against HEAD, staged, unstaged or new: what a run of HEAD would not see.
    pub fn uncommitted_surface_edits(&self) -> Result<Vec<String>> {
        let repo = &self.repo;
        if repo.is_bare() {
            return Ok(Vec::new());
        }
        let Ok(head) = repo.head().and_then(|h| h.peel_to_commit()) else {
            return Ok(Vec::new());
        };
        let Ok(harness) = crate::harness::Harness::from_commit(repo, &head) else {
            return Ok(Vec::new());
        };
        let mut opts = git2::StatusOptions::new();
        opts.include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_ignored(false);
        let statuses = repo.statuses(Some(&mut opts)).git("read worktree status")?;
        let mut out: Vec<String> = statuses
            .iter()
            .filter(|s| s.status() != git2::Status::CURRENT)
            .filter_map(|s| s.path().ok().map(str::to_string))
            .filter(|p| p == crate::harness::MANIFEST || harness.surface_for(p).is_some())
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The fixed state on main.
    pub fn fixed_on_main(&self) -> Result<Fixed> {
        let main = lineage::main_commit(&self.repo)?;
        self.fixed_at(&main)
    }

    /// The suite directory an experiment names: `builtin:<name>` is extracted once under
    /// `.git/harness/suites/`, a relative path is relative to the repository root.
    pub fn suite_dir(&self, experiment: &Experiment) -> Result<PathBuf> {
        resolve_suite(&experiment.suite.path, &self.root(), &self.state_dir())
    }
}

/// Resolve a suite reference to a directory on disk.
pub fn resolve_suite(spec: &str, root: &Path, state_dir: &Path) -> Result<PathBuf> {
    if let Some(name) = spec.strip_prefix("builtin:") {
        let digest = crate::support::assets::suite_digest(name)
            .ok_or_else(|| Error::usage(format!("no bundled suite `{name}`")))?;
        let dir = state_dir
            .join("suites")
            .join(format!("{name}-{}", &digest[..12]));
        if !dir.exists() {
            let parent = dir.parent().expect("suites dir has a parent");
            std::fs::create_dir_all(parent).at(parent)?;
            // Extract to a temp dir and rename, so a crash never leaves half a suite behind.
            let tmp = tempfile::Builder::new()
                .prefix(".extract-")
                .tempdir_in(parent)
                .at(parent)?;
            crate::support::assets::extract_suite(name, tmp.path())?;
            let staged = tmp.keep();
            if let Err(e) = std::fs::rename(&staged, &dir) {
                let _ = std::fs::remove_dir_all(&staged);
                if !dir.exists() {
                    return Err(Error::io(&dir, e));
                }
            }
        }
        return Ok(dir);
    }
    if spec.contains("://") || spec.starts_with("git@") {
        return Err(Error::usage_hint(
            format!("suite `{spec}` is a git URL"),
            "clone it and set suite.path to the local directory",
        ));
    }
    let p = Path::new(spec);
    let dir = if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    };
    if !dir.is_dir() {
        return Err(Error::config(
            EXPERIMENT_FILE,
            None,
            "suite.path",
            format!("`{}` is not a directory", dir.display()),
        ));
    }
    Ok(dir)
}

impl Workspace {
    /// The experiment fingerprint of `fixed`: config, splits and the suite's task checksums.
    pub fn fingerprint(&self, fixed: &Fixed) -> Result<String> {
        let suite = crate::task::load_suite(&self.suite_dir(&fixed.experiment)?)?;
        Ok(self.fingerprint_of(fixed, &suite))
    }

    /// The experiment fingerprint of `fixed` over the tasks of `suite`.
    pub fn fingerprint_of(&self, fixed: &Fixed, suite: &crate::task::Suite) -> String {
        let sums: Vec<(String, String)> = suite
            .tasks
            .iter()
            .map(|t| (t.id.clone(), t.checksum.clone()))
            .collect();
        crate::experiment::fingerprint(&fixed.experiment, &fixed.splits, &sums)
    }

    /// Task ids of the suite the experiment names.
    pub fn suite_task_ids(&self, fixed: &Fixed) -> Result<Vec<String>> {
        Ok(crate::task::load_suite(&self.suite_dir(&fixed.experiment)?)?.ids())
    }
}
