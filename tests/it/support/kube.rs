//! A stand-in Kubernetes API server on loopback whose Pods are Docker containers, for the
//! Kubernetes runner's tests (`kubernetes`, `kubernetes_gateway`), and the settings of a real
//! cluster when the environment names one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use super::sandbox::{TEST_LABEL, in_ci};

/// The namespace of the stand-in's Pods.
pub const NS: &str = "trials";

/// A stand-in API server on loopback, backed by the Docker engine: a created Pod is a container
/// of its image running its command (in its working directory, without network), deleted with
/// it; the watch and reads of a Pod say it runs; exec requests (websocket upgrades) run their
/// command in the Pod's container through `docker exec -i`, speaking `protocol`
/// (`v5.channel.k8s.io` or `v4`), as long as the process runs; lists are empty, other requests
/// succeed. Every request line is recorded, and after an exec's request line at index `i`, once
/// its process ended, the line `ended i`.
pub struct ExecServer {
    pub url: String,
    pub state: Arc<ServerState>,
    /// Holds the kubeconfig naming the server.
    dir: tempfile::TempDir,
}

pub struct ServerState {
    protocol: &'static str,
    /// Watches never say anything (a Pod that stays pending).
    hold: bool,
    seen: Mutex<Vec<String>>,
    /// Pod name to container id.
    pub containers: Mutex<BTreeMap<String, String>>,
    /// The image of every Pod created, in order.
    pub images: Mutex<Vec<String>>,
    /// The command lines of the processes each Pod's container ran when it was deleted.
    pub at_delete: Mutex<BTreeMap<String, Vec<String>>>,
}

impl ExecServer {
    pub async fn start(containers: BTreeMap<String, String>, protocol: &'static str) -> ExecServer {
        Self::start_with(containers, protocol, false).await
    }

    pub async fn start_with(
        containers: BTreeMap<String, String>,
        protocol: &'static str,
        hold: bool,
    ) -> ExecServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(ServerState {
            protocol,
            hold,
            seen: Mutex::new(Vec::new()),
            containers: Mutex::new(containers),
            images: Mutex::new(Vec::new()),
            at_delete: Mutex::new(BTreeMap::new()),
        });
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = serve_conn(stream, st).await;
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("kubeconfig"),
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: {url}\n\
                 users:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: stand-in\n    user: u\n\
                 current-context: c\n"
            ),
        )
        .unwrap();
        ExecServer { url, state, dir }
    }

    pub fn client(&self) -> kube::Client {
        git_harness::sandbox::kubernetes::client_for(kube::Config::new(self.url.parse().unwrap()))
            .unwrap()
    }

    pub fn seen(&self) -> Vec<String> {
        self.state.seen.lock().unwrap().clone()
    }

    /// A kubeconfig naming this server (plain http, no credentials).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The `runner.kubernetes` settings for this server: its kubeconfig, the namespace [`NS`].
    pub fn runner(&self) -> Value {
        json!({"kubeconfig": self.kubeconfig(), "namespace": NS})
    }

    /// The `runner:` lines of an experiment on this server (`runner.kind` and its settings).
    pub fn runner_block(&self) -> String {
        format!("  kind: kubernetes\n  kubernetes: {}\n", self.runner())
    }
}

impl Drop for ExecServer {
    fn drop(&mut self) {
        // Containers of pods nobody deleted; the tests check that there are none.
        let left: Vec<String> = std::mem::take(&mut *self.state.containers.lock().unwrap())
            .into_values()
            .collect();
        for c in left {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", &c])
                .output();
        }
    }
}

fn running(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "resourceVersion": "2"},
        "status": {"phase": "Running"}})
}

/// The container of a pod made from `pod` (its image, command and working directory).
fn container_for(pod: &Value) -> String {
    let c = &pod["spec"]["containers"][0];
    let cmd: Vec<String> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    pod_container(
        c["image"].as_str().unwrap(),
        c["workingDir"].as_str().unwrap(),
        &cmd,
    )
}

