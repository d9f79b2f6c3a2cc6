//! Transport into a sandbox: the forwarder (bubblewrap) and the exec tunnel (Docker, Kubernetes)
//! that carry an agent's loopback connections to the model gateway's Unix socket, and the binary
//! they run.
//!
//! The forwarder that carries a sandbox's loopback connections to the gateway's Unix socket.
//!
//! A sandbox without a network has only its own loopback. Bubblewrap binds the gateway's
//! socket and this binary read-only into it, and the agent's command starts
//! `git-harness __forward SOCKET PORT` first: it listens on `127.0.0.1:PORT` inside the
//! sandbox's network namespace and relays every connection to the socket. Nothing else is
//! reachable: the namespace has no other interface.

use std::path::{Path, PathBuf};

use crate::error::Result;

/// The file name of the gateway's Unix socket inside its directory.
pub const SOCKET_NAME: &str = "gateway.sock";

static HELPER: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Name the `git-harness` binary that sandboxes run as the forwarder or tunnel, for programs
/// that use the library but are not that binary themselves (benchmarks). Set once.
pub fn set_helper_binary(path: PathBuf) {
    let _ = HELPER.set(path);
}

/// The `git-harness` binary sandboxes run as the forwarder or tunnel: this program, unless
/// [`set_helper_binary`] named another.
pub fn helper_binary() -> std::io::Result<PathBuf> {
    match HELPER.get() {
        Some(p) => Ok(p.clone()),
        None => std::env::current_exe(),
    }
}

/// Where the tunnel's binary goes inside a container or Pod.
pub const TUNNEL_DIR: &str = "/run/git-harness";

/// The helper binary as a tar of the one file `dest` (its path inside the sandbox, mode 0755):
/// the archive's length and a reader of it that streams the binary from disk rather than
/// holding it in memory (should the file shrink meanwhile, the reader ends early).
pub fn helper_tar(dest: &str) -> Result<(u64, Box<dyn tokio::io::AsyncRead + Unpin + Send>)> {
    use crate::error::IoContext;
    use tokio::io::AsyncReadExt;
    let exe = helper_binary().map_err(|e| {
        crate::error::InfraClass::Sandbox.error(format!("cannot find this program: {e}"))
    })?;
    let file = std::fs::File::open(&exe).at(&exe)?;
    let size = file.metadata().at(&exe)?.len();
    let mut h = tar::Header::new_gnu();
    h.set_path(dest.trim_start_matches('/')).at(&exe)?;
    h.set_size(size);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    // After the content: padding to a whole block, then the two empty blocks that end it.
    let trailer = vec![0u8; (512 - (size % 512) as usize) % 512 + 1024];
    let total = 512 + size + trailer.len() as u64;
    let body = tokio::fs::File::from_std(file).take(size);
    let reader = std::io::Cursor::new(h.as_bytes().to_vec())
        .chain(body)
        .chain(std::io::Cursor::new(trailer));
    Ok((total, Box::new(reader)))
}

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
/// Frames queued for the exec's stream, and DATA frames queued for one connection: what one
/// side sends faster than the other reads waits in the sender (its reads stop) rather than in
/// memory. A connection whose peer reads slowly holds up the frames behind it on the stream,
/// which only slows the sandbox's own connections.
const FRAMES_QUEUED: usize = 64;
const DATA_QUEUED: usize = 16;
/// Connections open at once through one tunnel; an OPEN beyond is answered with CLOSE.
const MAX_CONNS: usize = 64;

type FrameTx = tokio::sync::mpsc::Sender<(u32, u8, Vec<u8>)>;
type DataTx = tokio::sync::mpsc::Sender<Vec<u8>>;
type Conns = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u32, DataTx>>>;

/// The queue of connection `id`, if it is open.
fn conn_of(conns: &Conns, id: u32) -> Option<DataTx> {
    conns.lock().ok().and_then(|c| c.get(&id).cloned())
}

