//! Evaluation runs as processes: a run killed with SIGKILL loses only the trials in flight
//! (every journaled trial is reused, and the results equal an uninterrupted run's), and two
//! runs started at once on one repository both complete with valid refs and notes.

use std::collections::BTreeSet;
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::support::eval::{FAST, FOUR, executed, outcomes, results, scores, wait_for};
use crate::support::repo::Repo;

/// Four tasks, two trials each, one at a time: long enough to kill in the middle.
const ARGS: [&str; 6] = ["--tasks", FOUR, "--trials", "2", "-j", "1"];
const TOTAL: u64 = 8;

/// The same run, uninterrupted, in a fresh repository (same commits, same seeds).
fn reference() -> &'static Value {
    static REF: OnceLock<Value> = OnceLock::new();
    REF.get_or_init(|| Repo::demo().run_json(&ARGS))
}

/// Start the run, let `at_least` trials finish, kill it with SIGKILL. Returns the killed run's
/// id and the (task, trial) of every trial journaled before the kill.
fn run_and_kill(repo: &Repo, at_least: usize) -> (String, BTreeSet<(String, u64)>) {
    let mut child: Child = repo
        .harness_cmd(&[&["run"][..], &ARGS, &["--format", "json"]].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the run");
    wait_for(Duration::from_secs(120), "journaled trials", || {
        repo.journal_lines().iter().any(|(_, n)| *n >= at_least)
    });
    child.kill().expect("SIGKILL the run");
    let status = child.wait().expect("reap the run");
    assert!(status.code().is_none(), "the run ended before the kill");
    let journals = repo.journal_lines();
    assert_eq!(journals.len(), 1, "{journals:?}");
    let id = journals[0].0.clone();
    let text = std::fs::read_to_string(
        repo.root
            .join(".git/harness/journal")
            .join(&id)
            .join("journal.jsonl"),
    )
    .unwrap();
    let done: BTreeSet<(String, u64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|r| {
            (
                r["task"].as_str().unwrap().to_string(),
                r["trial"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(done.len() >= at_least && (done.len() as u64) < TOTAL);
    assert!(repo.runs().is_empty(), "a killed run has no ref yet");
    (id, done)
}

fn assert_same_as_uninterrupted(v: &Value) {
    let reference = reference();
    assert_eq!(results(v).len() as u64, TOTAL);
    assert_eq!(outcomes(v), outcomes(reference));
    assert_eq!(scores(v), scores(reference));
}

#[test]
fn a_killed_run_is_resumed_by_id_without_repeating_finished_trials() {
    let repo = Repo::demo();
    let (id, done) = run_and_kill(&repo, 2);
    // `--resume` continues what the killed run was asked to do; other choices are refused.
    let out = repo.harness(&["run", "--resume", &id, "--trials", "1"]);
    assert_eq!(Some(out.code), Some(2), "{out:?}");
    let resumed = repo.run_json(&["--resume", &id]);
    assert_eq!(resumed["run"], id.as_str());
    assert_eq!(executed(&resumed), TOTAL - done.len() as u64, "{resumed:#}");
    assert_same_as_uninterrupted(&resumed);
    // The resumed run has its ref with every trace, and its journal is gone.
    assert_eq!(repo.runs(), vec![id.clone()]);
    assert!(repo.journal_lines().is_empty());
    for r in results(&resumed) {
        let path = format!("refs/harness/runs/{id}:{}", r["trace"].as_str().unwrap());
        repo.git(&["cat-file", "-e", &path]);
    }
}

#[test]
fn a_killed_run_rerun_reuses_every_journaled_trial() {
    let repo = Repo::demo();
    let (id, done) = run_and_kill(&repo, 3);
    let again = repo.run_json(&ARGS);
    assert_ne!(again["run"], id.as_str());
    assert_eq!(executed(&again), TOTAL - done.len() as u64, "{again:#}");
    assert_same_as_uninterrupted(&again);
    // The reused trials' traces were adopted into the new run's record.
    let new_id = again["run"].as_str().unwrap();
    for r in results(&again) {
        let src = r["cached_from"].as_str().unwrap_or(new_id);
        let path = format!("refs/harness/runs/{src}:{}", r["trace"].as_str().unwrap());
        repo.git(&["cat-file", "-e", &path]);
    }
    // Everything is cached now.
    assert_eq!(executed(&repo.run_json(&ARGS)), 0);
}

#[test]
fn two_runs_started_at_once_both_complete_with_valid_refs_and_notes() {
    let repo = Repo::demo();
    // No local state at all: both processes extract the suite and create the cache at once.
    std::fs::remove_dir_all(repo.root.join(".git/harness")).unwrap();
    let args = ["run", "--tasks", FAST, "--trials", "1", "--format", "json"];
    let children: Vec<Child> = (0..2)
        .map(|_| {
            repo.harness_cmd(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a run")
        })
        .collect();
    let outs: Vec<Value> = children
        .into_iter()
        .map(|c| {
            let out =
                crate::support::hermetic::Out::from(c.wait_with_output().expect("wait for a run"))
                    .ok();
            serde_json::from_str(&out.stdout).expect("run json")
        })
        .collect();
    let ids: BTreeSet<String> = outs
        .iter()
        .map(|v| v["run"].as_str().unwrap().to_string())
        .collect();
    // Two runs, or one when the second planned after the first had recorded every result: a
    // look-up answered wholly from an existing run writes nothing and names that run.
    match ids.len() {
        2 => {}
        1 => assert!(
            outs.iter().any(|o| executed(o) == 0),
            "one run id but both runs executed trials"
        ),
        n => panic!("{n} run ids from two runs"),
    }
    assert_eq!(repo.runs().into_iter().collect::<BTreeSet<_>>(), ids);
    assert_eq!(scores(&outs[0]), scores(&outs[1]));
    assert_eq!(outcomes(&outs[0]), outcomes(&outs[1]));

    // Both runs are in the note of the commit, once per split.
    let note = repo.note("HEAD");
    let noted: Vec<String> = note["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run"].as_str().unwrap().to_string())
        .collect();
    for id in &ids {
        assert_eq!(noted.iter().filter(|n| *n == id).count(), 2, "{noted:?}");
    }
    // The refs are well-formed objects, and the run records read back.
    repo.git(&["fsck", "--no-progress", "--no-dangling"]);
    for id in &ids {
        let run = repo.git(&["show", &format!("refs/harness/runs/{id}:run.yaml")]);
        assert!(run.contains(&format!("id: {id}")), "{run}");
        let lines = repo.git(&["show", &format!("refs/harness/runs/{id}:results.jsonl")]);
        assert_eq!(lines.lines().count(), 2);
    }
    assert!(repo.journal_lines().is_empty());
    // A third run finds everything in the cache.
    assert_eq!(
        executed(&repo.run_json(&["--tasks", FAST, "--trials", "1"])),
        0
    );
}
