//! Exact early stopping: `settled` against brute force over every completion of the pending
//! trials, and how many trials it saves.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::disallowed_methods,
    reason = "tests drive the binary and other processes, and panic on what they did not expect"
)]

use std::collections::BTreeSet;

use git_harness::experiment::{GateConfig, GateRule, GateStatistic, Split};
use git_harness::gate::{
    Evaluation, Outcome, SettleMode, Table, TrialOrder, Verdict, decide, settled, trial_order,
    trial_order_with, try_settled,
};
use proptest::prelude::*;

fn outcome(x: u8) -> Outcome {
    match x % 20 {
        0..=8 => Outcome::Pass,
        9..=17 => Outcome::Fail,
        _ => Outcome::Infra,
    }
}

/// Every (verdict, promising) that some completion of the pending trials yields.
fn exhaustive(
    cfg: &GateConfig,
    parent: &Evaluation,
    partial: &Evaluation,
) -> BTreeSet<(String, bool)> {
    let mut cells = Vec::new();
    for split in [Split::HeldIn, Split::Validation] {
        for (task, outs) in &partial.table(split).unwrap().tasks {
            for (i, o) in outs.iter().enumerate() {
                if *o == Outcome::Pending {
                    cells.push((split, task.clone(), i as u32));
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    let n = cells.len() as u32;
    for code in 0..3u32.pow(n) {
        let mut full = partial.clone();
        let mut c = code;
        for (split, task, trial) in &cells {
            let o = [Outcome::Pass, Outcome::Fail, Outcome::Infra][(c % 3) as usize];
            c /= 3;
            full.set(*split, task, *trial, o).unwrap();
        }
        let d = decide(cfg, parent, &full).unwrap();
        seen.insert((d.verdict.as_str().to_string(), d.promising));
    }
    seen
}

#[derive(Debug, Clone)]
struct Case {
    cfg: GateConfig,
    parent: Evaluation,
    partial: Evaluation,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=3, 1usize..=2, 1usize..=2).prop_flat_map(|(n_in, n_val, trials)| {
        let cells = (n_in + n_val) * trials;
        (
            prop::collection::vec(any::<u8>(), cells),
            prop::collection::vec(any::<u8>(), cells),
            prop::collection::vec(prop::bool::weighted(0.55), cells),
            (
                any::<bool>(),
                0usize..4,
                any::<bool>(),
                0usize..5,
                any::<bool>(),
            ),
            (
                0usize..4,
                0usize..3,
                prop::collection::vec((0u32..4, 0u32..4), 5),
                any::<bool>(),
                0usize..3,
            ),
        )
            .prop_map(
                move |(
                    po,
                    co,
                    pend,
                    (strict, alpha, allow_broke, cov, adaptive),
                    (broke_alpha, cont, extra, pooled, flaky),
                )| {
                    let mut parent = Evaluation::default();
                    let mut partial = Evaluation::default();
                    let mut k = 0;
                    let mut pending = 0;
                    for (split, n) in [(Split::HeldIn, n_in), (Split::Validation, n_val)] {
                        let (mut pt, mut ct) = (Table::new(), Table::new());
                        for t in 0..n {
                            let (mut pv, mut cv) = (Vec::new(), Vec::new());
                            for _ in 0..trials {
                                pv.push(outcome(po[k]));
                                if pend[k] && pending < 7 {
                                    pending += 1;
                                    cv.push(Outcome::Pending);
                                } else {
                                    cv.push(outcome(co[k]));
                                }
                                k += 1;
                            }
                            let id = format!("{}{t}", &split.as_str()[..1]);
                            // Earlier parent trials beyond the table (parent evidence).
                            let (a, b) = extra[parent.evidence.len() % extra.len()];
                            if b > 0 {
                                parent.evidence.insert(
                                    id.clone(),
                                    git_harness::gate::Evidence {
                                        passes: a.min(b),
                                        trials: b,
                                    },
                                );
                            }
                            // Mark trials (`gate.flaky`): flaky when they flip.
                            let (a, b) = extra[(k / trials + 2) % extra.len()];
                            if b > 0 {
                                parent.marks.insert(
                                    id.clone(),
                                    git_harness::gate::Evidence {
                                        passes: a.min(b),
                                        trials: b,
                                    },
                                );
                            }
                            pt.insert(id, pv);
                            ct.insert(format!("{}{t}", &split.as_str()[..1]), cv);
                        }
                        *parent.table_mut(split).unwrap() = pt;
                        *partial.table_mut(split).unwrap() = ct;
                    }
                    let alpha = [0.05, 0.125, 0.25, 0.5][alpha];
                    let cfg = GateConfig {
                        rule: if strict {
                            GateRule::Strict
                        } else {
                            GateRule::Paper
                        },
                        alpha,
                        allow_broke,
                        min_coverage: [0.0, 0.5, 0.75, 0.9, 1.0][cov],
                        max_trials: adaptive.then_some(trials as u32 + 1),
                        continue_p: [alpha, 0.6, 1.0][cont],
                        // The conditional-power bound too (a look-dependent futility bound).
                        futility_power: [None, Some(0.1), Some(0.5)][(cont + flaky) % 3],
                        broke_alpha: [0.05, 0.3, 0.6, 0.95][broke_alpha],
                        early_stop: true,
                        statistic: if pooled {
                            GateStatistic::Pooled
                        } else {
                            GateStatistic::Paired
                        },
                        null_control: false,
                        flaky: [
                            git_harness::experiment::GateFlaky::Count,
                            git_harness::experiment::GateFlaky::Weight,
                            git_harness::experiment::GateFlaky::Quarantine,
                        ][flaky],
                    };
                    Case {
                        cfg,
                        parent,
                        partial,
                    }
                },
            )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Whenever `settled` returns a verdict, every completion of the pending trials yields that
    /// verdict (and the same "promising" flag, which drives adaptive trials). And it is not
    /// needlessly cautious: when every completion agrees, it says so.
    #[test]
    fn settled_agrees_with_every_completion(c in case()) {
        let all = exhaustive(&c.cfg, &c.parent, &c.partial);
        let got = settled(&c.cfg, &c.parent, &c.partial);
        let pending = c.partial.count(Outcome::Pending);
        if let Some(d) = &got {
            prop_assert_eq!(all.len(), 1, "settled {:?} but completions give {:?}: {}", d.verdict, all, d.reason);
            let only = all.iter().next().unwrap();
            prop_assert_eq!(&(d.verdict.as_str().to_string(), d.promising), only, "{}", d.reason);
            prop_assert_eq!(d.early_stopped.is_some(), pending > 0);
        }
        // Exactness: the conditions are necessary too.
        prop_assert_eq!(got.is_some(), all.len() == 1, "completions {:?}", all);
    }

    /// `CoverageSoFar`: coverage is judged on the trials that ran; the verdict is the one of every
    /// completion once coverage is taken out of the question.
    #[test]
    fn coverage_so_far_agrees_with_every_completion_on_the_rule(c in case()) {
        let got = try_settled(&c.cfg, &c.parent, &c.partial, SettleMode::CoverageSoFar).unwrap();
        let exact = settled(&c.cfg, &c.parent, &c.partial);
        let no_cov = GateConfig { min_coverage: 0.0, ..c.cfg.clone() };
        let rule_only = exhaustive(&no_cov, &c.parent, &c.partial);
        let pending = c.partial.count(Outcome::Pending);
        // Whatever settles exactly settles the same way here.
        if let Some(e) = &exact {
            let g = got.as_ref().expect("exact settles, so does coverage-so-far");
            prop_assert_eq!(g.verdict, e.verdict);
        }
        if let Some(d) = &got {
            if d.verdict == Verdict::Indecisive {
                prop_assert_eq!(exhaustive(&c.cfg, &c.parent, &c.partial).len(), 1);
            } else {
                prop_assert!(pending == 0 || d.coverage.fraction >= c.cfg.min_coverage, "{}", d.reason);
                prop_assert_eq!(rule_only.len(), 1, "settled {:?} but the rule gives {:?}: {}", d.verdict, rule_only, d.reason);
                let only = rule_only.iter().next().unwrap();
                prop_assert_eq!(&(d.verdict.as_str().to_string(), d.promising), only, "{}", d.reason);
            }
        } else {
            // Not settled: either coverage so far is short, or the rule is still open.
            let run = (c.partial.cells() - pending) as f64;
            let kept_so_far = {
                let mut k = 0;
                for split in [Split::HeldIn, Split::Validation] {
                    for (task, outs) in &c.partial.table(split).unwrap().tasks {
                        let po = &c.parent.table(split).unwrap().tasks[task];
                        k += outs.iter().zip(po).filter(|(a, b)| {
                            matches!(a, Outcome::Pass | Outcome::Fail) && matches!(b, Outcome::Pass | Outcome::Fail)
                        }).count();
                    }
                }
                k as f64
            };
            let cov_ok = kept_so_far > 0.0 && kept_so_far / run >= c.cfg.min_coverage;
            prop_assert!(!cov_ok || rule_only.len() > 1, "coverage ok and rule settled {:?}, yet not settled", rule_only);
        }
    }
}

#[test]
fn no_pending_is_decide_and_early_stop_off_waits() {
    let mut p = Evaluation::default();
    p.held_in.insert("a", vec![Outcome::Pass, Outcome::Fail]);
    p.validation.insert("v", vec![Outcome::Pass, Outcome::Pass]);
    let cfg = GateConfig::default();
    assert_eq!(settled(&cfg, &p, &p), Some(decide(&cfg, &p, &p).unwrap()));
    let mut c = p.pending_like();
    c.set(Split::Validation, "v", 0, Outcome::Fail).unwrap();
    // The parent passed v twice; a failure there cannot be won back on validation, so the paper
    // rule rejects for sure — unless the 3 remaining trials all hit infrastructure errors
    // (coverage 1/4): exact settling waits, coverage-so-far does not.
    let paper = GateConfig {
        rule: GateRule::Paper,
        ..GateConfig::default()
    };
    assert_eq!(settled(&paper, &p, &c), None);
    let d = try_settled(&paper, &p, &c, SettleMode::CoverageSoFar)
        .unwrap()
        .expect("settles");
    assert_eq!(d.verdict, Verdict::Reject);
    let paper = GateConfig {
        min_coverage: 0.0,
        ..paper
    };
    let d = settled(&paper, &p, &c)
        .expect("a regression on validation with nothing to win back settles");
    assert_eq!(d.verdict, Verdict::Reject);
    let e = d.early_stopped.as_ref().unwrap();
    assert_eq!((e.trials_run, e.trials_total), (1, 4));
    assert!(d.reason.contains("settled after 1/4"), "{}", d.reason);
    assert_eq!(
        settled(
            &GateConfig {
                early_stop: false,
                ..paper
            },
            &p,
            &c
        ),
        None
    );
}

/// Run candidates trial by trial in `order`, calling `settled` after each; the final verdict
/// must equal the exhaustive one. Returns (trials run, trials total).
fn simulate(
    cfg: &GateConfig,
    parent: &Evaluation,
    truth: &Evaluation,
    order: TrialOrder,
    mode: SettleMode,
) -> (usize, usize) {
    let settled =
        |cfg: &GateConfig, p: &Evaluation, c: &Evaluation| try_settled(cfg, p, c, mode).unwrap();
    let full = decide(cfg, parent, truth).unwrap();
    let mut partial = parent.pending_like();
    let order = trial_order_with(parent, order);
    assert_eq!(order.len(), parent.cells());
    if let Some(d) = settled(cfg, parent, &partial) {
        assert_eq!(d.verdict, full.verdict);
        return (0, order.len());
    }
    for (i, (split, task, trial)) in order.iter().enumerate() {
        partial
            .set(
                *split,
                task,
                *trial,
                truth.get(*split, task, *trial).unwrap(),
            )
            .unwrap();
        if let Some(d) = settled(cfg, parent, &partial) {
            // Coverage-so-far may stop before later infrastructure errors would have made the
            // full run indecisive; otherwise the verdicts are identical.
            if !(mode == SettleMode::CoverageSoFar && full.verdict == Verdict::Indecisive) {
                assert_eq!(d.verdict, full.verdict, "{}", d.reason);
                assert_eq!(d.promising, full.promising, "{}", d.reason);
            }
            return (i + 1, order.len());
        }
    }
    unreachable!("settled is always Some once nothing is pending");
}

/// Larger random tables (no brute force possible): the early-stopped verdict equals the full
/// one, and the fraction of trials saved is reported (run with `--nocapture` to see it).
#[test]
fn early_stopping_saves_trials_and_keeps_verdicts() {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut report = Vec::new();
    for (rule, mode) in [
        (GateRule::Paper, SettleMode::Exact),
        (GateRule::Paper, SettleMode::CoverageSoFar),
        (GateRule::Strict, SettleMode::Exact),
        (GateRule::Strict, SettleMode::CoverageSoFar),
    ] {
        for order in [
            TrialOrder::Sequential,
            TrialOrder::ParentFailFirst,
            TrialOrder::ParentPassFirst,
            TrialOrder::RoundRobin,
        ] {
            let cfg = GateConfig {
                rule,
                ..GateConfig::default()
            };
            let (mut run, mut total) = (0, 0);
            for _ in 0..150 {
                let effect: f64 = [0.0, 0.1, 0.3][rng.random_range(0..3usize)];
                let mut parent = Evaluation::default();
                let mut truth = Evaluation::default();
                for (split, n) in [(Split::HeldIn, 12), (Split::Validation, 6)] {
                    for t in 0..n {
                        let base: f64 = rng.random();
                        let gen_ = |rng: &mut rand_chacha::ChaCha8Rng, q: f64| -> Vec<Outcome> {
                            (0..2)
                                .map(|_| {
                                    if rng.random_bool(0.02) {
                                        Outcome::Infra
                                    } else if rng.random_bool(q.clamp(0.0, 1.0)) {
                                        Outcome::Pass
                                    } else {
                                        Outcome::Fail
                                    }
                                })
                                .collect()
                        };
                        let po = gen_(&mut rng, base);
                        let co = gen_(&mut rng, base + effect);
                        parent.table_mut(split).unwrap().insert(format!("t{t}"), po);
                        truth.table_mut(split).unwrap().insert(format!("t{t}"), co);
                    }
                }
                let (r, n) = simulate(&cfg, &parent, &truth, order, mode);
                run += r;
                total += n;
            }
            report.push(format!(
                "{rule:?} {mode:?} {order:?}: ran {run}/{total} trials, saved {:.1}%",
                100.0 * (1.0 - run as f64 / total as f64)
            ));
        }
    }
    for line in &report {
        println!("{line}");
    }
    // Whatever the order, the library's default order is used by trial_order.
    let mut p = Evaluation::default();
    p.held_in.insert("a", vec![Outcome::Pass, Outcome::Infra]);
    assert_eq!(
        trial_order(&p).last().unwrap(),
        &(Split::HeldIn, "a".to_string(), 1)
    );
}
