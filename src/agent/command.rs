//! `protocol: command`: the harness is an agent program. It runs inside the sandbox, in the
//! task's workdir, and reaches the model only through the [gateway](crate::agent::gateway), which
//! records its model calls as the trial's trace.
//!
//! The contract (also in `docs/architecture.md`): the instruction on stdin and in
//! `$HARNESS_INSTRUCTION_FILE`; `HARNESS_WORKDIR`, `HARNESS_DIR` (the commit's harness files,
//! read-only), `HARNESS_DEADLINE` (epoch seconds), `HARNESS_MAX_TURNS`, `HARNESS_MAX_TOKENS`,
//! `HARNESS_MODEL`, `HARNESS_TEMPERATURE`, `HARNESS_ATIF_FILE` (where it may write an ATIF
//! trajectory); `OPENAI_BASE_URL`, `OPENAI_API_BASE`, `ANTHROPIC_BASE_URL`, `LLM_BASE_URL` point at
//! the gateway and `OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, `LLM_API_KEY` hold the trial's gateway
//! token, never the real key.

use std::time::{Duration, Instant};

use crate::agent::gateway::{Gateway, SessionSpec};
use crate::agent::trace::{CommandRecord, Ending, TRACE_FORMAT, Totals, Trace};
use crate::agent::{Episode, EpisodeSpec};
use crate::error::{Error, IoContext, Result};
use crate::harness::{AgentApi, AgentSpec, Protocol};
use crate::model::Model;
use crate::sandbox::{ExecRequest, GatewayEndpoints, Sandbox};

/// Where the commit's harness files are shown inside the sandbox.
pub const HARNESS_DIR: &str = "/harness";
/// The tail of the agent's output kept in the trace.
const OUTPUT_TAIL: usize = 4000;
/// The largest ATIF file read back.
const MAX_ATIF: u64 = 8 * 1024 * 1024;
/// How long `agent.install` may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(900);

/// Run the harness's agent program for one episode.
pub async fn run_command_episode(
    spec: &EpisodeSpec<'_>,
    sandbox: &dyn Sandbox,
    gateway: &Gateway,
    model: &dyn Model,
    agent_paths: &[std::path::PathBuf],
) -> Result<Episode> {
    let r = run_agent(spec, sandbox, gateway, model, agent_paths).await;
    // Whatever happened, the verifier sees none of the agent's mounts.
    sandbox.hide_read_only().await;
    r
}

