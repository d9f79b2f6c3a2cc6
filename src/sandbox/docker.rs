//! The Docker sandbox (bollard): one container per trial, running `sleep infinity`, commands
//! through the exec API, files through the archive API.
//!
//! Images: a task's `docker_image` (after `runner.image_map`) when it exists locally; otherwise
//! its `environment/Dockerfile`, built once per content hash as `git-harness/task-<id>:<hash12>`
//! with `FROM` lines rewritten through the image map; a task with neither runs on the base image
//! `git-harness/base:bookworm`, seeded from `environment/workspace/` and `environment/setup.sh`
//! like the local sandbox. Nothing is ever pulled.
//!
//! Every exec runs its command as the leader of a new process group (`setsid`) under a small `sh`
//! wrapper that kills the group when the command ends; at a timeout a second exec kills the
//! group, so `sleep 1000 &` children die with their command.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, HostConfig, NetworkConnectRequest, NetworkDisconnectRequest,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::image::BASE_IMAGE;
use super::output::Capture;
use super::{
    CreateOptions, ExecOutput, ExecRequest, InfraClass, Sandbox, SandboxProvider, normalize,
};
use crate::error::{Error, IoContext, Result};
use crate::task::Task;

/// The label every container of ours carries.
pub const LABEL: &str = "git-harness";
/// The label that holds the trial id.
pub const TRIAL_LABEL: &str = "git-harness.trial";
/// The label that names the process that made the container (`<pid>.<start>`), and the one
/// that names its host: a later command removes containers of dead processes of its own host.
pub const OWNER_LABEL: &str = "git-harness.owner";
pub const HOST_LABEL: &str = "git-harness.host";
/// Processes per container.
pub const PIDS_LIMIT: i64 = 4096;
/// The engine's default network: a phase with the network has it (Harbor's `public`).
const BRIDGE: &str = "bridge";
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);
const SETUP_TIMEOUT: Duration = Duration::from_secs(600);
/// How long output is still read after a timeout kill.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Runs the command read from stdin in `$1` as a new session (`setsid`), so a group kill ends
/// its background children too; `$2` keys its script and pid files. The command travels on
/// stdin, never in argv, so its size is not bounded by the kernel's argument limit; it runs in
/// the foreground because a non-interactive shell starts background jobs with SIGINT and SIGQUIT
/// ignored, and programs must see the default dispositions (as under the local runner). The
/// interpreter and `setsid` are named by absolute path: an agent's PATH cannot replace them.
const WRAPPER: &str = r#"d=/tmp/.git-harness-exec; f="$d/$2"
mkdir -p "$d" 2>/dev/null
if ! cat > "$f.sh"; then rm -f "$f.sh"; echo "git-harness: cannot store the command in $f.sh (disk full or /tmp unusable?)" >&2; exit 126; fi
cd "$1" 2>/dev/null || { rm -f "$f.sh"; echo "git-harness: no such directory: $1" >&2; exit 126; }
sh_=/bin/sh; [ -x /bin/bash ] && sh_=/bin/bash
ss_=; for c in /usr/bin/setsid /bin/setsid /usr/sbin/setsid; do [ -x "$c" ] && { ss_=$c; break; }; done
$ss_ "$sh_" -c 'echo $$ > "$0.pid" 2>/dev/null; exec "$1" "$0.sh"' "$f" "$sh_" </dev/null
rc=$?
p=$(cat "$f.pid" 2>/dev/null); [ -n "$p" ] && kill -KILL "-$p" 2>/dev/null
rm -f "$f.sh" "$f.pid"
exit "$rc""#;

fn docker_err(what: &str, e: bollard::errors::Error) -> Error {
    InfraClass::Sandbox.error_hint(
        format!("{what}: {e}"),
        "is the Docker daemon running and reachable (DOCKER_HOST or /var/run/docker.sock)?",
    )
}

/// An error of the archive API. The daemon answering with an error about a path (a dangling
/// link, a directory where a file should be, a full disk) is about the sandbox's content, which
/// the agent controls: an I/O error of that path, not an infrastructure error. A daemon that does
/// not answer is infrastructure.
fn archive_err(path: &str, e: bollard::errors::Error) -> Error {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. }
            if !message.contains("No such container") =>
        {
            Error::io(path, std::io::Error::other(message.trim().to_string()))
        }
        e => docker_err(&format!("copy {path}"), e),
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

pub struct DockerProvider {
    raw: Docker,
    client: tokio::sync::OnceCell<Docker>,
    image_map: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    build_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Container creations in flight, on tasks of their own (see `create_docker`).
    creating: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The experiment's choices for the phases' network.
    network: super::NetworkPolicy,
}

impl DockerProvider {
    /// Connect from `DOCKER_HOST` or the default socket. The API version is negotiated on first
    /// use (see [`DockerProvider::client`]).
    pub fn connect(
        image_map: BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
    ) -> Result<Self> {
        let raw =
            Docker::connect_with_defaults().map_err(|e| docker_err("connect to Docker", e))?;
        Ok(DockerProvider {
            raw,
            client: tokio::sync::OnceCell::new(),
            image_map,
            labels,
            build_locks: Mutex::new(HashMap::new()),
            creating: Mutex::new(Vec::new()),
            network: super::NetworkPolicy::default(),
        })
    }

    /// The experiment's network choices for the phases of every sandbox this provider makes.
    pub fn with_network(mut self, network: super::NetworkPolicy) -> Self {
        self.network = network;
        self
    }

