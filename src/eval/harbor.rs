//! Importing Harbor jobs: a job directory's trials (`<trial>/result.json`, `verifier/`,
//! `agent/trajectory.json` in ATIF) become a run record on a harness commit, so `mine` and
//! `propose` work on runs made with Harbor.
//!
//! The layout and fields read are Harbor's (`models/trial/result.py`, `models/trial/paths.py`):
//! a trial's `task_name`, `trial_name`, `verifier_result.rewards`, `exception_info`,
//! `agent_result` token counts and the phase timestamps. Only what a run record needs is read;
//! every other field is ignored, so newer Harbor versions still import.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::agent::trace::{Ending, Event, ResponseEvent, ToolEvent, Totals as TraceTotals, Trace};
use crate::error::{Error, IoContext, Result};
use crate::eval::journal::{Journal, RunMeta};
use crate::eval::{AgentKind, Durations, InfraClass, Outcome, TrialResult};
use crate::experiment::Split;
use crate::lineage;
use crate::model::{ToolCall, Usage};
use crate::task::VerifierOutcome;
use crate::workspace::Workspace;

/// A trial's `result.json`, as far as an import reads it.
#[derive(Debug, Deserialize)]
struct TrialFile {
    task_name: String,
    trial_name: String,
    #[serde(default)]
    agent_info: Option<AgentInfo>,
    #[serde(default)]
    agent_result: Option<AgentResult>,
    #[serde(default)]
    verifier_result: Option<VerifierResult>,
    #[serde(default)]
    exception_info: Option<ExceptionInfo>,
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    finished_at: Option<String>,
    #[serde(default)]
    environment_setup: Option<Phase>,
    #[serde(default)]
    agent_execution: Option<Phase>,
    #[serde(default)]
    verifier: Option<Phase>,
}

#[derive(Debug, Deserialize)]
struct AgentInfo {
    #[serde(default)]
    name: String,
    #[serde(default)]
    model_info: Option<ModelInfo>,
}

#[derive(Debug, Deserialize)]
struct ModelInfo {
    #[serde(default)]
    name: String,
    #[serde(default)]
    provider: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AgentResult {
    #[serde(default)]
    n_input_tokens: Option<u64>,
    #[serde(default)]
    n_cache_tokens: Option<u64>,
    #[serde(default)]
    n_output_tokens: Option<u64>,
    #[serde(default)]
    cost_usd: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct VerifierResult {
    #[serde(default)]
    rewards: Option<BTreeMap<String, f64>>,
}

#[derive(Debug, Deserialize)]
struct ExceptionInfo {
    exception_type: String,
    #[serde(default)]
    exception_message: String,
}

#[derive(Debug, Deserialize)]
struct Phase {
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    finished_at: Option<String>,
}

impl Phase {
    fn ms(p: &Option<Phase>) -> u64 {
        p.as_ref()
            .map(|p| span_ms(p.started_at.as_deref(), p.finished_at.as_deref()))
            .unwrap_or(0)
    }
}

fn span_ms(a: Option<&str>, b: Option<&str>) -> u64 {
    let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
    match (a.and_then(parse), b.and_then(parse)) {
        (Some(a), Some(b)) => (b - a).num_milliseconds().max(0) as u64,
        _ => 0,
    }
}

pub struct ImportOptions {
    pub job_dir: PathBuf,
    /// Harness revision the trials are recorded on.
    pub rev: String,
}

#[derive(Debug)]
pub struct ImportOutcome {
    pub run: String,
    pub harness_commit: String,
    /// The run already existed: nothing was written.
    pub already: bool,
    pub trials: usize,
    pub with_trajectory: usize,
    pub infra: usize,
    /// Trials of tasks in the sealed test split, not imported.
    pub sealed: usize,
    /// Trials of suite tasks no split holds, not imported.
    pub unsplit: usize,
}

/// Import the Harbor job at `opts.job_dir` as a run on `opts.rev`.
pub fn import(ws: &Workspace, opts: &ImportOptions) -> Result<ImportOutcome> {
    let repo = &ws.repo;
    let fixed = ws.fixed_on_main()?;
    let fingerprint = ws.fingerprint(&fixed)?;
    let suite_ids = ws.suite_task_ids(&fixed)?;
    let commit = lineage::resolve_commit(repo, &opts.rev)?;
    let here = ws.fixed_at(&commit)?;
    if here.experiment != fixed.experiment || here.splits != fixed.splits {
        return Err(Error::usage_hint(
            format!(
                "{} has a different experiment (.harness/) than main",
                lineage::short(commit.id())
            ),
            "import onto a commit of this lineage (--rev)",
        ));
    }
    let trial_dirs = trial_dirs(&opts.job_dir)?;
    if trial_dirs.is_empty() {
        return Err(Error::usage_hint(
            format!(
                "{}: no trial directory with a result.json",
                opts.job_dir.display()
            ),
            "give a Harbor job directory (jobs/<date>/), whose trial directories hold result.json",
        ));
    }

    // Read and check everything before writing anything.
    let mut parsed = Vec::new();
    for dir in &trial_dirs {
        let file = dir.join("result.json");
        let bytes = std::fs::read(&file).at(&file)?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let t: TrialFile = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            Error::config(
                &file,
                Some(inner.line()),
                if field == "." {
                    "result.json".into()
                } else {
                    field
                },
                format!("not a Harbor trial result: {inner}"),
            )
        })?;
        let task = task_id(&t.task_name, &suite_ids).ok_or_else(|| {
            Error::config(
                &file,
                None,
                "task_name",
                format!(
                    "`{}` is not a task of the suite (tasks are matched by id, or by the last `/` part of the name)",
                    t.task_name
                ),
            )
        })?;
        let reward = reward_of(&t, &file)?;
        let trajectory = dir.join("agent/trajectory.json");
        let atif = match std::fs::read(&trajectory) {
            Ok(b) => Some((
                serde_json::from_slice::<Value>(&b).map_err(|e| {
                    Error::config(
                        &trajectory,
                        Some(e.line()),
                        "steps",
                        format!("not an ATIF trajectory: {e}"),
                    )
                })?,
                b,
            )),
            Err(_) => None,
        };
        parsed.push((dir.clone(), bytes, t, task, reward, atif));
    }
    parsed.sort_by(|a, b| (&a.3, &a.2.trial_name).cmp(&(&b.3, &b.2.trial_name)));

