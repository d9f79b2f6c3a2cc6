//! `protocol: command` harnesses on the Kubernetes runner, through the binary, on the stand-in
//! API server of `support::kube` (Pods as Docker containers without a network, exec over the
//! channel protocol): the agent program in the Pod reaches the stand-in model only through the
//! gateway's exec tunnel; the tunnel ends with the agent's phase; a model outage is the
//! trial's infrastructure error; from inside the Pod the tunnel reaches nothing but the gateway.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use crate::support::command::{
    KEY, KEY_VAR, Reported, assert_word_count_solved, command_repo_with, run_word_count, serve,
    usage_of,
};
use crate::support::hermetic::Out;
use crate::support::interrupt::{interrupt_twice, until};
use crate::support::kube::{ExecServer, NS, decode, real_cluster};
use crate::support::repo::Repo;
use crate::support::sandbox::docker_or_skip;

/// A demo repository whose harness is the agent program `agent` (a file of
/// tests/fixtures/agents/, run with `python3` after `env`) on the Kubernetes runner of
/// `kubernetes` (its settings), with the stand-in model at `base_url`.
fn kube_command_repo(kubernetes: Value, agent: &str, env: &str, base_url: &str) -> Repo {
    let runner = json!({"kind": "kubernetes", "concurrency": 1, "kubernetes": kubernetes});
    command_repo_with(agent, env, "openai", base_url, runner)
}

/// The stand-in cluster speaking `protocol`, the stand-in model, and a repository whose
/// harness is `stdlib_agent.py` on that cluster, reaching that model.
async fn stdlib_on_stand_in(protocol: &'static str) -> (ExecServer, Arc<Mutex<Reported>>, Repo) {
    let server = ExecServer::start(Default::default(), protocol).await;
    let (base_url, reported) = serve();
    let repo = kube_command_repo(server.runner(), "stdlib_agent.py", "", &base_url);
    (server, reported, repo)
}

async fn run_word_count_async(repo: Arc<Repo>) -> (Out, Value) {
    tokio::task::spawn_blocking(move || run_word_count(&repo))
        .await
        .unwrap()
}

/// The tunnels' execs in the server's log: the index of each request, of the line that says
/// its process ended, and of its Pod's deletion.
fn tunnel_execs(seen: &[String]) -> Vec<(usize, usize, usize)> {
    let tunnels: Vec<(usize, usize, usize)> = seen
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("/exec?") && decode(l).contains("__tunnel"))
        .map(|(start, l)| {
            let ended = seen
                .iter()
                .position(|e| *e == format!("ended {start}"))
                .unwrap_or_else(|| panic!("the tunnel's exec never ended: {seen:#?}"));
            let pod = l
                .split("/pods/")
                .nth(1)
                .and_then(|r| r.split('/').next())
                .unwrap();
            let deleted = seen
                .iter()
                .position(|e| e.starts_with(&format!("DELETE /api/v1/namespaces/{NS}/pods/{pod}?")))
                .unwrap_or_else(|| panic!("pod {pod} was not deleted: {seen:#?}"));
            (start, ended, deleted)
        })
        .collect();
    assert!(!tunnels.is_empty(), "no tunnel: {seen:#?}");
    for (_, ended, deleted) in &tunnels {
        assert!(ended < deleted, "a tunnel outlived its pod: {seen:#?}");
    }
    tunnels
}

/// Whether a request line is the exec that ends stray processes before the verifier.
fn is_stray_kill(line: &str) -> bool {
    line.contains("/exec?") && decode(line).contains("gh_sig KILL")
}

/// No process of the tunnel was left in any Pod when it was deleted, and no Pod is left.
fn assert_no_tunnel_left(server: &ExecServer) {
    let at_delete = server.state.at_delete.lock().unwrap().clone();
    assert!(!at_delete.is_empty(), "no pod was deleted");
    for (pod, procs) in &at_delete {
        // The listing's own shell is there; a sleep is the Pod's main process.
        assert!(
            procs.iter().any(|p| p.contains("sleep 2147483647")),
            "{pod}: {procs:?}"
        );
        assert!(
            !procs
                .iter()
                .any(|p| p.contains("__tunnel") || p.contains("git-harness/git-harness")),
            "{pod}: the tunnel outlived the agent: {procs:?}"
        );
    }
    assert!(server.state.containers.lock().unwrap().is_empty());
}

