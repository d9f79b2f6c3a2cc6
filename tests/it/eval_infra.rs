//! Infrastructure errors in evaluation runs: a stand-in OpenAI-compatible server on loopback
//! that fails one task's requests with 500 beyond the retry count. The trial is reported as an
//! infra error, left out of the pass rate, and never cached.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::support::eval::{executed, results, scores};
use crate::support::hermetic::Out;
use crate::support::repo::Repo;
use crate::support::serve::{self, Server};

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

/// Serve the stand-in on a loopback port (until the returned server is dropped).
fn stand_in() -> (Server, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(seen.clone());
    (serve::start(app), seen)
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
    let (stand_in, seen) = stand_in();
    use_stand_in(&repo, stand_in.addr);
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
    let text = repo
        .harness(&[
            "run", "--split", "held_in", "--tasks", &pattern, "--trials", "1",
        ])
        .ok()
        .stdout;
    assert!(text.contains("50.0%"), "{text}");
    assert!(text.contains("1 trials executed, 2 from cache"), "{text}");
}

#[test]
fn verbose_shows_the_model_retries() {
    let repo = Repo::demo();
    let (stand_in, _seen) = stand_in();
    use_stand_in(&repo, stand_in.addr);
    let args = ["run", "--tasks", BROKEN.0, "--trials", "1"];
    let quiet = repo.harness(&args);
    let quiet = quiet.stderr.clone();
    assert!(!quiet.contains("retrying model request"), "{quiet}");
    let verbose = repo.harness(&[&["-v"], &args[..]].concat());
    assert_eq!(Some(verbose.code), Some(125), "{verbose:?}");
    let stderr = verbose.stderr.clone();
    assert!(stderr.contains("retrying model request"), "{stderr}");
    assert!(stderr.contains("500"), "{stderr}");
}

#[test]
fn a_run_where_every_trial_is_an_infra_error_cannot_test() {
    let repo = Repo::demo();
    let (stand_in, _seen) = stand_in();
    use_stand_in(&repo, stand_in.addr);
    let out = repo.harness(&["run", "--tasks", BROKEN.0, "--trials", "1"]);
    // The `git bisect run` contract: 125 when the revision could not be tested.
    assert_eq!(Some(out.code), Some(125), "{out:?}");
    let stdout = out.stdout.clone();
    assert!(stdout.contains("0/0"), "{stdout}");
    // No countable trial is no data, not a pass rate of 0 %.
    assert!(stdout.contains("no data"), "{stdout}");
    assert!(!stdout.contains("0.0%"), "{stdout}");
    // The first error of its class is shown verbatim, with the settings to check.
    let stderr = out.stderr.clone();
    assert!(stderr.contains("upstream exploded"), "{stderr}");
    assert!(stderr.contains("model.base_url"), "{stderr}");
}

/// How the scripted stand-in answers agent requests right now.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Accept the request and never answer (the client's timeout gives up).
    Hang,
    /// 429 with `Retry-After: 1` for this many more requests, then `Solve`.
    RateLimited(u32),
    /// 401 with an OpenAI-style error body.
    Unauthorized,
    /// Solve word-count (bash, then submit); submit at once elsewhere.
    Solve,
}

const UNAUTHORIZED_BODY: &str = r#"{"error":{"message":"Incorrect API key provided: sk-wr***ng","type":"invalid_request_error","code":"invalid_api_key"}}"#;

#[derive(Clone)]
struct Scripted {
    mode: Arc<Mutex<Mode>>,
    requests: Arc<Mutex<u32>>,
}

async fn scripted_chat(State(s): State<Scripted>, body: String) -> Response {
    *s.requests.lock().unwrap() += 1;
    let mode = {
        let mut m = s.mode.lock().unwrap();
        let now = *m;
        if let Mode::RateLimited(n) = now {
            *m = if n <= 1 {
                Mode::Solve
            } else {
                Mode::RateLimited(n - 1)
            };
        }
        now
    };
    match mode {
        Mode::Hang => {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            (StatusCode::GATEWAY_TIMEOUT, "too late").into_response()
        }
        Mode::RateLimited(_) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        )
            .into_response(),
        Mode::Unauthorized => (StatusCode::UNAUTHORIZED, UNAUTHORIZED_BODY).into_response(),
        Mode::Solve => chat(State(Seen::default()), body).await,
    }
}

