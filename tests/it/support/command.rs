//! `protocol: command` harnesses: a repository whose harness is an agent program of
//! tests/fixtures/agents/, the OpenAI-compatible stand-in model it reaches through the gateway,
//! and readers of the trial it ran.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use super::repo::Repo;

/// The real API key: in the run's environment only, never in a sandbox or a stored object.
pub const KEY: &str = "sk-real-7d41c09be2a6f358";
pub const KEY_VAR: &str = "GIT_HARNESS_TEST_KEY";

/// A demo repository whose harness is the agent program `agent` (a file of
/// tests/fixtures/agents/, copied to `agent.py`) started as `PREFIX python3 agent.py` (`prefix`:
/// environment assignments), speaking `api` to the stand-in model at `base_url` (key in
/// [`KEY_VAR`]), with the `runner` settings and one trial.
pub fn command_repo_with(
    agent: &str,
    prefix: &str,
    api: &str,
    base_url: &str,
    runner: Value,
) -> Repo {
    let repo = Repo::demo();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/agents")
        .join(agent);
    std::fs::copy(&src, repo.root.join("agent.py")).unwrap();
    let manifest = format!(
        "name: command-agent\nprotocol: command\nagent:\n  command: {prefix} python3 $HARNESS_DIR/agent.py\n  api: {api}\nsurfaces:\n  - path: prompts/system.md\n    kind: prompt\n  - path: agent.py\n    kind: file\n    check: python3 -m py_compile {{}}\n"
    );
    std::fs::write(repo.root.join("harness.yaml"), manifest).unwrap();
    let path = repo.root.join(".harness/experiment.yaml");
    let mut exp: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    exp["model"] = json!({"provider": "openai", "name": "stub", "base_url": base_url,
                          "api_key_env": KEY_VAR, "timeout_sec": 30, "max_retries": 0});
    exp["runner"] = runner;
    exp["trials"] = json!(1);
    std::fs::write(&path, serde_yaml::to_string(&exp).unwrap()).unwrap();
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-qm", "Run an agent program as the harness"]);
    repo
}

/// What the stand-in reported: prompt and completion tokens summed, and the requests it saw.
#[derive(Default)]
pub struct Reported {
    pub prompt: u64,
    pub completion: u64,
    pub requests: Vec<Value>,
    /// The command of the first tool call.
    first_command: String,
    /// Answer every request with HTTP 500.
    pub down: bool,
}

/// An OpenAI-compatible stand-in: solves `word-count` in two tool calls, then says done.
pub fn serve() -> (String, Arc<Mutex<Reported>>) {
    serve_with("wc -w < input.txt > count.txt")
}

pub fn serve_with(first_command: &str) -> (String, Arc<Mutex<Reported>>) {
    let reported = Arc::new(Mutex::new(Reported {
        first_command: first_command.to_string(),
        ..Reported::default()
    }));
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(answer))
        .with_state(reported.clone());
    let server = crate::support::serve::start(app);
    let url = server.base_url();
    // The server lives as long as the test process, as each test holds its own.
    std::mem::forget(server);
    (url, reported)
}

async fn answer(
    State(r): State<Arc<Mutex<Reported>>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body: Value = serde_json::from_slice(&body).unwrap();
    let mut r = r.lock().unwrap();
    if r.down {
        r.requests.push(body);
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "upstream is down",
        )
            .into_response();
    }
    let n = r.requests.len();
    let observations = body["messages"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["role"] == "tool").count());
    r.requests.push(body);
    let (prompt, completion) = (100 + 10 * n as u64, 7 + n as u64);
    r.prompt += prompt;
    r.completion += completion;
    let call = |id: &str, name: &str, args: Value| {
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}}]})
    };
    let message = match observations {
        0 => call("c1", "bash", json!({"command": r.first_command})),
        1 => call("c2", "submit", json!({"summary": "done"})),
        _ => json!({"role": "assistant", "content": "done"}),
    };
    axum::Json(json!({
        "id": format!("s{n}"), "object": "chat.completion", "model": "stub",
        "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion}
    }))
    .into_response()
}