    /// The client, with the API version negotiated with the daemon.
    pub async fn client(&self) -> Result<Docker> {
        self.client
            .get_or_try_init(|| async {
                self.raw
                    .clone()
                    .negotiate_version()
                    .await
                    .map_err(|e| docker_err("reach the Docker daemon", e))
            })
            .await
            .cloned()
    }

    /// `image_map` applied to one image name.
    pub fn map_image(&self, image: &str) -> String {
        map_image(&self.image_map, image)
    }

    /// The ids of the external images a task's Dockerfile starts `FROM` (after the image map),
    /// in order. None is pulled: a missing one is an infrastructure error with a hint.
    async fn base_image_ids(&self, docker: &Docker, task: &Task) -> Result<Vec<String>> {
        let Some(dockerfile) = &task.dockerfile else {
            return Ok(Vec::new());
        };
        let text = std::fs::read_to_string(dockerfile).at(dockerfile)?;
        let mut ids = Vec::new();
        for from in from_images(&rewrite_from(&text, &self.image_map)) {
            match docker.inspect_image(&from).await {
                Ok(info) => ids.push(info.id.unwrap_or_default()),
                Err(e) if is_not_found(&e) => {
                    return Err(InfraClass::Sandbox.error_hint(
                        format!(
                            "image {from} (FROM in the Dockerfile of task `{}`) is not present locally; nothing is pulled",
                            task.id
                        ),
                        format!(
                            "build or load it, or map it in runner.image_map (e.g. `{from}: {BASE_IMAGE}`, or --image-map {from}={BASE_IMAGE})"
                        ),
                    ));
                }
                Err(e) => return Err(docker_err(&format!("inspect image {from}"), e)),
            }
        }
        Ok(ids)
    }

    /// What a task's environment is built on, as image ids: the FROM images of its Dockerfile,
    /// else its `docker_image`, else the base image. Part of the cache key, so results on an
    /// image that has since been rebuilt are not reused.
    pub async fn environment_id(&self, task: &Task) -> Result<String> {
        let docker = self.client().await?;
        if let Some(img) = &task.environment.docker_image {
            let mapped = self.map_image(img);
            if let Ok(info) = docker.inspect_image(&mapped).await {
                return Ok(info.id.unwrap_or_default());
            }
        }
        if task.dockerfile.is_some() && task.environment_dir.is_some() {
            return Ok(self.base_image_ids(&docker, task).await?.join(","));
        }
        let base = self.map_image(BASE_IMAGE);
        match docker.inspect_image(&base).await {
            Ok(info) => Ok(info.id.unwrap_or_default()),
            Err(e) => Err(docker_err(&format!("inspect image {base}"), e)),
        }
    }

    /// The task images (`git-harness/task-*`) that no task of `tasks` would run on now: stale
    /// images of these tasks, and with `all` also the images of tasks not in `tasks`.
    pub async fn unused_task_images(&self, tasks: &[Task], all: bool) -> Result<Vec<String>> {
        let docker = self.client().await?;
        let mut wanted = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for t in tasks {
            names.insert(format!("{TASK_IMAGE_PREFIX}{}:", tag_safe(&t.id)));
            if let Some(tag) = self.current_task_tag(&docker, t).await {
                wanted.insert(tag);
            }
        }
        let opts = bollard::query_parameters::ListImagesOptionsBuilder::default()
            .all(false)
            .build();
        let images = docker
            .list_images(Some(opts))
            .await
            .map_err(|e| docker_err("list images", e))?;
        let mut unused = Vec::new();
        for img in images {
            for tag in &img.repo_tags {
                let ours = all || names.iter().any(|n| tag.starts_with(n.as_str()));
                if tag.starts_with(TASK_IMAGE_PREFIX) && ours && !wanted.contains(tag) {
                    unused.push(tag.clone());
                }
            }
        }
        unused.sort();
        Ok(unused)
    }

    /// Remove an image by tag (the image goes when its last tag does). `Ok(false)` when a
    /// container still uses it: it is kept.
    pub async fn remove_image(&self, tag: &str) -> Result<bool> {
        let docker = self.client().await?;
        match docker
            .remove_image(
                tag,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(false),
            Err(e) => Err(docker_err(&format!("remove image {tag}"), e)),
        }
    }

    /// The tag a task's image has when built from its files and FROM images as they are now.
    async fn current_task_tag(&self, docker: &Docker, task: &Task) -> Option<String> {
        let (Some(_), Some(ctx_dir)) = (&task.dockerfile, &task.environment_dir) else {
            return None;
        };
        let ctx = build_context(
            ctx_dir,
            task.dockerfile.as_deref(),
            &self.image_map,
            &verifier_and_solution_files(task),
        )
        .ok()?;
        let base_ids = self.base_image_ids(docker, task).await.ok()?;
        Some(task_image_tag(&task.id, &ctx, &base_ids))
    }

