//! The local sandbox: a fresh temp dir per trial, commands in their own process group, inside
//! bubblewrap when it is available (no capabilities, only the system directories read-only and
//! the trial's own directories, private `/tmp`, no network unless the task asks, a PID
//! namespace per exec), with rlimits set before `exec`. What it shows is one table
//! ([`super::view::View`]) that also resolves the file tools' paths.
//!
//! Every exec's process tree ends with the exec: at its timeout, and when its main process exits
//! (background children do not outlive the command that started them). Under bubblewrap each
//! exec has its own PID namespace, so nothing can escape; plain process groups can be escaped by
//! a command that calls `setsid` itself, which is why the plain mode comes with a warning.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::output::Capture;
use super::view::{Mount, SYSTEM_DIRS, View};
use super::{
    CreateOptions, ExecOutput, ExecRequest, InfraClass, Sandbox, SandboxProvider, normalize,
};
use crate::error::{Error, IoContext, Result};
use crate::task::Task;

/// How long the output of a finished exec is drained before it is given up.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// The descriptor on which bubblewrap reports its status (`--json-status-fd`): it writes the
/// sandboxed command's `exit-code` there when the command ends, so an exit without that report
/// is bubblewrap's own failure to set the sandbox up (a bind source missing, no user
/// namespace), never the command's.
const STATUS_FD: i32 = 3;
/// Address space above the task's memory: virtual size exceeds resident memory.
const ADDRESS_SPACE_SLACK_MB: u64 = 1024;
/// The largest file `read_file` returns whole (the runtime's reads: rewards, reports).
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// How long one file operation may take before it is given up (a tool error).
const FILE_OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Run a file operation on a thread of its own, bounded in time. Not `spawn_blocking`: a
/// runtime waits for its blocking tasks when it shuts down, so an operation stuck in the kernel
/// would keep the whole run (and Ctrl-C) waiting; an abandoned thread does not.
async fn file_op<T: Send + 'static>(
    path: &str,
    op: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sandbox-file".into())
        .spawn(move || {
            let _ = tx.send(op());
        })
        .map_err(|e| InfraClass::Sandbox.error(format!("cannot start a file operation: {e}")))?;
    match tokio::time::timeout(FILE_OP_TIMEOUT, rx).await {
        Ok(Ok(r)) => r.map_err(|e| Error::io(path, e)),
        Ok(Err(_)) => Err(Error::Internal(format!(
            "the file operation on {path} panicked"
        ))),
        Err(_) => Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("gave up after {} s", FILE_OP_TIMEOUT.as_secs()),
            ),
        )),
    }
}

#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Run every command inside bubblewrap.
    pub bwrap: bool,
    /// Where trial temp dirs are made (default: the system temp dir).
    pub temp_root: Option<PathBuf>,
    /// RLIMIT_NPROC of commands (not enforced for root).
    pub max_processes: Option<u64>,
    /// Host paths the sandbox must never show (the suite, the harness repository), also when
    /// they lie inside a directory it shows.
    pub hidden: Vec<PathBuf>,
    /// The experiment's choices for the phases' network.
    pub network: super::NetworkPolicy,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            bwrap: bwrap_available(),
            temp_root: None,
            max_processes: Some(4096),
            hidden: Vec::new(),
            network: super::NetworkPolicy::default(),
        }
    }
}

/// Whether `bwrap` is on PATH and can make a least-privilege sandbox here (checked once per
/// process).
pub fn bwrap_available() -> bool {
    privilege_args().is_some()
}

/// A command for a short check of untrusted content (a surface's `check` on a proposer's edit):
/// under bubblewrap, the host's file system read-only, `dir` (where the content is) writable
/// and its working directory, a /tmp of its own, no network, no privileges, an environment of
/// PATH and LANG only. Without bubblewrap, plain bash in `dir` with the same environment: the
/// command is the manifest author's own, and docs/architecture.md says so.
#[allow(
    clippy::disallowed_methods,
    reason = "the sandbox starts its processes: a confined surface check"
)]
pub fn confined_check(dir: &Path, script: &str) -> std::process::Command {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let mut cmd = match privilege_args() {
        Some(privs) => {
            let mut c = std::process::Command::new("bwrap");
            c.args(privs)
                .args(["--die-with-parent", "--new-session"])
                .args([
                    "--unshare-pid",
                    "--unshare-ipc",
                    "--unshare-uts",
                    "--unshare-net",
                ])
                .args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"])
                .args(["--tmpfs", "/tmp"])
                .arg("--bind")
                .arg(dir)
                .arg(dir)
                .arg("--chdir")
                .arg(dir)
                .args(["bash", "-c", script]);
            c
        }
        None => {
            let mut c = std::process::Command::new("bash");
            c.args(["-c", script]).current_dir(dir);
            c
        }
    };
    cmd.env_clear()
        .env("PATH", path)
        .env("LANG", "C.UTF-8")
        .env("HOME", dir);
    cmd
}

