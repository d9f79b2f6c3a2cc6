//! Engine API calls per trial: `tasks check --runner docker` (one oracle and one nop trial)
//! through a counting proxy in front of the engine's socket. A trial needs create + start, its
//! uploads (the solution's, with the runtime's directories), one exec for the solution (the
//! oracle), one for the verifier (which also stops the agent's leftover processes and brings the
//! tests in), one download of the verifier's log dir, and the delete; image look-ups happen
//! once per run.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

const SOCKET: &str = "/var/run/docker.sock";

fn docker_or_skip(test: &str) -> bool {
    let ok = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
        && Path::new(SOCKET).exists();
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: a Docker engine at {SOCKET} is required in CI"
        );
        eprintln!("SKIPPED {test}: no Docker engine answers at {SOCKET}");
    }
    ok
}

/// Requests seen by the proxy, as `METHOD /path` with the API version and query cut.
type Seen = Arc<Mutex<Vec<String>>>;

/// Forward every connection on `listener` to the engine, noting each request line the client
/// sends (also after an exec's upgrade: the command travels as plain stdin, never as a request
/// line).
async fn proxy(listener: UnixListener, seen: Seen) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let seen = seen.clone();
        tokio::spawn(async move {
            let Ok(engine) = UnixStream::connect(SOCKET).await else {
                return;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut er, mut ew) = engine.into_split();
            let up = async {
                let mut buf = vec![0u8; 64 * 1024];
                let mut carry = Vec::new();
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    carry.extend_from_slice(&buf[..n]);
                    note_requests(&mut carry, &seen);
                    if ew.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = ew.shutdown().await;
            };
            let down = async {
                let _ = tokio::io::copy(&mut er, &mut cw).await;
                let _ = cw.shutdown().await;
            };
            tokio::join!(up, down);
        });
    }
}

/// Find request lines (`POST /v1.47/containers/ID/exec HTTP/1.1`) in what the client sent,
/// keeping a partial line for the next read.
fn note_requests(carry: &mut Vec<u8>, seen: &Seen) {
    let text = String::from_utf8_lossy(carry).into_owned();
    let mut consumed = 0;
    for (i, _) in text.match_indices("\r\n") {
        let line = &text[consumed..i];
        consumed = i + 2;
        let mut w = line.split(' ');
        let (Some(method), Some(target), Some(proto)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        if !proto.starts_with("HTTP/1.") || !target.starts_with('/') {
            continue;
        }
        let path = target.split('?').next().unwrap_or(target);
        // `/v1.47/containers/ID/exec` → `/containers/*/exec`.
        let mut parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        if parts.first().is_some_and(|p| p.starts_with('v')) {
            parts.remove(0);
        }
        if parts.first() == Some(&"images") {
            parts = vec!["images", "*"];
        }
        let shape: Vec<String> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if i == 1 && matches!(parts[0], "containers" | "exec") && *p != "create" {
                    "*".to_string()
                } else {
                    p.to_string()
                }
            })
            .collect();
        seen.lock()
            .unwrap()
            .push(format!("{method} /{}", shape.join("/")));
    }
    // Keep at most the unfinished tail (bounded: bodies are not request lines).
    let rest = carry.split_off(consumed.min(carry.len()));
    *carry = if rest.len() > 4096 {
        rest[rest.len() - 4096..].to_vec()
    } else {
        rest
    };
}

#[test]
fn a_docker_trial_makes_the_floors_calls() {
    if !docker_or_skip("a_docker_trial_makes_the_floors_calls") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("engine.sock");
    let seen: Seen = Arc::default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt.block_on(async { UnixListener::bind(&sock) }).unwrap();
    rt.spawn(proxy(listener, seen.clone()));

    let suite = tmp.path().join("suite");
    crate::support::sandbox::docker_app_task(&suite.join("calls"));
    // Once without the proxy, so the task image is built and the build's calls are not counted.
    let run = |host: Option<&Path>| {
        let mut cmd = crate::support::sandbox::tasks_check_cmd(&["--runner", "docker"], &suite);
        if let Some(h) = host {
            cmd.env("DOCKER_HOST", format!("unix://{}", h.display()));
        }
        crate::support::hermetic::output(&mut cmd)
    };
    let out = run(None);
    assert!(out.code == 0, "{}", out.stdout);
    let out = run(Some(&sock));
    let stdout = &out.stdout;
    assert!(out.code == 0, "{stdout}{}", out.stderr);
    assert!(stdout.contains("1 task checked, 0 broken"), "{stdout}");

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in seen.lock().unwrap().iter() {
        *counts.entry(r.clone()).or_default() += 1;
    }
    eprintln!("Engine API calls of one oracle and one nop trial: {counts:#?}");
    let n = |k: &str| counts.get(k).copied().unwrap_or(0);
    // Two trials: create and delete one container each.
    assert_eq!(n("POST /containers/create"), 2, "{counts:#?}");
    assert_eq!(n("DELETE /containers/*"), 2, "{counts:#?}");
    // Oracle: solution, verifier; nop: verifier (which also deals with the agent's leftover
    // processes and brings the tests in).
    assert_eq!(n("POST /containers/*/exec"), 3, "{counts:#?}");
    assert_eq!(n("POST /exec/*/start"), 3, "{counts:#?}");
    // An exec's status comes on its own output: no inspect after it.
    assert_eq!(n("GET /exec/*/json"), 0, "{counts:#?}");
    // One download of /logs/verifier per trial.
    assert_eq!(n("GET /containers/*/archive"), 2, "{counts:#?}");
    // Uploads: the oracle's solution only (the tests travel in the verifier's exec); the
    // runtime's directories ride on the first upload or exec, never on a call of their own.
    assert_eq!(n("PUT /containers/*/archive"), 1, "{counts:#?}");
    // One inspect per trial names the overlay directories (while the trial runs).
    assert_eq!(n("GET /containers/*/json"), 2, "{counts:#?}");
    // The images are looked up once per run (the FROM image, the task's tag, its PATH), not
    // per trial.
    assert_eq!(n("GET /images/*"), 3, "{counts:#?}");
    // The toolchain check reads the overlay upper directory on this host (one inspect per
    // trial), not the engine's filesystem diff, which walks the image's layers too.
    assert_eq!(n("GET /containers/*/changes"), 0, "{counts:#?}");
}
