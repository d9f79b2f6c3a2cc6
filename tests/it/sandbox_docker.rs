//! The Docker sandbox against a real daemon. Skips loudly only when no daemon answers and CI is
//! unset; in CI it must run (the base image comes from .ci/docker.sh).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::sandbox::*;
use git_harness::eval::builtin::check_tasks;
use git_harness::eval::{VerifyOptions, verify};
use git_harness::sandbox::docker::TRIAL_LABEL;
use git_harness::sandbox::{
    CreateOptions, DockerProvider, ExecRequest, Sandbox, SandboxProvider, new_trial_id,
};

async fn containers_of(p: &DockerProvider, trial: &str) -> Vec<String> {
    p.list_ours(&[(TRIAL_LABEL, trial)]).await.unwrap()
}

async fn create(
    p: &Arc<DockerProvider>,
    task: &git_harness::task::Task,
) -> (Box<dyn Sandbox>, String) {
    let id = new_trial_id();
    let sb = p
        .create_with(
            task,
            &CreateOptions {
                trial_id: Some(id.clone()),
                ..CreateOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(containers_of(p, &id).await.len(), 1);
    (sb, id)
}

#[tokio::test]
async fn docker_tasks_check_oracle_passes_nop_fails() {
    let Some(p) = docker_or_skip("docker_tasks_check_oracle_passes_nop_fails").await else {
        return;
    };
    let suite = suite();
    let provider: Arc<dyn SandboxProvider> = p.clone();
    let checks = check_tasks(provider, &suite.tasks, 3, &VerifyOptions::default()).await;
    for c in &checks {
        let oracle = c
            .oracle
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: oracle trial failed: {e}", c.task));
        let nop = c
            .nop
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: nop trial failed: {e}", c.task));
        assert!(oracle.verifier.passed, "{}: {:?}", c.task, oracle.verifier);
        assert!(!nop.verifier.passed, "{}: {:?}", c.task, nop.verifier);
        assert!(
            containers_of(&p, &oracle.trial_id).await.is_empty(),
            "container of {} left",
            oracle.trial_id
        );
        assert!(containers_of(&p, &nop.trial_id).await.is_empty());
    }
    assert_eq!(checks.len(), 3);
}

#[tokio::test]
async fn docker_forged_reward_is_ignored() {
    let Some(p) = docker_or_skip("docker_forged_reward_is_ignored").await else {
        return;
    };
    let task = fixture_task("hello-file");
    let (mut sb, _) = create(&p, &task).await;
    // A plain forgery, and a delayed one from a process that escaped its process group; its
    // unique delay marks it in the process table.
    let delay = format!("2.{}", rand::random::<u16>());
    let forge = format!(
        "echo 1 > /logs/verifier/reward.txt; echo '{{\"reward\": 1}}' > /logs/verifier/reward.json; \
         setsid sh -c 'sleep {delay}; echo 1 > /logs/verifier/reward.txt; echo {{\\\"reward\\\":1}} > /logs/verifier/reward.json' \
         >/dev/null 2>&1 < /dev/null &"
    );
    let out = sb
        .exec(ExecRequest::new(forge, Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    let outcome = verify(sb.as_ref(), &task, &VerifyOptions::default())
        .await
        .unwrap();
    assert_eq!(outcome.reward, 0.0, "{outcome:?}");
    // Read the reward once the delayed forger has ended (killed, or done writing).
    let forger = format!("sleep {delay}");
    assert_eq!(
        survivors(&forger, GONE_WITHIN).await,
        Vec::<String>::new(),
        "the delayed forger never ended"
    );
    let r = sb.read_file("/logs/verifier/reward.txt").await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r).trim(),
        "0",
        "an escaped process rewrote the reward later"
    );
    sb.destroy().await.unwrap();
}

#[tokio::test]
async fn docker_timeout_kills_process_tree_and_destroy_removes_container() {
    let Some(p) =
        docker_or_skip("docker_timeout_kills_process_tree_and_destroy_removes_container").await
    else {
        return;
    };
    let task = fixture_task("hello-file");
    let (mut sb, id) = create(&p, &task).await;
    let m = exec_timeout_kills_the_tree(sb.as_mut(), Duration::from_secs(2)).await;
    // `1[0]00...` matches the sleeps' command lines but not grep's own.
    let pattern = format!("1[0]00\\.{}", &m[5..]);
    let ps = sb
        .exec(ExecRequest::new(
            format!("grep -l '{pattern}' /proc/[0-9]*/cmdline 2>/dev/null | wc -l"),
            Duration::from_secs(5),
        ))
        .await
        .unwrap();
    assert_eq!(ps.output.trim(), "0", "inside the container: {}", ps.output);
    sb.destroy().await.unwrap();
    sb.destroy().await.unwrap(); // idempotent
    assert!(
        containers_of(&p, &id).await.is_empty(),
        "container left after destroy"
    );
}

#[tokio::test]
async fn docker_background_children_end_with_their_exec() {
    let Some(p) = docker_or_skip("docker_background_children_end_with_their_exec").await else {
        return;
    };
    let task = fixture_task("hello-file");
    let (mut sb, _) = create(&p, &task).await;
    let m = sleep_marker();
    let t0 = Instant::now();
    let out = sb
        .exec(ExecRequest::new(
            format!("sleep {m} & echo done"),
            Duration::from_secs(30),
        ))
        .await
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(survivors(&m, GONE_WITHIN).await, Vec::<String>::new());
    let fail = sb
        .exec(ExecRequest::new("exit 3", Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(
        fail.exit_code,
        Some(3),
        "a non-zero exit is a result, not an error"
    );
    sb.destroy().await.unwrap();
}

#[tokio::test]
async fn docker_dropped_sandbox_removes_its_container() {
    let Some(p) = docker_or_skip("docker_dropped_sandbox_removes_its_container").await else {
        return;
    };
    let task = fixture_task("hello-file");
    let (sb, id) = create(&p, &task).await;
    let fut = sb.exec(ExecRequest::new("sleep 600", Duration::from_secs(600)));
    assert!(
        tokio::time::timeout(Duration::from_millis(800), fut)
            .await
            .is_err()
    );
    drop(sb); // no destroy: the guard removes the container synchronously
    assert!(
        containers_of(&p, &id).await.is_empty(),
        "the drop guard left the container"
    );

    // A panic inside a trial also cleans up.
    let p2 = p.clone();
    let id2 = new_trial_id();
    let id2c = id2.clone();
    let h = tokio::spawn(async move {
        let _sb = p2
            .create_with(
                &task,
                &CreateOptions {
                    trial_id: Some(id2c),
                    ..CreateOptions::default()
                },
            )
            .await
            .unwrap();
        panic!("trial panics while its sandbox is alive");
    });
    assert!(h.await.is_err());
    assert!(
        containers_of(&p, &id2).await.is_empty(),
        "a panic left the container"
    );
}

#[tokio::test]
async fn docker_files_roundtrip_and_environment() {
    let Some(p) = docker_or_skip("docker_files_roundtrip_and_environment").await else {
        return;
    };
    let task = fixture_task("sum-numbers");
    let (mut sb, _) = create(&p, &task).await;
    sb.write_file("sub/dir/note.txt", b"hello docker")
        .await
        .unwrap();
    assert_eq!(
        sb.read_file("/app/sub/dir/note.txt").await.unwrap(),
        b"hello docker"
    );
    assert!(sb.read_file("/app/missing").await.is_err());
    sb.copy_dir_in(&fixtures().join("suite/sum-numbers/tests"), "/tests")
        .await
        .unwrap();
    let out = sb
        .exec(ExecRequest::new(
            "echo \"$HARNESS_WORKDIR|$HARNESS_TESTS_DIR|$HARNESS_LOGS_DIR|$HARNESS_SOLUTION_DIR|$(pwd)\"; ls /tests; \
             wc -l < numbers.txt; cat /proc/net/dev | grep -c :",
            Duration::from_secs(10),
        ))
        .await
        .unwrap();
    sb.destroy().await.unwrap();
    let lines: Vec<&str> = out.output.lines().collect();
    assert_eq!(
        lines[0], "/app|/tests|/logs|/solution|/app",
        "{}",
        out.output
    );
    assert!(
        out.output.contains("check.py") && out.output.contains("test.sh"),
        "{}",
        out.output
    );
    assert!(
        out.output.contains("\n10\n"),
        "image built with setup: {}",
        out.output
    );
    assert!(
        out.output.trim_end().ends_with('1'),
        "network none: only lo: {}",
        out.output
    );
}

#[tokio::test]
async fn docker_image_map_rewrites_from_and_seeds_tasks_without_dockerfile() {
    let Some(_) =
        docker_or_skip("docker_image_map_rewrites_from_and_seeds_tasks_without_dockerfile").await
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // A task whose Dockerfile names an image that is not present (nothing is pulled).
    let t1 = tmp.path().join("mapped");
    std::fs::create_dir_all(t1.join("environment/workspace")).unwrap();
    std::fs::create_dir_all(t1.join("tests")).unwrap();
    std::fs::write(t1.join("instruction.md"), "x").unwrap();
    std::fs::write(t1.join("task.toml"), "[environment]\nworkdir = \"/work\"\n").unwrap();
    std::fs::write(
        t1.join("environment/Dockerfile"),
        "FROM ubuntu:24.04\nCOPY workspace/ /work/\n",
    )
    .unwrap();
    std::fs::write(t1.join("environment/workspace/f.txt"), "mapped").unwrap();
    std::fs::write(
        t1.join("tests/test.sh"),
        "echo 1 > /logs/verifier/reward.txt\n",
    )
    .unwrap();
    // A task with only a workspace and setup.sh: runs on the base image, seeded like local.
    let t2 = tmp.path().join("seeded");
    std::fs::create_dir_all(t2.join("environment/workspace")).unwrap();
    std::fs::create_dir_all(t2.join("tests")).unwrap();
    std::fs::write(t2.join("instruction.md"), "x").unwrap();
    std::fs::write(t2.join("environment/workspace/a.txt"), "seeded").unwrap();
    std::fs::write(t2.join("environment/setup.sh"), "echo from-setup > b.txt\n").unwrap();
    std::fs::write(
        t2.join("tests/test.sh"),
        "echo 1 > /logs/verifier/reward.txt\n",
    )
    .unwrap();
    let suite = git_harness::task::load_suite(tmp.path()).unwrap();

    let labels = [(TEST_LABEL.0.to_string(), TEST_LABEL.1.to_string())]
        .into_iter()
        .collect();
    let unmapped = DockerProvider::connect(Default::default(), labels).unwrap();
    let err = unmapped
        .create(suite.get("mapped").unwrap())
        .await
        .err()
        .expect("no registry: FROM must fail");
    assert_eq!(
        git_harness::sandbox::InfraClass::of(&err),
        Some(git_harness::sandbox::InfraClass::Sandbox),
        "{err}"
    );

    let labels = [(TEST_LABEL.0.to_string(), TEST_LABEL.1.to_string())]
        .into_iter()
        .collect();
    let map = [(
        "ubuntu:24.04".to_string(),
        git_harness::sandbox::image::BASE_IMAGE.to_string(),
    )]
    .into_iter()
    .collect();
    let mapped = DockerProvider::connect(map, labels).unwrap();
    let mut sb = mapped.create(suite.get("mapped").unwrap()).await.unwrap();
    assert_eq!(sb.read_file("f.txt").await.unwrap(), b"mapped");
    assert_eq!(sb.workdir(), "/work");
    sb.destroy().await.unwrap();
    let mut sb = mapped.create(suite.get("seeded").unwrap()).await.unwrap();
    let out = sb
        .exec(ExecRequest::new("cat a.txt b.txt", Duration::from_secs(5)))
        .await
        .unwrap();
    sb.destroy().await.unwrap();
    assert_eq!(out.output, "seededfrom-setup\n");
}

#[test]
fn docker_cli_tasks_check() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    if rt
        .block_on(docker_or_skip("docker_cli_tasks_check"))
        .is_none()
    {
        return;
    }
    let out = tasks_check(&["--runner", "docker"], &fixtures().join("suite")).ok();
    let stdout = &out.stdout;
    assert!(stdout.contains("3 tasks checked, 0 broken"), "{stdout}");
}

/// Build `tag` FROM the base image with one distinguishing file (test-labelled, throwaway).
async fn build_throwaway_base(docker: &bollard::Docker, tag: &str, variant: &str) -> String {
    use futures_util::StreamExt;
    let dockerfile = format!(
        "FROM {}\nRUN echo {variant} > /variant\n",
        git_harness::sandbox::image::BASE_IMAGE
    );
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(dockerfile.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "Dockerfile", dockerfile.as_bytes())
        .unwrap();
    let ctx = b.into_inner().unwrap();
    let opts = bollard::query_parameters::BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .labels(&std::collections::HashMap::from([(
            TEST_LABEL.0.to_string(),
            TEST_LABEL.1.to_string(),
        )]))
        .build();
    let mut stream = docker.build_image(opts, None, Some(bollard::body_full(ctx.into())));
    while let Some(item) = stream.next().await {
        let info = item.unwrap();
        assert!(info.error_detail.is_none(), "build {tag}: {info:?}");
    }
    docker.inspect_image(tag).await.unwrap().id.unwrap()
}

/// A repository whose suite (in `tmp`) is one task built FROM `from` (its Dockerfile), that
/// copies `/variant` to `/app/out`, under the Docker runner.
fn from_image_task_repo(
    tmp: &std::path::Path,
    task_id: &str,
    from: &str,
) -> crate::support::loops::Repo {
    let task = tmp.join("suite").join(task_id);
    for d in ["environment", "tests", "solution"] {
        std::fs::create_dir_all(task.join(d)).unwrap();
    }
    std::fs::write(task.join("instruction.md"), "Copy /variant to /app/out.\n").unwrap();
    std::fs::write(
        task.join("environment/Dockerfile"),
        format!("FROM {from}\nWORKDIR /app\n"),
    )
    .unwrap();
    std::fs::write(task.join("solution/solve.sh"), "cp /variant /app/out\n").unwrap();
    std::fs::write(
        task.join("tests/test.sh"),
        "mkdir -p /logs/verifier; cmp -s /variant /app/out && echo 1 > /logs/verifier/reward.txt || echo 0 > /logs/verifier/reward.txt\n",
    )
    .unwrap();
    let repo = crate::support::loops::Repo::init("minimal");
    repo.splits(&[task_id], &[], &[]);
    let suite_dir = tmp.join("suite");
    repo.edit_experiment(|t| {
        t.replace("kind: auto", "kind: docker").replace(
            "path: builtin:demo",
            &format!("path: {}", suite_dir.display()),
        )
    });
    assert!(
        repo.read(".harness/experiment.yaml")
            .contains("kind: docker"),
        "the runner is not Docker"
    );
    repo
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_rebuilt_from_image_rebuilds_the_task_image_and_misses_the_cache() {
    let Some(p) =
        docker_or_skip("docker_rebuilt_from_image_rebuilds_the_task_image_and_misses_the_cache")
            .await
    else {
        return;
    };
    let docker = p.client().await.unwrap();
    let unique = format!("{:08x}", rand::random::<u32>());
    let from = format!("git-harness/test-from-{unique}:1");
    let task_id = format!("rebuilt-from-{unique}");
    let task_images = format!("git-harness/task-{task_id}:");
    let _cleanup = RemoveImages {
        prefixes: vec![
            task_images.clone(),
            format!("git-harness/test-from-{unique}:"),
        ],
    };
    let first_id = build_throwaway_base(&docker, &from, "one").await;

    let tmp = tempfile::tempdir().unwrap();
    let repo = from_image_task_repo(tmp.path(), &task_id, &from);
    let run = |repo: &crate::support::loops::Repo| -> serde_json::Value {
        let out = repo.harness(&[
            "run", "--agent", "oracle", "--split", "held_in", "--trials", "1", "--format", "json",
        ]);
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("run json: {e}\n{}\n{}", out.stdout, out.stderr))
    };
    let outcome = |v: &serde_json::Value| v["results"][0]["outcome"].as_str().map(str::to_string);

    let r1 = tokio::task::block_in_place(|| run(&repo));
    assert_eq!(r1["executed"], 1, "{r1:#}");
    assert_eq!(outcome(&r1).as_deref(), Some("pass"), "{r1:#}");
    let r2 = tokio::task::block_in_place(|| run(&repo));
    assert_eq!(r2["executed"], 0, "served from the cache: {r2:#}");
    let built = tags_with(&docker, &task_images).await;
    assert_eq!(built.len(), 1, "{built:?}");

    // The FROM image is rebuilt under the same tag: a new task image, and the cache misses.
    let second_id = build_throwaway_base(&docker, &from, "two").await;
    assert_ne!(first_id, second_id);
    let r3 = tokio::task::block_in_place(|| run(&repo));
    assert_eq!(
        r3["executed"], 1,
        "a stale cached result was served: {r3:#}"
    );
    assert_eq!(outcome(&r3).as_deref(), Some("pass"), "{r3:#}");
    let rebuilt = tags_with(&docker, &task_images).await;
    assert_eq!(rebuilt.len(), 2, "{rebuilt:?}");

    // `image prune` removes the stale task image and keeps the current one.
    let dry = tokio::task::block_in_place(|| repo.harness(&["image", "prune", "--dry-run"]));
    assert_eq!(dry.code, 0, "{dry:?}");
    assert_eq!(tags_with(&docker, &task_images).await.len(), 2);
    let pruned = tokio::task::block_in_place(|| repo.harness(&["image", "prune"]));
    assert_eq!(pruned.code, 0, "{pruned:?}");
    let left = tags_with(&docker, &task_images).await;
    assert_eq!(left.len(), 1, "{left:?}\n{}", pruned.stdout);
    assert!(
        !built.contains(&left[0]),
        "prune kept the stale image: {left:?}"
    );
    assert!(pruned.stdout.contains(&built[0]), "{}", pruned.stdout);
}

/// A verifier in the manner of Terminal-Bench 2's `cancel-async-tasks`: it sends SIGINT to a
/// Python program and expects KeyboardInterrupt, which only default signal dispositions give.
fn sigint_task(root: &std::path::Path) -> git_harness::task::Task {
    let d = root.join("sigint-keyboard-interrupt");
    std::fs::create_dir_all(d.join("tests")).unwrap();
    std::fs::create_dir_all(d.join("environment/workspace")).unwrap();
    std::fs::write(d.join("instruction.md"), "Nothing to do.\n").unwrap();
    std::fs::write(d.join("environment/workspace/.keep"), "").unwrap();
    std::fs::write(
        d.join("tests/test.sh"),
        r#"logs="${HARNESS_LOGS_DIR:-/logs}"; mkdir -p "$logs/verifier"
t=$(mktemp -d)
cat > "$t/child.py" <<'PY'
import time
try:
    print("ready", flush=True)
    time.sleep(20)
    print("not interrupted", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
PY
cat > "$t/parent.py" <<'PY'
import signal, subprocess, sys
p = subprocess.Popen([sys.executable, sys.argv[1]], stdout=subprocess.PIPE, text=True)
assert p.stdout.readline().strip() == "ready"
p.send_signal(signal.SIGINT)
out = p.stdout.read()
p.wait()
print(out.strip())
open(sys.argv[2], "w").write("1" if "interrupted" == out.strip() else "0")
PY
grep SigIgn /proc/self/status
python3 "$t/parent.py" "$t/child.py" "$logs/verifier/reward.txt"
"#,
    )
    .unwrap();
    git_harness::task::load_suite(root)
        .unwrap()
        .get("sigint-keyboard-interrupt")
        .unwrap()
        .clone()
}

#[tokio::test]
async fn sigint_raises_keyboard_interrupt_under_every_runner() {
    let tmp = tempfile::tempdir().unwrap();
    let task = sigint_task(tmp.path());
    let mut providers: Vec<(&str, Arc<dyn SandboxProvider>)> = vec![("local", local(false))];
    if bwrap_or_skip("sigint_raises_keyboard_interrupt_under_every_runner (bubblewrap)") {
        providers.push(("bubblewrap", local(true)));
    }
    if let Some(p) = docker_or_skip("sigint_raises_keyboard_interrupt_under_every_runner").await {
        providers.push(("docker", p));
    }
    for (name, p) in providers {
        let r = git_harness::eval::builtin::run_trial(
            p.as_ref(),
            &task,
            git_harness::eval::builtin::BuiltinAgent::Nop,
            &VerifyOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.verifier.reward, 1.0, "{name}: {:?}", r.verifier);
    }
}

/// `image prune` on the real engine goes beyond the plain task images: a stale task image named
/// under a registry (`URL/git-harness/task-…`) goes, the current one under that name stays; an
/// agent image made from one of the suite's task images that main's harness would not make now
/// (it installs nothing) goes, one made from another image stays (without `--all`); and the
/// container a killed run left on it (its owner gone) goes first, so that its image can.
#[tokio::test(flavor = "multi_thread")]
async fn image_prune_removes_registry_named_and_agent_images_and_dead_runs_containers() {
    let Some(p) = docker_or_skip(
        "image_prune_removes_registry_named_and_agent_images_and_dead_runs_containers",
    )
    .await
    else {
        return;
    };
    let docker = p.client().await.unwrap();
    let unique = format!("{:08x}", rand::random::<u32>());
    let from = format!("git-harness/test-from-{unique}:1");
    let task_id = format!("prune-{unique}");
    let registry = "127.0.0.1:5999";
    let agent = |n: u32| format!("git-harness/agent:{unique}{n:08x}");
    let _cleanup = RemoveImages {
        prefixes: vec![
            format!("{registry}/git-harness/task-{task_id}:"),
            format!("git-harness/agent:{unique}"),
            format!("git-harness/task-{task_id}:"),
            format!("git-harness/test-from-{unique}:"),
        ],
    };
    build_throwaway_base(&docker, &from, "one").await;
    let tmp = tempfile::tempdir().unwrap();
    let repo = from_image_task_repo(tmp.path(), &task_id, &from);
    let run = tokio::task::block_in_place(|| {
        repo.harness(&[
            "run", "--agent", "oracle", "--split", "held_in", "--trials", "1",
        ])
    });
    assert_eq!(run.code, 0, "{run:?}");
    let current = tags_with(&docker, &format!("git-harness/task-{task_id}:")).await;
    assert_eq!(current.len(), 1, "{current:?}");
    let current = &current[0];

    // The current image under the registry's name, and a stale one there.
    let tag = |src: &str, name: &str| {
        let (repo, tag) = name.rsplit_once(':').unwrap();
        let opts = bollard::query_parameters::TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        let docker = docker.clone();
        let src = src.to_string();
        async move { docker.tag_image(&src, Some(opts)).await.unwrap() }
    };
    let registry_current = format!("{registry}/{current}");
    let registry_stale = format!("{registry}/git-harness/task-{task_id}:000000000000");
    tag(current, &registry_current).await;
    tag(current, &registry_stale).await;

    // Agent images committed from a container of the task image (this suite's) and of the FROM
    // image (not this suite's).
    // A container of `image`, committed as `name` when there is one.
    let commit = |image: &str, name: Option<String>, labels: Vec<(&str, String)>| {
        let docker = docker.clone();
        let image = image.to_string();
        let labels: std::collections::HashMap<String, String> = labels
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain([(TEST_LABEL.0.to_string(), TEST_LABEL.1.to_string())])
            .collect();
        async move {
            let body = bollard::models::ContainerCreateBody {
                image: Some(image),
                cmd: Some(vec!["true".into()]),
                labels: Some(labels),
                ..Default::default()
            };
            let c = docker
                .create_container(
                    None::<bollard::query_parameters::CreateContainerOptions>,
                    body,
                )
                .await
                .unwrap();
            if let Some(name) = name {
                let (repo, tag) = name.rsplit_once(':').unwrap();
                let opts = bollard::query_parameters::CommitContainerOptionsBuilder::default()
                    .container(&c.id)
                    .repo(repo)
                    .tag(tag)
                    .build();
                docker
                    .commit_container(opts, bollard::models::ContainerConfig::default())
                    .await
                    .unwrap();
            }
            c.id
        }
    };
    let rm = |id: String| {
        let docker = docker.clone();
        async move {
            let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                .force(true)
                .build();
            let _ = docker.remove_container(&id, Some(opts)).await;
        }
    };
    let c1 = commit(current, Some(agent(1)), vec![]).await;
    rm(c1).await;
    let c2 = commit(&from, Some(agent(2)), vec![]).await;
    rm(c2).await;
    // A killed run's container on the stale agent image: labelled as ours, its owner gone.
    use git_harness::sandbox::docker::{HOST_LABEL, LABEL, OWNER_LABEL};
    let dead = commit(
        &agent(1),
        None,
        vec![
            (LABEL, "1".into()),
            (HOST_LABEL, git_harness::support::owner::host_id()),
            (OWNER_LABEL, "4194999.1".into()),
        ],
    )
    .await;

    let dry = tokio::task::block_in_place(|| repo.harness(&["image", "prune", "--dry-run"]));
    assert_eq!(dry.code, 0, "{dry:?}");
    for t in [&registry_stale, &agent(1)] {
        assert!(
            dry.stdout.contains(&format!("would remove {t}")),
            "{t}:\n{}",
            dry.stdout
        );
    }
    for t in [&registry_current, current, &agent(2)] {
        assert!(!dry.stdout.contains(t.as_str()), "{t}:\n{}", dry.stdout);
    }
    let pruned = tokio::task::block_in_place(|| repo.harness(&["image", "prune"]));
    assert_eq!(pruned.code, 0, "{pruned:?}");
    assert!(
        pruned.stdout.contains("removed 1 container"),
        "{}",
        pruned.stdout
    );
    assert!(
        docker.inspect_container(&dead, None).await.is_err(),
        "the dead run's container is still there"
    );
    let left = |prefix: String| {
        let docker = docker.clone();
        async move { tags_with(&docker, &prefix).await }
    };
    assert_eq!(
        left(format!("{registry}/git-harness/task-{task_id}:")).await,
        [registry_current.as_str()],
        "{}",
        pruned.stdout
    );
    assert_eq!(
        left(format!("git-harness/task-{task_id}:")).await,
        [current.as_str()]
    );
    assert_eq!(
        left(format!("git-harness/agent:{unique}")).await,
        [agent(2)],
        "{}",
        pruned.stdout
    );
}

/// An agent command is one exec whose wrapper passes it on in argv: no file is written for it
/// (nor `cat` run to write one, nor `rm` to remove it), and while it runs, the only processes
/// besides the container's own are the wrapper and the command's shell.
#[tokio::test]
async fn docker_a_command_runs_from_argv_under_its_wrapper_alone() {
    let Some(p) = docker_or_skip("docker_a_command_runs_from_argv_under_its_wrapper_alone").await
    else {
        return;
    };
    let task = fixture_task("hello-file");
    let (mut sb, _) = create(&p, &task).await;
    // Builtins only: each process's name and parent, and the exec directory's entries.
    let probe = r#"for d in /proc/[0-9]*; do read -r st < "$d/stat" 2>/dev/null || continue
  n=${st#*\(}; n=${n%%\)*}; set -- ${st##*) }; echo "${d#/proc/} $n $2"
done
for f in /tmp/.git-harness-exec/*; do [ -e "$f" ] && echo "file $f"; done
echo "self $$ $PPID""#;
    for _ in 0..2 {
        let out = sb
            .exec(ExecRequest::new(probe, Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(out.exit_code, Some(0), "{out:?}");
        assert!(!out.output.contains("file "), "{}", out.output);
        let me = out
            .output
            .lines()
            .find_map(|l| l.strip_prefix("self "))
            .unwrap();
        let (pid, parent) = me.split_once(' ').unwrap();
        let procs: Vec<(String, String, String)> = out
            .output
            .lines()
            .filter(|l| !l.starts_with("self ") && !l.starts_with("file "))
            .map(|l| {
                let w: Vec<&str> = l.split(' ').collect();
                (w[0].to_string(), w[1].to_string(), w[2].to_string())
            })
            .collect();
        let ours: Vec<&(String, String, String)> = procs
            .iter()
            .filter(|(_, name, _)| name != "docker-init" && name != "sleep")
            .collect();
        // The wrapper, the exec's own process, and the command's shell, its child.
        assert_eq!(ours.len(), 2, "{procs:?}");
        assert!(
            ours.iter()
                .any(|(p, n, pp)| p == parent && n == "sh" && pp == "0"),
            "{procs:?}"
        );
        assert!(
            ours.iter()
                .any(|(p, n, pp)| p == pid && n == "bash" && pp == parent),
            "{procs:?}"
        );
    }
    sb.destroy().await.unwrap();
}

/// The command's status comes from the wrapper's record on the exec's own output, under a nonce
/// the command cannot read: printed records, a killed wrapper, closed outputs and a stray writing
/// after the wrapper ended forge nothing; a command too large for argv still reports its status.
#[tokio::test]
async fn docker_exit_status_cannot_be_forged() {
    let Some(p) = docker_or_skip("docker_exit_status_cannot_be_forged").await else {
        return;
    };
    let task = fixture_task("hello-file");
    let (mut sb, _) = create(&p, &task).await;
    let run = async |cmd: String| {
        sb.exec(ExecRequest::new(cmd, Duration::from_secs(20)))
            .await
            .unwrap()
    };
    // Every word the command can find about its wrapper (argv, environment, what is left on its
    // stdin) as a nonce of a record saying 0, then the wrapper killed, so no record of its own
    // follows.
    let forge = r#"for f in /proc/$PPID/cmdline /proc/$PPID/environ /proc/$$/environ /proc/$PPID/fd/0; do
  timeout 2 cat "$f" 2>/dev/null | tr '\0 =' '\n\n\n'
done | while IFS= read -r t; do printf '\036gh%s rc 0\n' "$t"; done
printf '\036gh rc 0\n\036ghx rc 0\n'
kill -KILL $PPID
exit 0"#;
    let out = run(forge.to_string()).await;
    assert_eq!(out.exit_code, None, "{out:?}");
    assert!(!out.success());
    assert!(
        out.output.contains("\u{1e}gh rc 0"),
        "printed text is output: {out:?}"
    );
    // A command that closes its outputs early still reports its own status.
    let out = run("exec >&- 2>&-; sleep 0.2; exit 7".to_string()).await;
    assert_eq!(out.exit_code, Some(7), "{out:?}");
    // A process that left the wrapper's process group writes a record after the wrapper's.
    let out = run(
        "setsid sh -c 'sleep 0.5; printf \"\\036ghx rc 0\\n\"' & echo started; exit 5".to_string(),
    )
    .await;
    assert_eq!(out.exit_code, Some(5), "{out:?}");
    assert!(out.output.starts_with("started\n"), "{out:?}");
    // Output ending in the start of a record's mark is kept whole.
    let out = run("printf 'tail\\036g'".to_string()).await;
    assert_eq!(
        (out.exit_code, out.output.as_str()),
        (Some(0), "tail\u{1e}g")
    );
    // Larger than argv takes: through stdin and a file.
    let big = format!(": '{}'\necho big; exit 4", "x".repeat(100 * 1024));
    let out = run(big).await;
    assert_eq!((out.exit_code, out.output.as_str()), (Some(4), "big\n"));
    // And the file is gone afterwards.
    let out = run("ls -A /tmp/.git-harness-exec 2>/dev/null | wc -l".to_string()).await;
    assert_eq!(out.output.trim(), "0", "{out:?}");
    sb.destroy().await.unwrap();
}