/// The bubblewrap arguments that take every privilege away, as far as this machine allows: a
/// user namespace in which no further namespace can be made and no capability is held
/// (`--unshare-user --disable-userns --cap-drop ALL`), else `--cap-drop ALL` alone (no user
/// namespaces here, so `unshare -r` cannot work either). `None` when bubblewrap cannot run.
#[allow(
    clippy::disallowed_methods,
    reason = "the sandbox starts its processes: probing bubblewrap"
)]
fn privilege_args() -> Option<&'static [&'static str]> {
    static ARGS: OnceLock<Option<&'static [&'static str]>> = OnceLock::new();
    *ARGS.get_or_init(|| {
        const CHOICES: [&[&str]; 2] = [
            &["--unshare-user", "--disable-userns", "--cap-drop", "ALL"],
            &["--cap-drop", "ALL"],
        ];
        CHOICES.into_iter().find(|privs| {
            std::process::Command::new("bwrap")
                .args(*privs)
                .args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"])
                .args([
                    "--unshare-pid",
                    "--unshare-net",
                    "--die-with-parent",
                    "true",
                ])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
    })
}

pub struct LocalProvider {
    opts: LocalOptions,
}

impl LocalProvider {
    pub fn new(opts: LocalOptions) -> Self {
        LocalProvider { opts }
    }

    pub fn uses_bwrap(&self) -> bool {
        self.opts.bwrap
    }

    /// Without bubblewrap, commands run on the host filesystem with the host's network: say so
    /// once (the caller prints it).
    pub fn isolation_warning(&self) -> Option<String> {
        (!self.opts.bwrap).then(|| {
            "commands run without bubblewrap: they can read and write the host filesystem and use the \
             network; install bubblewrap (`bwrap`) for isolation"
                .to_string()
        })
    }

    pub async fn create_local(&self, task: &Task, trial_id: &str) -> Result<LocalSandbox> {
        let base = self
            .opts
            .temp_root
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        // The owner in the name lets a later command remove the dir if this process dies
        // without cleaning up (`kill -9`), and never while it lives.
        let tmp = tempfile::Builder::new()
            .prefix(&format!(
                "{TEMP_PREFIX}{}.{}.",
                sanitize(trial_id),
                crate::support::owner::Owner::me()
            ))
            .tempdir_in(&base)
            .at(&base)?;
        let root = tmp.path().to_path_buf();
        for d in [
            "work",
            "tests",
            "logs/verifier",
            "logs/agent",
            "solution",
            "tmp",
        ] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).at(&p)?;
        }
        std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .at(root.join("tmp"))?;
        let task_workdir = task.environment.workdir.clone();
        self.opts.network.refuse_allowlist(task)?;
        let phases = self.opts.network.phases(&task.environment);
        let (workdir, tests, logs, solution) = if self.opts.bwrap {
            (
                task_workdir.clone(),
                "/tests".to_string(),
                "/logs".to_string(),
                "/solution".to_string(),
            )
        } else {
            let s = |d: &str| root.join(d).to_string_lossy().into_owned();
            (s("work"), s("tests"), s("logs"), s("solution"))
        };
        let mut sb = LocalSandbox {
            id: trial_id.to_string(),
            tmp: Some(tmp),
            root: root.clone(),
            bwrap: self.opts.bwrap,
            task_workdir,
            workdir,
            tests,
            logs,
            solution,
            phases,
            network: AtomicBool::new(phases.setup),
            memory_mb: task.environment.memory_mb,
            cpus: task.environment.cpus,
            max_processes: self.opts.max_processes,
            live: Arc::new(Mutex::new(HashSet::new())),
            bwrap_root: Vec::new(),
            view: View::default(),
            extra_ro: Mutex::new(Vec::new()),
        };
        let mut hidden: Vec<String> = self
            .opts
            .hidden
            .iter()
            .chain(std::iter::once(&base))
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        hidden.sort();
        hidden.dedup();
        sb.view = sb.make_view(hidden);
        if sb.bwrap {
            sb.bwrap_root = host_tree_args(&sb.mount_points(), &sb.view.hidden);
        }
        // Seed: environment/workspace/ then environment/setup.sh, per docs/tasks.md.
        if let Some(ws) = &task.workspace_dir {
            copy_tree(ws, &root.join("work"))?;
        }
        if let Some(setup) = &task.setup_script {
            let script = std::fs::read_to_string(setup).at(setup)?;
            let timeout = task
                .environment
                .build_timeout_sec
                .map(Duration::from_secs)
                .unwrap_or(super::SETUP_TIMEOUT);
            let out = sb.exec(ExecRequest::new(script, timeout)).await?;
            if !out.success() {
                let tail = tail(&out.output, 2000);
                let why = if out.timed_out {
                    format!("timed out after {}s", timeout.as_secs())
                } else {
                    format!(
                        "exited with {}",
                        out.exit_code
                            .map(|c| c.to_string())
                            .unwrap_or("a signal".into())
                    )
                };
                sb.destroy().await?;
                return Err(InfraClass::Sandbox.error(format!(
                    "environment/setup.sh of task `{}` {why}:\n{tail}",
                    task.id
                )));
            }
        }
        sb.network.store(sb.phases.agent, Ordering::SeqCst);
        Ok(sb)
    }
}

