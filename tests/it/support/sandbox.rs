//! Helpers shared by the sandbox tests: fixture paths, the process table, Docker availability.

use std::path::PathBuf;
use std::sync::Arc;

use git_harness::experiment::{RunnerConfig, RunnerKind};
use git_harness::sandbox::{self, Bwrap, DockerProvider, ProviderOptions, SandboxProvider};
use git_harness::task::{self, Task};

/// The label every container made by these tests carries (checked for leftovers).
pub const TEST_LABEL: (&str, &str) = ("git-harness.test", "sandbox");

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tasks")
}

pub fn suite() -> git_harness::task::Suite {
    task::load_suite(&fixtures().join("suite")).expect("fixture suite loads")
}

pub fn fixture_task(id: &str) -> Task {
    suite().get(id).expect("fixture task").clone()
}

/// Command lines of live (non-zombie) processes that contain `marker`.
pub fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.chars().all(|c| c.is_ascii_digit()))
        else {
            continue;
        };
        if pid == std::process::id().to_string() {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(marker) {
                found.push(format!("{pid}: {c}"));
            }
        }
    }
    found
}

/// A marker unlikely to collide with any other process: `sleep 1000.<random>`.
pub fn sleep_marker() -> String {
    format!("1000.{}", rand::random::<u32>())
}

pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// bubblewrap is required in CI; elsewhere its absence skips the test loudly.
pub fn bwrap_or_skip(test: &str) -> bool {
    if sandbox::local::bwrap_available() {
        return true;
    }
    assert!(
        !in_ci(),
        "{test}: bubblewrap is not available but CI is set; install bubblewrap"
    );
    eprintln!("\n!!!!! SKIPPING {test}: bubblewrap is not available (install bubblewrap) !!!!!\n");
    false
}

pub fn local(bwrap: bool) -> Arc<dyn SandboxProvider> {
    let cfg = RunnerConfig {
        kind: RunnerKind::Local,
        ..Default::default()
    };
    let opts = ProviderOptions {
        bwrap: if bwrap { Bwrap::Always } else { Bwrap::Never },
        ..Default::default()
    };
    sandbox::provider(&cfg, &opts).expect("local provider")
}

/// A Docker provider whose containers carry the test label, or `None` (with a loud message)
/// when no daemon answers and CI is unset. In CI a missing daemon or base image fails the test.
pub async fn docker_or_skip(test: &str) -> Option<Arc<DockerProvider>> {
    let labels = [(TEST_LABEL.0.to_string(), TEST_LABEL.1.to_string())]
        .into_iter()
        .collect();
    let p = DockerProvider::connect(Default::default(), labels);
    let reason = match p {
        Ok(p) => match p.client().await {
            Ok(docker) => match docker.inspect_image(sandbox::image::BASE_IMAGE).await {
                Ok(_) => return Some(Arc::new(p)),
                Err(e) => format!(
                    "the base image {} is missing ({e}); run .ci/docker.sh",
                    sandbox::image::BASE_IMAGE
                ),
            },
            Err(e) => format!("no Docker daemon answers: {e}"),
        },
        Err(e) => format!("cannot connect to Docker: {e}"),
    };
    assert!(
        !in_ci(),
        "{test}: {reason} (CI is set, Docker tests must run)"
    );
    eprintln!("\n!!!!! SKIPPING {test}: {reason} !!!!!\n");
    None
}

/// Removes (forced) every image whose tag starts with one of `prefixes` when dropped, also
/// after a failed assertion; the base image is never among them.
pub struct RemoveImages {
    pub prefixes: Vec<String>,
}

impl Drop for RemoveImages {
    fn drop(&mut self) {
        let prefixes = self.prefixes.clone();
        let t = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let docker = bollard::Docker::connect_with_defaults().unwrap();
                for p in &prefixes {
                    // Children first: the task images are built on the throwaway base.
                    for tag in tags_with(&docker, p).await {
                        let opts = bollard::query_parameters::RemoveImageOptionsBuilder::default()
                            .force(true)
                            .build();
                        let _ = docker.remove_image(&tag, Some(opts), None).await;
                    }
                }
            });
        });
        let _ = t.join();
    }
}

