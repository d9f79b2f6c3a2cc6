//! Images and containers: which image a task runs on (building it when needed), container
//! creation, and the sweep of leftovers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};

use super::sandbox::DockerSandbox;
use super::{
    BRIDGE, HOST_LABEL, LABEL, OWNER_LABEL, PIDS_LIMIT, TRIAL_LABEL, docker_err, is_not_found,
    timed,
};
use crate::error::{Error, IoContext, Result};
use crate::experiment::{PullPolicy, RegistryConfig, Strays};
use crate::sandbox::image::{
    BASE_IMAGE, TASK_IMAGE_PREFIX, build_context, build_tar, from_images, image_id, image_path_env,
    map_image, pull_image, push_image, rewrite_from, tag_safe, task_image_tag,
    verifier_and_solution_files,
};
use crate::sandbox::{CreateOptions, ExecRequest, InfraClass, Notes, Sandbox, SandboxProvider};
use crate::task::Task;

const BUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// The images on which a command harness's `agent.install` ran (see `create_installed`).
pub const AGENT_IMAGE_REPO: &str = "git-harness/agent";
/// The directories of the runtime in every container.
const RUNTIME_DIRS: &[&str] = &[
    "/logs",
    "/logs/verifier",
    "/logs/agent",
    "/tests",
    "/solution",
];

pub struct DockerProvider {
    endpoint: super::Endpoint,
    raw: Docker,
    client: tokio::sync::OnceCell<Docker>,
    image_map: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    /// When images are pulled.
    pull: PullPolicy,
    /// What becomes of the agent's leftover processes when the verifier starts.
    strays: Strays,
    /// Images pulled by this provider (under `always`, each is pulled once).
    pulled: Mutex<HashSet<String>>,
    /// Images known present, with their ids and PATHs: every trial after the first skips the
    /// look-ups (and the lock they are taken under), so trials do not queue for them.
    known: Mutex<HashMap<String, String>>,
    path_envs: Mutex<HashMap<String, String>>,
    build_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Container creations in flight, on tasks of their own (see `create_docker`).
    creating: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The experiment's choices for the phases' network.
    network: crate::sandbox::NetworkPolicy,
    /// `runner.registry`: task images built here are named under it and pushed to it.
    registry: Option<RegistryConfig>,
    /// Task images that came through the registry before trials started, by task id: their
    /// names and ids (see `publish` and `fetch`).
    published: Mutex<HashMap<String, (String, String)>>,
}

impl DockerProvider {
    /// Connect from `DOCKER_HOST` or the default socket. The API version is negotiated on first
    /// use (see [`DockerProvider::client`]).
    pub fn connect(
        image_map: BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
    ) -> Result<Self> {
        Self::connect_to(super::Endpoint::from_env()?, image_map, labels)
    }

    /// Connect to `endpoint` (the version is negotiated on first use, as for `connect`).
    pub fn connect_to(
        endpoint: super::Endpoint,
        image_map: BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
    ) -> Result<Self> {
        let raw = endpoint.client()?;
        Ok(DockerProvider {
            endpoint,
            raw,
            client: tokio::sync::OnceCell::new(),
            image_map,
            labels,
            pull: PullPolicy::default(),
            strays: Strays::default(),
            pulled: Mutex::new(HashSet::new()),
            known: Mutex::new(HashMap::new()),
            path_envs: Mutex::new(HashMap::new()),
            build_locks: Mutex::new(HashMap::new()),
            creating: Mutex::new(Vec::new()),
            network: crate::sandbox::NetworkPolicy::default(),
            registry: None,
            published: Mutex::new(HashMap::new()),
        })
    }

    /// The experiment's network choices for the phases of every sandbox this provider makes.
    pub fn with_network(mut self, network: crate::sandbox::NetworkPolicy) -> Self {
        self.network = network;
        self
    }

    /// The same provider pushing the task images it builds to `registry`.
    pub fn with_registry(mut self, registry: Option<RegistryConfig>) -> Self {
        self.registry = registry;
        self
    }

    /// The same provider with another pull policy.
    pub fn with_pull(mut self, pull: PullPolicy) -> Self {
        self.pull = pull;
        self
    }

    /// The same provider keeping or killing the agent's leftover processes (`runner.strays`).
    pub fn with_strays(mut self, strays: Strays) -> Self {
        self.strays = strays;
        self
    }

