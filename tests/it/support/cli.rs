//! Shared fixture of the CLI integration tests: a temporary harness repository, the built
//! `git-harness` binary and real `git`, both run with a hermetic environment (no user or system
//! config, fixed identities and dates, UTC, no colour, CI mode).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;

use git_harness::lineage::trailers::CommitMessage;
use git_harness::lineage::{self, Proposal, SplitComparison, ValidationRecord, Verdict, keys};
use git_harness::workspace::Workspace;

/// The fixed date of every commit the CLI and git make in tests.
pub const DATE: &str = "@1700000000 +0000";

/// The built binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_git-harness"))
}

/// A temporary directory holding `home/` (an empty HOME) and `repo/` (the harness repository).
pub struct Repo {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub home: PathBuf,
}

/// What a command did: the one output type of the support module.
pub use super::hermetic::Out as Run;

fn from_output(o: Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// libgit2 inside the test process must not read the developer's config either.
fn hermetic_libgit2(empty: &Path) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for level in [
            git2::ConfigLevel::System,
            git2::ConfigLevel::XDG,
            git2::ConfigLevel::Global,
            git2::ConfigLevel::ProgramData,
        ] {
            // SAFETY: called once, before this process uses libgit2 configuration.
            unsafe { git2::opts::set_search_path(level, empty) }
                .expect("set libgit2 config search path");
        }
    });
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
        static EMPTY: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        let empty = EMPTY.get_or_init(|| tempfile::tempdir().expect("create empty dir"));
        hermetic_libgit2(empty.path());
        Repo {
            root: tmp.path().join("repo"),
            home,
            tmp,
        }
    }

    /// `git harness init repo` (the demo suite, minimal template).
    pub fn init() -> Repo {
        let r = Repo::empty();
        r.harness_in(r.tmp.path(), &["init", "repo"]).ok();
        r
    }

    /// `init` then `split`.
    pub fn init_split() -> Repo {
        let r = Repo::init();
        r.harness(&["split"]).ok();
        r
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", path_with_bin())
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CEILING_DIRECTORIES", self.tmp.path())
            .env("GIT_AUTHOR_NAME", "Ada Tester")
            .env("GIT_AUTHOR_EMAIL", "ada@example.com")
            .env("GIT_COMMITTER_NAME", "Ada Tester")
            .env("GIT_COMMITTER_EMAIL", "ada@example.com")
            .env("GIT_AUTHOR_DATE", DATE)
            .env("GIT_COMMITTER_DATE", DATE)
            .env("TZ", "UTC")
            .env("LC_ALL", "C")
            .env("CI", "true")
            .env("NO_COLOR", "1");
    }

    /// A `git-harness` command in the repository, not yet run.
    pub fn harness_cmd(&self, args: &[&str]) -> Command {
        self.harness_cmd_in(&self.root, args)
    }

    pub fn harness_cmd_in(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        self.env(&mut cmd);
        cmd.current_dir(dir).args(args);
        cmd
    }

    /// Run `git-harness ARGS` in the repository.
    pub fn harness(&self, args: &[&str]) -> Run {
        self.harness_in(&self.root, args)
    }

    pub fn harness_in(&self, dir: &Path, args: &[&str]) -> Run {
        let out = self
            .harness_cmd_in(dir, args)
            .output()
            .expect("run git-harness");
        from_output(out)
    }

    /// Run real `git ARGS` in `dir`.
    pub fn git_in(&self, dir: &Path, args: &[&str]) -> Run {
        let mut cmd = Command::new("git");
        self.env(&mut cmd);
        let out = cmd.current_dir(dir).args(args).output().expect("run git");
        from_output(out)
    }

    /// Run real `git ARGS` in the repository; panics unless it succeeds; returns stdout.
    pub fn git(&self, args: &[&str]) -> String {
        self.git_in(&self.root, args).ok().stdout
    }

    /// The full oid `rev` resolves to.
    pub fn rev(&self, rev: &str) -> String {
        self.git(&["rev-parse", "--verify", rev]).trim().to_string()
    }

    /// The repository, opened through the library's git.
    pub fn open(&self) -> git2::Repository {
        git2::Repository::open(&self.root).expect("open repo")
    }

    /// The current experiment fingerprint on main.
    pub fn fingerprint(&self) -> String {
        let ws = Workspace::from_repo(self.open());
        let fixed = ws.fixed_on_main().expect("fixed state on main");
        ws.fingerprint(&fixed).expect("fingerprint")
    }

    /// Create proposal `<round>/<slug>` on main through the library: `path` gets `line`
    /// appended, and the message carries the usual trailers.
    pub fn propose(&self, round: u32, slug: &str, path: &str, line: &str) -> Proposal {
        let repo = self.open();
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
        let repo = self.open();
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
    pub fn snapshot(&self, run: &Run) -> String {
        self.normalise(&format!(
            "exit: {}\n--- stdout\n{}--- stderr\n{}",
            run.code, run.stdout, run.stderr
        ))
    }
}

fn path_with_bin() -> std::ffi::OsString {
    let dir = bin().parent().expect("bin dir").to_path_buf();
    let mut paths = vec![dir];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).expect("join PATH")
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
