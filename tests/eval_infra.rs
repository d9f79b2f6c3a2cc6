//! Infrastructure errors in evaluation runs: a stand-in OpenAI-compatible server on loopback
//! that fails one task's requests with 500 beyond the retry count. The trial is reported as an
//! infra error, left out of the pass rate, and never cached.

mod common_eval;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use common_eval::{Repo, executed, results, scores};

/// The broken task: every request about it gets a 500.
const BROKEN: (&str, &str) = ("word-frequency", "most frequent words");
/// The task the stand-in solves: one bash call, then submit.
const SOLVED: (&str, &str) = ("word-count", "Count the words in `input.txt`");
/// Every other task: the stand-in submits at once (and fails the verifier).
const SUBMITTED: &str = "sort-scores";

type Seen = Arc<Mutex<BTreeMap<String, u32>>>;

fn call(name: &str, args: Value) -> Value {
    json!({
        "id": "stand-in", "object": "chat.completion", "model": "stand-in",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null,
            "tool_calls": [{"id": "call-1", "type": "function",
                "function": {"name": name, "arguments": args.to_string()}}]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10}
    })
}

async fn chat(State(seen): State<Seen>, body: String) -> Response {
    let task = if body.contains(BROKEN.1) {
        BROKEN.0
    } else if body.contains(SOLVED.1) {
        SOLVED.0
    } else {
        "other"
    };
    *seen.lock().unwrap().entry(task.to_string()).or_default() += 1;
    if task == BROKEN.0 {
        return (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response();
    }
    let v: Value = serde_json::from_str(&body).expect("json request");
    let acted = v["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .any(|m| m["role"] == "tool");
    let reply = if task == SOLVED.0 && !acted {
        call("bash", json!({"command": "wc -w < input.txt > count.txt"}))
    } else {
        call("submit", json!({"summary": "done"}))
    };
    axum::Json(reply).into_response()
}

/// Serve the stand-in on a loopback port from its own thread and runtime.
fn stand_in() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let state = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let app = Router::new()
                .route("/v1/chat/completions", post(chat))
                .with_state(state);
            axum::serve(listener, app).await.expect("serve");
        });
    });
    (addr, seen)
}

/// Point the repository's experiment at the stand-in (fast retries) and commit it.
fn use_stand_in(repo: &Repo, addr: SocketAddr) {
    let path = repo.root.join(".harness/experiment.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("model:\n").expect("model section");
    let end = text.find("decoding:\n").expect("decoding section");
    let model = format!(
        "model:\n  provider: openai\n  name: stand-in\n  base_url: http://{addr}/v1\n  \
         timeout_sec: 5\n  max_retries: 1\n  concurrency: 4\n"
    );
    let text = format!("{}{model}{}", &text[..start], &text[end..]);
    std::fs::write(&path, text).unwrap();
    repo.git(&["commit", "-q", "-am", "Evaluate with the stand-in model"]);
}

#[test]
fn a_model_that_keeps_failing_is_an_infra_error_excluded_and_not_cached() {
    let repo = Repo::demo();
    let (addr, seen) = stand_in();
    use_stand_in(&repo, addr);
    let pattern = format!("{{{},{},{SUBMITTED}}}", BROKEN.0, SOLVED.0);
    let args = ["--split", "held_in", "--tasks", &pattern, "--trials", "1"];

    let first = repo.run_json(&args);
    assert_eq!(executed(&first), 3, "{first:#}");
    let by_task: BTreeMap<&str, &Value> = results(&first)
        .iter()
        .map(|r| (r["task"].as_str().unwrap(), r))
        .collect();
    let broken = by_task[BROKEN.0];
    assert_eq!(broken["outcome"], "infra-error", "{broken:#}");
    assert_eq!(broken["infra"], "model", "{broken:#}");
    assert!(
        broken["error"].as_str().unwrap().contains("500"),
        "{broken:#}"
    );
    assert!(broken["cache_key"].is_null(), "{broken:#}");
    assert_eq!(
        by_task[SOLVED.0]["outcome"], "pass",
        "{:#}",
        by_task[SOLVED.0]
    );
    assert_eq!(by_task[SUBMITTED]["outcome"], "fail");
    // One pass out of two counted trials: the infra error is not an agent failure.
    assert_eq!(
        scores(&first),
        BTreeMap::from([("held_in".to_string(), (1, 2, 1))])
    );
    // Each trial attempt (1 + infra_retries = 2) made 1 + max_retries = 2 requests.
    assert_eq!(seen.lock().unwrap()[BROKEN.0], 4);
    let note = repo.note("HEAD");
    assert_eq!(note["runs"][0]["infra_errors"].as_u64(), Some(1));
    assert_eq!(note["runs"][0]["trials"].as_u64(), Some(2));

    // The second run reuses the two real outcomes and tries the broken trial again.
    let second = repo.run_json(&args);
    assert_eq!(executed(&second), 1, "{second:#}");
    assert_eq!(scores(&second), scores(&first));
    for r in results(&second) {
        let infra = r["task"] == BROKEN.0;
        assert_eq!(r["cached_from"].is_null(), infra, "{r:#}");
    }
    assert_eq!(seen.lock().unwrap()[BROKEN.0], 8);

    // The text table shows the infra error apart from the pass rate.
    let text = repo.ok(&[
        "run", "--split", "held_in", "--tasks", &pattern, "--trials", "1",
    ]);
    assert!(text.contains("50.0%"), "{text}");
    assert!(text.contains("1 trials executed, 2 from cache"), "{text}");
}

#[test]
fn a_run_where_every_trial_is_an_infra_error_cannot_test() {
    let repo = Repo::demo();
    let (addr, _seen) = stand_in();
    use_stand_in(&repo, addr);
    let out = repo.harness(&["run", "--tasks", BROKEN.0, "--trials", "1"]);
    // The `git bisect run` contract: 125 when the revision could not be tested.
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("0/0"), "{stdout}");
}
