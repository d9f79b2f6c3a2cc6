//! Sandboxes: where a trial's commands run. Every implementation guarantees that a timeout kills
//! the whole process tree of that exec, that `destroy` always runs, and that nothing is left
//! behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::experiment::{NetworkChoice, RunnerConfig, RunnerKind};
use crate::task::{EnvironmentSpec, Task};

pub use crate::task::Phase;

mod auto;
pub mod docker;
mod engine;
pub mod image;
pub mod kubernetes;
/// Image map patterns are configured with the experiment.
pub use crate::experiment::image_map;
pub mod local;
mod output;
mod ssh;
pub mod tunnel;
pub mod view;

pub use auto::AutoProvider;
pub use docker::DockerProvider;
pub use kubernetes::KubeProvider;
pub use local::{LocalOptions, LocalProvider};

/// One command to run in a fresh shell (`bash -c`) inside the sandbox.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub command: String,
    pub timeout: Duration,
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox; `None` means the task's workdir.
    pub workdir: Option<String>,
}

impl ExecRequest {
    pub fn new(command: impl Into<String>, timeout: Duration) -> Self {
        ExecRequest {
            command: command.into(),
            timeout,
            env: Vec::new(),
            workdir: None,
        }
    }
}

/// What an exec produced. `exit_code` is `None` when the command was killed (timeout, signal).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ExecOutput {
    pub exit_code: Option<i32>,
    /// stdout and stderr interleaved, possibly truncated head + tail.
    pub output: String,
    pub truncated: bool,
    pub timed_out: bool,
    pub duration_ms: u64,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }
}

/// A live sandbox for one trial.
#[async_trait]
pub trait Sandbox: Send + Sync {
    /// The task's working directory as seen by commands inside the sandbox.
    fn workdir(&self) -> &str;
    async fn exec(&self, req: ExecRequest) -> Result<ExecOutput>;
    /// Paths are absolute inside the sandbox, or relative to `workdir`.
    async fn read_file(&self, path: &str) -> Result<Vec<u8>>;
    /// Read at most `limit` bytes; returns them and the file's whole size, so a caller can say
    /// what was cut. Sandboxes that can should bound the read itself.
    async fn read_file_capped(&self, path: &str, limit: u64) -> Result<(Vec<u8>, u64)> {
        let mut data = self.read_file(path).await?;
        let size = data.len() as u64;
        data.truncate(limit.min(usize::MAX as u64) as usize);
        Ok((data, size))
    }
    async fn write_file(&self, path: &str, data: &[u8]) -> Result<()>;
    /// Copy a host directory's content into `dest` inside the sandbox.
    async fn copy_dir_in(&self, host_dir: &Path, dest: &str) -> Result<()>;
    /// Tear everything down. Idempotent; also runs on drop paths through the provider's guard.
    async fn destroy(&mut self) -> Result<()>;

