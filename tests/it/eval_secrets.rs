//! Secrets are never stored: a stand-in model that echoes its API key (in its text, in a tool
//! argument, JSON-escaped in the raw arguments, in a proposal's file and rationale) leaves the
//! key in no git object and no file under `.git/harness/`.

use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use serde_json::{Value, json};

use crate::support::propose::{Out, Repo, output, proposal};

const KEY: &str = "sk-test-4f9c2e7a1b8d6035";
const KEY_VAR: &str = "GIT_HARNESS_TEST_KEY";

/// The key with every character as a JSON `\uXXXX` escape.
fn escaped() -> String {
    KEY.chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect()
}

fn reply(message: Value) -> axum::Json<Value> {
    axum::Json(json!({
        "id": "x", "object": "chat.completion", "model": "stub",
        "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1}
    }))
}

async fn handle(
    State(execution): State<Arc<Mutex<String>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::Json<Value> {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("no key")
        .to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let has_tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    if !has_tools {
        let content = format!("{}Never print the key {key}.\n", execution.lock().unwrap());
        let prompt = body["messages"][0]["content"].as_str().unwrap_or_default();
        let cluster = regex::Regex::new(r"cluster `([^`]+)`")
            .unwrap()
            .captures(prompt)
            .map(|c| c[1].to_string())
            .unwrap_or_default();
        let answer = proposal("Keep keys out of outputs", "prompts/execution.md", &content)
            .replace("{CLUSTER}", &cluster)
            .replace("Low.", &format!("Low; the key {key} stays private."));
        return reply(json!({"role": "assistant", "content": answer}));
    }
    let acted = body["messages"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
    let (name, args) = if acted {
        (
            "submit",
            json!({"summary": format!("done with {key}")}).to_string(),
        )
    } else {
        // Raw argument text with the key once JSON-escaped and once literal.
        (
            "bash",
            format!(
                r#"{{"command": "echo {} > echoed.txt; echo {key}"}}"#,
                escaped()
            ),
        )
    };
    reply(json!({
        "role": "assistant",
        "content": format!("My key is {key}."),
        "tool_calls": [{"id": "call-1", "type": "function",
            "function": {"name": name, "arguments": args}}]
    }))
}

/// The stand-in server; it lives as long as the test process (each test holds its own).
fn serve(execution: String) -> String {
    let state = Arc::new(Mutex::new(execution));
    let app = Router::new()
        .route("/v1/chat/completions", post(handle))
        .with_state(state);
    let server = crate::support::serve::start(app);
    let url = server.base_url();
    std::mem::forget(server);
    url
}

fn harness(repo: &Repo, args: &[&str]) -> Out {
    output(
        Command::new(env!("CARGO_BIN_EXE_git-harness"))
            .args(args)
            .env(KEY_VAR, KEY)
            .current_dir(&repo.root),
    )
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn an_echoed_api_key_is_stored_nowhere() {
    let repo = Repo::init("minimal");
    repo.small_splits();
    let base_url = serve(repo.read("prompts/execution.md"));
    repo.use_openai_model(&base_url);
    let exp = repo.read(".harness/experiment.yaml").replace(
        "  name: stub\n",
        &format!("  name: stub\n  api_key_env: {KEY_VAR}\n"),
    );
    repo.write(".harness/experiment.yaml", &exp);
    repo.commit_all("Use a key");

    harness(&repo, &["run", "--split", "held_in", "--trials", "1"]).ok();
    harness(&repo, &["mine"]).ok();
    let out = harness(&repo, &["propose", "--proposer", "model", "-n", "1"]).ok();
    assert!(out.stdout.contains("1 proposal(s)"), "{}", out.stdout);
    let branch = repo.proposal_branches().pop().expect("a proposal branch");
    let proposed = repo.git(&["rev-parse", &branch]);
    let v = harness(&repo, &["validate", &branch]);
    assert!([0, 1, 3].contains(&v.code), "{v:?}");

    // Every object, reachable or not.
    let objects = Command::new("git")
        .args(["cat-file", "--batch-all-objects", "--batch"])
        .current_dir(&repo.root)
        .output()
        .unwrap();
    assert!(objects.status.success());
    let all = String::from_utf8_lossy(&objects.stdout);
    assert!(
        all.contains("[REDACTED]"),
        "the key was echoed and redacted"
    );
    assert!(!all.contains(KEY), "the key is in a git object");
    assert!(
        !all.contains(&escaped()),
        "the escaped key is in a git object"
    );
    // The proposal kept its edit, without the key.
    let edited = repo.git(&["show", &format!("{}:prompts/execution.md", proposed.trim())]);
    assert!(
        edited.contains("Never print the key [REDACTED]."),
        "{edited}"
    );

    let mut files = Vec::new();
    files_under(&repo.root.join(".git/harness"), &mut files);
    assert!(!files.is_empty());
    for f in files {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(!text.contains(KEY), "the key is in {}", f.display());
        assert!(
            !text.contains(&escaped()),
            "the escaped key is in {}",
            f.display()
        );
    }
}