/// Open connection `id` unless [`MAX_CONNS`] are open: its receiving end.
fn open_conn(conns: &Conns, id: u32) -> Option<tokio::sync::mpsc::Receiver<Vec<u8>>> {
    let mut c = conns.lock().ok()?;
    if c.len() >= MAX_CONNS {
        return None;
    }
    let (tx, rx) = tokio::sync::mpsc::channel(DATA_QUEUED);
    c.insert(id, tx);
    Some(rx)
}

fn close_conn(conns: &Conns, id: u32) {
    if let Ok(mut c) = conns.lock() {
        c.remove(&id);
    }
}

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

/// A frame longer than any side sends: the stream is not the tunnel's (something in the
/// sandbox wrote into it), and it cannot be read on.
#[derive(Debug)]
struct Corrupt;

impl Decoder {
    fn push(&mut self, bytes: &[u8]) -> std::result::Result<Vec<(u32, u8, Vec<u8>)>, Corrupt> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while self.buf.len() >= 9 {
            let len =
                u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]) as usize;
            // Waiting for the rest of a longer frame would buffer whatever the sandbox sends.
            if len > CHUNK {
                return Err(Corrupt);
            }
            if self.buf.len() < 9 + len {
                break;
            }
            let id = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
            let kind = self.buf[4];
            let data = self.buf[9..9 + len].to_vec();
            self.buf.drain(..9 + len);
            out.push((id, kind, data));
        }
        Ok(out)
    }
}

/// Aborts a task when dropped, so that a task whose owner is aborted does not outlive it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The host side of a running tunnel. Dropping it (or [`TunnelHandle::abort`]) ends it: the
/// exec's stdin is closed, which ends the tunnel inside, and the gateway connections it carried
/// are shut down.
pub struct TunnelHandle {
    task: tokio::task::JoinHandle<()>,
}

