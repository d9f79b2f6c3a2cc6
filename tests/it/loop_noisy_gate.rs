//! The gate through the real pipeline with a noisy stand-in model (`support::noisy`): the sim
//! with `draws: conversation` draws each conversation's outcome afresh from a fixed per-task
//! probability, independently of the harness (unless it neutralises the quirk) and of the
//! request seed. `validate` with the pooled statistic then runs on hermetic temp repositories.
//!
//! The figures (A/A accept rate with its 95% interval, power at +5/+10/+20 points, trials per
//! decision, for fixed 2, fixed 4 and adaptive trials) come from `cargo bench --bench
//! gate_pipeline`, out of the timed suite; these tests check the mechanism.

use crate::support::loops::*;
use crate::support::noisy::{self, Effect};

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

/// The pooled statistic compares per-task rates, so main's side is read from its cached trials
/// alone once they cover the look: no parent run is made (none recorded) and every trial the
/// validation executes is the candidate's.
#[test]
fn pooled_parent_runs_nothing_when_its_cache_holds_the_look() {
    let repo = noisy::repo(11, 2, None, 0.25);
    let noise = repo.harness(&["noise", "--trials", "3"]);
    assert_eq!(noise.code, 0, "{noise:#?}");
    let before = noisy::cache_runs(&repo.root).len();
    assert_eq!(before, 3 * (HELD_IN.len() + VALIDATION.len()));

    let v = noisy::validate(&repo, &noisy::candidate(&repo, 1, "cached", Effect::None));
    assert_eq!(v.record["runs"][0], "", "no parent run: {:#}", v.record);
    let added = noisy::cache_runs(&repo.root).len() - before;
    assert!(v.candidate_trials > 0);
    assert_eq!(
        added, v.candidate_trials,
        "every trial executed was the candidate's: {:#}",
        v.record
    );
}

/// The wide stand-in (32 tasks, rates drawn from Beta(0.5, 0.5)) through the binary: its splits
/// hold the 32 gated tasks, and a task at rate 1 always passes, one at rate 0 always fails (the
/// others are draws), so the sim runs the table's rates.
#[test]
fn wide_stand_in_runs_the_tables_rates() {
    let suite = noisy::Suite::Wide;
    let repo = noisy::repo_of(suite, 5, 1, None, 0.25);
    let noise = repo.harness(&["noise", "--trials", "2"]);
    assert_eq!(noise.code, 0, "{noise:#?}");
    let mut seen: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let runs: std::collections::BTreeSet<String> =
        noisy::cache_runs(&repo.root).into_iter().collect();
    for run in runs {
        for r in repo.results(&run) {
            seen.entry(r["task"].as_str().unwrap_or_default().to_string())
                .or_default()
                .push(r["outcome"].as_str().unwrap_or_default().to_string());
        }
    }
    assert_eq!(seen.len(), 32, "{seen:?}");
    for t in suite.tasks() {
        let got = &seen[t.id];
        assert_eq!(got.len(), 2, "{}: {got:?}", t.id);
        if t.rate >= 1.0 {
            assert!(got.iter().all(|o| o == "pass"), "{}: {got:?}", t.id);
        } else if t.rate <= 0.0 {
            assert!(got.iter().all(|o| o == "fail"), "{}: {got:?}", t.id);
        }
    }
    assert!((suite.gain(Effect::Plus10) - 9.94).abs() < 0.01);
    assert!((suite.gain(Effect::Plus20) - 20.0).abs() < 0.01);
}
