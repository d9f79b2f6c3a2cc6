//! The strict rule's statistic: an exact one-sided paired sign-flip permutation test.
//!
//! Each task `t` contributes a paired difference `d_t` = candidate passes − parent passes over
//! the kept trial pairs of that task. Under the null hypothesis (the edit does nothing) the
//! labels "parent" and "candidate" are exchangeable within a task, so each `d_t` is as likely
//! to be `+|d_t|` as `−|d_t|`. The statistic is `S = Σ d_t`; the one-sided p-value is
//!
//! ```text
//! p = #{ ε ∈ {−1,+1}^m : Σ ε_i |d_i| ≥ S } / 2^m
//! ```
//!
//! over the `m` nonzero differences (zero differences flip to themselves; including them
//! would double numerator and denominator alike).
//!
//! **How it is computed.** For `m ≤ ENUMERATE_MAX` by enumerating the `2^m` sign flips. Above
//! that, by dynamic programming over subset sums: with `A = Σ|d_i|`, a flip with plus-set `P`
//! has sum `2·Σ_{i∈P}|d_i| − A`, so the tail counts subsets whose sum reaches
//! `⌈(S + A)/2⌉`, and the number of subsets per sum is an integer DP over `0..=A`. That is
//! exact (u128 counts) for `m ≤ 127`, and `A` is at most `m × trials`, so it is fast. Above 127
//! nonzero differences the DP runs on probabilities in f64 (each step halves exactly; the
//! relative rounding error is below `m · 2^-52`), which is exact for every practical purpose.
//!
//! **Resolution.** The smallest p-value `m` changed tasks can give is `1/2^m`: with 4 changed
//! tasks p ≥ 1/16 = 0.0625, so the strict rule at alpha = 0.05 can never accept fewer than 5
//! changed tasks (p = 1/32 when all 5 improve). See [`min_changed_tasks`].
//!
//! **Monotonicity** (what early stopping relies on): p is non-increasing in each `d_k`.
//! Proof: let `O = Σ_{t≠k} d_t` and `R = Σ_{t≠k} ε_t|d_t|`. Flipping `d_k`'s sign to `+` counts
//! when `|d_k|·sgn + R ≥ d_k + O`; for either sign of `d_k` the two cases are `R ≥ O` and
//! `R ≥ O + 2·d_k`, so `p = ½·P(R ≥ O) + ½·P(R ≥ O + 2·d_k)`, which cannot grow as `d_k` grows.
//! (A property test checks it too.)

use serde::{Deserialize, Serialize};

/// Enumerate the sign flips directly up to this many nonzero differences.
pub const ENUMERATE_MAX: usize = 10;
/// Integer (exact) DP up to this many nonzero differences.
pub const EXACT_DP_MAX: usize = 127;

/// The result of the paired test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedTest {
    /// `"paired sign-flip permutation test (one-sided, exact)"`.
    pub name: String,
    /// Number of tasks with a nonzero difference.
    pub m: u32,
    /// Observed statistic: Σ over tasks of (candidate passes − parent passes).
    pub observed: i64,
    pub p_value: f64,
    /// The significance level it was compared with.
    pub alpha: f64,
    /// How p was computed: `enumeration`, `dp-exact` or `dp-f64`.
    pub method: String,
}

/// How the p-value was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Enumeration,
    DpExact,
    DpFloat,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Enumeration => "enumeration",
            Method::DpExact => "dp-exact",
            Method::DpFloat => "dp-f64",
        }
    }
}

/// The one-sided p-value of the sign-flip test of `diffs` and how it was computed.
/// With no nonzero difference, p = 1 (the observed sum 0 is reached by every flip).
pub fn sign_flip_p_value(diffs: &[i64]) -> (f64, Method) {
    let nz: Vec<i64> = diffs.iter().copied().filter(|d| *d != 0).collect();
    let m = nz.len();
    if m <= ENUMERATE_MAX {
        let count = tail_count_enumerate(&nz).expect("m is small");
        (count as f64 / (1u64 << m) as f64, Method::Enumeration)
    } else if m <= EXACT_DP_MAX {
        let count = tail_count_dp(&nz).expect("m fits u128");
        (count as f64 / 2f64.powi(m as i32), Method::DpExact)
    } else {
        (tail_probability_dp_f64(&nz), Method::DpFloat)
    }
}

