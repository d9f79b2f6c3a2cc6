//! `runner.registry` with a pool of two real engines: the one at the default socket and a
//! second `dockerd` this test starts (see `docker_hosts`), which never gets the base image, and
//! a real registry on loopback (Debian's `docker-registry`). A task image is built once, on the
//! first engine, pushed, and pulled by the second, which runs trials on it without being able
//! to build it; the image's id (its content digest) is the cache key's environment, so a
//! re-pushed tag does not reuse the results of the image it replaced; a registry that is gone
//! refuses the run (125) with a hint naming it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::dockerd::{BASE, DEFAULT, Engine, components_or_skip, default_engine};
use crate::support::hermetic::{Out, output};
use crate::support::registry::{PROGRAM, Registry};
use crate::support::repo::Repo;

/// Tasks that build FROM the base image a marker the verifier needs: `ok` passes with the
/// oracle, `wrong` fails.
fn suite(root: &Path) -> PathBuf {
    crate::support::dockerd::four_tasks(
        root,
        Some(&format!(
            "FROM {BASE}\nWORKDIR /app\nRUN echo built > /marker\n"
        )),
        "",
        "[ -f /marker ]",
    )
}

fn run(repo: &Repo, extra: &[&str]) -> Out {
    let mut a = vec![
        "run", "--split", "held_in", "--agent", "oracle", "--format", "json", "--trials", "2",
    ];
    a.extend(extra);
    repo.harness(&a)
}

/// `(task, outcome, host)` of each result of a `run --json`, and how many trials executed.
fn results(out: &Out) -> (Vec<(String, String, String)>, u64) {
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", out.stdout, out.stderr));
    let r = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["task"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
                r["host"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    (r, v["executed"].as_u64().unwrap())
}

/// `name -> id` of the images under `prefix` that the engine behind `docker` holds.
fn images(docker: impl Fn(&[&str]) -> std::process::Output, prefix: &str) -> Vec<(String, String)> {
    let o = docker(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.ID}}",
    ]);
    assert!(o.status.success(), "{o:?}");
    let mut v: Vec<(String, String)> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix) && !l.contains(":<none> "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, i)| (n.to_string(), i.to_string()))
        .collect();
    v.sort();
    v
}

/// Removes the registry's names (tags and digests) from the engine at the default socket (it
/// is not ours); an image goes with its last name, the base image keeps its own.
pub(crate) struct Untag(pub(crate) String);

impl Drop for Untag {
    fn drop(&mut self) {
        let o = default_engine(&[
            "images",
            "--digests",
            "--format",
            "{{.Repository}} {{.Tag}} {{.Digest}}",
        ]);
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let w: Vec<&str> = line.split(' ').collect();
            if w.len() != 3 || !w[0].starts_with(&self.0) {
                continue;
            }
            if w[1] != "<none>" {
                let _ = default_engine(&["rmi", &format!("{}:{}", w[0], w[1])]);
            }
            if w[2] != "<none>" {
                let _ = default_engine(&["rmi", &format!("{}@{}", w[0], w[2])]);
            }
        }
    }
}

