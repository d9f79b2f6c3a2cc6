//! The sequential design: its false-accept rate stays at most alpha over every look, simulated
//! under the null (the candidate is the parent: both sides draw from the same per-task pass
//! probabilities); the same check fails a broken design that tests every look at alpha. And the
//! "broke" claim: chance regressions are not breaks, significant ones are.

use git_harness::experiment::{GateConfig, GateRule};
use git_harness::gate::{
    Evaluation, Evidence, Look, Outcome, Table, Verdict, decide, decide_at, futility_bound, looks,
    wants_more_trials,
};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::support::gate_sim::{draw, margin, pass_rates};

fn cut(t: &Table, n: u32) -> Table {
    Table {
        tasks: t
            .tasks
            .iter()
            .map(|(k, v)| (k.clone(), v[..n as usize].to_vec()))
            .collect(),
    }
}

/// Every task in held_in (the paper rule's second split is then a tie it accepts).
fn eval(t: Table) -> Evaluation {
    Evaluation::new(t, Table::new())
}

/// Run the whole sequential procedure under the null `reps` times; the fraction accepted.
/// `broken`: test every look at the full alpha (the naive design).
fn null_accept_rate(
    cfg: &GateConfig,
    probs: &[f64],
    base: u32,
    reps: u32,
    seed: u64,
    broken: bool,
) -> f64 {
    let design = looks(cfg, base);
    let max = design.last().unwrap().trials;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut accepts = 0;
    for _ in 0..reps {
        let parent = draw(&mut rng, probs, max);
        let cand = draw(&mut rng, probs, max);
        let mut look = design[0];
        loop {
            let at = if broken {
                Look {
                    alpha: cfg.alpha,
                    ..look
                }
            } else {
                look
            };
            let d = decide_at(
                cfg,
                at,
                &eval(cut(&parent, look.trials)),
                &eval(cut(&cand, look.trials)),
            )
            .unwrap();
            if d.verdict == Verdict::Accept {
                accepts += 1;
                break;
            }
            match wants_more_trials(cfg, &d, base) {
                Some(n) => look = *design.iter().find(|l| l.trials == n).unwrap(),
                None => break,
            }
        }
    }
    accepts as f64 / reps as f64
}

fn adaptive(alpha: f64, max_trials: u32, continue_p: f64) -> GateConfig {
    GateConfig {
        rule: GateRule::Strict,
        alpha,
        max_trials: Some(max_trials),
        continue_p,
        // Breaks only ever reject; they are not what is measured here.
        allow_broke: true,
        ..GateConfig::default()
    }
}

#[test]
fn levels_sum_to_alpha_and_grow_towards_the_last_look() {
    let cfg = adaptive(0.05, 16, 0.25);
    let l = looks(&cfg, 2);
    assert_eq!(
        l.iter().map(|l| l.trials).collect::<Vec<_>>(),
        [2, 4, 8, 16]
    );
    let sum: f64 = l.iter().map(|l| l.alpha).sum();
    assert!((sum - 0.05).abs() < 1e-12, "{sum}");
    assert!(l.windows(2).all(|w| w[0].alpha < w[1].alpha));
    assert!(l.last().unwrap().last() && !l[0].last());
    // No max_trials: one look at alpha, the fixed design.
    let fixed = looks(&GateConfig::default(), 2);
    assert_eq!(fixed.len(), 1);
    assert_eq!(fixed[0].alpha, 0.05);
}

/// The conditional-power futility bound (`futility_power`) is lenient at the first looks and
/// strict near the last, never below the look's level, and higher for a lower power threshold;
/// without it every look has `continue_p`.
#[test]
fn the_conditional_power_bound_tightens_towards_the_last_look() {
    let fixed = adaptive(0.05, 16, 0.25);
    let l = looks(&fixed, 2);
    assert!(l.iter().all(|k| futility_bound(&fixed, k) == 0.25));
    let cp = |g: f64| GateConfig {
        futility_power: Some(g),
        ..fixed.clone()
    };
    let bounds: Vec<f64> = l[..3].iter().map(|k| futility_bound(&cp(0.1), k)).collect();
    assert!(bounds.windows(2).all(|w| w[0] > w[1]), "{bounds:?}");
    // 2 of 16 trials: p ≈ 0.42 still has a 10% chance under its trend; 8 of 16: p ≈ 0.27.
    assert!((0.38..0.46).contains(&bounds[0]), "{bounds:?}");
    assert!((0.24..0.30).contains(&bounds[2]), "{bounds:?}");
    for k in &l[..3] {
        assert!(futility_bound(&cp(0.5), k) < futility_bound(&cp(0.1), k));
        assert!(futility_bound(&cp(0.99), k) >= k.alpha);
    }
}