/// The test as recorded in a decision.
pub fn paired_test(diffs: &[i64], alpha: f64) -> PairedTest {
    let (p_value, method) = sign_flip_p_value(diffs);
    PairedTest {
        name: "paired sign-flip permutation test (one-sided, exact)".to_string(),
        m: diffs.iter().filter(|d| **d != 0).count() as u32,
        observed: diffs.iter().sum(),
        p_value,
        alpha,
        method: method.as_str().to_string(),
    }
}

/// Number of sign flips of the nonzero `diffs` whose sum reaches the observed sum, by
/// enumeration. `None` when there are more than 30 nonzero differences.
pub fn tail_count_enumerate(diffs: &[i64]) -> Option<u64> {
    let nz: Vec<i64> = diffs.iter().copied().filter(|d| *d != 0).collect();
    let m = nz.len();
    if m > 30 {
        return None;
    }
    let observed: i64 = nz.iter().sum();
    let abs: Vec<i64> = nz.iter().map(|d| d.abs()).collect();
    let mut count = 0u64;
    for mask in 0u64..(1u64 << m) {
        let s: i64 = abs
            .iter()
            .enumerate()
            .map(|(i, a)| if mask >> i & 1 == 1 { *a } else { -*a })
            .sum();
        if s >= observed {
            count += 1;
        }
    }
    Some(count)
}

/// The same count by dynamic programming over subset sums, exact. `None` above 127 nonzero
/// differences (the count would not fit u128).
pub fn tail_count_dp(diffs: &[i64]) -> Option<u128> {
    let nz: Vec<i64> = diffs.iter().copied().filter(|d| *d != 0).collect();
    if nz.len() > EXACT_DP_MAX {
        return None;
    }
    let (abs, threshold) = subset_threshold(&nz);
    let total: usize = abs.iter().sum();
    let mut ways = vec![0u128; total + 1];
    ways[0] = 1;
    let mut reach = 0usize;
    for a in &abs {
        for s in (0..=reach).rev() {
            let w = ways[s];
            if w != 0 {
                ways[s + a] += w;
            }
        }
        reach += a;
    }
    Some(ways.iter().skip(threshold.min(total + 1)).sum())
}

/// The p-value by the same DP over probabilities (any number of differences).
pub fn tail_probability_dp_f64(diffs: &[i64]) -> f64 {
    let nz: Vec<i64> = diffs.iter().copied().filter(|d| *d != 0).collect();
    let (abs, threshold) = subset_threshold(&nz);
    let total: usize = abs.iter().sum();
    let mut prob = vec![0f64; total + 1];
    prob[0] = 1.0;
    let mut reach = 0usize;
    for a in &abs {
        for s in (0..=reach).rev() {
            let w = prob[s] * 0.5;
            prob[s] = w;
            prob[s + a] += w;
        }
        reach += a;
    }
    prob.iter()
        .skip(threshold.min(total + 1))
        .sum::<f64>()
        .min(1.0)
}

/// |d_i| and the smallest plus-set sum that reaches the observed statistic.
fn subset_threshold(nz: &[i64]) -> (Vec<usize>, usize) {
    let abs: Vec<usize> = nz.iter().map(|d| d.unsigned_abs() as usize).collect();
    let total: i64 = abs.iter().sum::<usize>() as i64;
    let observed: i64 = nz.iter().sum();
    // 2·P − total ≥ observed  ⟺  P ≥ (observed + total) / 2, rounded up; observed + total ≥ 0.
    let need = (observed + total + 1).div_euclid(2);
    (abs, need.max(0) as usize)
}

