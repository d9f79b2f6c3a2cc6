//! Figures of the gate on synthetic outcome tables with known effects. Prints a table; not a
//! timed benchmark. Run: `cargo bench --bench gate` (or, unoptimized, `cargo test --bench gate`).
//!
//! Suite: 20 held_in + 10 validation tasks; each task's base pass probability is drawn from
//! Beta(0.5, 0.5) (most tasks nearly always pass or nearly always fail, as on agent benchmarks);
//! each trial hits an infrastructure error with probability 1% on either side. The candidate's
//! pass probability is the base plus the effect (0 = A/A, +0.10 = "+10 points"), capped at 1.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::disallowed_methods,
    reason = "tests drive the binary and other processes, and panic on what they did not expect"
)]

use std::collections::BTreeMap;

use git_harness::experiment::{GateConfig, GateRule, GateStatistic, Split};
use git_harness::gate::{
    Evaluation, Evidence, Look, Outcome, SettleMode, Table, TrialOrder, Verdict, decide, looks,
    trial_order_with, try_settled, try_settled_at, wants_more_trials,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[path = "../tests/it/support/mod.rs"]
mod support;

use support::noisy::{Effect, Suite};

const HELD_IN: usize = 20;
const VALIDATION: usize = 10;
const INFRA: f64 = 0.01;
const MAX_TRIALS: usize = 16;

/// Parent and candidate tables with `MAX_TRIALS` trials; truncate for fewer.
fn draw(seed: u64, effect: f64) -> (Evaluation, Evaluation) {
    let (p, c, _) = draw_with(seed, effect, 0);
    (p, c)
}

/// [`draw`] plus `extra` more parent trials per task (earlier runs of the parent: the cache),
/// drawn after the tables so that the tables are the same as `draw`'s.
fn draw_with(
    seed: u64,
    effect: f64,
    extra: usize,
) -> (Evaluation, Evaluation, BTreeMap<String, Vec<Outcome>>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut bases = Vec::new();
    let mut parent = Evaluation::default();
    let mut cand = Evaluation::default();
    for (split, n) in [(Split::HeldIn, HELD_IN), (Split::Validation, VALIDATION)] {
        for t in 0..n {
            let u: f64 = rng.random();
            let base = (std::f64::consts::FRAC_PI_2 * u).sin().powi(2); // Beta(0.5, 0.5)
            let q = (base + effect).clamp(0.0, 1.0);
            let trial = |rng: &mut ChaCha8Rng, q: f64| {
                if rng.random_bool(INFRA) {
                    Outcome::Infra
                } else if rng.random_bool(q) {
                    Outcome::Pass
                } else {
                    Outcome::Fail
                }
            };
            let po: Vec<Outcome> = (0..MAX_TRIALS).map(|_| trial(&mut rng, base)).collect();
            let co: Vec<Outcome> = (0..MAX_TRIALS).map(|_| trial(&mut rng, q)).collect();
            let id = format!("{}-{t:02}", split.as_str());
            parent.table_mut(split).unwrap().insert(id.clone(), po);
            cand.table_mut(split).unwrap().insert(id.clone(), co);
            bases.push((id, base));
        }
    }
    let mut more = BTreeMap::new();
    for (id, base) in bases {
        let v: Vec<Outcome> = (0..extra)
            .map(|_| {
                if rng.random_bool(INFRA) {
                    Outcome::Infra
                } else if rng.random_bool(base) {
                    Outcome::Pass
                } else {
                    Outcome::Fail
                }
            })
            .collect();
        more.insert(id, v);
    }
    (parent, cand, more)
}

fn truncate(e: &Evaluation, trials: usize) -> Evaluation {
    let cut = |t: &Table| Table {
        tasks: t
            .tasks
            .iter()
            .map(|(k, v)| (k.clone(), v[..trials].to_vec()))
            .collect(),
    };
    Evaluation::new(cut(&e.held_in), cut(&e.validation))
}

/// Run the candidate in `order`, calling settled after each trial. Returns (verdict, trials run).
fn early(
    cfg: &GateConfig,
    parent: &Evaluation,
    truth: &Evaluation,
    order: TrialOrder,
    mode: SettleMode,
) -> (Verdict, usize) {
    let mut partial = parent.pending_like();
    if let Some(d) = try_settled(cfg, parent, &partial, mode).unwrap() {
        return (d.verdict, 0);
    }
    for (i, (split, task, trial)) in trial_order_with(parent, order).iter().enumerate() {
        partial
            .set(
                *split,
                task,
                *trial,
                truth.get(*split, task, *trial).unwrap(),
            )
            .unwrap();
        if let Some(d) = try_settled(cfg, parent, &partial, mode).unwrap() {
            return (d.verdict, i + 1);
        }
    }
    unreachable!("settled once nothing is pending")
}

fn cfg(rule: GateRule) -> GateConfig {
    GateConfig {
        rule,
        ..GateConfig::default()
    }
}

fn rule_name(r: GateRule) -> &'static str {
    match r {
        GateRule::Paper => "paper",
        GateRule::Strict => "strict",
    }
}

