//! Network per phase with Harbor's meaning: `[environment]` / `[agent]` / `[verifier]`
//! `network_mode` (`public` by default, `no-network`), and the experiment's
//! `runner.agent_network` / `runner.verifier_network` (`task | none`, here through `tasks check
//! --agent-network / --verifier-network`), on bubblewrap and on the Docker engine.

use std::path::Path;
use std::process::Command;

use crate::support::loops::*;
use crate::support::sandbox::{bwrap_or_skip, docker_engine_or_skip as docker_or_skip};
use crate::support::serve::{self, Server};

fn harness(args: &[&str]) -> Out {
    output(Command::new(env!("CARGO_BIN_EXE_git-harness")).args(args))
}

/// An HTTP server on the host's loopback that answers `pong` (until it is dropped).
fn pong_server() -> Server {
    serve::start(axum::Router::new().route("/", axum::routing::get(|| async { "pong\n" })))
}

/// bash's /dev/tcp: no curl needed in the sandbox.
fn fetch(port: u16) -> String {
    format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
    )
}

/// A Harbor task with `toml` as its task.toml; the oracle runs `solve`, the verifier `verify`
/// (a command that succeeds for reward 1).
fn task(suite: &Path, id: &str, toml: &str, solve: &str, verify: &str, docker: bool) {
    let d = suite.join(id);
    for sub in ["environment", "tests", "solution"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::write(d.join("instruction.md"), "Write ok to /app/out.txt.\n").unwrap();
    std::fs::write(d.join("task.toml"), toml).unwrap();
    if docker {
        std::fs::write(
            d.join("environment/Dockerfile"),
            format!(
                "FROM {}\nWORKDIR /app\n",
                git_harness::sandbox::image::BASE_IMAGE
            ),
        )
        .unwrap();
    }
    std::fs::write(d.join("solution/solve.sh"), solve).unwrap();
    std::fs::write(
        d.join("tests/test.sh"),
        format!(
            "#!/bin/bash\nmkdir -p /logs/verifier\n\
             if ( {verify} ) && grep -q ok /app/out.txt; then echo 1; else echo 0; fi > /logs/verifier/reward.txt\n"
        ),
    )
    .unwrap();
}

const PUBLIC: &str = "[environment]\nworkdir = \"/app\"\n";
const VERIFIER_OFFLINE: &str =
    "[environment]\nworkdir = \"/app\"\n[verifier]\nnetwork_mode = \"no-network\"\n";
const OFFLINE: &str = "[environment]\nworkdir = \"/app\"\nnetwork_mode = \"no-network\"\n";
const AGENT_ONLY: &str = "[environment]\nworkdir = \"/app\"\nnetwork_mode = \"no-network\"\n\
                          [agent]\nnetwork_mode = \"public\"\n";

fn check(suite: &Path, runner: &str, extra: &[&str]) -> Out {
    let s = suite.to_str().unwrap();
    let mut args = vec!["tasks", "check", s, "--runner", runner];
    if runner == "local" {
        args.push("--bwrap");
    }
    args.extend_from_slice(extra);
    harness(&args)
}

#[test]
fn bwrap_verifier_reaches_a_loopback_server_under_public_and_not_under_no_network() {
    if !bwrap_or_skip(
        "bwrap_verifier_reaches_a_loopback_server_under_public_and_not_under_no_network",
    ) {
        return;
    }
    let pong = pong_server();
    let port = pong.addr.port();
    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("suite");
    let verify = format!("{} | grep -q pong", fetch(port));
    let solve = "echo ok > /app/out.txt\n";
    // Harbor's default is `public`: no network_mode at all.
    task(&suite, "default-public", PUBLIC, solve, &verify, false);
    check(&suite, "local", &[]).ok();

    // The same verifier with `[verifier] network_mode = "no-network"` cannot reach it.
    std::fs::remove_dir_all(&suite).unwrap();
    task(
        &suite,
        "verifier-offline",
        VERIFIER_OFFLINE,
        solve,
        &verify,
        false,
    );
    let out = check(&suite, "local", &[]);
    assert_ne!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("verifier-offline"), "{}", out.stdout);

    // Pinned by the experiment: a public task's verifier goes offline too.
    std::fs::remove_dir_all(&suite).unwrap();
    task(&suite, "pinned", PUBLIC, solve, &verify, false);
    let out = check(&suite, "local", &["--verifier-network", "none"]);
    assert_ne!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
}

