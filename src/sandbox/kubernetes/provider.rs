//! Pods for trials: which image, the Pod and its policy, the wait until it runs, the sweep.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::sandbox::{KubeSandbox, PodGuard};
use super::spec::{self, PodPlan, dns_label};
use super::{HOST_LABEL, MANAGED_BY, MANAGED_BY_VALUE, OWNER_LABEL, kube_err};
use crate::error::Result;
use crate::experiment::{KubernetesConfig, PullPolicy, RegistryConfig};
use crate::sandbox::image::{BASE_IMAGE, map_image};
use crate::sandbox::{
    CreateOptions, InfraClass, NetworkPolicy as Phases, Notes, Phase, Sandbox, SandboxProvider,
};
use crate::support::owner::{Owner, host_id};
use crate::task::{Task, local_gaps};

/// How long a Pod may take to run (scheduling, the image pull) without a build timeout.
const START_TIMEOUT: Duration = Duration::from_secs(600);
/// Waiting reasons of a container that will not start by waiting longer.
const HOPELESS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
    "RunContainerError",
];

pub struct KubeProvider {
    cfg: KubernetesConfig,
    client: tokio::sync::OnceCell<Client>,
    image_map: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    pull: PullPolicy,
    network: Phases,
    /// `runner.registry`: images under it are resolved to their digest before trials start.
    registry: Option<RegistryConfig>,
    /// The digest-pinned reference (`repo@sha256:...`) of each task's image in the registry,
    /// from `prepare`: every Pod of the task runs exactly the image whose digest is in the
    /// cache key.
    pinned: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl KubeProvider {
    /// A provider for `cfg`; the kubeconfig is read on first use, so a suite that never runs
    /// a trial needs no cluster.
    pub fn new(
        cfg: KubernetesConfig,
        image_map: BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
    ) -> Self {
        KubeProvider {
            cfg,
            client: tokio::sync::OnceCell::new(),
            image_map,
            labels,
            pull: PullPolicy::default(),
            network: Phases::default(),
            registry: None,
            pinned: Default::default(),
        }
    }

    /// A provider over a client made elsewhere (a test's stand-in API).
    pub fn with_client(mut self, client: Client) -> Self {
        self.client = tokio::sync::OnceCell::new_with(Some(client));
        self
    }

    pub fn with_network(mut self, network: Phases) -> Self {
        self.network = network;
        self
    }

    pub fn with_pull(mut self, pull: PullPolicy) -> Self {
        self.pull = pull;
        self
    }

    /// Images from `registry` (also the prefix of every image, unless
    /// `runner.kubernetes.registry` names one), pinned by digest.
    pub fn with_registry(mut self, registry: Option<RegistryConfig>) -> Self {
        self.registry = registry;
        self
    }

    /// `image` as `repo@sha256:...`, the digest of its manifest in `runner.registry` now;
    /// `None` for an image of another registry (or none configured).
    async fn pin(&self, image: &str) -> Result<Option<String>> {
        let Some(r) = &self.registry else {
            return Ok(None);
        };
        let Some(rest) =
            image.strip_prefix(&format!("{}/", r.url.split('/').next().unwrap_or_default()))
        else {
            return Ok(None);
        };
        let (repo, reference) = match rest.split_once('@') {
            Some((repo, digest)) => (repo.to_string(), digest.to_string()),
            None => match rest.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
                _ => (rest.to_string(), "latest".to_string()),
            },
        };
        let digest = manifest_digest(r, &repo, &reference).await?;
        let name = &image[..image.len() - rest.len()];
        Ok(Some(format!("{name}{repo}@{digest}")))
    }

    /// The image a trial's Pod runs: the pinned reference from `prepare`, else its name.
    async fn pod_image(&self, task: &Task) -> Result<(String, bool)> {
        let (image, seed) = self.image_for(task)?;
        let pinned = self
            .pinned
            .lock()
            .ok()
            .and_then(|p| p.get(&task.id).cloned());
        match pinned {
            Some(p) => Ok((p, seed)),
            None => Ok((self.pin(&image).await?.unwrap_or(image), seed)),
        }
    }

    /// The client of the configured cluster.
    pub async fn client(&self) -> Result<Client> {
        self.client
            .get_or_try_init(|| connect(&self.cfg))
            .await
            .cloned()
    }