    /// Where the verifier's files go (`$HARNESS_TESTS_DIR`).
    fn tests_dir(&self) -> &str {
        "/tests"
    }
    /// Where logs go; the verifier writes `<logs>/verifier/reward.txt` (`$HARNESS_LOGS_DIR`).
    fn logs_dir(&self) -> &str {
        "/logs"
    }
    /// Where the oracle's solution goes (`$HARNESS_SOLUTION_DIR`).
    fn solution_dir(&self) -> &str {
        "/solution"
    }
    /// Empty these directories (made when missing) for the runtime's own use, whatever the
    /// agent left in them: the verifier's log dir and its tests dir before it runs. The agent
    /// can make entries that it cannot delete itself (a directory without write permission),
    /// so a failure here is the sandbox's, and sandboxes that can should reset from outside.
    async fn reset_dirs(&self, dirs: &[&str]) -> Result<()> {
        let q = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let list: Vec<String> = dirs.iter().map(|d| q(d)).collect();
        let cmd = format!(
            "for d in {l}; do rm -rf \"$d\" && mkdir -p \"$d\" || exit 1; done",
            l = list.join(" ")
        );
        let out = self
            .exec(ExecRequest::new(cmd, Duration::from_secs(60)))
            .await?;
        if !out.success() {
            return Err(InfraClass::Sandbox.error(format!(
                "clear the verifier's directories: {}",
                out.output.trim()
            )));
        }
        Ok(())
    }
    /// The files `names` of directory `dir`, `None` for one that is missing or not a regular
    /// file. Sandboxes that can read the directory in one go.
    async fn read_dir_files(&self, dir: &str, names: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            out.push(self.read_file(&format!("{dir}/{n}")).await.ok());
        }
        Ok(out)
    }
    /// A fingerprint of the working tree (paths, sizes, mtimes of its files, to depth 6, without
    /// `.git` and `node_modules`), read without running anything in the sandbox; `None` where
    /// the runtime cannot see the tree from outside (the caller then runs `find` inside).
    async fn workdir_fingerprint(&self) -> Result<Option<String>> {
        Ok(None)
    }
    /// Kill processes that outlived their exec (e.g. a `setsid` escapee that could forge a
    /// reward later). Runs before the verifier. Nothing to do where execs cannot leave any.
    async fn kill_strays(&self) -> Result<()> {
        Ok(())
    }
    /// Run the verifier: end or keep the agent's stray processes, give the verifier its
    /// network, make `run.reset` anew and fill the tests in, check the toolchain, run
    /// `run.command`. This default does it in steps (strays killed first, nothing runs until
    /// the toolchain check passed); runners that can fold the steps into one exec do.
    async fn run_verifier(&self, run: VerifierRun) -> Result<VerifierRan> {
        self.kill_strays().await?;
        // The verifier's network from here on: no agent process is left to use it.
        self.set_phase(Phase::Verifier).await?;
        // Nothing runs after the agent until its changes to the verifier's toolchain are
        // known: a replaced interpreter could forge any reward. The tests are copied in
        // meanwhile (no process of the agent is left to read them).
        let copy_tests = async {
            let reset: Vec<&str> = run.reset.iter().map(String::as_str).collect();
            self.reset_dirs(&reset).await?;
            if let Some(dir) = &run.tests {
                self.copy_dir_in(dir, &run.tests_dir).await?;
            }
            for (path, data) in &run.files {
                self.write_file(path, data).await?;
            }
            Ok::<_, Error>(())
        };
        let (tampered, copied) = tokio::join!(self.toolchain_changes(), copy_tests);
        let tampered = tampered?;
        if !tampered.is_empty() {
            return Ok(VerifierRan::Tampered {
                why: "the verifier did not run: the agent changed its toolchain",
                causes: tampered,
            });
        }
        if let Err(e) = copied {
            return Ok(VerifierRan::CopyFailed(e));
        }
        Ok(VerifierRan::Ran(self.exec(run.command).await?))
    }
    /// What the agent changed of the verifier's toolchain (commands on PATH, shared libraries,
    /// the dynamic loader, Python's standard library and startup hooks), one line per change
    /// (`changed /usr/bin/bash`). Checked after `kill_strays`, before the verifier runs; a
    /// non-empty answer fails the trial instead of running the verifier. Empty where the runner
    /// keeps those paths read-only.
    async fn toolchain_changes(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// The PATH the verifier runs with (the image's, not the agent's); `None` keeps the
    /// sandbox's own.
    fn verifier_path(&self) -> Option<String> {
        None
    }
    /// The trial id this sandbox was made for (a label of its container, a part of its temp dir).
    fn trial_id(&self) -> &str {
        ""
    }
    /// The engine this sandbox runs on, when the runner has a choice of them (a pool of
    /// hosts); recorded with the trial's result, never part of its cache key.
    fn placement(&self) -> Option<&str> {
        None
    }
    /// Give the commands that follow the network of `phase` (see [`PhaseNetworks`]). A new
    /// sandbox is already in its agent phase; the verifier enters its own.
    async fn set_phase(&self, phase: Phase) -> Result<()> {
        let _ = phase;
        Ok(())
    }
    /// Show a host directory read-only to later commands at `at` (the path it is seen under
    /// is returned; sandboxes that cannot bind copy it in).
    async fn show_read_only(&self, host_dir: &Path, at: &str) -> Result<String> {
        self.copy_dir_in(host_dir, at).await?;
        Ok(at.to_string())
    }
    /// Whether this sandbox starts from an image on which the harness's `agent.install` already
    /// ran (see [`AgentInstall`]): the episode neither installs nor copies `agent_paths` in.
    fn agent_installed(&self) -> bool {
        false
    }
    /// Stop showing what [`Sandbox::show_read_only`] and [`Sandbox::gateway_route`] bound in:
    /// the agent's phase is over, and the verifier sees none of it.
    async fn hide_read_only(&self) {}
    /// How later commands reach the model gateway, and nothing else: the base URL (no path)
    /// and a shell prelude to run first (e.g. a forwarder). Every runner has one (bubblewrap:
    /// a forwarder; Docker and Kubernetes: the exec tunnel); a sandbox without one says so.
    async fn gateway_route(&self, gateway: &GatewayEndpoints) -> Result<GatewayRoute> {
        let _ = gateway;
        Err(Error::usage(
            "this sandbox cannot reach the model gateway, so `protocol: command` harnesses cannot run in it",
        ))
    }
}

