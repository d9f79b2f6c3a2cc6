//! The one support module of the integration tests. Every test drives the built binary (or the
//! library) on hermetic temp repositories, against real components: git, bubblewrap, the Docker
//! engine, and stand-in model servers on loopback.
//!
//! - `hermetic`: the one hermetic environment for git and the binary, `bin()`, and `Out`.
//! - `repo`: the one `Repo`: a temp harness repository (`init --template`, the demo with
//!   `split`), driven through the binary and git, edited with plain git, read back through run
//!   refs and notes, with normalised snapshots of its output.
//! - `eval`: small demo task selections and readers of `run --format json`.
//! - `loops`, `propose`: the small splits and readers of the loop and mining tests.
//! - `agent`: a local test sandbox and the scripted OpenAI/Anthropic stand-in server.
//! - `command`: `protocol: command` repositories, their stand-in model and trial readers.
//! - `sandbox`: fixture tasks, the process table, and the bubblewrap/Docker checks.
//! - `kube`: a stand-in Kubernetes API server whose Pods are Docker containers.
//! - `interrupt`: Ctrl-C twice to a command of the binary from an async test.
//! - `dockerd`: a second Docker engine this test starts, and the pool tests' four tasks.
//! - `serve`: starting a stand-in server on loopback.
//! - `registry`: a real image registry on loopback.
//! - `gate_sim`: drawn outcome tables and pass rates for the gate's error-control checks.

// Each test module uses its own part of the support.
#![allow(dead_code, unused_imports)]

pub mod agent;
pub mod command;
pub mod dockerd;
pub mod eval;
pub mod gate_sim;
pub mod hermetic;
pub mod interrupt;
pub mod kube;
pub mod loops;
pub mod noisy;
pub mod propose;
pub mod registry;
pub mod repo;
pub mod sandbox;
pub mod serve;
