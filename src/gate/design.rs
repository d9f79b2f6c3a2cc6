//! The sequential design of the strict rule: looks and the alpha spent at each.
//!
//! With adaptive trials (`max_trials` above `trials`) a candidate is judged at up to `K` looks
//! with `n_1 = trials < n_2 < … < n_K = max_trials` trials per task (each look doubles, capped
//! at `max_trials`). Look `k` tests at level
//!
//! ```text
//! alpha_k = alpha · (t_k^2 − t_{k−1}^2),  t_k = n_k / n_K,  t_0 = 0
//! ```
//!
//! (a power-2 spending function: little alpha early, where two trials carry little information,
//! most at the last look). The levels sum to `alpha`. Each look's test is exact at its own
//! level (the sign-flip test is valid for any fixed number of trials), so whatever rule
//! decides which looks are taken:
//!
//! ```text
//! P(accept at some look | null) ≤ Σ_k P(p_k ≤ alpha_k | null) ≤ Σ_k alpha_k = alpha
//! ```
//!
//! (`p_k` is the p-value the data would give at look `k`, taken or not). Stopping early for
//! futility (p above `continue_p`) or for a paper-rule failure only removes accepts, and the
//! exact early stopping within a look ([`super::settled`]) returns the verdict every completion
//! of the look agrees on, so neither can raise the bound. Without adaptive trials there is one
//! look at `alpha`, which is the fixed design.

use serde::{Deserialize, Serialize};

use super::stats::{normal_cdf, normal_quantile};
use crate::experiment::{GateConfig, GateRule};

/// One look of the sequential design.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Look {
    /// 1-based index of this look.
    pub index: u32,
    /// Number of looks in the design.
    pub of: u32,
    /// Trials per task at this look.
    pub trials: u32,
    /// The significance level spent at this look.
    pub alpha: f64,
}

impl Look {
    /// The last look: no more trials can follow.
    pub fn last(&self) -> bool {
        self.index >= self.of
    }

    /// The single look of a fixed design at `alpha` with `trials` trials.
    pub fn fixed(alpha: f64, trials: u32) -> Self {
        Look {
            index: 1,
            of: 1,
            trials,
            alpha,
        }
    }
}

/// The trial counts of the looks: `base`, doubling, capped at `max_trials`. One look without
/// adaptive trials (paper rule, no `max_trials`, or `max_trials ≤ base`).
pub fn look_trials(cfg: &GateConfig, base: u32) -> Vec<u32> {
    let mut looks = vec![base];
    let Some(max) = cfg.max_trials else {
        return looks;
    };
    if cfg.rule != GateRule::Strict {
        return looks;
    }
    let mut n = base;
    while n < max {
        n = max.min((n * 2).max(n + 1));
        looks.push(n);
    }
    looks
}

/// Every look of the design for `base` trials per task at the first look.
pub fn looks(cfg: &GateConfig, base: u32) -> Vec<Look> {
    let ns = look_trials(cfg, base);
    let of = ns.len() as u32;
    let last = *ns.last().unwrap_or(&base) as f64;
    let spent = |n: u32| {
        let t = n as f64 / last;
        t * t
    };
    let mut prev = 0.0;
    ns.iter()
        .enumerate()
        .map(|(i, &n)| {
            let now = if i + 1 == ns.len() { 1.0 } else { spent(n) };
            let alpha = cfg.alpha * (now - prev);
            prev = now;
            Look {
                index: i as u32 + 1,
                of,
                trials: n,
                alpha,
            }
        })
        .collect()
}

/// The look at `trials` trials per task in the design that starts at `base`; trial counts off
/// the schedule are judged as the last look at or below them (the conservative choice).
pub fn look_at(cfg: &GateConfig, base: u32, trials: u32) -> Look {
    let all = looks(cfg, base);
    all.iter()
        .rev()
        .find(|l| l.trials <= trials)
        .or(all.first())
        .copied()
        .unwrap_or_else(|| Look::fixed(cfg.alpha, trials))
}

/// The next look after `look`, if any.
pub fn next_look(cfg: &GateConfig, base: u32, look: &Look) -> Option<Look> {
    looks(cfg, base)
        .into_iter()
        .find(|l| l.index == look.index + 1)
}

/// The futility bound at `look`: a strict rejection before the last look asks for the next
/// look only when its p-value is at most this. It never enters the error control (stopping a
/// candidate only removes accepts), so it may depend on anything but the data of later looks.
///
/// With `futility_power: γ` it is a conditional-power bound: continue iff the probability of
/// crossing the last look's level, if the effect seen so far is the true one ("current
/// trend"), is at least `γ`. In the normal approximation of the test statistic `Z = Φ⁻¹(1 − p)`
/// with information fraction `t = n_k / n_K` (trials per task), the B-value `Z·√t` grows by
/// `N(θ(1 − t), 1 − t)` to the last look; with `θ = Z/√t` the conditional power is
/// `1 − Φ((z_K − Z/√t) / √(1 − t))`, `z_K = Φ⁻¹(1 − alpha_K)`, so the bound on p is
///
/// ```text
/// p ≤ 1 − Φ(√t · (z_K − Φ⁻¹(1 − γ) · √(1 − t)))
/// ```
///
/// lenient at the first looks (little is known, much can change), strict near the last. Without
/// `futility_power` it is `continue_p` at every look. Never below the look's own level.
pub fn futility_bound(cfg: &GateConfig, look: &Look) -> f64 {
    let fixed = fixed_futility_bound(cfg);
    let Some(gamma) = cfg.futility_power else {
        return fixed;
    };
    let Some(last) = cfg.max_trials.filter(|&m| m > look.trials) else {
        return fixed;
    };
    // The rest of the schedule from this look: each look doubles, capped at the last.
    let (mut n, mut before_last) = (look.trials, look.trials);
    while n < last {
        before_last = n;
        n = last.min((n * 2).max(n + 1));
    }
    let t_before = before_last as f64 / last as f64;
    let alpha_last = cfg.alpha * (1.0 - t_before * t_before);
    let t = look.trials as f64 / last as f64;
    let z_last = normal_quantile(1.0 - alpha_last);
    let z_min = t.sqrt() * (z_last - normal_quantile(1.0 - gamma) * (1.0 - t).sqrt());
    (1.0 - normal_cdf(z_min)).clamp(look.alpha, 1.0)
}

/// The fixed futility bound `continue_p` (at least alpha, at most 1).
pub fn fixed_futility_bound(cfg: &GateConfig) -> f64 {
    cfg.continue_p.max(cfg.alpha).min(1.0)
}