    // The same job on the same commit and experiment is the same run.
    let mut h = crate::support::digest::Hasher::new();
    h.update(commit.id().as_bytes());
    h.update(fingerprint.as_bytes());
    for (_, bytes, _, _, _, atif) in &parsed {
        h.update(crate::support::digest::sha256(bytes));
        if let Some((_, b)) = atif {
            h.update(crate::support::digest::sha256(b));
        }
    }
    let digest = h.hex();
    let id = format!("harbor-{}", &digest[..16]);

    let mut out = ImportOutcome {
        run: id.clone(),
        harness_commit: commit.id().to_string(),
        already: false,
        trials: 0,
        with_trajectory: 0,
        infra: 0,
        sealed: 0,
        unsplit: 0,
    };
    if repo
        .refname_to_id(&format!("{}{id}", lineage::RUNS_PREFIX))
        .is_ok()
    {
        out.already = true;
        out.trials = parsed.len();
        return Ok(out);
    }

    let state_dir = ws.state_dir();
    let journal_dir = Journal::dir_for(&state_dir, &id);
    let mut results = Vec::new();
    let mut index: BTreeMap<String, u32> = BTreeMap::new();
    let mut model = String::new();
    let mut tasks: Vec<String> = Vec::new();
    let mut splits: Vec<String> = Vec::new();
    for (dir, _, t, task, reward, atif) in parsed {
        let split = match fixed.splits.split_of(&task) {
            Some(Split::Test) => {
                out.sealed += 1;
                continue;
            }
            None => {
                out.unsplit += 1;
                continue;
            }
            Some(s) => s.to_string(),
        };
        let trial = {
            let n = index.entry(task.clone()).or_insert(0);
            *n += 1;
            *n - 1
        };
        if model.is_empty()
            && let Some(m) = t.agent_info.as_ref().and_then(|a| a.model_info.as_ref())
        {
            model = match &m.provider {
                Some(p) => format!("{p}/{}", m.name),
                None => m.name.clone(),
            };
        }
        let r = trial_result(
            &dir,
            &t,
            &task,
            &split,
            trial,
            reward,
            atif.as_ref().map(|a| &a.0),
        );
        let mut r = r;
        if let Some((v, _)) = &atif {
            let trace = to_trace(v, &t, &task, trial, &r);
            let path = format!("traces/{task}/{trial}.json");
            let full = journal_dir.join(&path);
            let json = trace.to_json();
            if let Some(p) = full.parent() {
                std::fs::create_dir_all(p).at(p)?;
            }
            std::fs::write(&full, &json).at(&full)?;
            r.trace_bytes = json.len() as u64;
            r.trace = Some(path);
            out.with_trajectory += 1;
        }
        if r.is_infra() {
            out.infra += 1;
        }
        if !tasks.contains(&task) {
            tasks.push(task.clone());
        }
        if !splits.contains(&split) {
            splits.push(split);
        }
        results.push(r);
    }
    out.trials = results.len();
    if results.is_empty() {
        std::fs::remove_dir_all(&journal_dir).ok();
        return Err(Error::usage_hint(
            format!(
                "no trial of {} is on a held_in or validation task ({} on test, sealed; {} on no split)",
                opts.job_dir.display(),
                out.sealed,
                out.unsplit
            ),
            "fix the splits with `git harness split` first",
        ));
    }
    let trials = index.values().copied().max().unwrap_or(1);
    let meta = RunMeta {
        format: <RunMeta as crate::support::format::Versioned>::FORMAT,
        id: id.clone(),
        harness_commit: commit.id().to_string(),
        harness_tree: commit.tree_id().to_string(),
        surface_tree: lineage::surface_tree(repo, &commit)?.to_string(),
        fingerprint,
        splits,
        trials,
        tasks,
        agent: AgentKind::Harness,
        worktree: false,
        model: if model.is_empty() {
            "harbor".into()
        } else {
            model
        },
        runner: "harbor".into(),
        seed: fixed.experiment.seed,
        started_at: crate::eval::record::now(),
        no_cache: false,
        regraded_from: None,
        no_note: false,
    };
    crate::eval::record::write_record(
        repo,
        &state_dir,
        &meta,
        &mut results,
        false,
        None,
        Default::default(),
    )?;
    Ok(out)
}

