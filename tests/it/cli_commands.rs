//! The foundation commands as a user runs them: init, split, status, log, show, and the exit
//! codes of the binary. stdout, stderr and the exit code are snapshotted.

use crate::support::hermetic::bin;
use crate::support::repo::Repo;
use git_harness::lineage::{self, RunSummary};

/// The demo harness with one promoted proposal, one open, one rejected, one run, and pass rates
/// of main under the current fingerprint.
fn populated() -> Repo {
    let r = Repo::demo();
    let fp = r.fingerprint();
    {
        let repo = r.git2();
        let main = lineage::main_commit(&repo).expect("main").id();
        lineage::update_note(&repo, main, |n| {
            for (split, passes, trials) in [("held_in", 7, 40), ("validation", 11, 24)] {
                n.runs.push(RunSummary {
                    run: "r-main".into(),
                    split: split.into(),
                    fingerprint: fp.clone(),
                    passes,
                    trials,
                    infra_errors: 0,
                    tokens: 0,
                    cost_usd: 0.0,
                    partial: false,
                });
            }
        })
        .expect("note");
        lineage::write_run(
            &repo,
            "r-main",
            Some(main),
            &[("run.yaml".into(), b"id: r-main\n".to_vec())],
            "Run r-main\n",
        )
        .expect("run");
    }
    let promoted = r.propose(
        1,
        "verify-before-submit",
        "prompts/verification.md",
        "Check it.",
    );
    r.accept(&promoted);
    r.harness(&["promote", "1/verify-before-submit"]).ok();
    r.propose(2, "bootstrap-ls", "prompts/bootstrap.md", "Run ls first.");
    let rejected = r.propose(
        2,
        "error-hint",
        "prompts/on_tool_error.md",
        "Read the error.",
    );
    lineage::reject_proposal(&r.git2(), &rejected, "gate rejected").expect("reject");
    r
}

#[test]
fn init_creates_and_commits_the_template() {
    let r = Repo::empty();
    let run = r.harness_in(r.tmp.path(), &["init", "repo"]);
    insta::assert_snapshot!("init", r.snapshot(&run));
    assert_eq!(r.git(&["rev-list", "--count", "main"]).trim(), "1");
    assert_eq!(r.git(&["status", "--porcelain"]), "");
    let files = r.git(&["ls-tree", "-r", "--name-only", "main"]);
    insta::assert_snapshot!("init_files", files);
    // A second init refuses: the harness exists.
    let again = r.harness(&["init"]);
    insta::assert_snapshot!("init_again", r.snapshot(&again));
}

#[test]
fn split_commits_the_splits() {
    let r = Repo::init("minimal");
    let run = r.harness(&["split"]);
    insta::assert_snapshot!("split", r.snapshot(&run));
    assert_eq!(r.git(&["rev-list", "--count", "main"]).trim(), "2");
    assert_eq!(r.git(&["status", "--porcelain"]), "");
    // Nothing to do the second time.
    let again = r.harness(&["split"]);
    insta::assert_snapshot!("split_unchanged", r.snapshot(&again));
    assert_eq!(r.git(&["rev-list", "--count", "main"]).trim(), "2");
}

#[test]
fn status_of_a_fresh_harness() {
    let r = Repo::init("minimal");
    let run = r.harness(&["status"]);
    insta::assert_snapshot!("status_fresh", r.snapshot(&run));
}

#[test]
fn status_with_proposals_and_runs() {
    let r = populated();
    let run = r.harness(&["status"]);
    insta::assert_snapshot!("status", r.snapshot(&run));
}

#[test]
fn log_shows_main_lineage() {
    let r = populated();
    let run = r.harness(&["log"]);
    insta::assert_snapshot!("log", r.snapshot(&run));
}

#[test]
fn log_all_lists_open_rejected_and_promoted_proposals() {
    let r = populated();
    let run = r.harness(&["log", "--all"]);
    insta::assert_snapshot!("log_all", r.snapshot(&run));
}