    fn lock_for(&self, key: &str) -> Result<Arc<tokio::sync::Mutex<()>>> {
        let mut m = self
            .build_locks
            .lock()
            .map_err(|_| Error::Internal("build lock poisoned".into()))?;
        Ok(m.entry(key.to_string()).or_default().clone())
    }

    /// The id of `image`, pulling it when the policy says so (`pull` false: never, whatever the
    /// policy). `Ok(None)`: not present and not pulled.
    async fn ensure_image(
        &self,
        docker: &Docker,
        image: &str,
        pull: bool,
        notes: &mut Notes<'_>,
    ) -> Result<Option<String>> {
        let policy = if pull { self.pull } else { PullPolicy::Never };
        if let Some(id) = self.known.lock().ok().and_then(|k| k.get(image).cloned()) {
            return Ok(Some(id));
        }
        let lock = self.lock_for(&format!("pull {image}"))?;
        let _held = lock.lock().await;
        // Another trial may have looked it up while this one waited.
        if let Some(id) = self.known.lock().ok().and_then(|k| k.get(image).cloned()) {
            return Ok(Some(id));
        }
        let done = self.pulled.lock().is_ok_and(|p| p.contains(image));
        let id = image_id(docker, image).await?;
        let wanted = match policy {
            PullPolicy::Never => false,
            PullPolicy::Missing => id.is_none(),
            PullPolicy::Always => !done,
        };
        if !wanted {
            // Under `always` an image is known once this provider pulled it.
            if let Some(id) = &id
                && (self.pull != PullPolicy::Always || done)
                && let Ok(mut k) = self.known.lock()
            {
                k.insert(image.to_string(), id.clone());
            }
            return Ok(id);
        }
        pull_image(docker, image, notes).await?;
        if let Ok(mut p) = self.pulled.lock() {
            p.insert(image.to_string());
        }
        match image_id(docker, image).await? {
            Some(id) => {
                if let Ok(mut k) = self.known.lock() {
                    k.insert(image.to_string(), id.clone());
                }
                Ok(Some(id))
            }
            None => {
                Err(InfraClass::Sandbox.error(format!("pull {image}: the image did not appear")))
            }
        }
    }

    /// The PATH of `image`'s containers, looked up once per provider (concurrent trials wait
    /// for the first one's look-up).
    async fn path_env(&self, docker: &Docker, image: &str) -> Result<String> {
        let cached = || {
            self.path_envs
                .lock()
                .ok()
                .and_then(|p| p.get(image).cloned())
        };
        if let Some(p) = cached() {
            return Ok(p);
        }
        let lock = self.lock_for(&format!("path {image}"))?;
        let _held = lock.lock().await;
        if let Some(p) = cached() {
            return Ok(p);
        }
        let p = image_path_env(docker, image).await?;
        if let Ok(mut m) = self.path_envs.lock() {
            m.insert(image.to_string(), p.clone());
        }
        Ok(p)
    }

    /// The id of an image of ours (a task's or an agent image, named by the digest of what it
    /// is made of), looked up once per provider and then known: trials after the first make
    /// no image call.
    async fn present_id(&self, docker: &Docker, image: &str) -> Result<Option<String>> {
        if let Some(id) = self.known.lock().ok().and_then(|k| k.get(image).cloned()) {
            return Ok(Some(id));
        }
        let id = image_id(docker, image).await?;
        if let Some(id) = &id
            && let Ok(mut k) = self.known.lock()
        {
            k.insert(image.to_string(), id.clone());
        }
        Ok(id)
    }

    /// The client, with the API version negotiated with the daemon.
    pub async fn client(&self) -> Result<Docker> {
        self.client
            .get_or_try_init(|| async { self.endpoint.negotiate(self.raw.clone()).await })
            .await
            .cloned()
    }

    /// Whether the engine answers a ping within a few seconds (a host that does not is lost).
    pub async fn answers(&self) -> bool {
        let ping = async {
            match self.client().await {
                Ok(d) => d.ping().await.is_ok(),
                Err(_) => false,
            }
        };
        tokio::time::timeout(Duration::from_secs(5), ping)
            .await
            .unwrap_or(false)
    }