/// A started container as a Pod's: `image` running `cmd` in `workdir`, without network,
/// labelled as the tests' (checked for leftovers). Its id.
pub fn pod_container(image: &str, workdir: &str, cmd: &[String]) -> String {
    let mut args = vec![
        "run".to_string(),
        "-d".into(),
        "--network".into(),
        "none".into(),
        "--label".into(),
        format!("{}={}", TEST_LABEL.0, TEST_LABEL.1),
        "--entrypoint".into(),
        cmd[0].clone(),
        "-w".into(),
        workdir.into(),
        image.into(),
    ];
    args.extend(cmd.iter().skip(1).cloned());
    let out = std::process::Command::new("docker")
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// The answer to a plain (not upgraded) request: status and JSON.
async fn answer(st: &ServerState, method: &str, target: &str, body: &[u8]) -> (u16, String) {
    let path = target.split('?').next().unwrap_or_default();
    let name = path.rsplit('/').next().unwrap_or_default().to_string();
    let success = json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success", "code": 200});
    match method {
        "POST" if path.ends_with("/pods") => {
            let mut pod: Value = serde_json::from_slice(body).unwrap();
            let name = pod["metadata"]["name"].as_str().unwrap().to_string();
            let image = pod["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or_default();
            st.images.lock().unwrap().push(image.to_string());
            let p = pod.clone();
            let id = tokio::task::spawn_blocking(move || container_for(&p))
                .await
                .unwrap();
            st.containers.lock().unwrap().insert(name, id);
            pod["metadata"]["resourceVersion"] = json!("1");
            (201, pod.to_string())
        }
        "POST" => {
            let mut obj: Value = serde_json::from_slice(body).unwrap();
            obj["metadata"]["resourceVersion"] = json!("1");
            (201, obj.to_string())
        }
        "GET" if target.contains("watch=true") => {
            let name = decode(target.split("metadata.name%3D").nth(1).unwrap_or_default());
            let name = name.split('&').next().unwrap_or_default().to_string();
            let ev = json!({"type": "ADDED", "object": running(&name)});
            (200, format!("{ev}\n"))
        }
        "GET" if path.ends_with("/pods") || path.ends_with("/networkpolicies") => (
            200,
            json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []}).to_string(),
        ),
        "GET" => (200, running(&name).to_string()),
        "DELETE" => {
            let id = st.containers.lock().unwrap().remove(&name);
            if let Some(id) = id {
                let ps = tokio::process::Command::new("docker")
                    .args(["exec", &id, "/bin/sh", "-c"])
                    .arg("for p in /proc/[0-9]*; do [ -r $p/cmdline ] && tr '\\0' ' ' < $p/cmdline && echo; done")
                    .output()
                    .await
                    .unwrap();
                let lines = String::from_utf8_lossy(&ps.stdout)
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string)
                    .collect();
                st.at_delete.lock().unwrap().insert(name.clone(), lines);
                let _ = tokio::process::Command::new("docker")
                    .args(["rm", "-f", &id])
                    .output()
                    .await;
            }
            (200, success.to_string())
        }
        _ => (200, success.to_string()),
    }
}

async fn serve_conn(
    mut stream: tokio::net::TcpStream,
    st: Arc<ServerState>,
) -> std::io::Result<()> {
    loop {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            if stream.read(&mut b).await? == 0 {
                return Ok(());
            }
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut lines = head.lines();
        let request_line = lines.next().unwrap_or_default().to_string();
        let headers: BTreeMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let index = {
            let mut seen = st.seen.lock().unwrap();
            seen.push(request_line.clone());
            seen.len() - 1
        };
        let len: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await?;
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        if st.hold && target.contains("watch=true") {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                .await?;
            std::future::pending::<()>().await;
        }
        if headers.get("upgrade").map(|u| u.to_ascii_lowercase()) != Some("websocket".into()) {
            let (status, text) = answer(&st, &method, &target, &body).await;
            let resp = format!(
                "HTTP/1.1 {status} OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                text.len()
            );
            stream.write_all(resp.as_bytes()).await?;
            continue;
        }
        let protocol = st.protocol;
        let offered = headers
            .get("sec-websocket-protocol")
            .cloned()
            .unwrap_or_default();
        assert!(offered.contains(protocol), "offered: {offered}");
        let key = headers
            .get("sec-websocket-key")
            .cloned()
            .unwrap_or_default();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
             sec-websocket-accept: {accept}\r\nsec-websocket-protocol: {protocol}\r\n\r\n"
        );
        stream.write_all(resp.as_bytes()).await?;
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let pod = path
            .trim_end_matches("/exec")
            .rsplit('/')
            .next()
            .unwrap_or_default();
        let container = st.containers.lock().unwrap().get(pod).cloned();
        let argv: Vec<String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| *k == "command")
            .map(|(_, v)| decode(v))
            .collect();
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            stream,
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        let Some(container) = container else {
            return Ok(());
        };
        run_exec(ws, &container, argv, protocol).await;
        st.seen.lock().unwrap().push(format!("ended {index}"));
        return Ok(());
    }
}

