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
        ..CreateOptions::default()
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
    /// runner, an image, the engine), or the oracle failed for one (see [`setup_cause`]): a
    /// setup problem, not evidence that the task is broken.
    pub setup: bool,
    /// Why the oracle's failure is a setup problem, with the remedy.
    pub setup_cause: Option<String>,
    /// Wall time of the task's trials, from the first start to the last end.
    pub elapsed_ms: u64,
}

impl TaskCheck {
    /// Why the task is broken or could not be tried; empty when it is fine.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(c) = &self.setup_cause {
            p.push(c.clone());
        }
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
    check_tasks_with(provider, tasks, concurrency, verify_opts, &|_| {}).await
}

/// [`check_tasks`], calling `done` with each task's check as soon as both its trials ended.
pub async fn check_tasks_with(
    provider: Arc<dyn SandboxProvider>,
    tasks: &[Task],
    concurrency: usize,
    verify_opts: &VerifyOptions,
    done: &(dyn Fn(&TaskCheck) + Sync),
) -> Vec<TaskCheck> {
    let jobs = tasks.iter().enumerate().flat_map(|(i, t)| {
        [BuiltinAgent::Oracle, BuiltinAgent::Nop]
            .into_iter()
            .map(move |a| (i, t, a))
    });
    let provider = &provider;
    // A failed trial: its description and whether it was an infrastructure error.
    type Tried = std::result::Result<TrialResult, (String, bool)>;
    let mut trials = futures_util::stream::iter(jobs)
        .map(|(i, t, a)| async move {
            let start = Instant::now();
            let r = run_trial(provider.as_ref(), t, a, verify_opts)
                .await
                .map_err(|e| (describe(&e), InfraClass::of(&e).is_some()));
            (i, a, r, start, Instant::now())
        })
        .buffer_unordered(concurrency.max(1));
    // The first trial of a task to end waits here for the other.
    let mut half: std::collections::HashMap<usize, (BuiltinAgent, Tried, Instant, Instant)> =
        std::collections::HashMap::new();
    let mut checks: Vec<(usize, TaskCheck)> = Vec::new();
    while let Some((i, a, r, start, end)) = trials.next().await {
        let Some((a2, r2, start2, end2)) = half.remove(&i) else {
            half.insert(i, (a, r, start, end));
            continue;
        };
        let (oracle, nop) = if a == BuiltinAgent::Oracle {
            (r, r2)
        } else {
            (r2, r)
        };
        let elapsed_ms = end.max(end2).duration_since(start.min(start2)).as_millis() as u64;
        let _ = a2;
        let infra = [&oracle, &nop].iter().any(|r| matches!(r, Err((_, true))));
        let cause = match &oracle {
            Ok(r) if !r.verifier.passed && !infra => setup_cause(&r.verifier.output_tail),
            _ => None,
        };
        let check = TaskCheck {
            task: tasks[i].id.clone(),
            oracle: oracle.map_err(|(e, _)| e),
            nop: nop.map_err(|(e, _)| e),
            setup: infra || cause.is_some(),
            setup_cause: cause,
            elapsed_ms,
        };
        done(&check);
        checks.push((i, check));
    }
    checks.sort_by_key(|(i, _)| *i);
    checks.into_iter().map(|(_, c)| c).collect()
}

/// Programs whose absence from an image is a setup problem when a verifier runs them.
const INTERPRETERS: &[&str] = &[
    "python", "python3", "pip", "pip3", "uv", "uvx", "pytest", "node", "npm", "npx", "ruby",
    "perl", "java", "go", "cargo", "rustc", "Rscript", "php", "curl", "wget",
];

/// Why a failed oracle verification is the setup's fault, not the task's, with the remedy: the
/// verifier needed the network (name resolution or connection errors of a download: the first
/// cause, as a missing tool often follows from a failed install) or ran an interpreter the
/// image lacks. `None` when its output shows neither.
pub fn setup_cause(verifier_output: &str) -> Option<String> {
    const NETWORK: &[&str] = &[
        "Temporary failure resolving",
        "Temporary failure in name resolution",
        "Could not resolve host",
        "Name or service not known",
        "Network is unreachable",
        "getaddrinfo failed",
        "Failed to establish a new connection",
        "No address associated with hostname",
        "dns error",
    ];
    let remedy_image = "build the offline verifier image (`git harness image verifier`) and run the suite on it (`--image-map '*=git-harness/verifier:bookworm'`)";
    // The verifier image's own stand-ins name their remedy.
    if let Some(line) = verifier_output
        .lines()
        .find(|l| l.contains("is not in this image") && l.contains("git harness image verifier"))
    {
        return Some(format!("setup: {}", line.trim()));
    }
    if let Some(line) = verifier_output
        .lines()
        .find(|l| NETWORK.iter().any(|n| l.contains(n)))
    {
        return Some(format!(
            "setup: the verifier needs the network, which it cannot reach here ({}); {remedy_image}, or give the verifier the network (`[verifier] network_mode = \"public\"`, no `--verifier-network none`)",
            line.trim()
        ));
    }
    for line in verifier_output.lines() {
        let Some(cmd) = missing_command(line) else {
            continue;
        };
        if INTERPRETERS.contains(&cmd)
            || (cmd.starts_with("python3.") && cmd[8..].chars().all(|c| c.is_ascii_digit()))
        {
            return Some(format!(
                "setup: the verifier runs `{cmd}`, which this image lacks ({}); {remedy_image}, or install it in the task's image",
                line.trim()
            ));
        }
    }
    None
}

/// The command a shell or `env` could not find, from one line of output.
fn missing_command(line: &str) -> Option<&str> {
    // bash: `/tests/test.sh: line 19: uvx: command not found`; sh: `uvx: not found`.
    if let Some(head) = line
        .strip_suffix(": command not found")
        .or_else(|| line.strip_suffix(": not found"))
    {
        return head.rsplit(": ").next().map(str::trim);
    }
    // `#!/usr/bin/env python3` without python3: `/usr/bin/env: 'python3': No such file or directory`.
    let rest = line.split("env: ").nth(1)?;
    let rest = rest.strip_suffix(": No such file or directory")?;
    Some(rest.trim_matches(|c| c == '\'' || c == '"' || c == '‘' || c == '’'))
}

#[cfg(test)]
mod tests {
    use super::setup_cause;

    #[test]
    fn setup_causes_are_told_from_task_failures() {
        let net = "Err:1 http://deb.debian.org bookworm InRelease\n  Temporary failure resolving 'deb.debian.org'\n/tests/test.sh: line 8: curl: command not found";
        assert!(setup_cause(net).unwrap().contains("needs the network"));
        let py = "/tests/test.sh: line 3: python3.13: command not found";
        assert!(setup_cause(py).unwrap().contains("`python3.13`"));
        let env = "/usr/bin/env: 'python3': No such file or directory";
        assert!(setup_cause(env).unwrap().contains("`python3`"));
        let shim = "git-harness verifier image: uvx: pytest==9.0 is not in this image (it has pytest==8.4.1); rebuild it with `git harness image verifier --with pytest==9.0`";
        assert!(setup_cause(shim).unwrap().contains("--with pytest==9.0"));
        // What the task's own check says is the task's business.
        assert_eq!(
            setup_cause("FAILED test_outputs.py::test_count - assert 3 == 4"),
            None
        );
        assert_eq!(setup_cause("./build/app: No such file or directory"), None);
        assert_eq!(setup_cause("mytool: command not found"), None);
        assert_eq!(
            setup_cause("curl: (7) Failed to connect to localhost port 8080: Connection refused"),
            None
        );
    }
}