/// What [`Sandbox::run_verifier`] is given.
#[derive(Debug, Clone)]
pub struct VerifierRun {
    /// Directories made anew first (the verifier's log dir, its tests dir).
    pub reset: Vec<String>,
    /// The task's `tests/` on the host, copied into `tests_dir`.
    pub tests: Option<PathBuf>,
    pub tests_dir: String,
    /// Further files put in after the tests (TB1's `run-tests.sh`), at absolute paths.
    pub files: Vec<(String, Vec<u8>)>,
    /// The verifier's command (its timeout, PATH and environment).
    pub command: ExecRequest,
}

/// How [`Sandbox::run_verifier`] ended.
#[derive(Debug)]
pub enum VerifierRan {
    /// The agent's doing makes the verifier's result void (reward 0), for these causes.
    Tampered {
        why: &'static str,
        causes: Vec<String>,
    },
    /// The tests could not be put in place.
    CopyFailed(Error),
    /// The verifier's command ran.
    Ran(ExecOutput),
}

/// Where the model gateway listens on the host.
#[derive(Debug, Clone)]
pub struct GatewayEndpoints {
    pub tcp: std::net::SocketAddr,
    pub socket: std::path::PathBuf,
}

/// How a sandbox's commands reach the gateway.
#[derive(Debug, Clone)]
pub struct GatewayRoute {
    /// `http://127.0.0.1:PORT`, as seen from inside.
    pub base_url: String,
    /// Shell lines to run before the agent's command (start a forwarder and wait for it).
    pub prelude: Option<String>,
}

/// The experiment's choices for the phases' network, over each task's own policy
/// (`runner.agent_network`, `runner.verifier_network`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    pub agent: NetworkChoice,
    pub verifier: NetworkChoice,
}

impl NetworkPolicy {
    pub fn of(cfg: &RunnerConfig) -> Self {
        NetworkPolicy {
            agent: cfg.agent_network,
            verifier: cfg.verifier_network,
        }
    }

