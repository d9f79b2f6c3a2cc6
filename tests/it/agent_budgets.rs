//! Budgets end episodes with the right reason; secrets never reach a trace file; traces export
//! to ATIF; trace size.

use std::time::Duration;

use crate::support::agent::*;
use git_harness::agent::{Ending, Trace};
use git_harness::experiment::{ModelConfig, Provider};
use git_harness::model::{ConnectContext, connect};
use serde_json::Value;

fn bash_forever(n: usize) -> Vec<Scripted> {
    (0..n)
        .map(|i| openai_bash(&format!("c{i}"), &format!("echo {i}")))
        .collect()
}

async fn run_budget(
    budgets: git_harness::experiment::Budgets,
    script: Vec<Scripted>,
) -> (Ending, Vec<Received>, Trace) {
    let server = StandIn::start(script).await;
    let h = harness("minimal", &[]);
    let sb = TestSandbox::new();
    let m = openai_model(&server.base_url, None);
    let mut run = Run::new(&h);
    run.budgets = budgets;
    let ep = run.episode("t", "Loop.", &sb, &m).await;
    (ep.ending, server.received(), ep.trace)
}

#[tokio::test]
async fn max_turns_ends_with_budget_turns_and_warns_first() {
    let b = git_harness::experiment::Budgets {
        max_turns: 5,
        ..small_budgets()
    };
    let (ending, got, trace) = run_budget(b, bash_forever(10)).await;
    assert_eq!(ending, Ending::BudgetTurns);
    assert_eq!(got.len(), 5);
    let notices: Vec<String> = got
        .iter()
        .flat_map(|r| messages_of(r, "user"))
        .filter_map(|m| m["content"].as_str().map(str::to_string))
        .filter(|c| c.starts_with("[budget] "))
        .collect();
    assert!(
        !notices.is_empty(),
        "the model is told when the budget runs low"
    );
    assert_eq!(trace.totals.turns, 5);
}

#[tokio::test]
async fn max_tool_calls_ends_with_budget_tool_calls() {
    let b = git_harness::experiment::Budgets {
        max_tool_calls: 3,
        ..small_budgets()
    };
    let (ending, _, trace) = run_budget(b, bash_forever(10)).await;
    assert_eq!(ending, Ending::BudgetToolCalls);
    assert_eq!(trace.totals.tool_calls, 3);
}

#[tokio::test]
async fn max_tokens_ends_with_budget_tokens() {
    // Each stand-in reply costs 110 tokens.
    let b = git_harness::experiment::Budgets {
        max_tokens: 250,
        ..small_budgets()
    };
    let (ending, got, _) = run_budget(b, bash_forever(10)).await;
    assert_eq!(ending, Ending::BudgetTokens);
    assert_eq!(got.len(), 3);
}

#[tokio::test]
async fn wall_clock_ends_with_budget_wall_clock() {
    let b = git_harness::experiment::Budgets {
        wall_clock_sec: 1,
        ..small_budgets()
    };
    let (ending, _, _) = run_budget(
        b,
        vec![openai_bash("1", "sleep 3"), openai_bash("2", "true")],
    )
    .await;
    assert_eq!(ending, Ending::BudgetWallClock);
}

#[tokio::test]
async fn a_model_that_keeps_failing_ends_with_model_error() {
    let (ending, _, _) = run_budget(small_budgets(), vec![]).await;
    assert!(matches!(ending, Ending::ModelError { .. }), "{ending:?}");
    assert!(ending.is_infra());
}

#[tokio::test]
async fn three_replies_without_a_tool_call_end_with_format_errors() {
    let text = |s: &str| {
        Scripted::ok(
            serde_json::json!({"choices": [{"message": {"role": "assistant", "content": s}}]}),
        )
    };
    let (ending, got, _) = run_budget(
        small_budgets(),
        vec![text("hm"), text("hm"), text("hm"), text("hm")],
    )
    .await;
    assert_eq!(ending, Ending::FormatErrors);
    assert_eq!(got.len(), 3);
    let last_user = messages_of(&got[1], "user").last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(last_user.starts_with("[format] "), "{last_user}");
}

#[tokio::test]
async fn cancel_ends_with_cancelled() {
    let server = std::sync::Arc::new(
        StandIn::start(vec![openai_bash("1", "sleep 5"), openai_submit("2")]).await,
    );
    let h = harness("minimal", &[]);
    let sb = TestSandbox::new();
    let m = openai_model(&server.base_url, None);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut run = Run::new(&h);
    run.cancel = Some(rx);
    // Cancel once the model has asked for the long command, not after a guessed delay.
    let seen = server.clone();
    tokio::spawn(async move {
        while seen.received().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = tx.send(true);
    });
    let ep = run.episode("t", "x", &sb, &m).await;
    assert_eq!(ep.ending, Ending::Cancelled);
}

