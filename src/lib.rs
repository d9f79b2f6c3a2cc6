//! git-harness keeps an LLM-agent harness in a git repository and improves it one validated
//! branch at a time: run, mine failures, propose bounded edits as evidence branches, validate
//! against the parent, promote what a gate accepts.
//!
//! The library never prints and never reads `$HOME`; the binary's `cli` module does the talking.

pub mod agent;
pub mod error;
pub mod eval;
pub mod exit;
pub mod experiment;
pub mod gate;
pub mod gateway;
pub mod harness;
#[cfg(test)]
mod layering;
pub mod lineage;
pub mod method;
pub mod mine;
pub mod model;
pub mod propose;
pub mod report;
pub mod sandbox;
pub mod support;
pub mod task;
pub mod workspace;

pub use error::{Error, InfraClass, Result};

/// The version recorded in run records.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