    fn namespace(&self) -> &str {
        &self.cfg.namespace
    }

    /// The image a task's Pod runs, and whether it must be seeded (the base image).
    pub fn image_for(&self, task: &Task) -> Result<(String, bool)> {
        let (image, seed) = match &task.environment.docker_image {
            Some(img) => (map_image(&self.image_map, img), false),
            // A Dockerfile whose steps the base image and the seeding reproduce (as the local
            // runner does) needs no image of its own; any other needs one built and pushed.
            None if task.dockerfile.is_some() && !local_gaps(task).is_empty() => {
                let gap = local_gaps(task).remove(0);
                return Err(InfraClass::Sandbox.error_hint(
                    format!(
                        "task `{}` needs an image built from its Dockerfile ({gap}), and the Kubernetes runner builds no images",
                        task.id
                    ),
                    "build and push its image, then name it as the task's docker_image or map \
                     it in runner.image_map; or run the task with `runner.kind: docker`",
                ));
            }
            None => (map_image(&self.image_map, BASE_IMAGE), true),
        };
        Ok((self.in_registry(&image), seed))
    }

    /// `image` under the configured registry prefix (unless it is already there).
    fn in_registry(&self, image: &str) -> String {
        let prefix = self
            .cfg
            .registry
            .as_deref()
            .or(self.registry.as_ref().map(|r| r.url.as_str()));
        match prefix {
            Some(r) if !image.starts_with(&format!("{r}/")) => format!("{r}/{image}"),
            _ => image.to_string(),
        }
    }

    /// The labels every object of this process carries.
    fn own_labels(&self) -> BTreeMap<String, String> {
        let mut l = self.labels.clone();
        l.insert(OWNER_LABEL.into(), Owner::me().to_string());
        l.insert(HOST_LABEL.into(), host_id());
        l
    }

    /// Make the Pod of a trial and wait until it runs; nothing is left when this fails.
    pub async fn start(&self, task: &Task, trial_id: &str) -> Result<KubeSandbox> {
        let client = self.client().await?;
        let (image, seed) = self.pod_image(task).await?;
        let env = &task.environment;
        let plan = PodPlan {
            name: dns_label(&format!("git-harness-{trial_id}")),
            image: image.clone(),
            pull: self.pull,
            trial_label: dns_label(trial_id),
            task_id: task.id.clone(),
            labels: self.own_labels(),
        };
        let phases = self.network.phases(env);
        let pods: Api<Pod> = Api::namespaced(client.clone(), self.namespace());
        let policies: Api<NetworkPolicy> = Api::namespaced(client, self.namespace());
        // The guard exists before anything is asked for: a creation cut short is deleted too.
        let guard = PodGuard::new(pods.clone(), policies.clone(), plan.name.clone());
        if !phases.setup {
            guard.deny(&plan).await?;
        }
        let pod = spec::pod(&plan, env);
        let created = pods
            .create(&PostParams::default(), &pod)
            .await
            .map_err(|e| kube_err(&format!("create pod {} from {image}", plan.name), e))?;
        let timeout = env
            .build_timeout_sec
            .map(Duration::from_secs)
            .unwrap_or(START_TIMEOUT);
        let version = created.metadata.resource_version.unwrap_or_default();
        wait_running(&pods, &plan.name, &image, version, timeout).await?;
        let mut sb = KubeSandbox::new(guard, plan, env.workdir.clone(), phases, trial_id);
        if seed && let Err(e) = crate::sandbox::seed_from_task(&sb, task).await {
            sb.destroy().await?;
            return Err(e);
        }
        if let Err(e) = sb.set_phase(Phase::Agent).await {
            sb.destroy().await?;
            return Err(e);
        }
        sb.expect_agent();
        Ok(sb)
    }

