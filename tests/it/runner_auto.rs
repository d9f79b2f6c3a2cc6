//! The local runner does not pretend to run a task that needs an image: a Dockerfile step it
//! cannot reproduce is named with the remedy, as a setup problem (exit 125), not a broken task.
//! `runner.kind: auto` (the default of new repositories) runs such tasks in Docker and the rest
//! locally.

use std::path::PathBuf;
use std::process::Command;

use crate::support::loops::*;

fn suite() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tasks/image-steps")
}

fn harness(args: &[&str]) -> Out {
    output(Command::new(env!("CARGO_BIN_EXE_git-harness")).args(args))
}

/// The local and the Docker checks run one after the other: a bubblewrap sandbox binds the host's
/// directories while Docker mounts and unmounts container filesystems under them.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn the_local_runner_names_the_step_it_cannot_reproduce() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = suite();
    let out = harness(&["tasks", "check", s.to_str().unwrap(), "--runner", "local"]).code(125);
    assert!(out.stdout.contains("SETUP   needs-run"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("needs-run/environment/Dockerfile:4: `RUN echo 42 > /app/answer.txt`"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("--runner docker") && out.stdout.contains("runner.kind: auto"),
        "{}",
        out.stdout
    );
    // The other task is reproducible locally and passes.
    assert!(out.stdout.contains("ok      plain"), "{}", out.stdout);
    assert!(!out.stdout.contains("BROKEN"), "{}", out.stdout);
}

#[test]
fn auto_runs_image_tasks_in_docker_and_the_rest_locally() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !crate::support::sandbox::docker_engine_or_skip(
        "auto_runs_image_tasks_in_docker_and_the_rest_locally",
    ) {
        return;
    }
    let s = suite();
    let out = harness(&["tasks", "check", s.to_str().unwrap(), "--runner", "auto"]).ok();
    assert!(out.stdout.contains("ok      needs-run"), "{}", out.stdout);
    assert!(out.stdout.contains("ok      plain"), "{}", out.stdout);
}

#[test]
fn new_repositories_default_to_auto() {
    let repo = Repo::init("minimal");
    let exp = repo.read(".harness/experiment.yaml");
    assert!(exp.contains("  kind: auto"), "{exp}");
}
