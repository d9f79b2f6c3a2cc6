//! The markdown of a validation record (`git harness validate --format markdown`): verdict,
//! per-split table, fixed/broke counts, statistic and evidence, as a snapshot.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::disallowed_methods,
    reason = "tests drive the binary and other processes, and panic on what they did not expect"
)]

use git_harness::gate::Decision;
use git_harness::lineage::trailers::CommitMessage;
use git_harness::lineage::{Proposal, ProposalState, SplitComparison, ValidationRecord, Verdict};
use git_harness::method::validate::Validation;
use git_harness::report::markdown;
use git2::Oid;

fn oid(c: char) -> Oid {
    Oid::from_str(&c.to_string().repeat(40)).unwrap()
}

fn validation(verdict: &str) -> Validation {
    let decision: Decision = serde_json::from_value(serde_json::json!({
        "verdict": verdict,
        "rule": "strict",
        "reason": format!("{verdict}: Δheld_in +4, Δvalidation +1, p = 0.0312 ≤ alpha 0.05, nothing broke"),
        "held_in": {
            "split": "held_in", "tasks": 6, "trials": 12, "dropped": 0,
            "parent_passes": 3, "candidate_passes": 7, "delta": 4,
            "fixed": ["count-errors", "number-lines"], "broke": []
        },
        "validation": {
            "split": "validation", "tasks": 4, "trials": 8, "dropped": 0,
            "parent_passes": 2, "candidate_passes": 3, "delta": 1,
            "fixed": ["word-count"], "broke": ["top-ips"]
        },
        "statistic": {
            "name": "paired sign-flip permutation test (one-sided, exact)",
            "m": 5, "observed": 5, "p_value": 0.03125, "alpha": 0.05, "method": "enumeration"
        },
        "margin": { "passes": 5, "rate_points": 25.0 },
        "coverage": { "kept": 20, "total": 20, "fraction": 1.0, "min": 0.9 },
        "promising": false
    }))
    .expect("a decision");
    let proposal = Proposal {
        round: 2,
        slug: "verify-final-files".into(),
        refname: "refs/heads/harness/proposals/2/verify-final-files".into(),
        commit: oid('c'),
        parent: Some(oid('a')),
        state: ProposalState::Open,
        message: CommitMessage::new("Verify final files against the instruction"),
    };
    let cmp = |p, c, t| SplitComparison {
        parent_passes: p,
        parent_trials: t,
        candidate_passes: c,
        candidate_trials: t,
    };
    let record = ValidationRecord {
        format: 1,
        candidate: oid('c').to_string(),
        candidate_tree: oid('d').to_string(),
        parent: oid('a').to_string(),
        parent_tree: oid('b').to_string(),
        fingerprint: "a7793ad2bf5eae30".into(),
        gate: "strict".into(),
        verdict: if verdict == "accept" {
            Verdict::Accept
        } else {
            Verdict::Reject
        },
        reason: decision.reason.clone(),
        held_in: cmp(3, 7, 12),
        validation: cmp(2, 3, 8),
        statistic: Some("sign-flip p=0.0312 (m=5, sum +5) vs alpha 0.05".into()),
        margin: 5.025,
        runs: vec!["run-parent".into(), "run-candidate".into()],
        early_stop: None,
        created_at: "2026-01-01T00:00:00Z".into(),
        decision: Some(Box::new(decision.clone())),
    };
    Validation {
        proposal,
        parent: oid('a'),
        decision,
        record,
        rejected_ref: None,
        parent_run: "run-parent".into(),
        candidate_runs: vec!["run-candidate".into()],
        trials_executed: 20,
        trials_planned: 20,
        cost_usd: 0.12,
        reused: false,
        mde_points: None,
    }
}

#[test]
fn validation_markdown_renders_verdict_table_flips_statistic_and_evidence() {
    let md = markdown::validation(&validation("accept"));
    assert!(md.contains("| split | parent | candidate | Δ | fixed | broke |"));
    assert!(md.contains("✅ accept"));
    insta::assert_snapshot!(md);
}

#[test]
fn rejected_validation_markdown_says_reject() {
    let md = markdown::validation(&validation("reject"));
    assert!(md.contains("❌ reject"), "{md}");
    assert!(
        md.contains("| validation | 2/8 | 3/8 | +1 | 1 | 1 |"),
        "{md}"
    );
}