/// The naive design (every look at alpha, continue whenever p ≤ continue_p) inflates the
/// false-accept rate beyond alpha by more than the check's margin: the check can fail.
#[test]
fn the_check_fails_a_design_that_tests_every_look_at_alpha() {
    let cfg = adaptive(0.05, 16, 1.0);
    let probs = vec![0.5; 30];
    let reps = 1500;
    let naive = null_accept_rate(&cfg, &probs, 2, reps, 11, true);
    let spent = null_accept_rate(&cfg, &probs, 2, reps, 11, false);
    assert!(
        naive > 0.05 + margin(0.05, reps),
        "naive design false-accept rate {naive}"
    );
    assert!(
        spent <= 0.05 + margin(0.05, reps),
        "spent design false-accept rate {spent}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Over task counts, first-look trials, numbers of looks, futility bounds, alphas and
    /// per-task pass probabilities, the design's false-accept rate under the null stays at
    /// most alpha (up to Monte-Carlo error).
    #[test]
    fn false_accepts_stay_at_most_alpha_over_looks_and_task_counts(
        tasks in 6usize..40,
        base in 1u32..=3,
        doublings in 0u32..=3,
        continue_p in prop::sample::select(vec![0.25f64, 0.5, 1.0]),
        futility in prop::sample::select(vec![None, Some(0.05f64), Some(0.2), Some(0.5)]),
        alpha in prop::sample::select(vec![0.05f64, 0.1]),
        spread in 0.0f64..0.5,
        seed in any::<u64>(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let probs: Vec<f64> = (0..tasks)
            .map(|_| (0.5 + spread * (2.0 * rng.random::<f64>() - 1.0)).clamp(0.0, 1.0))
            .collect();
        let cfg = GateConfig {
            futility_power: futility,
            ..adaptive(alpha, base << doublings, continue_p.max(alpha))
        };
        let reps = 600;
        let rate = null_accept_rate(&cfg, &probs, base, reps, seed ^ 1, false);
        prop_assert!(rate <= alpha + margin(alpha, reps), "false-accept rate {} > alpha {}", rate, alpha);
    }
}

fn many(n: usize, s: &[Outcome]) -> Vec<Vec<Outcome>> {
    (0..n).map(|_| s.to_vec()).collect()
}

fn table(rows: Vec<(String, Vec<Outcome>)>) -> Table {
    let mut t = Table::new();
    for (k, v) in rows {
        t.insert(k, v);
    }
    t
}

use Outcome::{Fail as F, Pass as P};

/// Ten tasks improve 0/2 → 2/2; task `z` goes 2/2 → 0/2 by chance (its pass rate is 50%:
/// the parent's earlier trials say so).
fn chance_case(z_parent_evidence: Evidence) -> (Evaluation, Evaluation) {
    let mut ph: Vec<(String, Vec<Outcome>)> = many(10, &[F, F])
        .into_iter()
        .enumerate()
        .map(|(i, v)| (format!("h{i}"), v))
        .collect();
    let mut ch: Vec<(String, Vec<Outcome>)> = many(10, &[P, P])
        .into_iter()
        .enumerate()
        .map(|(i, v)| (format!("h{i}"), v))
        .collect();
    ph.push(("z".into(), vec![P, P]));
    ch.push(("z".into(), vec![F, F]));
    let mut p = Evaluation::new(table(ph), Table::new());
    p.evidence.insert("z".into(), z_parent_evidence);
    (p, Evaluation::new(table(ch), Table::new()))
}

#[test]
fn a_chance_regression_of_a_flaky_task_is_not_a_break() {
    // The parent passed z in 3 of 8 earlier trials: 2/2 → 0/2 is what a 50% task does.
    let (p, c) = chance_case(Evidence {
        passes: 3,
        trials: 8,
    });
    let d = decide(&GateConfig::default(), &p, &c).unwrap();
    assert_eq!(d.verdict, Verdict::Accept, "{}", d.reason);
    assert!(d.held_in.broke.is_empty());
}

#[test]
fn a_real_regression_of_one_task_still_rejects() {
    // The parent passed z in all of 14 earlier trials: 16/16 → 0/2 is significant.
    let (p, c) = chance_case(Evidence {
        passes: 14,
        trials: 14,
    });
    let d = decide(&GateConfig::default(), &p, &c).unwrap();
    assert_eq!(d.verdict, Verdict::Reject, "{}", d.reason);
    assert_eq!(d.held_in.broke, vec!["z"]);
    assert!(d.reason.contains("broke z"), "{}", d.reason);

    // Without earlier trials, adaptive trials decide: the suspected break asks for more
    // trials, and at the next look 4/4 → 0/4 … until it is significant or the last look.
    let (mut p, mut c) = chance_case(Evidence::default());
    p.evidence.clear();
    let cfg = GateConfig {
        max_trials: Some(8),
        ..GateConfig::default()
    };
    let d = decide(&cfg, &p, &c).unwrap();
    assert_eq!(d.verdict, Verdict::Reject, "{}", d.reason);
    assert!(d.promising, "{}", d.reason);
    assert_eq!(d.held_in.suspect, vec!["z"]);
    assert_eq!(wants_more_trials(&cfg, &d, 2), Some(4));
    // At 8 trials per side (the last look) 8/8 → 0/8 is significant (p = 1/12870).
    for (t, row) in p.held_in.tasks.iter_mut() {
        let o = if t == "z" { P } else { F };
        *row = vec![o; 8];
    }
    for (t, row) in c.held_in.tasks.iter_mut() {
        let o = if t == "z" { F } else { P };
        *row = vec![o; 8];
    }
    let last = *looks(&cfg, 2).last().unwrap();
    let d = decide_at(&cfg, last, &p, &c).unwrap();
    assert_eq!(d.verdict, Verdict::Reject, "{}", d.reason);
    assert_eq!(d.held_in.broke, vec!["z"]);
}

/// [`null_accept_rate`] with the pooled statistic: the parent also has `cached` earlier trials
/// per task (evidence), drawn from the same probabilities as everything else.
fn null_accept_rate_pooled(
    cfg: &GateConfig,
    probs: &[f64],
    base: u32,
    cached: u32,
    reps: u32,
    seed: u64,
) -> f64 {
    let design = looks(cfg, base);
    let max = design.last().unwrap().trials;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut accepts = 0;
    for _ in 0..reps {
        let parent = draw(&mut rng, probs, max + cached);
        let cand = draw(&mut rng, probs, max);
        let mut look = design[0];
        loop {
            let mut p = eval(cut(&parent, look.trials));
            for (id, v) in &parent.tasks {
                let rest = &v[look.trials as usize..];
                let passes = rest.iter().filter(|o| **o == Outcome::Pass).count() as u32;
                p.evidence.insert(
                    id.clone(),
                    Evidence {
                        passes,
                        trials: rest.len() as u32,
                    },
                );
            }
            let d = decide_at(cfg, look, &p, &eval(cut(&cand, look.trials))).unwrap();
            if d.verdict == Verdict::Accept {
                accepts += 1;
                break;
            }
            match wants_more_trials(cfg, &d, base) {
                Some(n) => look = *design.iter().find(|l| l.trials == n).unwrap(),
                None => break,
            }
        }
    }
    accepts as f64 / reps as f64
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    /// The pooled statistic (candidate's per-task rates against every cached parent trial)
    /// keeps the false-accept rate at most alpha over looks, task counts, cache sizes and
    /// per-task pass probabilities (near 0 and 1 included, as on agent benchmarks).
    #[test]
    fn pooled_false_accepts_stay_at_most_alpha(
        tasks in 3usize..36,
        base in 1u32..=4,
        doublings in 0u32..=2,
        cached in 0u32..=24,
        continue_p in prop::sample::select(vec![0.25f64, 0.5, 1.0]),
        futility in prop::sample::select(vec![None, Some(0.05f64), Some(0.2), Some(0.5)]),
        alpha in prop::sample::select(vec![0.05f64, 0.1]),
        extreme in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let probs = pass_rates(&mut rng, tasks, extreme, 0.2, 0.8);
        let cfg = GateConfig {
            statistic: git_harness::experiment::GateStatistic::Pooled,
            futility_power: futility,
            ..adaptive(alpha, base << doublings, continue_p.max(alpha))
        };
        let reps = 500;
        let rate = null_accept_rate_pooled(&cfg, &probs, base, cached, reps, seed ^ 7);
        prop_assert!(rate <= alpha + margin(alpha, reps), "false-accept rate {} > alpha {}", rate, alpha);
    }
}

/// The pooled statistic sees what pairing cannot: ten tasks the parent passes about half the
/// time (8 of 16 cached trials) pass every trial of the candidate, while the compared trial
/// pairs happen to tie. The paired test sees no change; the pooled one a significant gain.
#[test]
fn the_pooled_statistic_uses_the_parents_cached_trials() {
    let rows: Vec<(String, Vec<Outcome>)> =
        (0..10).map(|i| (format!("t{i}"), vec![P, P])).collect();
    let mut p = Evaluation::new(table(rows.clone()), Table::new());
    for (id, _) in &rows {
        p.evidence.insert(
            id.clone(),
            Evidence {
                passes: 6,
                trials: 14,
            },
        );
    }
    let c = Evaluation::new(table(rows), Table::new());
    let paired = decide(&GateConfig::default(), &p, &c).unwrap();
    assert_eq!(paired.verdict, Verdict::Reject, "{}", paired.reason);
    let pooled_cfg = GateConfig {
        statistic: git_harness::experiment::GateStatistic::Pooled,
        ..GateConfig::default()
    };
    let pooled = decide(&pooled_cfg, &p, &c).unwrap();
    assert_eq!(pooled.verdict, Verdict::Accept, "{}", pooled.reason);
    assert!(
        pooled.statistic.name.starts_with("pooled"),
        "{:?}",
        pooled.statistic
    );
    assert!(pooled.statistic.p_value < 0.05, "{:?}", pooled.statistic);

    // Without cached trials there is nothing to pool: the same tables tie.
    let bare = Evaluation::new(p.held_in.clone(), Table::new());
    let d = decide(&pooled_cfg, &bare, &c).unwrap();
    assert_eq!(d.verdict, Verdict::Reject, "{}", d.reason);
}
