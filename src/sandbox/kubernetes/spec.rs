//! What the runner asks the cluster for: one Pod per trial and, for the phases without the
//! network, a NetworkPolicy that denies all its traffic. Pure builders, so the shapes can be
//! checked without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::{CONTAINER, MANAGED_BY, MANAGED_BY_VALUE, TASK_ANNOTATION, TRIAL_LABEL};
use crate::experiment::PullPolicy;
use crate::task::EnvironmentSpec;

/// The directories of the runtime, made by the Pod's own command (no exec of their own).
pub const RUNTIME_DIRS: &[&str] = &["/logs/verifier", "/logs/agent", "/tests", "/solution"];

/// The Pod's main process: make the runtime's directories, then wait under a shell that ends
/// at SIGTERM (it is PID 1, which ignores signals it has no handler for). The sleep is the
/// first child of PID 1, the one process the stray kill keeps; `sleep infinity` is not in
/// every image's `sleep`, a large number is.
pub fn pod_command() -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!(
            "mkdir -p {} || exit 1; trap 'exit 0' TERM INT; sleep 2147483647 & wait",
            RUNTIME_DIRS.join(" ")
        ),
    ]
}

/// Everything a trial's Pod is made from.
#[derive(Debug, Clone)]
pub struct PodPlan {
    /// The Pod's (and its NetworkPolicy's) name.
    pub name: String,
    pub image: String,
    pub pull: PullPolicy,
    /// The trial id as a label value.
    pub trial_label: String,
    pub task_id: String,
    /// Labels besides `managed-by` and the trial (owner, host, the caller's).
    pub labels: BTreeMap<String, String>,
}

/// A Kubernetes name (and label value) for `s`: lowercase letters, digits and `-`, at most 63,
/// starting and ending with a letter or digit; a changed or cut id gets a hash of the original.
pub fn dns_label(s: &str) -> String {
    let clean: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let trimmed = clean.trim_matches('-');
    if trimmed == s && !s.is_empty() && s.len() <= 63 {
        return s.to_string();
    }
    let mut h = crate::support::digest::Hasher::new();
    h.update(s.as_bytes());
    let hash = &h.hex()[..8];
    let head: String = trimmed.chars().take(63 - 9).collect();
    let head = head.trim_end_matches('-');
    if head.is_empty() {
        format!("x-{hash}")
    } else {
        format!("{head}-{hash}")
    }
}

fn labels(plan: &PodPlan) -> BTreeMap<String, String> {
    let mut l = plan.labels.clone();
    l.insert(MANAGED_BY.into(), MANAGED_BY_VALUE.into());
    l.insert(TRIAL_LABEL.into(), plan.trial_label.clone());
    l
}

/// CPUs as a Kubernetes quantity (millicores).
fn cpu_quantity(cpus: f64) -> Quantity {
    Quantity(format!("{}m", (cpus * 1000.0).round().max(1.0) as u64))
}

/// The trial's Pod: the task's image and working directory, its cpus and memory as limits (and
/// requests, so the scheduler reserves them), no service account token, no service links, no
/// restarts.
pub fn pod(plan: &PodPlan, env: &EnvironmentSpec) -> Pod {
    let mut limits = BTreeMap::new();
    if let Some(c) = env.cpus {
        limits.insert("cpu".to_string(), cpu_quantity(c));
    }
    if let Some(m) = env.memory_mb {
        limits.insert("memory".to_string(), Quantity(format!("{m}Mi")));
    }
    let resources = (!limits.is_empty()).then(|| ResourceRequirements {
        requests: Some(limits.clone()),
        limits: Some(limits),
        ..Default::default()
    });
    let pull = match plan.pull {
        PullPolicy::Missing => "IfNotPresent",
        PullPolicy::Never => "Never",
        PullPolicy::Always => "Always",
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(plan.name.clone()),
            labels: Some(labels(plan)),
            annotations: Some(BTreeMap::from([(
                TASK_ANNOTATION.to_string(),
                plan.task_id.clone(),
            )])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            restart_policy: Some("Never".into()),
            termination_grace_period_seconds: Some(1),
            containers: vec![Container {
                name: CONTAINER.into(),
                image: Some(plan.image.clone()),
                image_pull_policy: Some(pull.into()),
                command: Some(pod_command()),
                working_dir: Some(env.workdir.clone()),
                resources,
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// The policy that takes a Pod off the network: it selects the trial's Pod and allows no
/// traffic in or out (DNS included), as a task's `no-network` asks. Enforced by the cluster's
/// network plugin.
pub fn deny_all(plan: &PodPlan) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(plan.name.clone()),
            labels: Some(labels(plan)),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    TRIAL_LABEL.to_string(),
                    plan.trial_label.clone(),
                )])),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(Vec::new()),
            egress: Some(Vec::new()),
        }),
    }
}
