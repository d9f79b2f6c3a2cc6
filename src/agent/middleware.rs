//! Middleware: declarative runtime rules from `middleware/*.yaml`, trigger -> action.
//!
//! ```yaml
//! enabled: true                 # optional (default true); `false` skips the whole file
//! rules:
//!   - name: no-identical-retries  # required, unique in the file; recorded in traces
//!     on: tool_call               # model_turn | tool_call | tool_result | submit
//!     when:                       # optional; every condition given must hold
//!       repeated_command: 3
//!     action: block               # inject | block | run_checks | stop
//!     message: Do not repeat ...  # required for inject and block
//!     once: false                 # optional: fire at most once per episode
//! ```
//!
//! Events: `model_turn` (before each model request), `tool_call` (before a tool other than
//! submit runs), `tool_result` (after it ran; not for blocked calls), `submit` (before a submit
//! is accepted, ahead of the completion checks).
//!
//! Conditions (numbers are thresholds: the condition holds once the count reaches N):
//!
//! | condition | events | holds when |
//! |---|---|---|
//! | `tool: NAME` | tool_call, tool_result | the call is to that tool |
//! | `command_matches: REGEX` | tool_call, tool_result | the bash command matches |
//! | `repeated_command: N` | tool_call, tool_result | the identical call (tool and arguments) came N times in a row, this one included |
//! | `nonzero_exit: BOOL` | tool_result | the exit code is (not) 0; non-bash tools exit 1 on error |
//! | `tool_error_matches: REGEX` | tool_result | the call failed and its result matches |
//! | `first_submit: BOOL` | submit | this is (not) the first submit of the episode |
//! | `total_tool_calls: N` | all | N tool calls were made, this one included |
//! | `consecutive_tool_errors: N` | all | the last N tool calls all failed |
//! | `turns_without_file_change: N` | all | the last N model turns changed no file |
//! | `turns: N` | all | N model turns happened (at model_turn: including the coming one) |
//! | `elapsed_sec: N` | all | N seconds of the episode have passed |
//!
//! Actions:
//!
//! | action | events | effect |
//! |---|---|---|
//! | `inject` | all | a user message `[harness] MESSAGE` before the next model request |
//! | `block` | tool_call, submit | the call does not run; its result is `[blocked by harness] MESSAGE` |
//! | `run_checks` | model_turn, tool_call, tool_result | run the completion checks now; each failure is injected as `[harness] [check failed] ...` |
//! | `stop` | all | end the episode (`stopped`, naming the rule) |
//!
//! Files apply in name order and rules in file order; every rule that holds fires.

use std::collections::HashSet;
use std::path::Path;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum On {
    ModelTurn,
    ToolCall,
    ToolResult,
    Submit,
}