async fn run_agent(
    spec: &EpisodeSpec<'_>,
    sandbox: &dyn Sandbox,
    gateway: &Gateway,
    model: &dyn Model,
    agent_paths: &[std::path::PathBuf],
) -> Result<Episode> {
    let agent: &AgentSpec = spec.harness.manifest.agent.as_ref().ok_or_else(|| {
        Error::Internal("a command harness without an agent section was run".into())
    })?;
    let started_at = chrono::Utc::now();
    let start = Instant::now();

    // The commit's files, on the host, shown read-only.
    let files = tempfile::Builder::new()
        .prefix("git-harness-agent.")
        .tempdir()
        .at(std::env::temp_dir())?;
    for (path, content) in &spec.harness.files {
        let p = files.path().join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).at(parent)?;
        }
        std::fs::write(&p, content).at(&p)?;
    }
    let harness_dir = sandbox.show_read_only(files.path(), HARNESS_DIR).await?;
    // On an image where `agent.install` ran, the agent paths are there already (see
    // `install_spec`).
    let installed = sandbox.agent_installed();
    if !installed {
        for p in agent_paths {
            sandbox.show_read_only(p, &p.to_string_lossy()).await?;
        }
    }
    let route = sandbox
        .gateway_route(&GatewayEndpoints {
            tcp: gateway.addr(),
            socket: gateway.socket().to_path_buf(),
        })
        .await?;
    let logs = sandbox.logs_dir().to_string();
    let instruction_file = format!("{logs}/agent/instruction.md");
    let atif_file = format!("{logs}/agent/trajectory.json");
    sandbox
        .write_file(&instruction_file, spec.instruction.as_bytes())
        .await?;

    let wall = Duration::from_secs(spec.budgets.wall_clock_sec.max(1));
    let deadline_epoch = chrono::Utc::now().timestamp() as u64 + wall.as_secs();
    let session = gateway.open(SessionSpec {
        budgets: spec.budgets.clone(),
        seed: spec.seed,
        deadline: Some(Instant::now() + wall),
    });
    let token = session.token().to_string();
    let base = route.base_url.clone();
    let pin = gateway.pin();
    let llm_base = match agent.api {
        AgentApi::Openai => format!("{base}/v1"),
        AgentApi::Anthropic => base.clone(),
    };
    let env: Vec<(String, String)> = [
        ("HARNESS_DIR", harness_dir.clone()),
        ("HARNESS_INSTRUCTION_FILE", instruction_file.clone()),
        ("HARNESS_ATIF_FILE", atif_file.clone()),
        ("HARNESS_DEADLINE", deadline_epoch.to_string()),
        ("HARNESS_MAX_TURNS", spec.budgets.max_turns.to_string()),
        ("HARNESS_MAX_TOKENS", spec.budgets.max_tokens.to_string()),
        ("HARNESS_MODEL", pin.model.clone()),
        ("HARNESS_TEMPERATURE", pin.decoding.temperature.to_string()),
        (
            "HARNESS_MAX_OUTPUT_TOKENS",
            pin.decoding.max_tokens.to_string(),
        ),
        ("OPENAI_BASE_URL", format!("{base}/v1")),
        ("OPENAI_API_BASE", format!("{base}/v1")),
        ("ANTHROPIC_BASE_URL", base.clone()),
        ("LLM_BASE_URL", llm_base),
        ("OPENAI_API_KEY", token.clone()),
        ("ANTHROPIC_API_KEY", token.clone()),
        ("LLM_API_KEY", token.clone()),
        ("PYTHONDONTWRITEBYTECODE", "1".to_string()),
        // The agent's own package dirs, `:`-joined, for PYTHONPATH and the like.
        ("HARNESS_AGENT_PATHS", agent_paths_var(agent_paths)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    let prelude = route.prelude.clone().unwrap_or_default();
    let mut install_failure = None;
    if let Some(install) = agent.install.as_ref().filter(|_| !installed) {
        let script = format!("{prelude}\n{install}");
        let mut req = ExecRequest::new(script, INSTALL_TIMEOUT);
        req.env = env.clone();
        let out = sandbox.exec(req).await?;
        if !out.success() {
            install_failure = Some(out);
        }
    }
    let out = match install_failure {
        Some(out) => out,
        None => {
            let script = format!(
                "{prelude}\n( {cmd}\n) < \"$HARNESS_INSTRUCTION_FILE\"",
                cmd = agent.command
            );
            let mut req = ExecRequest::new(script, wall);
            req.env = env;
            let run = sandbox.exec(req);
            match spec.cancel.clone() {
                Some(mut c) => {
                    tokio::select! {
                        o = run => o?,
                        _ = c.wait_for(|v| *v) => {
                            let rec = session.finish();
                            return Ok(finish(spec, model, started_at, start, rec, Ending::Cancelled, None, &[]));
                        }
                    }
                }
                None => run.await?,
            }
        }
    };
    let rec = session.finish();
    let atif = sandbox
        .read_file_capped(&atif_file, MAX_ATIF)
        .await
        .ok()
        .and_then(|(b, size)| (size <= MAX_ATIF).then_some(b))
        .and_then(|b| serde_json::from_slice(&b).ok());
    let ending = if let Some(m) = &rec.infra {
        Ending::ModelError { message: m.clone() }
    } else if let Some(e) = &rec.exhausted {
        e.clone()
    } else if out.timed_out {
        Ending::BudgetWallClock
    } else {
        Ending::Exited {
            code: out.exit_code,
        }
    };
    let record = CommandRecord {
        exit_code: out.exit_code,
        timed_out: out.timed_out,
        output: tail(&out.output, OUTPUT_TAIL),
        atif,
        refused: rec.refused.clone(),
    };
    drop(files);
    Ok(finish(
        spec,
        model,
        started_at,
        start,
        rec,
        ending,
        Some(record),
        &[token],
    ))
}

#[allow(clippy::too_many_arguments)]
fn finish(
    spec: &EpisodeSpec<'_>,
    model: &dyn Model,
    started_at: chrono::DateTime<chrono::Utc>,
    start: Instant,
    rec: crate::agent::gateway::Recording,
    ending: Ending,
    command: Option<CommandRecord>,
    tokens: &[String],
) -> Episode {
    let mut trace = Trace {
        format: TRACE_FORMAT,
        task: spec.task_id.to_string(),
        trial: spec.trial,
        seed: spec.seed,
        model: model.name(),
        harness: spec.harness.manifest.name.clone(),
        protocol: Protocol::Command,
        budgets: spec.budgets.clone(),
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ended_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        tools: rec.tools,
        events: rec.events,
        totals: Totals {
            turns: rec.turns,
            tool_calls: rec.tool_calls,
            usage: rec.usage,
            cost_usd: rec.cost_usd,
            duration_ms: start.elapsed().as_millis() as u64,
        },
        ending,
        command,
    };
    let mut secrets = model.secrets();
    secrets.extend(tokens.iter().cloned());
    trace.redact(&secrets);
    Episode {
        ending: trace.ending.clone(),
        usage: rec.usage,
        cost_usd: rec.cost_usd,
        trace,
    }
}

fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut at = s.len() - max;
    while !s.is_char_boundary(at) {
        at += 1;
    }
    format!("[...]\n{}", &s[at..])
}

