use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `.harness/experiment.yaml`. Everything here is fixed for a lineage; its hash (with the splits
/// and task checksums) is the experiment fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub model: ModelConfig,
    #[serde(default)]
    pub decoding: DecodingConfig,
    /// Who proposes edits; defaults to the experiment's model.
    #[serde(default)]
    pub proposer: ProposerConfig,
    #[serde(default)]
    pub budgets: Budgets,
    #[serde(default)]
    pub runner: RunnerConfig,
    pub suite: SuiteConfig,
    /// Trials per task.
    #[serde(default = "default_trials")]
    pub trials: u32,
    /// Seed of the run; per-trial seeds derive from it.
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default)]
    pub gate: GateConfig,
    #[serde(default)]
    pub prices: Prices,
    #[serde(default)]
    pub mine: MineConfig,
    /// Infrastructure errors of a trial are retried this many times.
    #[serde(default = "default_infra_retries")]
    pub infra_retries: u32,
    /// A run stops after this many trials in a row ended with the same infrastructure error
    /// (0: never stop).
    #[serde(default = "default_infra_breaker")]
    pub infra_breaker: u32,
}

fn default_trials() -> u32 {
    2
}
fn default_seed() -> u64 {
    1
}
fn default_infra_retries() -> u32 {
    1
}
fn default_infra_breaker() -> u32 {
    3
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Openai,
    Anthropic,
    /// The simulated model, served over the OpenAI-compatible API on loopback.
    Sim,
    Replay,
    /// Not chosen yet (`init --suite DIR` writes it): runs refuse until it is set.
    Unset,
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::support::yaml::name_of(self))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub provider: Provider,
    /// The model name sent to the API.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The *name* of the environment variable that holds the API key; never the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Sim only: the scenario file (`builtin:demo` or a path relative to the repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout_sec: u64,
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// Concurrent requests to this provider.
    #[serde(default = "default_model_concurrency")]
    pub concurrency: usize,
}