/// The fewest changed tasks with which the test can reach `p ≤ alpha` at all: the smallest `m`
/// with `1/2^m ≤ alpha` (5 at alpha = 0.05, 7 at 0.01).
pub fn min_changed_tasks(alpha: f64) -> u32 {
    let mut m = 0u32;
    while m < 200 && 0.5f64.powi(m as i32) > alpha {
        m += 1;
    }
    m
}

/// The one-sided p-value that a task regressed: the exact conditional (Fisher) test of the
/// candidate's passes against the parent's on that task. Under the null hypothesis (the edit
/// does nothing, every trial of the task passes with the same probability) and given the total
/// number of passes `K = parent_pass + cand_pass`, the candidate's passes are hypergeometric:
/// `cand_n` draws from `parent_n + cand_n` trials of which `K` passed. p = P(X ≤ cand_pass).
/// With no trial on either side, p = 1.
///
/// p is non-decreasing when a candidate trial passes and non-increasing when one fails (what
/// early stopping relies on; the brute-force property test of `settled` checks it).
pub fn regression_p(parent_pass: u32, parent_n: u32, cand_pass: u32, cand_n: u32) -> f64 {
    if parent_n == 0 || cand_n == 0 {
        return 1.0;
    }
    let n = (parent_n + cand_n) as u64;
    let k = (parent_pass + cand_pass) as u64;
    let draws = cand_n as u64;
    let lo = (k + draws).saturating_sub(n);
    let denom = ln_choose(n, draws);
    let mut p = 0.0;
    for x in lo..=(cand_pass as u64).min(k) {
        p += (ln_choose(k, x) + ln_choose(n - k, draws - x) - denom).exp();
    }
    p.min(1.0)
}

/// The smallest p-value [`regression_p`] can give a task with `parent_pass` of `parent_n`
/// parent passes and `cand_n` candidate trials: every candidate trial fails.
pub fn regression_p_min(parent_pass: u32, parent_n: u32, cand_n: u32) -> f64 {
    regression_p(parent_pass, parent_n, 0, cand_n)
}

/// ln C(n, k).
fn ln_choose(n: u64, k: u64) -> f64 {
    if k > n {
        return f64::NEG_INFINITY;
    }
    let k = k.min(n - k);
    (1..=k).map(|i| ((n - k + i) as f64 / i as f64).ln()).sum()
}

