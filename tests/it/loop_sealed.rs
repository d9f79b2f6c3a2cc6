//! The sealed test split: `evolve` (mine, propose, validate, promote) and `run` never execute a
//! trial of a test task; only `report --final` does, and each call appends exactly one entry to
//! `refs/harness/test-log` and says how often the split was opened before.

use crate::support::loops::*;

#[test]
fn only_report_final_opens_the_test_split_and_each_opening_is_logged() {
    let repo = Repo::small("minimal");

    timed("evolve --rounds 1", || {
        repo.harness(&["evolve", "--rounds", "1", "--proposer", "catalog"])
            .ok()
    });
    // A third trial per task: evolve cached the first two, so this run executes trials itself.
    timed("run", || repo.harness(&["run", "--trials", "3"]).ok());
    // A validation of its own as well, so the scan covers a plain `validate` run.
    let p = repo.proposal(
        9,
        "comment",
        "main",
        &[(
            "middleware/runtime_control.yaml",
            &format!(
                "{}# A comment.\n",
                repo.read("middleware/runtime_control.yaml")
            ),
        )],
    );
    let v = timed("validate", || repo.harness(&["validate", &p]));
    assert!([0, 1, 3].contains(&v.code), "{v:?}");

    let runs = repo.runs();
    assert!(
        runs.len() >= 3,
        "evolve, validate and run leave run refs: {runs:?}"
    );
    let mut trials = 0;
    for id in &runs {
        let splits = run_splits(&repo.run_yaml(id));
        assert!(
            !splits.iter().any(|s| s == "test"),
            "run {id} evaluated the test split before any report --final: {splits:?}"
        );
        for r in repo.results(id) {
            let task = r["task"].as_str().unwrap();
            assert!(
                !TEST.contains(&task),
                "run {id} executed a trial of test task {task}: {r}"
            );
            assert_ne!(r["split"], "test", "run {id}: {r}");
            trials += 1;
        }
    }
    assert!(trials > 0);
    assert_eq!(repo.test_log_len(), 0, "nothing opened the test split yet");
    // `run` has no way to name the test split.
    let refused = repo.harness(&["run", "--split", "test"]);
    assert_eq!(refused.code, 2, "{refused:?}");

    let first = timed("report --final #1", || {
        repo.harness(&["report", "--final"]).ok()
    });
    assert_eq!(repo.test_log_len(), 1);
    assert!(
        first.stdout.contains("opening #1 (opened 0 times before)"),
        "{}",
        first.stdout
    );
    let second = timed("report --final #2", || {
        repo.harness(&["report", "--final"]).ok()
    });
    assert_eq!(repo.test_log_len(), 2);
    assert!(
        second.stdout.contains("opening #2 (opened 1 time before)"),
        "{}",
        second.stdout
    );

    // The runs report --final made are the only ones on the test split, and hold test tasks only.
    let test_runs: Vec<String> = repo
        .runs()
        .into_iter()
        .filter(|id| run_splits(&repo.run_yaml(id)) == ["test"])
        .collect();
    assert!(!test_runs.is_empty());
    for id in &test_runs {
        for r in repo.results(id) {
            let task = r["task"].as_str().unwrap();
            assert!(TEST.contains(&task), "run {id}: {r}");
        }
    }
    for id in repo.runs() {
        if !test_runs.contains(&id) {
            let splits = run_splits(&repo.run_yaml(&id));
            assert!(!splits.iter().any(|s| s == "test"), "run {id}: {splits:?}");
        }
    }
}