fn scripted(mode: Mode) -> (Server, Scripted) {
    let state = Scripted {
        mode: Arc::new(Mutex::new(mode)),
        requests: Arc::default(),
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(scripted_chat))
        .with_state(state.clone());
    (serve::start(app), state)
}

/// Point the experiment at `base_url` with a short wall clock, a 1 s client timeout and
/// `retries` retries, no trial-level infra retry, and commit it.
fn use_endpoint(repo: &Repo, base_url: &str, wall_clock_sec: u64, retries: u32) {
    let path = repo.root.join(".harness/experiment.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("model:\n").expect("model section");
    let end = text.find("decoding:\n").expect("decoding section");
    let model = format!(
        "model:\n  provider: openai\n  name: stand-in\n  base_url: {base_url}\n  \
         timeout_sec: 1\n  max_retries: {retries}\n  concurrency: 4\n"
    );
    let text = format!("{}{model}{}", &text[..start], &text[end..])
        .replace(
            "wall_clock_sec: 900",
            &format!("wall_clock_sec: {wall_clock_sec}"),
        )
        .replace("infra_retries: 1", "infra_retries: 0");
    std::fs::write(&path, text).unwrap();
    repo.git(&["commit", "-q", "-am", "Evaluate with the stand-in model"]);
}

fn json_of(out: &Out) -> Value {
    let text = out.stdout.clone();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("json: {e}\n{text}\n{out:?}"))
}

#[test]
fn a_model_api_hanging_past_the_wall_clock_is_infra_and_a_rerun_after_recovery_passes() {
    let repo = Repo::demo();
    let (stand_in, server) = scripted(Mode::Hang);
    // Two 1 s attempts and a backoff take longer than the 2 s budget.
    use_endpoint(&repo, &stand_in.base_url(), 2, 2);
    let args = [
        "run", "--split", "held_in", "--tasks", SOLVED.0, "--trials", "1", "--format", "json",
    ];
    let out = repo.harness(&args);
    assert_eq!(Some(out.code), Some(125), "{out:?}");
    let first = json_of(&out);
    let r = &results(&first)[0];
    assert_eq!(r["outcome"], "infra-error", "{r:#}");
    assert_eq!(r["infra"], "model", "{r:#}");
    assert!(r["cache_key"].is_null(), "{r:#}");
    assert!(r["error"].as_str().unwrap().contains("timed out"), "{r:#}");

    // The API recovers: the trial is executed again (not served from a cache) and passes.
    *server.mode.lock().unwrap() = Mode::Solve;
    let second = repo.run_json(&args[1..args.len() - 2]);
    assert_eq!(executed(&second), 1, "{second:#}");
    let r = &results(&second)[0];
    assert_eq!(r["outcome"], "pass", "{r:#}");
    assert!(r["cached_from"].is_null(), "{r:#}");
}

#[test]
fn time_spent_waiting_out_rate_limits_is_not_charged_to_the_agent() {
    let repo = Repo::demo();
    // Three 429s with Retry-After: 1 s keep the first call waiting past the 2 s budget.
    let (stand_in, server) = scripted(Mode::RateLimited(3));
    use_endpoint(&repo, &stand_in.base_url(), 2, 4);
    let first = repo.run_json(&["--split", "held_in", "--tasks", SOLVED.0, "--trials", "1"]);
    let r = &results(&first)[0];
    assert_eq!(r["outcome"], "pass", "{r:#}");
    assert_eq!(r["ending"], "submitted", "{r:#}");
    assert!(*server.requests.lock().unwrap() >= 5);
}

/// Stderr of `out`, for assertions.
fn stderr(out: &Out) -> String {
    out.stderr.clone()
}

#[test]
fn a_closed_port_stops_the_run_early_with_the_error_and_a_hint() {
    let repo = Repo::demo();
    let port = serve::free_port();
    use_endpoint(&repo, &format!("http://127.0.0.1:{port}/v1"), 60, 1);
    let out = repo.harness(&[
        "run",
        "--tasks",
        crate::support::eval::FOUR,
        "--trials",
        "4",
    ]);
    assert_eq!(Some(out.code), Some(125), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains("Connection refused"), "{err}");
    assert!(err.contains("model.base_url"), "{err}");
    assert!(err.contains("3 trials in a row"), "{err}");
    // Stopped early: far fewer than the 32 planned trials were journaled.
    let journaled: usize = repo.journal_lines().iter().map(|(_, n)| *n).sum();
    assert!(journaled < 12, "{journaled} trials ran\n{err}");
    assert!(repo.runs().is_empty(), "an all-failing run is no evidence");
}

