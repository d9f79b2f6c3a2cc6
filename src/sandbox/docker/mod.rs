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

pub mod overlay;
pub mod pool;
pub mod provider;
pub mod sandbox;

pub use super::image::{DEFAULT_PATH, TASK_IMAGE_PREFIX, from_images, map_image, rewrite_from};
pub use overlay::Change;
pub use pool::DockerPool;
pub use provider::DockerProvider;
pub use sandbox::{DockerSandbox, toolchain_tampering};

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
pub(crate) const BRIDGE: &str = "bridge";

pub use super::engine::{API_TARGET, DEFAULT_HOST, Endpoint, client_from_env, connect, negotiate};
pub(crate) use super::engine::{api_call, archive_err, docker_err, is_not_found, timed};
