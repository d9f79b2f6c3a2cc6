//! The Docker daemon's client: connecting, negotiating the API version, and what its errors
//! mean. Below both the Docker runner and the image helpers.

use bollard::Docker;

use super::InfraClass;
use crate::error::{Error, Result};

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