    async fn image_exists(&self, docker: &Docker, image: &str) -> Result<bool> {
        match docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(docker_err(&format!("inspect image {image}"), e)),
        }
    }

    /// The image a task's container runs, building it when needed, and whether the container
    /// must be seeded from `environment/workspace/` + `setup.sh` (no Dockerfile, no image).
    pub async fn image_for(&self, task: &Task) -> Result<(String, bool)> {
        let docker = self.client().await?;
        if let Some(img) = &task.environment.docker_image {
            let mapped = self.map_image(img);
            if self.image_exists(&docker, &mapped).await? {
                return Ok((mapped, false));
            }
            if task.dockerfile.is_none() {
                return Err(InfraClass::Sandbox.error_hint(
                    format!("image {mapped} of task `{}` is not present locally (nothing is pulled)", task.id),
                    "build or load it, or map it to a local image in runner.image_map of experiment.yaml",
                ));
            }
        }
        if let (Some(_), Some(ctx_dir)) = (&task.dockerfile, &task.environment_dir) {
            let ctx = build_context(
                ctx_dir,
                task.dockerfile.as_deref(),
                &self.image_map,
                &verifier_and_solution_files(task),
            )?;
            let tag = task_image_tag(&task.id, &ctx, &self.base_image_ids(&docker, task).await?);
            let lock = {
                let mut m = self
                    .build_locks
                    .lock()
                    .map_err(|_| Error::Internal("build lock poisoned".into()))?;
                m.entry(tag.clone()).or_default().clone()
            };
            let _held = lock.lock().await;
            if self.image_exists(&docker, &tag).await? {
                return Ok((tag, false));
            }
            let timeout = task
                .environment
                .build_timeout_sec
                .map(Duration::from_secs)
                .unwrap_or(BUILD_TIMEOUT);
            let opts = BuildImageOptionsBuilder::default()
                .dockerfile("Dockerfile")
                .t(&tag)
                .rm(true)
                .forcerm(true)
                .labels(&HashMap::from([(LABEL.to_string(), "1".to_string())]))
                .build();
            let mut log = String::new();
            let mut failure = None;
            let build = async {
                let mut stream =
                    docker.build_image(opts, None, Some(bollard::body_full(ctx.into())));
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(info) => {
                            if let Some(s) = info.stream {
                                log.push_str(&s);
                            }
                            if let Some(e) = info.error_detail.and_then(|d| d.message) {
                                failure = Some(e);
                            }
                        }
                        Err(e) => failure = Some(e.to_string()),
                    }
                }
            };
            if tokio::time::timeout(timeout, build).await.is_err() {
                failure = Some(format!("timed out after {}s", timeout.as_secs()));
            }
            if let Some(f) = failure {
                let tail: String = log
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(InfraClass::Sandbox.error_hint(
                    format!("image build of task `{}` failed: {f}\n{tail}", task.id),
                    "a FROM image must exist locally: build the base with `git harness image base`, or map it in runner.image_map",
                ));
            }
            return Ok((tag, false));
        }
        let base = self.map_image(BASE_IMAGE);
        if self.image_exists(&docker, &base).await? {
            Ok((base, true))
        } else {
            Err(InfraClass::Sandbox.error_hint(
                format!("task `{}` has no Dockerfile and no docker_image, and the base image {base} is missing", task.id),
                "build it with `git harness image base --debootstrap bookworm --include python3`",
            ))
        }
    }

    pub async fn create_docker(&self, task: &Task, trial_id: &str) -> Result<DockerSandbox> {
        let docker = self.client().await?;
        let (image, seed) = self.image_for(task).await?;
        let mut labels: HashMap<String, String> = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(LABEL.into(), "1".into());
        labels.insert(TRIAL_LABEL.into(), trial_id.into());
        labels.insert("git-harness.task".into(), task.id.clone());
        labels.insert(
            OWNER_LABEL.into(),
            crate::support::owner::Owner::me().to_string(),
        );
        labels.insert(HOST_LABEL.into(), crate::support::owner::host_id());
        let env = &task.environment;
        // One container for all phases: on the default bridge when any phase has the network,
        // disconnected from it (only loopback left) during the phases that have none.
        let phases = self.network.phases(env);
        let host = HostConfig {
            nano_cpus: env.cpus.map(|c| (c * 1e9) as i64),
            memory: env.memory_mb.map(|m| (m * 1024 * 1024) as i64),
            pids_limit: Some(PIDS_LIMIT),
            network_mode: Some(if phases.any() {
                BRIDGE.into()
            } else {
                "none".into()
            }),
            init: Some(true),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: Some(vec!["sleep".into(), "infinity".into()]),
            entrypoint: Some(vec![]),
            working_dir: Some(env.workdir.clone()),
            labels: Some(labels),
            host_config: Some(host),
            ..Default::default()
        };
        let path_env = image_path_env(&docker, &image).await?;
        let name = format!("git-harness-{}", tag_safe(trial_id));
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        // The daemon finishes a creation whose request was cut short (an aborted trial), so
        // the request runs on a task of its own: if nobody waits for the container any more,
        // that task removes it, and `sweep_own` waits for such tasks.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let d = docker.clone();
        let creation = tokio::spawn(async move {
            let r = d.create_container(Some(opts), body).await;
            if let Err(Ok(created)) = tx.send(r) {
                let opts = RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build();
                let _ = d.remove_container(&created.id, Some(opts)).await;
            }
        });
        if let Ok(mut c) = self.creating.lock() {
            c.retain(|t| !t.is_finished());
            c.push(creation);
        }
        let created = rx
            .await
            .map_err(|_| InfraClass::Sandbox.error("the container creation task ended early"))?
            .map_err(|e| docker_err(&format!("create a container from {image}"), e))?;
        let mut sb = DockerSandbox {
            docker: docker.clone(),
            id: created.id,
            trial: trial_id.to_string(),
            workdir: env.workdir.clone(),
            destroyed: false,
            keeper: 0,
            path_env,
            phases,
            connected: tokio::sync::Mutex::new(phases.any()),
        };
        if let Err(e) = docker.start_container(&sb.id, None).await {
            sb.destroy().await?;
            return Err(docker_err(&format!("start a container from {image}"), e));
        }
        let prep = format!(
            "mkdir -p /tests /logs/verifier /logs/agent /solution /tmp '{}' && cat /proc/1/task/1/children",
            env.workdir
        );
        let out = sb
            .exec_raw(&prep, Duration::from_secs(60), "/", &[])
            .await?;
        if !out.success() {
            sb.destroy().await?;
            return Err(
                InfraClass::Sandbox.error(format!("prepare the container: {}", out.output.trim()))
            );
        }
        sb.keeper = out
            .output
            .split_whitespace()
            .filter_map(|p| p.parse::<i64>().ok())
            .min()
            .unwrap_or(0);
        if let Err(e) = sb.set_phase(super::Phase::Setup).await {
            sb.destroy().await?;
            return Err(e);
        }
        if seed {
            if let Some(ws) = &task.workspace_dir {
                sb.copy_dir_in(ws, &env.workdir).await?;
            }
            if let Some(setup) = &task.setup_script {
                let script = std::fs::read_to_string(setup).at(setup)?;
                let timeout = env
                    .build_timeout_sec
                    .map(Duration::from_secs)
                    .unwrap_or(SETUP_TIMEOUT);
                let out = sb.exec(ExecRequest::new(script, timeout)).await?;
                if !out.success() {
                    sb.destroy().await?;
                    return Err(InfraClass::Sandbox.error(format!(
                        "environment/setup.sh of task `{}` failed ({}):\n{}",
                        task.id,
                        crate::exit::describe(out.exit_code, out.timed_out),
                        out.output
                    )));
                }
            }
        }
        if let Err(e) = sb.set_phase(super::Phase::Agent).await {
            sb.destroy().await?;
            return Err(e);
        }
        Ok(sb)
    }

    /// Containers carrying our label (and `extra` labels), for leftover checks.
    pub async fn list_ours(&self, extra: &[(&str, &str)]) -> Result<Vec<String>> {
        let docker = self.client().await?;
        let mut filters = vec![format!("{LABEL}=1")];
        filters.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&HashMap::from([("label".to_string(), filters)]))
            .build();
        let list = docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| docker_err("list containers", e))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }
}

