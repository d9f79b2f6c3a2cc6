//! `runner.pull`: images a task names that are not local are pulled through the daemon, from a
//! real registry on loopback (Debian's `docker-registry`, started here on a free port and
//! stopped by pid). dockerd allows plain HTTP to 127.0.0.0/8 registries by default.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::loops::*;

const BASE: &str = "git-harness/base:bookworm";
const REGISTRY: &str = "/usr/bin/docker-registry";

fn harness(args: &[&str]) -> Out {
    output(Command::new(env!("CARGO_BIN_EXE_git-harness")).args(args))
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker").args(args).output().unwrap()
}

/// A Docker engine and the registry program; required in CI, a loud skip elsewhere.
fn components_or_skip(test: &str) -> bool {
    let engine = docker(&["info"]).status.success();
    let registry = Path::new(REGISTRY).exists();
    if !(engine && registry) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: a Docker engine and {REGISTRY} (apt-get install docker-registry) are required in CI"
        );
        eprintln!("SKIPPED {test}: no Docker engine, or no {REGISTRY}");
    }
    engine && registry
}

use crate::support::registry::Registry;

/// Push the base image to the registry as `name` and remove the local tag.
fn push_as(name: &str) {
    assert!(docker(&["tag", BASE, name]).status.success());
    let push = docker(&["push", name]);
    assert!(
        push.status.success(),
        "push {name}: {}",
        String::from_utf8_lossy(&push.stderr)
    );
    assert!(docker(&["rmi", name]).status.success());
}

fn present(name: &str) -> bool {
    docker(&["image", "inspect", name]).status.success()
}

/// A Harbor task that runs on `image` (its `docker_image`) or builds FROM it.
fn task(suite: &Path, id: &str, image: &str, dockerfile: bool) -> PathBuf {
    let d = suite.join(id);
    std::fs::create_dir_all(d.join("environment")).unwrap();
    std::fs::create_dir_all(d.join("tests")).unwrap();
    std::fs::create_dir_all(d.join("solution")).unwrap();
    std::fs::write(d.join("instruction.md"), "Write ok to /app/out.txt.\n").unwrap();
    let toml = if dockerfile {
        std::fs::write(
            d.join("environment/Dockerfile"),
            format!("FROM {image}\nWORKDIR /app\n"),
        )
        .unwrap();
        "[environment]\nnetwork_mode = \"no-network\"\n".to_string()
    } else {
        format!("[environment]\ndocker_image = \"{image}\"\nnetwork_mode = \"no-network\"\n")
    };
    std::fs::write(d.join("task.toml"), toml).unwrap();
    std::fs::write(
        d.join("solution/solve.sh"),
        "mkdir -p /app && echo ok > /app/out.txt\n",
    )
    .unwrap();
    std::fs::write(
        d.join("tests/test.sh"),
        "#!/bin/bash\nmkdir -p /logs/verifier\n\
         if grep -qx ok /app/out.txt; then echo 1; else echo 0; fi > /logs/verifier/reward.txt\n",
    )
    .unwrap();
    d
}

#[test]
fn missing_images_are_pulled_from_a_loopback_registry_and_never_refuses() {
    let test = "missing_images_are_pulled_from_a_loopback_registry_and_never_refuses";
    if !components_or_skip(test) {
        return;
    }
    let reg = Registry::start();
    let tag = format!("{:08x}", rand::random::<u32>());
    let image = format!("127.0.0.1:{}/git-harness-test/run:{tag}", reg.port);
    let from = format!("127.0.0.1:{}/git-harness-test/from:{tag}", reg.port);
    push_as(&image);
    push_as(&from);
    assert!(!present(&image) && !present(&from));

    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("suite");
    task(&suite, "on-image", &image, false);
    task(&suite, "from-image", &from, true);
    let s = suite.to_str().unwrap();
    let check = |pull: &str| harness(&["tasks", "check", s, "--runner", "docker", "--pull", pull]);

    // never: today's refusal, naming the policy and the remedy.
    let out = check("never").code(125);
    assert!(out.stdout.contains(&image), "{}", out.stdout);
    assert!(out.stdout.contains(&from), "{}", out.stdout);
    assert!(
        out.stdout.contains("runner.pull is never"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("set runner.pull: missing"),
        "{}",
        out.stdout
    );
    assert!(!present(&image) && !present(&from));

    // missing: both are pulled (with progress), and the oracle passes on them.
    let out = check("missing").ok();
    assert!(out.stdout.contains("ok      on-image"), "{}", out.stdout);
    assert!(out.stdout.contains("ok      from-image"), "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!("pulling {image}")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("pulling {from}")),
        "{}",
        out.stderr
    );
    assert!(present(&image) && present(&from));

    // missing again: present now, nothing is pulled.
    let out = check("missing").ok();
    assert!(!out.stderr.contains("pulling"), "{}", out.stderr);

    // always: pulled although present.
    let out = check("always").ok();
    assert!(out.stdout.contains("ok      on-image"), "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!("pulling {image}")),
        "{}",
        out.stderr
    );

    // always, with the registry gone: the pull fails as a setup problem with a hint.
    drop(reg);
    let out = check("always").code(125);
    assert!(
        out.stdout.contains(&format!("pull {image}")),
        "{}",
        out.stdout
    );

    let _ = docker(&["rmi", &image, &from]);
}
