//! The Kubernetes runner. Without a cluster: the requests it makes, against a stand-in API
//! service (a tower `Service` given to `kube::Client::new`, kube's mock pattern), and its exec and file transfer over a loopback websocket server (`support::kube`) that
//! speaks the API's channel protocol (`v5.channel.k8s.io` and `v4`) and runs the commands in a
//! real Docker container. With `GIT_HARNESS_TEST_KUBECONFIG`: one oracle trial on that cluster
//! (`GIT_HARNESS_TEST_REQUIRE_KUBERNETES=1` makes a missing cluster a failure).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use git_harness::experiment::{KubernetesConfig, PullPolicy};
use git_harness::sandbox::kubernetes::spec::{PodPlan, pod_command};
use git_harness::sandbox::kubernetes::{KubeSandbox, PodGuard};
use git_harness::sandbox::{
    CreateOptions, ExecRequest, KubeProvider, PhaseNetworks, Sandbox, SandboxProvider,
};
use git_harness::task::Task;
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

use crate::support::interrupt::interrupt_twice;
use crate::support::kube::{ExecServer, NS, pod_container, real_cluster};
use crate::support::loops::{Repo, harness_in};
use crate::support::repo::with_runner_kind;
use crate::support::sandbox::{TEST_LABEL, docker_or_skip, fixture_task, in_ci};

fn kube_cfg(registry: Option<&str>) -> KubernetesConfig {
    KubernetesConfig {
        kubeconfig: None,
        context: None,
        namespace: NS.into(),
        registry: registry.map(String::from),
    }
}

#[test]
fn trial_ids_become_kubernetes_names() {
    use git_harness::sandbox::kubernetes::spec::dns_label;
    assert_eq!(dns_label("t19a2b3c4d-verifier"), "t19a2b3c4d-verifier");
    let odd = dns_label("Task_One/x");
    assert!(odd.starts_with("task-one-x-") && odd.len() == 19, "{odd}");
    let long = dns_label(&"a".repeat(100));
    assert_eq!(long.len(), 63, "{long}");
    assert_ne!(long, dns_label(&"a".repeat(101)));
    assert!(dns_label("--").starts_with("x-"));
}

/// A request as the mock service saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    body: Value,
}

/// A client whose requests go to `answer` (status, JSON body), a stand-in for the API server
/// as a tower service; every request is recorded.
fn mock_client(
    answer: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static,
) -> (kube::Client, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let answer = Arc::new(answer);
    let svc = tower::service_fn(move |req: Request<Body>| {
        let (log, answer) = (log.clone(), answer.clone());
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await?;
            let s = Seen {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (status, text) = answer(&s);
            log.lock().unwrap().push(s);
            Ok::<_, kube::Error>(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(text.into_bytes()))
                    .unwrap(),
            )
        }
    });
    (kube::Client::new(svc, NS), seen)
}

fn pod_with(phase: &str, waiting: Option<&str>) -> Value {
    let mut statuses = json!([]);
    if let Some(reason) = waiting {
        statuses = json!([{
            "name": "trial", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": "pull access denied"}}
        }]);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": NS, "resourceVersion": "2"},
        "status": {"phase": phase, "containerStatuses": statuses}
    })
}

/// The answers of a cluster where the Pod runs after one Pending event (or, with `waiting`,
/// never leaves it for that reason).
fn cluster(
    waiting: Option<&'static str>,
) -> impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static {
    move |s: &Seen| {
        let path = s.uri.split('?').next().unwrap_or_default().to_string();
        match s.method.as_str() {
            "POST" => {
                let mut obj = s.body.clone();
                obj["metadata"]["resourceVersion"] = json!("1");
                obj["metadata"]["namespace"] = json!(NS);
                (201, obj.to_string())
            }
            "GET" if s.uri.contains("watch=true") => {
                let first = json!({"type": "ADDED", "object": pod_with("Pending", None)});
                let second = match waiting {
                    None => json!({"type": "MODIFIED", "object": pod_with("Running", None)}),
                    Some(r) => json!({"type": "MODIFIED", "object": pod_with("Pending", Some(r))}),
                };
                (200, format!("{first}\n{second}\n"))
            }
            "DELETE" => (
                200,
                json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success", "code": 200})
                    .to_string(),
            ),
            m => panic!("unexpected request {m} {path}"),
        }
    }
}