impl DockerProvider {
    /// Remove the containers of this host whose owner satisfies `pick`.
    async fn remove_owned(
        &self,
        pick: impl Fn(crate::support::owner::Owner) -> bool,
    ) -> Result<usize> {
        let docker = self.client().await?;
        let host = crate::support::owner::host_id();
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&HashMap::from([(
                "label".to_string(),
                vec![format!("{LABEL}=1"), format!("{HOST_LABEL}={host}")],
            )]))
            .build();
        let list = docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| docker_err("list containers", e))?;
        let mut removed = 0;
        for c in list {
            let owner = c
                .labels
                .as_ref()
                .and_then(|l| l.get(OWNER_LABEL))
                .and_then(|o| crate::support::owner::Owner::parse(o));
            let (Some(id), Some(owner)) = (c.id, owner) else {
                continue;
            };
            if !pick(owner) {
                continue;
            }
            let opts = RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build();
            match docker.remove_container(&id, Some(opts)).await {
                Ok(()) => removed += 1,
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(docker_err(&format!("remove container {id}"), e)),
            }
        }
        Ok(removed)
    }
}

#[async_trait]
impl SandboxProvider for DockerProvider {
    fn name(&self) -> &str {
        "docker"
    }

    async fn sweep(&self) -> Result<usize> {
        self.remove_owned(|o| !o.is_alive()).await
    }

    async fn sweep_own(&self) -> Result<usize> {
        // Creations in flight when their trial was aborted remove what they made.
        let tasks: Vec<_> = self
            .creating
            .lock()
            .map(|mut c| c.drain(..).collect())
            .unwrap_or_default();
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        // Anything else of this process left (no sandbox holds one any more): by its label.
        let me = crate::support::owner::Owner::me();
        self.remove_owned(|o| o == me).await
    }

    async fn create(&self, task: &Task) -> Result<Box<dyn Sandbox>> {
        self.create_with(task, &CreateOptions::default()).await
    }

    async fn create_with(&self, task: &Task, opts: &CreateOptions) -> Result<Box<dyn Sandbox>> {
        let id = opts.trial_id.clone().unwrap_or_else(super::new_trial_id);
        Ok(Box::new(self.create_docker(task, &id).await?))
    }

    async fn environment_id(&self, task: &Task) -> Result<Option<String>> {
        DockerProvider::environment_id(self, task).await.map(Some)
    }
}

/// One trial's container. Dropping it without `destroy` still removes the container (force).
pub struct DockerSandbox {
    docker: Docker,
    id: String,
    trial: String,
    workdir: String,
    destroyed: bool,
    /// The pid of the container's `sleep infinity` (kept by `kill_strays`).
    keeper: i64,
    /// The image's PATH: the verifier's, whatever the agent did.
    path_env: String,
    /// Which phases have the network.
    phases: super::PhaseNetworks,
    /// Whether the container is on the bridge now.
    connected: tokio::sync::Mutex<bool>,
}

impl DockerSandbox {
    pub fn container_id(&self) -> &str {
        &self.id
    }

