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
