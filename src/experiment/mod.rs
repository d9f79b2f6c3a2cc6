//! `.harness/experiment.yaml` and `.harness/splits.yaml`: what stays fixed while the harness
//! changes, and the experiment fingerprint over it.

mod config;
pub mod image_map;
mod splits;

pub use config::*;
pub use splits::{Split, Splits};

pub const EXPERIMENT_FILE: &str = ".harness/experiment.yaml";
pub const SPLITS_FILE: &str = ".harness/splits.yaml";

/// A stable hash of the canonical experiment config, the splits and the suite's task checksums.
/// Results made under one fingerprint are never compared with results under another.
pub fn fingerprint(
    experiment: &Experiment,
    splits: &Splits,
    task_checksums: &[(String, String)],
) -> String {
    let mut h = crate::support::digest::Hasher::new();
    h.update(b"git-harness experiment v1\n");
    // Canonical forms: serde_json of our structs has a fixed field order.
    h.update(serde_json::to_vec(&experiment.canonical()).expect("experiment serializes"));
    h.update(b"\n");
    h.update(serde_json::to_vec(splits).expect("splits serialize"));
    h.update(b"\n");
    let mut sums: Vec<_> = task_checksums.to_vec();
    sums.sort();
    for (id, sum) in sums {
        h.update(id.as_bytes());
        h.update(b"=");
        h.update(sum.as_bytes());
        h.update(b"\n");
    }
    h.hex()[..16].to_string()
}