    /// Where this provider's engine is.
    pub fn endpoint(&self) -> &super::Endpoint {
        &self.endpoint
    }

    /// `image_map` applied to one image name.
    pub fn map_image(&self, image: &str) -> String {
        map_image(&self.image_map, image)
    }

    /// The ids of the external images a task's Dockerfile starts `FROM` (after the image map),
    /// in order, pulling missing ones when `pull` and the policy allow; one still missing is an
    /// infrastructure error with a hint.
    async fn base_image_ids(
        &self,
        docker: &Docker,
        task: &Task,
        pull: bool,
        notes: &mut Notes<'_>,
    ) -> Result<Vec<String>> {
        let Some(dockerfile) = &task.dockerfile else {
            return Ok(Vec::new());
        };
        let text = std::fs::read_to_string(dockerfile).at(dockerfile)?;
        let mut ids = Vec::new();
        for from in from_images(&rewrite_from(&text, &self.image_map)) {
            match self.ensure_image(docker, &from, pull, notes).await? {
                Some(id) => ids.push(id),
                None => {
                    return Err(InfraClass::Sandbox.error_hint(
                        format!(
                            "image {from} (FROM in the Dockerfile of task `{}`) is not present locally{}",
                            task.id,
                            self.not_pulled()
                        ),
                        format!(
                            "pull or load it, set runner.pull: missing, or map it in runner.image_map (e.g. `{from}: {BASE_IMAGE}`, or --image-map {from}={BASE_IMAGE})"
                        ),
                    ));
                }
            }
        }
        Ok(ids)
    }

