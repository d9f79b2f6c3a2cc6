//! The forwarder that carries a sandbox's loopback connections to the gateway's Unix socket.
//!
//! A sandbox without a network has only its own loopback. Bubblewrap binds the gateway's
//! socket and this binary read-only into it, and the agent's command starts
//! `git-harness __forward SOCKET PORT` first: it listens on `127.0.0.1:PORT` inside the
//! sandbox's network namespace and relays every connection to the socket. Nothing else is
//! reachable: the namespace has no other interface.

use std::path::Path;

use crate::error::{Error, Result};

/// Listen on `127.0.0.1:port` and relay each connection to `socket` until killed.
pub async fn forward(socket: &Path, port: u16) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| {
            Error::infra(format!(
                "sandbox: forwarder cannot listen on port {port}: {e}"
            ))
        })?;
    loop {
        let (mut tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => continue,
        };
        let socket = socket.to_path_buf();
        tokio::spawn(async move {
            if let Ok(mut unix) = tokio::net::UnixStream::connect(&socket).await {
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
            }
        });
    }
}
