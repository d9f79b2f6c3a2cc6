//! Stand-in servers on loopback: a router served in its own thread and runtime, so that sync
//! tests and async tests (whatever their runtime) start one the same way.

use std::net::SocketAddr;

use axum::Router;

/// A server on 127.0.0.1; it stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Server {
    /// The OpenAI/Anthropic-style base URL of the server (`http://ADDR/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

/// Serve `app` on a free loopback port until the returned `Server` is dropped.
pub fn start(app: Router) -> Server {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("stand-in server runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            addr_tx
                .send(listener.local_addr().expect("local address"))
                .expect("send the address");
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .expect("serve");
        });
    });
    Server {
        addr: addr_rx.recv().expect("the server's address"),
        _shutdown: tx,
    }
}

/// A loopback port free at the moment (for a server another process starts, or one that is
/// meant to be closed).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Wait until a server of another process accepts connections on loopback `port`, polling;
/// panics after `limit`.
pub fn wait_listening(port: u16, limit: std::time::Duration, what: &str) {
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < limit,
            "{what} did not listen on port {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