/// Temp dirs of local sandboxes are `git-harness-<trial>.<owner pid>.<owner start>.<random>`.
const TEMP_PREFIX: &str = "git-harness-";

/// The owner named by a sandbox temp dir's name, when it is one of ours.
fn temp_dir_owner(name: &str) -> Option<crate::support::owner::Owner> {
    let rest = name.strip_prefix(TEMP_PREFIX)?;
    let parts: Vec<&str> = rest.split('.').collect();
    match parts.as_slice() {
        [_trial, pid, start, _random] => {
            crate::support::owner::Owner::parse(&format!("{pid}.{start}"))
        }
        _ => None,
    }
}

/// Remove the sandbox temp dirs under `root` whose owner process has died, first killing every
/// process still running in one or naming one. Returns how many dirs.
pub fn sweep_temp_dirs(root: &Path) -> usize {
    kill_orphans_under(root);
    sweep_temp_dirs_where(root, |o| !o.is_alive())
}

/// Kill this user's processes left in the sandbox temp dirs of dead owners: whose working
/// directory is in one or whose command line names one. The kill -9 of git-harness kills its
/// bubblewraps (their parent-death signal), but bubblewrap forks its sandbox child before it
/// arms that signal in the child, and the child first waits on an eventfd for the outer bwrap
/// to say the uid map is written: an outer bwrap killed in between leaves the child waiting
/// forever, reparented to init. Its command line is the outer one's, binds of the temp dir
/// included.
fn kill_orphans_under(root: &Path) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    let dead: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(temp_dir_owner)
                .is_some_and(|o| !o.is_alive())
        })
        .map(|e| e.path())
        .collect();
    if dead.is_empty() {
        return;
    }
    let Ok(all) = procfs::process::all_processes() else {
        return;
    };
    // SAFETY: plain syscall without arguments.
    let me = unsafe { libc::getuid() };
    let in_dead = |p: &Path| dead.iter().any(|d| p.starts_with(d));
    for p in all.flatten() {
        if p.pid == std::process::id() as i32 || p.uid().ok() != Some(me) {
            continue;
        }
        let named = p
            .cmdline()
            .unwrap_or_default()
            .iter()
            .any(|a| in_dead(Path::new(a)));
        if named || p.cwd().is_ok_and(|c| in_dead(&c)) {
            // SAFETY: plain syscall on a pid just read from /proc.
            unsafe {
                libc::kill(p.pid, libc::SIGKILL);
            }
        }
    }
}

/// Remove this process's own sandbox temp dirs under `root`: only once none is in use (an
/// aborted command, after its runtime and blocking tasks are gone).
pub fn sweep_own_temp_dirs(root: &Path) -> usize {
    let me = crate::support::owner::Owner::me();
    sweep_temp_dirs_where(root, |o| o == me)
}

fn sweep_temp_dirs_where(
    root: &Path,
    pick: impl Fn(crate::support::owner::Owner) -> bool,
) -> usize {
    let Ok(rd) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(owner) = name.to_str().and_then(temp_dir_owner) else {
            continue;
        };
        if !pick(owner) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = e.path();
        if remove_owned_tree(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// `remove_dir_all`, making directories writable first when a task left some read-only.
fn remove_owned_tree(path: &Path) -> std::io::Result<()> {
    if std::fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700));
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    std::fs::remove_dir_all(path)
}

#[async_trait]
impl SandboxProvider for LocalProvider {
    fn network(&self) -> super::NetworkPolicy {
        self.opts.network
    }

    fn name(&self) -> &str {
        if self.opts.bwrap {
            "local (bubblewrap)"
        } else {
            "local (plain)"
        }
    }

    async fn create(&self, task: &Task) -> Result<Box<dyn Sandbox>> {
        self.create_with(task, &CreateOptions::default()).await
    }

    async fn create_with(&self, task: &Task, opts: &CreateOptions) -> Result<Box<dyn Sandbox>> {
        super::auto::refuse_image_steps(task)?;
        let id = opts.trial_id.clone().unwrap_or_else(super::new_trial_id);
        Ok(Box::new(self.create_local(task, &id).await?))
    }

    fn isolation_warning(&self) -> Option<String> {
        LocalProvider::isolation_warning(self)
    }

    async fn sweep(&self) -> Result<usize> {
        let root = self
            .opts
            .temp_root
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        tokio::task::spawn_blocking(move || sweep_temp_dirs(&root))
            .await
            .map_err(|e| Error::Internal(format!("sweep panicked: {e}")))
    }
}

