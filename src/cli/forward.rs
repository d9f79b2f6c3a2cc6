//! `git harness __forward SOCKET PORT` (hidden): the relay a sandbox without a network runs
//! to reach the model gateway's Unix socket from its own loopback.

use std::path::PathBuf;

use git_harness::{Error, Result};

use super::Ui;

/// Relay 127.0.0.1:PORT to the model gateway's Unix socket (used inside sandboxes).
#[derive(clap::Args, Debug)]
pub struct Args {
    pub socket: PathBuf,
    pub port: u16,
}

pub fn run(_ui: &mut Ui, args: Args) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the runtime: {e}")))?;
    rt.block_on(git_harness::gateway::forward::forward(
        &args.socket,
        args.port,
    ))?;
    Ok(0)
}

/// Carry 127.0.0.1:PORT over stdin/stdout to the model gateway (used inside containers).
#[derive(clap::Args, Debug)]
pub struct TunnelArgs {
    pub port: u16,
}

pub fn tunnel(_ui: &mut Ui, args: TunnelArgs) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the runtime: {e}")))?;
    rt.block_on(git_harness::gateway::forward::tunnel_serve(args.port))?;
    Ok(0)
}
