//! `tasks check` tells setup from task: a verifier that needs the network it does not have and
//! a verifier whose interpreter is missing are setup problems (`SETUP`, exit 125, with the
//! remedy), a wrong answer is a broken task (`BROKEN`, exit 1); every task's line carries its
//! time. On bubblewrap, where a `no-network` phase has only its own loopback.

use std::path::Path;
use std::process::Command;

use crate::support::loops::*;

fn harness(args: &[&str]) -> Out {
    output(Command::new(env!("CARGO_BIN_EXE_git-harness")).args(args))
}

fn bwrap_or_skip(test: &str) -> bool {
    let ok = git_harness::sandbox::local::bwrap_available();
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: bubblewrap is required in CI"
        );
        eprintln!("SKIPPED {test}: bubblewrap is not available");
    }
    ok
}

/// A task whose verifier runs `verify` (reward 1 when it succeeds and the answer is right).
fn task(suite: &Path, id: &str, toml: &str, solve: &str, verify: &str) {
    let d = suite.join(id);
    for sub in ["tests", "solution"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::write(d.join("instruction.md"), "Write 4 to /app/out.txt.\n").unwrap();
    std::fs::write(d.join("task.toml"), toml).unwrap();
    std::fs::write(d.join("solution/solve.sh"), solve).unwrap();
    std::fs::write(
        d.join("tests/test.sh"),
        format!(
            "#!/bin/bash\nmkdir -p /logs/verifier\n{verify}\n\
             if [ $? -eq 0 ] && grep -qx 4 /app/out.txt; then echo 1; else echo 0; fi > /logs/verifier/reward.txt\n"
        ),
    )
    .unwrap();
}

const VERIFIER_OFFLINE: &str =
    "[environment]\nworkdir = \"/app\"\n[verifier]\nnetwork_mode = \"no-network\"\n";
const OFFLINE: &str = "[environment]\nworkdir = \"/app\"\nnetwork_mode = \"no-network\"\n";

fn check(suite: &Path) -> Out {
    harness(&[
        "tasks",
        "check",
        suite.to_str().unwrap(),
        "--runner",
        "local",
        "--bwrap",
    ])
}

/// The time of a task's line: `ok      id  (1.2s)`.
fn has_time(stdout: &str, id: &str) -> bool {
    stdout.lines().any(|l| {
        l.contains(id)
            && l.trim_end().ends_with("s)")
            && l.rsplit('(')
                .next()
                .is_some_and(|t| t.trim_end_matches("s)").parse::<f64>().is_ok())
    })
}

#[test]
fn verifier_without_the_network_it_needs_is_a_setup_problem() {
    if !bwrap_or_skip("verifier_without_the_network_it_needs_is_a_setup_problem") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("suite");
    // The verifier downloads a tool; its phase has no network (nothing is sent anywhere).
    task(
        &suite,
        "downloads",
        VERIFIER_OFFLINE,
        "echo 4 > /app/out.txt\n",
        "curl -sSf https://pypi.org/simple/pytest/ -o /dev/null",
    );
    let out = check(&suite).code(125);
    assert!(out.stdout.contains("SETUP   downloads"), "{}", out.stdout);
    assert!(
        out.stdout.contains("the verifier needs the network")
            && out.stdout.contains("git harness image verifier"),
        "{}",
        out.stdout
    );
    assert!(has_time(&out.stdout, "downloads"), "{}", out.stdout);
}

#[test]
fn missing_interpreter_is_a_setup_problem_and_a_wrong_answer_a_broken_task() {
    if !bwrap_or_skip("missing_interpreter_is_a_setup_problem_and_a_wrong_answer_a_broken_task") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("suite");
    task(
        &suite,
        "needs-python",
        OFFLINE,
        "echo 4 > /app/out.txt\n",
        "python3.99 -c 'print(1)'",
    );
    let out = check(&suite).code(125);
    assert!(
        out.stdout.contains("SETUP   needs-python"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("runs `python3.99`, which this image lacks"),
        "{}",
        out.stdout
    );

    // A wrong reference answer is the task's own fault: broken, exit 1, whatever else there is.
    task(&suite, "wrong", OFFLINE, "echo 5 > /app/out.txt\n", "true");
    let out = check(&suite).code(1);
    assert!(out.stdout.contains("BROKEN  wrong"), "{}", out.stdout);
    assert!(
        out.stdout.contains("SETUP   needs-python"),
        "{}",
        out.stdout
    );
    assert!(has_time(&out.stdout, "wrong"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("2 tasks checked, 1 broken, 1 could not be tried here"),
        "{}",
        out.stdout
    );
}