    /// Refuse a task that would run a phase under `allowlist`: this build cannot limit a
    /// phase's network to `allowed_hosts`, and running it as `public` would give the task more
    /// than it asked for. A phase the experiment pins to `none` is not refused (it gets no
    /// network at all). A configuration error naming `task.toml`, its line and the field.
    pub fn refuse_allowlist(&self, task: &Task) -> Result<()> {
        let envs = std::iter::once(&task.environment).chain(task.verifier_environment.as_ref());
        for env in envs {
            for (phase, pinned) in [
                (Phase::Setup, false),
                (Phase::Agent, self.agent == NetworkChoice::None),
                (Phase::Verifier, self.verifier == NetworkChoice::None),
            ] {
                let Some(table) = env.allowlist_table(phase).filter(|_| !pinned) else {
                    continue;
                };
                let file = task.dir.join("task.toml");
                let line = crate::task::toml_field_line(&file, table, "network_mode");
                let hosts = if env.allowed_hosts.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", env.allowed_hosts.join(", "))
                };
                return Err(Error::Config {
                    file,
                    line,
                    field: format!("{table}.network_mode"),
                    message: format!(
                        "task `{}`: `allowlist` is not enforced by this git-harness: it cannot limit the network to allowed_hosts{hosts}, and does not run the task as `public` instead",
                        task.id
                    ),
                    hint: Some(
                        "set network_mode = \"public\" there (any host) or \"no-network\"; or take the agent's / verifier's network away with runner.agent_network: none / runner.verifier_network: none (tasks check: --agent-network none / --verifier-network none)".into(),
                    ),
                });
            }
        }
        Ok(())
    }

    /// Which phases of a sandbox made from `env` have the network.
    pub fn phases(&self, env: &EnvironmentSpec) -> PhaseNetworks {
        PhaseNetworks {
            setup: env.phase_network(Phase::Setup),
            agent: self.agent.allows(env.phase_network(Phase::Agent)),
            verifier: self.verifier.allows(env.phase_network(Phase::Verifier)),
        }
    }
}

/// Whether each phase of one sandbox has the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseNetworks {
    pub setup: bool,
    pub agent: bool,
    pub verifier: bool,
}

impl PhaseNetworks {
    pub fn get(&self, phase: Phase) -> bool {
        match phase {
            Phase::Setup => self.setup,
            Phase::Agent => self.agent,
            Phase::Verifier => self.verifier,
        }
    }

    pub fn any(&self) -> bool {
        self.setup || self.agent || self.verifier
    }
}

/// What a sandbox is made for, beyond the task.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Recorded as a label / in names; a fresh id is made when `None`.
    pub trial_id: Option<String>,
    /// A command harness's `agent.install`, for runners that install once per image (Docker:
    /// a derived image); the others ignore it and the agent's episode installs per trial.
    pub agent_install: Option<AgentInstall>,
}

/// A command harness's `agent.install` and what it reads: run once per image, its result kept
/// as a derived image named by the image's id and [`AgentInstall::digest`].
#[derive(Debug, Clone)]
pub struct AgentInstall {
    /// The install command (bash), run in `/` with `env`.
    pub script: String,
    pub env: Vec<(String, String)>,
    pub timeout: std::time::Duration,
    /// The commit's harness files (absolute paths in the sandbox, under `files_dir`), there while
    /// the install runs and removed before the image is kept.
    pub files: Vec<(String, String)>,
    pub files_dir: String,
    /// Host directories (`runner.agent_paths`) copied in under their own paths; they stay in the
    /// derived image, so trials on it need no copy.
    pub paths: Vec<std::path::PathBuf>,
    /// Digest of the script, the environment, the files and the paths' stat tree.
    pub digest: String,
}

/// Makes sandboxes for tasks (local, docker).
#[async_trait]
pub trait SandboxProvider: Send + Sync {
    fn name(&self) -> &str;
    async fn create(&self, task: &Task) -> Result<Box<dyn Sandbox>>;
    /// Like `create`, for a named trial.
    async fn create_with(&self, task: &Task, opts: &CreateOptions) -> Result<Box<dyn Sandbox>> {
        let _ = opts;
        self.create(task).await
    }
    /// The identity of what a task's sandbox starts from beyond the task's own files (Docker:
    /// the ids of the images it is built from), for the cache key. `None` when the task's files
    /// are all of it.
    async fn environment_id(&self, task: &Task) -> Result<Option<String>> {
        let _ = task;
        Ok(None)
    }
    /// [`SandboxProvider::environment_id`] once what the task's sandbox needs is there (Docker:
    /// images pulled as `runner.pull` says); `notes` gets progress. Called before trials start.
    async fn prepare(&self, task: &Task, notes: &mut Notes<'_>) -> Result<Option<String>> {
        let _ = notes;
        self.network().refuse_allowlist(task)?;
        self.environment_id(task).await
    }
    /// The experiment's network choices this provider applies.
    fn network(&self) -> NetworkPolicy {
        NetworkPolicy::default()
    }
    /// Remove what sandboxes of dead processes left behind (temp dirs, containers), never
    /// what a live process uses. Returns how many were removed.
    async fn sweep(&self) -> Result<usize> {
        Ok(0)
    }
    /// Remove whatever sandboxes of this process are left; only once none is in use (after
    /// its trials were aborted).
    async fn sweep_own(&self) -> Result<usize> {
        Ok(0)
    }
    /// A warning about weak isolation that the caller should show once (e.g. no bubblewrap).
    fn isolation_warning(&self) -> Option<String> {
        None
    }
}

