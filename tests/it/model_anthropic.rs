//! The Anthropic provider against a stand-in Messages server on loopback.

use std::time::{Duration, Instant};

use crate::support::agent::*;
use git_harness::agent::Ending;
use git_harness::model::anthropic::AnthropicModel;
use git_harness::model::{
    ChatRequest, Decoding, Message, Model, ModelError, RetryPolicy, Role, ToolCall, ToolSpec,
};
use serde_json::json;

fn model(url: &str, retries: u32, timeout: u64) -> AnthropicModel {
    let policy = RetryPolicy {
        max_retries: retries,
        timeout: Duration::from_secs(timeout),
        base_delay: Duration::from_millis(50),
        ..Default::default()
    };
    AnthropicModel::new(
        url,
        "claude-test",
        Some("ak-test-secret-abcdef".into()),
        policy,
    )
    .unwrap()
}

fn conversation() -> ChatRequest {
    let mut assistant = Message::text(Role::Assistant, "looking");
    assistant.tool_calls = vec![ToolCall {
        id: "toolu_1".into(),
        name: "bash".into(),
        arguments: r#"{"command":"ls"}"#.into(),
    }];
    let mut result = Message::text(Role::Tool, "exit code: 0\na.txt");
    result.tool_call_id = Some("toolu_1".into());
    ChatRequest {
        messages: vec![
            Message::text(Role::System, "be brief"),
            Message::text(Role::User, "task"),
            assistant,
            result,
            Message::text(Role::User, "[harness] note"),
        ],
        tools: vec![ToolSpec {
            name: "bash".into(),
            description: "run".into(),
            parameters: json!({"type": "object"}),
        }],
        decoding: Decoding {
            temperature: 0.0,
            max_tokens: 64,
        },
        seed: Some(1),
    }
}

#[tokio::test]
async fn a_tool_use_turn_maps_system_blocks_and_headers() {
    let server = StandIn::start(vec![anthropic_call(
        "toolu_2",
        "bash",
        json!({"command": "pwd"}),
    )])
    .await;
    let r = model(&server.base_url, 0, 5)
        .chat(&conversation())
        .await
        .unwrap();
    assert_eq!(r.tool_calls[0].id, "toolu_2");
    assert_eq!(r.tool_calls[0].arguments, r#"{"command":"pwd"}"#);
    assert_eq!(r.content.as_deref(), Some("ok"));
    assert_eq!(r.usage.prompt_tokens, 50);
    let got = &server.received()[0];
    assert_eq!(got.body["system"], "be brief");
    let msgs = got.body["messages"].as_array().unwrap();
    assert_eq!(
        msgs.len(),
        3,
        "user, assistant, user (tool_result + note merged): {msgs:?}"
    );
    assert_eq!(msgs[1]["content"][1]["type"], "tool_use");
    assert_eq!(msgs[1]["content"][1]["input"]["command"], "ls");
    assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
    assert_eq!(msgs[2]["content"][0]["tool_use_id"], "toolu_1");
    assert_eq!(got.body["tools"][0]["input_schema"]["type"], "object");
    let h = |k: &str| {
        got.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(h("x-api-key").as_deref(), Some("ak-test-secret-abcdef"));
    assert_eq!(h("anthropic-version").as_deref(), Some("2023-06-01"));
}

#[tokio::test]
async fn a_429_with_retry_after_then_success() {
    let server = StandIn::start(vec![
        Scripted::status(429, json!({"type": "error"})).header("retry-after", "1"),
        anthropic_call("t", "submit", json!({})),
    ])
    .await;
    let r = model(&server.base_url, 1, 5)
        .chat(&conversation())
        .await
        .unwrap();
    assert_eq!(r.tool_calls[0].name, "submit");
    let got = server.received();
    assert!(got[1].at.duration_since(got[0].at) >= Duration::from_millis(950));
}

#[tokio::test]
async fn a_500_then_success() {
    let server = StandIn::start(vec![
        Scripted::status(529, json!({"type": "overloaded"})),
        anthropic_call("t", "submit", json!({})),
    ])
    .await;
    model(&server.base_url, 1, 5)
        .chat(&conversation())
        .await
        .unwrap();
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn a_hung_response_hits_the_timeout() {
    let server = StandIn::start(vec![
        anthropic_call("t", "submit", json!({})).delay(Duration::from_secs(30)),
    ])
    .await;
    let start = Instant::now();
    let e = model(&server.base_url, 0, 1)
        .chat(&conversation())
        .await
        .unwrap_err();
    assert!(matches!(e, ModelError::Timeout(1)), "{e}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn malformed_input_goes_back_as_a_tool_error_and_turns_end_in_submit() {
    let server = StandIn::start(vec![
        // `input` as a string that is not JSON: the runtime must answer with a tool error.
        anthropic_call("t1", "bash", json!("{not json")),
        anthropic_call("t2", "bash", json!({"command": "echo ok"})),
        anthropic_call("t3", "submit", json!({"summary": "done"})),
    ])
    .await;
    let h = harness("minimal", &[]);
    let sb = TestSandbox::new();
    let m = model(&server.base_url, 0, 5);
    let ep = Run::new(&h).episode("t", "Say ok.", &sb, &m).await;
    assert_eq!(ep.ending, Ending::Submitted);
    let got = server.received();
    let second = got[1].body["messages"].as_array().unwrap();
    let result = second.last().unwrap()["content"][0].clone();
    assert_eq!(result["type"], "tool_result");
    assert!(
        result["content"]
            .as_str()
            .unwrap()
            .contains("invalid arguments"),
        "{result}"
    );
    assert!(ep.trace.model.starts_with("anthropic/"));
}