/// What a runner that installs once per image needs of `agent.install` (see
/// [`crate::sandbox::AgentInstall`]): the command, the environment it sees (the episode's
/// `HARNESS_DIR`, `HARNESS_AGENT_PATHS`, no gateway: an install calls no model), the commit's
/// files and the agent paths, and a digest of all of them. Any change to a harness file is a new
/// install input: the install may read any of them.
pub fn install_spec(
    harness: &crate::harness::Harness,
    agent_paths: &[std::path::PathBuf],
) -> Option<crate::sandbox::AgentInstall> {
    if harness.manifest.protocol != Protocol::Command {
        return None;
    }
    let script = harness.manifest.agent.as_ref()?.install.clone()?;
    let env: Vec<(String, String)> = [
        ("HARNESS_DIR", HARNESS_DIR.to_string()),
        ("HARNESS_AGENT_PATHS", agent_paths_var(agent_paths)),
        ("PYTHONDONTWRITEBYTECODE", "1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut files: Vec<(String, String)> = harness
        .files
        .iter()
        .map(|(p, c)| (format!("{HARNESS_DIR}/{p}"), c.clone()))
        .collect();
    files.sort();
    let mut h = crate::support::digest::Hasher::new();
    h.update(b"git-harness agent install inputs v1\0");
    h.update(script.as_bytes());
    h.update([0]);
    for (k, v) in &env {
        h.update(format!("{k}={v}\0"));
    }
    for (p, c) in &files {
        h.update(p.as_bytes());
        h.update([0]);
        h.update(c.as_bytes());
        h.update([0]);
    }
    h.update(crate::support::digest::stat_tree(agent_paths));
    Some(crate::sandbox::AgentInstall {
        script,
        env,
        timeout: INSTALL_TIMEOUT,
        files,
        files_dir: HARNESS_DIR.to_string(),
        paths: agent_paths.to_vec(),
        digest: h.hex(),
    })
}

/// `runner.agent_paths` as one `:`-separated value (they are shown under their own paths).
fn agent_paths_var(paths: &[std::path::PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":")
}
