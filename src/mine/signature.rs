//! The deterministic failure signature of a failed trial: (terminal cause, causal status, agent
//! mechanism), from the verifier's evidence and the trace.

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::agent::trace::{Event, ToolEvent, Trace};
use crate::eval::TrialResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CausalStatus {
    RootCause,
    Contributor,
    Unknown,
    Friction,
}

impl CausalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CausalStatus::RootCause => "root_cause",
            CausalStatus::Contributor => "contributor",
            CausalStatus::Unknown => "unknown",
            CausalStatus::Friction => "friction",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "root_cause" => CausalStatus::RootCause,
            "contributor" => CausalStatus::Contributor,
            "unknown" => CausalStatus::Unknown,
            "friction" => CausalStatus::Friction,
            _ => return None,
        })
    }
}

/// Terminal causes the extractor assigns (verifier level).
pub const TERMINAL_CAUSES: &[&str] = &[
    "missing_artifact",
    "wrong_content",
    "verifier_timeout",
    "test_crash",
    "failed_checks",
    "tampered_environment",
];

/// Agent mechanisms the extractor recognises, in the order they are tested.
pub const MECHANISMS: &[(&str, &str)] = &[
    (
        "repeated_identical_failing_command",
        "the identical failing command was run again and again",
    ),
    (
        "repeated_calls_without_progress",
        "the same successful command repeated many turns without a file change",
    ),
    (
        "env_change_not_persisted",
        "an environment change (cd, export, source, umask, a function) was made in one shell call and relied on in the next",
    ),
    (
        "no_artifact_before_budget",
        "explored until the budget ran out without writing the required output",
    ),
    (
        "submitted_without_verification",
        "submitted without any verification step after the last change",
    ),
    (
        "gave_up_after_tool_error",
        "a tool error was followed by giving up",
    ),
    (
        "submitted_without_changes",
        "submitted without changing anything",
    ),
    (
        "budget_exhausted",
        "the budget ran out after changes were made",
    ),
    ("unknown_mechanism", "no known mechanism matched"),
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Signature {
    pub terminal_cause: String,
    pub causal_status: CausalStatus,
    pub agent_mechanism: String,
}

impl Signature {
    /// `terminal_cause/causal_status/agent_mechanism`: the cluster id in trailers and flags.
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}",
            self.terminal_cause,
            self.causal_status.as_str(),
            self.agent_mechanism
        )
    }
}

/// What the extractor saw, for the cluster's shared symptoms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Symptoms {
    pub ending: String,
    pub tool_calls: u32,
    pub writes: u32,
    pub failed_calls: u32,
    /// The longest run of identical consecutive calls, and its command.
    pub max_repeat: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeated: Option<String>,
    pub middleware_fired: u32,
    pub verified_after_last_change: bool,
}

/// The terminal cause from the verifier's evidence.
pub fn terminal_cause(r: &TrialResult) -> String {
    let v = &r.verifier;
    if !v.tampered.is_empty() {
        return "tampered_environment".into();
    }
    if v.timed_out {
        return "verifier_timeout".into();
    }
    let text = v.output_tail.to_lowercase();
    // Whole words: `MissingSectionHeaderError` is a parse error of a file that exists.
    let missing = Regex::new(r"\bnot found\b|no such file|\bmissing\b|does not exist|not exist")
        .expect("valid regex");
    if missing.is_match(&text) {
        return "missing_artifact".into();
    }
    // A failed assertion prints a traceback too: that is wrong content, not a crash.
    if (text.contains("traceback") && !text.contains("assertionerror"))
        || text.contains("segmentation fault")
    {
        return "test_crash".into();
    }
    if !v.failed_tests.is_empty() || text.contains("expected") || text.contains("fail") {
        return "wrong_content".into();
    }
    "failed_checks".into()
}

/// Commands that only change the shell's state, which a fresh shell per call loses.
fn state_only(cmd: &str) -> bool {
    let re = Regex::new(r"^\s*(cd\s+\S+|export\s+\w+=\S*|source\s+\S+|\.\s+\S+|umask\s+\d+|alias\s+\w+=.*|\w+\s*\(\)\s*\{.*\}|set\s+-o\s+\w+)\s*;?\s*$")
        .expect("valid regex");
    re.is_match(cmd)
}

