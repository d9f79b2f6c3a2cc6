//! Evaluation runs: trials of a harness on a split, run concurrently, journaled as they finish,
//! cached by harness tree, and recorded in git as `refs/harness/runs/<id>` plus a note.

pub mod builtin;
pub mod cache;
pub mod context;
pub mod harbor;
pub mod journal;
pub mod keep;
pub mod plan;
pub mod record;
pub mod regrade;
pub mod run;
pub mod schedule;
pub mod trial;
pub mod verify;

pub use verify::{VerifyOptions, verify};

use serde::{Deserialize, Serialize};

use crate::model::Usage;
use crate::task::VerifierOutcome;

/// The files of a run record (the tree of `refs/harness/runs/<id>`).
pub const RUN_FILE: &str = "run.yaml";
pub const RESULTS_FILE: &str = "results.jsonl";

/// Which agent plays the trials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    /// The model under the harness.
    Harness,
    /// Runs the task's reference solution.
    Oracle,
    /// Does nothing.
    Nop,
}

impl AgentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Harness => "harness",
            AgentKind::Oracle => "oracle",
            AgentKind::Nop => "nop",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Pass,
    Fail,
    /// Infrastructure error: never an agent failure, never cached, excluded from pass rates.
    InfraError,
}

/// The class of a trial's infrastructure error, as its result stores it.
pub use crate::error::InfraClass;

impl InfraClass {
    /// The settings to look at when trials fail with an error of this class.
    pub fn hint(self) -> &'static str {
        match self {
            InfraClass::Model => {
                "check `model.base_url` and `model.api_key_env` in .harness/experiment.yaml (and that the variable holds a valid key)"
            }
            InfraClass::Sandbox => {
                "check `runner.kind` in .harness/experiment.yaml and that its sandbox works: `git harness tasks check`"
            }
            InfraClass::Verifier => {
                "the task's verifier could not run on an untouched environment: `git harness tasks check` shows which"
            }
            InfraClass::Other => "re-run the command",
        }
    }
}

/// When no result of run `run` counts because every trial hit an infrastructure error: the
/// error saying so, with the first error of each class verbatim. There is no evidence to act
/// on, which is not the same as evidence of failure.
pub fn no_evidence(run: &str, results: &[TrialResult]) -> Option<crate::error::Error> {
    if results.is_empty() || results.iter().any(|r| !r.is_infra()) {
        return None;
    }
    let summary = infra_summary(results);
    let first = summary.first()?;
    let detail: Vec<String> = summary
        .iter()
        .map(|s| format!("{} ({}): {}", s.kind.as_str(), s.count, s.first))
        .collect();
    Some(crate::error::Error::Infra {
        class: first.kind,
        message: format!(
            "no evidence: every trial of run {run} hit an infrastructure error; {}",
            detail.join("; ")
        ),
        hint: Some(first.kind.hint().to_string()),
    })
}

/// The infrastructure errors of some results, per class: how many, and the first, verbatim.
#[derive(Debug, Clone, PartialEq)]
pub struct InfraSummary {
    pub kind: InfraClass,
    pub count: u32,
    pub first: String,
}

pub fn infra_summary<'a>(results: impl IntoIterator<Item = &'a TrialResult>) -> Vec<InfraSummary> {
    let mut out: Vec<InfraSummary> = Vec::new();
    for r in results {
        let (true, Some(kind)) = (r.is_infra(), r.infra) else {
            continue;
        };
        match out.iter_mut().find(|s| s.kind == kind) {
            Some(s) => s.count += 1,
            None => out.push(InfraSummary {
                kind,
                count: 1,
                first: r.error.clone().unwrap_or_default(),
            }),
        }
    }
    out
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durations {
    pub total_ms: u64,
    pub setup_ms: u64,
    pub agent_ms: u64,
    pub verify_ms: u64,
    /// Time inside model calls.
    pub model_ms: u64,
    /// Time inside sandbox execs (agent tools, setup, verifier).
    pub sandbox_ms: u64,
}

/// One trial's result, as stored in `results.jsonl` and in the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    /// The record's format version (docs/formats.md); absent in records written before: 1.
    #[serde(default = "crate::support::format::v1")]
    pub format: u32,
    pub task: String,
    pub split: String,
    pub trial: u32,
    pub seed: u64,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infra: Option<InfraClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub reward: f64,
    #[serde(default)]
    pub verifier: VerifierOutcome,
    #[serde(default)]
    pub usage: Usage,
    #[serde(default)]
    pub cost_usd: f64,
    #[serde(default)]
    pub durations: Durations,
    /// Why the episode ended (submitted, budget_turns, ...).
    #[serde(default)]
    pub ending: String,
    pub turns: u32,
    pub tool_calls: u32,
    /// Path of the trace inside the run record that holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// Bytes of the trace as stored.
    #[serde(default)]
    pub trace_bytes: u64,
    /// Path of the kept final workspace (a tar of the workdir after the agent, see
    /// `run --keep-workspace`) inside the run record that holds it; what `regrade` verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Bytes of the kept workspace as stored.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub workspace_bytes: u64,
    /// Digest of the cache key this result is stored under (absent: never cached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
    /// The run whose trial this result was reused from, when it came from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_from: Option<String>,
    /// The Docker host of `runner.hosts` the trial ran on (its last attempt); absent for the
    /// single-engine and local runners. Never part of the cache key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A line of `results.jsonl` or `journal.jsonl`, or a cache entry's result.
impl crate::support::format::Versioned for TrialResult {
    const RECORD: &'static str = "trial result";
    const FORMAT: u32 = 1;
    fn format(&self) -> u32 {
        self.format
    }
}

impl TrialResult {
    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Pass
    }

    pub fn is_infra(&self) -> bool {
        self.outcome == Outcome::InfraError
    }

    pub fn tokens(&self) -> u64 {
        self.usage.prompt_tokens + self.usage.completion_tokens
    }
}