#[tokio::test]
async fn the_api_key_never_appears_in_a_written_trace() {
    const SECRET: &str = "sk-live-SECRET-0123456789abcdef";
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("GIT_HARNESS_TEST_KEY", SECRET) };
    let server = StandIn::start(vec![
        openai_bash(
            "1",
            "echo $GIT_HARNESS_TEST_KEY; echo sk-live-SECRET-0123456789abcdef",
        ),
        openai_submit("2"),
    ])
    .await;
    let cfg = ModelConfig {
        provider: Provider::Openai,
        name: "stand-in".into(),
        base_url: Some(server.base_url.clone()),
        api_key_env: Some("GIT_HARNESS_TEST_KEY".into()),
        scenario: None,
        timeout_sec: 5,
        max_retries: 0,
        concurrency: 2,
    };
    let root = fixtures();
    let conn = connect(&cfg, &ConnectContext::new(&root, None))
        .await
        .unwrap();
    let h = harness("minimal", &[]);
    let sb = TestSandbox::new();
    let ep = Run::new(&h)
        .episode("t", "x", &sb, conn.model.as_ref())
        .await;
    assert_eq!(ep.ending, Ending::Submitted);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.json");
    ep.trace.write(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(SECRET), "the key leaked into the trace");
    assert!(text.contains("[REDACTED]"));
    assert!(!text.to_lowercase().contains("authorization"));
    // The server did get it, as a bearer token.
    assert!(
        server.received()[0]
            .headers
            .iter()
            .any(|(k, v)| k == "authorization" && v.ends_with(SECRET))
    );

    // A missing key variable is a usage error naming the variable.
    let missing = ModelConfig {
        api_key_env: Some("GIT_HARNESS_TEST_NO_SUCH_KEY".into()),
        ..cfg
    };
    let err = connect(&missing, &ConnectContext::new(&root, None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), git_harness::error::Kind::Usage);
    assert!(err.hint().unwrap().contains("GIT_HARNESS_TEST_NO_SUCH_KEY"));
}

#[tokio::test]
async fn a_30_turn_trace_exports_to_atif_with_required_fields() {
    let suite = suite();
    let root = fixtures();
    let cfg = ModelConfig {
        provider: Provider::Sim,
        name: "sim".into(),
        base_url: None,
        api_key_env: None,
        scenario: Some("sim.yaml".into()),
        timeout_sec: 10,
        max_retries: 0,
        concurrency: 2,
    };
    let conn = connect(&cfg, &ConnectContext::new(&root, Some(&suite)))
        .await
        .unwrap();
    let task = suite.get("find-max").unwrap();
    let sb = TestSandbox::for_task(task);
    let h = harness("minimal", &[]);
    let mut run = Run::new(&h);
    run.budgets = git_harness::experiment::Budgets {
        max_turns: 30,
        max_tool_calls: 40,
        ..small_budgets()
    };
    let ep = run
        .episode(&task.id, &task.instruction, &sb, conn.model.as_ref())
        .await;
    assert_eq!(ep.ending, Ending::BudgetTurns);
    assert_eq!(ep.trace.totals.turns, 30);

    let dir = tempfile::tempdir().unwrap();
    let trace_path = dir.path().join("trace.json");
    ep.trace.write(&trace_path).unwrap();
    let size = std::fs::metadata(&trace_path).unwrap().len();
    eprintln!("30-turn trace: {size} bytes");
    assert!(size < 200_000, "trace of 30 turns is {size} bytes");
    // Replay answers the same conversation from the trace.
    let replay = git_harness::agent::replay::ReplayModel::from_path(&trace_path).unwrap();
    assert_eq!(replay.len(), 30);

    let out = dir.path().join("atif.json");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_git-harness"))
        .args(["export", "--atif"])
        .arg(&trace_path)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["schema_version"], "ATIF-v1.7");
    assert!(v["session_id"].as_str().is_some_and(|s| !s.is_empty()));
    for k in ["name", "version", "model_name", "tool_definitions"] {
        assert!(!v["agent"][k].is_null(), "agent.{k}");
    }
    let steps = v["steps"].as_array().unwrap();
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s["step_id"], i as u64 + 1);
        assert!(s["timestamp"].as_str().is_some());
        assert!(["system", "user", "agent"].contains(&s["source"].as_str().unwrap()));
        assert!(s.get("message").is_some());
        if s["source"] == "agent" {
            assert!(s["metrics"]["prompt_tokens"].is_u64());
            for c in s["tool_calls"].as_array().unwrap() {
                let id = c["tool_call_id"].as_str().unwrap();
                assert!(c["function_name"].is_string() && c["arguments"].is_object());
                let results = s["observation"]["results"].as_array().unwrap();
                assert!(
                    results
                        .iter()
                        .any(|r| r["source_call_id"] == id && r["content"].is_string())
                );
            }
        }
    }
    assert_eq!(steps.iter().filter(|s| s["source"] == "agent").count(), 30);
    let fm = &v["final_metrics"];
    for k in [
        "total_prompt_tokens",
        "total_completion_tokens",
        "total_cached_tokens",
        "total_cost_usd",
        "total_steps",
    ] {
        assert!(!fm[k].is_null(), "final_metrics.{k}");
    }
    assert_eq!(fm["total_steps"], steps.len() as u64);
}
