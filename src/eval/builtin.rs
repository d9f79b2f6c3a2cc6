//! The built-in agents `oracle` (runs the task's reference solution) and `nop` (does nothing),
//! whole trials for them (create sandbox → agent → verify → destroy, destroy guaranteed), and
//! the check behind `git harness tasks check`: oracle must pass and nop must fail every task.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::verify::{VerifyOptions, verify_trial};
use crate::error::{Error, Result};
use crate::sandbox::{
    CreateOptions, ExecOutput, ExecRequest, InfraClass, Sandbox, SandboxProvider,
};
use crate::task::{Task, TaskFormat, VerifierOutcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuiltinAgent {
    /// Copies `solution/` into the solution dir and runs `solve.sh` (TB1: `solution.sh`).
    Oracle,
    /// Does nothing.
    Nop,
}

impl BuiltinAgent {
    pub fn name(self) -> &'static str {
        match self {
            BuiltinAgent::Oracle => "oracle",
            BuiltinAgent::Nop => "nop",
        }
    }

    /// Act on the sandbox. `Ok(None)` for nop.
    pub async fn run(self, sandbox: &dyn Sandbox, task: &Task) -> Result<Option<ExecOutput>> {
        match self {
            BuiltinAgent::Nop => Ok(None),
            BuiltinAgent::Oracle => run_oracle(sandbox, task).await.map(Some),
        }
    }
}

impl std::str::FromStr for BuiltinAgent {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "oracle" => Ok(BuiltinAgent::Oracle),
            "nop" => Ok(BuiltinAgent::Nop),
            o => Err(Error::usage(format!(
                "unknown built-in agent `{o}` (expected oracle or nop)"
            ))),
        }
    }
}

async fn run_oracle(sandbox: &dyn Sandbox, task: &Task) -> Result<ExecOutput> {
    let Some(script) = &task.solution_script else {
        return Err(Error::usage(format!(
            "task `{}` has no reference solution",
            task.id
        )));
    };
    let sol = sandbox.solution_dir().to_string();
    let entry = match task.format {
        TaskFormat::Harbor => {
            let dir = script.parent().unwrap_or(&task.dir);
            sandbox.copy_dir_in(dir, &sol).await?;
            format!("{sol}/solve.sh")
        }
        TaskFormat::Tb1 => {
            let data = std::fs::read(script).map_err(|e| Error::io(script, e))?;
            let p = format!("{sol}/solution.sh");
            sandbox.write_file(&p, &data).await?;
            p
        }
    };
    sandbox
        .exec(ExecRequest::new(
            format!("bash '{}'", entry.replace('\'', "'\\''")),
            task.agent_timeout,
        ))
        .await
}

/// The record of one built-in trial.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrialResult {
    pub trial_id: String,
    pub agent: BuiltinAgent,
    /// What the agent's command did (nop: none).
    pub agent_output: Option<ExecOutput>,
    pub verifier: VerifierOutcome,
    pub setup_ms: u64,
    pub agent_ms: u64,
    pub verify_ms: u64,
}

/// A future borrowing the sandbox.
pub type SandboxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Create a sandbox, run `f` in it, destroy it — also when `f` fails. When the returned future
/// is dropped midway (Ctrl-C, an outer timeout) or `f` panics, the sandbox's drop guard cleans up
/// synchronously.
pub async fn with_sandbox<T, F>(
    provider: &dyn SandboxProvider,
    task: &Task,
    opts: &CreateOptions,
    f: F,
) -> Result<T>
where
    F: for<'a> FnOnce(&'a dyn Sandbox) -> SandboxFuture<'a, T>,
{
    let mut sb = provider.create_with(task, opts).await?;
    let result = f(sb.as_ref()).await;
    let destroyed = sb.destroy().await;
    match (result, destroyed) {
        (Ok(v), Ok(())) => Ok(v),
        (Ok(_), Err(e)) => Err(e),
        (Err(e), _) => Err(e),
    }
}

