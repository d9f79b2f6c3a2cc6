//! The Kubernetes runner (kube-rs): one Pod per trial, running a sleep under a shell that is
//! its PID 1, commands through the exec subresource over the API's websocket
//! (`v5.channel.k8s.io`, `v4` understood), files in and out by tar through exec.
//!
//! Images come from a registry: a task's `docker_image` after `runner.image_map`, with
//! `runner.kubernetes.registry` put before it; a task without an image runs on the base image
//! (seeded from `environment/workspace/` and `setup.sh` as under Docker) when its Dockerfile, if
//! any, has no step only an image gives. The runner builds nothing: a task that needs an image
//! built is refused with a hint.
//!
//! Every Pod carries `app.kubernetes.io/managed-by=git-harness`, its trial, the process that
//! made it and that process's host; a [`PodGuard`] deletes it (and its NetworkPolicy) on every
//! path: `destroy`, a dropped sandbox (an aborted trial, a panic), a failed start. What a
//! killed process left is deleted by the next run's sweep, by those labels.
//!
//! A phase without the network gets a NetworkPolicy that denies all traffic of the Pod; the
//! policy is made before the Pod when the setup phase has no network, and made or deleted as
//! the phases change. Its enforcement is the cluster network plugin's.

mod provider;
mod sandbox;
pub mod spec;

pub use provider::{KubeProvider, client_for};
pub use sandbox::{KubeSandbox, PodGuard};

/// The standard label of the tool that manages a resource.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "git-harness";
/// The label that holds the trial id (as a Kubernetes label value).
pub const TRIAL_LABEL: &str = "git-harness/trial";
/// The labels of the process that made the Pod (`<pid>.<start>`) and of its host.
pub const OWNER_LABEL: &str = "git-harness/owner";
pub const HOST_LABEL: &str = "git-harness/host";
/// The annotation that names the task (ids are not always label values).
pub const TASK_ANNOTATION: &str = "git-harness/task";
/// The name of the trial's one container.
pub const CONTAINER: &str = "trial";

use crate::error::Error;
use crate::sandbox::InfraClass;

/// A failed API call as an infrastructure error, with a hint for the usual causes.
pub(crate) fn kube_err(what: &str, e: kube::Error) -> Error {
    let hint = match &e {
        kube::Error::Api(s) if s.code == 401 => {
            "the cluster refused the credentials: check runner.kubernetes.kubeconfig / context"
        }
        kube::Error::Api(s) if s.code == 403 => {
            "the account may not do this: it needs create/get/watch/delete on pods, pods/exec \
             and networkpolicies in runner.kubernetes.namespace"
        }
        kube::Error::Api(s) if s.code == 404 && s.message.contains("namespace") => {
            "create the namespace of runner.kubernetes.namespace first"
        }
        kube::Error::Api(_) => "see the cluster's message above",
        _ => {
            "is the cluster reachable? check runner.kubernetes (kubeconfig, context) and `kubectl get pods -n NAMESPACE`"
        }
    };
    InfraClass::Sandbox.error_hint(format!("kubernetes: {what}: {e}"), hint)
}

/// Whether `e` says the object does not exist.
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}
