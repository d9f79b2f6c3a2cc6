//! `git harness image verifier`: a suite laid out like Terminal-Bench 2 (tasks written for this
//! test in tests/fixtures/tb2-like: FROM `ubuntu:24.04` / `python:3.13-slim-bookworm`, a
//! `test.sh` that installs curl and uv and runs `uvx -p 3.13 -w pytest==8.4.1 -w
//! pytest-json-ctrf==0.3.5 pytest --ctrf ...` as TB2's do) passes `tasks check --runner docker`
//! with no network once its images are mapped with `*` to the verifier image, its files
//! unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::loops::*;

const BASE: &str = "git-harness/base:bookworm";
const VERIFIER: &str = "git-harness/verifier:bookworm";

fn harness(args: &[&str]) -> Out {
    output(Command::new(env!("CARGO_BIN_EXE_git-harness")).args(args))
}

/// A Docker engine with the base image; required in CI, a loud skip elsewhere.
fn docker_or_skip(test: &str) -> bool {
    let ok = Command::new("docker")
        .args(["image", "inspect", BASE])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: a Docker engine with {BASE} is required in CI"
        );
        eprintln!("SKIPPED {test}: no Docker engine with {BASE}");
    }
    ok
}

fn suite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tb2-like")
}

/// Every file of the suite with its bytes, to show that nothing was edited.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn tb2_style_suite_passes_offline_on_the_verifier_image_unchanged() {
    if !docker_or_skip("tb2_style_suite_passes_offline_on_the_verifier_image_unchanged") {
        return;
    }
    let built = harness(&["image", "verifier"]).ok();
    assert!(built.stdout.contains(VERIFIER), "{}", built.stdout);
    let before = snapshot(&suite());
    let map = format!("*={VERIFIER}");
    let s = suite();
    // No network in any phase: the verifier's apt-get and curl fail as they would air-gapped.
    let out = harness(&[
        "tasks",
        "check",
        s.to_str().unwrap(),
        "--runner",
        "docker",
        "--image-map",
        &map,
        "--agent-network",
        "none",
        "--verifier-network",
        "none",
    ])
    .ok();
    assert!(out.stdout.contains("ok      count-words"), "{}", out.stdout);
    assert!(out.stdout.contains("ok      json-keys"), "{}", out.stdout);
    assert_eq!(
        before,
        snapshot(&suite()),
        "the tasks keep their files byte for byte"
    );
}

#[test]
fn verifier_image_has_python_uv_and_names_what_it_lacks() {
    if !docker_or_skip("verifier_image_has_python_uv_and_names_what_it_lacks") {
        return;
    }
    harness(&["image", "verifier"]).ok();
    let run = |script: &str| {
        output(Command::new("docker").args([
            "run",
            "--rm",
            "--network",
            "none",
            "--label",
            "git-harness.test=verifier-image",
            VERIFIER,
            "bash",
            "-c",
            script,
        ]))
    };
    let out = run(
        "python --version && curl -LsSf https://astral.sh/uv/0.9.5/install.sh | sh && \
         source $HOME/.local/bin/env && uv --version && \
         uvx -w pytest==8.4.1 pytest --version 2>&1",
    )
    .ok();
    assert!(out.stdout.contains("Python 3"), "{}", out.stdout);
    assert!(out.stdout.contains("pytest 8.4.1"), "{}", out.stdout);
    // A package the image lacks: an error that names the remedy, never a download.
    let out = run("uvx -w pytest==7.0.0 pytest --version");
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("pytest==7.0.0 is not in this image")
            && out
                .stderr
                .contains("git harness image verifier --with pytest==7.0.0"),
        "{}",
        out.stderr
    );
}
