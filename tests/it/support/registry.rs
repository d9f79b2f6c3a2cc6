//! A real registry on loopback (Debian's `docker-registry`), started on a free port with its own
//! storage and stopped by its pid. Engines allow plain HTTP to 127.0.0.0/8 registries by default.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The registry program (`apt-get install docker-registry`).
pub const PROGRAM: &str = "/usr/bin/docker-registry";
const REGISTRY: &str = PROGRAM;

/// A registry on 127.0.0.1, stopped (by its pid) when dropped.
pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = crate::support::serve::free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let r = Registry {
            child,
            port,
            _dir: dir,
        };
        crate::support::serve::wait_listening(port, Duration::from_secs(30), "the registry");
        r
    }

    /// Its address as images name it (`127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Whether it holds the repository `repo` (the Registry API's catalog).
    pub fn has(&self, repo: &str) -> bool {
        let o = Command::new("curl")
            .args(["-sf", &format!("http://{}/v2/_catalog", self.url())])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&o.stdout).contains(&format!("\"{repo}\""))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
