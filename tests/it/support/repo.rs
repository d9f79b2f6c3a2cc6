//! The one harness repository of the tests: a temp dir holding `home/` (an empty HOME) and
//! `repo/`, made with `git harness init` (and `split` for the demo), driven through the binary
//! and real git in the one hermetic environment, edited with plain git, read back through run
//! refs and notes; snapshots of its output are normalised.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use git_harness::lineage::trailers::CommitMessage;
use git_harness::lineage::{self, Proposal, SplitComparison, ValidationRecord, Verdict, keys};
use git_harness::workspace::Workspace;
use serde_json::Value;

use super::hermetic::{Out, bin, hermetic_in, output};

/// Run the binary in `dir`, outside any repository.
pub fn harness_in(dir: &Path, args: &[&str]) -> Out {
    output(Command::new(bin()).args(args).current_dir(dir))
}

/// A harness repository in a temp dir.
pub struct Repo {
    pub tmp: tempfile::TempDir,
    /// The repository (`<tmp>/repo`, or where `open` was given).
    pub root: PathBuf,
    /// The HOME of its commands (`<tmp>/home`, empty).
    pub home: PathBuf,
}

impl Repo {
    /// A temporary directory whose `repo/` does not exist yet.
    pub fn empty() -> Repo {
        let tmp = tempfile::Builder::new()
            .prefix("gh-test-")
            .tempdir()
            .expect("create temp dir");
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).expect("create home");
        Repo {
            root: tmp.path().join("repo"),
            home,
            tmp,
        }
    }

    /// `git harness init --template TEMPLATE repo` (the demo suite).
    pub fn init(template: &str) -> Repo {
        let r = Repo::empty();
        r.harness_in(r.tmp.path(), &["init", "--template", template, "repo"])
            .ok();
        r
    }

    /// The demo repository: `init` (the minimal template, the demo suite, the sim model) then
    /// `split`.
    pub fn demo() -> Repo {
        let r = Repo::init("minimal");
        r.harness(&["split"]).ok();
        r
    }

    /// An existing repository (made by the binary, e.g. `demo`, or a clone); the caller keeps
    /// its directory.
    pub fn open(root: PathBuf) -> Repo {
        let r = Repo::empty();
        Repo { root, ..r }
    }

    /// A path next to the repository, inside the temp dir.
    pub fn sibling(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
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

    /// `git-harness ARGS` in the repository, not yet run.
    pub fn harness_cmd(&self, args: &[&str]) -> Command {
        self.harness_cmd_in(&self.root, args)
    }

    pub fn harness_cmd_in(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        self.env(&mut cmd);
        cmd.current_dir(dir).args(args);
        cmd
    }

    /// The hermetic environment with this repository's HOME; git looks no higher than its
    /// temp dir.
    fn env(&self, cmd: &mut Command) {
        hermetic_in(cmd, &self.home).env("GIT_CEILING_DIRECTORIES", self.tmp.path());
    }

    /// Run the binary as `git harness ARGS` in the repository.
    pub fn harness(&self, args: &[&str]) -> Out {
        self.harness_in(&self.root, args)
    }

    pub fn harness_in(&self, dir: &Path, args: &[&str]) -> Out {
        self.harness_cmd_in(dir, args)
            .output()
            .expect("run git-harness")
            .into()
    }

    /// `git harness run ARGS --format json`, asserting exit code 0.
    pub fn run_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--format", "json"]);
        let text = self.harness(&all).ok().stdout;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("run json: {e}\n{text}"))
    }

    /// Run real `git ARGS` in `dir`.
    pub fn git_in(&self, dir: &Path, args: &[&str]) -> Out {
        let mut cmd = Command::new("git");
        self.env(&mut cmd);
        cmd.current_dir(dir)
            .args(args)
            .output()
            .expect("run git")
            .into()
    }

    /// Run git in the repository; panics when it fails; returns stdout.
    #[track_caller]
    pub fn git(&self, args: &[&str]) -> String {
        self.git_in(&self.root, args).ok().stdout
    }

    /// The full oid `rev` resolves to.
    pub fn rev(&self, rev: &str) -> String {
        self.git(&["rev-parse", "--verify", rev]).trim().to_string()
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root.join(rel)).unwrap()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.root.join(rel);
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
        let o = self.git_in(
            &self.root,
            &["rev-list", "--count", "refs/harness/test-log", "--"],
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

    /// The repository, opened through the library's git.
    pub fn git2(&self) -> git2::Repository {
        git2::Repository::open(&self.root).expect("open repo")
    }

    /// The current experiment fingerprint on main.
    pub fn fingerprint(&self) -> String {
        let ws = Workspace::from_repo(self.git2());
        let fixed = ws.fixed_on_main().expect("fixed state on main");
        ws.fingerprint(&fixed).expect("fingerprint")
    }

    /// Create proposal `<round>/<slug>` on main through the library: `path` gets `line`
    /// appended, and the message carries the usual trailers.
    pub fn propose(&self, round: u32, slug: &str, path: &str, line: &str) -> Proposal {
        let repo = self.git2();
        let main = lineage::main_commit(&repo).expect("main");
        let tree = main.tree().expect("tree");
        let entry = tree.get_path(Path::new(path)).expect("surface exists");
        let blob = repo.find_blob(entry.id()).expect("blob");
        let mut text = String::from_utf8(blob.content().to_vec()).expect("utf-8");
        text.push_str(line);
        text.push('\n');
        let msg = CommitMessage::new(format!("Add a line to {path}"))
            .body(format!(
                "Why: held-in trials failed the same way.\n\nExpected effect: fewer failures on {path}."
            ))
            .trailer(keys::SURFACE, path)
            .trailer(keys::CLUSTER, "timeout/unverified/no-verification")
            .trailer(keys::EVIDENCE, "count-errors#0, word-count#1")
            .trailer(keys::PARENT, main.id().to_string())
            .trailer(keys::PROPOSER, "test")
            .trailer(keys::ROUND, round.to_string());
        lineage::create_proposal(
            &repo,
            &main,
            round,
            slug,
            &[(path.to_string(), Some(text))],
            &msg,
        )
        .expect("create proposal")
    }

    /// Record an accepting validation of `proposal` against main's current tree under the
    /// current fingerprint, as `git harness validate` would.
    pub fn accept(&self, proposal: &Proposal) -> ValidationRecord {
        self.record(proposal, Verdict::Accept)
    }

    pub fn record(&self, proposal: &Proposal, verdict: Verdict) -> ValidationRecord {
        let fingerprint = self.fingerprint();
        let repo = self.git2();
        let main = lineage::main_commit(&repo).expect("main");
        let candidate = repo.find_commit(proposal.commit).expect("candidate");
        let record = ValidationRecord {
            format: 1,
            candidate: proposal.commit.to_string(),
            candidate_tree: candidate.tree_id().to_string(),
            parent: main.id().to_string(),
            parent_tree: main.tree_id().to_string(),
            fingerprint,
            gate: "strict".into(),
            verdict,
            reason: "held_in +3 and validation +2, sign-flip p=0.031 <= 0.05".into(),
            held_in: SplitComparison {
                parent_passes: 7,
                parent_trials: 40,
                candidate_passes: 10,
                candidate_trials: 40,
            },
            validation: SplitComparison {
                parent_passes: 11,
                parent_trials: 24,
                candidate_passes: 13,
                candidate_trials: 24,
            },
            statistic: Some("sign-flip p=0.031 (m=6) <= 0.05".into()),
            margin: 5.0,
            runs: vec![],
            early_stop: None,
            created_at: "2023-11-14T22:13:20Z".into(),
            decision: None,
        };
        let r = record.clone();
        lineage::update_note(&repo, proposal.commit, move |n| {
            n.validations.push(r.clone())
        })
        .expect("write validation note");
        record
    }

    /// Replace the repository's temp paths and object ids in `text` by stable placeholders.
    pub fn normalise(&self, text: &str) -> String {
        normalise(text, &[(self.tmp.path(), "[TMP]")])
    }

    /// `exit`, `stdout`, `stderr` of a run, normalised, for a snapshot.
    pub fn snapshot(&self, run: &Out) -> String {
        self.normalise(&format!(
            "exit: {}\n--- stdout\n{}--- stderr\n{}",
            run.code, run.stdout, run.stderr
        ))
    }
}

