//! Sandboxes: where a trial's commands run. Every implementation guarantees that a timeout kills
//! the whole process tree of that exec, that `destroy` always runs, and that nothing is left
//! behind.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::task::Task;

/// One command to run in a fresh shell (`bash -c`) inside the sandbox.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub command: String,
    pub timeout: Duration,
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox; `None` means the task's workdir.
    pub workdir: Option<String>,
}

impl ExecRequest {
    pub fn new(command: impl Into<String>, timeout: Duration) -> Self {
        ExecRequest {
            command: command.into(),
            timeout,
            env: Vec::new(),
            workdir: None,
        }
    }
}

/// What an exec produced. `exit_code` is `None` when the command was killed (timeout, signal).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ExecOutput {
    pub exit_code: Option<i32>,
    /// stdout and stderr interleaved, possibly truncated head + tail.
    pub output: String,
    pub truncated: bool,
    pub timed_out: bool,
    pub duration_ms: u64,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }
}

/// A live sandbox for one trial.
#[async_trait]
pub trait Sandbox: Send + Sync {
    /// The task's working directory as seen by commands inside the sandbox.
    fn workdir(&self) -> &str;
    async fn exec(&self, req: ExecRequest) -> Result<ExecOutput>;
    /// Paths are absolute inside the sandbox, or relative to `workdir`.
    async fn read_file(&self, path: &str) -> Result<Vec<u8>>;
    async fn write_file(&self, path: &str, data: &[u8]) -> Result<()>;
    /// Copy a host directory's content into `dest` inside the sandbox.
    async fn copy_dir_in(&self, host_dir: &Path, dest: &str) -> Result<()>;
    /// Tear everything down. Idempotent; also runs on drop paths through the provider's guard.
    async fn destroy(&mut self) -> Result<()>;
}

/// Makes sandboxes for tasks (local, docker).
#[async_trait]
pub trait SandboxProvider: Send + Sync {
    fn name(&self) -> &str;
    async fn create(&self, task: &Task) -> Result<Box<dyn Sandbox>>;
}