pub use crate::error::InfraClass;

/// Timeout of `environment/setup.sh` when the task gives no `build_timeout_sec`.
pub(crate) const SETUP_TIMEOUT: Duration = Duration::from_secs(600);

/// What a sandbox started from a base image needs before the agent (the container runners):
/// the task's workspace copied in, then its `environment/setup.sh` run. A failed setup is the
/// environment's failure (infrastructure), never the agent's.
pub(crate) async fn seed_from_task(sb: &dyn Sandbox, task: &Task) -> Result<()> {
    use crate::error::IoContext;
    let env = &task.environment;
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
            return Err(InfraClass::Sandbox.error(format!(
                "environment/setup.sh of task `{}` failed ({}):\n{}",
                task.id,
                crate::exit::describe(out.exit_code, out.timed_out),
                out.output
            )));
        }
    }
    Ok(())
}

/// The files `names` of directory `dir` from a tar of that directory (entries are named after
/// its last component, as the engines' archive downloads name them); `None` for a name the
/// archive lacks.
pub(crate) fn files_of_dir_tar(
    tar_bytes: &[u8],
    dir: &str,
    names: &[&str],
) -> Result<Vec<Option<Vec<u8>>>> {
    use crate::error::IoContext;
    let base = dir.rsplit('/').next().unwrap_or_default();
    let mut found: Vec<Option<Vec<u8>>> = vec![None; names.len()];
    let mut ar = tar::Archive::new(tar_bytes);
    for entry in ar.entries().at(dir)? {
        let mut entry = entry.at(dir)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().at(dir)?.to_string_lossy().into_owned();
        let Some(i) = names
            .iter()
            .position(|n| path.trim_end_matches('/') == format!("{base}/{n}"))
        else {
            continue;
        };
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).at(dir)?;
        found[i] = Some(data);
    }
    Ok(found)
}

/// Where progress notes go (one short line each; the CLI shows them through the `Observer`).
pub type Notes<'a> = dyn FnMut(&str) + Send + 'a;

/// Whether the local runner uses bubblewrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bwrap {
    /// Use it when `bwrap` is on PATH and works.
    #[default]
    Auto,
    /// Require it; fail when it is missing.
    Always,
    /// Never (plain process groups).
    Never,
}

/// Choices for [`provider`] that are not part of the experiment config.
#[derive(Debug, Clone, Default)]
pub struct ProviderOptions {
    pub bwrap: Bwrap,
    /// Extra labels on Docker containers (besides `git-harness=1` and the trial id).
    pub labels: BTreeMap<String, String>,
    /// Where the local runner makes its temp dirs (default: the system temp dir).
    pub temp_root: Option<std::path::PathBuf>,
    /// Host paths a local sandbox never shows: the suite (with every task's solution and
    /// tests), the harness repository.
    pub hidden: Vec<std::path::PathBuf>,
}