/// What a later call contains when it redoes (or does not need) the state change of `cmd`:
/// the directory of a `cd`, `VAR=` of an `export`, the file of a `source`, the name of a
/// function or alias, the option of `set -o`, `umask`.
fn state_key(cmd: &str) -> String {
    let cmd = cmd.trim().trim_end_matches(';').trim();
    let mut words = cmd.split_whitespace();
    let first = words.next().unwrap_or_default();
    let second = words.next().unwrap_or_default();
    match first {
        "cd" | "source" | "." => second.to_string(),
        "export" | "alias" => format!("{}=", second.split('=').next().unwrap_or_default()),
        "umask" => "umask".to_string(),
        "set" => cmd.to_string(),
        _ => format!("{}()", cmd.split('(').next().unwrap_or_default().trim()),
    }
}

/// An environment change in one shell call that the next bash call relied on and no later call
/// redid: a lost `cd` to an absolute directory counts only when the next call failed (it is
/// usually the working directory already).
fn env_lost(calls: &[&ToolEvent]) -> bool {
    (0..calls.len().saturating_sub(1)).any(|i| {
        let (change, next) = (calls[i], calls[i + 1]);
        let Some(cmd) = change.command.as_deref().filter(|c| state_only(c)) else {
            return false;
        };
        if !change.ok || next.tool != "bash" {
            return false;
        }
        let key = state_key(cmd);
        let redone = |c: &&ToolEvent| c.command.as_deref().is_some_and(|t| t.contains(&key));
        let absolute_cd = cmd.trim_start().starts_with("cd") && key.starts_with(['/', '~']);
        !redone(&next)
            && (!absolute_cd || !next.ok)
            && !calls[i + 2..].iter().any(|c| c.tool == "bash" && redone(c))
    })
}

/// Does a bash command (probably) write to the workspace?
fn writes(cmd: &str) -> bool {
    let quiet =
        Regex::new(r"[0-9&]?>>?\s*/dev/(null|stdout|stderr)|[0-9]?>&[0-9]").expect("valid regex");
    let re = Regex::new(r"(^|[^0-9&])>>?\s*[^&\s=]|\btee\b|\bcp\b|\bmv\b|sed\s+-i|\btouch\b|\bmkdir\b|\brm\b|\bchmod\b|\bln\b|\btar\s+-?x|\bgunzip\b|\bunzip\b|\bpatch\b|write_text|open\(.*['\x22]w")
        .expect("valid regex");
    re.is_match(&quiet.replace_all(cmd, ""))
}

fn is_change(t: &ToolEvent) -> bool {
    !t.files_changed.is_empty()
        || t.workdir_changed == Some(true)
        || (t.tool == "bash" && t.command.as_deref().is_some_and(writes))
        || ((t.tool == "write_file" || t.tool == "edit") && t.ok)
}

fn call_key(t: &ToolEvent) -> String {
    match &t.command {
        Some(c) => c.clone(),
        None => format!("{} {}", t.tool, t.arguments),
    }
}

