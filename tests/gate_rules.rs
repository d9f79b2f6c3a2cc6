//! Truth tables of the gate's rules.

use git_harness::experiment::{GateConfig, GateRule, Split};
use git_harness::gate::{
    Evaluation, GateError, Outcome, Table, Verdict, decide, promising_threshold, wants_more_trials,
};

/// `P` pass, `F` fail, `I` infra, `?` pending; one string per task, one char per trial.
fn table(tasks: &[(&str, &str)]) -> Table {
    let mut t = Table::new();
    for (id, s) in tasks {
        t.insert(
            *id,
            s.chars()
                .map(|c| match c {
                    'P' => Outcome::Pass,
                    'F' => Outcome::Fail,
                    'I' => Outcome::Infra,
                    '?' => Outcome::Pending,
                    _ => panic!("bad outcome {c}"),
                })
                .collect(),
        );
    }
    t
}

fn ev(held_in: &[(&str, &str)], validation: &[(&str, &str)]) -> Evaluation {
    Evaluation::new(table(held_in), table(validation))
}

fn paper() -> GateConfig {
    GateConfig {
        rule: GateRule::Paper,
        ..GateConfig::default()
    }
}

fn strict() -> GateConfig {
    GateConfig::default()
}

/// n tasks named prefix0.. with the same outcome string.
fn many(prefix: &str, n: usize, s: &'static str) -> Vec<(String, &'static str)> {
    (0..n).map(|i| (format!("{prefix}{i}"), s)).collect()
}

