//! Task suites: the Harbor / Terminal-Bench 2 layout and the Terminal-Bench 1 layout.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskFormat {
    /// Harbor / Terminal-Bench 2: instruction.md, task.toml, environment/, tests/test.sh.
    Harbor,
    /// Terminal-Bench 1: task.yaml, Dockerfile, run-tests.sh, tests/.
    Tb1,
}

/// The `[environment]` of a task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentSpec {
    pub docker_image: Option<String>,
    pub cpus: Option<f64>,
    pub memory_mb: Option<u64>,
    /// Working directory inside the sandbox (default `/app`).
    pub workdir: String,
    /// `none` (default) or `bridge`/`host` when the task needs the network.
    pub network_mode: Option<String>,
    pub build_timeout_sec: Option<u64>,
}

/// One task of a suite, loaded and checksummed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The task directory's name; unique within a suite.
    pub id: String,
    pub dir: PathBuf,
    pub format: TaskFormat,
    pub instruction: String,
    pub agent_timeout: Duration,
    pub verifier_timeout: Duration,
    pub environment: EnvironmentSpec,
    /// sha256 over instruction, environment and tests: a changed verifier changes it.
    pub checksum: String,
}

/// A directory of task directories.
#[derive(Debug, Clone)]
pub struct Suite {
    pub root: PathBuf,
    pub tasks: Vec<Task>,
}

impl Suite {
    pub fn get(&self, id: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.id == id)
    }

    pub fn ids(&self) -> Vec<String> {
        self.tasks.iter().map(|t| t.id.clone()).collect()
    }
}

/// What the verifier said about the final state of a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifierOutcome {
    pub reward: f64,
    pub passed: bool,
    pub exit_code: Option<i32>,
    /// The tail of the test output, for mining.
    pub output_tail: String,
    /// Failed test names from pytest `-rA` output or ctrf.json.
    pub failed_tests: Vec<String>,
    pub timed_out: bool,
}