/// The deterministic signature of a failed trial.
pub fn extract(r: &TrialResult, trace: Option<&Trace>) -> (Signature, Symptoms) {
    let cause = terminal_cause(r);
    let Some(trace) = trace else {
        let sig = Signature {
            terminal_cause: cause,
            causal_status: CausalStatus::Unknown,
            agent_mechanism: "unknown_mechanism".into(),
        };
        return (
            sig,
            Symptoms {
                ending: r.ending.clone(),
                ..Default::default()
            },
        );
    };
    let calls: Vec<&ToolEvent> = trace.tool_calls().filter(|t| t.tool != "submit").collect();
    let ending = trace.ending.reason().to_string();
    let budget = ending.starts_with("budget") || ending == "stopped";
    let submitted = ending == "submitted";

    // Longest run of identical consecutive calls, split by success.
    let (mut best_fail, mut best_fail_cmd, mut best_ok, mut best_ok_cmd) = (0u32, None, 0u32, None);
    let mut i = 0;
    while i < calls.len() {
        let k = call_key(calls[i]);
        let mut j = i;
        while j < calls.len() && call_key(calls[j]) == k {
            j += 1;
        }
        let n = (j - i) as u32;
        // Only the failures of a run count: a retry that then succeeds is not a blind loop.
        let n_fail = calls[i..j].iter().filter(|c| !c.ok || c.blocked).count() as u32;
        let any_fail = n_fail > 0;
        let all_read_only = calls[i..j].iter().all(|c| !is_change(c));
        if any_fail && n_fail > best_fail {
            best_fail = n_fail;
            best_fail_cmd = Some(k.clone());
        }
        if !any_fail && all_read_only && n > best_ok {
            best_ok = n;
            best_ok_cmd = Some(k);
        }
        i = j;
    }
    let n_writes = calls.iter().filter(|c| is_change(c)).count() as u32;
    let last_change = calls.iter().rposition(|c| is_change(c));
    let verified_after = match last_change {
        Some(i) => calls[i + 1..].iter().any(|c| c.ok && !is_change(c)),
        None => false,
    };
    let env_split = env_lost(&calls);
    let last_failed = calls.last().is_some_and(|c| !c.ok);
    let failed_calls = calls.iter().filter(|c| !c.ok).count() as u32;

    let mechanism = if best_fail >= 3 {
        "repeated_identical_failing_command"
    } else if best_ok >= 3 && budget {
        "repeated_calls_without_progress"
    } else if env_split {
        // Before `no_artifact_before_budget`: the lost change made the artifact's command fail.
        "env_change_not_persisted"
    } else if n_writes == 0 && budget {
        "no_artifact_before_budget"
    } else if submitted && n_writes > 0 && !verified_after {
        "submitted_without_verification"
    } else if submitted && last_failed {
        "gave_up_after_tool_error"
    } else if submitted && n_writes == 0 {
        "submitted_without_changes"
    } else if budget {
        "budget_exhausted"
    } else {
        "unknown_mechanism"
    };
    let status = match (mechanism, cause.as_str()) {
        ("repeated_identical_failing_command", _) if budget => CausalStatus::RootCause,
        ("repeated_calls_without_progress", _) => CausalStatus::RootCause,
        ("no_artifact_before_budget", "missing_artifact") => CausalStatus::RootCause,
        ("no_artifact_before_budget", _) => CausalStatus::Contributor,
        ("env_change_not_persisted", "wrong_content" | "missing_artifact") => {
            CausalStatus::RootCause
        }
        ("submitted_without_verification", "wrong_content") => CausalStatus::RootCause,
        ("submitted_without_verification", _) => CausalStatus::Contributor,
        ("gave_up_after_tool_error", _) => CausalStatus::Contributor,
        ("repeated_identical_failing_command", _) => CausalStatus::Contributor,
        ("submitted_without_changes", _) => CausalStatus::Contributor,
        ("budget_exhausted", _) => CausalStatus::Friction,
        _ => CausalStatus::Unknown,
    };
    let middleware_fired = trace
        .events
        .iter()
        .filter(|e| matches!(e, Event::Middleware(_)))
        .count() as u32;
    let (max_repeat, repeated) = if best_fail >= best_ok {
        (best_fail, best_fail_cmd)
    } else {
        (best_ok, best_ok_cmd)
    };
    let symptoms = Symptoms {
        ending,
        tool_calls: calls.len() as u32,
        writes: n_writes,
        failed_calls,
        max_repeat,
        repeated,
        middleware_fired,
        verified_after_last_change: verified_after,
    };
    (
        Signature {
            terminal_cause: cause,
            causal_status: status,
            agent_mechanism: mechanism.to_string(),
        },
        symptoms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_only_commands() {
        assert!(state_only("cd data"));
        assert!(state_only("export PREFIX=/opt/x"));
        assert!(state_only("source env.sh"));
        assert!(state_only("umask 077"));
        assert!(!state_only("cd data && sort x > y"));
        assert!(!state_only("ls -la"));
    }

    #[test]
    fn write_detection() {
        assert!(writes("wc -w < input.txt > count.txt"));
        assert!(writes("sed -i 's/a/b/' f"));
        assert!(!writes("cat f 2>&1"));
        assert!(!writes("ls -la"));
        assert!(!writes("grep x f > /dev/null"));
    }
}
