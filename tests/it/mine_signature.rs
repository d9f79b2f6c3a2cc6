//! The deterministic signature extractor on hand-made traces: one trace per mechanism it
//! recognises, the terminal causes, and the misclassifications found on real traces.

use git_harness::agent::trace::Trace;
use git_harness::eval::TrialResult;
use git_harness::mine::{CausalStatus, MECHANISMS, Signature, extract, signature::terminal_cause};
use serde_json::{Value, json};

fn call(tool: &str, args: Value, command: Option<&str>, exit: i32, output: &str) -> Value {
    let mut v = json!({
        "type": "tool_call", "turn": 1, "t_ms": 0, "call_id": "c", "tool": tool,
        "arguments": args, "exit_code": exit, "ok": exit == 0, "output": output, "duration_ms": 1,
    });
    if let Some(c) = command {
        v["command"] = json!(c);
    }
    v
}

fn bash(cmd: &str, exit: i32) -> Value {
    call("bash", json!({ "command": cmd }), Some(cmd), exit, "")
}

fn write_file(path: &str) -> Value {
    let mut v = call(
        "write_file",
        json!({"path": path, "content": "x\n"}),
        None,
        0,
        "wrote",
    );
    v["path"] = json!(path);
    v["files_changed"] = json!([path]);
    v
}

fn blocked(cmd: &str) -> Value {
    let mut v = bash(cmd, 1);
    v["blocked"] = json!(true);
    v["output"] = json!("[blocked by harness] no");
    v
}

fn submit() -> Value {
    call("submit", json!({"summary": "done"}), None, 0, "submitted")
}

fn trace(mut events: Vec<Value>, ending: &str) -> Trace {
    for (i, e) in events.iter_mut().enumerate() {
        e["turn"] = json!(i + 1);
    }
    let n = events.len();
    serde_json::from_value(json!({
        "format": 1, "task": "t", "trial": 0, "seed": 1, "model": "sim/test", "harness": "minimal",
        "protocol": "tools", "budgets": {}, "started_at": "2026-01-01T00:00:00Z",
        "ended_at": "2026-01-01T00:01:00Z", "tools": [], "events": events,
        "totals": {"turns": n, "tool_calls": n,
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0},
            "cost_usd": 0.0, "duration_ms": 0},
        "ending": {"reason": ending},
    }))
    .expect("a valid trace")
}

fn result(output_tail: &str, ending: &str) -> TrialResult {
    serde_json::from_value(json!({
        "task": "t", "split": "held_in", "trial": 0, "seed": 1, "outcome": "fail", "reward": 0.0,
        "verifier": {"reward": 0.0, "passed": false, "exit_code": 1, "output_tail": output_tail,
            "failed_tests": ["test_out"], "timed_out": false},
        "ending": ending, "turns": 3, "tool_calls": 3,
    }))
    .expect("a valid result")
}

const MISSING: &str = "FAIL test_out: out.txt not found\n1 check(s) failed";
const WRONG: &str = "FAIL test_out: out.txt does not have the expected content\n1 check(s) failed";

fn sig(events: Vec<Value>, ending: &str, verifier: &str) -> Signature {
    let t = trace(events, ending);
    extract(&result(verifier, ending), Some(&t)).0
}

fn repeat(v: Value, n: usize) -> Vec<Value> {
    std::iter::repeat_n(v, n).collect()
}