/// The trial directories of a job: its subdirectories holding a `result.json`. A trial
/// directory given directly counts as a job of one trial.
fn trial_dirs(job: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(job).at(job)?;
    let mut dirs = Vec::new();
    for e in rd {
        let p = e.at(job)?.path();
        if p.is_dir() && p.join("result.json").is_file() {
            dirs.push(p);
        }
    }
    if dirs.is_empty() && job.join("result.json").is_file() && job.join("agent").is_dir() {
        dirs.push(job.to_path_buf());
    }
    dirs.sort();
    Ok(dirs)
}

/// The suite task a Harbor task name stands for: the same id, or the last part of a
/// `dataset/task` name.
fn task_id(name: &str, ids: &[String]) -> Option<String> {
    let short = name.rsplit('/').next().unwrap_or(name);
    [name, short]
        .into_iter()
        .find(|n| ids.iter().any(|i| i == n))
        .map(str::to_string)
}

/// The trial's reward: `rewards.reward`, or the only reward; `None` without a verifier result.
fn reward_of(t: &TrialFile, file: &Path) -> Result<Option<f64>> {
    let Some(rewards) = t.verifier_result.as_ref().and_then(|v| v.rewards.as_ref()) else {
        if t.exception_info.is_none() {
            return Err(Error::config(
                file,
                None,
                "verifier_result",
                "missing, and no exception_info says why: the trial has not finished",
            ));
        }
        return Ok(None);
    };
    let r = match rewards.get("reward") {
        Some(r) => *r,
        None if rewards.len() == 1 => *rewards.values().next().unwrap_or(&0.0),
        None => {
            return Err(Error::config(
                file,
                None,
                "verifier_result.rewards",
                "several rewards and none named `reward`: which one decides is not known",
            ));
        }
    };
    if !r.is_finite() {
        return Err(Error::config(
            file,
            None,
            "verifier_result.rewards",
            "the reward is not a number",
        ));
    }
    Ok(Some(r))
}

/// How a Harbor exception counts: an infrastructure class, or the agent's own ending.
enum Exception {
    Infra(InfraClass),
    Agent(Ending),
}

fn classify(exception_type: &str) -> Exception {
    let t = exception_type;
    match t {
        "AgentTimeoutError" => return Exception::Agent(Ending::BudgetWallClock),
        "ContextLengthExceededError" | "OutputLengthExceededError" => {
            return Exception::Agent(Ending::BudgetTokens);
        }
        "NonZeroAgentExitCodeError" => {
            return Exception::Agent(Ending::Stopped {
                rule: "agent_exit".into(),
            });
        }
        _ => {}
    }
    let has = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if t.starts_with("RewardFile") || has(&["Verifier", "Parse"]) {
        Exception::Infra(InfraClass::Verifier)
    } else if has(&[
        "RateLimit",
        "API",
        "LLM",
        "Authentication",
        "Model",
        "Provider",
    ]) {
        Exception::Infra(InfraClass::Model)
    } else {
        // Environment start, Docker, builds, cancellation and anything unknown: the trial
        // says nothing about the harness.
        Exception::Infra(InfraClass::Sandbox)
    }
}

