//! The harness repository of the tests that drive the binary on a template: made with
//! `git harness init --template`, edited with plain git, read back through run refs and notes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

use super::hermetic::{Out, output};

/// Run the binary in `dir`, outside any repository.
pub fn harness_in(dir: &Path, args: &[&str]) -> Out {
    output(
        Command::new(env!("CARGO_BIN_EXE_git-harness"))
            .args(args)
            .current_dir(dir),
    )
}

/// A harness repository in a temp dir.
pub struct Repo {
    _tmp: tempfile::TempDir,
    pub path: PathBuf,
}

impl Repo {
    /// `git harness init --template TEMPLATE DIR`.
    pub fn init(template: &str) -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("h");
        output(
            Command::new(env!("CARGO_BIN_EXE_git-harness"))
                .args(["init", "--template", template])
                .arg(&path)
                .current_dir(tmp.path()),
        )
        .ok();
        Repo { _tmp: tmp, path }
    }

    /// An existing repository (made by the binary, e.g. `demo`); the caller keeps its temp dir.
    pub fn open(path: PathBuf) -> Repo {
        Repo {
            _tmp: tempfile::tempdir().unwrap(),
            path,
        }
    }

    /// A template repository with the loop tests' small splits and the demo's lowered
    /// budgets, committed.
    pub fn small(template: &str) -> Repo {
        use super::loops::{HELD_IN, TEST, VALIDATION};
        let repo = Repo::init(template);
        repo.splits(HELD_IN, VALIDATION, TEST);
        repo.edit_experiment(|t| {
            t.replace("max_turns: 30", "max_turns: 16")
                .replace("max_tool_calls: 40", "max_tool_calls: 24")
                .replace("command_timeout_sec: 60", "command_timeout_sec: 20")
        });
        repo
    }

    /// Run the binary as `git harness ARGS` in the repository.
    pub fn harness(&self, args: &[&str]) -> Out {
        harness_in(&self.path, args)
    }

    /// Run git; panics when it fails.
    #[track_caller]
    pub fn git(&self, args: &[&str]) -> String {
        output(Command::new("git").args(args).current_dir(&self.path))
            .ok()
            .stdout
    }

    pub fn rev(&self, rev: &str) -> String {
        self.git(&["rev-parse", rev]).trim().to_string()
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path.join(rel)).unwrap()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn commit_all(&self, msg: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", msg]);
    }

    /// Write and commit `.harness/splits.yaml`.
    pub fn splits(&self, held_in: &[&str], validation: &[&str], test: &[&str]) {
        let list = |ids: &[&str]| ids.iter().map(|i| format!("- {i}\n")).collect::<String>();
        self.write(
            ".harness/splits.yaml",
            &format!(
                "held_in:\n{}validation:\n{}test:\n{}",
                list(held_in),
                list(validation),
                list(test)
            ),
        );
        self.commit_all("Fix small splits for the test");
    }

    /// Rewrite and commit `.harness/experiment.yaml`.
    pub fn edit_experiment(&self, f: impl FnOnce(&str) -> String) {
        let old = self.read(".harness/experiment.yaml");
        let new = f(&old);
        assert_ne!(old, new, "the experiment edit changed nothing");
        self.write(".harness/experiment.yaml", &new);
        self.commit_all("Adjust the experiment for the test");
    }

    /// Replace the `key: value` line of the experiment's top level.
    pub fn set_experiment(&self, key: &str, value: &str) {
        let prefix = format!("{key}:");
        self.edit_experiment(|t| {
            t.lines()
                .map(|l| {
                    if l.starts_with(&prefix) {
                        format!("{key}: {value}")
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
        });
    }

    /// A proposal branch `harness/proposals/<round>/<slug>`: one commit on `base` writing
    /// `files`, made with plain git; main stays checked out.
    pub fn proposal(&self, round: u32, slug: &str, base: &str, files: &[(&str, &str)]) -> String {
        let branch = format!("harness/proposals/{round}/{slug}");
        let here = self.git(&["symbolic-ref", "--short", "HEAD"]);
        self.git(&["checkout", "-q", "-b", &branch, base]);
        for (path, text) in files {
            self.write(path, text);
        }
        self.git(&["add", "-A"]);
        self.git(&[
            "commit",
            "-q",
            "-m",
            &format!("Proposal {slug}\n\nHarness-Surface: {}", files[0].0),
        ]);
        self.git(&["checkout", "-q", here.trim()]);
        format!("{round}/{slug}")
    }

    /// Every run ref's id.
    pub fn runs(&self) -> Vec<String> {
        self.git(&["for-each-ref", "--format=%(refname)", "refs/harness/runs/"])
            .lines()
            .map(|l| l.trim_start_matches("refs/harness/runs/").to_string())
            .collect()
    }

    /// A run's `run.yaml`.
    pub fn run_yaml(&self, id: &str) -> serde_yaml::Value {
        serde_yaml::from_str(&self.git(&["show", &format!("refs/harness/runs/{id}:run.yaml")]))
            .unwrap()
    }

    /// A run's `results.jsonl`, one value per trial.
    pub fn results(&self, id: &str) -> Vec<Value> {
        self.git(&["show", &format!("refs/harness/runs/{id}:results.jsonl")])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Commits on `refs/harness/test-log` (0 when it does not exist).
    pub fn test_log_len(&self) -> usize {
        let o = output(
            Command::new("git")
                .args(["rev-list", "--count", "refs/harness/test-log", "--"])
                .current_dir(&self.path),
        );
        if o.code != 0 {
            return 0;
        }
        o.stdout.trim().parse().unwrap()
    }

    /// The git notes of a commit under `refs/notes/harness`, parsed.
    pub fn note(&self, rev: &str) -> Value {
        let text = self.git(&["notes", "--ref=refs/notes/harness", "show", rev]);
        serde_json::from_str(&text)
            .or_else(|_| serde_yaml::from_str(&text))
            .unwrap()
    }
}
