//! Shared support of the `eval_*` tests: hermetic temp harness repositories driven through the
//! binary as a user would, and helpers to read `git harness run --format json` answers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A small selection of demo tasks that finish in about a second or two each with the sim,
/// one held_in and one validation task, one of them passing under the minimal harness.
pub const FAST: &str = "{word-frequency,fizzbuzz-script}";
/// Four fast demo tasks (held_in and validation).
pub const FOUR: &str = "{word-frequency,sort-scores,top-ips,sum-in-subdir}";

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_git-harness"))
}

/// Make `cmd` hermetic: no user or system git config, fixed identity and dates, UTC, CI.
pub fn hermetic<'a>(cmd: &'a mut Command, home: &Path) -> &'a mut Command {
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_CEILING_DIRECTORIES",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_NAME", "Test Committer")
        .env("GIT_COMMITTER_EMAIL", "committer@example.com")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
        .env("HOME", home)
        .env("TZ", "UTC")
        .env("CI", "true")
        .env("NO_COLOR", "1")
}

/// A harness repository in a temp dir, made with `git harness init` and `git harness split`.
pub struct Repo {
    tmp: tempfile::TempDir,
    pub root: PathBuf,
}

impl Repo {
    /// A fresh demo repository: the bundled suite, the sim model, the local sandbox.
    pub fn demo() -> Repo {
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().join("repo");
        let r = Repo { tmp, root };
        let out = r.harness_in(r.tmp.path(), &["init", "repo"]);
        assert_ok(&out, "init");
        r.ok(&["split"]);
        r
    }

    /// An existing repository (e.g. a clone) sharing this temp dir's lifetime conventions.
    pub fn at(root: PathBuf) -> Repo {
        let tmp = tempfile::tempdir().expect("temp dir");
        Repo { tmp, root }
    }

    pub fn home(&self) -> &Path {
        self.tmp.path()
    }

    /// A path next to the repository, inside the temp dir.
    pub fn sibling(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `git harness ARGS` in the repository, not yet started.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        hermetic(&mut c, self.tmp.path());
        c.args(args).current_dir(&self.root);
        c
    }

    fn harness_in(&self, dir: &Path, args: &[&str]) -> Output {
        let mut c = Command::new(bin());
        hermetic(&mut c, self.tmp.path());
        c.args(args)
            .current_dir(dir)
            .output()
            .expect("run git-harness")
    }

    pub fn harness(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run git-harness")
    }

    /// `git harness ARGS`, asserting exit code 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.harness(args);
        assert_ok(&out, &args.join(" "));
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// `git harness run ARGS --format json`, asserting exit code 0.
    pub fn run_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--format", "json"]);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("run json: {e}\n{text}"))
    }

    /// The real git in the repository, asserting success; returns stdout trimmed.
    pub fn git(&self, args: &[&str]) -> String {
        git_in(&self.root, self.tmp.path(), args)
    }

    /// Lines journaled so far by unfinished runs: (run id, lines).
    pub fn journal_lines(&self) -> Vec<(String, usize)> {
        let dir = self.root.join(".git/harness/journal");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut v: Vec<(String, usize)> = rd
            .filter_map(|e| e.ok())
            .map(|e| {
                let id = e.file_name().to_string_lossy().into_owned();
                let n = std::fs::read(e.path().join("journal.jsonl"))
                    .map(|b| b.iter().filter(|c| **c == b'\n').count())
                    .unwrap_or(0);
                (id, n)
            })
            .collect();
        v.sort();
        v
    }

    /// Ids of the recorded runs (`refs/harness/runs/*`).
    pub fn runs(&self) -> Vec<String> {
        let out = self.git(&[
            "for-each-ref",
            "--format=%(refname:strip=3)",
            "refs/harness/runs/",
        ]);
        out.lines().map(str::to_string).collect()
    }

    /// The harness note of a commit, parsed (YAML).
    pub fn note(&self, rev: &str) -> serde_yaml::Value {
        let text = self.git(&["notes", "--ref=refs/notes/harness", "show", rev]);
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("note of {rev}: {e}\n{text}"))
    }
}

pub fn git_in(dir: &Path, home: &Path, args: &[&str]) -> String {
    let mut c = Command::new("git");
    hermetic(&mut c, home);
    let out = c.args(args).current_dir(dir).output().expect("run git");
    assert!(
        out.status.success(),
        "git {}: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "git harness {what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn executed(v: &Value) -> u64 {
    v["executed"].as_u64().expect("executed")
}

pub fn results(v: &Value) -> &Vec<Value> {
    v["results"].as_array().expect("results")
}

/// Per trial: (task, trial) -> (outcome, reward, seed, failed tests).
pub fn outcomes(v: &Value) -> BTreeMap<(String, u64), (String, String, u64, String)> {
    results(v)
        .iter()
        .map(|r| {
            (
                (
                    r["task"].as_str().expect("task").to_string(),
                    r["trial"].as_u64().expect("trial"),
                ),
                (
                    r["outcome"].as_str().expect("outcome").to_string(),
                    r["reward"].to_string(),
                    r["seed"].as_u64().expect("seed"),
                    r["verifier"]["failed_tests"].to_string(),
                ),
            )
        })
        .collect()
}

/// The numbers a user compares between runs, per split: (passes, trials, infra errors).
pub fn scores(v: &Value) -> BTreeMap<String, (u64, u64, u64)> {
    v["totals"]
        .as_object()
        .expect("totals")
        .iter()
        .map(|(split, t)| {
            (
                split.clone(),
                (
                    t["passes"].as_u64().expect("passes"),
                    t["trials"].as_u64().expect("trials"),
                    t["infra_errors"].as_u64().expect("infra_errors"),
                ),
            )
        })
        .collect()
}

/// Wait until `f` is true, polling; panics after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
