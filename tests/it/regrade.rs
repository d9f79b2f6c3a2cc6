//! `git harness regrade`: a run made with `--keep-workspace` is re-scored after its verifier
//! changed, on bubblewrap and on the Docker engine, with no model call (a stand-in OpenAI
//! server on loopback counts them); the source run is left as it was; a run without kept
//! workspaces is refused with the remedy.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use crate::support::loops::*;
use crate::support::serve;

const BASE: &str = "git-harness/base:bookworm";

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn bwrap_or_skip(test: &str) -> bool {
    let ok = git_harness::sandbox::local::bwrap_available();
    if !ok {
        assert!(!in_ci(), "{test}: bubblewrap is required in CI");
        eprintln!("SKIPPED {test}: bubblewrap is not available");
    }
    ok
}

fn docker_or_skip(test: &str) -> bool {
    let ok = Command::new("docker")
        .args(["image", "inspect", BASE])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !in_ci(),
            "{test}: a Docker engine with {BASE} is required in CI"
        );
        eprintln!("SKIPPED {test}: no Docker engine with {BASE}");
    }
    ok
}

/// A stand-in model: the first turn of a conversation writes `hello` to out.txt, the next one
/// submits. Every request is counted.
fn model() -> (serve::Server, Arc<AtomicUsize>) {
    async fn chat(State(n): State<Arc<AtomicUsize>>, body: axum::Json<Value>) -> axum::Json<Value> {
        n.fetch_add(1, Ordering::SeqCst);
        let acted = body["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
        let (name, args) = if acted {
            ("submit", json!({"summary": "done"}))
        } else {
            ("bash", json!({"command": "echo hello > out.txt"}))
        };
        axum::Json(json!({
            "id": "x", "object": "chat.completion", "model": "stand-in",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "c", "type": "function",
                    "function": {"name": name, "arguments": args.to_string()}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5}
        }))
    }
    let n = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(n.clone());
    (serve::start(app), n)
}

/// The verifier: reward 1 when out.txt holds exactly `word`.
fn verifier(word: &str) -> String {
    format!(
        "#!/bin/bash\nmkdir -p /logs/verifier\n\
         if grep -qx {word} /app/out.txt; then echo 1; else echo 0; fi > /logs/verifier/reward.txt\n"
    )
}

/// Three tasks asking for `hello` in out.txt (one per split); with `docker`, each has a
/// Dockerfile on the base image.
fn suite(dir: &Path, docker: bool) {
    for id in ["hello-a", "hello-b", "hello-c"] {
        let d = dir.join(id);
        for sub in ["environment", "tests", "solution"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("instruction.md"), "Write hello to out.txt.\n").unwrap();
        std::fs::write(
            d.join("task.toml"),
            "[environment]\nworkdir = \"/app\"\nnetwork_mode = \"no-network\"\n",
        )
        .unwrap();
        if docker {
            std::fs::write(
                d.join("environment/Dockerfile"),
                format!("FROM {BASE}\nWORKDIR /app\n"),
            )
            .unwrap();
        }
        std::fs::write(d.join("tests/test.sh"), verifier("hello")).unwrap();
        std::fs::write(d.join("solution/solve.sh"), "echo hello > /app/out.txt\n").unwrap();
    }
}

/// A harness repository on `suite` with the stand-in model and `runner`.
fn repo(tmp: &Path, base_url: &str, runner: &str) -> Repo {
    harness_in(tmp, &["init", "h", "--suite", "suite"]).ok();
    let repo = Repo::open(tmp.join("h"));
    repo.edit_experiment(|t| {
        t.replace(
            "  provider: unset\n  name: unset\n",
            &format!(
                "  provider: openai\n  name: stand-in\n  base_url: {base_url}\n  api_key_env: REGRADE_TEST_KEY\n"
            ),
        )
        .replace("kind: auto ", &format!("kind: {runner} "))
        .replace("infra_retries: 1", "infra_retries: 0")
    });
    repo.splits(&["hello-a"], &["hello-b"], &["hello-c"]);
    repo
}

fn json(out: &Out) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("json: {e}\n{out:?}"))
}

