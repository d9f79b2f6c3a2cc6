//! The trace a trial leaves: what the model was asked and answered, every tool call and its
//! result, middleware firings, check results, budget notices, and how the episode ended.
//!
//! Kept compact on purpose: a model request records the system message only when it changed
//! and only the new user-side messages (the first user message, injections, budget notices,
//! format feedback); the assistant turn in between is the preceding `model_response` event and
//! tool results are the `tool_call` events. So nothing is stored twice and a 30-turn trace stays
//! small. Mining reads `tool_call` events (tool, command, exit code, output, paths written),
//! `middleware` events and `ending`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, IoContext, Result};
use crate::experiment::Budgets;
use crate::harness::Protocol;
use crate::model::{Message, ToolCall, ToolSpec, Usage};

/// Version of this trace format.
pub const TRACE_FORMAT: u32 = 1;

/// What replaces a secret wherever it would have been recorded.
pub const REDACTED: &str = "[REDACTED]";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub format: u32,
    pub task: String,
    pub trial: u32,
    pub seed: u64,
    /// `provider/model`, e.g. `openai/gpt-4.1` or `sim/demo`.
    pub model: String,
    /// The harness manifest's name.
    pub harness: String,
    pub protocol: Protocol,
    pub budgets: Budgets,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub ended_at: String,
    /// The tools as the model saw them.
    pub tools: Vec<ToolSpec>,
    pub events: Vec<Event>,
    pub totals: Totals,
    pub ending: Ending,
    /// A `protocol: command` agent's program: how it exited, the tail of its output, the ATIF
    /// trajectory it wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandRecord>,
}

/// What a `protocol: command` agent's program left besides its model calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// The tail of its stdout and stderr.
    pub output: String,
    /// The ATIF trajectory it wrote to `$HARNESS_ATIF_FILE`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atif: Option<Value>,
    /// Requests the gateway refused (another model, another temperature).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

/// `traces/<task>/<trial>.json` of a run ref or journal.
impl crate::support::format::Versioned for Trace {
    const RECORD: &'static str = "trace";
    const FORMAT: u32 = TRACE_FORMAT;
    fn format(&self) -> u32 {
        self.format
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub turns: u32,
    pub tool_calls: u32,
    pub usage: Usage,
    pub cost_usd: f64,
    pub duration_ms: u64,
}

/// Why an episode ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Ending {
    /// The agent submitted and every completion check passed.
    Submitted,
    BudgetTurns,
    BudgetToolCalls,
    BudgetWallClock,
    BudgetTokens,
    /// A middleware rule with action `stop` fired.
    Stopped {
        rule: String,
    },
    /// The model API failed after retries: an infrastructure error, not an agent failure.
    ModelError {
        message: String,
    },
    /// The sandbox failed: an infrastructure error, not an agent failure.
    SandboxError {
        message: String,
    },
    /// Three consecutive replies without a usable action.
    FormatErrors,
    Cancelled,
    /// A `protocol: command` agent exited by itself (`code` is `None` when it was killed).
    Exited {
        code: Option<i32>,
    },
}

impl Ending {
    /// Infrastructure errors are never counted as agent failures.
    pub fn is_infra(&self) -> bool {
        matches!(
            self,
            Ending::ModelError { .. } | Ending::SandboxError { .. }
        )
    }

    /// The snake_case name used in the trace (`submitted`, `budget_turns`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            Ending::Submitted => "submitted",
            Ending::BudgetTurns => "budget_turns",
            Ending::BudgetToolCalls => "budget_tool_calls",
            Ending::BudgetWallClock => "budget_wall_clock",
            Ending::BudgetTokens => "budget_tokens",
            Ending::Stopped { .. } => "stopped",
            Ending::ModelError { .. } => "model_error",
            Ending::SandboxError { .. } => "sandbox_error",
            Ending::FormatErrors => "format_errors",
            Ending::Cancelled => "cancelled",
            Ending::Exited { .. } => "exited",
        }
    }
}

