//! Evaluation runs and the trial cache, through the binary on temp demo repositories with the
//! sim model: repeated runs, reworded commits, clones that fetched the harness refs, worktree
//! runs, and the sealed test split.

use crate::support::eval::{FAST, executed, outcomes, results, scores};
use crate::support::repo::Repo;

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
    // The first run holds every result of the second: it stands for it, and nothing new is
    // recorded or noted on the commit.
    assert_eq!(second["run"], first_id, "{second:#}");
    assert_eq!(repo.runs().len(), 1);
    let note = repo.note("HEAD");
    let noted: Vec<&str> = note["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run"].as_str().unwrap())
        .collect();
    assert!(
        !noted.is_empty() && noted.iter().all(|r| *r == first_id),
        "{noted:?}"
    );

    // A reworded harness commit has the same tree: its results come from the cache.
    let before = repo.rev("HEAD");
    repo.git(&["commit", "--amend", "-m", "Reworded: the same harness"]);
    let after = repo.rev("HEAD");
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
    origin
        .git_in(
            origin.tmp.path(),
            &[
                "clone",
                "--quiet",
                origin.root.to_str().unwrap(),
                clone_dir.to_str().unwrap(),
            ],
        )
        .ok();
    let clone = Repo::open(clone_dir);
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
    let size: u64 = clone
        .git(&["cat-file", "-s", &path])
        .trim()
        .parse()
        .unwrap();
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
    assert_eq!(Some(out.code), Some(2));
    let stderr = out.stderr.clone();
    assert!(stderr.contains("invalid value 'test'"), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(repo.runs().is_empty());
    // The help names the splits one may run, and not the sealed one.
    let help = repo.harness(&["run", "--help"]).ok().stdout;
    assert!(help.contains("held_in"), "{help}");
    assert!(!help.contains("possible values: held_in, validation, all, test"));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn tasks_with_identical_content_keep_their_own_ids_through_cached_runs_and_mining() {
    let repo = Repo::demo();
    // Four byte-identical copies of one demo task under different ids.
    let suite = repo.sibling("twins");
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/suites/demo");
    let ids = ["twin-a", "twin-b", "twin-c", "twin-d"];
    for id in ids {
        copy_dir(&demo.join("word-frequency"), &suite.join(id));
    }
    let exp = repo.root.join(".harness/experiment.yaml");
    let text: String = std::fs::read_to_string(&exp)
        .unwrap()
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("path:") {
                format!("  path: {}", suite.display())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&exp, text + "\n").unwrap();
    std::fs::write(
        repo.root.join(".harness/splits.yaml"),
        "held_in:\n- twin-a\n- twin-b\nvalidation:\n- twin-c\ntest:\n- twin-d\n",
    )
    .unwrap();
    repo.git(&["commit", "-q", "-am", "Use a suite of identical twins"]);

    let ids_of = |v: &serde_json::Value| {
        let mut t: Vec<(String, u64)> = results(v)
            .iter()
            .map(|r| {
                (
                    r["task"].as_str().unwrap().to_string(),
                    r["trial"].as_u64().unwrap(),
                )
            })
            .collect();
        t.sort();
        t
    };
    let want: Vec<(String, u64)> = ["twin-a", "twin-b", "twin-c"]
        .iter()
        .flat_map(|t| [(t.to_string(), 0), (t.to_string(), 1)])
        .collect();
    let first = repo.run_json(&["--trials", "2"]);
    assert_eq!(executed(&first), 6, "{first:#}");
    assert_eq!(ids_of(&first), want);

    // The cached re-run keeps every trial's own id, and each comes from its own result.
    let second = repo.run_json(&["--trials", "2"]);
    assert_eq!(executed(&second), 0, "{second:#}");
    assert_eq!(ids_of(&second), want);
    assert_eq!(outcomes(&second), outcomes(&first));

    // Mining reads the held-in trials under their own ids.
    let mined = repo.harness(&["mine", "--format", "json"]).ok().stdout;
    let bundle: serde_json::Value = serde_json::from_str(&mined).unwrap();
    let text = bundle.to_string();
    let failed_first: Vec<&str> = results(&first)
        .iter()
        .filter(|r| r["split"] == "held_in" && r["outcome"] == "fail")
        .map(|r| r["task"].as_str().unwrap())
        .collect();
    assert!(!failed_first.is_empty(), "{first:#}");
    for id in &failed_first {
        assert!(
            text.contains(&format!("\"{id}\"")),
            "{id} not mined: {text}"
        );
    }
    assert!(
        !text.contains("twin-c"),
        "validation leaked into mining: {text}"
    );
}

/// `run --runner X` runs under the experiment with `runner.kind: X`: its run records that kind
/// and that experiment's fingerprint, and its results are cached for that experiment only.
#[test]
fn run_runner_enters_the_fingerprint_as_if_committed() {
    let repo = Repo::demo();
    let args = [
        "--split",
        "held_in",
        "--tasks",
        "word-frequency",
        "--trials",
        "1",
    ];
    let meta = |v: &serde_json::Value| -> serde_yaml::Value {
        let id = v["run"].as_str().unwrap();
        serde_yaml::from_str(&repo.git(&["show", &format!("refs/harness/runs/{id}:run.yaml")]))
            .unwrap()
    };
    // The demo experiment says `kind: auto`; the run asks for the local runner.
    let local = repo.run_json(&[&args[..], &["--runner", "local"]].concat());
    assert_eq!(executed(&local), 1, "{local:#}");
    let local_meta = meta(&local);
    assert_eq!(
        local_meta["runner"].as_str(),
        Some("local"),
        "{local_meta:?}"
    );

    // Under the committed runner the local run's results are another experiment's.
    let auto = repo.run_json(&args);
    assert_eq!(executed(&auto), 1, "{auto:#}");
    let auto_meta = meta(&auto);
    assert_eq!(auto_meta["runner"].as_str(), Some("auto"), "{auto_meta:?}");
    assert_ne!(auto_meta["fingerprint"], local_meta["fingerprint"]);

    // Committing `kind: local` is the experiment the `--runner local` run ran under.
    let path = repo.root.join(".harness/experiment.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("  kind: auto"), "{text}");
    std::fs::write(&path, text.replacen("  kind: auto", "  kind: local", 1)).unwrap();
    repo.git(&["commit", "-q", "-am", "Run trials locally"]);
    let committed = repo.run_json(&args);
    assert_eq!(executed(&committed), 0, "{committed:#}");
    assert_eq!(meta(&committed)["fingerprint"], local_meta["fingerprint"]);
}