/// One hand-made failing trial per mechanism: (mechanism, events, ending, verifier output,
/// expected causal status).
fn cases() -> Vec<(
    &'static str,
    Vec<Value>,
    &'static str,
    &'static str,
    CausalStatus,
)> {
    let mut retry = vec![bash("ls -la", 0), bash("cat build.sh", 0)];
    retry.extend(repeat(bash("bash build.sh", 1), 5));
    let mut looping = vec![bash("ls -la", 0)];
    looping.extend(repeat(bash("cat -A greet.sh", 0), 6));
    let exploring: Vec<Value> = (0..8)
        .map(|i| {
            bash(
                if i % 2 == 0 {
                    "ls -la"
                } else {
                    "head -n 3 in.txt"
                },
                0,
            )
        })
        .collect();
    vec![
        (
            "repeated_identical_failing_command",
            retry,
            "budget_turns",
            MISSING,
            CausalStatus::RootCause,
        ),
        (
            "repeated_calls_without_progress",
            looping,
            "budget_turns",
            MISSING,
            CausalStatus::RootCause,
        ),
        (
            "env_change_not_persisted",
            vec![
                bash("ls -la data", 0),
                bash("cd data", 0),
                bash("LC_ALL=C sort names.txt > sorted.txt", 2),
                submit(),
            ],
            "submitted",
            "FAIL test_sorted: data/sorted.txt not found",
            CausalStatus::RootCause,
        ),
        (
            "no_artifact_before_budget",
            exploring,
            "budget_turns",
            MISSING,
            CausalStatus::RootCause,
        ),
        (
            "submitted_without_verification",
            vec![
                bash("ls -la", 0),
                bash("grep -c ' ERROR ' app.log > count.txt", 0),
                submit(),
            ],
            "submitted",
            "FAIL test_count: expected 3 in count.txt, got 5",
            CausalStatus::RootCause,
        ),
        (
            "gave_up_after_tool_error",
            vec![
                write_file("out.txt"),
                bash("cat out.txt", 0),
                bash("python3 check.py", 1),
                submit(),
            ],
            "submitted",
            WRONG,
            CausalStatus::Contributor,
        ),
        (
            "submitted_without_changes",
            vec![bash("ls -la", 0), bash("cat README.md", 0), submit()],
            "submitted",
            MISSING,
            CausalStatus::Contributor,
        ),
        (
            "budget_exhausted",
            vec![
                bash("ls -la", 0),
                write_file("out.txt"),
                bash("cat out.txt", 0),
                bash("python3 slow.py", 0),
            ],
            "budget_tool_calls",
            WRONG,
            CausalStatus::Friction,
        ),
        (
            "unknown_mechanism",
            vec![write_file("out.txt"), bash("cat out.txt", 0)],
            "format_errors",
            WRONG,
            CausalStatus::Unknown,
        ),
    ]
}

#[test]
fn each_mechanism_is_recognised_on_a_hand_made_trace() {
    let mut seen = Vec::new();
    for (mechanism, events, ending, verifier, status) in cases() {
        let s = sig(events, ending, verifier);
        assert_eq!(s.agent_mechanism, mechanism, "{s:?}");
        assert_eq!(s.causal_status, status, "{mechanism}: {s:?}");
        assert_eq!(
            s.id(),
            format!(
                "{}/{}/{mechanism}",
                s.terminal_cause,
                s.causal_status.as_str()
            )
        );
        seen.push(mechanism);
    }
    let all: Vec<&str> = MECHANISMS.iter().map(|(m, _)| *m).collect();
    assert_eq!(seen, all, "one case per mechanism, in MECHANISMS order");
    assert!(MECHANISMS.iter().all(|(_, d)| !d.is_empty()));
}

#[test]
fn the_signature_is_deterministic() {
    for (_, events, ending, verifier, _) in cases() {
        let t = trace(events, ending);
        let r = result(verifier, ending);
        assert_eq!(extract(&r, Some(&t)), extract(&r, Some(&t)));
    }
}

#[test]
fn symptoms_count_calls_writes_failures_and_repeats() {
    let mut events = vec![bash("ls -la", 0), bash("cat build.sh", 0)];
    events.extend(repeat(bash("bash build.sh", 1), 4));
    let t = trace(events, "budget_turns");
    let (_, sy) = extract(&result(MISSING, "budget_turns"), Some(&t));
    assert_eq!(sy.ending, "budget_turns");
    assert_eq!(sy.tool_calls, 6);
    assert_eq!(sy.writes, 0);
    assert_eq!(sy.failed_calls, 4);
    assert_eq!(sy.max_repeat, 4);
    assert_eq!(sy.repeated.as_deref(), Some("bash build.sh"));
    assert!(!sy.verified_after_last_change);
}

#[test]
fn a_blocked_identical_retry_counts_as_a_failing_repeat() {
    let mut events = vec![bash("bash build.sh", 1), bash("bash build.sh", 1)];
    events.extend(repeat(blocked("bash build.sh"), 3));
    events.push(submit());
    let s = sig(events, "submitted", MISSING);
    assert_eq!(s.agent_mechanism, "repeated_identical_failing_command");
    assert_eq!(s.causal_status, CausalStatus::Contributor);
}

#[test]
fn without_a_trace_the_mechanism_is_unknown() {
    let (s, sy) = extract(&result(MISSING, "submitted"), None);
    assert_eq!(s.terminal_cause, "missing_artifact");
    assert_eq!(s.causal_status, CausalStatus::Unknown);
    assert_eq!(s.agent_mechanism, "unknown_mechanism");
    assert_eq!(sy.ending, "submitted");
}

