//! The sign-flip permutation test against brute-force enumeration, and its monotonicity (which
//! exact early stopping relies on).

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::disallowed_methods,
    reason = "tests drive the binary and other processes, and panic on what they did not expect"
)]

use git_harness::gate::stats::{
    Method, min_changed_tasks, sign_flip_p_value, tail_count_dp, tail_count_enumerate,
    tail_probability_dp_f64,
};
use proptest::prelude::*;

/// The definition, spelled out: all 2^n sign flips of ALL differences (zeros included).
fn brute_force(diffs: &[i64]) -> f64 {
    let n = diffs.len();
    let observed: i64 = diffs.iter().sum();
    let mut hits = 0u64;
    for mask in 0u64..(1 << n) {
        let s: i64 = diffs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if mask >> i & 1 == 1 {
                    d.abs()
                } else {
                    -d.abs()
                }
            })
            .sum();
        hits += (s >= observed) as u64;
    }
    hits as f64 / (1u64 << n) as f64
}

#[test]
fn known_values() {
    assert_eq!(sign_flip_p_value(&[]).0, 1.0);
    assert_eq!(sign_flip_p_value(&[0, 0]).0, 1.0);
    assert_eq!(sign_flip_p_value(&[1]).0, 0.5);
    assert_eq!(sign_flip_p_value(&[-1]).0, 1.0);
    assert_eq!(sign_flip_p_value(&[2, -1]).0, 0.5);
    assert_eq!(sign_flip_p_value(&[1, 1, 1, 1]).0, 1.0 / 16.0);
    assert_eq!(sign_flip_p_value(&[1, 1, 1, 1, 1]).0, 1.0 / 32.0);
    assert_eq!(sign_flip_p_value(&[2, 2, 1, 1, 1, 0, 0]).0, 1.0 / 32.0);
    // One loss among six gains of one: flips with sum ≥ 4: all-plus (6), or exactly one minus
    // among the 7 (sum 4): 1 + 7 = 8 of 128.
    assert_eq!(sign_flip_p_value(&[1, 1, 1, 1, 1, 1, -1]).0, 8.0 / 128.0);
}

#[test]
fn minimum_changed_tasks_for_alpha() {
    assert_eq!(min_changed_tasks(0.05), 5);
    assert_eq!(min_changed_tasks(0.0625), 4);
    assert_eq!(min_changed_tasks(0.01), 7);
    assert_eq!(min_changed_tasks(0.5), 1);
}

#[test]
fn methods_switch_with_m() {
    assert_eq!(sign_flip_p_value(&[1; 10]).1, Method::Enumeration);
    assert_eq!(sign_flip_p_value(&[1; 11]).1, Method::DpExact);
    assert_eq!(sign_flip_p_value(&[1; 64]).0, 0.5f64.powi(64));
    assert_eq!(sign_flip_p_value(&[1; 127]).1, Method::DpExact);
    let (p, m) = sign_flip_p_value(&[1; 200]);
    assert_eq!(m, Method::DpFloat);
    assert!((p / 0.5f64.powi(200) - 1.0).abs() < 1e-12);
    // All-negative: every flip reaches the (minimal) observed sum.
    assert_eq!(sign_flip_p_value(&[-2; 300]).0, 1.0);
}

#[test]
fn exact_for_64_changed_tasks() {
    // 64 changed tasks of mixed sizes: the integer DP agrees with a closed form on a symmetric case.
    // With d = [1; 64] and one flip each, P(S* ≥ 62) = (1 + 64) / 2^64 (all plus, or one minus: 62).
    let mut d = vec![1i64; 64];
    d[0] = -1; // observed 62
    assert_eq!(tail_count_dp(&d), Some(65));
    assert_eq!(sign_flip_p_value(&d).0, 65.0 / 2f64.powi(64));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn enumeration_and_dp_match_brute_force(diffs in prop::collection::vec(-4i64..=4, 0..14)) {
        let want = brute_force(&diffs);
        let m = diffs.iter().filter(|d| **d != 0).count() as i32;
        let scale = 2f64.powi(m);
        prop_assert_eq!(tail_count_enumerate(&diffs).unwrap() as f64 / scale, want);
        prop_assert_eq!(tail_count_dp(&diffs).unwrap() as f64 / scale, want);
        prop_assert!((tail_probability_dp_f64(&diffs) - want).abs() < 1e-12);
        prop_assert_eq!(sign_flip_p_value(&diffs).0, want);
    }

    #[test]
    fn dp_exact_matches_f64_dp_on_larger_inputs(diffs in prop::collection::vec(-3i64..=3, 10..120)) {
        let exact = sign_flip_p_value(&diffs).0;
        let float = tail_probability_dp_f64(&diffs);
        prop_assert!((exact - float).abs() <= 1e-12 * exact.max(1e-300) + 1e-300, "{} vs {}", exact, float);
    }

    /// p is non-increasing in each difference (the proof is in `gate::stats`).
    #[test]
    fn p_value_is_monotone_in_each_difference(
        diffs in prop::collection::vec(-3i64..=3, 1..16),
        k in any::<prop::sample::Index>(),
    ) {
        let k = k.index(diffs.len());
        let mut up = diffs.clone();
        up[k] += 1;
        let (p, p_up) = (sign_flip_p_value(&diffs).0, sign_flip_p_value(&up).0);
        prop_assert!(p_up <= p, "raising d[{}] raised p from {} to {}", k, p, p_up);
    }
}

/// The pooled test's p-value is exact: against brute-force enumeration of every split of each
/// task's passes between the sides, on small cases.
#[test]
fn pooled_p_value_matches_brute_force() {
    use git_harness::gate::stats::{Stratum, pooled_p_value};
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    fn choose(n: u64, k: u64) -> f64 {
        if k > n {
            return 0.0;
        }
        (1..=k).map(|i| (n - k + i) as f64 / i as f64).product()
    }
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for _ in 0..300 {
        let strata: Vec<Stratum> = (0..rng.random_range(1..4))
            .map(|_| {
                let parent_n = rng.random_range(0..5u32);
                let cand_n = rng.random_range(0..4u32);
                Stratum {
                    parent_pass: rng.random_range(0..=parent_n),
                    parent_n,
                    cand_pass: rng.random_range(0..=cand_n),
                    cand_n,
                }
            })
            .collect();
        // Every assignment of candidate passes, weighted by its hypergeometric probability.
        let observed: u32 = strata.iter().map(|s| s.cand_pass).sum();
        let mut tail = 0.0;
        let ranges: Vec<u32> = strata.iter().map(|s| s.cand_n + 1).collect();
        let combos: u32 = ranges.iter().product();
        for code in 0..combos {
            let (mut c, mut prob, mut sum) = (code, 1.0, 0);
            for (s, r) in strata.iter().zip(&ranges) {
                let x = c % r;
                c /= r;
                let (n, k) = (
                    (s.parent_n + s.cand_n) as u64,
                    (s.parent_pass + s.cand_pass) as u64,
                );
                prob *= choose(k, x as u64) * choose(n - k, (s.cand_n - x) as u64)
                    / choose(n, s.cand_n as u64);
                sum += x;
            }
            if sum >= observed {
                tail += prob;
            }
        }
        let got = pooled_p_value(&strata);
        assert!(
            (got - tail.min(1.0)).abs() < 1e-9,
            "{strata:?}: {got} vs {tail}"
        );
    }
}