fn refs<'a>(v: &'a [(String, &'static str)]) -> Vec<(&'a str, &'a str)> {
    v.iter().map(|(a, b)| (a.as_str(), *b)).collect()
}

#[test]
fn default_rule_is_strict() {
    assert_eq!(GateConfig::default().rule, GateRule::Strict);
}

#[test]
fn tie_on_both_splits_rejects_under_both_rules() {
    let p = ev(&[("a", "PF"), ("b", "FF")], &[("v", "PP")]);
    for cfg in [paper(), strict()] {
        let d = decide(&cfg, &p, &p.clone()).unwrap();
        assert_eq!(d.verdict, Verdict::Reject, "{}", d.reason);
        assert_eq!((d.held_in.delta, d.validation.delta), (0, 0));
        assert!(d.reason.contains("no improvement"), "{}", d.reason);
    }
}

#[test]
fn changes_that_cancel_within_a_split_are_a_tie() {
    let p = ev(&[("a", "PP"), ("b", "FF")], &[("v", "PF")]);
    let c = ev(&[("a", "FF"), ("b", "PP")], &[("v", "PF")]);
    let d = decide(&paper(), &p, &c).unwrap();
    assert_eq!(d.verdict, Verdict::Reject);
    assert_eq!(d.held_in.fixed, vec!["b"]);
    // 2/2 → 0/2 is not significant on its own: suspected, not broke.
    assert_eq!(d.held_in.suspect, vec!["a"]);
    assert!(d.held_in.broke.is_empty());
}

#[test]
fn trade_offs_reject_under_both_rules() {
    // +3 on held_in, −1 on validation: the total goes up, still rejected.
    let p = ev(&[("a", "FF"), ("b", "FF")], &[("v", "PP")]);
    let c = ev(&[("a", "PP"), ("b", "PF")], &[("v", "PF")]);
    for cfg in [paper(), strict()] {
        let d = decide(&cfg, &p, &c).unwrap();
        assert_eq!(d.verdict, Verdict::Reject);
        assert_eq!((d.held_in.delta, d.validation.delta), (3, -1));
        assert!(d.reason.contains("trade-off"), "{}", d.reason);
    }
    // And the other way round.
    let d = decide(&paper(), &c, &p).unwrap();
    assert_eq!(d.verdict, Verdict::Reject);
}

#[test]
fn paper_accepts_one_split_up_other_flat() {
    let p = ev(&[("a", "PF")], &[("v", "FF")]);
    let c = ev(&[("a", "PF")], &[("v", "PF")]);
    let d = decide(&paper(), &p, &c).unwrap();
    assert_eq!(d.verdict, Verdict::Accept, "{}", d.reason);
    assert_eq!(d.margin.passes, 1);
    // The strict rule wants significance: one changed task gives p = 1/2.
    let d = decide(&strict(), &p, &c).unwrap();
    assert_eq!(d.verdict, Verdict::Reject);
    assert_eq!(d.statistic.p_value, 0.5);
    assert!(
        d.reason.contains("needs at least 5 changed tasks"),
        "{}",
        d.reason
    );
}

#[test]
fn regression_rejects() {
    let p = ev(&[("a", "PP")], &[("v", "PP")]);
    let c = ev(&[("a", "PF")], &[("v", "PP")]);
    let d = decide(&paper(), &p, &c).unwrap();
    assert_eq!(d.verdict, Verdict::Reject);
    assert!(d.reason.contains("regression"), "{}", d.reason);
}

#[test]
fn clear_win_accepts_under_both_rules() {
    let p = ev(&refs(&many("h", 6, "FF")), &refs(&many("v", 3, "PF")));
    let c = ev(&refs(&many("h", 6, "PP")), &refs(&many("v", 3, "PP")));
    for cfg in [paper(), strict()] {
        let d = decide(&cfg, &p, &c).unwrap();
        assert_eq!(d.verdict, Verdict::Accept, "{}", d.reason);
        assert_eq!((d.held_in.delta, d.validation.delta), (12, 3));
        assert_eq!(d.margin.passes, 15);
        assert_eq!(d.held_in.fixed.len(), 6);
        assert_eq!(d.statistic.m, 9);
        assert_eq!(d.statistic.p_value, 1.0 / 512.0);
        assert!((d.margin.rate_points - (100.0 - 100.0 / 6.0)).abs() < 1e-9);
    }
}

#[test]
fn four_improved_tasks_cannot_pass_strict_at_005_five_can() {
    let p4 = ev(&refs(&many("h", 2, "FF")), &refs(&many("v", 2, "FF")));
    let c4 = ev(&refs(&many("h", 2, "PP")), &refs(&many("v", 2, "PP")));
    let d = decide(&strict(), &p4, &c4).unwrap();
    assert_eq!(d.verdict, Verdict::Reject, "{}", d.reason);
    assert_eq!(d.statistic.p_value, 1.0 / 16.0);
    assert_eq!(d.statistic.m, 4);
    assert_eq!(decide(&paper(), &p4, &c4).unwrap().verdict, Verdict::Accept);

    let p5 = ev(&refs(&many("h", 3, "FF")), &refs(&many("v", 2, "FF")));
    let c5 = ev(&refs(&many("h", 3, "PP")), &refs(&many("v", 2, "PP")));
    let d = decide(&strict(), &p5, &c5).unwrap();
    assert_eq!(d.verdict, Verdict::Accept, "{}", d.reason);
    assert_eq!(d.statistic.p_value, 1.0 / 32.0);

    // alpha exactly at 1/16: p ≤ alpha accepts.
    let cfg = GateConfig {
        alpha: 0.0625,
        ..strict()
    };
    assert_eq!(decide(&cfg, &p4, &c4).unwrap().verdict, Verdict::Accept);
}

#[test]
fn a_broke_task_rejects_under_strict_unless_allowed() {
    let mut ph = many("h", 10, "FF");
    let mut ch = many("h", 10, "PP");
    ph.push(("z-broke".into(), "PP"));
    ch.push(("z-broke".into(), "FF"));
    let mut p = ev(&refs(&ph), &[("v", "FF")]);
    let c = ev(&refs(&ch), &[("v", "PF")]);
    // 2/2 → 0/2 alone is chance (p = 1/6): a suspected break, not a broken task.
    let d = decide(&strict(), &p, &c).unwrap();
    assert_eq!(d.verdict, Verdict::Accept, "{}", d.reason);
    assert!(d.held_in.broke.is_empty());
    assert_eq!(d.held_in.suspect, vec!["z-broke"]);
    // The parent passed z-broke in 10 earlier trials too: 12/12 → 0/2 is significant
    // (p = 1/91; z-broke is the only task the parent ever passed, so the level is 0.05).
    p.evidence.insert(
        "z-broke".into(),
        git_harness::gate::Evidence {
            passes: 10,
            trials: 10,
        },
    );
    let d = decide(&strict(), &p, &c).unwrap();
    assert_eq!(d.verdict, Verdict::Reject, "{}", d.reason);
    assert_eq!(d.held_in.broke, vec!["z-broke"]);
    assert!(d.reason.contains("broke z-broke"), "{}", d.reason);
    assert!(d.statistic.p_value <= 0.05);
    let allow = GateConfig {
        allow_broke: true,
        ..strict()
    };
    assert_eq!(decide(&allow, &p, &c).unwrap().verdict, Verdict::Accept);
    // The paper rule does not look at broke tasks.
    assert_eq!(decide(&paper(), &p, &c).unwrap().verdict, Verdict::Accept);
}

#[test]
fn broke_is_over_kept_trials() {
    // Parent passed the kept trial, candidate failed it; the other pair is dropped (infra).
    let p = ev(&[("a", "PI")], &[("v", "PP")]);
    let c = ev(&[("a", "FP")], &[("v", "PP")]);
    let d = decide(
        &GateConfig {
            min_coverage: 0.0,
            ..strict()
        },
        &p,
        &c,
    )
    .unwrap();
    // Suspected over the kept pair; the broke test reads every trial free of infrastructure
    // errors on either side (parent 1/1, candidate 1/2): nothing significant.
    assert_eq!(d.held_in.suspect, vec!["a"]);
    assert!(d.held_in.broke.is_empty());
    assert_eq!(d.held_in.dropped, 1);
    assert_eq!(d.held_in.trials, 1);
}

#[test]
fn infra_pairs_are_dropped_from_both_sides() {
    // Candidate Infra where the parent passed: not a failure, and the parent's pass is dropped too.
    let p = ev(&[("a", "PP"), ("b", "FF")], &[("v", "PP"), ("w", "FI")]);
    let c = ev(&[("a", "PI"), ("b", "FF")], &[("v", "PP"), ("w", "PP")]);
    let cfg = GateConfig {
        min_coverage: 0.5,
        ..paper()
    };
    let d = decide(&cfg, &p, &c).unwrap();
    assert_eq!(
        (
            d.held_in.parent_passes,
            d.held_in.candidate_passes,
            d.held_in.trials
        ),
        (1, 1, 3)
    );
    assert_eq!(
        (
            d.validation.parent_passes,
            d.validation.candidate_passes,
            d.validation.trials
        ),
        (2, 3, 3)
    );
    assert_eq!((d.coverage.kept, d.coverage.total), (6, 8));
    assert_eq!(d.verdict, Verdict::Accept);
}

#[test]
fn low_coverage_is_indecisive_not_reject() {
    let p = ev(&[("a", "PP"), ("b", "FF")], &[("v", "PP"), ("w", "FF")]);
    let c = ev(&[("a", "PI"), ("b", "PP")], &[("v", "PP"), ("w", "IP")]);
    for cfg in [paper(), strict()] {
        // 6/8 = 75% < 90%.
        let d = decide(&cfg, &p, &c).unwrap();
        assert_eq!(d.verdict, Verdict::Indecisive);
        assert!(d.reason.starts_with("INDECISIVE"), "{}", d.reason);
        assert!(d.reason.contains("6/8"), "{}", d.reason);
        // At exactly the minimum it decides.
        let cfg = GateConfig {
            min_coverage: 0.75,
            ..cfg
        };
        assert_ne!(decide(&cfg, &p, &c).unwrap().verdict, Verdict::Indecisive);
    }
}

#[test]
fn nothing_kept_is_indecisive_even_with_zero_min_coverage() {
    let p = ev(&[("a", "II")], &[("v", "PI")]);
    let c = ev(&[("a", "PP")], &[("v", "IP")]);
    let d = decide(
        &GateConfig {
            min_coverage: 0.0,
            ..strict()
        },
        &p,
        &c,
    )
    .unwrap();
    assert_eq!(d.verdict, Verdict::Indecisive);
    assert!(d.reason.contains("nothing to compare"), "{}", d.reason);
    let empty = Evaluation::default();
    assert_eq!(
        decide(&paper(), &empty, &empty).unwrap().verdict,
        Verdict::Indecisive
    );
}

#[test]
fn different_task_sets_are_refused() {
    let p = ev(&[("a", "PP"), ("b", "PP")], &[("v", "PP")]);
    let c = ev(&[("a", "PP"), ("c", "PP")], &[("v", "PP")]);
    let e = decide(&strict(), &p, &c).unwrap_err();
    assert_eq!(
        e,
        GateError::TaskSetMismatch {
            split: Split::HeldIn,
            only_parent: vec!["b".into()],
            only_candidate: vec!["c".into()]
        }
    );
    // A task moved between splits is a different task set too.
    let c = ev(&[("a", "PP")], &[("v", "PP"), ("b", "PP")]);
    assert!(matches!(
        decide(&paper(), &p, &c),
        Err(GateError::TaskSetMismatch { .. })
    ));
}

#[test]
fn different_trial_ids_are_refused() {
    let p = ev(&[("a", "PP")], &[("v", "PP")]);
    let c = ev(&[("a", "PPP")], &[("v", "PP")]);
    let e = decide(&strict(), &p, &c).unwrap_err();
    assert!(
        matches!(
            e,
            GateError::TrialMismatch {
                parent_trials: 2,
                candidate_trials: 3,
                ..
            }
        ),
        "{e}"
    );
    let err: git_harness::Error = e.into();
    assert_eq!(err.exit_code(), git_harness::exit::USAGE);
    assert!(err.hint().is_some());
}

#[test]
fn different_fingerprints_are_refused() {
    let mut p = ev(&[("a", "PP")], &[("v", "PP")]);
    let mut c = p.clone();
    p.fingerprint = Some("aaaa".into());
    c.fingerprint = Some("bbbb".into());
    assert!(matches!(
        decide(&strict(), &p, &c),
        Err(GateError::FingerprintMismatch { .. })
    ));
    c.fingerprint = None;
    assert!(decide(&strict(), &p, &c).is_ok());
}

#[test]
fn pending_trials_are_refused_by_decide() {
    let p = ev(&[("a", "PP")], &[("v", "PP")]);
    let c = ev(&[("a", "P?")], &[("v", "PP")]);
    assert!(matches!(
        decide(&strict(), &p, &c),
        Err(GateError::Incomplete {
            side: "candidate",
            trial: 1,
            ..
        })
    ));
    assert!(matches!(
        decide(&strict(), &c, &p),
        Err(GateError::Incomplete { side: "parent", .. })
    ));
}

#[test]
fn wants_more_trials_only_when_promising() {
    // 4 improved tasks: p = 1/16 = 0.0625, above the first look's alpha, below the futility
    // bound continue_p 0.25.
    assert_eq!(promising_threshold(&strict()), 0.25);
    let p = ev(&refs(&many("h", 2, "FF")), &refs(&many("v", 2, "FF")));
    let c = ev(&refs(&many("h", 2, "PP")), &refs(&many("v", 2, "PP")));
    let adaptive = GateConfig {
        max_trials: Some(6),
        ..strict()
    };
    let d = decide(&adaptive, &p, &c).unwrap();
    assert_eq!(d.verdict, Verdict::Reject);
    assert!(d.promising);
    assert_eq!(wants_more_trials(&adaptive, &d, 2), Some(4));
    assert_eq!(
        wants_more_trials(
            &GateConfig {
                max_trials: Some(3),
                ..strict()
            },
            &d,
            2
        ),
        Some(3)
    );
    // No room, no adaptive config, or the paper rule: no.
    assert_eq!(
        wants_more_trials(
            &GateConfig {
                max_trials: Some(2),
                ..strict()
            },
            &d,
            2
        ),
        None
    );
    assert_eq!(wants_more_trials(&strict(), &d, 2), None);
    assert_eq!(
        wants_more_trials(
            &GateConfig {
                rule: GateRule::Paper,
                ..adaptive.clone()
            },
            &d,
            2
        ),
        None
    );
    // Without max_trials the decision is not marked promising.
    assert!(!decide(&strict(), &p, &c).unwrap().promising);

    // 1 improved task: p = 1/2 > 0.25: not promising.
    let p3 = ev(&refs(&many("h", 1, "FF")), &refs(&many("v", 1, "PF")));
    let c3 = ev(&refs(&many("h", 1, "PP")), &refs(&many("v", 1, "PF")));
    let d = decide(&adaptive, &p3, &c3).unwrap();
    assert!(!d.promising);
    assert_eq!(wants_more_trials(&adaptive, &d, 2), None);

    // A trade-off between splits on two trials is looked at again (the paper rule only stands
    // in the way of an accept); at the last look it is a plain rejection.
    let pt = ev(&refs(&many("h", 6, "FF")), &[("v", "PP")]);
    let ct = ev(&refs(&many("h", 6, "PP")), &[("v", "PF")]);
    let d = decide(&adaptive, &pt, &ct).unwrap();
    assert_eq!(d.verdict, Verdict::Reject);
    assert!(d.promising, "{}", d.reason);
    let d = decide(&strict(), &pt, &ct).unwrap();
    assert!(!d.promising);
    // An accept does not want more trials. The first of the looks 2, 4, 6 spends
    // alpha · (2/6)² = 0.0056: 8 improved tasks (p = 1/256) reach it.
    let p5 = ev(&refs(&many("h", 4, "FF")), &refs(&many("v", 4, "FF")));
    let c5 = ev(&refs(&many("h", 4, "PP")), &refs(&many("v", 4, "PP")));
    let d = decide(&adaptive, &p5, &c5).unwrap();
    assert_eq!(d.verdict, Verdict::Accept);
    assert_eq!(wants_more_trials(&adaptive, &d, 2), None);
}

#[test]
fn tables_and_decisions_round_trip_through_json() {
    let p = ev(&[("a", "PF"), ("b", "FI")], &[("v", "PP")]);
    let c = ev(&[("a", "PP"), ("b", "P?")], &[("v", "PP")]);
    let json = serde_json::to_string(&c).unwrap();
    assert!(json.contains(r#""a":["pass","pass"]"#), "{json}");
    assert!(json.contains(r#""pending""#), "{json}");
    assert_eq!(serde_json::from_str::<Evaluation>(&json).unwrap(), c);
    let c = ev(&[("a", "PP"), ("b", "PF")], &[("v", "PP")]);
    let d = decide(
        &GateConfig {
            min_coverage: 0.5,
            ..strict()
        },
        &p,
        &c,
    )
    .unwrap();
    let json = serde_json::to_string(&d).unwrap();
    assert!(json.contains(r#""verdict":"reject""#), "{json}");
    let back: git_harness::gate::Decision = serde_json::from_str(&json).unwrap();
    assert_eq!(back, d);
    let lines = d.summary_lines();
    assert!(lines[0].contains(&d.reason));
    assert!(
        lines.iter().any(|l| l.starts_with("held_in: parent 1/3")),
        "{lines:?}"
    );
}

#[test]
fn set_and_pending_like() {
    let p = ev(&[("a", "PF")], &[("v", "PP")]);
    let mut c = p.pending_like();
    assert_eq!(c.count(Outcome::Pending), 4);
    c.set(Split::Validation, "v", 1, Outcome::Infra).unwrap();
    assert_eq!(c.get(Split::Validation, "v", 1), Some(Outcome::Infra));
    assert!(c.set(Split::Validation, "v", 2, Outcome::Pass).is_err());
    assert!(c.set(Split::Test, "v", 0, Outcome::Pass).is_err());
}