    /// Delete the Pods and NetworkPolicies of this host whose owner satisfies `pick`.
    async fn remove_owned(&self, pick: impl Fn(Owner) -> bool) -> Result<usize> {
        let client = self.client().await?;
        let selector = format!("{MANAGED_BY}={MANAGED_BY_VALUE},{HOST_LABEL}={}", host_id());
        let lp = ListParams::default().labels(&selector);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::background()
        };
        let pods: Api<Pod> = Api::namespaced(client.clone(), self.namespace());
        let policies: Api<NetworkPolicy> = Api::namespaced(client, self.namespace());
        let owned = |labels: Option<&BTreeMap<String, String>>| {
            labels
                .and_then(|l| l.get(OWNER_LABEL))
                .and_then(|o| Owner::parse(o))
                .is_some_and(&pick)
        };
        let mut removed = 0;
        let list = pods.list(&lp).await.map_err(|e| kube_err("list pods", e))?;
        for p in list {
            let Some(name) = p.metadata.name.as_deref() else {
                continue;
            };
            if owned(p.metadata.labels.as_ref()) {
                match pods.delete(name, &dp).await {
                    Ok(_) => removed += 1,
                    Err(e) if super::is_not_found(&e) => {}
                    Err(e) => return Err(kube_err(&format!("delete pod {name}"), e)),
                }
            }
        }
        let list = policies
            .list(&lp)
            .await
            .map_err(|e| kube_err("list network policies", e))?;
        for p in list {
            let Some(name) = p.metadata.name.as_deref() else {
                continue;
            };
            if owned(p.metadata.labels.as_ref()) {
                match policies.delete(name, &dp).await {
                    Ok(_) => {}
                    Err(e) if super::is_not_found(&e) => {}
                    Err(e) => return Err(kube_err(&format!("delete network policy {name}"), e)),
                }
            }
        }
        Ok(removed)
    }
}

/// The client for `cfg`: its kubeconfig file and context, else the usual inference
/// (`$KUBECONFIG`, `~/.kube/config`, the in-cluster service account).
async fn connect(cfg: &KubernetesConfig) -> Result<Client> {
    let bad = |what: String, e: &dyn std::fmt::Display| {
        InfraClass::Sandbox.error_hint(
            format!("kubernetes: {what}: {e}"),
            "check runner.kubernetes.kubeconfig and runner.kubernetes.context in .harness/experiment.yaml",
        )
    };
    let opts = KubeConfigOptions {
        context: cfg.context.clone(),
        ..Default::default()
    };
    let config = match (&cfg.kubeconfig, &cfg.context) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| bad(format!("read {}", path.display()), &e))?;
            Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| bad(format!("load {}", path.display()), &e))?
        }
        (None, Some(c)) => Config::from_kubeconfig(&opts)
            .await
            .map_err(|e| bad(format!("load context {c}"), &e))?,
        (None, None) => Config::infer()
            .await
            .map_err(|e| bad("find a cluster".into(), &e))?,
    };
    client_for(config)
}

/// The client for a loaded configuration.
pub fn client_for(config: Config) -> Result<Client> {
    // Two TLS providers are linked in; the client's TLS needs a process default chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::try_from(config).map_err(|e| kube_err("make a client", e))
}

/// The manifest media types a registry may answer with: image manifests and indexes.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// The digest of `repo`'s manifest `reference` (a tag or digest) in `registry`, from the
/// `Docker-Content-Digest` header of the Registry API.
async fn manifest_digest(registry: &RegistryConfig, repo: &str, reference: &str) -> Result<String> {
    let url = format!("{}/v2/{repo}/manifests/{reference}", registry.api());
    let hint = format!(
        "push the image to runner.registry ({}), or check the address and `insecure`",
        registry.url
    );
    let failed = |why: String| {
        InfraClass::Sandbox.error_hint(format!("registry: {url}: {why}"), hint.clone())
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let resp = client
        .head(&url)
        .header("Accept", MANIFEST_TYPES)
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(failed(format!("HTTP {}", resp.status())));
    }
    resp.headers()
        .get("docker-content-digest")
        .and_then(|d| d.to_str().ok())
        .filter(|d| d.starts_with("sha256:"))
        .map(str::to_string)
        .ok_or_else(|| failed("no Docker-Content-Digest in the answer".into()))
}

