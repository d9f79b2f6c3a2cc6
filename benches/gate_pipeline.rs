//! The gate's figures through the real pipeline: `validate` runs through the binary on hermetic
//! temp repositories with the noisy stand-in model (`tests/it/support/noisy.rs`: outcome drawn
//! per conversation from a fixed per-task probability, independent of the seed and of the
//! harness unless it neutralises a quirk), the pooled statistic, and main's trials cached by
//! `noise --trials N` first. Prints the A/A accept rate with its 95% interval, the accept rate
//! at +5/+10/+20 points, and the trials per decision, for fixed 2, fixed 4 and adaptive trials.
//! `cargo bench --bench gate` (e) runs the same experiment in process.
//!
//! Run: `cargo bench --bench gate_pipeline` (release). Settings: `GATE_PIPELINE_SUITE` (`wide`:
//! 32 tasks with rates spread like real suites; `small`: the 14-task loop split),
//! `GATE_PIPELINE_REPS` (4 repetitions), `GATE_PIPELINE_COUNTS` (`1,1,1,1`: candidates per
//! repetition and design of A/A, +5, +10, +20), `GATE_PIPELINE_CACHED` (32 parent trials per task), `GATE_PIPELINE_JOBS` (2
//! repetitions at once), `GATE_PIPELINE_FIRST` (1: the first repetition's number, for batches),
//! `GATE_PIPELINE_DESIGNS` (e.g. `2,3`: only the designs of these indices). Each repetition is one repository
//! with a fresh seed (a fresh sample of main) whose cache serves every design's candidates;
//! each candidate has its own tree (fresh trials).

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::disallowed_methods,
    reason = "the bench drives the binary and panics on what it did not expect"
)]

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use support::noisy::{self, Effect, Suite};

