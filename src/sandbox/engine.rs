//! The Docker engine's client and its errors, shared by the Docker runner (`docker/`) and the
//! image helpers (`image.rs`), which both talk to the daemon: where the engine is (`DOCKER_HOST`,
//! with TLS from `DOCKER_TLS_VERIFY` / `DOCKER_CERT_PATH` as the docker CLI reads them, or over
//! `ssh://` through the system's ssh client), and what
//! its errors mean.

use bollard::Docker;

use super::InfraClass;
use crate::error::{Error, Result};

/// What every failed call to the daemon says to do.
const DAEMON_HINT: &str = "is the Docker daemon running and reachable (DOCKER_HOST or /var/run/docker.sock)? (see .ci/docker.sh)";

pub(crate) fn docker_err(what: &str, e: bollard::errors::Error) -> Error {
    InfraClass::Sandbox.error_hint(format!("{what}: {}", with_causes(&e)), DAEMON_HINT)
}

/// `e` and its causes: a transport's error names only its kind ("client error (Connect)"),
/// its source says what failed.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// An error of the archive API. The daemon answering with an error about a path (a dangling
/// link, a directory where a file should be, a full disk) is about the sandbox's content, which
/// the agent controls: an I/O error of that path, not an infrastructure error. A daemon that does
/// not answer is infrastructure.
pub(crate) fn archive_err(path: &str, e: bollard::errors::Error) -> Error {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. }
            if !message.contains("No such container") =>
        {
            Error::io(path, std::io::Error::other(message.trim().to_string()))
        }
        e => docker_err(&format!("copy {path}"), e),
    }
}

pub(crate) fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Where the engine is when `DOCKER_HOST` is unset.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// Seconds a request to the engine may take (bollard's default).
const TIMEOUT_SECS: u64 = 120;

/// How to reach an engine, as the docker CLI reads it from `DOCKER_HOST`, `DOCKER_TLS_VERIFY`
/// and `DOCKER_CERT_PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    /// TLS with the client certificates of `cert_path` (`ca.pem`, `cert.pem`, `key.pem`).
    pub tls: Option<std::path::PathBuf>,
}

