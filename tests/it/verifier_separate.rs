//! Harbor's `[verifier] environment_mode = "separate"`: the verifier runs in a fresh sandbox with
//! only the declared artifacts copied over from the agent's, under bubblewrap and Docker.

use std::sync::Arc;

use crate::support::sandbox::*;
use git_harness::eval::VerifyOptions;
use git_harness::eval::builtin::{BuiltinAgent, check_tasks, run_trial};
use git_harness::sandbox::SandboxProvider;
use git_harness::task::{self, Task};

fn separate(id: &str) -> Task {
    let suite = task::load_suite(&fixtures().join("separate")).expect("fixture suite loads");
    suite.get(id).expect("fixture task").clone()
}

#[test]
fn separate_mode_and_artifacts_are_read_from_task_toml() {
    let t = separate("artifacts");
    assert_eq!(
        t.artifacts,
        vec!["answer.txt".to_string(), "out".to_string()]
    );
    let env = t
        .verifier_environment
        .expect("separate verifier environment");
    assert_eq!(env.workdir, "/app");
    assert_eq!(env.memory_mb, Some(512));
}

/// The mode and the artifacts are part of what the checksum covers: a task that changes either
/// is another task.
#[test]
fn checksum_covers_mode_and_artifacts() {
    let t = separate("artifacts");
    let toml = std::fs::read_to_string(t.dir.join("task.toml")).expect("task.toml");
    for edited in [
        toml.replace(
            "environment_mode = \"separate\"",
            "environment_mode = \"shared\"",
        ),
        toml.replace("[\"answer.txt\", \"out\"]", "[\"answer.txt\"]"),
    ] {
        assert_ne!(edited, toml);
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("artifacts");
        copy(&t.dir, &dir);
        std::fs::write(dir.join("task.toml"), edited).expect("write task.toml");
        let other = task::load_task(&dir).expect("edited task loads");
        assert_ne!(other.checksum, t.checksum);
    }
}

fn copy(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read_dir") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).expect("copy");
        }
    }
}

/// Oracle passes only if the artifacts arrive and the agent's other marks do not; nop fails;
/// `tasks check` accepts the task.
async fn artifacts_only(provider: Arc<dyn SandboxProvider>) {
    let t = separate("artifacts");
    let opts = VerifyOptions::default();
    let oracle = run_trial(provider.as_ref(), &t, BuiltinAgent::Oracle, &opts)
        .await
        .expect("oracle trial runs");
    assert!(
        oracle.verifier.passed,
        "oracle must pass in a separate verifier: {}",
        oracle.verifier.output_tail
    );
    let nop = run_trial(provider.as_ref(), &t, BuiltinAgent::Nop, &opts)
        .await
        .expect("nop trial runs");
    assert!(!nop.verifier.passed, "nop must fail");
    assert_eq!(nop.verifier.reward, 0.0);
    let checks = check_tasks(provider, std::slice::from_ref(&t), 2, &opts).await;
    assert!(checks[0].oracle.as_ref().is_ok_and(|r| r.verifier.passed));
    assert!(checks[0].nop.as_ref().is_ok_and(|r| !r.verifier.passed));
}

/// A forged reward and a fake `bash` first on PATH in the agent's sandbox change nothing: the
/// trial is an ordinary failure with reward 0, not an infrastructure error.
async fn forgery_cannot_reach_the_verifier(provider: Arc<dyn SandboxProvider>) {
    let t = separate("forged");
    let r = run_trial(
        provider.as_ref(),
        &t,
        BuiltinAgent::Oracle,
        &VerifyOptions::default(),
    )
    .await
    .expect("a forging agent is a failed trial, not infra");
    assert!(
        !r.verifier.passed,
        "forgery must not pass: {}",
        r.verifier.output_tail
    );
    assert_eq!(r.verifier.reward, 0.0);
    assert!(
        r.verifier.output_tail.contains("test_answer"),
        "{}",
        r.verifier.output_tail
    );
}

#[tokio::test]
async fn local_separate_verifier_sees_only_artifacts() {
    if !bwrap_or_skip("local_separate_verifier_sees_only_artifacts") {
        return;
    }
    artifacts_only(local(true)).await;
}

#[tokio::test]
async fn local_separate_verifier_ignores_forgery() {
    if !bwrap_or_skip("local_separate_verifier_ignores_forgery") {
        return;
    }
    forgery_cannot_reach_the_verifier(local(true)).await;
}

#[tokio::test]
async fn docker_separate_verifier_sees_only_artifacts() {
    let Some(p) = docker_or_skip("docker_separate_verifier_sees_only_artifacts").await else {
        return;
    };
    artifacts_only(p).await;
}

#[tokio::test]
async fn docker_separate_verifier_ignores_forgery() {
    let Some(p) = docker_or_skip("docker_separate_verifier_ignores_forgery").await else {
        return;
    };
    forgery_cannot_reach_the_verifier(p).await;
}