    /// Why a missing image was not pulled.
    fn not_pulled(&self) -> &'static str {
        match self.pull {
            PullPolicy::Never => " and runner.pull is never",
            _ => "",
        }
    }

    /// What a task's environment is built on, as image ids: the FROM images of its Dockerfile,
    /// else its `docker_image`, else the base image. Part of the cache key, so results on an
    /// image that has since been rebuilt are not reused. Nothing is pulled: an image that the
    /// policy would pull is an error (its id is not known yet).
    pub async fn environment_id(&self, task: &Task) -> Result<String> {
        self.identify(task, false, &mut |_| {}).await
    }

    /// [`DockerProvider::environment_id`], pulling what the policy says first; `notes` gets
    /// the pull's progress.
    pub async fn prepare(&self, task: &Task, notes: &mut Notes<'_>) -> Result<String> {
        self.network.refuse_allowlist(task)?;
        if self.registry.is_some()
            && let Some((_, id)) = self.publish(task, notes).await?
        {
            return Ok(id);
        }
        self.identify(task, true, notes).await
    }

    /// With `runner.registry`, make ready the image a task builds from its Dockerfile (from
    /// this engine, the registry, or a build here) and push it: its name and id, which every
    /// other engine then `fetch`es. `None`: the task builds nothing (its `docker_image`, the
    /// base image), or there is no registry.
    pub async fn publish(
        &self,
        task: &Task,
        notes: &mut Notes<'_>,
    ) -> Result<Option<(String, String)>> {
        let Some(registry) = &self.registry else {
            return Ok(None);
        };
        self.network.refuse_allowlist(task)?;
        let (image, _) = self.image_for(task).await?;
        if !image.starts_with(&format!("{}/{TASK_IMAGE_PREFIX}", registry.url)) {
            return Ok(None);
        }
        let docker = self.client().await?;
        push_image(&docker, &image, notes)
            .await
            .map_err(|e| registry_hint(e, registry))?;
        let id = image_id(&docker, &image).await?.ok_or_else(|| {
            InfraClass::Sandbox.error(format!("push {image}: the image went meanwhile"))
        })?;
        if let Ok(mut p) = self.published.lock() {
            p.insert(task.id.clone(), (image.clone(), id.clone()));
        }
        Ok(Some((image, id)))
    }

    /// Pull `image` from the registry unless this engine has it with id `id`, and check that
    /// it has it so now. Trials of the task then run on it.
    pub async fn fetch(
        &self,
        task: &Task,
        image: &str,
        id: &str,
        notes: &mut Notes<'_>,
    ) -> Result<()> {
        self.network.refuse_allowlist(task)?;
        let docker = self.client().await?;
        if image_id(&docker, image).await?.as_deref() != Some(id) {
            let pulled = pull_image(&docker, image, notes).await;
            if let (Err(e), Some(r)) = (pulled, &self.registry) {
                return Err(registry_hint(e, r));
            }
        }
        match image_id(&docker, image).await? {
            Some(got) if got == id => {
                if let Ok(mut p) = self.published.lock() {
                    p.insert(task.id.clone(), (image.to_string(), id.to_string()));
                }
                Ok(())
            }
            got => Err(Error::usage_hint(
                format!(
                    "image {image} of task `{}` is {} on this engine, not {id} as pushed before this run's trials",
                    task.id,
                    got.as_deref().unwrap_or("missing")
                ),
                "the registry's tag changed while the run started (another run pushing to runner.registry?): run again",
            )),
        }
    }

    async fn identify(&self, task: &Task, pull: bool, notes: &mut Notes<'_>) -> Result<String> {
        let docker = self.client().await?;
        if let Some((_, id)) = self.published_image(task) {
            return Ok(id);
        }
        if let Some(img) = &task.environment.docker_image {
            let mapped = self.map_image(img);
            let found = self.ensure_image(&docker, &mapped, pull, notes).await;
            match found {
                Ok(Some(id)) => return Ok(id),
                Ok(None) if !pull && self.pull != PullPolicy::Never => {
                    return Err(InfraClass::Sandbox.error(format!(
                        "image {mapped} of task `{}` is not pulled yet",
                        task.id
                    )));
                }
                // Harbor's rule: without the image, the Dockerfile builds it.
                Ok(None) | Err(_) if task.dockerfile.is_some() => {}
                Ok(None) => return Err(self.missing_image(&mapped, task)),
                Err(e) => return Err(e),
            }
        }
        if task.dockerfile.is_some() && task.environment_dir.is_some() {
            // Through a registry the key holds the task image's own id (`publish`), so a
            // re-pushed tag is another environment.
            if self.registry.is_some() {
                let tag = self.current_task_tag(&docker, task).await;
                let id = match tag.map(|t| self.in_registry(t)) {
                    Some(t) => image_id(&docker, &t).await?,
                    None => None,
                };
                return id.ok_or_else(|| {
                    InfraClass::Sandbox.error(format!(
                        "the image of task `{}` is not built or pulled yet",
                        task.id
                    ))
                });
            }
            return Ok(self
                .base_image_ids(&docker, task, pull, notes)
                .await?
                .join(","));
        }
        let base = self.map_image(BASE_IMAGE);
        match self.ensure_image(&docker, &base, pull, notes).await? {
            Some(id) => Ok(id),
            None => Err(self.missing_base(&base, task)),
        }
    }

    fn missing_image(&self, mapped: &str, task: &Task) -> Error {
        InfraClass::Sandbox.error_hint(
            format!(
                "image {mapped} of task `{}` is not present locally{}",
                task.id,
                self.not_pulled()
            ),
            "pull or load it, set runner.pull: missing, or map it to a local image in runner.image_map of experiment.yaml",
        )
    }

    fn missing_base(&self, base: &str, task: &Task) -> Error {
        InfraClass::Sandbox.error_hint(
            format!("task `{}` has no Dockerfile and no docker_image, and the base image {base} is missing", task.id),
            "build it with `git harness image base --debootstrap bookworm --include python3`",
        )
    }

    /// The images of ours that no task of `tasks` would run on now: task images
    /// (`git-harness/task-*`, also under a registry's name, `URL/git-harness/task-*`) that are
    /// stale, and agent images (`git-harness/agent:*`) made from a task image of `tasks` that
    /// the current harness's `install` (none: no install) would not make now. With `all`, also
    /// the task images of tasks not in `tasks` and every agent image not made now.
    pub async fn unused_task_images(
        &self,
        tasks: &[Task],
        all: bool,
        install: Option<&crate::sandbox::AgentInstall>,
    ) -> Result<Vec<String>> {
        let docker = self.client().await?;
        let mut wanted = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        let mut agents_wanted = std::collections::HashSet::new();
        for t in tasks {
            names.insert(format!("{TASK_IMAGE_PREFIX}{}:", tag_safe(&t.id)));
            let current = self.current_task_tag(&docker, t).await;
            // The images this task's trials run on now: the agent image on top of each.
            let mut runs_on: Vec<String> = current
                .iter()
                .map(|c| self.in_registry(c.clone()))
                .collect();
            runs_on.extend(
                t.environment
                    .docker_image
                    .as_deref()
                    .map(|i| self.map_image(i)),
            );
            if let Some(install) = install {
                for image in &runs_on {
                    if let Ok(Some(id)) = image_id(&docker, image).await {
                        agents_wanted.insert(agent_image_tag(&id, install));
                    }
                }
            }
            if let Some(tag) = current {
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
        // The ids of this suite's task images (any tag, current or stale): an agent image made
        // from one of them is this suite's.
        let suite_ids: std::collections::HashSet<&str> = images
            .iter()
            .filter(|img| {
                img.repo_tags.iter().any(|tag| {
                    task_image_name(tag)
                        .is_some_and(|local| names.iter().any(|n| local.starts_with(n.as_str())))
                })
            })
            .map(|img| img.id.as_str())
            .collect();
        let mut unused = Vec::new();
        for img in &images {
            for tag in &img.repo_tags {
                if let Some(local) = task_image_name(tag) {
                    let ours = all || names.iter().any(|n| local.starts_with(n.as_str()));
                    if ours && !wanted.contains(local) {
                        unused.push(tag.clone());
                    }
                } else if tag.starts_with(&format!("{AGENT_IMAGE_REPO}:")) {
                    let ours = all || suite_ids.contains(img.parent_id.as_str());
                    if ours && !agents_wanted.contains(tag) {
                        unused.push(tag.clone());
                    }
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
            // Removed meanwhile by someone else (the engine answers 404, or 500 "unrecognized
            // image ID" when the tag went between its lookup and the removal): gone is gone.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code,
                message,
            }) if status_code == 404
                || (status_code == 500 && message.contains("unrecognized image ID")) =>
            {
                Ok(true)
            }
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
        let base_ids = self
            .base_image_ids(docker, task, false, &mut |_| {})
            .await
            .ok()?;
        Some(task_image_tag(&task.id, &ctx, &base_ids))
    }

    /// The image a task's container runs, building it when needed, and whether the container
    /// must be seeded from `environment/workspace/` + `setup.sh` (no Dockerfile, no image).
    pub async fn image_for(&self, task: &Task) -> Result<(String, bool)> {
        let docker = self.client().await?;
        let notes = &mut |_: &str| {};
        if let Some((image, id)) = self.published_image(task) {
            // Removed since `fetch`: from the registry again, checked by id.
            if image_id(&docker, &image).await?.as_deref() != Some(id.as_str()) {
                self.fetch(task, &image, &id, notes).await?;
            }
            return Ok((image, false));
        }
        if let Some(img) = &task.environment.docker_image {
            let mapped = self.map_image(img);
            match self.ensure_image(&docker, &mapped, true, notes).await {
                Ok(Some(_)) => return Ok((mapped, false)),
                Ok(None) | Err(_) if task.dockerfile.is_some() => {}
                Ok(None) => return Err(self.missing_image(&mapped, task)),
                Err(e) => return Err(e),
            }
        }
        if let (Some(_), Some(ctx_dir)) = (&task.dockerfile, &task.environment_dir) {
            let ctx = build_context(
                ctx_dir,
                task.dockerfile.as_deref(),
                &self.image_map,
                &verifier_and_solution_files(task),
            )?;
            let base_ids = self.base_image_ids(&docker, task, true, notes).await?;
            let tag = self.in_registry(task_image_tag(&task.id, &ctx, &base_ids));
            if self.known.lock().is_ok_and(|k| k.contains_key(&tag)) {
                return Ok((tag, false));
            }
            let lock = self.lock_for(&tag)?;
            let _held = lock.lock().await;
            if self.present_id(&docker, &tag).await?.is_some() {
                return Ok((tag, false));
            }
            // Built once anywhere: an image the registry has already is pulled, not rebuilt.
            if self.registry.is_some() && pull_image(&docker, &tag, notes).await.is_ok() {
                return Ok((tag, false));
            }
            let timeout = task
                .environment
                .build_timeout_sec
                .map(Duration::from_secs)
                .unwrap_or(BUILD_TIMEOUT);
            if let Err(f) = build_tar(&docker, ctx, &tag, Some(timeout)).await {
                return Err(InfraClass::Sandbox.error_hint(
                    format!("image build of task `{}` failed: {f}", task.id),
                    "a FROM image must exist locally: build the base with `git harness image base`, or map it in runner.image_map",
                ));
            }
            return Ok((tag, false));
        }
        let base = self.map_image(BASE_IMAGE);
        match self.ensure_image(&docker, &base, true, notes).await? {
            Some(_) => Ok((base, true)),
            None => Err(self.missing_base(&base, task)),
        }
    }

    /// A task image's name: under `runner.registry` when there is one.
    fn in_registry(&self, tag: String) -> String {
        match &self.registry {
            Some(r) => format!("{}/{tag}", r.url),
            None => tag,
        }
    }

    /// The image `publish` or `fetch` made ready for `task`, with its id.
    fn published_image(&self, task: &Task) -> Option<(String, String)> {
        self.published
            .lock()
            .ok()
            .and_then(|p| p.get(&task.id).cloned())
    }

    pub async fn create_docker(&self, task: &Task, trial_id: &str) -> Result<DockerSandbox> {
        let (image, seed) = self.image_for(task).await?;
        self.create_from(task, trial_id, &image, seed, false).await
    }

    /// A trial's container on the image where the harness's `agent.install` ran: the task's
    /// image with the install committed on top, as `git-harness/agent:<digest of the image id
    /// and the install's inputs>`, made by the first trial that needs it (one at a time per
    /// tag) and reused by every later one. A failed install keeps no image: the trial runs on
    /// the task's image and installs itself, so the failure is its agent's, as without a cache.
    pub async fn create_installed(
        &self,
        task: &Task,
        trial_id: &str,
        install: &crate::sandbox::AgentInstall,
    ) -> Result<DockerSandbox> {
        let docker = self.client().await?;
        let (image, seed) = self.image_for(task).await?;
        let base = self
            .present_id(&docker, &image)
            .await?
            .unwrap_or_else(|| image.clone());
        let tag = agent_image_tag(&base, install);
        let made = {
            let lock = self.lock_for(&tag)?;
            let _held = lock.lock().await;
            self.present_id(&docker, &tag).await?.is_some()
                || self
                    .install_image(task, trial_id, &image, install, &tag)
                    .await?
        };
        if made {
            self.create_from(task, trial_id, &tag, seed, true).await
        } else {
            self.create_from(task, trial_id, &image, seed, false).await
        }
    }

    /// Run `install` in a fresh container of `image` (the task's workspace not copied in) and
    /// commit it as `tag`; `Ok(false)` when the install itself failed.
    async fn install_image(
        &self,
        task: &Task,
        trial_id: &str,
        image: &str,
        install: &crate::sandbox::AgentInstall,
        tag: &str,
    ) -> Result<bool> {
        let docker = self.client().await?;
        let mut helper = self
            .create_from(task, &format!("{trial_id}-install"), image, false, false)
            .await?;
        let made: Result<bool> = async {
            for (path, content) in &install.files {
                helper.write_file(path, content.as_bytes()).await?;
            }
            for p in &install.paths {
                helper.copy_dir_in(p, &p.to_string_lossy()).await?;
            }
            let mut req = ExecRequest::new(format!("cd /\n{}", install.script), install.timeout);
            req.env = install.env.clone();
            if !helper.exec(req).await?.success() {
                return Ok(false);
            }
            let clean = format!("rm -rf '{}'", install.files_dir.replace('\'', "'\\''"));
            helper
                .exec(ExecRequest::new(clean, Duration::from_secs(60)))
                .await?;
            let (repo, version) = tag.split_once(':').unwrap_or((tag, "latest"));
            let opts = bollard::query_parameters::CommitContainerOptionsBuilder::default()
                .container(&helper.id)
                .repo(repo)
                .tag(version)
                .comment("git-harness: agent.install of a command harness")
                .build();
            let config = bollard::models::ContainerConfig {
                labels: Some(HashMap::from([(LABEL.to_string(), "1".to_string())])),
                ..Default::default()
            };
            docker
                .commit_container(opts, config)
                .await
                .map_err(|e| docker_err(&format!("commit the agent install as {tag}"), e))?;
            Ok(true)
        }
        .await;
        let removed = helper.destroy().await;
        let made = made?;
        removed?;
        Ok(made)
    }

    async fn create_from(
        &self,
        task: &Task,
        trial_id: &str,
        image: &str,
        seed: bool,
        installed: bool,
    ) -> Result<DockerSandbox> {
        let docker = self.client().await?;
        let image = image.to_string();
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
        self.network.refuse_allowlist(task)?;
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
        let path_env = self.path_env(&docker, &image).await?;
        let name = format!("git-harness-{}", tag_safe(trial_id));
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        // The daemon finishes a creation whose request was cut short (an aborted trial), so
        // the request runs on a task of its own: if nobody waits for the container any more,
        // that task removes it, and `sweep_own` waits for such tasks.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let d = docker.clone();
        let creation = tokio::spawn(async move {
            let r = timed("container create", d.create_container(Some(opts), body)).await;
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
        // The overlay directories are the container's from its creation on: named now, while
        // it starts and the agent runs, not when the verifier waits for them.
        let graph = super::sandbox::Graph::inspect(&docker, &created.id);
        let mut sb = DockerSandbox {
            docker: docker.clone(),
            id: created.id,
            trial: trial_id.to_string(),
            workdir: env.workdir.clone(),
            destroyed: false,
            path_env,
            phases,
            strays: self.strays,
            connected: tokio::sync::Mutex::new(phases.any()),
            pending: Mutex::new(None),
            after_kill: Mutex::new(None),
            tunnel: std::sync::Mutex::new(None),
            installed,
            // Made by the first upload or exec, not by a call of their own (the daemon makes
            // the working directory itself).
            runtime_dirs: Mutex::new(Some(RUNTIME_DIRS)),
            graph: tokio::sync::Mutex::new(graph),
        };
        if let Err(e) = timed("container start", docker.start_container(&sb.id, None)).await {
            sb.destroy().await?;
            return Err(docker_err(&format!("start a container from {image}"), e));
        }
        if let Err(e) = sb.set_phase(crate::sandbox::Phase::Setup).await {
            sb.destroy().await?;
            return Err(e);
        }
        if seed && let Err(e) = crate::sandbox::seed_from_task(&sb, task).await {
            sb.destroy().await?;
            return Err(e);
        }
        if let Err(e) = sb.set_phase(crate::sandbox::Phase::Agent).await {
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

/// The agent image of `install` on the image with id `base`: a digest of both, so that a new
/// task image or a changed install makes another.
fn agent_image_tag(base: &str, install: &crate::sandbox::AgentInstall) -> String {
    let mut h = crate::support::digest::Hasher::new();
    h.update(b"git-harness agent image v1\0");
    h.update(base.as_bytes());
    h.update([0]);
    h.update(install.digest.as_bytes());
    format!("{AGENT_IMAGE_REPO}:{}", &h.hex()[..16])
}

/// A task image's name without the registry it is named under (`URL/git-harness/task-…` →
/// `git-harness/task-…`); `None` for any other image.
fn task_image_name(tag: &str) -> Option<&str> {
    if tag.starts_with(TASK_IMAGE_PREFIX) {
        return Some(tag);
    }
    tag.find(&format!("/{TASK_IMAGE_PREFIX}"))
        .map(|at| &tag[at + 1..])
}

/// A failed push or pull through `runner.registry`, with what usually fixes it.
fn registry_hint(e: Error, registry: &RegistryConfig) -> Error {
    InfraClass::Sandbox.error_hint(
        e.to_string(),
        format!(
            "start the registry at {} (runner.registry.url) or fix the address; an engine talks plain HTTP to it only when started with --insecure-registry {} (loopback addresses have it by default)",
            registry.url,
            registry.url.split('/').next().unwrap_or_default()
        ),
    )
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
        let id = opts
            .trial_id
            .clone()
            .unwrap_or_else(crate::sandbox::new_trial_id);
        Ok(Box::new(match &opts.agent_install {
            Some(install) => self.create_installed(task, &id, install).await?,
            None => self.create_docker(task, &id).await?,
        }))
    }

    async fn environment_id(&self, task: &Task) -> Result<Option<String>> {
        DockerProvider::environment_id(self, task).await.map(Some)
    }

    async fn prepare(&self, task: &Task, notes: &mut Notes<'_>) -> Result<Option<String>> {
        DockerProvider::prepare(self, task, notes).await.map(Some)
    }
}