impl Endpoint {
    /// The endpoint of the environment: `DOCKER_TLS_VERIFY` set to anything non-empty asks for
    /// TLS (as the docker CLI reads it); `https://` always does.
    #[allow(
        clippy::disallowed_methods,
        reason = "the engine's address is the docker CLI's environment"
    )]
    pub fn from_env() -> Result<Endpoint> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        let verify = std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty());
        let cert_path = std::env::var_os("DOCKER_CERT_PATH")
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".docker"))
            });
        Endpoint::new(&host, verify, cert_path)
    }

    /// `host` with TLS when `verify` (or `https://`), refusing what cannot be honoured.
    pub fn new(
        host: &str,
        verify: bool,
        cert_path: Option<std::path::PathBuf>,
    ) -> Result<Endpoint> {
        let tcp = host.starts_with("tcp://") || host.starts_with("http://");
        let https = host.starts_with("https://");
        if let Some(rest) = host.strip_prefix("ssh://")
            && rest
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            return Err(Error::usage_hint(
                format!("{host}: an ssh:// address cannot carry a port here"),
                "name the engine's machine in ~/.ssh/config (`Host NAME` with `HostName`, `Port`, `User`) and use ssh://NAME",
            ));
        }
        if verify && host.starts_with("ssh://") {
            return Err(Error::usage_hint(
                format!(
                    "TLS is asked for, but {host} is an ssh:// address: ssh encrypts it already"
                ),
                "unset DOCKER_TLS_VERIFY (or drop `tls` of this host in runner.hosts)",
            ));
        }
        if verify && !(tcp || https) {
            return Err(Error::usage_hint(
                format!(
                    "DOCKER_TLS_VERIFY is set, but DOCKER_HOST={host} is not a TCP address: the connection cannot be verified with TLS"
                ),
                "unset DOCKER_TLS_VERIFY for a local socket, or point DOCKER_HOST at the engine's TLS port (tcp://HOST:2376)",
            ));
        }
        if verify && host.starts_with("http://") {
            return Err(Error::usage_hint(
                format!("DOCKER_TLS_VERIFY is set, but DOCKER_HOST={host} asks for plain HTTP"),
                "use tcp:// or https:// with DOCKER_TLS_VERIFY, or unset it",
            ));
        }
        let tls = if verify || https {
            let Some(dir) = cert_path else {
                return Err(Error::usage_hint(
                    format!("DOCKER_HOST={host} needs TLS, but no certificate directory is known"),
                    "set DOCKER_CERT_PATH to the directory with ca.pem, cert.pem and key.pem",
                ));
            };
            for f in ["ca.pem", "cert.pem", "key.pem"] {
                if !dir.join(f).is_file() {
                    return Err(Error::usage_hint(
                        format!(
                            "DOCKER_HOST={host} needs TLS, but {} is missing",
                            dir.join(f).display()
                        ),
                        "set DOCKER_CERT_PATH to the directory with ca.pem, cert.pem and key.pem",
                    ));
                }
            }
            Some(dir)
        } else {
            None
        };
        Ok(Endpoint {
            host: host.to_string(),
            tls,
        })
    }

    /// The endpoint of one engine of `runner.hosts`: TLS when it names a certificate directory
    /// (or says `https://`).
    pub fn of_host(h: &crate::experiment::DockerHost) -> Result<Endpoint> {
        Endpoint::new(&h.host, h.tls.is_some(), h.tls.clone())
    }

    /// A client for this endpoint; the API version is not negotiated yet.
    pub fn client(&self) -> Result<Docker> {
        let made = match &self.tls {
            Some(dir) => {
                // Two TLS providers are linked in; bollard needs a process default chosen.
                let _ = rustls::crypto::ring::default_provider().install_default();
                // bollard wants https:// for TLS.
                let addr = match self.host.strip_prefix("tcp://") {
                    Some(rest) => format!("https://{rest}"),
                    None => self.host.clone(),
                };
                Docker::connect_with_ssl(
                    &addr,
                    &dir.join("key.pem"),
                    &dir.join("cert.pem"),
                    &dir.join("ca.pem"),
                    TIMEOUT_SECS,
                    bollard::API_DEFAULT_VERSION,
                )
                .map_err(|e| {
                    Error::usage_hint(
                        format!("the TLS client certificates in {}: {e}", dir.display()),
                        "DOCKER_CERT_PATH must hold the engine's ca.pem and this client's cert.pem and key.pem",
                    )
                })?
            }
            None if self.host.starts_with("tcp://") || self.host.starts_with("http://") => {
                Docker::connect_with_http(&self.host, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
                    .map_err(|e| docker_err("connect to Docker", e))?
            }
            // The system's `ssh` (its config, keys and agent) runs `docker system dial-stdio` on
            // the remote host, as the docker CLI does, several connections to one ssh master.
            None if self.host.starts_with("ssh://") => {
                guard_ssh_masters();
                super::ssh::client(&self.host, TIMEOUT_SECS)
                    .map_err(|e| docker_err("connect to Docker over ssh", e))?
            }
            None => Docker::connect_with_host(&self.host)
                .map_err(|e| docker_err("connect to Docker", e))?,
        };
        Ok(made)
    }

    /// `docker` (a client of this endpoint) with the API version negotiated. Over TLS, a
    /// handshake the engine or this client refuses is a usage error: the certificates do not
    /// match, and retrying cannot help.
    pub async fn negotiate(&self, docker: Docker) -> Result<Docker> {
        docker.negotiate_version().await.map_err(|e| {
            let text = e.to_string();
            let lower = format!("{text} {e:?}").to_ascii_lowercase();
            let tls_refused = self.tls.is_some()
                && ["certificate", "handshake", "alert", "tls", "unknownissuer", "unknown ca"]
                    .iter()
                    .any(|w| lower.contains(w));
            match &self.tls {
                Some(dir) if tls_refused => Error::usage_hint(
                    format!("the TLS handshake with the Docker engine at {} failed: {text}", self.host),
                    format!(
                        "the certificate directory ({}; DOCKER_CERT_PATH, or `tls` of the host in runner.hosts) must hold the CA that signed the engine's certificate (ca.pem) and a client certificate the engine accepts (cert.pem, key.pem)",
                        dir.display()
                    ),
                ),
                _ => docker_err("reach the Docker daemon", e),
            }
        })
    }
}

/// A client for `DOCKER_HOST` or the default socket; the API version is not negotiated yet.
pub fn client_from_env() -> Result<Docker> {
    Endpoint::from_env()?.client()
}

/// A client for `DOCKER_HOST` or the default socket, with the API version negotiated.
pub async fn connect() -> Result<Docker> {
    let e = Endpoint::from_env()?;
    let client = e.client()?;
    e.negotiate(client).await
}