/// Run `word-count` once and return the run's stdout and the trial's trace.
pub fn run_word_count(repo: &Repo) -> (crate::support::hermetic::Out, Value) {
    let run = repo
        .harness_cmd(&["run", "--tasks", "word-count", "--split", "held_in"])
        .env(KEY_VAR, KEY)
        .output()
        .unwrap();
    let run = crate::support::hermetic::Out::from(run);
    let refs = repo.git(&["for-each-ref", "--format=%(refname)", "refs/harness/runs/"]);
    let run_ref = refs
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no run ref: {run:#?}"));
    let files = repo.git(&["ls-tree", "-r", "--name-only", run_ref]);
    let trace_path = files
        .lines()
        .find(|f| f.starts_with("traces/word-count/"))
        .unwrap_or_else(|| panic!("no trace in {files}: {run:#?}"));
    let trace = repo.git(&["show", &format!("{run_ref}:{trace_path}")]);
    (run, serde_json::from_str(&trace).unwrap())
}

/// No object of the repository and no file under `.git/harness/` holds the real key.
pub fn assert_key_stored_nowhere(repo: &Repo) {
    let objects = repo.git(&[
        "cat-file",
        "--batch-all-objects",
        "--batch-check=%(objectname)",
    ]);
    for id in objects.lines() {
        let content = repo.git(&["cat-file", "-p", id]);
        assert!(!content.contains(KEY), "object {id} holds the key");
    }
    for e in walk(&repo.root.join(".git/harness")) {
        let bytes = std::fs::read(&e).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(KEY),
            "{} holds the key",
            e.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

pub fn usage_of(trace: &Value) -> (u64, u64) {
    let u = &trace["totals"]["usage"];
    (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
    )
}

/// What a `word-count` trial of a command harness on the stand-in (see [`serve`]) shows when the
/// agent solved it through the gateway: the trial passed, two model calls whose tokens are the
/// record's and the agent's own sum, the gateway's token (redacted) in the agent's
/// environment and never the key, the tool call mined from the exchange, the key stored
/// nowhere.
pub fn assert_word_count_solved(
    repo: &Repo,
    run: &super::hermetic::Out,
    trace: &Value,
    reported: &Arc<Mutex<Reported>>,
) {
    assert_eq!(run.code, 0, "{run:#?}\n{trace:#}");
    let output = trace["command"]["output"].as_str().unwrap().to_string();
    let r = reported.lock().unwrap();
    assert_eq!(r.requests.len(), 2, "{output}");
    assert_eq!(usage_of(trace), (r.prompt, r.completion), "{output}");
    // The agent summed the usage the SDK gave it: the same figures.
    assert!(
        output.contains(&format!("USAGE {} {}", r.prompt, r.completion)),
        "{output}"
    );
    // The agent's environment holds the gateway token (redacted in the record), not the key.
    let env_line = output.lines().find(|l| l.starts_with("ENV ")).unwrap();
    assert!(env_line.contains("_API_KEY=[REDACTED]"), "{env_line}");
    assert!(!env_line.contains(KEY), "{env_line}");
    assert!(!r.requests.iter().any(|q| q.to_string().contains("ghs-")));
    // Mining reads the tool call and its observation from the recorded exchange.
    let tool = trace["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "tool_call")
        .unwrap_or_else(|| panic!("no tool call in {trace:#}"));
    assert_eq!(tool["tool"], "bash");
    assert_eq!(tool["command"], "wc -w < input.txt > count.txt");
    assert_eq!(tool["exit_code"], 0);
    assert_eq!(trace["protocol"], "command");
    assert!(
        run.stdout.contains("1/1") || run.stdout.contains("pass"),
        "{}",
        run.stdout
    );
    drop(r);
    assert_key_stored_nowhere(repo);
}