impl On {
    pub fn as_str(self) -> &'static str {
        match self {
            On::ModelTurn => "model_turn",
            On::ToolCall => "tool_call",
            On::ToolResult => "tool_result",
            On::Submit => "submit",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Inject,
    Block,
    RunChecks,
    Stop,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Inject => "inject",
            ActionKind::Block => "block",
            ActionKind::RunChecks => "run_checks",
            ActionKind::Stop => "stop",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_matches: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeated_command: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonzero_exit: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_error_matches: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_submit: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tool_calls: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_tool_errors: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turns_without_file_change: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turns: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_sec: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub on: On,
    #[serde(default)]
    pub when: When,
    pub action: ActionKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub once: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MiddlewareFile {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

fn yes() -> bool {
    true
}

/// A rule ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub file: String,
    pub rule: Rule,
    command_re: Option<Regex>,
    error_re: Option<Regex>,
}

const ALL: &[On] = &[On::ModelTurn, On::ToolCall, On::ToolResult, On::Submit];
const CALLS: &[On] = &[On::ToolCall, On::ToolResult];

impl MiddlewareFile {
    /// Parse and validate; errors name the file, line and field. Returns the rules of an
    /// enabled file (none for a disabled one, which is still checked).
    pub fn parse(text: &str, file: &str) -> Result<Vec<CompiledRule>> {
        let f: MiddlewareFile = crate::support::yaml::from_str(text, Path::new(file))?;
        let mut out = Vec::new();
        let mut names = HashSet::new();
        for (i, rule) in f.rules.iter().enumerate() {
            let line = crate::support::yaml::line_of_value(text, &rule.name);
            let err = |field: &str, msg: String| {
                Err(Error::config(
                    file,
                    line,
                    format!("rules[{i}].{field}"),
                    msg,
                ))
            };
            if rule.name.trim().is_empty() {
                return err("name", "must not be empty".into());
            }
            if !names.insert(rule.name.clone()) {
                return err(
                    "name",
                    format!("`{}` is used by two rules of this file", rule.name),
                );
            }
            let w = &rule.when;
            let conds: [(&str, bool, &[On]); 11] = [
                ("tool", w.tool.is_some(), CALLS),
                ("command_matches", w.command_matches.is_some(), CALLS),
                ("repeated_command", w.repeated_command.is_some(), CALLS),
                ("nonzero_exit", w.nonzero_exit.is_some(), &[On::ToolResult]),
                (
                    "tool_error_matches",
                    w.tool_error_matches.is_some(),
                    &[On::ToolResult],
                ),
                ("first_submit", w.first_submit.is_some(), &[On::Submit]),
                ("total_tool_calls", w.total_tool_calls.is_some(), ALL),
                (
                    "consecutive_tool_errors",
                    w.consecutive_tool_errors.is_some(),
                    ALL,
                ),
                (
                    "turns_without_file_change",
                    w.turns_without_file_change.is_some(),
                    ALL,
                ),
                ("turns", w.turns.is_some(), ALL),
                ("elapsed_sec", w.elapsed_sec.is_some(), ALL),
            ];
            for (name, given, events) in conds {
                if given && !events.contains(&rule.on) {
                    let allowed: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
                    return err(
                        &format!("when.{name}"),
                        format!(
                            "`{name}` does not apply to `on: {}` (only to {})",
                            rule.on.as_str(),
                            allowed.join(", ")
                        ),
                    );
                }
            }
            if let Some(tool) = &w.tool
                && super::tools::Builtin::from_name(tool).is_none()
            {
                return err("when.tool", format!("`{tool}` is not a built-in tool"));
            }
            for (name, n) in [
                ("repeated_command", w.repeated_command),
                ("total_tool_calls", w.total_tool_calls),
                ("consecutive_tool_errors", w.consecutive_tool_errors),
                ("turns_without_file_change", w.turns_without_file_change),
                ("turns", w.turns),
            ] {
                if n == Some(0) {
                    return err(&format!("when.{name}"), "must be at least 1".into());
                }
            }
            let compile = |field: &str, re: &Option<String>| -> Result<Option<Regex>> {
                match re {
                    None => Ok(None),
                    Some(r) => Regex::new(r).map(Some).map_err(|e| {
                        Error::config(
                            file,
                            line,
                            format!("rules[{i}].when.{field}"),
                            format!("not a valid regex: {e}"),
                        )
                    }),
                }
            };
            let command_re = compile("command_matches", &w.command_matches)?;
            let error_re = compile("tool_error_matches", &w.tool_error_matches)?;
            let allowed: &[On] = match rule.action {
                ActionKind::Inject | ActionKind::Stop => ALL,
                ActionKind::Block => &[On::ToolCall, On::Submit],
                ActionKind::RunChecks => &[On::ModelTurn, On::ToolCall, On::ToolResult],
            };
            if !allowed.contains(&rule.on) {
                let names: Vec<&str> = allowed.iter().map(|e| e.as_str()).collect();
                return err(
                    "action",
                    format!(
                        "`{}` cannot be done on `{}` (only on {})",
                        rule.action.as_str(),
                        rule.on.as_str(),
                        names.join(", ")
                    ),
                );
            }
            let needs_message = matches!(rule.action, ActionKind::Inject | ActionKind::Block);
            if needs_message && rule.message.as_deref().is_none_or(|m| m.trim().is_empty()) {
                return err(
                    "message",
                    format!("`{}` needs a message for the model", rule.action.as_str()),
                );
            }
            out.push(CompiledRule {
                file: file.to_string(),
                rule: rule.clone(),
                command_re,
                error_re,
            });
        }
        Ok(if f.enabled { out } else { Vec::new() })
    }
}

/// What a rule sees when an event happens.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    pub tool: Option<&'a str>,
    pub command: Option<&'a str>,
    /// How many times in a row the identical call came, this one included.
    pub repeated: u32,
    pub exit_code: Option<i32>,
    pub failed: bool,
    pub result: Option<&'a str>,
    pub first_submit: bool,
    pub total_tool_calls: u32,
    pub consecutive_tool_errors: u32,
    pub turns_without_file_change: u32,
    pub turns: u32,
    pub elapsed_sec: u64,
}

impl CompiledRule {
    fn holds(&self, f: &Facts<'_>) -> bool {
        let w = &self.rule.when;
        let at_least = |cond: Option<u32>, v: u32| cond.is_none_or(|n| v >= n);
        w.tool.as_deref().is_none_or(|t| f.tool == Some(t))
            && self
                .command_re
                .as_ref()
                .is_none_or(|re| f.command.is_some_and(|c| re.is_match(c)))
            && at_least(w.repeated_command, f.repeated)
            && w.nonzero_exit
                .is_none_or(|want| (f.exit_code != Some(0)) == want)
            && self
                .error_re
                .as_ref()
                .is_none_or(|re| f.failed && f.result.is_some_and(|r| re.is_match(r)))
            && w.first_submit.is_none_or(|want| f.first_submit == want)
            && at_least(w.total_tool_calls, f.total_tool_calls)
            && at_least(w.consecutive_tool_errors, f.consecutive_tool_errors)
            && at_least(w.turns_without_file_change, f.turns_without_file_change)
            && at_least(w.turns, f.turns)
            && w.elapsed_sec.is_none_or(|n| f.elapsed_sec >= n)
    }
}

/// The rules of a harness and which `once` rules already fired in this episode.
#[derive(Debug, Clone, Default)]
pub struct Middleware {
    pub rules: Vec<CompiledRule>,
    fired: HashSet<usize>,
}

impl Middleware {
    pub fn new(rules: Vec<CompiledRule>) -> Self {
        Middleware {
            rules,
            fired: HashSet::new(),
        }
    }

    /// Whether any rule needs to know if bash calls changed files.
    pub fn watches_file_changes(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.rule.when.turns_without_file_change.is_some())
    }

    /// The rules that fire for `on` given `facts`, in order.
    pub fn fire(&mut self, on: On, facts: &Facts<'_>) -> Vec<Rule> {
        let mut out = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            if r.rule.on != on || (r.rule.once && self.fired.contains(&i)) || !r.holds(facts) {
                continue;
            }
            self.fired.insert(i);
            out.push(r.rule.clone());
        }
        out
    }

    pub fn file_of(&self, rule: &str) -> String {
        self.rules
            .iter()
            .find(|r| r.rule.name == rule)
            .map(|r| r.file.clone())
            .unwrap_or_default()
    }
}
