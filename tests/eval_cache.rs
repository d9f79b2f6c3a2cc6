//! Evaluation runs and the trial cache, through the binary on temp demo repositories with the
//! sim model: repeated runs, reworded commits, clones that fetched the harness refs, worktree
//! runs, and the sealed test split.

mod common_eval;

use common_eval::{FAST, Repo, executed, git_in, outcomes, results, scores};

#[test]
fn a_second_run_executes_nothing_and_reports_the_same_numbers() {
    let repo = Repo::demo();
    let args = ["--tasks", FAST, "--trials", "2"];
    let first = repo.run_json(&args);
    assert_eq!(executed(&first), 4, "{first:#}");
    assert!(results(&first).iter().all(|r| r["cached_from"].is_null()));

    let second = repo.run_json(&args);
    assert_eq!(executed(&second), 0, "{second:#}");
    assert_eq!(scores(&second), scores(&first));
    assert_eq!(outcomes(&second), outcomes(&first));
    let first_id = first["run"].as_str().unwrap();
    for r in results(&second) {
        assert_eq!(r["cached_from"], first_id, "{r:#}");
    }
    // Both runs are recorded and noted on the commit.
    assert_eq!(repo.runs().len(), 2);
    let note = repo.note("HEAD");
    let noted: Vec<&str> = note["runs"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r["run"].as_str().unwrap())
        .collect();
    assert!(noted.contains(&first_id));
    assert!(noted.contains(&second["run"].as_str().unwrap()));

    // A reworded harness commit has the same tree: its results come from the cache.
    let before = repo.git(&["rev-parse", "HEAD"]);
    repo.git(&["commit", "--amend", "-m", "Reworded: the same harness"]);
    let after = repo.git(&["rev-parse", "HEAD"]);
    assert_ne!(before, after);
    let third = repo.run_json(&args);
    assert_eq!(third["harness"], after.as_str());
    assert_eq!(executed(&third), 0, "{third:#}");
    assert_eq!(scores(&third), scores(&first));
    assert_eq!(outcomes(&third), outcomes(&first));

    // `--no-cache` executes again, with the same outcomes (same seeds).
    let fourth = repo.run_json(&[&args[..], &["--no-cache"]].concat());
    assert_eq!(executed(&fourth), 4);
    assert_eq!(outcomes(&fourth), outcomes(&first));
}

#[test]
fn a_clone_that_fetched_the_harness_refs_answers_from_cache() {
    let origin = Repo::demo();
    let args = ["--tasks", FAST, "--trials", "1"];
    let first = origin.run_json(&args);
    assert_eq!(executed(&first), 2);

    let clone_dir = origin.sibling("clone");
    git_in(
        origin.home(),
        origin.home(),
        &[
            "clone",
            "--quiet",
            origin.root.to_str().unwrap(),
            clone_dir.to_str().unwrap(),
        ],
    );
    let clone = Repo::at(clone_dir);
    clone.git(&[
        "fetch",
        "--quiet",
        "origin",
        "refs/harness/*:refs/harness/*",
        "refs/notes/harness:refs/notes/harness",
    ]);
    assert!(!clone.root.join(".git/harness/cache").exists());
    let again = clone.run_json(&args);
    assert_eq!(executed(&again), 0, "{again:#}");
    assert_eq!(again["harness"], first["harness"]);
    assert_eq!(scores(&again), scores(&first));
    assert_eq!(outcomes(&again), outcomes(&first));
    // The traces of the reused trials are readable in the clone from the fetched run ref.
    let r = &results(&again)[0];
    let path = format!(
        "refs/harness/runs/{}:{}",
        r["cached_from"].as_str().unwrap(),
        r["trace"].as_str().unwrap()
    );
    let size: u64 = clone.git(&["cat-file", "-s", &path]).parse().unwrap();
    assert_eq!(size, r["trace_bytes"].as_u64().unwrap());
}

#[test]
fn worktree_runs_are_never_cached_as_a_commits_results() {
    let repo = Repo::demo();
    let args = ["--tasks", "word-frequency", "--trials", "1"];
    // The worktree is clean: it holds exactly HEAD's harness, and still is not HEAD.
    let wt = repo.run_json(&[&["--worktree"][..], &args].concat());
    assert_eq!(executed(&wt), 1);
    assert!(results(&wt).iter().all(|r| r["cache_key"].is_null()));
    let wt_again = repo.run_json(&[&["--worktree"][..], &args].concat());
    assert_eq!(executed(&wt_again), 1, "a worktree run reused results");
    // No note on the commit claims the worktree's results.
    let notes = repo.git(&["notes", "--ref=refs/notes/harness", "list"]);
    assert!(notes.is_empty(), "worktree runs left notes: {notes}");

    let committed = repo.run_json(&args);
    assert_eq!(executed(&committed), 1, "{committed:#}");
    assert!(results(&committed)[0]["cached_from"].is_null());
    assert_eq!(outcomes(&committed), outcomes(&wt));
}

#[test]
fn the_test_split_cannot_be_run() {
    let repo = Repo::demo();
    let out = repo.harness(&["run", "--split", "test", "--tasks", "word-frequency"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid value 'test'"), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(repo.runs().is_empty());
    // The help names the splits one may run, and not the sealed one.
    let help = repo.ok(&["run", "--help"]);
    assert!(help.contains("held_in"), "{help}");
    assert!(!help.contains("possible values: held_in, validation, all, test"));
}
