//! `runner.image_map` patterns as a real suite needs them: `*` as the default, prefix patterns
//! (`python:3.13*`), exact names winning over prefixes, from `tasks check --image-map`,
//! `init --image-map` and `run --image-map` without editing YAML.

use std::path::Path;
use std::process::Command;

use crate::support::loops::*;

const BASE: &str = "git-harness/base:bookworm";

fn harness(args: &[&str]) -> Out {
    output(Command::new(env!("CARGO_BIN_EXE_git-harness")).args(args))
}

/// A task laid out like TB2's: its Dockerfile starts FROM `from` (an image this machine lacks).
fn task(suite: &Path, id: &str, from: &str) {
    let d = suite.join(id);
    std::fs::create_dir_all(d.join("environment")).unwrap();
    std::fs::create_dir_all(d.join("tests")).unwrap();
    std::fs::create_dir_all(d.join("solution")).unwrap();
    std::fs::write(d.join("instruction.md"), "Write ok to /app/out.txt.\n").unwrap();
    std::fs::write(
        d.join("task.toml"),
        "[environment]\nworkdir = \"/app\"\nnetwork_mode = \"no-network\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("environment/Dockerfile"),
        format!("FROM {from}\nWORKDIR /app\n"),
    )
    .unwrap();
    std::fs::write(d.join("solution/solve.sh"), "echo ok > /app/out.txt\n").unwrap();
    std::fs::write(
        d.join("tests/test.sh"),
        "#!/bin/bash\nmkdir -p /logs/verifier\n\
         if grep -qx ok /app/out.txt; then echo 1; else echo 0; fi > /logs/verifier/reward.txt\n",
    )
    .unwrap();
}

#[test]
fn default_and_prefix_patterns_map_every_from_and_exact_names_win() {
    if !crate::support::sandbox::docker_engine_or_skip(
        "default_and_prefix_patterns_map_every_from_and_exact_names_win",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("suite");
    task(&suite, "on-ubuntu", "ubuntu:24.04");
    task(&suite, "on-python", "python:3.13-slim-bookworm");
    let s = suite.to_str().unwrap();

    // Unmapped, the FROM images are missing: a setup problem.
    let out = harness(&["tasks", "check", s, "--runner", "docker"]).code(125);
    assert!(out.stdout.contains("ubuntu:24.04"), "{}", out.stdout);

    // `*` maps both names.
    let default = format!("*={BASE}");
    let out = harness(&[
        "tasks",
        "check",
        s,
        "--runner",
        "docker",
        "--image-map",
        &default,
    ])
    .ok();
    assert!(out.stdout.contains("ok      on-ubuntu"), "{}", out.stdout);
    assert!(out.stdout.contains("ok      on-python"), "{}", out.stdout);

    // A longer prefix beats `*`, an exact name beats the prefix: the python task now names the
    // image the exact key chose (absent here), while ubuntu still falls to `*`.
    let out = harness(&[
        "tasks",
        "check",
        s,
        "--runner",
        "docker",
        "--image-map",
        &default,
        "--image-map",
        "python:3.13*=git-harness/absent-prefix:1",
        "--image-map",
        "python:3.13-slim-bookworm=git-harness/absent-exact:1",
    ])
    .code(125);
    assert!(out.stdout.contains("ok      on-ubuntu"), "{}", out.stdout);
    assert!(
        out.stdout.contains("git-harness/absent-exact:1"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("git-harness/absent-prefix:1"),
        "{}",
        out.stdout
    );
}

#[test]
fn init_writes_runner_and_patterns_into_the_experiment() {
    let tmp = tempfile::tempdir().unwrap();
    let out = harness_in(
        tmp.path(),
        &[
            "init",
            "h",
            "--runner",
            "docker",
            "--image-map",
            "*=local/base",
            "--image-map",
            "python:3.13*=local/py",
        ],
    )
    .ok();
    assert!(out.stdout.contains("Created"), "{}", out.stdout);
    let exp = std::fs::read_to_string(tmp.path().join("h/.harness/experiment.yaml")).unwrap();
    let v: serde_yaml::Value = serde_yaml::from_str(&exp).unwrap();
    assert_eq!(v["runner"]["kind"].as_str(), Some("docker"), "{exp}");
    assert_eq!(
        v["runner"]["image_map"]["*"].as_str(),
        Some("local/base"),
        "{exp}"
    );
    assert_eq!(
        v["runner"]["image_map"]["python:3.13*"].as_str(),
        Some("local/py"),
        "{exp}"
    );
    // The template's comments stay.
    assert!(exp.contains("# auto (Docker for tasks"), "{exp}");
    // The committed experiment is the one every command reads.
    harness_in(&tmp.path().join("h"), &["status"]).ok();
}

#[test]
fn misplaced_stars_are_refused_where_they_are_written() {
    let tmp = tempfile::tempdir().unwrap();
    let out = harness_in(
        tmp.path(),
        &["init", "h", "--image-map", "py*thon=local/py"],
    )
    .code(2);
    assert!(out.stderr.contains("py*thon"), "{}", out.stderr);
    assert!(!tmp.path().join("h/.harness").exists());

    let repo = Repo::init("minimal");
    repo.edit_experiment(|t| {
        t.replace(
            "  concurrency: 4\n",
            "  concurrency: 4\n  image_map:\n    \"ghcr.io/*/x\": local/x\n",
        )
    });
    let out = repo.harness(&["status"]).code(2);
    assert!(
        out.stderr.contains("runner.image_map") && out.stderr.contains("experiment.yaml"),
        "{}",
        out.stderr
    );
}

#[test]
fn run_image_map_enters_the_fingerprint() {
    let repo = Repo::small("minimal");
    let run = |args: &[&str]| {
        let mut a = vec![
            "run",
            "--agent",
            "oracle",
            "--tasks",
            "word-count",
            "--trials",
            "1",
        ];
        a.extend_from_slice(args);
        repo.harness(&a).ok();
    };
    run(&[]);
    run(&["--image-map", "*=local/base"]);
    let fps: std::collections::BTreeSet<String> = repo
        .runs()
        .iter()
        .map(|id| {
            repo.run_yaml(id)["fingerprint"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        fps.len(),
        2,
        "a different image map is a different experiment: {fps:?}"
    );
}