impl TunnelHandle {
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Whether the host side ended (the exec's output ended, or it read a corrupt frame).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for TunnelHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Pump one connection: its reads become DATA frames (CLOSE at the end), and what arrives for
/// it on `rx` is written to it.
fn pump<S>(id: u32, stream: S, frames: FrameTx, mut rx: tokio::sync::mpsc::Receiver<Vec<u8>>)
where
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
                    if tx.send((id, DATA, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = tx.send((id, CLOSE, Vec::new())).await;
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
    let (frames, mut outgoing) = tokio::sync::mpsc::channel::<(u32, u8, Vec<u8>)>(FRAMES_QUEUED);
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
    let _ = frames.send((0, READY, Vec::new())).await;
    let accept_conns = conns.clone();
    let accept_frames = frames.clone();
    tokio::spawn(async move {
        let mut next = 1u32;
        while let Ok((tcp, _)) = listener.accept().await {
            let id = next;
            next = next.wrapping_add(1).max(1);
            // Beyond the limit a connection is refused (dropped) here rather than queued.
            let Some(rx) = open_conn(&accept_conns, id) else {
                continue;
            };
            if accept_frames.send((id, OPEN, Vec::new())).await.is_err() {
                break;
            }
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
        let Ok(frames_in) = dec.push(&buf[..n]) else {
            break;
        };
        for (id, kind, data) in frames_in {
            match kind {
                DATA => {
                    if let Some(tx) = conn_of(&conns, id) {
                        let _ = tx.send(data).await;
                    }
                }
                CLOSE => close_conn(&conns, id),
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
/// Every connection goes to `socket`, whatever the frames say: nothing else of the host is
/// reachable through it. Resolves once the sandbox side said it listens; the returned handle
/// carries on until the exec ends, a frame is corrupt, or it is dropped.
pub async fn tunnel_client<R, W>(
    mut incoming: R,
    mut outgoing: W,
    socket: std::path::PathBuf,
) -> Result<TunnelHandle>
where
    R: futures_util::Stream<Item = Vec<u8>> + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let (frames, mut rx) = tokio::sync::mpsc::channel::<(u32, u8, Vec<u8>)>(FRAMES_QUEUED);
        // The writer holds the exec's stdin: aborted with this task, and told to close stdin
        // when the tunnel ends (only a shutdown ends some streams, such as kube's stdin pipe).
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut writer = AbortOnDrop(tokio::spawn(async move {
            loop {
                let (id, kind, data) = tokio::select! {
                    f = rx.recv() => match f {
                        Some(f) => f,
                        None => break,
                    },
                    _ = &mut stop_rx => break,
                };
                if outgoing.write_all(&encode(id, kind, &data)).await.is_err() {
                    break;
                }
                let _ = outgoing.flush().await;
            }
            let _ = outgoing.shutdown().await;
        }));
        let conns: Conns = Default::default();
        let mut dec = Decoder::default();
        let mut ready = Some(ready_tx);
        while let Some(bytes) = incoming.next().await {
            let Ok(frames_in) = dec.push(&bytes) else {
                tracing::warn!("the gateway tunnel read a corrupt frame from the sandbox; ended");
                break;
            };
            for (id, kind, data) in frames_in {
                match kind {
                    READY => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    OPEN => {
                        let frames = frames.clone();
                        let Some(crx) = open_conn(&conns, id) else {
                            // The sandbox opens more than the limit: refused.
                            let _ = frames.send((id, CLOSE, Vec::new())).await;
                            continue;
                        };
                        let socket = socket.clone();
                        tokio::spawn(async move {
                            match tokio::net::UnixStream::connect(&socket).await {
                                Ok(unix) => pump(id, unix, frames, crx),
                                Err(_) => {
                                    let _ = frames.send((id, CLOSE, Vec::new())).await;
                                }
                            }
                        });
                    }
                    DATA => {
                        // Waits while the connection's queue is full: the exec's stream is
                        // read no further until the gateway takes what it was sent.
                        if let Some(tx) = conn_of(&conns, id) {
                            let _ = tx.send(data).await;
                        }
                    }
                    CLOSE => close_conn(&conns, id),
                    _ => {}
                }
            }
        }
        // The sandbox side ends when its stdin does.
        let _ = stop_tx.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), &mut writer.0).await;
    });
    let task = TunnelHandle { task };
    match tokio::time::timeout(std::time::Duration::from_secs(30), ready_rx).await {
        Ok(Ok(())) => Ok(task),
        _ => {
            task.abort();
            Err(crate::error::InfraClass::Sandbox
                .error("the gateway tunnel inside the sandbox did not start"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_across_reads_and_an_oversized_one_is_corrupt() {
        let mut d = Decoder::default();
        let bytes = [encode(7, DATA, b"hello"), encode(8, CLOSE, b"")].concat();
        let (a, b) = bytes.split_at(6);
        assert!(d.push(a).unwrap().is_empty());
        let frames = d.push(b).unwrap();
        assert_eq!(
            frames,
            vec![(7, DATA, b"hello".to_vec()), (8, CLOSE, Vec::new())]
        );
        // A header that announces more than any side sends is refused at once, before its
        // body arrives.
        let mut header = encode(9, DATA, b"");
        header[5..9].copy_from_slice(&((CHUNK as u32) + 1).to_be_bytes());
        assert!(d.push(&header).is_err());
    }

    #[tokio::test]
    async fn the_helper_tar_holds_the_binary_at_its_path() {
        use tokio::io::AsyncReadExt;
        let (len, mut reader) = helper_tar("/run/git-harness/git-harness").unwrap();
        let mut tar_bytes = Vec::new();
        reader.read_to_end(&mut tar_bytes).await.unwrap();
        assert_eq!(tar_bytes.len() as u64, len);
        assert_eq!(len % 512, 0);
        let mut ar = tar::Archive::new(&tar_bytes[..]);
        let mut entries = ar.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        assert_eq!(
            entry.path().unwrap().to_string_lossy(),
            "run/git-harness/git-harness"
        );
        assert_eq!(entry.header().mode().unwrap(), 0o755);
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        assert_eq!(data, std::fs::read(helper_binary().unwrap()).unwrap());
        drop(entry);
        assert!(entries.next().is_none());
    }

    /// A stream of frames from the sandbox: `head`, then DATA frames of connection 1 up to
    /// `limit` bytes, counting in `sent` what was taken.
    fn flood(
        head: Vec<Vec<u8>>,
        limit: usize,
        sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> impl futures_util::Stream<Item = Vec<u8>> + Unpin + Send + 'static {
        use futures_util::StreamExt;
        use std::sync::atomic::Ordering;
        let data = encode(1, DATA, &vec![b'x'; CHUNK]);
        let tail = futures_util::stream::unfold((), move |()| {
            let data = data.clone();
            let sent = sent.clone();
            async move { (sent.fetch_add(data.len(), Ordering::SeqCst) < limit).then_some((data, ())) }
        });
        Box::pin(futures_util::stream::iter(head).chain(tail))
    }

    /// Wait until `sent` stops growing (or reaches `limit`): what the client took in.
    async fn settled(sent: &std::sync::atomic::AtomicUsize, limit: usize) -> usize {
        use std::sync::atomic::Ordering;
        let mut last = usize::MAX;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let now = sent.load(Ordering::SeqCst);
            if now == last || now >= limit {
                return now;
            }
            last = now;
        }
    }

    /// A sandbox that sends faster than the gateway reads fills a bounded queue, then waits:
    /// the host does not buffer what it sends.
    #[tokio::test]
    async fn a_flood_from_the_sandbox_waits_for_the_gateway_instead_of_filling_memory() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("gw.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        // The gateway takes the connection and never reads it.
        let held = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(600)).await;
            drop(conn);
        });
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let limit = 256 * 1024 * 1024;
        let head = vec![encode(0, READY, b""), encode(1, OPEN, b"")];
        let incoming = flood(head, limit, sent.clone());
        let tunnel = tunnel_client(incoming, tokio::io::sink(), socket)
            .await
            .unwrap();
        let taken = settled(&sent, limit).await;
        tunnel.abort();
        held.abort();
        // The connection's queue, the socket's buffers and one read of the stream.
        assert!(taken < 16 * 1024 * 1024, "took {taken} bytes in");
    }

    /// More connections than the limit: the ones beyond are answered with CLOSE.
    #[tokio::test]
    async fn opens_beyond_the_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("gw.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = listener.accept().await {
                conns.push(c);
            }
        });
        let mut head = vec![encode(0, READY, b"")];
        for id in 1..=(MAX_CONNS as u32 + 3) {
            head.push(encode(id, OPEN, b""));
        }
        let (host_end, mut sandbox_end) = tokio::io::duplex(1 << 20);
        let incoming = futures_util::stream::StreamExt::chain(
            futures_util::stream::iter(head),
            futures_util::stream::pending(),
        );
        let tunnel = tunnel_client(Box::pin(incoming), host_end, socket)
            .await
            .unwrap();
        // Three CLOSE frames come back, for the three ids beyond the limit.
        let mut dec = Decoder::default();
        let mut closed = Vec::new();
        let mut buf = vec![0u8; 4096];
        while closed.len() < 3 {
            use tokio::io::AsyncReadExt;
            let n = sandbox_end.read(&mut buf).await.unwrap();
            assert!(n > 0);
            for (id, kind, _) in dec.push(&buf[..n]).unwrap() {
                if kind == CLOSE {
                    closed.push(id);
                }
            }
        }
        closed.sort();
        let over = MAX_CONNS as u32;
        assert_eq!(closed, vec![over + 1, over + 2, over + 3]);
        tunnel.abort();
        held.abort();
    }
}