fn default_timeout() -> u64 {
    120
}
fn default_retries() -> u32 {
    4
}
fn default_model_concurrency() -> usize {
    8
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodingConfig {
    #[serde(default)]
    pub temperature: f64,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
}

fn default_max_tokens() -> u32 {
    2048
}

impl Default for DecodingConfig {
    fn default() -> Self {
        DecodingConfig {
            temperature: 0.0,
            max_tokens: default_max_tokens(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProposerKind {
    /// The experiment's own model (the Self-Harness method).
    #[default]
    Model,
    /// The offline rule catalog.
    Catalog,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ProposerConfig {
    #[serde(default)]
    pub kind: ProposerKind,
    /// Proposals per round.
    #[serde(default = "default_k")]
    pub k: usize,
}

fn default_k() -> usize {
    3
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    #[serde(default = "default_turns")]
    pub max_turns: u32,
    #[serde(default = "default_tool_calls")]
    pub max_tool_calls: u32,
    #[serde(default = "default_wall")]
    pub wall_clock_sec: u64,
    #[serde(default = "default_tokens")]
    pub max_tokens: u64,
    /// Per bash call.
    #[serde(default = "default_cmd_timeout")]
    pub command_timeout_sec: u64,
}

fn default_turns() -> u32 {
    30
}
fn default_tool_calls() -> u32 {
    40
}
fn default_wall() -> u64 {
    900
}
fn default_tokens() -> u64 {
    400_000
}
fn default_cmd_timeout() -> u64 {
    60
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            max_turns: default_turns(),
            max_tool_calls: default_tool_calls(),
            wall_clock_sec: default_wall(),
            max_tokens: default_tokens(),
            command_timeout_sec: default_cmd_timeout(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RunnerKind {
    #[default]
    Local,
    Docker,
    /// Docker for the tasks whose environment needs an image, local for the rest.
    Auto,
    /// One Pod per trial on a Kubernetes cluster (`runner.kubernetes`).
    Kubernetes,
}

impl std::fmt::Display for RunnerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::support::yaml::name_of(self))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    #[serde(default)]
    pub kind: RunnerKind,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Docker: image substitutions, e.g. `ubuntu:24.04: local/bookworm-python`. A key ending in
    /// `*` is a prefix pattern (`python:3.13*`, `ghcr.io/org/*`), `*` alone the default; exact
    /// keys win over patterns, longer prefixes over shorter.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub image_map: BTreeMap<String, String>,
    /// The agent phase's network: the task's policy (`task`, the default) or none at all.
    #[serde(default, skip_serializing_if = "NetworkChoice::is_task")]
    pub agent_network: NetworkChoice,
    /// The verifier phase's network: the task's policy (`task`, the default) or none at all.
    #[serde(default, skip_serializing_if = "NetworkChoice::is_task")]
    pub verifier_network: NetworkChoice,
    /// Host directories shown read-only, under their own paths, to `protocol: command` agents
    /// (e.g. a directory their Python packages were installed into).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_paths: Vec<std::path::PathBuf>,
    /// Docker: when an image a task names (its `docker_image`, a Dockerfile's `FROM`, after the
    /// image map) is pulled from its registry. Not in the fingerprint: the pulled image's id is
    /// in the cache key.
    #[serde(default, skip_serializing_if = "PullPolicy::is_default")]
    pub pull: PullPolicy,
    /// Docker: what becomes of the processes the agent left when the verifier starts: killed
    /// before the tests are unpacked (`kill`, the default), or kept running beside the tests
    /// (`keep`, Harbor's semantics). The local and Kubernetes runners always kill them.
    #[serde(default, skip_serializing_if = "Strays::is_default")]
    pub strays: Strays,
    /// `kind: kubernetes`: which cluster, namespace and registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesConfig>,
    /// Docker: a pool of engines that trials are spread over by free capacity (empty: the one
    /// engine of `DOCKER_HOST`). Not in the fingerprint: results do not depend on where a trial
    /// ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<DockerHost>,
    /// Docker and Kubernetes: the registry that task images built from a Dockerfile go
    /// through: built once, pushed, pulled by every other host (and used by the cluster), and
    /// checked by id on every host before trials start. Not in the fingerprint: the image's
    /// id is in the cache key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryConfig>,
    /// Keep each trial's final workspace (a tar of the workdir after the agent) in the run
    /// record, so `git harness regrade` can re-run changed verifiers on it. Not in the
    /// fingerprint: it changes what is stored, not what a trial does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_workspace: bool,
}

/// `runner.kubernetes`: where the Kubernetes runner makes its Pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The kubeconfig file (default: `$KUBECONFIG`, else `~/.kube/config`, else the in-cluster
    /// service account). A relative path is read from the directory the command runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The namespace the Pods and NetworkPolicies go into.
    pub namespace: String,
    /// A registry prefix put before every image a task names (after `image_map`), e.g.
    /// `registry.example:5000/mirror`: the cluster pulls `registry.example:5000/mirror/ubuntu:24.04`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
}

impl KubernetesConfig {
    /// What is wrong with it, as `(field, message)`.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if !is_dns_label(&self.namespace) {
            return Some((
                "runner.kubernetes.namespace",
                format!(
                    "`{}` is not a namespace name (lowercase letters, digits and `-`, at most 63, \
                     starting and ending with a letter or digit)",
                    self.namespace
                ),
            ));
        }
        if let Some(p) = self.registry.as_deref().and_then(registry_problem) {
            return Some(("runner.kubernetes.registry", p));
        }
        if self.context.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Some((
                "runner.kubernetes.context",
                "must name a context of the kubeconfig, or be left out".into(),
            ));
        }
        if self
            .kubeconfig
            .as_ref()
            .is_some_and(|k| k.as_os_str().is_empty())
        {
            return Some((
                "runner.kubernetes.kubeconfig",
                "must name a kubeconfig file, or be left out".into(),
            ));
        }
        None
    }
}

/// `runner.registry`: a registry the runner pushes the images it builds to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `host[:port][/path]`, no scheme (e.g. `127.0.0.1:5000`); images go under it as
    /// `URL/git-harness/task-ID:HASH`.
    pub url: String,
    /// The registry speaks plain HTTP (each engine must allow it: `--insecure-registry`, which
    /// loopback addresses have by default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

impl RegistryConfig {
    /// The base URL of its HTTP API.
    pub fn api(&self) -> String {
        let host = self.url.split('/').next().unwrap_or_default();
        let scheme = if self.insecure { "http" } else { "https" };
        format!("{scheme}://{host}")
    }
}

/// Why `r` is not a registry prefix (`host[:port][/path]`), if it is not.
fn registry_problem(r: &str) -> Option<String> {
    let bad = r.is_empty()
        || r.contains("://")
        || r.ends_with('/')
        || r.starts_with('/')
        || r.contains(char::is_whitespace)
        || r.contains('@');
    bad.then(|| {
        format!(
            "`{r}` is not a registry prefix (host[:port][/path], no scheme, no trailing `/`), \
             e.g. `registry.example:5000/mirror`"
        )
    })
}

/// An RFC 1123 label, as Kubernetes names namespaces.
fn is_dns_label(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| ok(c) || c == '-')
        && s.starts_with(ok)
        && s.ends_with(ok)
}

/// One Docker engine of `runner.hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerHost {
    /// `unix:///path`, `tcp://HOST:PORT` or `https://HOST:PORT`, as `DOCKER_HOST` takes them.
    pub host: String,
    /// Trials this engine runs at once.
    #[serde(default = "default_host_concurrency")]
    pub concurrency: usize,
    /// TLS with the client certificates of this directory (`ca.pem`, `cert.pem`, `key.pem`, as
    /// `DOCKER_CERT_PATH` holds them); relative to the repository root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<std::path::PathBuf>,
}