/// The agent program runs in the Pod, its model calls go through the tunnel to the gateway and
/// are the trial's record, as on Docker. The task has no network, so the Pod runs under a
/// deny-all NetworkPolicy (and its stand-in container has no network at all): the gateway is
/// on the Pod's own loopback. The tunnel's exec ends with the agent's phase, before the
/// verifier's stray kill could end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_harness_reaches_the_gateway_from_its_pod_and_its_calls_are_the_record() {
    let test = "a_command_harness_reaches_the_gateway_from_its_pod_and_its_calls_are_the_record";
    if docker_or_skip(test).await.is_none() {
        return;
    }
    let (server, reported, repo) = stdlib_on_stand_in("v5.channel.k8s.io").await;
    let repo = Arc::new(repo);
    let (run, trace) = run_word_count_async(repo.clone()).await;
    assert_word_count_solved(&repo, &run, &trace, &reported);
    assert_eq!(trace["ending"]["reason"], "exited", "{trace:#}");
    let output = trace["command"]["output"].as_str().unwrap_or_default();
    let env_line = output.lines().find(|l| l.starts_with("ENV ")).unwrap();
    assert!(
        env_line.contains(&format!(
            "OPENAI_BASE_URL=http://127.0.0.1:{}/v1",
            git_harness::sandbox::local::FORWARD_PORT
        )),
        "{env_line}"
    );

    let seen = server.seen();
    assert!(
        seen.iter().any(|l| l.starts_with(&format!(
            "POST /apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"
        ))),
        "the no-network task's pod was denied all traffic: {seen:#?}"
    );
    let tunnels = tunnel_execs(&seen);
    assert_eq!(tunnels.len(), 1, "one trial, one tunnel: {seen:#?}");
    let (start, ended, _) = tunnels[0];
    let stray_kill = (start + 1..seen.len())
        .find(|&i| is_stray_kill(&seen[i]))
        .unwrap_or_else(|| panic!("no stray kill after the agent: {seen:#?}"));
    assert!(
        ended < stray_kill,
        "the tunnel ended with the agent's phase, not by the stray kill: {seen:#?}"
    );
    assert_no_tunnel_left(&server);
}

/// The model is down: the gateway's 502 makes the trial an infrastructure error (`model`), not
/// the agent's failure, as on Docker. No verifier runs, so no stray kill: the tunnel ends by
/// itself before the Pod is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_outage_through_the_pods_tunnel_is_an_infrastructure_error() {
    let test = "a_model_outage_through_the_pods_tunnel_is_an_infrastructure_error";
    if docker_or_skip(test).await.is_none() {
        return;
    }
    let (server, reported, repo) = stdlib_on_stand_in("v5.channel.k8s.io").await;
    reported.lock().unwrap().down = true;
    let repo = Arc::new(repo);
    let (run, trace) = run_word_count_async(repo.clone()).await;
    assert_eq!(trace["ending"]["reason"], "model_error", "{trace:#}");
    assert!(run.stdout.contains("infra"), "{run:#?}");
    assert!(!reported.lock().unwrap().requests.is_empty());
    let run_ref = repo.git(&["for-each-ref", "--format=%(refname)", "refs/harness/runs/"]);
    let results = repo.git(&["show", &format!("{}:results.jsonl", run_ref.trim())]);
    let r: Value = serde_json::from_str(results.lines().next().unwrap()).unwrap();
    assert_eq!(r["outcome"], "infra-error", "{r}");
    assert_eq!(r["infra"], "model", "{r}");

    let seen = server.seen();
    // Each attempt's tunnel (the run retries an infrastructure error) ended before its Pod
    // was deleted.
    tunnel_execs(&seen);
    assert!(
        !seen.iter().any(|l| is_stray_kill(l)),
        "no verifier ran: {seen:#?}"
    );
    assert_no_tunnel_left(&server);
}

/// The attack model: answers `forged seen` once a request carrying `FORGED` came through the
/// gateway, `no` before; a question whether it came waits for it (up to 20 s).
async fn attack_model(
    State(bodies): State<Arc<Mutex<Vec<String>>>>,
    body: String,
) -> axum::Json<Value> {
    let forged = |b: &Vec<String>| b.iter().any(|s| s.contains("FORGED"));
    if body.contains("did the forged request arrive") {
        let start = std::time::Instant::now();
        while !forged(&bodies.lock().unwrap()) && start.elapsed().as_secs() < 20 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let mut b = bodies.lock().unwrap();
    b.push(body);
    let content = if forged(&b) { "forged seen" } else { "no" };
    axum::Json(json!({
        "id": format!("a{}", b.len()), "object": "chat.completion", "model": "stub",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2}
    }))
}