/// (name, trials at the first look, max_trials, continue_p, futility_power).
type Design = (&'static str, u32, Option<u32>, f64, Option<f64>);
const DESIGNS: &[Design] = &[
    ("fixed 2", 2, None, 0.25, None),
    ("fixed 4", 4, None, 0.25, None),
    ("adaptive 2→…→16", 2, Some(16), 0.25, None),
    ("adaptive 2→…→16, power 0.1", 2, Some(16), 0.25, Some(0.1)),
];

#[derive(Default, Clone)]
struct Cell {
    n: u32,
    accepted: u32,
    trials: usize,
}

fn env(k: &str, d: u32) -> u32 {
    std::env::var(k)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(d)
}

/// One repetition: a repository, main's cache, then every design's four candidates.
fn repetition(
    suite: Suite,
    rep: u32,
    cached: u32,
    counts: [u32; 4],
    only: &[usize],
) -> Vec<[Cell; 4]> {
    let repo = noisy::repo_of(suite, 2000 + rep, 2, None, 0.25);
    let noise = repo.harness(&["noise", "--trials", &cached.to_string()]);
    assert_eq!(noise.code, 0, "{noise:#?}");
    let mut out = Vec::new();
    for (d, (_, trials, max, cont, power)) in DESIGNS.iter().enumerate() {
        if !only.is_empty() && !only.contains(&d) {
            out.push(Default::default());
            continue;
        }
        // The gate's settings are not part of the fingerprint, nor `.harness/` of the
        // surface tree: main's cached trials serve every design.
        repo.edit_experiment(|t| {
            let t = t
                .lines()
                .filter(|l| {
                    !l.starts_with("  max_trials:")
                        && !l.starts_with("  continue_p:")
                        && !l.starts_with("  futility_power:")
                })
                .map(|l| {
                    if l.starts_with("trials:") {
                        format!("trials: {trials}")
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            let max = max
                .map(|m| format!("\n  max_trials: {m}"))
                .unwrap_or_default()
                + &power
                    .map(|g| format!("\n  futility_power: {g}"))
                    .unwrap_or_default();
            t.replace(
                "  statistic: pooled",
                &format!("  statistic: pooled\n  continue_p: {cont}{max}"),
            ) + "\n# design "
                + &d.to_string()
                + "\n"
        });
        let mut cells: [Cell; 4] = Default::default();
        // `counts[k]` candidates of effect k (each its own tree, so fresh trials) against the
        // same sample of main.
        let runs: Vec<(usize, Effect, u32)> = Effect::ALL
            .into_iter()
            .enumerate()
            .flat_map(|(k, e)| (0..counts[k]).map(move |i| (k, e, i)))
            .collect();
        for (k, effect, i) in runs {
            let tag = format!("r{rep}d{d}i{i}");
            let c = noisy::candidate(&repo, rep, &tag, effect);
            let v = noisy::validate(&repo, &c);
            cells[k].n += 1;
            cells[k].accepted += (v.verdict == "accept") as u32;
            cells[k].trials += v.candidate_trials;
            eprintln!(
                "rep {rep} {} {}: {} after {} candidate trials",
                DESIGNS[d].0,
                effect.name(),
                v.verdict,
                v.candidate_trials
            );
        }
        out.push(cells);
    }
    out
}

fn main() {
    let reps = env("GATE_PIPELINE_REPS", 4);
    // Repetitions FIRST..FIRST+REPS (seeds 2000 + rep): batches add up to one sample.
    let first = env("GATE_PIPELINE_FIRST", 1);
    let cached = env("GATE_PIPELINE_CACHED", 32);
    let jobs = env("GATE_PIPELINE_JOBS", 2).max(1);
    let list = |k: &str| -> Vec<u32> {
        std::env::var(k)
            .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or_default()
    };
    // Candidates per repetition and design of each effect (A/A, +5, +10, +20).
    let counts: [u32; 4] = match list("GATE_PIPELINE_COUNTS")[..] {
        [a, b, c, d] => [a, b, c, d],
        _ => [1, 1, 1, 1],
    };
    let suite = Suite::from_env("GATE_PIPELINE_SUITE");
    let only: Vec<usize> = list("GATE_PIPELINE_DESIGNS")
        .into_iter()
        .map(|d| d as usize)
        .collect();
    let tasks = suite.tasks().len() as u32;
    let budget = 2 * tasks * 2;
    let start = Instant::now();
    let next = AtomicU32::new(first);
    let total: Mutex<Vec<[Cell; 4]>> = Mutex::new(vec![Default::default(); DESIGNS.len()]);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let rep = next.fetch_add(1, Ordering::SeqCst);
                    if rep >= first + reps {
                        break;
                    }
                    let got = repetition(suite, rep, cached, counts, &only);
                    let mut t = total.lock().unwrap();
                    for (d, cells) in got.into_iter().enumerate() {
                        for (k, c) in cells.into_iter().enumerate() {
                            t[d][k].n += c.n;
                            t[d][k].accepted += c.accepted;
                            t[d][k].trials += c.trials;
                        }
                    }
                }
            });
        }
    });
    let total = total.into_inner().unwrap();
    println!(
        "git-harness gate through the pipeline: noisy stand-in ({} experiment), {} held_in + {} validation tasks, main's mean pass rate {:.1}%, effects {:+.1} / {:+.1} / {:+.1} points, pooled statistic, main's cache {cached} trials per task, {reps} repetitions ({counts:?} candidates A/A, +5, +10, +20 in each), {:.0} s",
        suite.name(),
        suite.split("held_in").len(),
        suite.split("validation").len(),
        100.0 * suite.mean_rate(),
        suite.gain(Effect::Plus5),
        suite.gain(Effect::Plus10),
        suite.gain(Effect::Plus20),
        start.elapsed().as_secs_f64()
    );
    println!(
        "{:<28} {:>20} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10}",
        "design",
        "A/A accept [95% CI]",
        "+5pt",
        "+10pt",
        "+20pt",
        "trials A/A",
        "trials +10",
        "trials +20",
        "mix 80/20"
    );
    for (d, cells) in total.iter().enumerate() {
        if cells[0].n == 0 {
            continue;
        }
        let frac = |c: &Cell| {
            format!(
                "{}/{} {:.0}%",
                c.accepted,
                c.n,
                100.0 * c.accepted as f64 / c.n.max(1) as f64
            )
        };
        let per = |c: &Cell| c.trials as f64 / c.n.max(1) as f64;
        let (lo, hi) = noisy::wilson(cells[0].accepted, cells[0].n);
        println!(
            "{:<28} {:>20} {:>12} {:>12} {:>12} {:>10.0} {:>10.0} {:>10.0} {:>10.0}",
            DESIGNS[d].0,
            format!("{}/{} [{lo:.0}, {hi:.0}]", cells[0].accepted, cells[0].n),
            frac(&cells[1]),
            frac(&cells[2]),
            frac(&cells[3]),
            per(&cells[0]),
            per(&cells[2]),
            per(&cells[3]),
            0.8 * per(&cells[0]) + 0.2 * per(&cells[2])
        );
    }
    println!(
        "  (trials: candidate trials per decision; main's side comes from its cache; budget (paper: 2 trials × {tasks} tasks × 2 sides) = {budget})"
    );
}
