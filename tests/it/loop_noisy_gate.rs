//! The gate through the real pipeline with a noisy stand-in model (`support::noisy`): the sim
//! with `draws: conversation` draws each conversation's outcome afresh from a fixed per-task
//! probability, independently of the harness (unless it neutralises the quirk) and of the
//! request seed. `validate` with the pooled statistic then runs on hermetic temp repositories.
//!
//! The figures (A/A accept rate with its 95% interval, power at +5/+10/+20 points, trials per
//! decision, for fixed 2, fixed 4 and adaptive trials) come from `cargo bench --bench
//! gate_pipeline`, out of the timed suite; these tests check the mechanism.

use std::path::Path;

use crate::support::loops::*;
use crate::support::noisy::{self, Effect};

/// Cache entries of the repository (every side, every trial).
fn cache_entries(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(root.join(".git/harness/cache")) else {
        return out;
    };
    for d in dirs.flatten() {
        if let Ok(files) = std::fs::read_dir(d.path()) {
            out.extend(
                files
                    .flatten()
                    .map(|f| f.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "json")),
            );
        }
    }
    out
}

#[test]
fn noisy_stand_in_drives_pooled_validation() {
    let repo = noisy::repo(7, 1, Some(2), 0.25);
    // The parent's cache: main's trials are evidence for every validation after.
    let noise = repo.harness(&["noise", "--trials", "4"]);
    assert_eq!(noise.code, 0, "{noise:#?}");
    let aa = noisy::validate(&repo, &noisy::candidate(&repo, 1, "smoke", Effect::None));
    let better = noisy::validate(&repo, &noisy::candidate(&repo, 1, "smoke", Effect::Plus10));
    eprintln!(
        "A/A: {} after {} candidate trials; +10: {} after {}",
        aa.verdict, aa.candidate_trials, better.verdict, better.candidate_trials
    );
    assert!(aa.candidate_trials > 0 && better.candidate_trials > 0);
    assert!(
        aa.candidate_trials <= 28 && better.candidate_trials <= 28,
        "at most max_trials per task"
    );
}

/// The pooled statistic compares per-task rates, so the parent's cached trials serve whatever
/// their trial ids: with two cached trials per task at ids 1 and 2 (trial 0 gone from the
/// cache), a validation at 2 trials per task runs no parent trial and records no parent run.
#[test]
fn pooled_parent_costs_nothing_when_its_cache_holds_enough_trials_at_any_ids() {
    let repo = noisy::repo(11, 2, None, 0.25);
    let noise = repo.harness(&["noise", "--trials", "3"]);
    assert_eq!(noise.code, 0, "{noise:#?}");
    let tasks = HELD_IN.len() + VALIDATION.len();
    let entries = cache_entries(&repo.root);
    assert_eq!(entries.len(), 3 * tasks, "noise cached 3 trials per task");
    // Drop main's trial 0 of every task from the cache: ids 1 and 2 remain.
    let mut dropped = 0;
    for path in &entries {
        let entry: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        if entry["result"]["trial"] == 0 {
            std::fs::remove_file(path).unwrap();
            dropped += 1;
        }
    }
    assert_eq!(dropped, tasks);

    let v = noisy::validate(&repo, &noisy::candidate(&repo, 1, "ids", Effect::None));
    let added = cache_entries(&repo.root).len() - 2 * tasks;
    assert_eq!(
        added, v.candidate_trials,
        "only the candidate's trials ran: {:#}",
        v.record
    );
    assert_eq!(v.record["runs"][0], "", "no parent run: {:#}", v.record);
}