#[test]
fn bwrap_agent_phase_has_no_network_under_agent_network_none() {
    if !bwrap_or_skip("bwrap_agent_phase_has_no_network_under_agent_network_none") {
        return;
    }
    let pong = pong_server();
    let port = pong.addr.port();
    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("suite");
    // The oracle (the agent phase) fetches; the verifier only reads the file, offline.
    let solve = format!("{} | grep -q pong && echo ok > /app/out.txt\n", fetch(port));
    task(&suite, "agent-fetches", AGENT_ONLY, &solve, "true", false);
    check(&suite, "local", &[]).ok();
    let out = check(&suite, "local", &["--agent-network", "none"]).code(1);
    assert!(
        out.stdout.contains("BROKEN  agent-fetches") && out.stdout.contains("oracle fails"),
        "{}",
        out.stdout
    );
    // An offline task's agent never had it.
    std::fs::remove_dir_all(&suite).unwrap();
    task(&suite, "offline", OFFLINE, &solve, "true", false);
    check(&suite, "local", &[]).code(1);
}

/// A container has the network when its routing table has a default route (no traffic sent).
const HAS_ROUTE: &str =
    "awk '$2 == \"00000000\" { found = 1 } END { exit !found }' /proc/net/route";

#[test]
fn docker_phases_are_on_the_bridge_or_off_it() {
    if !docker_or_skip("docker_phases_are_on_the_bridge_or_off_it") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("suite");
    let solve = "echo ok > /app/out.txt\n";
    let offline_agent = format!("! {HAS_ROUTE} && echo ok > /app/out.txt\n");
    // Default public: the verifier has a route out.
    task(&suite, "public", PUBLIC, solve, HAS_ROUTE, true);
    // The agent offline, the verifier online: one container, disconnected then connected.
    task(
        &suite,
        "agent-offline",
        "[environment]\nworkdir = \"/app\"\n[agent]\nnetwork_mode = \"no-network\"\n",
        &offline_agent,
        HAS_ROUTE,
        true,
    );
    let out = check(&suite, "docker", &[]).ok();
    assert!(out.stdout.contains("ok      public"), "{}", out.stdout);
    assert!(
        out.stdout.contains("ok      agent-offline"),
        "{}",
        out.stdout
    );

    // `[verifier] network_mode = "no-network"`: the same verifier has no route.
    task(
        &suite,
        "verifier-offline",
        VERIFIER_OFFLINE,
        solve,
        HAS_ROUTE,
        true,
    );
    let out = check(&suite, "docker", &["-t", "verifier-offline"]);
    assert_ne!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    // runner.agent_network none: an agent that needs a route fails.
    let online_agent = format!("{HAS_ROUTE} && echo ok > /app/out.txt\n");
    task(&suite, "agent-online", PUBLIC, &online_agent, "true", true);
    check(&suite, "docker", &["-t", "agent-online"]).ok();
    let out = check(
        &suite,
        "docker",
        &["-t", "agent-online", "--agent-network", "none"],
    )
    .code(1);
    assert!(out.stdout.contains("oracle fails"), "{}", out.stdout);
}

/// The experiment's choice is shown by `status` and enters the fingerprint.
#[test]
fn agent_network_enters_the_fingerprint_and_status() {
    let repo = Repo::small("minimal");
    let before = repo.harness(&["status"]).ok().stdout;
    assert!(
        before.contains("network: agent task, verifier task"),
        "{before}"
    );
    repo.edit_experiment(|y| {
        y.replace(
            "  concurrency: 4\n",
            "  concurrency: 4\n  agent_network: none\n",
        )
    });
    let after = repo.harness(&["status"]).ok().stdout;
    assert!(
        after.contains("network: agent none, verifier task"),
        "{after}"
    );
    let fp = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("experiment "))
            .unwrap()
            .to_string()
    };
    assert_ne!(fp(&before), fp(&after), "the choice enters the fingerprint");
}