    async fn exec_raw(
        &self,
        command: &str,
        timeout: Duration,
        cwd: &str,
        env: &[(String, String)],
    ) -> Result<ExecOutput> {
        let started = Instant::now();
        let key = format!("{:016x}", rand::random::<u64>());
        let mut envs = vec![
            format!("HARNESS_WORKDIR={}", self.workdir),
            "HARNESS_TESTS_DIR=/tests".to_string(),
            "HARNESS_LOGS_DIR=/logs".to_string(),
            "HARNESS_SOLUTION_DIR=/solution".to_string(),
        ];
        envs.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        let cmd = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            WRAPPER.to_string(),
            "git-harness-exec".to_string(),
            cwd.to_string(),
            key.clone(),
        ];
        let created = self
            .docker
            .create_exec(
                &self.id,
                CreateExecOptions {
                    cmd: Some(cmd),
                    env: Some(envs),
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    working_dir: Some("/".to_string()),
                    ..Default::default()
                },
            )
            .await;
        // Only the agent's commands run in the container: when it stopped (its main process
        // was killed, or it ran out of memory), that is the agent's doing, and the command fails
        // like one killed by a signal.
        let stopped = || ExecOutput {
            exit_code: None,
            output: format!("git-harness: {STOPPED}; nothing more can run in it\n"),
            duration_ms: started.elapsed().as_millis() as u64,
            ..Default::default()
        };
        let created = match created {
            Ok(c) => c,
            Err(_) if self.stopped().await => return Ok(stopped()),
            Err(e) => return Err(docker_err("create an exec", e)),
        };
        let started_exec = self
            .docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await;
        let started_exec = match started_exec {
            Ok(s) => s,
            Err(_) if self.stopped().await => return Ok(stopped()),
            Err(e) => return Err(docker_err("start an exec", e)),
        };
        let StartExecResults::Attached {
            mut output,
            mut input,
        } = started_exec
        else {
            return Err(InfraClass::Sandbox.error("exec started detached"));
        };
        let mut cap = Capture::default();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut timed_out = false;
        // The wrapper reads the whole command before it prints anything; closing stdin ends it.
        let sent = tokio::time::timeout_at(deadline, async {
            input.write_all(command.as_bytes()).await?;
            input.shutdown().await
        })
        .await;
        drop(input);
        match sent {
            Ok(Ok(())) => {}
            // The wrapper exits early (e.g. it could not store the command): its output says why.
            Ok(Err(_)) => {}
            Err(_) => timed_out = true,
        }
        while !timed_out {
            match tokio::time::timeout_at(deadline, output.next()).await {
                Ok(Some(Ok(chunk))) => cap.push(&chunk.into_bytes()),
                Ok(Some(Err(e))) => return Err(docker_err("read exec output", e)),
                Ok(None) => break,
                Err(_) => {
                    timed_out = true;
                    break;
                }
            }
        }
        if timed_out {
            self.kill_exec(&key).await;
            let grace = tokio::time::Instant::now() + DRAIN_GRACE;
            while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(grace, output.next()).await {
                cap.push(&chunk.into_bytes());
            }
        }
        drop(output);
        let mut exit_code = None;
        for _ in 0..50 {
            let info = self
                .docker
                .inspect_exec(&created.id)
                .await
                .map_err(|e| docker_err("inspect an exec", e))?;
            if info.running != Some(true) {
                exit_code = info.exit_code.map(|c| c as i32);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (output, truncated) = cap.finish();
        Ok(ExecOutput {
            exit_code: if timed_out { None } else { exit_code },
            output,
            truncated,
            timed_out,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Kill the process group of the exec whose pid file is keyed `key` (a second exec).
    async fn kill_exec(&self, key: &str) {
        let script = format!(
            "f=/tmp/.git-harness-exec/{key}.pid; for i in 1 2 3 4 5 6 7 8 9 10; do \
             if [ -s $f ]; then p=$(cat $f); kill -KILL -$p 2>/dev/null || kill -KILL $p 2>/dev/null; exit 0; fi; \
             sleep 0.2; done; exit 1"
        );
        let Ok(created) = self
            .docker
            .create_exec(
                &self.id,
                CreateExecOptions {
                    cmd: Some(vec!["/bin/sh".to_string(), "-c".to_string(), script]),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
        else {
            return;
        };
        if let Ok(StartExecResults::Attached { mut output, .. }) =
            self.docker.start_exec(&created.id, None).await
        {
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                while output.next().await.is_some() {}
            })
            .await;
        }
    }

    async fn remove(&mut self) -> Result<()> {
        if self.destroyed {
            return Ok(());
        }
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(&self.id, Some(opts)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(docker_err(&format!("remove container {}", self.id), e)),
        }
        self.destroyed = true;
        Ok(())
    }
}

#[async_trait]
impl Sandbox for DockerSandbox {
    fn workdir(&self) -> &str {
        &self.workdir
    }

    async fn exec(&self, req: ExecRequest) -> Result<ExecOutput> {
        if self.destroyed {
            return Err(InfraClass::Sandbox.error("exec in a destroyed sandbox"));
        }
        let cwd = normalize(
            &self.workdir,
            req.workdir.as_deref().unwrap_or(&self.workdir),
        );
        self.exec_raw(&req.command, req.timeout, &cwd, &req.env)
            .await
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let p = normalize(&self.workdir, path);
        let opts = DownloadFromContainerOptionsBuilder::default()
            .path(&p)
            .build();
        let mut stream = self.docker.download_from_container(&self.id, Some(opts));
        let mut tar_bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => tar_bytes.extend_from_slice(&c),
                Err(e) if is_not_found(&e) => {
                    return Err(Error::io(
                        &p,
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "no such file in the sandbox",
                        ),
                    ));
                }
                Err(e) => return Err(archive_err(&p, e)),
            }
        }
        let mut ar = tar::Archive::new(&tar_bytes[..]);
        let mut entries = ar.entries().at(&p)?;
        let Some(entry) = entries.next() else {
            return Err(Error::io(
                &p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "empty archive"),
            ));
        };
        let mut entry = entry.at(&p)?;
        if !entry.header().entry_type().is_file() {
            return Err(Error::io(&p, std::io::Error::other("not a regular file")));
        }
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).at(&p)?;
        Ok(data)
    }

    async fn write_file(&self, path: &str, data: &[u8]) -> Result<()> {
        let p = normalize(&self.workdir, path);
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, p.trim_start_matches('/'), data)
            .at(&p)?;
        let tar = b.into_inner().at(&p)?;
        self.upload(tar, &p).await
    }

    async fn copy_dir_in(&self, host_dir: &Path, dest: &str) -> Result<()> {
        let d = normalize(&self.workdir, dest);
        let tar = tar_dir(host_dir, d.trim_start_matches('/'))?;
        self.upload(tar, &d).await
    }

    async fn destroy(&mut self) -> Result<()> {
        self.remove().await
    }

    async fn kill_strays(&self) -> Result<()> {
        if self.stopped().await {
            return Ok(());
        }
        // Keep docker-init (1), the container's `sleep infinity`, and this exec's own processes.
        let script = format!(
            "keep=\" 1 {k} $$ $PPID \"; for d in /proc/[0-9]*; do p=${{d#/proc/}}; \
             case \"$keep\" in *\" $p \"*) continue;; esac; kill -KILL \"$p\" 2>/dev/null; done; exit 0",
            k = self.keeper
        );
        let out = self
            .exec_raw(&script, Duration::from_secs(30), "/", &[])
            .await?;
        if !out.success() {
            return Err(
                InfraClass::Sandbox.error(format!("kill stray processes: {}", out.output.trim()))
            );
        }
        Ok(())
    }

    fn trial_id(&self) -> &str {
        &self.trial
    }

    /// On the bridge or off it: a container made without any network (`none`) stays so.
    async fn set_phase(&self, phase: super::Phase) -> Result<()> {
        if !self.phases.any() {
            return Ok(());
        }
        let want = self.phases.get(phase);
        let mut connected = self.connected.lock().await;
        if *connected == want {
            return Ok(());
        }
        let r = if want {
            self.docker
                .connect_network(
                    BRIDGE,
                    NetworkConnectRequest {
                        container: self.id.clone(),
                        endpoint_config: None,
                    },
                )
                .await
        } else {
            self.docker
                .disconnect_network(
                    BRIDGE,
                    NetworkDisconnectRequest {
                        container: self.id.clone(),
                        force: Some(true),
                    },
                )
                .await
        };
        r.map_err(|e| {
            docker_err(
                &format!(
                    "{} the container {} the {BRIDGE} network",
                    if want { "connect" } else { "disconnect" },
                    if want { "to" } else { "from" }
                ),
                e,
            )
        })?;
        *connected = want;
        Ok(())
    }

    fn verifier_path(&self) -> Option<String> {
        Some(self.path_env.clone())
    }

    async fn toolchain_changes(&self) -> Result<Vec<String>> {
        if self.stopped().await {
            return Ok(vec![STOPPED.to_string()]);
        }
        let changes = self
            .docker
            .container_changes(&self.id)
            .await
            .map_err(|e| docker_err("read the container's filesystem changes", e))?
            .unwrap_or_default();
        let changes: Vec<(Change, String)> = changes
            .into_iter()
            .map(|c| {
                let kind = match c.kind {
                    bollard::models::ChangeType::_1 => Change::Added,
                    bollard::models::ChangeType::_2 => Change::Deleted,
                    _ => Change::Modified,
                };
                (kind, c.path)
            })
            .collect();
        let mut found = toolchain_tampering(&changes, &[]);
        if !found.is_empty() {
            // The shell below could be the agent's: report without running anything.
            return Ok(found);
        }
        // The PATH directories as the container resolves them (only shell builtins run here).
        let script = format!(
            "p={}; IFS=:; for e in $p; do (cd \"$e\" 2>/dev/null && pwd -P) || echo; done",
            q(&self.path_env)
        );
        let out = self
            .exec_raw(&script, Duration::from_secs(30), "/", &[])
            .await?;
        let dirs: Vec<String> = out.output.lines().map(|l| l.trim().to_string()).collect();
        found = toolchain_tampering(&changes, &dirs);
        // An added command earlier on PATH than one of the same name shadows it.
        let mut probes: Vec<(String, String)> = Vec::new();
        for (kind, path) in &changes {
            let Some((dir, name)) = path.rsplit_once('/') else {
                continue;
            };
            if *kind != Change::Added || name.is_empty() {
                continue;
            }
            let Some(i) = dirs.iter().position(|d| d == dir) else {
                continue;
            };
            for later in dirs[i + 1..].iter().filter(|d| !d.is_empty() && *d != dir) {
                probes.push((path.clone(), format!("{later}/{name}")));
            }
        }
        if !probes.is_empty() {
            let script: String = probes
                .iter()
                .map(|(added, other)| format!("[ -e {} ] && echo {};\n", q(other), q(added)))
                .collect::<String>()
                + "exit 0";
            let out = self
                .exec_raw(&script, Duration::from_secs(30), "/", &[])
                .await?;
            for line in out.output.lines() {
                let entry = format!("added {line} (shadows a command on PATH)");
                if !line.is_empty() && !found.contains(&entry) {
                    found.push(entry);
                }
            }
        }
        Ok(found)
    }
}

