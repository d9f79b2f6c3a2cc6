//! Support of the loop tests (validate, promote, evolve, report --final, bisect, demo): small
//! splits of the demo suite, and readers of what a run recorded.

use std::time::Instant;

use serde_json::Value;

pub use super::hermetic::{Out, hermetic, output};
pub use super::repo::{Repo, harness_in};

/// Held-in tasks of the small loop split: the demo suite's five quirks, at least one each.
pub const HELD_IN: &[&str] = &[
    "word-count",
    "log-time-window",
    "repair-build-script",
    "sales-total",
    "count-errors",
    "number-lines",
    "sort-names-subdir",
    "reverse-lines",
];
pub const VALIDATION: &[&str] = &[
    "decode-message",
    "fizzbuzz-script",
    "fix-slugify",
    "top-ips",
    "package-with-env",
    "crlf-script",
];
pub const TEST: &[&str] = &[
    "extract-emails",
    "fix-json-config",
    "clean-emails",
    "normalize-whitespace",
];

/// The splits a run evaluated, from its `run.yaml`.
pub fn run_splits(run_yaml: &serde_yaml::Value) -> Vec<String> {
    run_yaml["splits"]
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Time a closure and print how long it took (shown with `--nocapture`).
pub fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    eprintln!("[time] {what}: {:.1} s", start.elapsed().as_secs_f64());
    out
}
