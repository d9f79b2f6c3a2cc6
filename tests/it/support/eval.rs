//! Support of the `eval_*` tests: small task selections of the demo suite, readers of
//! `git harness run --format json` answers, and polling.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A small selection of demo tasks that finish in about a second or two each with the sim,
/// one held_in and one validation task, one of them passing under the minimal harness.
pub const FAST: &str = "{word-frequency,fizzbuzz-script}";
/// Four fast demo tasks (held_in and validation).
pub const FOUR: &str = "{word-frequency,sort-scores,top-ips,sum-in-subdir}";

pub fn executed(v: &Value) -> u64 {
    v["executed"].as_u64().expect("executed")
}

pub fn results(v: &Value) -> &Vec<Value> {
    v["results"].as_array().expect("results")
}

/// Per trial: (task, trial) -> (outcome, reward, seed, failed tests).
pub fn outcomes(v: &Value) -> BTreeMap<(String, u64), (String, String, u64, String)> {
    results(v)
        .iter()
        .map(|r| {
            (
                (
                    r["task"].as_str().expect("task").to_string(),
                    r["trial"].as_u64().expect("trial"),
                ),
                (
                    r["outcome"].as_str().expect("outcome").to_string(),
                    r["reward"].to_string(),
                    r["seed"].as_u64().expect("seed"),
                    r["verifier"]["failed_tests"].to_string(),
                ),
            )
        })
        .collect()
}

/// The numbers a user compares between runs, per split: (passes, trials, infra errors).
pub fn scores(v: &Value) -> BTreeMap<String, (u64, u64, u64)> {
    v["totals"]
        .as_object()
        .expect("totals")
        .iter()
        .map(|(split, t)| {
            (
                split.clone(),
                (
                    t["passes"].as_u64().expect("passes"),
                    t["trials"].as_u64().expect("trials"),
                    t["infra_errors"].as_u64().expect("infra_errors"),
                ),
            )
        })
        .collect()
}

/// Wait until `f` is true, polling; panics after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