/// A significance level for people: four significant digits at most.
pub fn fmt_level(a: f64) -> String {
    let s = format!("{a:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// One task of the pooled test: the parent's passes of its trials free of infrastructure errors
/// (every cached trial of its tree under the fingerprint) and the candidate's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stratum {
    pub parent_pass: u32,
    pub parent_n: u32,
    pub cand_pass: u32,
    pub cand_n: u32,
}

impl Stratum {
    /// The task can move the statistic: both sides ran and its passes are not all on one
    /// outcome (otherwise the candidate's passes are fixed given the total).
    pub fn informative(&self) -> bool {
        let k = self.parent_pass + self.cand_pass;
        self.parent_n > 0 && self.cand_n > 0 && k > 0 && k < self.parent_n + self.cand_n
    }
}

/// The one-sided p-value that the candidate passes more often than the parent, pooled over
/// tasks: the exact stratified conditional test (Fisher's test per task, combined by the sum).
///
/// Under the null hypothesis (within a task every trial of either side passes with the same
/// probability, whatever its seed) and given each task's total passes `K_t`, the candidate's
/// passes `X_t` are hypergeometric (`cand_n` draws from `parent_n + cand_n` trials of which
/// `K_t` passed) and independent across tasks, whatever the per-task rates are. The statistic
/// is `S = Σ X_t`; `p = P(S ≥ s_observed)`, by convolving the per-task distributions (a DP over
/// `0..=Σ cand_n`, in f64). With no informative task, p = 1.
///
/// **Monotonicity** (what early stopping relies on): a candidate trial that passes instead of
/// failing raises `x_t` by 1 and `K_t` by 1. Adding one passing trial to the urn raises the
/// drawn passes by 0 or 1 (couple the draws), so `X_t' ≤ X_t + 1` in distribution and
/// `P(S' ≥ s + 1) ≤ P(S ≥ s)`: p is non-increasing in each candidate pass.
pub fn pooled_p_value(strata: &[Stratum]) -> f64 {
    let weighted: Vec<(Stratum, u32)> = strata.iter().map(|s| (*s, 1)).collect();
    pooled_p_value_weighted(&weighted)
}

/// [`pooled_p_value`] of the weighted statistic `S = Σ w_t X_t` (integer weights fixed before
/// the candidate's trials are seen: `gate.flaky: weight`). Exact for any fixed weights, by the
/// same convolution over the scaled supports; monotone in each candidate pass for the same
/// reason (a positive weight keeps the coupling's order).
pub fn pooled_p_value_weighted(strata: &[(Stratum, u32)]) -> f64 {
    let mut dist = vec![1.0f64];
    let mut observed = 0usize;
    for (s, w) in strata.iter().filter(|(s, w)| *w > 0 && s.informative()) {
        let w = *w as usize;
        let (n, k, draws) = (
            (s.parent_n + s.cand_n) as u64,
            (s.parent_pass + s.cand_pass) as u64,
            s.cand_n as u64,
        );
        let lo = (k + draws).saturating_sub(n);
        let hi = k.min(draws);
        let denom = ln_choose(n, draws);
        let pmf: Vec<f64> = (0..=hi)
            .map(|x| {
                if x < lo {
                    0.0
                } else {
                    (ln_choose(k, x) + ln_choose(n - k, draws - x) - denom).exp()
                }
            })
            .collect();
        let mut next = vec![0f64; dist.len() + w * (pmf.len() - 1)];
        for (i, a) in dist.iter().enumerate() {
            if *a == 0.0 {
                continue;
            }
            for (j, b) in pmf.iter().enumerate() {
                next[i + w * j] += a * b;
            }
        }
        dist = next;
        observed += w * s.cand_pass as usize;
    }
    dist.iter().skip(observed).sum::<f64>().min(1.0)
}

/// The pooled test as recorded in a decision; `m` counts the informative tasks, `observed` is
/// the candidate's passes minus their expectation under the null, rounded.
pub fn pooled_test(strata: &[Stratum], alpha: f64) -> PairedTest {
    let weighted: Vec<(Stratum, u32)> = strata.iter().map(|s| (*s, 1)).collect();
    pooled_test_weighted(&weighted, alpha)
}

/// [`pooled_test`] of the weighted statistic ([`pooled_p_value_weighted`]); `observed` is then
/// in weight units.
pub fn pooled_test_weighted(strata: &[(Stratum, u32)], alpha: f64) -> PairedTest {
    let used = || strata.iter().filter(|(s, w)| *w > 0 && s.informative());
    let expected: f64 = used()
        .map(|(s, w)| {
            *w as f64 * (s.parent_pass + s.cand_pass) as f64 * s.cand_n as f64
                / (s.parent_n + s.cand_n) as f64
        })
        .sum();
    let passes: u32 = used().map(|(s, w)| w * s.cand_pass).sum();
    PairedTest {
        name: "pooled stratified conditional test on per-task rates (one-sided, exact)".to_string(),
        m: used().count() as u32,
        observed: (passes as f64 - expected).round() as i64,
        p_value: pooled_p_value_weighted(strata),
        alpha,
        method: "convolution".to_string(),
    }
}

/// Φ, the standard normal distribution function (erfc by Abramowitz–Stegun 7.1.26, error below
/// 1.5e-7). For the design's futility bound and the minimum detectable effect, where an
/// approximation is all that is asked.
pub fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let poly = t
        * (0.254829592
            + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let erfc = poly * (-z * z).exp();
    if x >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    }
}

/// Φ⁻¹ by bisection on [`normal_cdf`].
pub fn normal_quantile(q: f64) -> f64 {
    let (mut lo, mut hi) = (-10.0, 10.0);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if normal_cdf(mid) < q {
            lo = mid
        } else {
            hi = mid
        }
    }
    0.5 * (lo + hi)
}
