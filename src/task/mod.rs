//! Task suites: the Harbor / Terminal-Bench 2 layout and the Terminal-Bench 1 layout.
//!
//! [`load_task`] and [`load_suite`] read a task directory as it is on disk; [`verify`] runs a
//! task's verifier in a sandbox; [`builtin`] has the `oracle` and `nop` agents and `tasks check`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod load;
pub mod local_gaps;

pub use load::{
    TaskProblem, load_suite, load_suite_lenient, load_task, parse_memory_mb, toml_field_line,
};
pub use local_gaps::{LocalGap, local_gaps, local_remedy};

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
    /// Harbor's `[environment].network_mode`: `public` (the default when unset), `no-network`
    /// or `allowlist`; the older `none` (= `no-network`) and `bridge`/`host` (= `public`) are
    /// read too. It is the mode of every phase that does not set its own.
    pub network_mode: Option<String>,
    pub build_timeout_sec: Option<u64>,
    /// Harbor's deprecated `allow_internet` (`true` = `public`, `false` = `no-network`), read
    /// when `network_mode` is unset.
    #[serde(default)]
    pub allow_internet: Option<bool>,
    /// `[agent].network_mode`: the agent phase's own mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_network_mode: Option<String>,
    /// `[verifier].network_mode`: the verifier phase's own mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier_network_mode: Option<String>,
    /// `allowed_hosts` of an `allowlist` mode (`[environment]`, `[agent]` or `[verifier]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
}

/// A phase of a trial, each with its own network mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Image build and `environment/setup.sh`: `[environment].network_mode`.
    Setup,
    /// The agent: `[agent].network_mode`, else the environment's.
    Agent,
    /// The verifier: `[verifier].network_mode`, else the environment's.
    Verifier,
}

/// The network modes Harbor's `task.toml` accepts, and the older names read as aliases.
pub const NETWORK_MODES: &[&str] = &[
    "public",
    "no-network",
    "allowlist",
    "none",
    "bridge",
    "host",
];

/// Whether a network mode gives the phase a network: everything but `no-network` / `none`.
/// Unset is Harbor's default, `public`.
fn mode_has_network(mode: Option<&str>) -> bool {
    !matches!(mode, Some("none" | "no-network"))
}

impl EnvironmentSpec {
    /// Whether `phase` has the network under the task's own policy, with Harbor's precedence:
    /// the phase's own mode, then `[environment].network_mode`, then the deprecated
    /// `allow_internet`, then the default `public`.
    pub fn phase_network(&self, phase: Phase) -> bool {
        let own = match phase {
            Phase::Setup => None,
            Phase::Agent => self.agent_network_mode.as_deref(),
            Phase::Verifier => self.verifier_network_mode.as_deref(),
        };
        match (own.or(self.network_mode.as_deref()), self.allow_internet) {
            (Some(m), _) => mode_has_network(Some(m)),
            (None, Some(allow)) => allow,
            (None, None) => true,
        }
    }

    /// The table whose `network_mode` decides `phase` (`agent`, `verifier` or `environment`)
    /// when that mode is `allowlist`; `None` for any other mode.
    pub fn allowlist_table(&self, phase: Phase) -> Option<&'static str> {
        let own = match phase {
            Phase::Setup => None,
            Phase::Agent => self.agent_network_mode.as_deref().map(|m| ("agent", m)),
            Phase::Verifier => self
                .verifier_network_mode
                .as_deref()
                .map(|m| ("verifier", m)),
        };
        let (table, mode) = own.or(self.network_mode.as_deref().map(|m| ("environment", m)))?;
        (mode == "allowlist").then_some(table)
    }

    /// Whether any phase of the task has the network under its own policy.
    pub fn needs_network(&self) -> bool {
        [Phase::Setup, Phase::Agent, Phase::Verifier]
            .into_iter()
            .any(|p| self.phase_network(p))
    }
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
    /// The verifier's host files: Harbor `tests/` (entry point `test.sh`); TB1 `tests/`.
    #[serde(default)]
    pub tests_dir: Option<PathBuf>,
    /// The verifier's entry point on the host: Harbor `tests/test.sh`, TB1 `run-tests.sh`.
    #[serde(default)]
    pub test_script: PathBuf,
    /// The reference solution on the host: Harbor `solution/solve.sh`, TB1 `solution.sh`.
    #[serde(default)]
    pub solution_script: Option<PathBuf>,
    /// The Docker build context: Harbor `environment/`, TB1 the task directory.
    #[serde(default)]
    pub environment_dir: Option<PathBuf>,
    /// The Dockerfile, when the task has one.
    #[serde(default)]
    pub dockerfile: Option<PathBuf>,
    /// Local tasks: `environment/workspace/`, copied into the workdir before the agent starts.
    #[serde(default)]
    pub workspace_dir: Option<PathBuf>,
    /// Local tasks: `environment/setup.sh`, run in the workdir before the agent starts.
    #[serde(default)]
    pub setup_script: Option<PathBuf>,
    /// Harbor's `[verifier] environment_mode = "separate"`: the verifier runs in a fresh
    /// sandbox made from this environment (`[verifier.environment]` over `[environment]`).
    /// `None` means `shared`: the verifier runs in the agent's sandbox.
    #[serde(default)]
    pub verifier_environment: Option<EnvironmentSpec>,
    /// Harbor's top-level `artifacts`: the paths (absolute, or relative to the workdir) copied
    /// from the agent's sandbox into a separate verifier's.
    #[serde(default)]
    pub artifacts: Vec<String>,
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
    /// The agent's changes to the verifier's toolchain; when any, the verifier did not run and
    /// the trial failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tampered: Vec<String>,
}