/// Watch the Pod `name` (from `version`) until it runs; fail fast when it ended or its
/// container cannot start, and after `timeout`.
async fn wait_running(
    pods: &Api<Pod>,
    name: &str,
    image: &str,
    mut version: String,
    timeout: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let watch = async {
        loop {
            // The server ends a watch after its timeout; the next one goes on from the last
            // version seen.
            let wp = WatchParams::default()
                .fields(&format!("metadata.name={name}"))
                .timeout(290);
            let v = if version.is_empty() { "0" } else { &version };
            let mut events = pods
                .watch(&wp, v)
                .await
                .map_err(|e| kube_err(&format!("watch pod {name}"), e))?
                .boxed();
            while let Some(ev) = events
                .try_next()
                .await
                .map_err(|e| kube_err(&format!("watch pod {name}"), e))?
            {
                let pod = match ev {
                    WatchEvent::Added(p) | WatchEvent::Modified(p) => p,
                    WatchEvent::Deleted(_) => {
                        return Err(InfraClass::Sandbox
                            .error(format!("kubernetes: pod {name} was deleted before it ran")));
                    }
                    WatchEvent::Bookmark(b) => {
                        version = b.metadata.resource_version;
                        continue;
                    }
                    WatchEvent::Error(s) if s.code == 410 => {
                        // The version is too old: start over from the current state.
                        version.clear();
                        break;
                    }
                    WatchEvent::Error(s) => {
                        return Err(InfraClass::Sandbox
                            .error(format!("kubernetes: watch pod {name}: {}", s.message)));
                    }
                };
                if let Some(v) = pod.metadata.resource_version.clone() {
                    version = v;
                }
                match state(&pod) {
                    State::Running => return Ok(()),
                    State::Pending => {}
                    State::Failed(why) => {
                        return Err(InfraClass::Sandbox.error_hint(
                            format!("kubernetes: pod {name} ({image}) cannot run: {why}"),
                            "the cluster must be able to pull the image: push it to \
                             runner.kubernetes.registry or map it in runner.image_map",
                        ));
                    }
                }
            }
        }
    };
    match tokio::time::timeout_at(deadline, watch).await {
        Ok(r) => r,
        Err(_) => Err(InfraClass::Sandbox.error(format!(
            "kubernetes: pod {name} ({image}) did not run within {}s",
            timeout.as_secs()
        ))),
    }
}

enum State {
    Pending,
    Running,
    Failed(String),
}

fn state(pod: &Pod) -> State {
    let Some(status) = &pod.status else {
        return State::Pending;
    };
    match status.phase.as_deref() {
        Some("Running") => return State::Running,
        Some(p @ ("Failed" | "Succeeded")) => {
            return State::Failed(format!(
                "it ended ({p}{})",
                status
                    .message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ));
        }
        _ => {}
    }
    for c in status.container_statuses.iter().flatten() {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref())
            && let Some(r) = w.reason.as_deref()
            && HOPELESS.contains(&r)
        {
            return State::Failed(format!(
                "{r}{}",
                w.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ));
        }
    }
    State::Pending
}

#[async_trait]
impl SandboxProvider for KubeProvider {
    fn name(&self) -> &str {
        "kubernetes"
    }

    async fn create(&self, task: &Task) -> Result<Box<dyn Sandbox>> {
        self.create_with(task, &CreateOptions::default()).await
    }

    async fn create_with(&self, task: &Task, opts: &CreateOptions) -> Result<Box<dyn Sandbox>> {
        let id = opts
            .trial_id
            .clone()
            .unwrap_or_else(crate::sandbox::new_trial_id);
        Ok(Box::new(self.start(task, &id).await?))
    }

    async fn environment_id(&self, task: &Task) -> Result<Option<String>> {
        // Through `runner.registry` the image's digest; otherwise its name (after the map and
        // the prefix): the cluster resolves it, and its digest is not known before a Pod runs.
        let (image, _) = self.pod_image(task).await?;
        Ok(Some(format!("image {image}")))
    }

    async fn prepare(&self, task: &Task, notes: &mut Notes<'_>) -> Result<Option<String>> {
        let (image, _) = self.image_for(task)?;
        if let Some(pinned) = self.pin(&image).await? {
            notes(&format!("{image} is {pinned}"));
            if let Ok(mut p) = self.pinned.lock() {
                p.insert(task.id.clone(), pinned.clone());
            }
            return Ok(Some(format!("image {pinned}")));
        }
        Ok(Some(format!("image {image}")))
    }

    async fn sweep(&self) -> Result<usize> {
        self.remove_owned(|o| !o.is_alive()).await
    }

    async fn sweep_own(&self) -> Result<usize> {
        let me = Owner::me();
        self.remove_owned(|o| o == me).await
    }
}