/// One trial's sandbox on this machine. Dropping it without `destroy` still kills its processes
/// and removes its temp dir.
pub struct LocalSandbox {
    id: String,
    tmp: Option<tempfile::TempDir>,
    root: PathBuf,
    bwrap: bool,
    /// The task's workdir (`/app`): where the workspace is mounted under bubblewrap.
    task_workdir: String,
    workdir: String,
    tests: String,
    logs: String,
    solution: String,
    /// Which phases have the network, and whether the current one has.
    phases: super::PhaseNetworks,
    network: AtomicBool,
    memory_mb: Option<u64>,
    cpus: Option<f64>,
    max_processes: Option<u64>,
    /// Process groups of running execs.
    live: Arc<Mutex<HashSet<i32>>>,
    /// bubblewrap arguments that lay out the read-only system directories.
    bwrap_root: Vec<String>,
    /// What the sandbox shows; the file tools resolve paths in it.
    view: View,
    /// Host paths bound read-only into later commands (`host`, `at`), under bubblewrap.
    extra_ro: Mutex<Vec<(PathBuf, String)>>,
}

impl LocalSandbox {
    /// The trial's temp dir on the host.
    pub fn host_root(&self) -> &Path {
        &self.root
    }

    fn mount_points(&self) -> Vec<String> {
        vec![
            self.task_workdir.clone(),
            "/tests".into(),
            "/logs".into(),
            "/solution".into(),
            "/tmp".into(),
            "/var/tmp".into(),
            "/proc".into(),
            "/dev".into(),
            "/run".into(),
        ]
    }

    /// The sandbox's view: under bubblewrap the system directories read-only and the trial's
    /// directories read-write (nothing else of the host); in the plain mode the host read-only
    /// (commands see it anyway) with the trial's directories, under their host paths and their
    /// nominal ones, read-write.
    fn make_view(&self, hidden: Vec<String>) -> View {
        let rw = |at: &str, sub: &str| Mount {
            at: at.to_string(),
            host: self.root.join(sub),
            writable: true,
        };
        let mut mounts = vec![
            rw(&self.task_workdir, "work"),
            rw("/tests", "tests"),
            rw("/logs", "logs"),
            rw("/solution", "solution"),
        ];
        if self.bwrap {
            mounts.push(rw("/tmp", "tmp"));
            mounts.push(rw("/var/tmp", "tmp"));
            for d in SYSTEM_DIRS {
                if Path::new(d).exists() {
                    mounts.push(Mount {
                        at: d.to_string(),
                        host: PathBuf::from(d),
                        writable: false,
                    });
                }
            }
        } else {
            for sub in ["work", "tests", "logs", "solution", "tmp"] {
                mounts.push(rw(&self.root.join(sub).to_string_lossy(), sub));
            }
            mounts.push(Mount {
                at: "/".into(),
                host: PathBuf::from("/"),
                writable: false,
            });
        }
        View { mounts, hidden }
    }

    /// Sandbox path → host path, for the runtime's own copies into the trial's directories.
    fn host_path(&self, path: &str) -> (PathBuf, bool) {
        let p = normalize(&self.workdir, path);
        let mut maps: Vec<(&str, &str)> = vec![
            (&self.workdir, "work"),
            (&self.tests, "tests"),
            (&self.logs, "logs"),
            (&self.solution, "solution"),
            (&self.task_workdir, "work"),
            ("/tests", "tests"),
            ("/logs", "logs"),
            ("/solution", "solution"),
        ];
        if self.bwrap {
            maps.push(("/tmp", "tmp"));
        }
        for (prefix, sub) in maps {
            if let Some(rest) = strip_dir_prefix(&p, prefix) {
                let mut h = self.root.join(sub);
                if !rest.is_empty() {
                    h.push(rest);
                }
                return (h, true);
            }
        }
        (PathBuf::from(p), false)
    }