#[test]
fn log_json_is_valid() {
    let r = populated();
    let run = r.harness(&["log", "--all", "--format", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(v["versions"].as_array().map(Vec::len), Some(3));
    assert_eq!(v["proposals"].as_array().map(Vec::len), Some(3));
    assert_eq!(v["proposals"][0]["state"], "promoted");
    assert_eq!(v["versions"][2]["verdict"], "accept");
}

#[test]
fn show_a_proposal_with_its_validation() {
    let r = Repo::demo();
    let p = r.propose(
        1,
        "verify-before-submit",
        "prompts/verification.md",
        "Check it.",
    );
    r.accept(&p);
    let run = r.harness(&["show", "1/verify-before-submit"]);
    insta::assert_snapshot!("show", r.snapshot(&run));
    // The branch name and the bare slug name the same proposal.
    let by_branch = r.harness(&["show", "harness/proposals/1/verify-before-submit"]);
    assert_eq!(by_branch.stdout, run.stdout);
    let by_slug = r.harness(&["show", "verify-before-submit"]);
    assert_eq!(by_slug.stdout, run.stdout);
}

#[test]
fn show_a_rejected_proposal_and_a_commit() {
    let r = Repo::demo();
    let p = r.propose(
        1,
        "error-hint",
        "prompts/on_tool_error.md",
        "Read the error.",
    );
    lineage::reject_proposal(&r.git2(), &p, "gate rejected").expect("reject");
    let run = r.harness(&["show", "1/error-hint"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout
            .starts_with("proposal 1/error-hint (rejected, refs/harness/rejected/1/error-hint)")
    );
    let run = r.harness(&["show", "main"]);
    // The diff's task ids are the demo suite's, not `show`'s: each split's list is one line.
    let mut text = String::new();
    for line in r.snapshot(&run).lines() {
        let task = line.starts_with("+- ");
        if !(task && text.ends_with("+- [task ids]\n")) {
            text.push_str(if task { "+- [task ids]" } else { line });
            text.push('\n');
        }
    }
    insta::assert_snapshot!("show_commit", text);
}

#[test]
fn show_unknown_revision_is_a_usage_error() {
    let r = Repo::init("minimal");
    let run = r.harness(&["show", "no-such-thing"]);
    insta::assert_snapshot!("show_unknown", r.snapshot(&run));
}

#[test]
fn help_lists_the_exit_codes() {
    let r = Repo::empty();
    let run = r.harness_in(r.tmp.path(), &["--help"]).ok();
    assert!(
        run.stdout.contains(git_harness::exit::TABLE),
        "{}",
        run.stdout
    );
    for (code, what) in [
        (0, "success"),
        (1, "negative"),
        (2, "usage"),
        (3, "indecisive"),
        (125, "could not test"),
        (130, "interrupted"),
    ] {
        let line = run
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{code} ")))
            .unwrap_or_else(|| panic!("no exit code {code} in --help"));
        assert!(line.contains(what), "{line}");
    }
    // Through git, as `git harness -h` (git itself turns `git harness --help` into `git help
    // harness`, which looks for a man page).
    let via_git = r.git_in(r.tmp.path(), &["harness", "-h"]).ok();
    assert!(via_git.stdout.contains(git_harness::exit::TABLE));
    assert!(via_git.stdout.contains("Usage: git harness"));
}

#[test]
fn an_internal_error_exits_70_not_125() {
    // 125 is "could not test", which CI reads as flaky infrastructure; a filesystem that refuses
    // a write is neither the sandbox nor the model.
    let r = Repo::empty();
    let file = r.tmp.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let run = r.harness_in(
        r.tmp.path(),
        &["install-man", "--prefix", file.to_str().unwrap()],
    );
    assert_eq!(run.code, 70, "{run:#?}");
    assert_eq!(run.code, git_harness::exit::INTERNAL);
    assert!(run.stderr.contains("not-a-dir"), "{}", run.stderr);
    let help = r.harness_in(r.tmp.path(), &["--help"]).ok();
    let line = help
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("70 "))
        .unwrap_or_else(|| panic!("no exit code 70 in --help"));
    assert!(line.contains("internal"), "{line}");
}

#[test]
fn version_exits_0() {
    let r = Repo::empty();
    let run = r.harness_in(r.tmp.path(), &["--version"]).ok();
    assert!(run.stdout.starts_with("git-harness "), "{}", run.stdout);
}

#[test]
fn unknown_subcommand_exits_2() {
    let r = Repo::empty();
    let run = r.harness_in(r.tmp.path(), &["frobnicate"]);
    assert_eq!(run.code, git_harness::exit::USAGE);
    // clap's wording is clap's: the test holds what is ours (exit 2, the word named, no stdout).
    assert!(run.stdout.is_empty(), "{run:#?}");
    assert!(
        run.stderr.contains("'frobnicate'") && run.stderr.contains("git harness"),
        "{run:#?}"
    );
    let run = r.harness_in(r.tmp.path(), &["log", "--no-such-flag"]);
    assert_eq!(run.code, 2);
    let run = r.harness_in(r.tmp.path(), &[]);
    assert_eq!(run.code, 2, "no subcommand is a usage error: {run:#?}");
}

#[test]
fn outside_a_repository_gives_a_hint() {
    let r = Repo::empty();
    for cmd in ["status", "log", "split"] {
        let run = r.harness_in(r.tmp.path(), &[cmd]);
        assert_eq!(run.code, 2, "{cmd}: {run:#?}");
        assert!(
            run.stderr.contains("hint: run `git harness init`"),
            "{cmd}: {}",
            run.stderr
        );
    }
    let run = r.harness_in(r.tmp.path(), &["status"]);
    insta::assert_snapshot!("outside_repository", r.snapshot(&run));
}

#[test]
fn a_repository_without_a_harness_gives_a_hint() {
    let r = Repo::empty();
    std::fs::create_dir_all(&r.root).expect("mkdir");
    r.git(&["init", "-q", "-b", "main"]);
    let run = r.harness(&["status"]);
    insta::assert_snapshot!("no_harness", r.snapshot(&run));
}

#[test]
fn dash_c_runs_in_another_directory() {
    let r = Repo::init("minimal");
    let root = r.root.to_string_lossy().into_owned();
    let run = r.harness_in(r.tmp.path(), &["-C", &root, "status"]).ok();
    assert!(run.stdout.starts_with("harness   main "), "{}", run.stdout);
    assert!(bin().exists());
}
