//! The OpenAI provider against a stand-in Chat Completions server on loopback.

use std::time::{Duration, Instant};

use crate::support::agent::*;
use git_harness::agent::Ending;
use git_harness::model::openai::OpenAiModel;
use git_harness::model::{
    ChatRequest, Decoding, Message, Model, ModelError, RetryPolicy, Role, ToolSpec,
};
use serde_json::json;

fn request(tools: bool) -> ChatRequest {
    ChatRequest {
        messages: vec![
            Message::text(Role::System, "sys"),
            Message::text(Role::User, "hi"),
        ],
        tools: if tools {
            vec![ToolSpec {
                name: "bash".into(),
                description: "run".into(),
                parameters: json!({"type": "object"}),
            }]
        } else {
            Vec::new()
        },
        decoding: Decoding {
            temperature: 0.2,
            max_tokens: 99,
        },
        seed: Some(42),
    }
}

fn model(url: &str, retries: u32, timeout: u64) -> OpenAiModel {
    let policy = RetryPolicy {
        max_retries: retries,
        timeout: Duration::from_secs(timeout),
        base_delay: Duration::from_millis(50),
        ..Default::default()
    };
    OpenAiModel::new(url, "m", Some("sk-test-secret-123456".into()), policy).unwrap()
}

#[tokio::test]
async fn a_tool_call_turn_sends_seed_decoding_tools_and_key() {
    let server = StandIn::start(vec![openai_bash("c1", "ls")]).await;
    let r = model(&server.base_url, 0, 5)
        .chat(&request(true))
        .await
        .unwrap();
    assert_eq!(r.tool_calls.len(), 1);
    assert_eq!(r.tool_calls[0].name, "bash");
    assert_eq!(r.tool_calls[0].arguments, r#"{"command":"ls"}"#);
    assert_eq!(r.usage.prompt_tokens, 100);
    let got = &server.received()[0];
    assert_eq!(got.body["seed"], 42);
    assert_eq!(got.body["temperature"], 0.2);
    assert_eq!(got.body["max_tokens"], 99);
    assert_eq!(got.body["tools"][0]["function"]["name"], "bash");
    assert!(
        got.headers
            .iter()
            .any(|(k, v)| k == "authorization" && v == "Bearer sk-test-secret-123456")
    );
}

#[tokio::test]
async fn tools_are_omitted_when_empty() {
    let server = StandIn::start(vec![openai_submit("c1")]).await;
    model(&server.base_url, 0, 5)
        .chat(&request(false))
        .await
        .unwrap();
    assert!(server.received()[0].body.get("tools").is_none());
}

#[tokio::test]
async fn tolerates_null_content_object_arguments_and_missing_usage() {
    let body = json!({"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "bash", "arguments": {"command": "pwd"}}}]}}]});
    let server = StandIn::start(vec![Scripted::ok(body)]).await;
    let r = model(&server.base_url, 0, 5)
        .chat(&request(true))
        .await
        .unwrap();
    assert_eq!(r.content, None);
    let args: serde_json::Value = serde_json::from_str(&r.tool_calls[0].arguments).unwrap();
    assert_eq!(args, json!({"command": "pwd"}));
    assert_eq!(r.usage.prompt_tokens, 0);
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_then_succeeds() {
    let server = StandIn::start(vec![
        Scripted::status(429, json!({"error": "slow down"})).header("retry-after", "1"),
        openai_submit("c1"),
    ])
    .await;
    let start = Instant::now();
    let r = model(&server.base_url, 2, 5)
        .chat(&request(true))
        .await
        .unwrap();
    assert_eq!(r.tool_calls[0].name, "submit");
    let got = server.received();
    assert_eq!(got.len(), 2);
    assert!(
        got[1].at.duration_since(got[0].at) >= Duration::from_millis(950),
        "Retry-After honoured"
    );
    assert!(start.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn a_500_is_retried_then_succeeds() {
    let server = StandIn::start(vec![
        Scripted::status(500, json!({"error": "boom"})),
        openai_submit("c1"),
    ])
    .await;
    let r = model(&server.base_url, 1, 5)
        .chat(&request(true))
        .await
        .unwrap();
    assert_eq!(r.tool_calls[0].name, "submit");
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn a_400_is_not_retried() {
    let server = StandIn::start(vec![
        Scripted::status(400, json!({"error": "bad"})),
        openai_submit("c1"),
    ])
    .await;
    let e = model(&server.base_url, 3, 5)
        .chat(&request(true))
        .await
        .unwrap_err();
    assert!(matches!(e, ModelError::Http { status: 400, .. }), "{e}");
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn a_hung_response_hits_the_timeout() {
    let server = StandIn::start(vec![openai_submit("c1").delay(Duration::from_secs(30))]).await;
    let start = Instant::now();
    let e = model(&server.base_url, 0, 1)
        .chat(&request(true))
        .await
        .unwrap_err();
    assert!(matches!(e, ModelError::Timeout(1)), "{e}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn malformed_tool_call_json_goes_back_to_the_model_and_a_stream_of_turns_ends_in_submit() {
    let server = StandIn::start(vec![
        openai_call("c1", "bash", r#"{"command": "echo hi"#),
        openai_bash("c2", "echo hi > out.txt"),
        openai_call("c3", "write_file", r#"{"path": "b.txt", "content": "x"}"#),
        openai_submit("c4"),
    ])
    .await;
    let h = harness("minimal", &[]);
    let sb = TestSandbox::new();
    let m = openai_model(&server.base_url, Some("sk-test-secret-123456"));
    let ep = Run::new(&h).episode("t", "Write out.txt.", &sb, &m).await;
    assert_eq!(ep.ending, Ending::Submitted);
    let got = server.received();
    assert_eq!(got.len(), 4);
    let err = last_tool_result(&got[1]);
    assert!(
        err.starts_with("error: invalid arguments for `bash`"),
        "{err}"
    );
    assert!(last_tool_result(&got[2]).starts_with("exit code: 0"));
    assert_eq!(
        std::fs::read_to_string(sb.work.join("out.txt")).unwrap(),
        "hi\n"
    );
    assert_eq!(ep.trace.totals.turns, 4);
    assert_eq!(ep.usage.prompt_tokens, 400);
    assert!(ep.cost_usd > 0.0);
}