    #[allow(
        clippy::disallowed_methods,
        reason = "without bubblewrap a trial runs on the host's PATH"
    )]
    fn env(&self, cwd: &str, extra: &[(String, String)]) -> Vec<(String, String)> {
        let path = if self.bwrap {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()
        } else {
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
        };
        let tmp = if self.bwrap {
            "/tmp".to_string()
        } else {
            self.root.join("tmp").to_string_lossy().into_owned()
        };
        let mut env = vec![
            ("PATH".to_string(), path),
            ("HOME".to_string(), tmp.clone()),
            ("TMPDIR".to_string(), tmp),
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("PWD".to_string(), cwd.to_string()),
            ("HARNESS_WORKDIR".to_string(), self.workdir.clone()),
            ("HARNESS_TESTS_DIR".to_string(), self.tests.clone()),
            ("HARNESS_LOGS_DIR".to_string(), self.logs.clone()),
            ("HARNESS_SOLUTION_DIR".to_string(), self.solution.clone()),
        ];
        for (k, v) in extra {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }

    #[allow(
        clippy::disallowed_methods,
        reason = "the sandbox starts its processes: the trial's command"
    )]
    fn command(&self, req: &ExecRequest) -> Result<(tokio::process::Command, Option<StatusPipe>)> {
        let cwd = normalize(
            &self.workdir,
            req.workdir.as_deref().unwrap_or(&self.workdir),
        );
        let mut cmd;
        let mut status = None;
        if self.bwrap {
            let r = |s: &str| self.root.join(s).to_string_lossy().into_owned();
            cmd = tokio::process::Command::new("bwrap");
            let (reader, writer) = std::io::pipe().map_err(|e| Error::io("pipe", e))?;
            cmd.args(["--json-status-fd", &STATUS_FD.to_string()]);
            status = Some(StatusPipe { reader, writer });
            cmd.args(privilege_args().unwrap_or(&["--cap-drop", "ALL"]));
            cmd.args([
                "--die-with-parent",
                "--new-session",
                "--unshare-pid",
                "--unshare-ipc",
                "--unshare-uts",
            ]);
            if !self.network.load(Ordering::SeqCst) {
                cmd.arg("--unshare-net");
            }
            cmd.args(&self.bwrap_root);
            cmd.args(["--proc", "/proc", "--dev", "/dev", "--dir", "/run"]);
            cmd.args(["--bind", &r("tmp"), "/tmp"]);
            cmd.args(["--bind", &r("tmp"), "/var/tmp"]);
            cmd.args(["--bind", &r("work"), &self.task_workdir]);
            cmd.args(["--bind", &r("tests"), "/tests"]);
            cmd.args(["--bind", &r("logs"), "/logs"]);
            cmd.args(["--bind", &r("solution"), "/solution"]);
            if let Ok(extra) = self.extra_ro.lock() {
                for (host, at) in extra.iter() {
                    cmd.arg("--ro-bind").arg(host).arg(at);
                }
            }
            cmd.args(["--remount-ro", "/"]);
            cmd.args(["--chdir", &cwd]);
            cmd.args(["bash", "-c", &req.command]);
        } else {
            let (host_cwd, _) = self.host_path(&cwd);
            cmd = tokio::process::Command::new("bash");
            cmd.args(["-c", &req.command]);
            cmd.current_dir(host_cwd);
        }
        cmd.env_clear();
        cmd.envs(self.env(&cwd, &req.env));
        let cpu_secs =
            (req.timeout.as_secs_f64() * self.cpus.unwrap_or(1.0).max(1.0)).ceil() as u64 + 5;
        let address_mb = self.memory_mb.map(|m| m + ADDRESS_SPACE_SLACK_MB);
        let nproc = self.max_processes;
        let parent = std::process::id() as libc::pid_t;
        let status_fd = status.as_ref().map(|s| {
            use std::os::fd::AsRawFd;
            s.writer.as_raw_fd()
        });
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fd) = status_fd {
                    // bubblewrap's status pipe, at the descriptor its arguments name and
                    // inherited across exec (dup2 clears close-on-exec; a same-fd dup2 does not).
                    if fd == STATUS_FD {
                        libc::fcntl(fd, libc::F_SETFD, 0);
                    } else if libc::dup2(fd, STATUS_FD) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // Die with git-harness, also for bubblewrap: its --die-with-parent is set only
                // once bubblewrap runs, and a git-harness that dies (or aborts on a second
                // signal) between this fork and that moment would leave it running. A parent
                // that is already gone is seen in getppid().
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                if libc::getppid() != parent {
                    libc::_exit(137);
                }
                set_limit(libc::RLIMIT_CPU, cpu_secs);
                set_limit(libc::RLIMIT_CORE, 0);
                if let Some(mb) = address_mb {
                    set_limit(libc::RLIMIT_AS, mb.saturating_mul(1024 * 1024));
                }
                if let Some(n) = nproc {
                    set_limit(libc::RLIMIT_NPROC, n);
                }
                Ok(())
            });
        }
        Ok((cmd, status))
    }

    fn kill_all(&self) {
        let groups: Vec<i32> = self
            .live
            .lock()
            .map(|g| g.iter().copied().collect())
            .unwrap_or_default();
        for g in groups {
            kill_group(g);
        }
    }
}

/// The pipe of bubblewrap's `--json-status-fd`: the child's end until it is spawned, ours.
struct StatusPipe {
    reader: std::io::PipeReader,
    writer: std::io::PipeWriter,
}

/// Whether bubblewrap reported the sandboxed command's exit (`{ "exit-code": N }`; its
/// `child-pid` report comes before the mounts are made, so it proves nothing). Read without
/// blocking once the command has ended: a process the command left in the background may
/// still hold the write end.
fn command_ran(reader: std::io::PipeReader) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor this function owns.
    unsafe {
        let fd = reader.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let mut reader = reader;
    let mut text = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 || text.len() > 64 * 1024 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&text).contains("\"exit-code\"")
}

fn set_limit(resource: libc::__rlimit_resource_t, value: u64) {
    let lim = libc::rlimit {
        rlim_cur: value as libc::rlim_t,
        rlim_max: value as libc::rlim_t,
    };
    // SAFETY: setrlimit with a valid pointer; lowering limits cannot fail for lack of privilege.
    unsafe {
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(resource, &mut cur) == 0 && cur.rlim_max < lim.rlim_max {
            let lowered = libc::rlimit {
                rlim_cur: cur.rlim_max.min(lim.rlim_cur),
                rlim_max: cur.rlim_max,
            };
            libc::setrlimit(resource, &lowered);
        } else {
            libc::setrlimit(resource, &lim);
        }
    }
}

