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
            crate::error::InfraClass::Sandbox
                .error(format!("forwarder cannot listen on port {port}: {e}"))
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

/// Frame kinds of the tunnel protocol: `[u32 id][u8 kind][u32 len][len bytes]`, big-endian.
const OPEN: u8 = 0;
const DATA: u8 = 1;
const CLOSE: u8 = 2;
const READY: u8 = 3;
/// The most one DATA frame carries.
const CHUNK: usize = 32 * 1024;

type FrameTx = tokio::sync::mpsc::UnboundedSender<(u32, u8, Vec<u8>)>;
type Conns = std::sync::Arc<
    std::sync::Mutex<std::collections::HashMap<u32, tokio::sync::mpsc::UnboundedSender<Vec<u8>>>>,
>;

fn encode(id: u32, kind: u8, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + data.len());
    f.extend_from_slice(&id.to_be_bytes());
    f.push(kind);
    f.extend_from_slice(&(data.len() as u32).to_be_bytes());
    f.extend_from_slice(data);
    f
}

/// Reads whole frames from a byte stream.
#[derive(Default)]
struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    fn push(&mut self, bytes: &[u8]) -> Vec<(u32, u8, Vec<u8>)> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while self.buf.len() >= 9 {
            let len =
                u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]) as usize;
            if self.buf.len() < 9 + len {
                break;
            }
            let id = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
            let kind = self.buf[4];
            let data = self.buf[9..9 + len].to_vec();
            self.buf.drain(..9 + len);
            out.push((id, kind, data));
        }
        out
    }
}

/// Pump one connection: its reads become DATA frames (CLOSE at the end), and what arrives for
/// it on `rx` is written to it.
fn pump<S>(
    id: u32,
    stream: S,
    frames: FrameTx,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut r, mut w) = tokio::io::split(stream);
    let tx = frames.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((id, DATA, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = tx.send((id, CLOSE, Vec::new()));
    });
    tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            if w.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    });
}

/// The sandbox side of the tunnel (`git-harness __tunnel PORT`): listen on `127.0.0.1:port`
/// and carry every connection over stdin/stdout, for a sandbox whose only link to the host is
/// the exec that runs this. Ends when stdin closes.
pub async fn tunnel_serve(port: u16) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| {
            crate::error::InfraClass::Sandbox
                .error(format!("tunnel cannot listen on port {port}: {e}"))
        })?;
    let (frames, mut outgoing) = tokio::sync::mpsc::unbounded_channel::<(u32, u8, Vec<u8>)>();
    let conns: Conns = Default::default();
    let writer = tokio::spawn(async move {
        let mut out = tokio::io::stdout();
        while let Some((id, kind, data)) = outgoing.recv().await {
            if out.write_all(&encode(id, kind, &data)).await.is_err() || out.flush().await.is_err()
            {
                break;
            }
        }
    });
    let _ = frames.send((0, READY, Vec::new()));
    let accept_conns = conns.clone();
    let accept_frames = frames.clone();
    tokio::spawn(async move {
        let mut next = 1u32;
        while let Ok((tcp, _)) = listener.accept().await {
            let id = next;
            next = next.wrapping_add(1).max(1);
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            if let Ok(mut c) = accept_conns.lock() {
                c.insert(id, tx);
            }
            let _ = accept_frames.send((id, OPEN, Vec::new()));
            pump(id, tcp, accept_frames.clone(), rx);
        }
    });
    let mut stdin = tokio::io::stdin();
    let mut dec = Decoder::default();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for (id, kind, data) in dec.push(&buf[..n]) {
            let mut c = conns
                .lock()
                .map_err(|_| Error::Internal("tunnel state".into()))?;
            match kind {
                DATA => {
                    if let Some(tx) = c.get(&id) {
                        let _ = tx.send(data);
                    }
                }
                CLOSE => {
                    c.remove(&id);
                }
                _ => {}
            }
        }
    }
    drop(frames);
    writer.abort();
    Ok(())
}

/// The host side of the tunnel: frames read from `incoming` (the exec's stdout) open
/// connections to the gateway's `socket`; what they answer goes to `outgoing` (its stdin).
/// Resolves once the sandbox side said it listens; the returned task carries on until the
/// exec ends or the task is aborted.
pub async fn tunnel_client<R, W>(
    mut incoming: R,
    mut outgoing: W,
    socket: std::path::PathBuf,
) -> Result<tokio::task::JoinHandle<()>>
where
    R: futures_util::Stream<Item = Vec<u8>> + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let (frames, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u32, u8, Vec<u8>)>();
        let writer = tokio::spawn(async move {
            while let Some((id, kind, data)) = rx.recv().await {
                if outgoing.write_all(&encode(id, kind, &data)).await.is_err() {
                    break;
                }
                let _ = outgoing.flush().await;
            }
        });
        let conns: Conns = Default::default();
        let mut dec = Decoder::default();
        let mut ready = Some(ready_tx);
        while let Some(bytes) = incoming.next().await {
            for (id, kind, data) in dec.push(&bytes) {
                match kind {
                    READY => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    OPEN => {
                        let (tx, crx) = tokio::sync::mpsc::unbounded_channel();
                        if let Ok(mut c) = conns.lock() {
                            c.insert(id, tx);
                        }
                        let frames = frames.clone();
                        let socket = socket.clone();
                        tokio::spawn(async move {
                            match tokio::net::UnixStream::connect(&socket).await {
                                Ok(unix) => pump(id, unix, frames, crx),
                                Err(_) => {
                                    let _ = frames.send((id, CLOSE, Vec::new()));
                                }
                            }
                        });
                    }
                    DATA => {
                        if let Ok(c) = conns.lock()
                            && let Some(tx) = c.get(&id)
                        {
                            let _ = tx.send(data);
                        }
                    }
                    CLOSE => {
                        if let Ok(mut c) = conns.lock() {
                            c.remove(&id);
                        }
                    }
                    _ => {}
                }
            }
        }
        writer.abort();
    });
    match tokio::time::timeout(std::time::Duration::from_secs(30), ready_rx).await {
        Ok(Ok(())) => Ok(task),
        _ => {
            task.abort();
            Err(crate::error::InfraClass::Sandbox
                .error("the gateway tunnel inside the sandbox did not start"))
        }
    }
}