/// How a file differs from the container's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Modified,
    Added,
    Deleted,
}

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Changes of a container's filesystem that touch what the verifier runs on: a command in a
/// PATH directory (`path_dirs`, resolved) changed or removed, a shared library changed or
/// removed, the dynamic loader's preload or configuration touched, a file of Python's standard
/// library changed or removed, or a Python startup hook (`sitecustomize.py`,
/// `usercustomize.py`) added. Installing new commands, libraries or Python packages is not
/// tampering; an added command that shadows an existing one is found by the caller.
pub fn toolchain_tampering(changes: &[(Change, String)], path_dirs: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    // Directories listed because something inside them changed are not changes themselves.
    let parents: std::collections::HashSet<&str> = changes
        .iter()
        .filter_map(|(_, p)| p.rsplit_once('/').map(|(d, _)| d))
        .collect();
    for (kind, path) in changes {
        if *kind == Change::Modified && parents.contains(path.as_str()) {
            continue;
        }
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        let lib = [
            "/lib/",
            "/lib64/",
            "/usr/lib/",
            "/usr/lib64/",
            "/usr/local/lib/",
        ]
        .iter()
        .any(|l| path.starts_with(l));
        let python_stdlib = ["/usr/lib/python3", "/usr/local/lib/python3"]
            .iter()
            .any(|l| path.starts_with(l))
            && !path.contains("/site-packages/")
            && !path.contains("/dist-packages/");
        let suspect = match kind {
            Change::Modified | Change::Deleted => {
                path_dirs.iter().any(|d| d == dir)
                    || ["/bin", "/usr/bin"].contains(&dir) && !name.is_empty()
                    || lib && (name.ends_with(".so") || name.contains(".so."))
                    || python_stdlib && name.ends_with(".py")
            }
            Change::Added => name == "sitecustomize.py" || name == "usercustomize.py",
        } || path == "/etc/ld.so.preload"
            || path.starts_with("/etc/ld.so.conf");
        if suspect {
            let what = match kind {
                Change::Modified => "changed",
                Change::Added => "added",
                Change::Deleted => "removed",
            };
            found.push(format!("{what} {path}"));
        }
    }
    found
}