fn kill_group(pgid: i32) {
    if pgid > 1 {
        // SAFETY: plain syscall; a negative pid addresses the process group.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// Kills an exec's process group when the exec future is dropped (timeout of a caller, Ctrl-C).
struct GroupGuard {
    pgid: i32,
    live: Arc<Mutex<HashSet<i32>>>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.pgid);
        if let Ok(mut g) = self.live.lock() {
            g.remove(&self.pgid);
        }
    }
}

#[async_trait]
impl Sandbox for LocalSandbox {
    fn workdir(&self) -> &str {
        &self.workdir
    }

    async fn workdir_fingerprint(&self) -> Result<Option<String>> {
        let dir = self.root.join("work");
        tokio::task::spawn_blocking(move || tree_fingerprint(&dir).map(Some))
            .await
            .map_err(|e| Error::Internal(format!("fingerprint task panicked: {e}")))?
    }

    async fn exec(&self, req: ExecRequest) -> Result<ExecOutput> {
        if self.tmp.is_none() {
            return Err(InfraClass::Sandbox.error("exec in a destroyed sandbox"));
        }
        let started = Instant::now();
        let (mut cmd, status) = self.command(&req)?;
        let (mut reader, writer) = std::io::pipe().map_err(|e| Error::io("pipe", e))?;
        let writer2 = writer.try_clone().map_err(|e| Error::io("pipe", e))?;
        cmd.stdin(std::process::Stdio::null())
            .stdout(writer)
            .stderr(writer2);
        cmd.kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            // The command itself is too long for the kernel (a single argument is limited to
            // 128 KiB): the caller's input, answered as a shell answers an exec that fails.
            Err(e) if e.raw_os_error() == Some(libc::E2BIG) => {
                return Ok(ExecOutput {
                    exit_code: Some(126),
                    output: format!(
                        "the command is {} bytes, too long to run ({e}); write it to a file and run that",
                        req.command.len()
                    ),
                    truncated: false,
                    timed_out: false,
                    duration_ms: started.elapsed().as_millis() as u64,
                });
            }
            Err(e) => {
                return Err(InfraClass::Sandbox.error(format!("cannot start a command: {e}")));
            }
        };
        // Our copies of the pipe's write end must close, or the reader never sees EOF.
        drop(cmd);
        let bwrap_status = status.map(|s| {
            drop(s.writer);
            s.reader
        });
        let pgid = child.id().map(|p| p as i32).unwrap_or(0);
        if let Ok(mut g) = self.live.lock() {
            g.insert(pgid);
        }
        let guard = GroupGuard {
            pgid,
            live: self.live.clone(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut cap = Capture::default();
            let mut buf = [0u8; 8192];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => cap.push(&buf[..n]),
                }
            }
            let _ = tx.send(cap.finish());
        });
        let waited = tokio::time::timeout(req.timeout, child.wait()).await;
        let timed_out = waited.is_err();
        // The exec's whole tree ends with it: at the timeout and when the main process exits.
        kill_group(pgid);
        let status = match waited {
            Ok(s) => s,
            Err(_) => child.wait().await,
        }
        .map_err(|e| InfraClass::Sandbox.error(format!("cannot wait for a command: {e}")))?;
        drop(guard);
        let (output, truncated) = match tokio::time::timeout(DRAIN_GRACE, rx).await {
            Ok(Ok(o)) => o,
            _ => (
                "[output unavailable: a process escaped the process group]".to_string(),
                false,
            ),
        };
        let exit_code = if timed_out { None } else { status.code() };
        if !timed_out
            && let Some(reader) = bwrap_status
            && !command_ran(reader)
        {
            return Err(InfraClass::Sandbox.error(format!(
                "bubblewrap could not set up the sandbox (exit {}): {}",
                exit_code.map_or("-".to_string(), |c| c.to_string()),
                output.trim()
            )));
        }
        Ok(ExecOutput {
            exit_code,
            output,
            truncated,
            timed_out,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let (data, size) = self.read_file_capped(path, MAX_FILE_BYTES).await?;
        if size > data.len() as u64 {
            return Err(Error::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    format!("is larger than {MAX_FILE_BYTES} bytes"),
                ),
            ));
        }
        Ok(data)
    }

    async fn read_file_capped(&self, path: &str, limit: u64) -> Result<(Vec<u8>, u64)> {
        let (view, cwd, p) = (self.view.clone(), self.workdir.clone(), path.to_string());
        file_op(path, move || view.read(&cwd, &p, limit)).await
    }

    async fn write_file(&self, path: &str, data: &[u8]) -> Result<()> {
        let (view, cwd, p) = (self.view.clone(), self.workdir.clone(), path.to_string());
        let data = data.to_vec();
        file_op(path, move || view.write(&cwd, &p, &data)).await
    }

    async fn copy_dir_in(&self, host_dir: &Path, dest: &str) -> Result<()> {
        let (h, writable) = self.host_path(dest);
        if !writable {
            return Err(Error::usage(format!("{dest} is read-only in the sandbox")));
        }
        let src = host_dir.to_path_buf();
        tokio::task::spawn_blocking(move || copy_tree(&src, &h))
            .await
            .map_err(|e| Error::Internal(format!("copy task panicked: {e}")))?
    }

    async fn reset_dirs(&self, dirs: &[&str]) -> Result<()> {
        // From the host, with the runtime's rights: inside bubblewrap, without capabilities, a
        // directory the agent made read-only could not be emptied.
        let mut host = Vec::new();
        for d in dirs {
            let (h, writable) = self.host_path(d);
            if !writable || !h.starts_with(&self.root) {
                return Err(Error::Internal(format!(
                    "{d} is not a directory of the trial"
                )));
            }
            host.push(h);
        }
        tokio::task::spawn_blocking(move || {
            for h in host {
                remove_tree(&h)?;
                std::fs::create_dir_all(&h).at(&h)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal(format!("reset task panicked: {e}")))?
        .map_err(|e: Error| {
            InfraClass::Sandbox.error(format!("clear the verifier's directories: {e}"))
        })
    }

    async fn destroy(&mut self) -> Result<()> {
        self.kill_all();
        if let Some(t) = self.tmp.take() {
            let path = t.path().to_path_buf();
            tokio::task::spawn_blocking(move || t.close())
                .await
                .map_err(|e| Error::Internal(format!("cleanup panicked: {e}")))?
                .at(path)?;
        }
        Ok(())
    }

    fn tests_dir(&self) -> &str {
        &self.tests
    }
    fn logs_dir(&self) -> &str {
        &self.logs
    }
    fn solution_dir(&self) -> &str {
        &self.solution
    }
    fn trial_id(&self) -> &str {
        &self.id
    }
    /// Each exec is a new bubblewrap: the next ones get the phase's network namespace (the
    /// host's, or one of their own with only loopback). Without bubblewrap commands always have
    /// the host's network.
    async fn set_phase(&self, phase: super::Phase) -> Result<()> {
        self.network.store(self.phases.get(phase), Ordering::SeqCst);
        Ok(())
    }

    async fn show_read_only(&self, host_dir: &Path, at: &str) -> Result<String> {
        if !self.bwrap {
            // Commands see the host anyway; they read the directory where it is.
            return Ok(host_dir.to_string_lossy().into_owned());
        }
        self.bind_ro(host_dir, at);
        Ok(at.to_string())
    }

    async fn hide_read_only(&self) {
        if let Ok(mut extra) = self.extra_ro.lock() {
            extra.clear();
        }
    }

    async fn gateway_route(&self, gw: &super::GatewayEndpoints) -> Result<super::GatewayRoute> {
        if !self.bwrap || self.network.load(Ordering::SeqCst) {
            // The host's network namespace: the gateway's loopback port is right there.
            return Ok(super::GatewayRoute {
                base_url: format!("http://{}", gw.tcp),
                prelude: None,
            });
        }
        // A network namespace of its own with only a loopback: the gateway's socket and this
        // binary go in read-only, and a forwarder relays the loopback port to the socket.
        let exe = crate::sandbox::tunnel::helper_binary()
            .map_err(|e| InfraClass::Sandbox.error(format!("cannot find this program: {e}")))?;
        let dir = "/run/git-harness";
        let socket = format!("{dir}/{}", crate::sandbox::tunnel::SOCKET_NAME);
        let bin = format!("{dir}/git-harness");
        self.bind_ro(&gw.socket, &socket);
        self.bind_ro(&exe, &bin);
        let port = FORWARD_PORT;
        let prelude = format!(
            "{bin} __forward {socket} {port} </dev/null >/dev/null 2>&1 &\n\
             for _ in $(seq 1000); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.01; done"
        );
        Ok(super::GatewayRoute {
            base_url: format!("http://127.0.0.1:{port}"),
            prelude: Some(prelude),
        })
    }
}

/// The loopback port the gateway forwarder listens on inside a sandbox without a network.
pub const FORWARD_PORT: u16 = 4100;

impl LocalSandbox {
    fn bind_ro(&self, host: &Path, at: &str) {
        if let Ok(mut extra) = self.extra_ro.lock()
            && !extra.iter().any(|(_, a)| a == at)
        {
            extra.push((host.to_path_buf(), at.to_string()));
        }
    }
}

impl Drop for LocalSandbox {
    fn drop(&mut self) {
        self.kill_all();
        // TempDir's own Drop removes the directory.
    }
}

fn strip_dir_prefix<'a>(path: &'a str, dir: &str) -> Option<&'a str> {
    let dir = dir.trim_end_matches('/');
    if dir.is_empty() {
        return Some(path.trim_start_matches('/'));
    }
    let rest = path.strip_prefix(dir)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect()
}