/// A Harbor-style task on `image`, with limits and a network mode.
fn task(image: Option<&str>, network: &str) -> Task {
    let mut t = fixture_task("hello-file");
    t.environment.docker_image = image.map(String::from);
    t.environment.cpus = Some(1.5);
    t.environment.memory_mb = Some(2048);
    t.environment.network_mode = Some(network.into());
    t.environment.workdir = "/app".into();
    t
}

fn requests(seen: &Arc<Mutex<Vec<Seen>>>) -> Vec<Seen> {
    seen.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_pod_has_limits_no_token_labels_and_a_deny_all_policy() {
    let (client, seen) = mock_client(cluster(None));
    let map = BTreeMap::from([("ubuntu:24.04".to_string(), "mirror/ubuntu".to_string())]);
    let labels = BTreeMap::from([(TEST_LABEL.0.to_string(), TEST_LABEL.1.to_string())]);
    let provider = KubeProvider::new(kube_cfg(Some("registry.example:5000/tb")), map, labels)
        .with_client(client)
        .with_pull(PullPolicy::Always);
    let opts = CreateOptions {
        trial_id: Some("t1a2b".into()),
        ..Default::default()
    };
    let sb = provider
        .create_with(&task(Some("ubuntu:24.04"), "no-network"), &opts)
        .await
        .expect("the pod runs");
    assert_eq!(sb.trial_id(), "t1a2b");
    let reqs = requests(&seen);
    let kinds: Vec<String> = reqs
        .iter()
        .map(|s| format!("{} {}", s.method, s.uri.split('?').next().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            format!("POST /apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"),
            format!("POST /api/v1/namespaces/{NS}/pods"),
            format!("GET /api/v1/namespaces/{NS}/pods"),
        ],
        "the policy exists before the pod does"
    );

    // The policy: the trial's pod, nothing in or out.
    let np = &reqs[0].body;
    assert_eq!(np["metadata"]["name"], "git-harness-t1a2b");
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"]["git-harness/trial"],
        "t1a2b"
    );
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(np["spec"]["egress"], json!([]));
    assert_eq!(np["spec"]["ingress"], json!([]));

    // The pod.
    let pod = &reqs[1].body;
    let meta = &pod["metadata"];
    assert_eq!(meta["name"], "git-harness-t1a2b");
    assert_eq!(
        meta["labels"]["app.kubernetes.io/managed-by"],
        "git-harness"
    );
    assert_eq!(meta["labels"]["git-harness/trial"], "t1a2b");
    assert_eq!(meta["labels"][TEST_LABEL.0], TEST_LABEL.1);
    let owner = meta["labels"]["git-harness/owner"].as_str().unwrap();
    assert!(
        owner.starts_with(&format!("{}.", std::process::id())),
        "{owner}"
    );
    assert!(meta["labels"]["git-harness/host"].as_str().is_some());
    assert_eq!(meta["annotations"]["git-harness/task"], "hello-file");
    let spec = &pod["spec"];
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["enableServiceLinks"], false);
    assert_eq!(spec["restartPolicy"], "Never");
    let c = &spec["containers"][0];
    assert_eq!(c["name"], "trial");
    assert_eq!(c["image"], "registry.example:5000/tb/mirror/ubuntu");
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["workingDir"], "/app");
    assert_eq!(c["command"], json!(pod_command()));
    let cmd = c["command"][2].as_str().unwrap();
    assert!(
        cmd.contains("sleep 2147483647 & wait") && cmd.contains("trap"),
        "{cmd}"
    );
    for r in ["limits", "requests"] {
        assert_eq!(c["resources"][r]["cpu"], "1500m");
        assert_eq!(c["resources"][r]["memory"], "2048Mi");
    }

    // The watch: this pod only, from the version the creation returned.
    let watch = &reqs[2].uri;
    assert!(watch.contains("watch=true"), "{watch}");
    assert!(watch.contains("resourceVersion=1"), "{watch}");
    assert!(
        watch.contains("fieldSelector=metadata.name%3Dgit-harness-t1a2b"),
        "{watch}"
    );

    // Dropped without destroy (an aborted trial): the pod and its policy go.
    drop(sb);
    let deletes: Vec<String> = requests(&seen)
        .iter()
        .filter(|s| s.method == "DELETE")
        .map(|s| s.uri.split('?').next().unwrap().to_string())
        .collect();
    assert_eq!(
        deletes,
        vec![
            format!("/api/v1/namespaces/{NS}/pods/git-harness-t1a2b"),
            format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/git-harness-t1a2b"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_cannot_pull_its_image_fails_the_start_and_is_deleted() {
    let (client, seen) = mock_client(cluster(Some("ErrImagePull")));
    let provider =
        KubeProvider::new(kube_cfg(None), BTreeMap::new(), BTreeMap::new()).with_client(client);
    let err = provider
        .create(&task(Some("private/app:1"), "public"))
        .await
        .err()
        .expect("the start fails");
    let text = err.to_string();
    assert!(
        text.contains("ErrImagePull") && text.contains("private/app:1"),
        "{text}"
    );
    let reqs = requests(&seen);
    assert!(
        !reqs.iter().any(|s| s.uri.contains("networkpolicies")),
        "a public task gets no policy: {reqs:?}"
    );
    let created = reqs
        .iter()
        .find(|s| s.method == "POST")
        .expect("a pod was created");
    let name = created.body["metadata"]["name"].as_str().unwrap();
    assert!(
        reqs.iter()
            .any(|s| s.method == "DELETE" && s.uri.contains(&format!("/pods/{name}"))),
        "the failed pod was deleted: {reqs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_that_need_an_image_built_are_refused_before_any_request() {
    let (client, seen) = mock_client(cluster(None));
    let provider =
        KubeProvider::new(kube_cfg(None), BTreeMap::new(), BTreeMap::new()).with_client(client);
    let dir = tempfile::tempdir().unwrap();
    let dockerfile = dir.path().join("Dockerfile");
    std::fs::write(&dockerfile, "FROM python:3.13\nRUN pip install numpy\n").unwrap();
    let mut t = task(None, "public");
    t.dockerfile = Some(dockerfile);
    let err = provider.create(&t).await.err().expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("builds no images") && text.contains("pip install numpy"),
        "{text}"
    );
    assert!(requests(&seen).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_deletes_pods_of_dead_processes_only() {
    let me = git_harness::support::owner::Owner::me().to_string();
    let host = git_harness::support::owner::host_id();
    let pod = |name: &str, owner: &str| {
        json!({"metadata": {"name": name, "labels": {
            "app.kubernetes.io/managed-by": "git-harness",
            "git-harness/owner": owner, "git-harness/host": host}}})
    };
    let pods = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {},
        "items": [pod("live", &me), pod("dead", "4194303.7")]});
    let policies = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicyList",
        "metadata": {}, "items": [pod("dead", "4194303.7")]});
    let (client, seen) = mock_client(move |s| match s.method.as_str() {
        "GET" if s.uri.contains("networkpolicies") => (200, policies.to_string()),
        "GET" => (200, pods.to_string()),
        _ => (
            200,
            json!({"kind": "Status", "status": "Success"}).to_string(),
        ),
    });
    let provider =
        KubeProvider::new(kube_cfg(None), BTreeMap::new(), BTreeMap::new()).with_client(client);
    assert_eq!(provider.sweep().await.unwrap(), 1);
    let reqs = requests(&seen);
    let list = &reqs[0].uri;
    assert!(
        list.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dgit-harness"),
        "{list}"
    );
    let deleted: Vec<&str> = reqs
        .iter()
        .filter(|s| s.method == "DELETE")
        .map(|s| s.uri.split('?').next().unwrap())
        .collect();
    assert_eq!(
        deleted,
        vec![
            format!("/api/v1/namespaces/{NS}/pods/dead"),
            format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/dead"),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Exec over the websocket, against a loopback server speaking the channel protocol.

/// A container like a trial's pod (the same main command), removed when dropped.
struct Container(String);

impl Container {
    fn start() -> Container {
        let image = git_harness::sandbox::image::BASE_IMAGE;
        Container(pod_container(image, "/app", &pod_command()))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

fn sandbox_on(client: kube::Client, name: &str) -> KubeSandbox {
    let pods = kube::Api::namespaced(client.clone(), NS);
    let policies = kube::Api::namespaced(client, NS);
    let plan = PodPlan {
        name: name.into(),
        image: git_harness::sandbox::image::BASE_IMAGE.into(),
        pull: PullPolicy::Never,
        trial_label: name.into(),
        task_id: "t".into(),
        labels: BTreeMap::new(),
    };
    let all = PhaseNetworks {
        setup: true,
        agent: true,
        verifier: true,
    };
    KubeSandbox::new(
        PodGuard::new(pods, policies, name.into()),
        plan,
        "/app".into(),
        all,
        name,
    )
}

fn req(cmd: &str, secs: u64) -> ExecRequest {
    ExecRequest::new(cmd, Duration::from_secs(secs))
}

/// How many processes in the container run a command line starting with `marker`.
async fn count(sb: &KubeSandbox, marker: &str) -> String {
    let script = format!(
        "n=0; for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); \
         case \"$c\" in '{marker}'*) n=$((n+1));; esac; done; echo $n"
    );
    let out = sb.exec(req(&script, 30)).await.unwrap();
    out.output.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_files_over_the_websocket_channel_protocol() {
    if docker_or_skip("exec_and_files_over_the_websocket_channel_protocol")
        .await
        .is_none()
    {
        return;
    }
    for protocol in ["v5.channel.k8s.io", "v4.channel.k8s.io"] {
        // Deleting the pod removes its container: one per round.
        let container = Container::start();
        let pods = BTreeMap::from([("git-harness-tws".to_string(), container.0.clone())]);
        let server = ExecServer::start(pods, protocol).await;
        let mut sb = sandbox_on(server.client(), "git-harness-tws");

        // Output in order (stderr joined), the exit code, the environment, the directory.
        let mut r = req("echo $HARNESS_LOGS_DIR $FOO; pwd; echo err >&2; exit 3", 30);
        r.env.push(("FOO".into(), "it's".into()));
        r.workdir = Some("/tmp".into());
        let out = sb.exec(r).await.unwrap();
        assert_eq!(out.exit_code, Some(3), "{protocol}: {out:?}");
        assert_eq!(out.output, "/logs it's\n/tmp\nerr\n", "{protocol}");
        assert!(sb.exec(req("true", 30)).await.unwrap().success());

        // A command larger than any argument list travels on stdin.
        let big = format!("# {}\necho done", "x".repeat(300_000));
        let out = sb.exec(req(&big, 60)).await.unwrap();
        assert_eq!(out.output, "done\n", "{protocol}");

        // A timeout kills the command's whole process group.
        let out = sb
            .exec(req("sleep 1001 & sleep 1001; echo never", 2))
            .await
            .unwrap();
        assert!(
            out.timed_out && out.exit_code.is_none(),
            "{protocol}: {out:?}"
        );
        assert_eq!(count(&sb, "sleep 1001").await, "0", "{protocol}");

        // Files in and out by tar, binary-safe; a missing one is an error.
        let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        sb.write_file("bin.dat", &data).await.unwrap();
        assert_eq!(sb.read_file("/app/bin.dat").await.unwrap(), data);
        assert!(sb.read_file("/app/missing").await.is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/f.txt"), "in\n").unwrap();
        sb.copy_dir_in(dir.path(), "/app/in").await.unwrap();
        let out = sb.exec(req("cat /app/in/sub/f.txt", 30)).await.unwrap();
        assert_eq!(out.output, "in\n", "{protocol}");

        // The verifier's directory in one download.
        sb.exec(req("echo 1 > /logs/verifier/reward.txt", 30))
            .await
            .unwrap();
        let files = sb
            .read_dir_files("/logs/verifier", &["reward.txt", "reward.json"])
            .await
            .unwrap();
        assert_eq!(files, vec![Some(b"1\n".to_vec()), None], "{protocol}");

        // A process that left its session is ended before the verifier; the pod's own
        // sleep stays.
        // (The command waits until the sleep is in a session of its own, field 6 of its stat,
        // so the group kill at its end cannot catch it first.)
        let escape = "setsid sleep 1002 > /dev/null 2>&1 < /dev/null & p=$!\n\
                      for i in $(seq 200); do set -- $(cat /proc/$p/stat); [ \"$6\" = \"$p\" ] && break; sleep 0.05; done";
        sb.exec(req(escape, 30)).await.unwrap();
        assert_eq!(count(&sb, "sleep 1002").await, "1", "{protocol}");
        sb.kill_strays().await.unwrap();
        assert_eq!(count(&sb, "sleep 1002").await, "0", "{protocol}");
        assert_eq!(count(&sb, "sleep 2147483647").await, "1", "{protocol}");

        // Every exec asked for stdin and stdout, stderr joined, no tty, the trial's container.
        let execs: Vec<String> = server
            .seen()
            .into_iter()
            .filter(|l| l.contains("/exec?"))
            .collect();
        assert!(!execs.is_empty());
        for e in &execs {
            assert!(
                e.starts_with(&format!(
                    "GET /api/v1/namespaces/{NS}/pods/git-harness-tws/exec?"
                )),
                "{e}"
            );
            assert!(
                e.contains("container=trial") && e.contains("stdout=true"),
                "{e}"
            );
            assert!(!e.contains("stderr=true") && !e.contains("tty=true"), "{e}");
        }

        sb.destroy().await.unwrap();
        assert!(
            server.seen().iter().any(|l| l.starts_with(&format!(
                "DELETE /api/v1/namespaces/{NS}/pods/git-harness-tws"
            ))),
            "{:?}",
            server.seen()
        );
        assert!(sb.exec(req("true", 5)).await.is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// experiment.yaml

#[test]
fn kubernetes_settings_are_validated_naming_file_and_field() {
    let repo = Repo::init("minimal");
    let original = repo.read(".harness/experiment.yaml");
    let set = |block: &str| repo.edit_experiment(|_| with_runner_kind(&original, block));
    set("  kind: kubernetes\n");
    let out = repo.harness(&["status"]).code(2);
    assert!(
        out.stderr.contains("runner.kubernetes") && out.stderr.contains("experiment.yaml"),
        "{}",
        out.stderr
    );
    set("  kind: kubernetes\n  kubernetes:\n    namespace: Trials_1\n");
    let out = repo.harness(&["status"]).code(2);
    assert!(
        out.stderr.contains("runner.kubernetes.namespace") && out.stderr.contains("Trials_1"),
        "{}",
        out.stderr
    );
    set(
        "  kind: kubernetes\n  kubernetes:\n    namespace: trials\n    registry: https://r.example/\n",
    );
    let out = repo.harness(&["status"]).code(2);
    assert!(
        out.stderr.contains("runner.kubernetes.registry"),
        "{}",
        out.stderr
    );
    set("  kind: kubernetes\n  kubernetes:\n    namespace: trials\n    cluster: x\n");
    let out = repo.harness(&["status"]).code(2);
    assert!(out.stderr.contains("cluster"), "{}", out.stderr);
    set(
        "  kind: kubernetes\n  kubernetes:\n    namespace: trials\n    registry: r.example:5000/mirror\n",
    );
    repo.harness(&["status"]).ok();

    // `init --runner kubernetes` writes a configuration that reads.
    let tmp = tempfile::tempdir().unwrap();
    harness_in(tmp.path(), &["init", "h", "--runner", "kubernetes"]).ok();
    let text = std::fs::read_to_string(tmp.path().join("h/.harness/experiment.yaml")).unwrap();
    assert!(
        text.contains("kind: kubernetes") && text.contains("namespace: default"),
        "{text}"
    );
    harness_in(&tmp.path().join("h"), &["status"]).ok();
}

/// One oracle trial of `word-count`, its results as JSON (without the last two arguments:
/// as text).
const ORACLE_RUN_JSON: &[&str] = &[
    "run",
    "--agent",
    "oracle",
    "--tasks",
    "word-count",
    "--trials",
    "1",
    "--format",
    "json",
];

/// The totals of a `run --format json` output with trials: (passes, trials, infra errors).
pub(crate) fn totals(stdout: &str) -> Vec<(u64, u64, u64)> {
    let v: Value = serde_json::from_str(stdout).expect("run json");
    v["totals"]
        .as_object()
        .expect("totals")
        .values()
        .map(|t| {
            (
                t["passes"].as_u64().unwrap(),
                t["trials"].as_u64().unwrap(),
                t["infra_errors"].as_u64().unwrap(),
            )
        })
        .filter(|t| t.1 > 0)
        .collect()
}

/// The whole path through the binary: the sweep, the Pod, the seeding of the base image, the
/// oracle, the verifier, the deletion, on the stand-in cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oracle_trial_through_the_binary_on_a_stand_in_cluster() {
    if docker_or_skip("an_oracle_trial_through_the_binary_on_a_stand_in_cluster")
        .await
        .is_none()
    {
        return;
    }
    let server = ExecServer::start(BTreeMap::new(), "v5.channel.k8s.io").await;
    let repo = Repo::small("minimal");
    repo.edit_experiment(|t| with_runner_kind(t, &server.runner_block()));
    let out = tokio::task::spawn_blocking(move || repo.harness(ORACLE_RUN_JSON))
        .await
        .unwrap()
        .ok();
    assert_eq!(totals(&out.stdout), vec![(1, 1, 0)], "{}", out.stdout);
    let seen = server.seen();
    let calls = |method: &str, prefix: &str| {
        seen.iter()
            .filter(|l| {
                let mut parts = l.split(' ');
                parts.next() == Some(method)
                    && parts
                        .next()
                        .and_then(|t| t.split('?').next())
                        .is_some_and(|p| p.starts_with(prefix))
            })
            .count()
    };
    let created = calls("POST", &format!("/api/v1/namespaces/{NS}/pods"));
    let deleted = calls(
        "DELETE",
        &format!("/api/v1/namespaces/{NS}/pods/git-harness-"),
    );
    assert!(created >= 1, "{seen:#?}");
    assert_eq!(created, deleted, "every pod is deleted: {seen:#?}");
    assert!(
        seen.iter().any(|l| l.contains("labelSelector=")),
        "the run swept leftovers first: {seen:#?}"
    );
    assert!(server.state.containers.lock().unwrap().is_empty());
}

/// Through `runner.registry` (a real one on loopback), the Pod runs the base image pinned to the
/// registry's digest, and the digest is the cache key's environment: the same tag pushed
/// again with other content runs again instead of reusing the results of the image it replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_the_registry_image_by_digest_and_a_re_pushed_tag_is_a_new_environment() {
    let test = "pods_run_the_registry_image_by_digest_and_a_re_pushed_tag_is_a_new_environment";
    if docker_or_skip(test).await.is_none() {
        return;
    }
    if !std::path::Path::new(crate::support::registry::PROGRAM).exists() {
        assert!(!in_ci(), "{test}: docker-registry is required in CI");
        eprintln!("SKIPPED {test}: no docker-registry");
        return;
    }
    let registry = crate::support::registry::Registry::start();
    let url = registry.url();
    let _untag = crate::docker_registry::Untag(format!("{url}/"));
    let name = format!("{url}/git-harness/base:bookworm");
    let docker = |args: &[&str]| {
        let o = std::process::Command::new("docker")
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    docker(&["tag", git_harness::sandbox::image::BASE_IMAGE, &name]);
    docker(&["push", &name]);
    let server = ExecServer::start(BTreeMap::new(), "v5.channel.k8s.io").await;
    let repo = Arc::new(Repo::small("minimal"));
    let block = format!(
        "{}  registry:\n    url: {url}\n    insecure: true\n",
        server.runner_block()
    );
    repo.edit_experiment(|t| with_runner_kind(t, &block));
    let run = || {
        let repo = repo.clone();
        async move {
            tokio::task::spawn_blocking(move || repo.harness(ORACLE_RUN_JSON).ok())
                .await
                .unwrap()
        }
    };
    let executed = |out: &crate::support::hermetic::Out| {
        serde_json::from_str::<Value>(&out.stdout).unwrap()["executed"]
            .as_u64()
            .unwrap()
    };
    let first = run().await;
    assert_eq!(totals(&first.stdout), vec![(1, 1, 0)], "{}", first.stderr);
    let cached = run().await;
    assert_eq!(executed(&cached), 0, "{}", cached.stderr);
    // Other content under the same tag.
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}\nLABEL git-harness.test=repushed\n",
            git_harness::sandbox::image::BASE_IMAGE
        ),
    )
    .unwrap();
    docker(&["build", "-q", "-t", &name, &ctx.path().to_string_lossy()]);
    docker(&["push", &name]);
    let again = run().await;
    assert_eq!(
        executed(&again),
        1,
        "results of the replaced image were reused: {}",
        again.stderr
    );
    let images = server.state.images.lock().unwrap().clone();
    let pinned = format!("{url}/git-harness/base@sha256:");
    assert_eq!(images.len(), 2, "{images:?}");
    assert!(images.iter().all(|i| i.starts_with(&pinned)), "{images:?}");
    assert_ne!(
        images[0], images[1],
        "the second Pod runs the re-pushed image"
    );
    assert!(server.state.containers.lock().unwrap().is_empty());
}

/// The toolchain check without a container diff: the Pod's toolchain listed before the agent's
/// first command and again before the verifier. New commands are no tampering; a replaced
/// command, a command that shadows one later on PATH and a Python startup hook are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_replaces_a_path_command_in_its_pod_is_caught_before_the_verifier() {
    let test = "an_agent_that_replaces_a_path_command_in_its_pod_is_caught_before_the_verifier";
    if docker_or_skip(test).await.is_none() {
        return;
    }
    let server = ExecServer::start(BTreeMap::new(), "v5.channel.k8s.io").await;
    let provider = KubeProvider::new(kube_cfg(None), BTreeMap::new(), BTreeMap::new())
        .with_client(server.client())
        .with_pull(PullPolicy::Never);
    let mut sb = provider
        .create_with(&task(None, "no-network"), &CreateOptions::default())
        .await
        .unwrap();
    let run = |cmd: &'static str| {
        let out = sb.exec(req(cmd, 30));
        async move {
            let out = out.await.unwrap();
            assert!(out.success(), "{cmd}: {}", out.output);
        }
    };
    run("echo ok > /app/out.txt; printf '#!/bin/sh\\n' > /usr/local/bin/newtool; chmod +x /usr/local/bin/newtool").await;
    sb.kill_strays().await.unwrap();
    assert_eq!(sb.toolchain_changes().await.unwrap(), Vec::<String>::new());
    let path = sb.verifier_path().unwrap_or_default();
    assert!(path.split(':').any(|d| d == "/usr/bin"), "{path}");

    run("cp /bin/true /usr/bin/grep && cp /bin/true /usr/local/bin/ls && mkdir -p /usr/lib/python3/dist-packages && echo 'import os' > /usr/lib/python3/dist-packages/sitecustomize.py").await;
    sb.kill_strays().await.unwrap();
    let found = sb.toolchain_changes().await.unwrap();
    for want in [
        "changed /usr/bin/grep",
        "added /usr/local/bin/ls (shadows a command on PATH)",
        "added /usr/lib/python3/dist-packages/sitecustomize.py",
    ] {
        assert!(found.iter().any(|f| f == want), "{want} not in {found:?}");
    }
    assert!(!found.iter().any(|f| f.contains("newtool")), "{found:?}");
    // Without the stray kill first, the check lists the toolchain itself.
    assert_eq!(sb.toolchain_changes().await.unwrap(), found);
    sb.destroy().await.unwrap();
    assert!(server.state.containers.lock().unwrap().is_empty());
}

/// SIGINT while a trial's Pod is starting: the run stops (exit 130) and the Pod is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_leaves_no_pod() {
    if docker_or_skip("an_interrupted_run_leaves_no_pod")
        .await
        .is_none()
    {
        return;
    }
    let server = ExecServer::start_with(BTreeMap::new(), "v5.channel.k8s.io", true).await;
    let repo = Repo::small("minimal");
    repo.edit_experiment(|t| with_runner_kind(t, &server.runner_block()));
    let cmd = repo.harness_cmd(&ORACLE_RUN_JSON[..7]);
    // The first stops scheduling and waits for the trial; the second aborts it.
    let status = interrupt_twice(
        cmd,
        ("a pod", &|| {
            !server.state.containers.lock().unwrap().is_empty()
        }),
        &|| format!("{:#?}", server.seen()),
    )
    .await;
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(
        server.state.containers.lock().unwrap().is_empty(),
        "the pod is deleted: {:#?}",
        server.seen()
    );
}

// ---------------------------------------------------------------------------------------------
// A real cluster.

/// One oracle trial of a demo task on a real cluster (see [`real_cluster`]).
#[test]
fn an_oracle_trial_on_a_real_cluster() {
    let Some(k) = real_cluster("an_oracle_trial_on_a_real_cluster") else {
        return;
    };
    let repo = Repo::small("minimal");
    let block = format!("  kind: kubernetes\n  kubernetes: {k}\n");
    repo.edit_experiment(|t| with_runner_kind(t, &block));
    let out = repo.harness(ORACLE_RUN_JSON).ok();
    assert_eq!(totals(&out.stdout), vec![(1, 1, 0)], "{}", out.stdout);
}