/// Replace `paths` (also canonicalised) by their labels, and object ids by labels numbered by
/// first appearance: a full oid and its 10-digit short form get the same `[C1]`; a 16-digit
/// experiment fingerprint becomes `[FINGERPRINT]`.
pub fn normalise(text: &str, paths: &[(&Path, &str)]) -> String {
    let mut out = text.to_string();
    for (path, label) in paths {
        let mut variants = vec![path.to_string_lossy().into_owned()];
        if let Ok(c) = path.canonicalize() {
            variants.push(c.to_string_lossy().into_owned());
        }
        variants.sort_by_key(|v| std::cmp::Reverse(v.len()));
        for v in variants {
            out = out.replace(&v, label);
        }
    }
    let re = regex::Regex::new(r"\b([0-9a-f]{40}|[0-9a-f]{16}|[0-9a-f]{10})\b").expect("regex");
    let mut labels: HashMap<String, String> = HashMap::new();
    re.replace_all(&out, |c: &regex::Captures<'_>| {
        let hex = &c[1];
        if hex.len() == 16 {
            return "[FINGERPRINT]".to_string();
        }
        let key = hex[..10].to_string();
        let n = labels.len() + 1;
        labels
            .entry(key)
            .or_insert_with(|| format!("[C{n}]"))
            .clone()
    })
    .into_owned()
}

/// `text` with the `kind:` line of its `runner:` section replaced by `block`.
pub fn with_runner_kind(text: &str, block: &str) -> String {
    let runner = text.find("\nrunner:\n").expect("a runner section");
    let start = runner + text[runner..].find("\n  kind:").expect("runner.kind") + 1;
    let end = start + text[start..].find('\n').unwrap() + 1;
    format!("{}{block}{}", &text[..start], &text[end..])
}