fn tail(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut i = s.len() - n;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// bubblewrap arguments that bind the system directories read-only (`SYSTEM_DIRS`) and nothing
/// else of the host. A directory on the way to a mount point or a hidden path is recreated on
/// the sandbox's tmpfs root and its other entries are bound one by one, so `/app` can be
/// mounted although it does not exist on the host, and a suite under `/usr/local` stays unseen.
fn host_tree_args(mounts: &[String], hidden: &[String]) -> Vec<String> {
    let skip: Vec<String> = mounts.iter().chain(hidden).cloned().collect();
    let mut args = Vec::new();
    for d in SYSTEM_DIRS {
        bind_entry(Path::new(d), &skip, &mut args);
    }
    args
}

fn bind_entry(p: &Path, skip: &[String], args: &mut Vec<String>) {
    let s = p.to_string_lossy().into_owned();
    if skip.contains(&s) {
        return;
    }
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return;
    };
    if meta.file_type().is_symlink() {
        if let Ok(t) = std::fs::read_link(p) {
            args.extend(["--symlink".into(), t.to_string_lossy().into_owned(), s]);
        }
    } else if meta.is_dir()
        && skip
            .iter()
            .any(|m| strip_dir_prefix(m, &s).is_some_and(|r| !r.is_empty()))
    {
        args.extend(["--dir".into(), s.clone()]);
        let Ok(rd) = std::fs::read_dir(p) else {
            return;
        };
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        entries.sort();
        for e in entries {
            bind_entry(&e, skip, args);
        }
    } else if meta.is_dir() || meta.is_file() {
        args.extend(["--ro-bind".into(), s.clone(), s]);
    }
}