/// One thing that happened, in order. `turn` is the 1-based model turn it belongs to; `t_ms`
/// the milliseconds since `started_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    ModelRequest(RequestEvent),
    ModelResponse(ResponseEvent),
    ToolCall(ToolEvent),
    Middleware(MiddlewareEvent),
    Check(CheckEvent),
    BudgetNotice {
        turn: u32,
        t_ms: u64,
        message: String,
    },
    FormatError {
        turn: u32,
        t_ms: u64,
        message: String,
    },
    /// The model gateway refused a request that broke the fixed-model invariant (another
    /// model name, another temperature).
    Refused {
        turn: u32,
        t_ms: u64,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestEvent {
    pub turn: u32,
    pub t_ms: u64,
    /// The full system message, present only when it differs from the previous request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// New user-side messages since the previous request (not assistant turns, not tool
    /// results: those are `model_response` and `tool_call` events).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseEvent {
    pub turn: u32,
    pub t_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolEvent {
    pub turn: u32,
    pub t_ms: u64,
    pub call_id: String,
    pub tool: String,
    /// The parsed arguments, or the raw text as a string when they were not valid JSON.
    pub arguments: Value,
    /// `bash` only: the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// File tools: the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `bash`: the exit code (`None` when killed); other tools: 0 on success, 1 on error.
    pub exit_code: Option<i32>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocked: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// The result as the model saw it, clipped (head + tail) for the trace.
    pub output: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    pub duration_ms: u64,
    /// Files this call wrote (write_file, edit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files_changed: Vec<String>,
    /// `bash`: whether the working tree changed, when it was measured (only when a middleware
    /// rule needs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir_changed: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MiddlewareEvent {
    pub turn: u32,
    pub t_ms: u64,
    pub rule: String,
    /// The middleware file that declares the rule.
    pub file: String,
    pub event: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckEvent {
    pub turn: u32,
    pub t_ms: u64,
    pub name: String,
    pub ok: bool,
    pub exit_code: Option<i32>,
    /// The tail of the check's output.
    pub output: String,
    pub duration_ms: u64,
}

impl Trace {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        let trace: Trace = serde_json::from_str(&text).map_err(|e| {
            Error::config(
                path,
                Some(e.line()),
                "(trace)",
                format!("not a git-harness trace: {e}"),
            )
        })?;
        crate::support::format::check(&trace, &path.display().to_string())?;
        Ok(trace)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a trace always serializes")
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_json()).at(path)
    }

    /// Replace every occurrence of each secret (API keys) in every recorded string.
    pub fn redact(&mut self, secrets: &[String]) {
        // Very short "secrets" would shred the trace; real keys are long.
        let secrets: Vec<&String> = secrets.iter().filter(|s| s.len() >= 8).collect();
        if secrets.is_empty() {
            return;
        }
        let mut v = serde_json::to_value(&*self).expect("a trace always serializes");
        redact_value(&mut v, &secrets);
        *self = serde_json::from_value(v).expect("redacting strings keeps the trace's shape");
    }

    /// Every tool call, in order.
    pub fn tool_calls(&self) -> impl Iterator<Item = &ToolEvent> {
        self.events.iter().filter_map(|e| match e {
            Event::ToolCall(t) => Some(t),
            _ => None,
        })
    }

    /// Every bash command with its exit code and output, in order.
    pub fn bash_commands(&self) -> impl Iterator<Item = (&str, Option<i32>, &str)> {
        self.tool_calls()
            .filter_map(|t| Some((t.command.as_deref()?, t.exit_code, t.output.as_str())))
    }

    /// Paths written by write_file and edit, in order.
    pub fn files_written(&self) -> impl Iterator<Item = &str> {
        self.tool_calls()
            .flat_map(|t| t.files_changed.iter().map(String::as_str))
    }

    pub fn middleware_firings(&self) -> impl Iterator<Item = &MiddlewareEvent> {
        self.events.iter().filter_map(|e| match e {
            Event::Middleware(m) => Some(m),
            _ => None,
        })
    }
}

fn redact_value(v: &mut Value, secrets: &[&String]) {
    match v {
        Value::String(s) => {
            for secret in secrets {
                if s.contains(secret.as_str()) {
                    *s = s.replace(secret.as_str(), REDACTED);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| redact_value(x, secrets)),
        Value::Object(o) => o.values_mut().for_each(|x| redact_value(x, secrets)),
        _ => {}
    }
}