fn trial_result(
    dir: &Path,
    t: &TrialFile,
    task: &str,
    split: &str,
    trial: u32,
    reward: Option<f64>,
    atif: Option<&Value>,
) -> TrialResult {
    let ar = t.agent_result.as_ref();
    let usage = Usage {
        prompt_tokens: ar.and_then(|a| a.n_input_tokens).unwrap_or(0),
        completion_tokens: ar.and_then(|a| a.n_output_tokens).unwrap_or(0),
        cached_tokens: ar.and_then(|a| a.n_cache_tokens).unwrap_or(0),
    };
    let vdir = dir.join("verifier");
    let output = ["test-stdout.txt", "test_stdout.txt", "stdout.txt"]
        .iter()
        .find_map(|n| std::fs::read_to_string(vdir.join(n)).ok())
        .unwrap_or_default();
    let mut failed_tests = std::fs::read(vdir.join("ctrf.json"))
        .map(|b| crate::eval::verify::ctrf_failed(&b))
        .unwrap_or_default();
    if failed_tests.is_empty() {
        failed_tests = crate::eval::verify::failed_from_output(&output);
    }
    let tail: String = {
        let lines: Vec<&str> = output.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    let exception = t
        .exception_info
        .as_ref()
        .map(|e| (e, classify(&e.exception_type)));
    let (outcome, infra, error, ending) = match (&exception, reward) {
        (Some((e, Exception::Infra(k))), _) => (
            Outcome::InfraError,
            Some(*k),
            Some(format!("{}: {}", e.exception_type, e.exception_message)),
            "harbor_exception".to_string(),
        ),
        (Some((e, Exception::Agent(end))), r) => (
            if r.unwrap_or(0.0) >= 1.0 {
                Outcome::Pass
            } else {
                Outcome::Fail
            },
            None,
            Some(format!("{}: {}", e.exception_type, e.exception_message)),
            end.reason().to_string(),
        ),
        (None, r) => (
            if r.unwrap_or(0.0) >= 1.0 {
                Outcome::Pass
            } else {
                Outcome::Fail
            },
            None,
            None,
            "submitted".to_string(),
        ),
    };
    let (turns, tool_calls) = atif.map(step_counts).unwrap_or((0, 0));
    let reward = reward.unwrap_or(0.0);
    TrialResult {
        format: <TrialResult as crate::support::format::Versioned>::FORMAT,
        task: task.to_string(),
        split: split.to_string(),
        trial,
        seed: 0,
        outcome,
        infra,
        error,
        reward,
        verifier: VerifierOutcome {
            reward,
            passed: reward >= 1.0,
            exit_code: None,
            output_tail: tail,
            failed_tests,
            timed_out: t
                .exception_info
                .as_ref()
                .is_some_and(|e| e.exception_type == "VerifierTimeoutError"),
            tampered: Vec::new(),
        },
        usage,
        cost_usd: ar.and_then(|a| a.cost_usd).unwrap_or(0.0),
        durations: Durations {
            total_ms: span_ms(t.started_at.as_deref(), t.finished_at.as_deref()),
            setup_ms: Phase::ms(&t.environment_setup),
            agent_ms: Phase::ms(&t.agent_execution),
            verify_ms: Phase::ms(&t.verifier),
            model_ms: 0,
            sandbox_ms: 0,
        },
        ending,
        turns,
        tool_calls,
        trace: None,
        trace_bytes: 0,
        workspace: None,
        workspace_bytes: 0,
        cache_key: None,
        cached_from: None,
        host: None,
    }
}

fn steps(atif: &Value) -> impl Iterator<Item = &Value> {
    atif.get("steps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn step_counts(atif: &Value) -> (u32, u32) {
    let agent: Vec<&Value> = steps(atif).filter(|s| s["source"] == "agent").collect();
    let calls = agent
        .iter()
        .map(|s| s["tool_calls"].as_array().map_or(0, Vec::len))
        .sum::<usize>();
    (agent.len() as u32, calls as u32)
}

/// An ATIF trajectory as a trace: one model response per agent step, one tool event per call
/// with its observation as output. ATIF has no exit codes, so a call counts as failed only
/// when its arguments or output say so (an `exit_code` field, as git-harness's own export has
/// in its observations, or none at all).
fn to_trace(atif: &Value, t: &TrialFile, task: &str, trial: u32, r: &TrialResult) -> Trace {
    let mut events = Vec::new();
    let start = t.started_at.clone().unwrap_or_default();
    let t_ms = |s: &Value| -> u64 {
        span_ms(
            Some(start.as_str()),
            s.get("timestamp").and_then(Value::as_str),
        )
    };
    for (i, s) in steps(atif).filter(|s| s["source"] == "agent").enumerate() {
        let turn = i as u32 + 1;
        let calls: Vec<&Value> = s["tool_calls"].as_array().into_iter().flatten().collect();
        let m = &s["metrics"];
        let n = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0);
        events.push(Event::ModelResponse(ResponseEvent {
            turn,
            t_ms: t_ms(s),
            content: s.get("message").and_then(Value::as_str).map(str::to_string),
            tool_calls: calls
                .iter()
                .map(|c| ToolCall {
                    id: str_of(c, "tool_call_id"),
                    name: str_of(c, "function_name"),
                    arguments: c.get("arguments").map(Value::to_string).unwrap_or_default(),
                })
                .collect(),
            usage: Usage {
                prompt_tokens: n("prompt_tokens"),
                completion_tokens: n("completion_tokens"),
                cached_tokens: n("cached_tokens"),
            },
            latency_ms: 0,
            finish_reason: None,
        }));
        let results: Vec<&Value> = s["observation"]["results"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        for c in calls {
            let id = str_of(c, "tool_call_id");
            let output = results
                .iter()
                .find(|o| o.get("source_call_id").and_then(Value::as_str) == Some(id.as_str()))
                .map(|o| match &o["content"] {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    v => v.to_string(),
                })
                .unwrap_or_default();
            let args = c.get("arguments").cloned().unwrap_or(Value::Null);
            let command = ["command", "cmd", "keystrokes"]
                .iter()
                .find_map(|k| args.get(*k).and_then(Value::as_str))
                .map(str::to_string);
            let exit_code = ["exit_code", "returncode"]
                .iter()
                .find_map(|k| c.get(*k).or_else(|| args.get(*k)).and_then(Value::as_i64))
                .map(|v| v as i32);
            let tool = str_of(c, "function_name");
            let path = args.get("path").and_then(Value::as_str).map(str::to_string);
            let files_changed = match (&path, tool.as_str()) {
                (Some(p), "write_file" | "edit") => vec![p.clone()],
                _ => Vec::new(),
            };
            events.push(Event::ToolCall(ToolEvent {
                turn,
                t_ms: t_ms(s),
                call_id: id,
                tool,
                path,
                arguments: args,
                command,
                ok: exit_code.is_none_or(|c| c == 0),
                exit_code,
                blocked: false,
                timed_out: false,
                output,
                truncated: false,
                duration_ms: 0,
                files_changed,
                workdir_changed: None,
            }));
        }
    }
    // A trajectory exported by git-harness carries its ending; Harbor's say it by exception.
    let ending = atif["extra"]
        .get("ending")
        .and_then(|e| serde_json::from_value::<Ending>(e.clone()).ok())
        .unwrap_or_else(|| match r.ending.as_str() {
            "budget_wall_clock" => Ending::BudgetWallClock,
            "budget_tokens" => Ending::BudgetTokens,
            "harbor_exception" => Ending::SandboxError {
                message: r.error.clone().unwrap_or_default(),
            },
            _ => Ending::Submitted,
        });
    Trace {
        format: crate::agent::trace::TRACE_FORMAT,
        task: task.to_string(),
        trial,
        seed: 0,
        model: atif["agent"]["model_name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        harness: format!(
            "harbor:{}",
            t.agent_info
                .as_ref()
                .map(|a| a.name.as_str())
                .unwrap_or("agent")
        ),
        protocol: Default::default(),
        budgets: Default::default(),
        started_at: start.clone(),
        ended_at: t.finished_at.clone().unwrap_or_default(),
        tools: Vec::new(),
        events,
        totals: TraceTotals {
            turns: r.turns,
            tool_calls: r.tool_calls,
            usage: r.usage,
            cost_usd: r.cost_usd,
            duration_ms: r.durations.agent_ms,
        },
        ending,
        command: None,
    }
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}