/// A trial's identity within a run: task and trial index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TrialId {
    pub task: String,
    pub trial: u32,
}

/// The per-trial seed: a function of the experiment seed, the task and the trial index only, so
/// repeated and resumed runs give the same trial the same seed.
pub fn trial_seed(run_seed: u64, task: &str, trial: u32) -> u64 {
    let mut h = crate::support::digest::Hasher::new();
    h.update(run_seed.to_le_bytes());
    h.update(task.as_bytes());
    h.update(trial.to_le_bytes());
    let d = h.finish();
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// The file that records an [`Overhead`] beside the prompts of a proposer round.
pub const SPEND_FILE: &str = "spend.yaml";

/// Model use that no counted trial result carries: trials cancelled by early stopping or an
/// interrupt, proposer and diagnosis calls. Spent all the same, so budgets and reports count it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Overhead {
    /// Model requests made.
    pub requests: u32,
    /// Of those, requests cut off before an answer: spent, but of unknown size.
    #[serde(default)]
    pub unanswered: u32,
    pub usage: Usage,
    pub cost_usd: f64,
}

impl Overhead {
    pub fn is_empty(&self) -> bool {
        self.requests == 0
    }

    pub fn tokens(&self) -> u64 {
        self.usage.prompt_tokens + self.usage.completion_tokens
    }
}

impl std::ops::AddAssign for Overhead {
    fn add_assign(&mut self, o: Overhead) {
        self.requests += o.requests;
        self.unanswered += o.unanswered;
        self.usage += o.usage;
        self.cost_usd += o.cost_usd;
    }
}

/// Totals over a set of results (one split of a run).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub passes: u32,
    /// Trials that count: infra errors excluded.
    pub trials: u32,
    pub infra_errors: u32,
    pub executed: u32,
    pub cached: u32,
    pub tokens: u64,
    pub cost_usd: f64,
    /// Sum of the executed trials' durations.
    pub wall_ms: u64,
    pub trace_bytes: u64,
    /// Bytes of the final workspaces the executed trials kept (`run --keep-workspace`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub workspace_bytes: u64,
}

impl Totals {
    pub fn of<'a>(results: impl IntoIterator<Item = &'a TrialResult>) -> Totals {
        let mut t = Totals::default();
        for r in results {
            match r.outcome {
                Outcome::Pass => {
                    t.passes += 1;
                    t.trials += 1;
                }
                Outcome::Fail => t.trials += 1,
                Outcome::InfraError => t.infra_errors += 1,
            }
            if r.cached_from.is_some() {
                t.cached += 1;
            } else {
                t.executed += 1;
                t.tokens += r.tokens();
                t.cost_usd += r.cost_usd;
                t.trace_bytes += r.trace_bytes;
                t.workspace_bytes += r.workspace_bytes;
                t.wall_ms += r.durations.total_ms;
            }
        }
        t
    }

    /// The pass rate for people: "no data" when no trial counted (all infrastructure errors
    /// or none run), which is not 0 %.
    pub fn pass_rate_text(&self) -> String {
        if self.trials == 0 {
            "no data".to_string()
        } else {
            format!("{:.1}%", self.pass_rate() * 100.0)
        }
    }

    pub fn pass_rate(&self) -> f64 {
        if self.trials == 0 {
            0.0
        } else {
            f64::from(self.passes) / f64::from(self.trials)
        }
    }
}

/// The lines of a stored `results.jsonl`: a line that does not read is an error naming it,
/// never a trial silently left out of the counts.
pub fn parse_results(bytes: &[u8], place: &str) -> crate::error::Result<Vec<TrialResult>> {
    let mut out = Vec::new();
    for (n, line) in bytes.split(|c| *c == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let r: TrialResult = serde_json::from_slice(line).map_err(|e| {
            crate::error::Error::Internal(format!(
                "{place}: line {} is not a trial result: {e}",
                n + 1
            ))
        })?;
        crate::support::format::check(&r, &format!("{place}:{}", n + 1))?;
        out.push(r);
    }
    Ok(out)
}