/// One whole trial of a built-in agent: create → agent → verify → destroy.
pub async fn run_trial(
    provider: &dyn SandboxProvider,
    task: &Task,
    agent: BuiltinAgent,
    verify_opts: &VerifyOptions,
) -> Result<TrialResult> {
    let trial_id = crate::sandbox::new_trial_id();
    let opts = CreateOptions {
        trial_id: Some(trial_id.clone()),
    };
    let t0 = Instant::now();
    let mut sb = provider.create_with(task, &opts).await?;
    let setup_ms = t0.elapsed().as_millis() as u64;
    let result = async {
        let t1 = Instant::now();
        // The verifier runs even when the agent's command failed or timed out (as in Harbor).
        let agent_output = agent.run(sb.as_ref(), task).await?;
        let agent_ms = t1.elapsed().as_millis() as u64;
        let t2 = Instant::now();
        let verifier = verify_trial(provider, sb.as_ref(), task, verify_opts).await?;
        Ok::<_, Error>((
            agent_output,
            agent_ms,
            verifier,
            t2.elapsed().as_millis() as u64,
        ))
    }
    .await;
    let destroyed = sb.destroy().await;
    let (agent_output, agent_ms, verifier, verify_ms) = result?;
    destroyed?;
    Ok(TrialResult {
        trial_id,
        agent,
        agent_output,
        verifier,
        setup_ms,
        agent_ms,
        verify_ms,
    })
}

/// What `tasks check` found for one task.
#[derive(Debug, Clone)]
pub struct TaskCheck {
    pub task: String,
    pub oracle: std::result::Result<TrialResult, String>,
    pub nop: std::result::Result<TrialResult, String>,
    /// A trial could not run for a reason outside the task (an infrastructure error: the
    /// runner, an image, the engine): a setup problem, not evidence that the task is broken.
    pub setup: bool,
}

impl TaskCheck {
    /// Why the task is broken; empty when it is fine.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        match &self.oracle {
            Err(e) => p.push(format!("oracle trial failed: {e}")),
            Ok(r) if !r.verifier.passed => {
                let mut s = format!("oracle fails (reward {})", r.verifier.reward);
                if !r.verifier.failed_tests.is_empty() {
                    s.push_str(&format!(
                        ", failed tests: {}",
                        r.verifier.failed_tests.join(", ")
                    ));
                }
                if let Some(o) = &r.agent_output
                    && !o.success()
                {
                    let why = crate::exit::describe(o.exit_code, o.timed_out);
                    s.push_str(&format!("; solve.sh {why}: {}", last_lines(&o.output, 5)));
                }
                s.push_str(&format!(
                    "; verifier output: {}",
                    last_lines(&r.verifier.output_tail, 8)
                ));
                p.push(s);
            }
            Ok(_) => {}
        }
        match &self.nop {
            Err(e) => p.push(format!("nop trial failed: {e}")),
            Ok(r) if r.verifier.passed => p.push(format!(
                "nop passes (reward {}): the verifier accepts the untouched environment; verifier output: {}",
                r.verifier.reward,
                last_lines(&r.verifier.output_tail, 8)
            )),
            Ok(_) => {}
        }
        p
    }

    pub fn broken(&self) -> bool {
        !self.problems().is_empty()
    }
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

fn describe(e: &Error) -> String {
    let mut s = match InfraClass::of(e) {
        Some(_) => format!("infrastructure error: {e}"),
        None => e.to_string(),
    };
    if let Some(h) = e.hint() {
        s.push_str(&format!(" (hint: {h})"));
    }
    s
}

/// Run oracle and nop on every task, at most `concurrency` trials at a time. The result is in
/// the order of `tasks`.
pub async fn check_tasks(
    provider: Arc<dyn SandboxProvider>,
    tasks: &[Task],
    concurrency: usize,
    verify_opts: &VerifyOptions,
) -> Vec<TaskCheck> {
    let jobs = tasks.iter().enumerate().flat_map(|(i, t)| {
        [BuiltinAgent::Oracle, BuiltinAgent::Nop]
            .into_iter()
            .map(move |a| (i, t, a))
    });
    let provider = &provider;
    // A failed trial: its description and whether it was an infrastructure error.
    type Tried = std::result::Result<TrialResult, (String, bool)>;
    let mut results: Vec<(usize, BuiltinAgent, Tried)> = futures_util::stream::iter(jobs)
        .map(|(i, t, a)| async move {
            let r = run_trial(provider.as_ref(), t, a, verify_opts)
                .await
                .map_err(|e| (describe(&e), InfraClass::of(&e).is_some()));
            (i, a, r)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.sort_by_key(|(i, a, _)| (*i, *a == BuiltinAgent::Nop));
    let mut checks = Vec::new();
    let mut it = results.into_iter();
    while let (Some((i, _, oracle)), Some((_, _, nop))) = (it.next(), it.next()) {
        let setup = [&oracle, &nop].iter().any(|r| matches!(r, Err((_, true))));
        checks.push(TaskCheck {
            task: tasks[i].id.clone(),
            oracle: oracle.map_err(|(e, _)| e),
            nop: nop.map_err(|(e, _)| e),
            setup,
        });
    }
    checks
}