/// `docker` with the API version negotiated, for a client of the environment's endpoint.
pub async fn negotiate(docker: Docker) -> Result<Docker> {
    Endpoint::from_env()?.negotiate(docker).await
}

/// The ssh connections of `ssh://` engines end with this process, however it ends. Each is an
/// ssh master (`ssh -M -f`, kept by `ControlPersist=yes`) that forks away from its parent, so a
/// parent-death signal cannot reach it: this process becomes the subreaper of what it starts
/// (the masters become its children), a thread hands each master's pid to a watcher process in
/// a process group of its own, and the watcher kills them when its stdin closes, which the
/// kernel does when this process ends, `kill -9` included. Only detached masters are reaped
/// here (see [`SshChild::leader`]); every other child belongs to whoever spawned it.
fn guard_ssh_masters() {
    static STARTED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    STARTED.get_or_init(|| {
        let me = rustix::process::getpid();
        if rustix::process::set_child_subreaper(Some(me)).is_err() {
            return;
        }
        use std::os::unix::process::CommandExt;
        #[allow(
            clippy::disallowed_methods,
            reason = "the watcher must outlive this process, so no runtime may own it"
        )]
        let watcher = std::process::Command::new("/bin/sh")
            .args([
                "-c",
                // `PID` adds a master, `-PID` drops one that ended and was reaped.
                "ps=; while read -r p; do case $p in -*) n=; for q in $ps; do [ \"$q\" = \"${p#-}\" ] || n=\"$n $q\"; done; ps=$n;; *) ps=\"$ps $p\";; esac; done; [ -n \"$ps\" ] && kill $ps 2>/dev/null; exit 0",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn();
        let Ok(mut watcher) = watcher else { return };
        let Some(mut to_watcher) = watcher.stdin.take() else {
            return;
        };
        let me = me.as_raw_nonzero().get();
        // A master becomes this process's child when the `ssh -f` that started it exits, which
        // a SIGCHLD says: the pid goes to the watcher at once, not at the next poll.
        let _ = std::thread::Builder::new()
            .name("ssh-masters".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    use std::io::Write;
                    use tokio::signal::unix::{SignalKind, signal};
                    let Ok(mut chld) = signal(SignalKind::child()) else {
                        return;
                    };
                    let mut known = std::collections::HashSet::new();
                    loop {
                        let children = ssh_children_of(me);
                        for c in &children {
                            // Told at once, before it detaches: a master that has not yet
                            // made its own session is killed too if this process dies now.
                            if c.master
                                && !c.zombie
                                && known.insert(c.pid)
                                && writeln!(to_watcher, "{}", c.pid).is_err()
                            {
                                return;
                            }
                            // A detached master that ended: ours to reap. The `ssh -M -f` a
                            // client spawned never leads a session; its exit status is its
                            // spawner's to take (reaping it here made that wait fail with
                            // ECHILD, and the connection with "client error (Connect)").
                            if c.zombie
                                && c.leader
                                && let Some(p) = rustix::process::Pid::from_raw(c.pid)
                            {
                                let _ = rustix::process::waitpid(
                                    Some(p),
                                    rustix::process::WaitOptions::NOHANG,
                                );
                            }
                        }
                        // Masters that ended (reaped here or by their spawner) leave the
                        // watcher's list: their pids may be reused.
                        let live: std::collections::HashSet<i32> = children
                            .iter()
                            .filter(|c| !(c.zombie && c.leader))
                            .map(|c| c.pid)
                            .collect();
                        let gone: Vec<i32> = known.difference(&live).copied().collect();
                        for pid in gone {
                            known.remove(&pid);
                            if writeln!(to_watcher, "-{pid}").is_err() {
                                return;
                            }
                        }
                        let _ = to_watcher.flush();
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_millis(500),
                            chld.recv(),
                        )
                        .await;
                    }
                });
            });
    });
}

/// An `ssh` child of this process, as `/proc` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SshChild {
    pid: i32,
    /// Its command line has `-M` (read while it lives; a zombie's is gone).
    master: bool,
    zombie: bool,
    /// It leads a session of its own: a master that detached (`ssh -f` daemonizes: it forks,
    /// the parent exits and the child calls setsid), which belongs to nobody but this
    /// subreaper. The `ssh -M -f` this process spawned has the same command line but leads no
    /// session: its spawner waits for it.
    leader: bool,
}

