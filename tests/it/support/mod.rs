//! The one support module of the integration tests. Every test drives the built binary (or the
//! library) on hermetic temp repositories, against real components: git, bubblewrap, the Docker
//! engine, and stand-in model servers on loopback.
//!
//! - `hermetic`: the one hermetic environment for git and the binary, and `Out`.
//! - `repo`: the repository on a bundled template (`init --template`), edited with plain git.
//! - `cli`: the repository of the snapshot tests (a cleared environment, fixed identity and
//!   dates, normalised output).
//! - `eval`: the demo repository (`init` + `split`) and readers of `run --format json`.
//! - `loops`, `propose`: the small splits and readers of the loop and mining tests.
//! - `agent`: a local test sandbox and the scripted OpenAI/Anthropic stand-in server.
//! - `sandbox`: fixture tasks, the process table, and the bubblewrap/Docker checks.
//! - `serve`: starting a stand-in server on loopback.

// Each test module uses its own part of the support.
#![allow(dead_code, unused_imports)]

pub mod agent;
pub mod cli;
pub mod eval;
pub mod hermetic;
pub mod loops;
pub mod propose;
pub mod repo;
pub mod sandbox;
pub mod serve;