/// Why nothing runs in a container the agent stopped.
const STOPPED: &str = "the sandbox's container stopped during the trial (its main process was killed, or it ran out of memory)";

impl DockerSandbox {
    /// Whether the container exists but no longer runs.
    async fn stopped(&self) -> bool {
        match self.docker.inspect_container(&self.id, None).await {
            Ok(info) => info.state.and_then(|s| s.running) == Some(false),
            Err(_) => false,
        }
    }

    async fn upload(&self, tar: Vec<u8>, what: &str) -> Result<()> {
        let opts = UploadToContainerOptionsBuilder::default().path("/").build();
        self.docker
            .upload_to_container(&self.id, Some(opts), bollard::body_full(tar.into()))
            .await
            .map_err(|e| archive_err(what, e))
    }
}

impl Drop for DockerSandbox {
    fn drop(&mut self) {
        if self.destroyed {
            return;
        }
        // Synchronous cleanup on its own thread and runtime: this may run inside a runtime
        // (dropped future, panic) or after it.
        let docker = self.docker.clone();
        let id = self.id.clone();
        let t = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let opts = RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build();
                let _ = tokio::time::timeout(
                    Duration::from_secs(30),
                    docker.remove_container(&id, Some(opts)),
                )
                .await;
            });
        });
        let _ = t.join();
        self.destroyed = true;
    }
}

/// The PATH an image's containers start with (Docker's default when the image sets none).
async fn image_path_env(docker: &Docker, image: &str) -> Result<String> {
    let info = docker
        .inspect_image(image)
        .await
        .map_err(|e| docker_err(&format!("inspect image {image}"), e))?;
    Ok(info
        .config
        .and_then(|c| c.env)
        .unwrap_or_default()
        .iter()
        .find_map(|v| v.strip_prefix("PATH=").map(str::to_string))
        .unwrap_or_else(|| DEFAULT_PATH.to_string()))
}

/// The PATH Docker gives a container whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `image_map` applied to one image name: exact key, then the longest prefix pattern, then `*`
/// (see `sandbox::image_map`).
pub fn map_image(map: &BTreeMap<String, String>, image: &str) -> String {
    super::image_map::apply(map, image)
}

/// A Dockerfile with the images of its `FROM` lines replaced through `map`.
pub fn rewrite_from(dockerfile: &str, map: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(dockerfile.len());
    for line in dockerfile.split_inclusive('\n') {
        let t = line.trim_start();
        if t.len() > 5 && t[..5].eq_ignore_ascii_case("FROM ") {
            let words: Vec<&str> = t[5..].split_whitespace().collect();
            if let Some(i) = words.iter().position(|w| !w.starts_with("--")) {
                let mapped = map_image(map, words[i]);
                if mapped != words[i] {
                    let mut w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
                    w[i] = mapped;
                    out.push_str(&format!("FROM {}\n", w.join(" ")));
                    continue;
                }
            }
        }
        out.push_str(line);
    }
    out
}

/// The external images a Dockerfile starts from: `FROM` images that are not earlier stages,
/// `scratch`, or build-arg expressions.
pub fn from_images(dockerfile: &str) -> Vec<String> {
    let mut stages: Vec<String> = Vec::new();
    let mut images = Vec::new();
    for line in dockerfile.lines() {
        let t = line.trim_start();
        if t.len() <= 5 || !t[..5].eq_ignore_ascii_case("FROM ") {
            continue;
        }
        let words: Vec<&str> = t[5..]
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let Some(image) = words.first() else { continue };
        let lower = image.to_ascii_lowercase();
        if lower != "scratch"
            && !image.contains('$')
            && !stages.contains(&lower)
            && !images.contains(&image.to_string())
        {
            images.push(image.to_string());
        }
        if words.len() >= 3 && words[1].eq_ignore_ascii_case("as") {
            stages.push(words[2].to_ascii_lowercase());
        }
    }
    images
}

