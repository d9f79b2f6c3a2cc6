//! Simulation of the gate's inputs for the in-process checks of its error control
//! (`gate_sequential`, `gate_flaky`): outcome tables drawn from per-task pass rates, the rates
//! themselves, and the margin a measured false-accept rate may exceed alpha by.

use git_harness::gate::{Outcome, Table};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// A table of `trials` outcomes per task, task `tNN` passing with probability `probs[NN]`.
pub fn draw(rng: &mut ChaCha8Rng, probs: &[f64], trials: u32) -> Table {
    let mut t = Table::new();
    for (i, p) in probs.iter().enumerate() {
        let o = (0..trials)
            .map(|_| {
                if rng.random_bool(*p) {
                    Outcome::Pass
                } else {
                    Outcome::Fail
                }
            })
            .collect();
        t.insert(format!("t{i:02}"), o);
    }
    t
}

/// `tasks` per-task pass rates: uniform on `[lo, hi]`, or with `extreme` piled up near 0 and 1
/// (the arcsine law, as on agent benchmarks).
pub fn pass_rates(rng: &mut ChaCha8Rng, tasks: usize, extreme: bool, lo: f64, hi: f64) -> Vec<f64> {
    (0..tasks)
        .map(|_| {
            let u: f64 = rng.random();
            if extreme {
                (std::f64::consts::FRAC_PI_2 * u).sin().powi(2)
            } else {
                lo + (hi - lo) * u
            }
        })
        .collect()
}

/// Above alpha by more than three standard errors of a rate of alpha: not luck.
pub fn margin(alpha: f64, reps: u32) -> f64 {
    3.0 * (alpha * (1.0 - alpha) / reps as f64).sqrt()
}
