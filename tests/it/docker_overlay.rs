//! The toolchain check reads a container's changes from its overlay upper directory on this
//! host: the list must be the engine's own (`docker diff`), whatever the container did.

use std::collections::BTreeSet;
use std::process::Command;

use git_harness::sandbox::docker::Change;
use git_harness::sandbox::docker::overlay::{overlay_dirs, upper_changes};

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_upper_directory_lists_what_the_engine_lists() {
    if !crate::support::sandbox::docker_engine_or_skip(
        "the_upper_directory_lists_what_the_engine_lists",
    ) {
        return;
    }
    let name = format!("git-harness-overlay-test-{}", std::process::id());
    let id = docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "git-harness-test=overlay",
        "git-harness/base:bookworm",
        "sleep",
        "infinity",
    ]);
    let id = id.trim().to_string();
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
        }
    }
    let _gone = Gone(id.clone());
    // What an agent might do: replace a command, add one, delete one, replace a directory of
    // the image by a new one, write its work.
    docker(&[
        "exec",
        &id,
        "/bin/sh",
        "-c",
        "cp /bin/true /usr/bin/grep && cp /bin/true /usr/local/bin/ls && rm /usr/bin/sed \
         && rm -rf /usr/share/doc && mkdir /usr/share/doc && echo x > /usr/share/doc/new \
         && mkdir -p /work/a/b && echo y > /work/a/b/f && chmod 700 /etc/passwd && ln -s /etc /work/l",
    ]);
    let engine: BTreeSet<(char, String)> = docker(&["diff", &id])
        .lines()
        .filter_map(|l| {
            let (k, p) = l.split_once(' ')?;
            Some((k.chars().next()?, p.to_string()))
        })
        .collect();
    let graph = docker(&["inspect", "-f", "{{json .GraphDriver}}", &id]);
    let graph: serde_json::Value = serde_json::from_str(&graph).unwrap();
    let data: std::collections::HashMap<String, String> =
        serde_json::from_value(graph["Data"].clone()).unwrap();
    let name = graph["Name"].as_str().unwrap_or_default();
    let Some((upper, lowers)) = overlay_dirs(name, &data) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI's engine uses overlay2, got {name}"
        );
        eprintln!("SKIPPED: storage driver {name}");
        return;
    };
    let host: BTreeSet<(char, String)> = upper_changes(&upper, &lowers)
        .expect("root reads the upper directory")
        .into_iter()
        .map(|(k, p)| {
            let c = match k {
                Change::Added => 'A',
                Change::Modified => 'C',
                Change::Deleted => 'D',
            };
            (c, p)
        })
        .collect();
    assert_eq!(host, engine, "host {host:#?}\nengine {engine:#?}");
    assert!(host.contains(&('C', "/usr/bin/grep".into())), "{host:#?}");
    assert!(
        host.contains(&('A', "/usr/local/bin/ls".into())),
        "{host:#?}"
    );
    assert!(host.contains(&('D', "/usr/bin/sed".into())), "{host:#?}");
    assert!(
        host.contains(&('D', "/usr/share/doc/bash".into())),
        "{host:#?}"
    );
}