/// The task's verifier and reference solution on the host: never part of an image, since the
/// agent runs in it (a TB1 task's build context is the whole task directory). They are copied
/// in for their own phase only.
pub fn verifier_and_solution_files(task: &Task) -> Vec<std::path::PathBuf> {
    let mut v = vec![task.test_script.clone(), task.dir.join("solution.yaml")];
    v.extend(task.tests_dir.clone());
    match (task.format, &task.solution_script) {
        (crate::task::TaskFormat::Harbor, Some(s)) => v.extend(s.parent().map(Path::to_path_buf)),
        (_, Some(s)) => v.push(s.clone()),
        (_, None) => {}
    }
    v
}

/// The build context of `dir` as a deterministic tar (sorted, mtime 0, uid 0), with the
/// Dockerfile's FROM lines rewritten through the image map and the `excluded` paths left out.
pub fn build_context(
    dir: &Path,
    dockerfile: Option<&Path>,
    map: &BTreeMap<String, String>,
    excluded: &[std::path::PathBuf],
) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    append_tree(&mut b, dir, "", dockerfile, map, excluded)?;
    b.into_inner().at(dir)
}

fn tar_dir(dir: &Path, prefix: &str) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    append_tree(&mut b, dir, prefix, None, &BTreeMap::new(), &[])?;
    b.into_inner().at(dir)
}

fn append_tree(
    b: &mut tar::Builder<Vec<u8>>,
    dir: &Path,
    prefix: &str,
    dockerfile: Option<&Path>,
    map: &BTreeMap<String, String>,
    excluded: &[std::path::PathBuf],
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .at(dir)?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if excluded.contains(&p) {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let meta = std::fs::symlink_metadata(&p).at(&p)?;
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&p).at(&p)?;
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b.append_link(&mut h, &rel, &target).at(&p)?;
        } else if meta.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_mode(meta.permissions().mode() & 0o7777);
            b.append_data(&mut h, format!("{rel}/"), std::io::empty())
                .at(&p)?;
            append_tree(b, &p, &rel, dockerfile, map, excluded)?;
        } else if meta.is_file() {
            let mut data = std::fs::read(&p).at(&p)?;
            if dockerfile == Some(p.as_path()) && !map.is_empty() {
                data = rewrite_from(&String::from_utf8_lossy(&data), map).into_bytes();
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(data.len() as u64);
            h.set_mode(meta.permissions().mode() & 0o7777);
            b.append_data(&mut h, &rel, &data[..]).at(&p)?;
        }
    }
    Ok(())
}

/// Every task image's name starts so.
pub const TASK_IMAGE_PREFIX: &str = "git-harness/task-";

/// A task image's tag: its build context and the ids of its FROM images, so a rebuilt FROM
/// image makes another task image.
fn task_image_tag(task_id: &str, context: &[u8], base_ids: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(context);
    for id in base_ids {
        h.update([0]);
        h.update(id.as_bytes());
    }
    let hash = hex::encode(h.finalize());
    format!("{TASK_IMAGE_PREFIX}{}:{}", tag_safe(task_id), &hash[..12])
}

/// A Docker-tag-safe form of a task id.
fn tag_safe(s: &str) -> String {
    let t: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    let t = t.trim_start_matches(['-', '.', '_']).to_string();
    if t.is_empty() { "task".into() } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_lines_are_mapped() {
        let map = BTreeMap::from([(
            "ubuntu:24.04".to_string(),
            "git-harness/base:bookworm".to_string(),
        )]);
        let d = "FROM --platform=linux/amd64 ubuntu:24.04 AS build\nRUN true\nfrom python:3\n";
        let r = rewrite_from(d, &map);
        assert!(r.starts_with("FROM --platform=linux/amd64 git-harness/base:bookworm AS build\n"));
        assert!(r.ends_with("from python:3\n"));
    }

    #[test]
    fn from_images_skip_stages_and_scratch() {
        let d = "FROM base:1 AS build\nRUN x\nFROM build\nFROM scratch\nFROM --platform=x other:2\nFROM ${IMG}\n";
        assert_eq!(
            from_images(d),
            vec!["base:1".to_string(), "other:2".to_string()]
        );
    }

    #[test]
    fn toolchain_tampering_rules() {
        let c = |k: Change, p: &str| (k, p.to_string());
        let changes = vec![
            c(Change::Modified, "/usr/bin"),
            c(Change::Modified, "/usr/bin/bash"),
            c(Change::Added, "/usr/bin/rg"),
            c(Change::Modified, "/usr/local/bin"),
            c(Change::Added, "/usr/local/bin/tool"),
            c(Change::Deleted, "/usr/sbin/ldconfig"),
            c(Change::Modified, "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            c(Change::Added, "/usr/lib/x86_64-linux-gnu/libnew.so.1"),
            c(Change::Modified, "/usr/lib/python3.11/os.py"),
            c(Change::Modified, "/usr/lib/python3/dist-packages/six.py"),
            c(
                Change::Added,
                "/usr/local/lib/python3.11/site-packages/sitecustomize.py",
            ),
            c(Change::Added, "/etc/ld.so.preload"),
            c(Change::Modified, "/app/answer.txt"),
        ];
        let dirs = vec![
            "/usr/local/bin".to_string(),
            "/usr/sbin".to_string(),
            "/usr/bin".to_string(),
        ];
        assert_eq!(
            toolchain_tampering(&changes, &dirs),
            vec![
                "changed /usr/bin/bash",
                "removed /usr/sbin/ldconfig",
                "changed /usr/lib/x86_64-linux-gnu/libc.so.6",
                "changed /usr/lib/python3.11/os.py",
                "added /usr/local/lib/python3.11/site-packages/sitecustomize.py",
                "added /etc/ld.so.preload",
            ]
        );
    }

    #[test]
    fn tags_are_safe() {
        assert_eq!(tag_safe("My Task!"), "my-task-");
    }
}