/// Tags of the images whose name starts with `prefix`.
pub async fn tags_with(docker: &bollard::Docker, prefix: &str) -> Vec<String> {
    let mut tags: Vec<String> = docker
        .list_images(None::<bollard::query_parameters::ListImagesOptions>)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .filter(|t| t.starts_with(prefix))
        .collect();
    tags.sort();
    tags
}

/// `docker_or_skip` for the tests that drive the binary from a plain `#[test]`: true when the
/// Docker engine answers and has the base image; required in CI, a loud skip elsewhere.
pub fn docker_engine_or_skip(test: &str) -> bool {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(docker_or_skip(test))
        .is_some()
}

/// The live processes that carry `marker`, once none is left or after `limit`: a killed process
/// can take a moment to leave the process table on a loaded machine, so poll rather than sleep.
pub async fn survivors(marker: &str, limit: std::time::Duration) -> Vec<String> {
    let start = std::time::Instant::now();
    loop {
        let left = processes_with(marker);
        if left.is_empty() || start.elapsed() > limit {
            return left;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// How long a killed process may take to disappear before a test calls it a survivor.
pub const GONE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// A tree of sleeps (two in the background, one detached by a subshell, one in the foreground)
/// under an exec limited to `timeout`: the exec times out with what it printed so far, and
/// nothing of the tree is left in the host's process table (a container's processes are in it
/// too). Returns the sleeps' marker.
pub async fn exec_timeout_kills_the_tree<S: git_harness::sandbox::Sandbox + ?Sized>(
    sb: &mut S,
    timeout: std::time::Duration,
) -> String {
    let m = sleep_marker();
    let cmd = format!("sleep {m} & sleep {m} & (sleep {m} &) ; echo started; sleep {m}");
    let out = sb
        .exec(git_harness::sandbox::ExecRequest::new(cmd, timeout))
        .await
        .unwrap();
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, None);
    assert!(out.output.contains("started"), "{out:?}");
    assert_eq!(
        survivors(&m, GONE_WITHIN).await,
        Vec::<String>::new(),
        "processes survived the timeout"
    );
    m
}

/// `git harness tasks check ARGS SUITE`, not yet run (callers add the environment they test).
pub fn tasks_check_cmd(args: &[&str], suite: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_git-harness"));
    cmd.args(["tasks", "check"]).args(args).arg(suite);
    cmd
}

/// `git harness tasks check ARGS SUITE`, hermetic.
pub fn tasks_check(args: &[&str], suite: &std::path::Path) -> super::hermetic::Out {
    super::hermetic::output(&mut tasks_check_cmd(args, suite))
}

/// A Harbor task at `dir` without network, working in `/app`: `instruction`, the image of
/// `dockerfile` (none: the runner's default), `solve` as `solution/solve.sh` and `test` as
/// `tests/test.sh`. Returns `dir`.
pub fn harbor_task(
    dir: &std::path::Path,
    instruction: &str,
    dockerfile: Option<&str>,
    solve: &str,
    test: &str,
) -> PathBuf {
    for sub in ["tests", "solution"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("instruction.md"), instruction).unwrap();
    std::fs::write(
        dir.join("task.toml"),
        "[environment]\nworkdir = \"/app\"\nnetwork_mode = \"no-network\"\n",
    )
    .unwrap();
    if let Some(f) = dockerfile {
        std::fs::create_dir_all(dir.join("environment")).unwrap();
        std::fs::write(dir.join("environment/Dockerfile"), f).unwrap();
    }
    std::fs::write(dir.join("solution/solve.sh"), solve).unwrap();
    std::fs::write(dir.join("tests/test.sh"), test).unwrap();
    dir.to_path_buf()
}

/// The Dockerfile of an image that is the base image working in `/app`.
pub fn base_dockerfile() -> String {
    format!("FROM {}\nWORKDIR /app\n", sandbox::image::BASE_IMAGE)
}

/// A task at `dir` for the Docker runner: its image built FROM the base image, no network, the
/// solution writes `ok` to `/app/out.txt` and the verifier checks it. Returns `dir`.
pub fn docker_app_task(dir: &std::path::Path) -> PathBuf {
    harbor_task(
        dir,
        "Write ok to /app/out.txt.\n",
        Some(&base_dockerfile()),
        "echo ok > /app/out.txt\n",
        "#!/bin/bash\nif grep -qx ok /app/out.txt; then echo 1; else echo 0; fi > /logs/verifier/reward.txt\n",
    )
}