/// Every task.toml of the bundled demo suite uses only keys and values of Harbor's task schema
/// (docs/tasks.md, from Harbor's `models/task/config.py`).
#[test]
fn demo_suite_uses_only_harbor_keys_and_values() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/suites/demo");
    let top = [
        "schema_version",
        "version",
        "source",
        "artifacts",
        "multi_step_reward_strategy",
    ];
    let tables: &[(&str, &[&str])] = &[
        (
            "task",
            &["name", "version", "description", "authors", "keywords"],
        ),
        (
            "agent",
            &["timeout_sec", "user", "network_mode", "allowed_hosts"],
        ),
        (
            "verifier",
            &[
                "timeout_sec",
                "env",
                "user",
                "environment_mode",
                "environment",
                "collect",
                "network_mode",
                "allowed_hosts",
            ],
        ),
        (
            "environment",
            &[
                "build_timeout_sec",
                "docker_image",
                "os",
                "workdir",
                "cpus",
                "memory_mb",
                "storage_mb",
                "gpus",
                "gpu_types",
                "tpu",
                "env",
                "mcp_servers",
                "skills_dir",
                "healthcheck",
                "network_mode",
                "allowed_hosts",
                "allow_internet",
                "memory",
                "storage",
            ],
        ),
        ("solution", &["env"]),
    ];
    let mut n = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let file = dir.join("task.toml");
        if !file.is_file() {
            continue;
        }
        n += 1;
        let t: toml::Table = toml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for (k, v) in &t {
            if k == "metadata" {
                continue;
            }
            match tables.iter().find(|(name, _)| name == k) {
                Some((_, keys)) => {
                    let table = v
                        .as_table()
                        .unwrap_or_else(|| panic!("{}: [{k}] is a table", file.display()));
                    for (key, value) in table {
                        assert!(
                            keys.contains(&key.as_str()),
                            "{}: {k}.{key} is not a Harbor key",
                            file.display()
                        );
                        if key == "network_mode" {
                            let m = value.as_str().unwrap_or_default();
                            assert!(
                                ["public", "no-network", "allowlist"].contains(&m),
                                "{}: {k}.network_mode = {value} is not a Harbor value",
                                file.display()
                            );
                        }
                    }
                }
                None => assert!(
                    top.contains(&k.as_str()),
                    "{}: `{k}` is not a Harbor key",
                    file.display()
                ),
            }
        }
    }
    assert!(n >= 20, "the demo suite has its tasks ({n})");
}

/// `allowlist` with `allowed_hosts` is not enforced by this build: a task that would run a
/// phase under it is refused before anything runs (exit 2, naming task.toml's line and field),
/// never run as `public`; a phase the experiment takes the network from runs.
#[test]
fn allowlist_is_refused_naming_the_field_unless_the_phase_is_pinned_offline() {
    if !bwrap_or_skip("allowlist_is_refused_naming_the_field_unless_the_phase_is_pinned_offline") {
        return;
    }
    let pong = pong_server();
    let port = pong.addr.port();
    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("suite");
    // No network but the verifier's (so that, pinned offline, the Docker runner needs no bridge).
    let allowlist = "[environment]\nworkdir = \"/app\"\nnetwork_mode = \"no-network\"\n\n\
                     [verifier]\nnetwork_mode = \"allowlist\"\nallowed_hosts = [\"example.com\"]\n";
    // The verifier passes only when it reaches the host's loopback.
    let verify = format!("{} | grep -q pong", fetch(port));
    task(
        &suite,
        "verifier-allowlist",
        allowlist,
        "echo ok > /app/out.txt\n",
        &verify,
        false,
    );
    let mut runners = vec!["local"];
    if docker_or_skip("allowlist_is_refused_naming_the_field_unless_the_phase_is_pinned_offline") {
        runners.push("docker");
    }
    for runner in runners {
        let out = check(&suite, runner, &[]).code(2);
        assert!(
            out.stderr
                .contains("verifier-allowlist/task.toml:6: verifier.network_mode:")
                && out.stderr.contains("`allowlist` is not enforced")
                && out.stderr.contains("(example.com)"),
            "{runner}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("hint: set network_mode = \"public\""),
            "{}",
            out.stderr
        );
        assert!(!out.stdout.contains("ok "), "nothing ran: {}", out.stdout);
        // Pinned offline, the verifier phase has no network at all: the task runs, and its
        // verifier cannot reach the loopback server (so the oracle fails: no leak as public).
        let out = check(&suite, runner, &["--verifier-network", "none"]);
        assert_eq!(out.code, 1, "{runner}: {out:?}");
        assert!(out.stdout.contains("BROKEN"), "{}", out.stdout);
    }
}