fn default_host_concurrency() -> usize {
    default_concurrency()
}

impl RunnerConfig {
    /// How many trials run at once: the sum of the hosts' capacities for a pool, else
    /// `concurrency`.
    pub fn trial_concurrency(&self) -> usize {
        if self.hosts.is_empty() {
            self.concurrency
        } else {
            self.hosts.iter().map(|h| h.concurrency).sum()
        }
    }

    /// The hosts with their `tls` directories resolved against `root`.
    pub fn with_hosts_under(mut self, root: &std::path::Path) -> Self {
        for h in &mut self.hosts {
            if let Some(t) = h.tls.as_mut()
                && t.is_relative()
            {
                *t = root.join(&*t);
            }
        }
        self
    }
}

/// When the Docker runner pulls an image (as `docker run --pull`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// Pull an image that is not present locally.
    #[default]
    Missing,
    /// Never pull: a missing image is an error with a hint.
    Never,
    /// Pull every image once per run, even when present (a moved tag is followed).
    Always,
}

impl PullPolicy {
    fn is_default(&self) -> bool {
        *self == PullPolicy::Missing
    }
}

impl std::fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::support::yaml::name_of(self))
    }
}

/// What becomes of the processes the agent left when the verifier starts (`runner.strays`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Strays {
    /// Killed before the tests are unpacked: nothing the agent started sees or touches them.
    #[default]
    Kill,
    /// Stopped while the tests are unpacked, then running beside the verifier's command
    /// (Harbor's semantics: the tests may query a server the agent started); killed after it.
    Keep,
}

impl Strays {
    pub fn is_default(&self) -> bool {
        *self == Strays::Kill
    }
}

impl std::fmt::Display for Strays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::support::yaml::name_of(self))
    }
}

/// What the experiment does with a phase's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkChoice {
    /// Follow the task's `network_mode` for that phase.
    #[default]
    Task,
    /// No network in that phase, whatever the task says.
    None,
}

impl NetworkChoice {
    pub fn is_task(&self) -> bool {
        *self == NetworkChoice::Task
    }

    /// Whether the phase gets the network, given what the task's policy says.
    pub fn allows(self, task_says: bool) -> bool {
        task_says && self == NetworkChoice::Task
    }
}

impl std::fmt::Display for NetworkChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::support::yaml::name_of(self))
    }
}

fn default_concurrency() -> usize {
    4
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            kind: RunnerKind::Local,
            concurrency: default_concurrency(),
            image_map: BTreeMap::new(),
            agent_network: NetworkChoice::Task,
            verifier_network: NetworkChoice::Task,
            pull: PullPolicy::default(),
            strays: Strays::default(),
            agent_paths: Vec::new(),
            kubernetes: None,
            hosts: Vec::new(),
            registry: None,
            keep_workspace: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteConfig {
    /// `builtin:demo`, a path (relative to the repository root), or a git URL.
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GateRule {
    Paper,
    #[default]
    Strict,
}

impl GateRule {
    /// The rule's name, as `experiment.yaml`, `--gate` and validation records spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            GateRule::Paper => "paper",
            GateRule::Strict => "strict",
        }
    }
}

