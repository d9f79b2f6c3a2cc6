//! The Engine-API floor of the benches: a trial's container work done with bollard alone,
//! without git-harness, each call timed into a [`Calls`] (the floor's own figures).

#![allow(dead_code, reason = "each bench uses part of it")]

use std::time::Instant;

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, DownloadFromContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;

use crate::api_calls::Calls;

/// A trial's container: `image` running `sleep infinity` under docker-init without network,
/// working in `workdir` when given; created, not started. Its id.
pub async fn create(
    docker: &Docker,
    image: &str,
    workdir: Option<&str>,
    calls: &Calls,
) -> Result<String, String> {
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["sleep".into(), "infinity".into()]),
        working_dir: workdir.map(str::to_string),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let t = Instant::now();
    let c = docker
        .create_container(None::<CreateContainerOptions>, body)
        .await
        .map_err(|e| e.to_string())?;
    calls.note("container create", t);
    Ok(c.id)
}

pub async fn start(docker: &Docker, id: &str, calls: &Calls) -> Result<(), String> {
    let t = Instant::now();
    docker
        .start_container(id, None)
        .await
        .map_err(|e| e.to_string())?;
    calls.note("container start", t);
    Ok(())
}

/// Unpack `tar` at `/` in the container.
pub async fn put(docker: &Docker, id: &str, tar: &[u8], calls: &Calls) -> Result<(), String> {
    let t = Instant::now();
    docker
        .upload_to_container(
            id,
            Some(UploadToContainerOptionsBuilder::default().path("/").build()),
            bollard::body_full(tar.to_vec().into()),
        )
        .await
        .map_err(|e| e.to_string())?;
    calls.note("archive put", t);
    Ok(())
}

/// `bash -c cmd` in the container, its output read to the end.
pub async fn exec(docker: &Docker, id: &str, cmd: &str, calls: &Calls) -> Result<(), String> {
    let t = Instant::now();
    let e = docker
        .create_exec(
            id,
            CreateExecOptions {
                cmd: Some(vec!["bash".to_string(), "-c".to_string(), cmd.to_string()]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    calls.note("exec create", t);
    let t = Instant::now();
    if let StartExecResults::Attached { mut output, .. } = docker
        .start_exec(&e.id, None)
        .await
        .map_err(|e| e.to_string())?
    {
        calls.note("exec start", t);
        let t = Instant::now();
        while output.next().await.is_some() {}
        calls.note("exec stream", t);
    }
    Ok(())
}

/// The archive of `/logs/verifier`, read to the end: its size.
pub async fn logs(docker: &Docker, id: &str, calls: &Calls) -> Result<usize, String> {
    let t = Instant::now();
    let mut s = docker.download_from_container(
        id,
        Some(
            DownloadFromContainerOptionsBuilder::default()
                .path("/logs/verifier")
                .build(),
        ),
    );
    let mut n = 0;
    while let Some(chunk) = s.next().await {
        n += chunk.map_err(|e| e.to_string())?.len();
    }
    calls.note("archive get", t);
    Ok(n)
}

pub async fn remove(docker: &Docker, id: &str, calls: &Calls) -> Result<(), String> {
    let t = Instant::now();
    docker
        .remove_container(
            id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
        .map_err(|e| e.to_string())?;
    calls.note("container delete", t);
    Ok(())
}