fn regrade_flips_verdicts(runner: &str) {
    let tmp = tempfile::tempdir().unwrap();
    suite(&tmp.path().join("suite"), runner == "docker");
    let (server, calls) = model();
    let repo = repo(tmp.path(), &server.base_url(), runner);
    let run = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_git-harness"));
        c.args(args)
            .current_dir(&repo.root)
            .env("REGRADE_TEST_KEY", "k");
        output(&mut c)
    };

    let first = run(&[
        "run",
        "--split",
        "held_in",
        "--trials",
        "2",
        "--keep-workspace",
    ])
    .ok();
    assert!(
        first.stdout.contains("kept 2 final workspace(s)"),
        "{}",
        first.stdout
    );
    let source = first.stdout.split_whitespace().nth(1).unwrap().to_string();
    let before = repo.results(&source);
    assert!(before.iter().all(|r| r["outcome"] == "pass"), "{before:#?}");
    assert!(
        before
            .iter()
            .all(|r| r["workspace_bytes"].as_u64() > Some(0)),
        "{before:#?}"
    );
    let source_commit = repo.rev(&format!("refs/harness/runs/{source}"));
    let model_calls = calls.load(Ordering::SeqCst);
    assert!(model_calls >= 2, "the agent asked the model");

    // The verifier now wants another word: both trials flip, and the model is never asked.
    std::fs::write(
        tmp.path().join("suite/hello-a/tests/test.sh"),
        verifier("goodbye"),
    )
    .unwrap();
    let out = run(&["regrade", &source, "--format", "json"]).ok();
    let v = json(&out);
    assert_eq!(calls.load(Ordering::SeqCst), model_calls, "no model call");
    let changes = v["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{v:#}");
    assert!(
        changes
            .iter()
            .all(|c| c["before"] == "pass" && c["after"] == "fail"),
        "{v:#}"
    );
    let new = v["run"].as_str().unwrap();
    assert_ne!(new, source);
    let yaml = repo.run_yaml(new);
    assert_eq!(yaml["regraded_from"].as_str(), Some(source.as_str()));
    assert_ne!(
        yaml["fingerprint"],
        repo.run_yaml(&source)["fingerprint"],
        "the new task checksum makes a new fingerprint"
    );
    let after = repo.results(new);
    assert!(
        after.iter().all(|r| r["outcome"] == "fail"
            && r["verifier"]["reward"] == 0.0
            && r["cached_from"] == source.as_str()),
        "{after:#?}"
    );
    // The source run is as it was.
    assert_eq!(
        repo.rev(&format!("refs/harness/runs/{source}")),
        source_commit
    );
    assert_eq!(repo.results(&source), before);

    // `--suite` reads the verifiers from another suite: the original ones pass again.
    let orig = tmp.path().join("orig");
    suite(&orig, runner == "docker");
    let back = run(&[
        "regrade",
        &source,
        "--suite",
        orig.to_str().unwrap(),
        "--format",
        "json",
    ])
    .ok();
    let v = json(&back);
    assert!(
        v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["after"] == "pass"),
        "{v:#}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), model_calls, "no model call");
}

#[test]
fn bwrap_regrade_flips_verdicts_after_the_verifier_changed_without_a_model_call() {
    if !bwrap_or_skip(
        "bwrap_regrade_flips_verdicts_after_the_verifier_changed_without_a_model_call",
    ) {
        return;
    }
    regrade_flips_verdicts("local");
}

#[test]
fn docker_regrade_flips_verdicts_after_the_verifier_changed_without_a_model_call() {
    if !docker_or_skip(
        "docker_regrade_flips_verdicts_after_the_verifier_changed_without_a_model_call",
    ) {
        return;
    }
    regrade_flips_verdicts("docker");
}

#[test]
fn regrade_of_a_run_without_kept_workspaces_is_refused_with_the_remedy() {
    if !bwrap_or_skip("regrade_of_a_run_without_kept_workspaces_is_refused_with_the_remedy") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    suite(&tmp.path().join("suite"), false);
    let (server, _calls) = model();
    let repo = repo(tmp.path(), &server.base_url(), "local");
    let mut c = Command::new(env!("CARGO_BIN_EXE_git-harness"));
    c.args(["run", "--split", "held_in", "--trials", "1"])
        .current_dir(&repo.root)
        .env("REGRADE_TEST_KEY", "k");
    let first = output(&mut c).ok();
    assert!(!first.stdout.contains("kept"), "{}", first.stdout);
    let source = first.stdout.split_whitespace().nth(1).unwrap().to_string();
    let runs = repo.runs();

    let out = repo.harness(&["regrade", &source]).code(2);
    assert!(
        out.stderr
            .contains(&format!("run {source} has no trial with a kept workspace")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--keep-workspace"), "{}", out.stderr);
    assert_eq!(repo.runs(), runs, "nothing recorded");

    // Asking to keep workspaces of trials the cache answers says it cannot.
    let mut c = Command::new(env!("CARGO_BIN_EXE_git-harness"));
    c.args([
        "run",
        "--split",
        "held_in",
        "--trials",
        "1",
        "--keep-workspace",
    ])
    .current_dir(&repo.root)
    .env("REGRADE_TEST_KEY", "k");
    let cached = output(&mut c).ok();
    assert!(
        cached
            .stderr
            .contains("1 trial(s) came from the cache of runs that kept no workspace"),
        "{}",
        cached.stderr
    );

    let out = repo.harness(&["regrade", "no-such-run"]).code(2);
    assert!(
        out.stderr.contains("no run `no-such-run`"),
        "{}",
        out.stderr
    );
}