/// From inside the Pod, the tunnel leads to the gateway and nowhere else of the host: a
/// canary on the host's loopback gets no connection, whether the agent connects to it directly,
/// asks the tunnel for it (an absolute URI, `CONNECT`, a `Host` header), or writes frames onto
/// the tunnel's own stdout that claim to open a connection to it (they reach the gateway,
/// which forwards their chat request to the model like any other). A frame longer than the
/// protocol allows ends the tunnel instead of making the host buffer what follows. Under the
/// `v4` channel protocol, which cannot close stdin alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_inside_the_pod_the_tunnel_reaches_only_the_gateway() {
    let test = "from_inside_the_pod_the_tunnel_reaches_only_the_gateway";
    if docker_or_skip(test).await.is_none() {
        return;
    }
    let server = ExecServer::start(Default::default(), "v4.channel.k8s.io").await;
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let model = crate::support::serve::start(
        axum::Router::new()
            .route("/v1/chat/completions", post(attack_model))
            .with_state(bodies.clone()),
    );
    // The canary: any connection to it counts.
    let canary = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let canary_addr = canary.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = canary.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = tokio::io::AsyncWriteExt::write_all(
                &mut c,
                b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nCANARY",
            )
            .await;
        }
    });
    let api = server.url.trim_start_matches("http://").to_string();
    let env = format!(
        "CANARY={canary_addr} PROBE={canary_addr},{model},{api}",
        model = model.addr
    );
    let repo = Arc::new(kube_command_repo(
        server.runner(),
        "tunnel_attack.py",
        &env,
        &model.base_url(),
    ));
    let (run, trace) = run_word_count_async(repo).await;
    let output = trace["command"]["output"].as_str().unwrap_or_default();
    assert_eq!(run.code, 0, "{run:#?}\n{output}");
    assert!(output.contains("CHAT no"), "{output}");
    for target in [canary_addr.to_string(), model.addr.to_string(), api] {
        assert!(
            output.contains(&format!("REACH {target} failed")),
            "{target}: {output}"
        );
    }
    for probe in ["ABSOLUTE", "CONNECT", "HOST"] {
        let line = output
            .lines()
            .find(|l| l.starts_with(&format!("{probe} ")))
            .unwrap_or_else(|| panic!("{probe}: {output}"));
        assert!(line.ends_with("canary=False"), "{line}");
    }
    assert!(output.contains("FORGED written"), "{output}");
    assert!(output.contains("FORGED forged seen"), "{output}");
    assert!(output.contains("TUNNEL ended"), "{output}");
    assert!(output.contains("AFTER failed"), "{output}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the canary was reached");
    assert!(
        bodies.lock().unwrap().iter().any(|b| b.contains("FORGED")),
        "the forged connection went to the gateway"
    );
    // The trial is the agent's failure (it wrote no answer), not infrastructure.
    assert!(run.stdout.contains("0/1"), "{}", run.stdout);
    let seen = server.seen();
    tunnel_execs(&seen);
    assert_no_tunnel_left(&server);
    drop(model);
}

/// SIGINT then SIGTERM while the agent program runs in its Pod with the tunnel open: the run
/// stops (exit 130), the Pod is deleted, and the tunnel's exec ends with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_command_trial_leaves_no_pod_and_no_tunnel() {
    let test = "an_interrupted_command_trial_leaves_no_pod_and_no_tunnel";
    if docker_or_skip(test).await.is_none() {
        return;
    }
    let (server, reported, repo) = stdlib_on_stand_in("v5.channel.k8s.io").await;
    // The agent is done with the model, then keeps its Pod busy.
    let manifest = std::fs::read_to_string(repo.root.join("harness.yaml"))
        .unwrap()
        .replace(
            "$HARNESS_DIR/agent.py\n",
            "$HARNESS_DIR/agent.py; sleep 1000\n",
        );
    std::fs::write(repo.root.join("harness.yaml"), manifest).unwrap();
    repo.git(&["commit", "-qam", "Sleep after the agent"]);
    let mut cmd = repo.harness_cmd(&["run", "--tasks", "word-count", "--split", "held_in"]);
    cmd.env(KEY_VAR, KEY);
    let seen = || format!("{:#?}", server.seen());
    let status = interrupt_twice(
        cmd,
        ("the agent's model calls", &|| {
            reported.lock().unwrap().requests.len() >= 2
        }),
        &seen,
    )
    .await;
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(
        server.state.containers.lock().unwrap().is_empty(),
        "the pod is deleted: {:#?}",
        server.seen()
    );
    // The tunnel's exec ended (with its Pod: the agent's phase never ended).
    let tunnels = server
        .seen()
        .iter()
        .filter(|l| l.contains("/exec?") && decode(l).contains("__tunnel"))
        .count();
    assert_eq!(tunnels, 1, "{:#?}", server.seen());
    let ended = || {
        let seen = server.seen();
        seen.iter()
            .enumerate()
            .filter(|(_, l)| l.contains("/exec?") && decode(l).contains("__tunnel"))
            .all(|(i, _)| seen.contains(&format!("ended {i}")))
    };
    until("the tunnel's end", &ended, &seen).await;
}

/// One `protocol: command` trial on a real cluster (see `kubernetes::real_cluster`; the image
/// needs `python3`): the agent program in its Pod reaches the stand-in model on this host's
/// loopback through the gateway's tunnel over the cluster's exec API, and passes.
#[test]
fn a_command_trial_on_a_real_cluster() {
    let Some(k) = real_cluster("a_command_trial_on_a_real_cluster") else {
        return;
    };
    let (base_url, reported) = serve();
    let repo = kube_command_repo(k, "stdlib_agent.py", "", &base_url);
    let (run, trace) = run_word_count(&repo);
    assert_eq!(run.code, 0, "{run:#?}\n{trace:#}");
    assert!(run.stdout.contains("1/1"), "{}", run.stdout);
    let r = reported.lock().unwrap();
    assert_eq!(r.requests.len(), 2, "{trace:#}");
    assert_eq!(usage_of(&trace), (r.prompt, r.completion));
}