/// The strict rule's main statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GateStatistic {
    /// Paired sign-flip test on the trial pairs of equal ids: what pairing buys with a model
    /// whose outcome follows the trial seed.
    #[default]
    Paired,
    /// Stratified exact conditional test of the candidate's per-task pass rates against every
    /// cached trial of the parent (same tree and fingerprint): with a model that ignores the
    /// seed, the parent's earlier trials are evidence for free and the candidate gets the trials.
    Pooled,
}

impl GateStatistic {
    pub fn as_str(self) -> &'static str {
        match self {
            GateStatistic::Paired => "paired",
            GateStatistic::Pooled => "pooled",
        }
    }
}

/// What the strict rule does with a task whose outcome flips across repeats of the unchanged
/// parent (flaky, judged on parent trials the test itself does not use; `docs/gate.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GateFlaky {
    /// A flaky task counts like any other.
    #[default]
    Count,
    /// A flaky task counts less, by its measured variance.
    Weight,
    /// A flaky task is run and reported but left out of the accept decision.
    Quarantine,
}

impl GateFlaky {
    pub fn as_str(self) -> &'static str {
        match self {
            GateFlaky::Count => "count",
            GateFlaky::Weight => "weight",
            GateFlaky::Quarantine => "quarantine",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    #[serde(default)]
    pub rule: GateRule,
    /// Significance level of the strict rule's paired test.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Accept even when a task broke (its regression is significant, see `broke_alpha`).
    #[serde(default)]
    pub allow_broke: bool,
    /// Below this fraction of trials free of infrastructure errors, the verdict is indecisive.
    #[serde(default = "default_coverage")]
    pub min_coverage: f64,
    /// Adaptive trials: up to this many trials per task when the strict test is promising.
    /// The looks are `trials`, doubling up to `max_trials`; alpha is spent over them so that
    /// the false-accept rate over all looks stays at most `alpha` (see `docs/gate.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_trials: Option<u32>,
    /// Adaptive trials: a strict rejection before the last look asks for more trials only when
    /// p is at most this (futility bound; stopping hopeless candidates costs no error control).
    #[serde(default = "default_continue_p")]
    pub continue_p: f64,
    /// Adaptive trials: a conditional-power futility bound instead of `continue_p`: a strict
    /// rejection before the last look asks for more trials only when the chance of an accept at
    /// the last look, if the effect seen so far is the true one, is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub futility_power: Option<f64>,
    /// Family-wise level of the "broke" claim: a task counts as broken only when its regression
    /// (one-sided exact test on the task's passes, parent vs candidate) is significant at
    /// `broke_alpha` divided by the number of tasks the parent ever passed.
    #[serde(default = "default_broke_alpha")]
    pub broke_alpha: f64,
    /// Stop evaluating a candidate as soon as its verdict cannot change.
    #[serde(default = "default_true")]
    pub early_stop: bool,
    /// The strict rule's main statistic (`paired` or `pooled`, see `docs/gate.md`).
    #[serde(default, skip_serializing_if = "is_paired")]
    pub statistic: GateStatistic,
    /// Each evolve round also validates a null control: a byte-different, behaviour-identical
    /// copy of main, never promoted. Its verdict and the round's minimum detectable effect go
    /// into main's note (`docs/formats.md`). Off by default: it costs a validation per round.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub null_control: bool,
    /// Flaky tasks: `count` (like any task), `weight` (down-weighted by their measured
    /// variance) or `quarantine` (left out of the accept decision), see `docs/gate.md`.
    #[serde(default, skip_serializing_if = "is_count")]
    pub flaky: GateFlaky,
}

fn is_count(f: &GateFlaky) -> bool {
    *f == GateFlaky::Count
}

fn is_paired(s: &GateStatistic) -> bool {
    *s == GateStatistic::Paired
}

fn default_alpha() -> f64 {
    0.05
}
fn default_coverage() -> f64 {
    0.9
}
fn default_continue_p() -> f64 {
    0.25
}
fn default_broke_alpha() -> f64 {
    0.05
}
fn default_true() -> bool {
    true
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            rule: GateRule::Strict,
            alpha: default_alpha(),
            allow_broke: false,
            min_coverage: default_coverage(),
            max_trials: None,
            continue_p: default_continue_p(),
            futility_power: None,
            broke_alpha: default_broke_alpha(),
            early_stop: true,
            statistic: GateStatistic::Paired,
            null_control: false,
            flaky: GateFlaky::Count,
        }
    }
}

