//! The Docker runner (bollard): one container per trial, running `sleep infinity`, commands
//! through the exec API, files through the archive API.
//!
//! [`provider`] chooses and builds images and creates containers; [`sandbox`] runs one trial's
//! commands and files in its container. Image names, Dockerfiles and build contexts live in
//! `sandbox::image`.
//!
//! Images: a task's `docker_image` (after `runner.image_map`) when it exists locally; otherwise
//! its `environment/Dockerfile`, built once per content hash as `git-harness/task-<id>:<hash12>`
//! with `FROM` lines rewritten through the image map; a task with neither runs on the base image
//! `git-harness/base:bookworm`, seeded from `environment/workspace/` and `environment/setup.sh`
//! like the local sandbox. An image that is not local is pulled as `runner.pull` says.
//!
//! Every exec runs its command as the leader of a new process group (`setsid`) under a small `sh`
//! wrapper that kills the group when the command ends; at a timeout a second exec kills the
//! group, so `sleep 1000 &` children die with their command.

pub mod provider;
pub mod sandbox;

use bollard::Docker;

use super::InfraClass;
use crate::error::{Error, Result};

pub use super::image::{DEFAULT_PATH, TASK_IMAGE_PREFIX, from_images, map_image, rewrite_from};
pub use provider::DockerProvider;
pub use sandbox::{Change, DockerSandbox, toolchain_tampering};

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

/// What every failed call to the daemon says to do.
const DAEMON_HINT: &str = "is the Docker daemon running and reachable (DOCKER_HOST or /var/run/docker.sock)? (see .ci/docker.sh)";

pub(crate) fn docker_err(what: &str, e: bollard::errors::Error) -> Error {
    InfraClass::Sandbox.error_hint(format!("{what}: {e}"), DAEMON_HINT)
}

/// An error of the archive API. The daemon answering with an error about a path (a dangling
/// link, a directory where a file should be, a full disk) is about the sandbox's content, which
/// the agent controls: an I/O error of that path, not an infrastructure error. A daemon that does
/// not answer is infrastructure.
pub(crate) fn archive_err(path: &str, e: bollard::errors::Error) -> Error {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. }
            if !message.contains("No such container") =>
        {
            Error::io(path, std::io::Error::other(message.trim().to_string()))
        }
        e => docker_err(&format!("copy {path}"), e),
    }
}

pub(crate) fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// A client for `DOCKER_HOST` or the default socket; the API version is not negotiated yet.
pub fn client_from_env() -> Result<Docker> {
    Docker::connect_with_defaults().map_err(|e| docker_err("connect to Docker", e))
}

/// A client for `DOCKER_HOST` or the default socket, with the API version negotiated.
pub async fn connect() -> Result<Docker> {
    negotiate(client_from_env()?).await
}

/// `docker` with the API version negotiated with its daemon.
pub async fn negotiate(docker: Docker) -> Result<Docker> {
    docker
        .negotiate_version()
        .await
        .map_err(|e| docker_err("reach the Docker daemon", e))
}