/// The sandbox provider the runner config asks for: local (bubblewrap auto-detected unless
/// overridden), Docker (connected from `DOCKER_HOST` or the default socket; the version is
/// negotiated on first use), auto (Docker for the tasks that need an image, local otherwise),
/// or Kubernetes (`runner.kubernetes`; the kubeconfig is read on first use).
pub fn provider(cfg: &RunnerConfig, opts: &ProviderOptions) -> Result<Arc<dyn SandboxProvider>> {
    let network = NetworkPolicy::of(cfg);
    let one = |endpoint: docker::Endpoint| {
        DockerProvider::connect_to(endpoint, cfg.image_map.clone(), opts.labels.clone()).map(|d| {
            d.with_network(network)
                .with_pull(cfg.pull)
                .with_strays(cfg.strays)
                .with_registry(cfg.registry.clone())
        })
    };
    let docker = || -> Result<Arc<dyn SandboxProvider>> {
        if cfg.hosts.is_empty() {
            return Ok(Arc::new(one(docker::Endpoint::from_env()?)?));
        }
        let mut members = Vec::new();
        for (i, h) in cfg.hosts.iter().enumerate() {
            let endpoint = docker::Endpoint::of_host(h).map_err(|e| {
                Error::usage_hint(
                    format!("runner.hosts[{i}] ({}): {e}", h.host),
                    e.hint().unwrap_or_default(),
                )
            })?;
            members.push((h.host.clone(), one(endpoint)?, h.concurrency));
        }
        Ok(Arc::new(docker::DockerPool::new(members)))
    };
    let local_provider = |opts: &ProviderOptions| local_provider(opts, network);
    // experiment.yaml refuses the pair; a runner chosen on the command line is checked here.
    if cfg.strays == crate::experiment::Strays::Keep
        && matches!(cfg.kind, RunnerKind::Local | RunnerKind::Kubernetes)
    {
        return Err(Error::usage_hint(
            format!(
                "runner.strays is keep, which the {} runner does not do (it always kills the agent's leftover processes)",
                cfg.kind
            ),
            "run with --runner docker, or remove runner.strays from .harness/experiment.yaml",
        ));
    }
    match cfg.kind {
        RunnerKind::Local => local_provider(opts),
        RunnerKind::Docker => docker(),
        RunnerKind::Kubernetes => {
            let k = cfg.kubernetes.clone().ok_or_else(|| {
                Error::usage_hint(
                    "runner.kind is kubernetes but runner.kubernetes is missing",
                    "add `kubernetes: {namespace: NAME}` under runner in .harness/experiment.yaml",
                )
            })?;
            Ok(Arc::new(
                KubeProvider::new(k, cfg.image_map.clone(), opts.labels.clone())
                    .with_network(network)
                    .with_pull(cfg.pull)
                    .with_registry(cfg.registry.clone()),
            ))
        }
        // The client only talks to the engine on first use: a suite without image tasks never
        // needs one.
        RunnerKind::Auto => Ok(Arc::new(AutoProvider::new(
            local_provider(opts)?,
            docker().map_err(|e| e.to_string()),
        ))),
    }
}

fn local_provider(
    opts: &ProviderOptions,
    network: NetworkPolicy,
) -> Result<Arc<dyn SandboxProvider>> {
    let use_bwrap = match opts.bwrap {
        Bwrap::Never => false,
        Bwrap::Auto => local::bwrap_available(),
        Bwrap::Always => {
            if !local::bwrap_available() {
                return Err(Error::usage_hint(
                    "bubblewrap (`bwrap`) is not available",
                    "install the bubblewrap package, or run without --bwrap",
                ));
            }
            true
        }
    };
    let lo = LocalOptions {
        bwrap: use_bwrap,
        temp_root: opts.temp_root.clone(),
        hidden: opts.hidden.clone(),
        network,
        ..LocalOptions::default()
    };
    Ok(Arc::new(LocalProvider::new(lo)))
}

/// A fresh trial id: time and randomness, safe in names and labels.
pub fn new_trial_id() -> String {
    let r: u32 = rand::random();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("t{t:x}{r:08x}")
}

/// Resolve `path` (absolute, or relative to `base`) lexically: `.` and `..` folded, never above `/`.
pub(crate) fn normalize(base: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{base}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}
