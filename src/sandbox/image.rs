//! The base image `git-harness/base:bookworm`: imported from a root-filesystem tarball, which
//! `debootstrap` can make. Nothing is pulled from a registry.

use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;

use super::InfraClass;
use crate::error::{Error, IoContext, Result};

/// The image that task Dockerfiles start `FROM` and that tasks without a Dockerfile run on.
pub const BASE_IMAGE: &str = "git-harness/base:bookworm";
/// Where debootstrap downloads from by default.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// Where the root filesystem comes from.
#[derive(Debug, Clone)]
pub enum RootfsSource {
    /// An existing tarball of a root filesystem.
    Tarball(PathBuf),
    /// `debootstrap --variant=minbase --include <packages> <suite> DIR <mirror>`.
    Debootstrap {
        suite: String,
        include: Vec<String>,
        mirror: String,
    },
}

/// Whether `image` exists in the daemon.
pub async fn image_exists(docker: &Docker, image: &str) -> Result<bool> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(InfraClass::Sandbox.error(format!("inspect image {image}: {e}"))),
    }
}

/// Connect from `DOCKER_HOST` or the default socket and negotiate the API version.
pub async fn connect() -> Result<Docker> {
    let d = Docker::connect_with_defaults()
        .map_err(|e| InfraClass::Sandbox.error(format!("connect to Docker: {e}")))?;
    d.negotiate_version().await.map_err(|e| {
        InfraClass::Sandbox.error_hint(
            format!("reach the Docker daemon: {e}"),
            "start dockerd (see .ci/docker.sh) or set DOCKER_HOST",
        )
    })
}

/// Run debootstrap into a temp dir under `work` and tar the result to `out`. Needs root.
pub fn debootstrap_rootfs(
    suite: &str,
    include: &[String],
    mirror: &str,
    work: &Path,
    out: &Path,
) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("git-harness-rootfs-")
        .tempdir_in(work)
        .at(work)?;
    let root = dir.path().join("root");
    let mut cmd = std::process::Command::new("debootstrap");
    cmd.arg("--variant=minbase");
    if !include.is_empty() {
        cmd.arg(format!("--include={}", include.join(",")));
    }
    cmd.arg(suite).arg(&root).arg(mirror);
    let o = cmd.output().map_err(|e| {
        Error::usage_hint(
            format!("cannot run debootstrap: {e}"),
            "install the debootstrap package (and run as root)",
        )
    })?;
    if !o.status.success() {
        let log = String::from_utf8_lossy(&o.stderr);
        let out_log = String::from_utf8_lossy(&o.stdout);
        let tail: Vec<&str> = out_log.lines().chain(log.lines()).collect();
        let tail = tail[tail.len().saturating_sub(20)..].join("\n");
        return Err(InfraClass::Sandbox.error(format!(
            "debootstrap {suite} failed ({}):\n{tail}",
            o.status
        )));
    }
    tar_rootfs(&root, out)
}

/// Tar a root filesystem with numeric owners (system `tar`: device nodes, hard links, xattrs).
pub fn tar_rootfs(root: &Path, out: &Path) -> Result<()> {
    let o = std::process::Command::new("tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(root)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .output()
        .map_err(|e| Error::io("tar", e))?;
    if !o.status.success() {
        return Err(InfraClass::Sandbox.error(format!(
            "tar the root filesystem: {}",
            String::from_utf8_lossy(&o.stderr)
        )));
    }
    Ok(())
}

/// Import a root-filesystem tarball as `tag` (`POST /images/create?fromSrc=-`).
pub async fn import_rootfs(docker: &Docker, tarball: &Path, tag: &str) -> Result<()> {
    let (repo, t) = match tag.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
        _ => (tag.to_string(), "latest".to_string()),
    };
    let data = tokio::fs::read(tarball).await.at(tarball)?;
    let opts = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(&repo)
        .tag(&t)
        .changes(vec![
            "ENV LANG=C.UTF-8".to_string(),
            "CMD [\"bash\"]".to_string(),
        ])
        .build();
    let mut stream = docker.create_image(Some(opts), Some(bollard::body_full(data.into())), None);
    while let Some(item) = stream.next().await {
        item.map_err(|e| {
            InfraClass::Sandbox.error(format!("import {} as {tag}: {e}", tarball.display()))
        })?;
    }
    if !image_exists(docker, tag).await? {
        return Err(InfraClass::Sandbox.error(format!(
            "import {} as {tag}: the image did not appear",
            tarball.display()
        )));
    }
    Ok(())
}

/// Build the base image from `source` unless it exists (or `force`). `progress` gets short
/// notes (the CLI prints them on stderr). Returns false when the image already existed.
pub async fn build_base(
    docker: &Docker,
    source: &RootfsSource,
    tag: &str,
    force: bool,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<bool> {
    if !force && image_exists(docker, tag).await? {
        progress(&format!("{tag} already exists"));
        return Ok(false);
    }
    match source {
        RootfsSource::Tarball(p) => {
            progress(&format!("importing {} as {tag}", p.display()));
            import_rootfs(docker, p, tag).await?;
        }
        RootfsSource::Debootstrap {
            suite,
            include,
            mirror,
        } => {
            let work = std::env::temp_dir();
            let tar_dir = tempfile::Builder::new()
                .prefix("git-harness-base-")
                .tempdir_in(&work)
                .at(&work)?;
            let tarball = tar_dir.path().join("rootfs.tar");
            progress(&format!(
                "running debootstrap {suite} from {mirror} (this takes a few minutes)"
            ));
            let (s, i, m, w, t) = (
                suite.clone(),
                include.clone(),
                mirror.clone(),
                work.clone(),
                tarball.clone(),
            );
            tokio::task::spawn_blocking(move || debootstrap_rootfs(&s, &i, &m, &w, &t))
                .await
                .map_err(|e| Error::Internal(format!("debootstrap task panicked: {e}")))??;
            progress(&format!("importing the root filesystem as {tag}"));
            import_rootfs(docker, &tarball, tag).await?;
        }
    }
    Ok(true)
}