fn main() {
    let reps: u64 = std::env::var("GATE_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let early_reps: u64 = std::env::var("GATE_BENCH_EARLY_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    println!(
        "git-harness gate figures: {HELD_IN} held_in + {VALIDATION} validation tasks, base pass rates ~ Beta(0.5,0.5), {:.0}% infra per trial and side, alpha 0.05, min_coverage 0.9",
        INFRA * 100.0
    );

    // GATE_BENCH_ONLY=pooled prints only the pooled statistic's figures (d), =stand-in only (e).
    if std::env::var("GATE_BENCH_ONLY").is_ok_and(|v| v == "pooled") {
        pooled_figures();
        return;
    }
    if std::env::var("GATE_BENCH_ONLY").is_ok_and(|v| v == "stand-in") {
        stand_in_figures();
        return;
    }
    sequential_figures();
    pooled_figures();
    stand_in_figures();

    // (b) False-accept rate (A/A) and power (+10 points).
    println!();
    println!("(b) accept rate over {reps} seeded repetitions (full evaluations)");
    println!(
        "{:<22} {:>7} {:>14} {:>14} {:>12}",
        "rule", "trials", "A/A accept", "+10pt accept", "indecisive"
    );
    let mut rows: Vec<(String, usize, [u64; 2], u64)> = Vec::new();
    for rule in [GateRule::Paper, GateRule::Strict] {
        for trials in [2usize, 4] {
            let mut acc = [0u64; 2];
            let mut indecisive = 0;
            for (k, effect) in [0.0, 0.10].into_iter().enumerate() {
                for rep in 0..reps {
                    let (p, c) = draw(rep * 2 + k as u64 + 1_000_000 * trials as u64, effect);
                    let (p, c) = (truncate(&p, trials), truncate(&c, trials));
                    let d = decide(&cfg(rule), &p, &c).unwrap();
                    acc[k] += (d.verdict == Verdict::Accept) as u64;
                    indecisive += (d.verdict == Verdict::Indecisive) as u64;
                }
            }
            rows.push((rule_name(rule).to_string(), trials, acc, indecisive));
        }
    }
    for (name, trials, acc, ind) in &rows {
        let pct = |x: u64, n: u64| format!("{:.1}%", 100.0 * x as f64 / n as f64);
        let tr = trials.to_string();
        println!(
            "{:<22} {:>7} {:>14} {:>14} {:>12}",
            name,
            tr,
            pct(acc[0], reps),
            pct(acc[1], reps),
            pct(*ind, 2 * reps)
        );
    }

    // (a) Trials spent with early stopping, default order, per verdict.
    println!();
    println!(
        "(a) trials spent with early stopping ({early_reps} repetitions per row; default order {:?})",
        git_harness::gate::DEFAULT_ORDER
    );
    println!(
        "{:<7} {:>6} {:>6} {:<16} {:>10} {:>10} {:>10} {:>11} {:>10}",
        "rule", "trials", "effect", "settle mode", "accept", "reject", "indecis.", "all", "differs"
    );
    for rule in [GateRule::Paper, GateRule::Strict] {
        for trials in [2usize, 4] {
            for effect in [0.0, 0.10] {
                for mode in [SettleMode::Exact, SettleMode::CoverageSoFar] {
                    let c = cfg(rule);
                    let mut by: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
                    let mut differs = 0;
                    let (mut run_all, mut total_all) = (0, 0);
                    for rep in 0..early_reps {
                        let (p, cand) =
                            draw(rep + 3_000_000 + (effect * 100.0) as u64 * 7919, effect);
                        let (p, cand) = (truncate(&p, trials), truncate(&cand, trials));
                        let full = decide(&c, &p, &cand).unwrap();
                        let (v, run) = early(&c, &p, &cand, git_harness::gate::DEFAULT_ORDER, mode);
                        differs += (v != full.verdict) as usize;
                        let e = by.entry(full.verdict.as_str()).or_default();
                        e.0 += run;
                        e.1 += p.cells();
                        e.2 += 1;
                        run_all += run;
                        total_all += p.cells();
                    }
                    let cell = |k: &str| match by.get(k) {
                        Some((r, t, n)) => format!("{:.0}% n={n}", 100.0 * *r as f64 / *t as f64),
                        None => "-".into(),
                    };
                    println!(
                        "{:<7} {:>6} {:>+6.2} {:<16} {:>10} {:>10} {:>10} {:>10.1}% {:>10}",
                        rule_name(rule),
                        trials,
                        effect,
                        format!("{mode:?}"),
                        cell("accept"),
                        cell("reject"),
                        cell("indecisive"),
                        100.0 * run_all as f64 / total_all as f64,
                        differs
                    );
                }
            }
        }
    }
    println!(
        "  (cells: trials run / trials of a full evaluation, by the full evaluation's verdict; 'differs': early verdict ≠ full verdict — only possible in CoverageSoFar mode, when later infra errors would have made the full run indecisive)"
    );

    // Ordering ablation: which order settles fastest.
    println!();
    println!(
        "(a') trials spent by trial order, CoverageSoFar, 2 trials, A/A and +10pt pooled ({early_reps} repetitions each)"
    );
    println!("{:<24} {:>10} {:>10}", "order", "paper", "strict");
    for order in [
        TrialOrder::Sequential,
        TrialOrder::ParentFailFirst,
        TrialOrder::ParentPassFirst,
        TrialOrder::RoundRobin,
        TrialOrder::HardestFirst,
        TrialOrder::ValidationHardestFirst,
        TrialOrder::ValidationFailFirst,
    ] {
        let mut cells = Vec::new();
        for rule in [GateRule::Paper, GateRule::Strict] {
            let (mut run, mut total) = (0, 0);
            for effect in [0.0, 0.10] {
                for rep in 0..early_reps {
                    let (p, cand) = draw(rep + 4_000_000 + (effect * 100.0) as u64 * 7919, effect);
                    let (p, cand) = (truncate(&p, 2), truncate(&cand, 2));
                    run += early(&cfg(rule), &p, &cand, order, SettleMode::CoverageSoFar).1;
                    total += p.cells();
                }
            }
            cells.push(format!("{:.1}%", 100.0 * run as f64 / total as f64));
        }
        println!(
            "{:<24} {:>10} {:>10}",
            format!("{order:?}"),
            cells[0],
            cells[1]
        );
    }
}

/// The whole validation of one candidate under a design: every look it reaches, early stopping
/// (coverage so far, default order) within each look, candidate trials of earlier looks reused
/// (cached). Returns (verdict, candidate trials run, parent trials evaluated).
fn sequential(
    cfg: &GateConfig,
    base: u32,
    parent: &Evaluation,
    truth: &Evaluation,
) -> (Verdict, usize, usize) {
    sequential_with(cfg, base, parent, truth, &BTreeMap::new())
}

/// [`sequential`] with the parent's earlier trials (`more`: beyond the table's) as evidence.
fn sequential_with(
    cfg: &GateConfig,
    base: u32,
    parent: &Evaluation,
    truth: &Evaluation,
    more: &BTreeMap<String, Vec<Outcome>>,
) -> (Verdict, usize, usize) {
    let design: Vec<Look> = looks(cfg, base);
    let mut ran = std::collections::BTreeSet::new();
    let mut look = design[0];
    loop {
        let n = look.trials as usize;
        let (mut p, t) = (truncate(parent, n), truncate(truth, n));
        p.evidence = evidence(parent, n, more);
        let mut partial = p.pending_like();
        let mut decision =
            try_settled_at(cfg, look, &p, &partial, SettleMode::CoverageSoFar).unwrap();
        if decision.is_none() {
            for (split, task, trial) in git_harness::gate::trial_order(&p) {
                partial
                    .set(split, &task, trial, t.get(split, &task, trial).unwrap())
                    .unwrap();
                ran.insert((split, task, trial));
                decision =
                    try_settled_at(cfg, look, &p, &partial, SettleMode::CoverageSoFar).unwrap();
                if decision.is_some() {
                    break;
                }
            }
        }
        let d = decision.expect("settled once nothing is pending");
        match wants_more_trials(cfg, &d, base) {
            Some(next) => look = *design.iter().find(|l| l.trials == next).unwrap(),
            None => return (d.verdict, ran.len(), p.cells()),
        }
    }
}

/// The parent's trials beyond the first `n` of its table, plus `more`, as evidence per task.
fn evidence(
    parent: &Evaluation,
    n: usize,
    more: &BTreeMap<String, Vec<Outcome>>,
) -> BTreeMap<String, Evidence> {
    let mut ev = BTreeMap::new();
    for t in [&parent.held_in, &parent.validation] {
        for (id, v) in &t.tasks {
            let rest = v[n.min(v.len())..]
                .iter()
                .chain(more.get(id).into_iter().flatten());
            let mut e = Evidence::default();
            for o in rest {
                match o {
                    Outcome::Pass => {
                        e.passes += 1;
                        e.trials += 1;
                    }
                    Outcome::Fail => e.trials += 1,
                    _ => {}
                }
            }
            ev.insert(id.clone(), e);
        }
    }
    ev
}

/// Wilson 95% interval of x successes in n.
fn wilson(x: u64, n: u64) -> (f64, f64) {
    let (n, p, z) = (n as f64, x as f64 / n as f64, 1.96f64);
    let c = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let h = z / (1.0 + z * z / n) * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    ((c - h).max(0.0), (c + h).min(1.0))
}

/// Repetitions per cell of (c), (d) and (e): `GATE_BENCH_SEQ_REPS`, 1000 by default.
fn seq_reps() -> u64 {
    std::env::var("GATE_BENCH_SEQ_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

/// The header of the pooled figures, (d) and (e), the design's column `width` wide.
fn pooled_header(width: usize) {
    println!(
        "{:<width$} {:>7} {:>20} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10}",
        "design",
        "cached",
        "A/A accept [95% CI]",
        "+5pt",
        "+10pt",
        "+20pt",
        "trials A/A",
        "trials +10",
        "mix 80/20"
    );
}

/// One design's row of the pooled figures: over `reps` repetitions of each of the four effects
/// (`draw(rep, k)` for effect `k` gives the parent's table, the candidate's and more parent
/// trials), the A/A accept rate with its 95% interval, the power at each effect, candidate
/// trials per decision at A/A and +10, and their 80/20 mix.
fn pooled_row(
    (name, width): (&str, usize),
    cached: usize,
    reps: u64,
    (c, base): (&GateConfig, u32),
    draw: impl Fn(u64, usize) -> (Evaluation, Evaluation, BTreeMap<String, Vec<Outcome>>),
) {
    let mut acc = [0u64; 4];
    let mut cand = [0usize; 4];
    for k in 0..4 {
        for rep in 0..reps {
            let (p, t, more) = draw(rep, k);
            let (v, cr, _) = sequential_with(c, base, &p, &t, &more);
            acc[k] += (v == Verdict::Accept) as u64;
            cand[k] += cr;
        }
    }
    let pct = |x: u64| format!("{:.1}%", 100.0 * x as f64 / reps as f64);
    let (lo, hi) = wilson(acc[0], reps);
    let per = |v: usize| v as f64 / reps as f64;
    let mix = 0.8 * per(cand[0]) + 0.2 * per(cand[2]);
    println!(
        "{:<width$} {:>7} {:>20} {:>8} {:>8} {:>8} {:>10.0} {:>10.0} {:>10.0}",
        name,
        cached,
        format!("{} [{:.1}, {:.1}]", pct(acc[0]), 100.0 * lo, 100.0 * hi),
        pct(acc[1]),
        pct(acc[2]),
        pct(acc[3]),
        per(cand[0]),
        per(cand[2]),
        mix
    );
}

/// (c) The strict gate's designs: A/A accept rate with its 95% interval, power at +5/+10/+20
/// points, trials per decision, and the cost of a mix of 80% A/A and 20% +10-point candidates
/// against the paper's budget (2 trials × tasks × 2 sides).
fn sequential_figures() {
    let reps = seq_reps();
    let tasks = HELD_IN + VALIDATION;
    let budget = 2 * tasks * 2;
    println!();
    println!(
        "(c) strict gate designs, {reps} repetitions per cell, early stopping within each look; budget (paper: 2 trials × {tasks} tasks × 2 sides) = {budget} trials"
    );
    println!(
        "{:<26} {:>20} {:>8} {:>8} {:>8} {:>15} {:>15} {:>14} {:>14}",
        "design",
        "A/A accept [95% CI]",
        "+5pt",
        "+10pt",
        "+20pt",
        "trials A/A c+p",
        "trials +10 c+p",
        "mix 80/20 c+p",
        "mix, p cached"
    );
    let designs: Vec<(String, GateConfig)> = vec![
        ("fixed 2".into(), cfg(GateRule::Strict)),
        (
            "fixed 4".into(),
            GateConfig {
                ..cfg(GateRule::Strict)
            },
        ),
        (
            "sequential 2→4→8".into(),
            GateConfig {
                max_trials: Some(8),
                ..cfg(GateRule::Strict)
            },
        ),
        (
            "sequential 2→4→8→16".into(),
            GateConfig {
                max_trials: Some(16),
                ..cfg(GateRule::Strict)
            },
        ),
        (
            "seq. 2→4→8, continue 0.5".into(),
            GateConfig {
                max_trials: Some(8),
                continue_p: 0.5,
                ..cfg(GateRule::Strict)
            },
        ),
        (
            "seq. 2→…→16, continue 0.5".into(),
            GateConfig {
                max_trials: Some(16),
                continue_p: 0.5,
                ..cfg(GateRule::Strict)
            },
        ),
    ];
    for (name, c) in designs {
        let base = if name == "fixed 4" { 4 } else { 2 };
        let mut acc = [0u64; 4];
        let mut cand = [0usize; 4];
        let mut par = [0usize; 4];
        for (k, effect) in [0.0, 0.05, 0.10, 0.20].into_iter().enumerate() {
            for rep in 0..reps {
                let (p, t) = draw(rep + 5_000_000 + k as u64 * 1_000_003, effect);
                let (v, cr, pr) = sequential(&c, base, &p, &t);
                acc[k] += (v == Verdict::Accept) as u64;
                cand[k] += cr;
                par[k] += pr;
            }
        }
        let pct = |x: u64| format!("{:.1}%", 100.0 * x as f64 / reps as f64);
        let (lo, hi) = wilson(acc[0], reps);
        let per = |v: usize| v as f64 / reps as f64;
        let mix = 0.8 * per(cand[0] + par[0]) + 0.2 * per(cand[2] + par[2]);
        let mix_cached = 0.8 * per(cand[0]) + 0.2 * per(cand[2]);
        println!(
            "{:<26} {:>20} {:>8} {:>8} {:>8} {:>15} {:>15} {:>14} {:>14}",
            name,
            format!("{} [{:.1}, {:.1}]", pct(acc[0]), 100.0 * lo, 100.0 * hi),
            pct(acc[1]),
            pct(acc[2]),
            pct(acc[3]),
            format!("{:.0}+{:.0}", per(cand[0]), per(par[0])),
            format!("{:.0}+{:.0}", per(cand[2]), per(par[2])),
            format!("{mix:.0}"),
            format!("{mix_cached:.0}")
        );
    }
    println!(
        "  (c+p: candidate trials run + parent trials evaluated per decision; 'p cached': the parent's trials come from the cache, as when main has been evaluated before in the round)"
    );
}

/// (d) The strict gate with the pooled statistic: the parent's side is every cached trial of its
/// tree (`cached` per task: earlier rounds, `noise`, the candidate's trials when it was promoted),
/// so a validation pays only for the candidate's trials. Same figures as (c); the mix's cost is
/// candidate trials only, the parent's being in the cache.
fn pooled_figures() {
    let reps = seq_reps();
    let tasks = HELD_IN + VALIDATION;
    let budget = 2 * tasks * 2;
    println!();
    println!(
        "(d) strict gate, pooled statistic (parent: every cached trial), {reps} repetitions per cell; budget {budget} trials"
    );
    pooled_header(30);
    let pooled = |max: Option<u32>, cont: f64| GateConfig {
        max_trials: max,
        continue_p: cont,
        statistic: GateStatistic::Pooled,
        ..cfg(GateRule::Strict)
    };
    let designs: Vec<(&str, u32, GateConfig)> = vec![
        ("fixed 2", 2, pooled(None, 0.25)),
        ("fixed 4", 4, pooled(None, 0.25)),
        ("2→4→8, continue 0.25", 2, pooled(Some(8), 0.25)),
        ("2→…→16, continue 0.25", 2, pooled(Some(16), 0.25)),
        ("2→…→16, continue 0.5", 2, pooled(Some(16), 0.5)),
        ("4→8→16, continue 0.25", 4, pooled(Some(16), 0.25)),
    ];
    for cached in [16usize, 32] {
        for (name, base, c) in &designs {
            // The parent's table holds MAX_TRIALS trials; `cached` counts all of them.
            let extra = cached.saturating_sub(MAX_TRIALS);
            let effects = [0.0, 0.05, 0.10, 0.20];
            pooled_row((name, 30), cached, reps, (c, *base), |rep, k| {
                draw_with(rep + 7_000_000 + k as u64 * 1_000_003, effects[k], extra)
            });
        }
    }
    println!(
        "  (cached: parent trials per task in the cache, the table's included; trials: candidate trials run per decision)"
    );
}

/// Parent table (`MAX_TRIALS` trials), candidate table and `extra` more parent trials per task
/// on a noisy stand-in experiment (`tests/it/support/noisy.rs`: the same tasks, rates and
/// effects as the pipeline's figures); a task passes with main's rate, or always when the
/// candidate neutralises its quirk.
fn draw_stand_in(
    suite: Suite,
    spread: bool,
    seed: u64,
    effect: Effect,
    extra: usize,
) -> (Evaluation, Evaluation, BTreeMap<String, Vec<Outcome>>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut parent = Evaluation::default();
    let mut cand = Evaluation::default();
    let mut more = BTreeMap::new();
    for task in suite.tasks() {
        let split = if task.split == "held_in" {
            Split::HeldIn
        } else {
            Split::Validation
        };
        let base = task.rate;
        let q = if spread {
            // The same mean gain, spread over every task in proportion to what it can gain.
            let room: f64 = suite.tasks().iter().map(|t| 1.0 - t.rate).sum();
            base + (1.0 - base) * suite.gain(effect) / 100.0 * suite.tasks().len() as f64 / room
        } else if effect.quirks().contains(&task.quirk) {
            1.0
        } else {
            base
        };
        let mut trial = |q: f64| {
            if rng.random_bool(q) {
                Outcome::Pass
            } else {
                Outcome::Fail
            }
        };
        let po: Vec<Outcome> = (0..MAX_TRIALS).map(|_| trial(base)).collect();
        let co: Vec<Outcome> = (0..MAX_TRIALS).map(|_| trial(q)).collect();
        let mo: Vec<Outcome> = (0..extra).map(|_| trial(base)).collect();
        parent
            .table_mut(split)
            .unwrap()
            .insert(task.id.to_string(), po);
        cand.table_mut(split)
            .unwrap()
            .insert(task.id.to_string(), co);
        more.insert(task.id.to_string(), mo);
    }
    (parent, cand, more)
}

/// (e) The pooled strict gate on the noisy stand-in's experiment, in process: the same suite,
/// per-task rates, effects, parent cache and designs as the pipeline's figures
/// (`cargo bench --bench gate_pipeline`), so the two can be compared.
fn stand_in_figures() {
    let reps = seq_reps();
    // GATE_BENCH_SUITE=wide (default), small or both.
    let suites = match std::env::var("GATE_BENCH_SUITE").as_deref() {
        Ok("small") => vec![Suite::Small],
        Ok("both") => vec![Suite::Wide, Suite::Small],
        _ => vec![Suite::Wide],
    };
    // GATE_BENCH_CACHED=16,32 (default) chooses the parent cache sizes.
    let cached_list: Vec<usize> = std::env::var("GATE_BENCH_CACHED")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![16, 32]);
    // GATE_BENCH_SPREAD=1: each effect spread over every task in proportion to 1 − rate
    // instead of carried by the tasks of the neutralised quirks (what the sim can do).
    let spread = std::env::var("GATE_BENCH_SPREAD").is_ok_and(|v| v == "1");
    for suite in suites {
        let tasks = suite.tasks().len();
        let budget = 2 * tasks * 2;
        println!();
        println!(
            "(e) the noisy stand-in's {} experiment in process{} ({} held_in + {} validation tasks, main's mean pass rate {:.1}%; effects {:+.1} / {:+.1} / {:+.1} points: the candidate passes the env-loss / late-artifact / late-artifact and no-verify tasks always), pooled statistic, {reps} repetitions per cell; budget {budget} trials",
            suite.name(),
            if spread {
                ", effects spread over every task in proportion to 1 − rate"
            } else {
                ""
            },
            suite.split("held_in").len(),
            suite.split("validation").len(),
            100.0 * suite.mean_rate(),
            suite.gain(Effect::Plus5),
            suite.gain(Effect::Plus10),
            suite.gain(Effect::Plus20),
        );
        pooled_header(34);
        // GATE_BENCH_DESIGNS=0,3 runs only the designs of these indices.
        let only: Vec<usize> = std::env::var("GATE_BENCH_DESIGNS")
            .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or_default();
        for &cached in &cached_list {
            for (i, (name, base, c)) in stand_in_designs().into_iter().enumerate() {
                if !only.is_empty() && !only.contains(&i) {
                    continue;
                }
                let extra = cached.saturating_sub(MAX_TRIALS);
                pooled_row((name, 34), cached, reps, (&c, base), |rep, k| {
                    let seed = rep + 9_000_000 + k as u64 * 1_000_003;
                    draw_stand_in(suite, spread, seed, Effect::ALL[k], extra)
                });
            }
        }
    }
    println!(
        "  (cached: parent trials per task in the cache, the table's included; trials: candidate trials run per decision)"
    );
}

/// The designs of (e) and of the pipeline's figures: (name, trials at the first look, gate).
fn stand_in_designs() -> Vec<(&'static str, u32, GateConfig)> {
    let pooled = |max: Option<u32>, cont: f64, power: Option<f64>| GateConfig {
        max_trials: max,
        continue_p: cont,
        futility_power: power,
        statistic: GateStatistic::Pooled,
        ..cfg(GateRule::Strict)
    };
    vec![
        ("fixed 2", 2, pooled(None, 0.25, None)),
        ("fixed 4", 4, pooled(None, 0.25, None)),
        ("2→4→8, continue 0.25", 2, pooled(Some(8), 0.25, None)),
        ("2→…→16, continue 0.25", 2, pooled(Some(16), 0.25, None)),
        ("2→…→16, continue 0.5", 2, pooled(Some(16), 0.5, None)),
        ("4→8→16, continue 0.25", 4, pooled(Some(16), 0.25, None)),
        ("2→4→8, power 0.1", 2, pooled(Some(8), 0.25, Some(0.1))),
        ("2→…→16, power 0.1", 2, pooled(Some(16), 0.25, Some(0.1))),
        ("2→…→16, power 0.2", 2, pooled(Some(16), 0.25, Some(0.2))),
        ("2→…→16, power 0.3", 2, pooled(Some(16), 0.25, Some(0.3))),
        ("1→…→16, power 0.1", 1, pooled(Some(16), 0.25, Some(0.1))),
        ("1→…→16, power 0.2", 1, pooled(Some(16), 0.25, Some(0.2))),
    ]
}