/// The server side of one exec: stdin frames (channel 0) to the process, its stdout and
/// stderr to channels 1 and 2, `[255, 0]` (v5) closing its stdin, the exit status on channel 3.
async fn run_exec(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    container: &str,
    argv: Vec<String>,
    protocol: &str,
) {
    let mut child = tokio::process::Command::new("docker")
        .arg("exec")
        .arg("-i")
        .arg(container)
        .args(&argv)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (mut tx, mut rx) = ws.split();
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if tx.send(m).await.is_err() {
                return;
            }
        }
        let _ = tx.close().await;
    });
    let forward = |mut r: Box<dyn tokio::io::AsyncRead + Unpin + Send>, ch: u8| {
        let out_tx = out_tx.clone();
        async move {
            let mut buf = vec![0u8; 8192];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let mut m = vec![ch];
                        m.extend_from_slice(&buf[..n]);
                        if out_tx.send(Message::binary(m)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    };
    let out = forward(Box::new(child.stdout.take().unwrap()), 1);
    let err = forward(Box::new(child.stderr.take().unwrap()), 2);
    let mut stdin = child.stdin.take();
    let v5 = protocol.starts_with("v5");
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = rx.next().await {
            match m {
                Message::Binary(b) if b.first() == Some(&0) => {
                    if let Some(s) = stdin.as_mut() {
                        let _ = s.write_all(&b[1..]).await;
                    }
                }
                Message::Binary(b) if v5 && b[..] == [255, 0] => stdin = None,
                Message::Close(_) => return,
                _ => {}
            }
        }
    });
    tokio::join!(out, err);
    let code = child.wait().await.unwrap().code().unwrap_or(137);
    let status = if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": format!("command terminated with non-zero exit code: {code}"),
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
    };
    let mut m = vec![3u8];
    m.extend_from_slice(status.to_string().as_bytes());
    let _ = out_tx.send(Message::binary(m)).await;
    drop(out_tx);
    let _ = writer.await;
    reader.abort();
}

/// The `runner.kubernetes` settings of the cluster of `GIT_HARNESS_TEST_KUBECONFIG` (context
/// `GIT_HARNESS_TEST_KUBE_CONTEXT`, namespace `GIT_HARNESS_TEST_KUBE_NAMESPACE` or `default`,
/// registry `GIT_HARNESS_TEST_KUBE_REGISTRY`, where the base image must be pullable); `None`
/// (the test skips, loudly) without one, a failure under `GIT_HARNESS_TEST_REQUIRE_KUBERNETES=1`.
pub fn real_cluster(test: &str) -> Option<Value> {
    let Some(kubeconfig) = std::env::var_os("GIT_HARNESS_TEST_KUBECONFIG") else {
        let required = std::env::var("GIT_HARNESS_TEST_REQUIRE_KUBERNETES").as_deref() == Ok("1");
        assert!(
            !required,
            "{test}: GIT_HARNESS_TEST_REQUIRE_KUBERNETES=1 but GIT_HARNESS_TEST_KUBECONFIG is unset"
        );
        let _ = in_ci();
        eprintln!("\n!!!!! SKIPPING {test}: GIT_HARNESS_TEST_KUBECONFIG is unset !!!!!\n");
        return None;
    };
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut k = json!({
        "kubeconfig": kubeconfig.to_string_lossy(),
        "namespace": env("GIT_HARNESS_TEST_KUBE_NAMESPACE").unwrap_or_else(|| "default".into()),
    });
    if let Some(c) = env("GIT_HARNESS_TEST_KUBE_CONTEXT") {
        k["context"] = json!(c);
    }
    if let Some(r) = env("GIT_HARNESS_TEST_KUBE_REGISTRY") {
        k["registry"] = json!(r);
    }
    Some(k)
}