/// Remove a tree the agent may have made hard to remove: directories are given write
/// permission before their entries go (never following a symlink: a link is removed, not its
/// target).
fn remove_tree(p: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return Ok(());
    };
    if meta.is_dir() {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).at(p)?;
        for e in std::fs::read_dir(p).at(p)? {
            remove_tree(&e.at(p)?.path())?;
        }
        std::fs::remove_dir(p).at(p)
    } else {
        std::fs::remove_file(p).at(p)
    }
}

/// Copy a directory tree (files with their modes, symlinks as symlinks) into `dst`.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).at(dst)?;
    for e in std::fs::read_dir(src).at(src)? {
        let e = e.at(src)?;
        let from = e.path();
        let to = dst.join(e.file_name());
        let meta = std::fs::symlink_metadata(&from).at(&from)?;
        if meta.file_type().is_symlink() {
            let t = std::fs::read_link(&from).at(&from)?;
            let _ = std::fs::remove_file(&to);
            std::os::unix::fs::symlink(t, &to).at(&to)?;
        } else if meta.is_dir() {
            copy_tree(&from, &to)?;
        } else {
            std::fs::copy(&from, &to).at(&to)?;
            std::fs::set_permissions(&to, meta.permissions()).at(&to)?;
        }
    }
    Ok(())
}

/// The most entries a working-tree fingerprint reads: past it the tree counts as changed
/// whenever its first entries do.
const FINGERPRINT_ENTRIES: usize = 200_000;

/// Paths, sizes and mtimes of the regular files under `dir` (as `find . -xdev -maxdepth 6` with
/// `.git` and `node_modules` pruned, links not followed), hashed.
pub fn tree_fingerprint(dir: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::symlink_metadata(dir).at(dir)?.dev();
    let mut lines = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if lines.len() >= FINGERPRINT_ENTRIES {
                break;
            }
            let name = e.file_name();
            if name == ".git" || name == "node_modules" {
                continue;
            }
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            let rel = e.path();
            let rel = rel
                .strip_prefix(dir)
                .unwrap_or(&rel)
                .to_string_lossy()
                .into_owned();
            if m.is_file() {
                lines.push(format!(
                    "{rel} {} {}.{}",
                    m.size(),
                    m.mtime(),
                    m.mtime_nsec()
                ));
            } else if m.is_dir() && depth + 1 < 6 && m.dev() == dev {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    lines.sort();
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l.as_bytes());
        h.update([b'\n']);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_prefixes() {
        assert_eq!(strip_dir_prefix("/app/x", "/app"), Some("x"));
        assert_eq!(strip_dir_prefix("/app", "/app"), Some(""));
        assert_eq!(strip_dir_prefix("/apple", "/app"), None);
    }

    #[test]
    fn hidden_paths_under_system_dirs_are_not_bound() {
        let args = host_tree_args(&["/app".into()], &["/usr/share".into()]);
        let pairs: Vec<(&str, &str)> = args
            .iter()
            .zip(args.iter().skip(1))
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert!(pairs.contains(&("--dir", "/usr")), "{args:?}");
        assert!(pairs.contains(&("--ro-bind", "/usr/bin")), "{args:?}");
        assert!(
            !args.iter().any(|a| a.starts_with("/usr/share")),
            "{args:?}"
        );
        assert!(
            !args
                .iter()
                .any(|a| a == "/root" || a == "/run" || a == "/tmp")
        );
    }
}
