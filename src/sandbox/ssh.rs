//! The Docker engine of an `ssh://` host, reached through few ssh connections. Each connection
//! to the engine is `docker system dial-stdio` on the host, as the docker CLI does, run as a
//! session of an ssh master (`ssh -M`, the system's client with its config, keys and agent)
//! that carries up to [`PER_MASTER`] of them. Masters are started one at a time, so sshd never
//! sees more than one unauthenticated connection from this process: many concurrent trials do
//! not run into its `MaxStartups` (10 by default), which drops connections at random beyond
//! that, nor into `MaxSessions` (10 sessions per connection by default).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use futures_util::FutureExt;
use hyper_util::rt::TokioIo;

/// Engine connections per ssh connection, below sshd's default `MaxSessions` of 10.
pub const PER_MASTER: usize = 8;

/// One ssh master and how many engine connections it carries.
struct Master {
    session: Arc<openssh::Session>,
    open: Arc<AtomicUsize>,
}

/// The hyper connector of an `ssh://` engine (`destination` as ssh takes it, e.g. `user@host`).
#[derive(Clone)]
pub struct SshConnector {
    destination: Arc<str>,
    /// Held while a master is chosen or started: one ssh handshake at a time.
    masters: Arc<tokio::sync::Mutex<Vec<Master>>>,
}

impl SshConnector {
    pub fn new(destination: &str) -> SshConnector {
        SshConnector {
            destination: destination.into(),
            masters: Arc::default(),
        }
    }

    /// A master with room for one more connection (started when none has), and its count,
    /// already raised for the caller.
    async fn master(&self) -> Result<(Arc<openssh::Session>, Slot), openssh::Error> {
        let mut masters = self.masters.lock().await;
        if let Some(m) = masters
            .iter()
            .find(|m| m.open.load(Ordering::SeqCst) < PER_MASTER)
        {
            return Ok((m.session.clone(), Slot::take(&m.open)));
        }
        let builder = openssh::SessionBuilder::default();
        let (builder, destination) = builder.resolve(&self.destination);
        let dir = builder.launch_master(destination).await?;
        let m = Master {
            session: Arc::new(openssh::Session::new_process_mux(dir)),
            open: Arc::default(),
        };
        let got = (m.session.clone(), Slot::take(&m.open));
        masters.push(m);
        Ok(got)
    }

    /// Forget `session` (it failed), so the next connection starts a master anew.
    async fn drop_master(&self, session: &Arc<openssh::Session>) {
        self.masters
            .lock()
            .await
            .retain(|m| !Arc::ptr_eq(&m.session, session));
    }
}

/// A connection counted on its master until dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>) -> Slot {
        open.fetch_add(1, Ordering::SeqCst);
        Slot(open.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One engine connection: the stdin and stdout of `docker system dial-stdio` on the host.
pub struct SshStream {
    _child: openssh::Child<Arc<openssh::Session>>,
    stdin: Option<TokioIo<openssh::ChildStdin>>,
    stdout: TokioIo<openssh::ChildStdout>,
    _slot: Slot,
}

impl tower_service::Service<hyper::Uri> for SshConnector {
    type Response = SshStream;
    type Error = openssh::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let this = self.clone();
        async move {
            let (session, slot) = this.master().await?;
            let spawned = session
                .clone()
                .arc_command("docker")
                .arg("system")
                .arg("dial-stdio")
                .stdin(openssh::Stdio::piped())
                .stdout(openssh::Stdio::piped())
                .spawn()
                .await;
            let mut child = match spawned {
                Ok(c) => c,
                Err(e) => {
                    this.drop_master(&session).await;
                    return Err(e);
                }
            };
            let (Some(stdin), Some(stdout)) = (child.stdin().take(), child.stdout().take()) else {
                return Err(openssh::Error::ChildIo(io::Error::other(
                    "docker system dial-stdio has no stdin or stdout",
                )));
            };
            Ok(SshStream {
                _child: child,
                stdin: Some(TokioIo::new(stdin)),
                stdout: TokioIo::new(stdout),
                _slot: slot,
            })
        }
        .boxed()
    }
}

impl SshStream {
    fn stdin(self: Pin<&mut Self>) -> io::Result<Pin<&mut TokioIo<openssh::ChildStdin>>> {
        self.get_mut()
            .stdin
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::ErrorKind::BrokenPipe.into())
    }
}

impl hyper::rt::Read for SshStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stdout).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for SshStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stdin()?.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.stdin()?.poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stdin()?.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().stdin()?.poll_shutdown(cx))?;
        // Closing the process's stdin is what ends the input half.
        drop(self.get_mut().stdin.take());
        Poll::Ready(Ok(()))
    }
}

impl hyper_util::client::legacy::connect::Connection for SshStream {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

/// A Docker client of the engine at `host` (`ssh://DESTINATION`) through [`SshConnector`].
pub fn client(host: &str, timeout_secs: u64) -> Result<bollard::Docker, bollard::errors::Error> {
    let destination = host.strip_prefix("ssh://").unwrap_or(host);
    let connector = SshConnector::new(destination);
    let http = Arc::new(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    );
    bollard::Docker::connect_with_custom_transport(
        move |req: bollard::BollardRequest| {
            let http = http.clone();
            async move {
                http.request(req)
                    .await
                    .map_err(bollard::errors::Error::from)
            }
        },
        Some(host),
        timeout_secs,
        bollard::API_DEFAULT_VERSION,
    )
}
