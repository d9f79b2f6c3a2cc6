//! A second Docker engine for the pool tests (`docker_hosts`, `docker_registry`): a `dockerd`
//! the test starts with its own data root, exec root, pidfile, unix socket, bridge and a
//! loopback TCP port that requires TLS client certificates, stopped by its pid; the engine at
//! the default socket is only used, never touched. Also the four-task suite they run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DEFAULT: &str = "unix:///var/run/docker.sock";
pub const BASE: &str = "git-harness/base:bookworm";
/// The second engine's bridge, made by this test and removed when it ends.
const BRIDGE: &str = "gh-hosts-br0";
const BRIDGE_ADDR: &str = "10.213.77.1/24";

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

fn docker0_exists() -> bool {
    Path::new("/sys/class/net/docker0").exists()
}

/// Whether `tool` is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// True when a second engine can be started here (root, `dockerd`, `openssl`, `ip`, and the
/// engine at the default socket with the base image); required in CI, a loud skip elsewhere.
pub fn components_or_skip(test: &str) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let ok = crate::support::sandbox::docker_engine_or_skip(test)
        && root
        && ["dockerd", "openssl", "ip"].iter().all(|t| have(t));
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: root, dockerd, openssl and a Docker engine with {BASE} are required in CI"
        );
        eprintln!("SKIPPED {test}: needs root, dockerd, openssl and a Docker engine with {BASE}");
    }
    ok
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A second Docker engine, owned by this test: stopped by its pid when dropped.
pub struct Engine {
    dir: PathBuf,
    certs: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Engine {
    pub fn start(dir: &Path, certs: &Path) -> Engine {
        let mut e = Engine {
            dir: dir.to_path_buf(),
            certs: certs.to_path_buf(),
            port: free_port(),
            child: None,
        };
        e.launch();
        e
    }

    pub fn socket(&self) -> String {
        format!("unix://{}", self.dir.join("sock").display())
    }

    pub fn tcp(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Start the daemon (again, after [`Engine::signal`] and [`Engine::reap`]) and wait until
    /// it answers.
    pub fn launch(&mut self) {
        std::fs::create_dir_all(&self.dir).unwrap();
        if !Path::new(&format!("/sys/class/net/{BRIDGE}")).exists() {
            assert!(
                ip(&["link", "add", BRIDGE, "type", "bridge"]),
                "ip link add {BRIDGE}"
            );
            assert!(ip(&["addr", "add", BRIDGE_ADDR, "dev", BRIDGE]));
            assert!(ip(&["link", "set", BRIDGE, "up"]));
        }
        let docker0 = docker0_exists();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))
            .unwrap();
        let c = |f: &str| self.certs.join(f).display().to_string();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("pid"))
            .args(["-H", &self.socket(), "-H", &self.tcp()])
            .args(["--tlsverify", "--tlscacert", &c("ca.pem")])
            .args([
                "--tlscert",
                &c("server.pem"),
                "--tlskey",
                &c("server-key.pem"),
            ])
            // A bridge of its own: docker0 belongs to the engine at the default socket (and
            // `--bridge none` would make this daemon delete it).
            .args(["--bridge", BRIDGE, "--iptables=false", "--ip-masq=false"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        while !self.docker(&["info"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "the second dockerd did not answer:\n{}",
                std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(
            docker0_exists(),
            docker0,
            "the second engine must leave the default engine's bridge alone"
        );
    }

    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .args(["-H", &self.socket()])
            .args(args)
            .output()
            .expect("docker")
    }

    /// The base image of the engine at the default socket, loaded from it.
    pub fn load_base(&self) {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker -H {DEFAULT} save {BASE} | docker -H {} load",
                self.socket()
            ))
            .status()
            .expect("docker save | docker load");
        assert!(ok.success(), "docker save | docker load failed");
    }

    pub fn containers(&self) -> Vec<String> {
        let o = self.docker(&["ps", "-aq", "--filter", "label=git-harness"]);
        assert!(o.status.success(), "{o:?}");
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn signal(&mut self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on the pid of the daemon this test started.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Wait for the daemon to exit (SIGKILL after a while).
    pub fn reap(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while c.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.signal(libc::SIGTERM);
        self.reap();
        // A daemon killed with -9 leaves the bind mount of its data root: undo what it mounted,
        // so its directory can be removed.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| Path::new(m).starts_with(&self.dir))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        let _ = ip(&["link", "delete", BRIDGE]);
    }
}

/// `docker` against the engine at the default socket.
pub fn default_engine(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(["-H", DEFAULT])
        .args(args)
        .output()
        .expect("docker")
}

/// Four tasks without network (`ok`, `wrong`, `v`, `t`) under `root/suite`: the oracle writes
/// `ok` to /app/out.txt (`no` for `wrong`) after `solve_prefix`, and the verifier passes on `ok`
/// and `also` (a shell test). With `dockerfile` each task builds its image from it, else it
/// runs on the base image.
pub fn four_tasks(
    root: &Path,
    dockerfile: Option<&str>,
    solve_prefix: &str,
    also: &str,
) -> PathBuf {
    for (id, word) in [("ok", "ok"), ("wrong", "no"), ("v", "ok"), ("t", "ok")] {
        super::sandbox::harbor_task(
            &root.join("suite").join(id),
            "Write ok to /app/out.txt.\n",
            dockerfile,
            &format!("{solve_prefix}echo {word} > /app/out.txt\n"),
            &format!(
                "#!/bin/bash\nif grep -qx ok /app/out.txt && {also}; then echo 1; else echo 0; fi > /logs/verifier/reward.txt\n"
            ),
        );
    }
    root.join("suite")
}
