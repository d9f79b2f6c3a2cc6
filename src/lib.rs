//! git-harness keeps an LLM-agent harness in a git repository and improves it one validated
//! branch at a time: run, mine failures, propose bounded edits as evidence branches, validate
//! against the parent, promote what a gate accepts.
//!
//! The library never prints and never reads `$HOME`; the binary's `cli` module does the talking.

pub mod agent;
pub mod assets;
pub mod error;
pub mod estimate;
pub mod eval;
pub mod evolve;
pub mod exit;
pub mod experiment;
pub mod gate;
pub mod harbor;
pub mod harness;
pub mod lineage;
pub mod mine;
pub mod model;
pub mod owner;
pub mod propose;
pub mod report;
pub mod sandbox;
pub mod sealed;
pub mod secrets;
pub mod task;
pub mod validate;
pub mod workspace;
pub mod yaml;

pub use error::{Error, Result};

/// The version recorded in run records.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