/// USD per million tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    #[serde(default)]
    pub input_per_mtok: f64,
    #[serde(default)]
    pub output_per_mtok: f64,
    #[serde(default)]
    pub cached_input_per_mtok: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Diagnose {
    #[default]
    Deterministic,
    Model,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MineConfig {
    #[serde(default)]
    pub diagnose: Diagnose,
}

impl Experiment {
    pub fn parse(text: &str, file: &Path) -> Result<Self> {
        let e: Experiment = crate::support::yaml::from_str(text, file)?;
        e.validate(text, file)?;
        Ok(e)
    }

    fn validate(&self, text: &str, file: &Path) -> Result<()> {
        let at = |key: &str| crate::support::yaml::line_of(text, key);
        let err = |key: &str, field: &str, msg: &str| Err(Error::config(file, at(key), field, msg));
        if self.trials == 0 {
            return err("trials", "trials", "must be at least 1");
        }
        if self.runner.concurrency == 0 {
            return err("concurrency", "runner.concurrency", "must be at least 1");
        }
        for (i, h) in self.runner.hosts.iter().enumerate() {
            if h.concurrency == 0 {
                return err(
                    "concurrency",
                    &format!("runner.hosts[{i}].concurrency"),
                    "must be at least 1",
                );
            }
            if h.host.trim().is_empty() {
                return err(
                    "host",
                    &format!("runner.hosts[{i}].host"),
                    "must name an engine (unix:///var/run/docker.sock, tcp://HOST:2375, https://HOST:2376)",
                );
            }
        }
        if self.model.concurrency == 0 {
            return err("concurrency", "model.concurrency", "must be at least 1");
        }
        if self.runner.strays == Strays::Keep
            && matches!(self.runner.kind, RunnerKind::Local | RunnerKind::Kubernetes)
        {
            return err(
                "strays",
                "runner.strays",
                &format!(
                    "`keep` is for the Docker runner (the {} runner always kills the agent's leftover processes): set runner.kind to docker or auto, or remove runner.strays",
                    self.runner.kind
                ),
            );
        }
        for (k, v) in &self.runner.image_map {
            if let Some(p) = super::image_map::key_problem(k, v) {
                return err("image_map", "runner.image_map", &p);
            }
        }
        if let Some(r) = &self.runner.registry {
            if let Some(p) = registry_problem(&r.url) {
                return err("url", "runner.registry.url", &p);
            }
            if self.runner.kind == RunnerKind::Local {
                return err(
                    "registry",
                    "runner.registry",
                    "the local runner uses no images: set runner.kind to docker, auto or kubernetes, or remove runner.registry",
                );
            }
            if let Some(k) = self
                .runner
                .kubernetes
                .as_ref()
                .and_then(|k| k.registry.as_ref())
                && k != &r.url
            {
                return err(
                    "registry",
                    "runner.kubernetes.registry",
                    &format!(
                        "`{k}` differs from runner.registry.url `{}`: the cluster pulls from the one registry, so leave runner.kubernetes.registry out",
                        r.url
                    ),
                );
            }
        }
        match &self.runner.kubernetes {
            Some(k) => {
                if let Some((field, msg)) = k.problem() {
                    let key = field.rsplit('.').next().unwrap_or(field);
                    return err(key, field, &msg);
                }
            }
            None if self.runner.kind == RunnerKind::Kubernetes => {
                return err(
                    "kind",
                    "runner.kubernetes",
                    "`kind: kubernetes` needs `runner.kubernetes` with at least `namespace` \
                     (e.g. `kubernetes: {namespace: trials}`)",
                );
            }
            None => {}
        }
        if !(self.gate.alpha > 0.0 && self.gate.alpha < 1.0) {
            return err(
                "alpha",
                "gate.alpha",
                "must be between 0 and 1 (exclusive), e.g. 0.05",
            );
        }
        if !(self.gate.continue_p >= self.gate.alpha && self.gate.continue_p <= 1.0) {
            return err(
                "continue_p",
                "gate.continue_p",
                "must be between alpha and 1, e.g. 0.25",
            );
        }
        if let Some(g) = self.gate.futility_power
            && !(g > 0.0 && g < 1.0)
        {
            return err(
                "futility_power",
                "gate.futility_power",
                "must be between 0 and 1 (exclusive), e.g. 0.1",
            );
        }
        if !(self.gate.broke_alpha > 0.0 && self.gate.broke_alpha < 1.0) {
            return err(
                "broke_alpha",
                "gate.broke_alpha",
                "must be between 0 and 1 (exclusive), e.g. 0.05",
            );
        }
        if !(0.0..=1.0).contains(&self.gate.min_coverage) {
            return err(
                "min_coverage",
                "gate.min_coverage",
                "must be between 0 and 1",
            );
        }
        if let Some(m) = self.gate.max_trials
            && m < self.trials
        {
            return err("max_trials", "gate.max_trials", "must be at least `trials`");
        }
        if self.gate.flaky == GateFlaky::Weight && self.gate.rule != GateRule::Strict {
            return err(
                "flaky",
                "gate.flaky",
                "`weight` weighs the strict rule's test, and the paper rule has none: use \
                 `rule: strict`, or `flaky: quarantine` or `count`",
            );
        }
        if self.budgets.max_turns == 0 || self.budgets.max_tool_calls == 0 {
            return err(
                "budgets",
                "budgets",
                "max_turns and max_tool_calls must be at least 1",
            );
        }
        match self.model.provider {
            Provider::Openai | Provider::Anthropic => {
                if let Some(env) = &self.model.api_key_env
                    && (env.starts_with("sk-")
                        || env.len() > 64
                        || env.contains(char::is_whitespace))
                {
                    return err(
                        "api_key_env",
                        "model.api_key_env",
                        "must be the NAME of an environment variable (e.g. OPENAI_API_KEY), never the key itself",
                    );
                }
            }
            Provider::Sim => {
                if self.model.scenario.is_none() {
                    return err(
                        "provider",
                        "model.scenario",
                        "the sim provider needs a scenario (e.g. `scenario: builtin:demo`)",
                    );
                }
            }
            Provider::Replay | Provider::Unset => {}
        }
        if self.suite.path.trim().is_empty() {
            return err(
                "path",
                "suite.path",
                "must name a suite directory or `builtin:demo`",
            );
        }
        Ok(())
    }

    /// The part of the config that the fingerprint covers: everything that changes what a trial
    /// does. Concurrency, timeouts of the client, trial counts, gate, proposer and prices do not
    /// change a trial's outcome, so changing them keeps cached results valid.
    pub fn canonical(&self) -> serde_json::Value {
        let mut runner =
            serde_json::json!({ "kind": self.runner.kind, "image_map": self.runner.image_map });
        // The registry changes which image a Pod runs; cluster, context and namespace do not.
        if self.runner.kind == RunnerKind::Kubernetes
            && let Some(r) = self
                .runner
                .kubernetes
                .as_ref()
                .and_then(|k| k.registry.as_ref())
        {
            runner["registry"] = serde_json::json!(r);
        }
        // Only a pinned phase enters: fingerprints of experiments that follow the tasks stay.
        for (key, choice) in [
            ("agent_network", self.runner.agent_network),
            ("verifier_network", self.runner.verifier_network),
        ] {
            if !choice.is_task() {
                runner[key] = serde_json::json!(choice);
            }
        }
        // Strays kept beside the tests change what the verifier sees; the default does not enter.
        if !self.runner.strays.is_default() {
            runner["strays"] = serde_json::json!(self.runner.strays);
        }
        serde_json::json!({
            "model": {
                "provider": self.model.provider,
                "name": self.model.name,
                "base_url": self.model.base_url,
                "scenario": self.model.scenario,
            },
            "decoding": self.decoding,
            "budgets": self.budgets,
            "runner": runner,
            "suite": self.suite,
            "seed": self.seed,
        })
    }
}