#[test]
fn terminal_causes_come_from_the_verifier() {
    let cause = |tail: &str| terminal_cause(&result(tail, "submitted"));
    assert_eq!(cause(MISSING), "missing_artifact");
    assert_eq!(
        cause("cat: out.txt: No such file or directory"),
        "missing_artifact"
    );
    assert_eq!(cause(WRONG), "wrong_content");
    assert_eq!(
        cause("Traceback (most recent call last):\nSegmentation fault"),
        "test_crash"
    );
    assert_eq!(
        cause(
            "Traceback (most recent call last):\n  File \"t.py\"\nImportError: cannot import name x"
        ),
        "test_crash"
    );
    let mut timeout = result("", "submitted");
    timeout.verifier.timed_out = true;
    assert_eq!(terminal_cause(&timeout), "verifier_timeout");
    let mut bare = result("exit 1", "submitted");
    bare.verifier.failed_tests.clear();
    assert_eq!(terminal_cause(&bare), "failed_checks");
}

// Misclassifications found on real traces.

#[test]
fn a_parse_error_named_missing_is_wrong_content_not_a_missing_artifact() {
    // fix-ini-config of the demo: the file exists, configparser cannot read it.
    let tail = "FAIL test_loads: configparser cannot read app.ini: MissingSectionHeaderError\nFAILED test_loads\n1 check(s) failed";
    assert_eq!(
        terminal_cause(&result(tail, "budget_turns")),
        "wrong_content"
    );
}

#[test]
fn a_failed_assertion_with_a_traceback_is_wrong_content_not_a_crash() {
    let tail = "Traceback (most recent call last):\n  File \"test_out.py\", line 9, in test_out\n    assert got == want\nAssertionError: got 5, want 3";
    assert_eq!(terminal_cause(&result(tail, "submitted")), "wrong_content");
}

#[test]
fn env_loss_that_is_relied_on_and_then_runs_out_of_budget_is_env_loss() {
    // The lost `export` makes the next command fail; the agent keeps exploring until the budget
    // runs out without an artifact. The root cause is the lost environment change.
    let mut events = vec![
        bash("ls lib", 0),
        bash("export PYTHONPATH=lib", 0),
        bash("python3 report.py", 1),
    ];
    events.extend((0..6).map(|i| {
        bash(
            if i % 2 == 0 {
                "ls -la"
            } else {
                "cat report.py"
            },
            0,
        )
    }));
    let s = sig(events, "budget_turns", WRONG);
    assert_eq!(s.agent_mechanism, "env_change_not_persisted", "{s:?}");
}

#[test]
fn an_env_change_redone_inside_one_call_is_recovered_not_env_loss() {
    // The agent lost `cd data`, noticed, and chained it; it then failed for another reason.
    let s = sig(
        vec![
            bash("cd data", 0),
            bash("sort names.txt > sorted.txt", 2),
            bash("cd data && sort names.txt > sorted.txt", 0),
            submit(),
        ],
        "submitted",
        WRONG,
    );
    assert_eq!(s.agent_mechanism, "submitted_without_verification", "{s:?}");
}

#[test]
fn a_cd_to_an_absolute_directory_followed_by_absolute_paths_is_harmless() {
    // `cd /app` is the working directory already; the next call does not rely on it.
    let s = sig(
        vec![
            bash("cd /app", 0),
            bash("ls -la /app", 0),
            bash("wc -l < /app/in.txt > /app/out.txt", 0),
            submit(),
        ],
        "submitted",
        WRONG,
    );
    assert_eq!(s.agent_mechanism, "submitted_without_verification", "{s:?}");
}

#[test]
fn writing_to_an_absolute_path_is_a_change() {
    let s = sig(
        vec![
            bash("ls -la", 0),
            bash("echo 3 > /app/count.txt", 0),
            submit(),
        ],
        "submitted",
        WRONG,
    );
    assert_eq!(s.agent_mechanism, "submitted_without_verification", "{s:?}");
    let s = sig(
        vec![
            bash("ls -la", 0),
            bash("grep x in.txt > /dev/null", 0),
            submit(),
        ],
        "submitted",
        MISSING,
    );
    assert_eq!(s.agent_mechanism, "submitted_without_changes", "{s:?}");
}

#[test]
fn an_identical_call_that_failed_once_then_succeeded_is_not_a_failing_repeat() {
    let mut events = vec![bash("ls -la", 0), bash("make", 1)];
    events.extend(repeat(bash("make", 0), 2));
    events.extend((0..4).map(|i| bash(if i % 2 == 0 { "ls -la" } else { "cat Makefile" }, 0)));
    let s = sig(events, "budget_turns", MISSING);
    assert_ne!(
        s.agent_mechanism, "repeated_identical_failing_command",
        "{s:?}"
    );
}