#[test]
fn a_401_stops_run_and_evolve_with_the_servers_error_verbatim() {
    let repo = Repo::demo();
    let (stand_in, server) = scripted(Mode::Unauthorized);
    use_endpoint(&repo, &stand_in.base_url(), 60, 1);
    let out = repo.harness(&[
        "run",
        "--tasks",
        crate::support::eval::FOUR,
        "--trials",
        "4",
    ]);
    assert_eq!(Some(out.code), Some(125), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains(UNAUTHORIZED_BODY), "{err}");
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(err.contains("model.api_key_env"), "{err}");
    // 16 trials were planned; a 401 is not retried and the breaker stopped the rest.
    let requests = *server.requests.lock().unwrap();
    assert!(requests <= 8, "{requests} requests");

    let out = repo.harness(&["evolve", "--rounds", "1"]);
    assert_eq!(Some(out.code), Some(125), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains(UNAUTHORIZED_BODY), "{err}");
    assert!(err.contains("model.api_key_env"), "{err}");
    assert!(
        repo.git(&["branch", "--list", "harness/proposals/*"])
            .is_empty()
    );
}

#[test]
fn a_broken_harness_file_is_refused_before_any_trial_naming_file_line_and_field() {
    let repo = Repo::demo();
    let cases: [(&str, &[u8], &str); 4] = [
        (
            "prompts/system.md",
            b"You solve tasks.\nThe task: \xff\xfe\n",
            "prompts/system.md:2: (file): is not UTF-8 text",
        ),
        (
            "prompts/system.md",
            b"You solve tasks.\n\nThe task: {{ instruction \n",
            "prompts/system.md:3: (template)",
        ),
        (
            "tools/bash.yaml",
            b"name: bash\ndescription: Run a command.\nparameters: [unclosed\n",
            "tools/bash.yaml:",
        ),
        (
            "middleware/runtime_control.yaml",
            b"rules:\n  - name: nudge\n    on: nowhere\n    action: inject\n    message: hi\n",
            "middleware/runtime_control.yaml:",
        ),
    ];
    for (file, bytes, said) in cases {
        std::fs::write(repo.root.join(file), bytes).unwrap();
        repo.git(&["commit", "-q", "-am", "Break a harness file"]);
        let out = repo.harness(&["run", "--tasks", SOLVED.0, "--trials", "1"]);
        let err = out.stderr.clone();
        assert_eq!(Some(out.code), Some(2), "{file}: {out:?}");
        assert!(err.contains(said), "`{said}` not in:\n{err}");
        let line = err.lines().find(|l| l.contains(file)).unwrap();
        let rest = &line[line.find(file).unwrap() + file.len()..];
        assert!(
            rest.starts_with(':') && rest[1..].starts_with(|c: char| c.is_ascii_digit()),
            "no line number: {line}"
        );
        // Nothing was written: no run, no journal, no note.
        assert!(repo.runs().is_empty(), "{file}");
        assert!(repo.journal_lines().is_empty(), "{file}");
        repo.git(&["reset", "-q", "--hard", "HEAD~1"]);
    }
}

#[test]
fn evolve_exits_125_when_a_rounds_validation_is_all_infrastructure_errors() {
    let repo = Repo::demo();
    let (stand_in, server) = scripted(Mode::Solve);
    use_endpoint(&repo, &stand_in.base_url(), 60, 0);
    // Without the breaker, every trial of the validation runs into the dead API.
    let path = repo.root.join(".harness/experiment.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("infra_breaker: 3", "infra_breaker: 0")
        .replace("\ntrials: 2\n", "\ntrials: 1\n");
    std::fs::write(&path, text).unwrap();
    repo.git(&["commit", "-q", "-am", "One trial, no breaker"]);
    // Held-in evidence exists (from the cache), then the API dies.
    repo.run_json(&["--split", "held_in"]);
    *server.mode.lock().unwrap() = Mode::Unauthorized;
    let out = repo.harness(&["evolve", "--rounds", "1", "--proposer", "catalog"]);
    assert_eq!(Some(out.code), Some(125), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains("no evidence"), "{err}");
    assert!(err.contains(UNAUTHORIZED_BODY), "{err}");
}