#[test]
fn task_images_are_built_once_and_pulled_through_the_registry_checked_by_digest() {
    let test = "task_images_are_built_once_and_pulled_through_the_registry_checked_by_digest";
    if !components_or_skip(test) {
        return;
    }
    if !Path::new(PROGRAM).exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: {PROGRAM} (apt-get install docker-registry) is required in CI"
        );
        eprintln!("SKIPPED {test}: no {PROGRAM}");
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("gh-reg-")
        .tempdir_in("/tmp")
        .unwrap();
    let certs = tmp.path().join("certs");
    crate::docker_tls::certificates(&certs, "good");
    let engine = Engine::start(&tmp.path().join("e"), &certs);
    let registry = Registry::start();
    let url = registry.url();
    let prefix = format!("{url}/git-harness/task-");
    let _untag = Untag(prefix.clone());

    let suite = suite(tmp.path());
    output(
        Command::new(env!("CARGO_BIN_EXE_git-harness"))
            .args(["init", "--runner", "docker", "--suite"])
            .arg(&suite)
            .arg("h")
            .current_dir(tmp.path()),
    )
    .ok();
    let repo = Repo::open(tmp.path().join("h"));
    repo.splits(&["ok", "wrong"], &["v"], &["t"]);
    let second = engine.socket();
    repo.edit_experiment(|t| {
        t.replace(
            "  concurrency: 4\n",
            &format!(
                "  concurrency: 4\n  hosts:\n  - host: {DEFAULT}\n    concurrency: 2\n  - host: {second}\n    concurrency: 2\n  registry:\n    url: {url}\n    insecure: true\n"
            ),
        )
    });

    // Both engines run trials on the image built on the first: the second has no base image,
    // so it cannot have built it.
    let first = run(&repo, &[]).ok();
    let (rs, executed) = results(&first);
    assert_eq!((rs.len(), executed), (4, 4), "{}", first.stderr);
    for (task, outcome, _) in &rs {
        let want = if task == "ok" { "pass" } else { "fail" };
        assert_eq!(outcome, want, "{task}: {}", first.stderr);
    }
    let hosts: std::collections::BTreeSet<&str> = rs.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(
        hosts,
        [DEFAULT, second.as_str()].into_iter().collect(),
        "{}",
        first.stderr
    );
    assert!(
        !engine.docker(&["image", "inspect", BASE]).status.success(),
        "the second engine must not have the base image"
    );
    let on_first = images(default_engine, &prefix);
    let on_second = images(|a| engine.docker(a), &prefix);
    assert_eq!(on_first.len(), 2, "{on_first:?}");
    assert_eq!(
        on_second, on_first,
        "the same names and ids on both engines"
    );
    assert!(registry.has("git-harness/task-ok"));

    // The same tag pushed again with other content (no marker): not the cached environment.
    for (name, _) in &on_first {
        assert!(default_engine(&["tag", BASE, name]).status.success());
    }
    let again = run(&repo, &[]).ok();
    let (rs, executed) = results(&again);
    assert_eq!(
        executed, 4,
        "results of the replaced image were reused:\n{}",
        again.stderr
    );
    assert!(rs.iter().all(|r| r.1 == "fail"), "{}", again.stdout);
    let base_id = images(default_engine, BASE)[0].1.clone();
    let pulled = images(|a| engine.docker(a), &prefix);
    assert!(
        pulled.len() == 2 && pulled.iter().all(|(_, id)| *id == base_id),
        "the second engine pulled the re-pushed image ({base_id}): {pulled:?}\n{}",
        again.stderr
    );

    // The registry gone: no trial can run (125), and the message names it.
    drop(registry);
    let gone = run(&repo, &["--no-cache"]);
    assert_eq!(gone.code, 125, "{}\n{}", gone.stdout, gone.stderr);
    assert!(gone.stderr.contains(&url), "{}", gone.stderr);
}

#[test]
fn registry_settings_are_validated_naming_file_and_field() {
    let repo = Repo::init("minimal");
    let original = repo.read(".harness/experiment.yaml");
    // The `kind:` line of the runner section replaced by `block`.
    let set = |block: &str| {
        repo.edit_experiment(|_| {
            let runner = original.find("\nrunner:\n").expect("a runner section");
            let start = runner + original[runner..].find("\n  kind:").expect("runner.kind") + 1;
            let end = start + original[start..].find('\n').unwrap() + 1;
            format!("{}{block}{}", &original[..start], &original[end..])
        })
    };
    set("  kind: docker\n  registry:\n    url: http://127.0.0.1:5000/\n");
    let out = repo.harness(&["status"]).code(2);
    assert!(
        out.stderr.contains("runner.registry.url") && out.stderr.contains("experiment.yaml"),
        "{}",
        out.stderr
    );
    // The local runner has no images to pull.
    set("  kind: local\n  registry:\n    url: 127.0.0.1:5000\n");
    let out = repo.harness(&["status"]).code(2);
    assert!(
        out.stderr.contains("runner.registry") && out.stderr.contains("local runner"),
        "{}",
        out.stderr
    );
    set("  kind: docker\n  registry:\n    url: 127.0.0.1:5000\n    secure: no\n");
    let out = repo.harness(&["status"]).code(2);
    assert!(out.stderr.contains("secure"), "{}", out.stderr);
}