/// The `ssh` processes whose parent is `parent`.
fn ssh_children_of(parent: i32) -> Vec<SshChild> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp session ...`: the comm may hold spaces, the last `)`
        // ends it.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let w: Vec<&str> = rest.split(' ').take(4).collect();
        let field = |i: usize| w.get(i).and_then(|p| p.parse::<i32>().ok());
        if field(1) != Some(parent) || !head.ends_with("(ssh") {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        found.push(SshChild {
            pid,
            master: cmdline.split(|b| *b == 0).any(|a| a == b"-M"),
            zombie: w.first() == Some(&"Z"),
            leader: field(3) == Some(pid),
        });
    }
    found
}

/// The `tracing` target of the Engine-API call timings (`RUST_LOG=git_harness::engine_api=debug`).
pub const API_TARGET: &str = "git_harness::engine_api";

/// Await one Engine-API call, reporting it as a `debug` event of [`API_TARGET`] with the call's
/// name and its duration in microseconds: which calls a trial makes and what each costs.
pub(crate) async fn timed<F: std::future::Future>(call: &'static str, f: F) -> F::Output {
    let t = std::time::Instant::now();
    let out = f.await;
    api_call(call, t);
    out
}

/// Report a call that began at `since` (for streams, read to their end by the caller).
pub(crate) fn api_call(call: &'static str, since: std::time::Instant) {
    tracing::debug!(
        target: API_TARGET,
        call,
        us = since.elapsed().as_micros() as u64,
        "engine api call"
    );
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    /// An `ssh -M -f` stand-in (a script named `ssh`, so its comm is `ssh`) spawned by this
    /// process, detached into a session of its own or not.
    fn fake_master(dir: &std::path::Path, detached: bool) -> std::process::Child {
        let ssh = dir.join("ssh");
        if !ssh.exists() {
            std::fs::write(&ssh, "#!/bin/sh\nsleep 30\n").unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        #[allow(clippy::disallowed_methods, reason = "a test's stand-in process")]
        let mut cmd = std::process::Command::new(&ssh);
        cmd.args(["-M", "-f", "-N", "gh-engine"]);
        if detached {
            // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| rustix::process::setsid().map(|_| ()).map_err(Into::into));
            }
        } else {
            // A group of its own (not a session): the test ends its `sleep` with it.
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        cmd.spawn().unwrap()
    }

    /// End a stand-in and the `sleep` its script started, which would outlive it.
    fn kill_group(child: &std::process::Child) {
        // SAFETY: killpg has no memory effects; the group is the stand-in's own.
        unsafe {
            libc::killpg(child.id() as libc::pid_t, libc::SIGKILL);
        }
    }

    /// The `ssh -M -f` that a client spawns (and waits for) is not a master to reap: only one
    /// that detached into its own session is, alive or a zombie. Reaping the spawned one made
    /// the client's wait fail with ECHILD ("client error (Connect)" on an `ssh://` engine
    /// under load).
    #[test]
    fn only_a_detached_ssh_master_is_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let me = rustix::process::getpid().as_raw_nonzero().get();
        let mut spawned = fake_master(dir.path(), false);
        let mut detached = fake_master(dir.path(), true);
        let (s, d) = (spawned.id() as i32, detached.id() as i32);
        // The script's comm is `ssh` once exec'd: wait for both to show under that name.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let comm =
            |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        while comm(s).trim() != "ssh" || comm(d).trim() != "ssh" {
            assert!(
                std::time::Instant::now() < deadline,
                "the stand-ins did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let alive = super::ssh_children_of(me);
        kill_group(&spawned);
        kill_group(&detached);
        // Both ended, neither waited for yet: zombies, whose session `/proc` still shows.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let zombies = loop {
            let found = super::ssh_children_of(me);
            let z = |pid| found.iter().any(|c| c.pid == pid && c.zombie);
            if z(s) && z(d) {
                break found;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no zombies: {found:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let _ = spawned.wait();
        let _ = detached.wait();
        let of = |found: &[super::SshChild], pid| *found.iter().find(|c| c.pid == pid).unwrap();
        // Both are masters for the watcher while they live...
        assert!(of(&alive, s).master && of(&alive, d).master, "{alive:?}");
        // ...but only the detached one is this process's to reap.
        assert!(
            !of(&alive, s).leader && !of(&zombies, s).leader,
            "{zombies:?}"
        );
        assert!(
            of(&alive, d).leader && of(&zombies, d).leader,
            "{zombies:?}"
        );
    }
}
