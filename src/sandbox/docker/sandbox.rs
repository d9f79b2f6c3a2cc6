//! One trial's container: commands through the exec API, files through the archive API.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::overlay::Change;
use super::{BRIDGE, api_call, archive_err, docker_err, is_not_found, timed};
use crate::error::{Error, IoContext, Result};
use crate::sandbox::image::tar_dir;
use crate::sandbox::output::Capture;
use crate::sandbox::tunnel::TUNNEL_DIR;
use crate::sandbox::{ExecOutput, ExecRequest, InfraClass, Sandbox, normalize};
use bollard::models::{NetworkConnectRequest, NetworkDisconnectRequest};

/// How long output is still read after a timeout kill.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Runs a command in `$1` and reports how it ended on the exec's own stdout, so no inspect of the
/// exec is needed; one shell process besides the command's. The command is `$2` (the exec's
/// argv), or, when `$2` is empty, read from stdin into a file first (a command too large for
/// argv); further arguments are directories to make first (the runtime's, on the container's
/// first exec).
///
/// A per-exec nonce arrives first on stdin and stays in a variable of this shell (never in
/// argv, the environment or a file, all of which the command could read): the records
/// `\x1egh<nonce> pid <pid>` (before the command) and `\x1egh<nonce> rc <status>` (after it) are
/// the only text the host takes as the wrapper's. A command that prints such text, closes its
/// output or kills this shell cannot forge a status: without the record the command counts as
/// killed by a signal. (Its variables have a prefix of their own and are never exported.)
///
/// The exec is its process group's leader (the runtime starts it as a new session), and the
/// command runs in the foreground as a child in that group, so it sees the default signal
/// dispositions (a non-interactive shell starts background jobs with SIGINT and SIGQUIT
/// ignored); after the status record, `kill -KILL 0` ends the group, this shell last, so the
/// command's background children do not outlive it; a timeout kills the group by the pid
/// record from a second exec. The interpreters are named by absolute path: an agent's PATH
/// cannot replace them. Builtins only on the usual path (`read`, `printf`, `[`, `cd`, `kill`).
const WRAPPER: &str = r#"unset ghx_n; IFS= read -r ghx_n || exit 125
printf '\036gh%s pid %s\n' "$ghx_n" "$$"
ghx_w=$1; ghx_c=$2; shift 2
[ $# = 0 ] || mkdir -p "$@" 2>/dev/null
ghx_s=/bin/sh; [ -x /bin/bash ] && ghx_s=/bin/bash
ghx_f=; ghx_r=
if [ -z "$ghx_c" ]; then
  ghx_f=/tmp/.git-harness-exec/$$.sh
  [ -d /tmp/.git-harness-exec ] || mkdir -p /tmp/.git-harness-exec 2>/dev/null
  cat > "$ghx_f" || { echo "git-harness: cannot store the command in $ghx_f (disk full or /tmp unusable?)" >&2; ghx_r=126; }
fi
if [ -n "$ghx_r" ]; then :
elif ! cd "$ghx_w" 2>/dev/null; then echo "git-harness: no such directory: $ghx_w" >&2; ghx_r=126
elif [ -n "$ghx_f" ]; then "$ghx_s" "$ghx_f" </dev/null; ghx_r=$?
else "$ghx_s" -c "$ghx_c" "$ghx_s" </dev/null; ghx_r=$?
fi
[ -n "$ghx_f" ] && rm -f "$ghx_f"
printf '\036gh%s rc %s\n' "$ghx_n" "$ghx_r"
kill -KILL 0
exit "$ghx_r""#;

/// Commands up to this size travel in the exec's argv (the kernel's limit for one argument is
/// 128 KiB); larger ones on stdin, through a file.
const ARGV_COMMAND_MAX: usize = 64 * 1024;

/// The wrapper's records in an exec's stdout, taken out of the output as it streams by (across
/// chunk boundaries): the wrapper's pid (its process group) and the command's status.
struct Records {
    mark: Vec<u8>,
    pending: Vec<u8>,
    pid: Option<u32>,
    status: Option<i32>,
}

impl Records {
    /// A record longer than this is none of the wrapper's.
    const MAX: usize = 64;

    fn new(nonce: &str) -> Self {
        Records {
            mark: format!("\x1egh{nonce} ").into_bytes(),
            pending: Vec::new(),
            pid: None,
            status: None,
        }
    }

    /// Feed stdout bytes; everything that is not a record goes on to `cap`.
    fn push(&mut self, data: &[u8], cap: &mut Capture) {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        loop {
            let buf = &self.pending[start..];
            let Some(i) = buf.windows(self.mark.len()).position(|w| w == self.mark) else {
                // Hold back a tail that may be the beginning of a record.
                let keep = (1..self.mark.len().min(buf.len() + 1))
                    .rev()
                    .find(|&k| buf.ends_with(&self.mark[..k]))
                    .unwrap_or(0);
                cap.push(&buf[..buf.len() - keep]);
                start += buf.len() - keep;
                break;
            };
            cap.push(&buf[..i]);
            let rest = &buf[i + self.mark.len()..];
            match rest.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    let record = String::from_utf8_lossy(&rest[..nl]).into_owned();
                    self.record(&record);
                    start += i + self.mark.len() + nl + 1;
                }
                None if rest.len() > Self::MAX => {
                    cap.push(&buf[i..i + self.mark.len()]);
                    start += i + self.mark.len();
                }
                None => {
                    start += i;
                    break;
                }
            }
        }
        self.pending.drain(..start);
    }

    fn record(&mut self, r: &str) {
        if let Some(p) = r.strip_prefix("pid ") {
            self.pid = p.trim().parse().ok().filter(|&p| p > 1);
        } else if let Some(s) = r.strip_prefix("rc ") {
            self.status = s.trim().parse().ok();
        }
    }

    /// One chunk of the exec's output: stdout through the records, stderr straight to `cap`.
    fn take(&mut self, chunk: bollard::container::LogOutput, cap: &mut Capture) {
        match chunk {
            bollard::container::LogOutput::StdOut { message } => self.push(&message, cap),
            other => cap.push(&other.into_bytes()),
        }
    }

    /// Whatever was held back goes to `cap`.
    fn finish(&mut self, cap: &mut Capture) {
        cap.push(&self.pending);
        self.pending.clear();
    }
}

/// One trial's container. Dropping it without `destroy` still removes the container (force).
pub struct DockerSandbox {
    pub(super) docker: Docker,
    pub(super) id: String,
    pub(super) trial: String,
    pub(super) workdir: String,
    pub(super) destroyed: bool,
    /// The image's PATH: the verifier's, whatever the agent did.
    pub(super) path_env: String,
    /// Which phases have the network.
    pub(super) phases: crate::sandbox::PhaseNetworks,
    /// What becomes of the agent's leftover processes when the verifier starts.
    pub(super) strays: crate::experiment::Strays,
    /// Whether the container is on the bridge now.
    pub(super) connected: tokio::sync::Mutex<bool>,
    /// Directories `reset_dirs` asked for, reset by the next exec (see [`Pending`]).
    pub(super) pending: Mutex<Option<Pending>>,
    /// What the exec of `kill_strays` learned, for `toolchain_changes`.
    pub(super) after_kill: Mutex<Option<AfterKill>>,
    /// The host side of the model gateway's tunnel, while an agent may use it.
    pub(super) tunnel: std::sync::Mutex<Option<crate::sandbox::tunnel::TunnelHandle>>,
    /// Made from an image on which the harness's `agent.install` ran.
    pub(super) installed: bool,
    /// The runtime's directories while not yet made: the first upload or exec makes them, so
    /// they cost no call of their own.
    pub(super) runtime_dirs: Mutex<Option<&'static [&'static str]>>,
    /// The container's storage (its overlay directories), inspected once while the trial runs
    /// so that the toolchain check does not wait for it.
    pub(super) graph: tokio::sync::Mutex<Graph>,
}

/// The container's storage driver data: being inspected, or known (`None`: unknown).
pub(super) enum Graph {
    Inspecting(tokio::task::JoinHandle<Option<bollard::models::DriverData>>),
    Known(Option<bollard::models::DriverData>),
}

impl Graph {
    /// Inspect the container `id` on a task of its own.
    pub(super) fn inspect(docker: &Docker, id: &str) -> Self {
        let (d, id) = (docker.clone(), id.to_string());
        Graph::Inspecting(tokio::spawn(async move {
            timed("container inspect", d.inspect_container(&id, None))
                .await
                .ok()
                .and_then(|i| i.graph_driver)
        }))
    }
}

/// A reset of directories folded into the next exec, so that it costs no exec of its own:
/// files copied into them meanwhile wait under `stage` (a fresh random path at the root) and
/// are moved in when the directories are reset.
pub(super) struct Pending {
    dirs: Vec<String>,
    stage: String,
}

/// What the exec that ended the stray processes found.
pub(super) enum AfterKill {
    /// The container no longer runs.
    Stopped,
    /// The PATH directories as the container resolved them, by the image's shell builtins
    /// after the strays were gone (trusted only when no fixed toolchain path changed).
    PathDirs(Vec<String>),
}

/// The script that kills the process group of the exec keyed `key` through the pid file the
/// exec wrapper writes (waiting up to 2 s for it), run as a second exec by the Kubernetes runner.
pub(crate) fn kill_exec_script(key: &str) -> String {
    format!(
        "f=/tmp/.git-harness-exec/{key}.pid; for i in 1 2 3 4 5 6 7 8 9 10; do \
         if [ -s $f ]; then p=$(cat $f); kill -KILL -$p 2>/dev/null || kill -KILL $p 2>/dev/null; exit 0; fi; \
         sleep 0.2; done; exit 1"
    )
}

/// The scan both stray kills start with: the processes to keep besides docker-init (1), this
/// shell and its wrapper (`$PPID`) are the container's `sleep infinity`, the child of 1 that
/// started first (field 22 of `/proc/PID/stat`; orphans the agent left are also children of 1,
/// but started later), all in `gh_keep`; `gh_sig SIG` signals every other process. Builtins
/// only: nothing new starts while the agent's processes are found and ended.
macro_rules! strays_scan {
    () => {
        r#"gh_k=; gh_ks=
for d in /proc/[0-9]*; do p=${d#/proc/}
  case " 1 $$ $PPID " in *" $p "*) continue;; esac
  read -r st < "$d/stat" 2>/dev/null || continue
  set -- ${st##*) }
  [ "$2" = 1 ] || continue
  if [ -z "$gh_k" ] || [ "${20}" -lt "$gh_ks" ]; then gh_k=$p; gh_ks=${20}; fi
done
gh_keep=" 1 $$ $PPID $gh_k "
gh_sig() {
  for d in /proc/[0-9]*; do p=${d#/proc/}
    case "$gh_keep" in *" $p "*) continue;; esac
    kill "-$1" "$p" 2>/dev/null
  done
}
"#
    };
}

/// Starts the `kill_strays` script: every process but the kept ones of the scan is killed,
/// then the caller's part follows `--- path`.
pub(crate) const KILL_STRAYS: &str = concat!(strays_scan!(), "gh_sig KILL\necho '--- path'\n");

/// The verifier's exec, before its command (see `run_verifier`): the scan, then processes the
/// agent left (`gh_any`) are stopped at once; [`VERIFY_KILL`] follows under
/// `runner.strays: kill`, else they stay stopped while the verifier's directories are made and
/// the tests unpacked, then go on: a Harbor task's tests may query a server the agent started.
const VERIFY_PRE: &str = concat!(
    strays_scan!(),
    r#"gh_any=
for d in /proc/[0-9]*; do p=${d#/proc/}
  case "$gh_keep" in *" $p "*) continue;; esac
  [ -e "$d/stat" ] && { gh_any=1; break; }
done
if [ -n "$gh_any" ]; then gh_sig STOP; gh_sig STOP; fi
"#
);

/// `runner.strays: kill` (the default): the processes the agent left, stopped by `VERIFY_PRE`,
/// are killed before anything of the verifier's is in the container, so none of them can
/// rewrite the tests or write the results; with none left, `VERIFY_POST` has nothing to watch.
const VERIFY_KILL: &str = r#"if [ -n "$gh_any" ]; then gh_sig KILL; gh_sig KILL; gh_any=; fi
"#;

/// After the verifier's command (`gh_rc`): when processes of the agent ran beside it, the log dir
/// is moved aside at once and watched for 50 ms under its name while they still run; anything
/// written there meanwhile is a stray writing the verifier's results (`wrote NAME`). Then every
/// process but the kept ones is stopped and killed, and the log dir moved back: nothing can
/// change the results once the command is over.
const VERIFY_POST: &str = r#"gh_w=
if [ -n "$gh_any" ] && mv -- "$gh_v" "$gh_a" 2>/dev/null; then
  mkdir -p -- "$gh_v" 2>/dev/null
  sleep 0.05 2>/dev/null
  gh_sig STOP; gh_sig STOP
  for f in "$gh_v"/* "$gh_v"/.[!.]* "$gh_v"/..?*; do
    if [ -e "$f" ] || [ -L "$f" ]; then gh_w="$gh_w ${f##*/}"; fi
  done
  gh_sig KILL; gh_sig KILL
  rm -rf -- "$gh_v"; mv -- "$gh_a" "$gh_v"
fi
gh_sig STOP; gh_sig STOP; gh_sig KILL; gh_sig KILL
"#;

impl DockerSandbox {
    pub fn container_id(&self) -> &str {
        &self.id
    }

    pub(super) async fn exec_raw(
        &self,
        command: &str,
        timeout: Duration,
        cwd: &str,
        env: &[(String, String)],
    ) -> Result<ExecOutput> {
        let started = Instant::now();
        let nonce = format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        let mut envs = vec![
            format!("HARNESS_WORKDIR={}", self.workdir),
            "HARNESS_TESTS_DIR=/tests".to_string(),
            "HARNESS_LOGS_DIR=/logs".to_string(),
            "HARNESS_SOLUTION_DIR=/solution".to_string(),
        ];
        envs.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        // Small commands ride in argv; stdin then carries the nonce alone.
        let in_argv =
            !command.is_empty() && command.len() <= ARGV_COMMAND_MAX && !command.contains('\0');
        let mut cmd = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            WRAPPER.to_string(),
            "git-harness-exec".to_string(),
            cwd.to_string(),
            if in_argv {
                command.to_string()
            } else {
                String::new()
            },
        ];
        cmd.extend(self.take_runtime_dirs().iter().map(|d| d.to_string()));
        let created = timed(
            "exec create",
            self.docker.create_exec(
                &self.id,
                CreateExecOptions {
                    cmd: Some(cmd),
                    env: Some(envs),
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    working_dir: Some("/".to_string()),
                    ..Default::default()
                },
            ),
        )
        .await;
        // Only the agent's commands run in the container: when it stopped (its main process
        // was killed, or it ran out of memory), that is the agent's doing, and the command fails
        // like one killed by a signal.
        let stopped = || ExecOutput {
            exit_code: None,
            output: format!("git-harness: {STOPPED}; nothing more can run in it\n"),
            duration_ms: started.elapsed().as_millis() as u64,
            ..Default::default()
        };
        let created = match created {
            Ok(c) => c,
            Err(_) if self.stopped().await => return Ok(stopped()),
            Err(e) => return Err(docker_err("create an exec", e)),
        };
        let started_exec = timed(
            "exec start",
            self.docker.start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            ),
        )
        .await;
        let running = Instant::now();
        let started_exec = match started_exec {
            Ok(s) => s,
            Err(_) if self.stopped().await => return Ok(stopped()),
            Err(e) => return Err(docker_err("start an exec", e)),
        };
        let StartExecResults::Attached {
            mut output,
            mut input,
        } = started_exec
        else {
            return Err(InfraClass::Sandbox.error("exec started detached"));
        };
        let mut cap = Capture::default();
        let mut records = Records::new(&nonce);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut timed_out = false;
        // The wrapper reads the nonce (and a large command) before it runs anything; closing
        // stdin ends what it reads.
        let sent = tokio::time::timeout_at(deadline, async {
            input.write_all(format!("{nonce}\n").as_bytes()).await?;
            if !in_argv {
                input.write_all(command.as_bytes()).await?;
            }
            input.shutdown().await
        })
        .await;
        drop(input);
        match sent {
            Ok(Ok(())) => {}
            // The wrapper exits early (e.g. it could not store the command): its output says why.
            Ok(Err(_)) => {}
            Err(_) => timed_out = true,
        }
        while !timed_out {
            match tokio::time::timeout_at(deadline, output.next()).await {
                Ok(Some(Ok(chunk))) => records.take(chunk, &mut cap),
                Ok(Some(Err(e))) => return Err(docker_err("read exec output", e)),
                Ok(None) => break,
                Err(_) => {
                    timed_out = true;
                    break;
                }
            }
        }
        if timed_out {
            let grace = tokio::time::Instant::now() + DRAIN_GRACE;
            let mut killed = false;
            loop {
                // The pid record comes first; a wrapper slower than the timeout is killed once
                // it has told its pid.
                if !killed && let Some(pid) = records.pid {
                    self.kill_group(pid).await;
                    killed = true;
                }
                match tokio::time::timeout_at(grace, output.next()).await {
                    Ok(Some(Ok(chunk))) => records.take(chunk, &mut cap),
                    _ => break,
                }
            }
        }
        drop(output);
        records.finish(&mut cap);
        api_call("exec stream", running);
        let (output, truncated) = cap.finish();
        Ok(ExecOutput {
            exit_code: if timed_out { None } else { records.status },
            output,
            truncated,
            timed_out,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Kill the process group `pid` leads (an exec's wrapper and its command) from a second
    /// exec.
    async fn kill_group(&self, pid: u32) {
        let script =
            format!("kill -KILL -{pid} 2>/dev/null || kill -KILL {pid} 2>/dev/null; exit 0");
        let Ok(created) = self
            .docker
            .create_exec(
                &self.id,
                CreateExecOptions {
                    cmd: Some(vec!["/bin/sh".to_string(), "-c".to_string(), script]),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
        else {
            return;
        };
        if let Ok(StartExecResults::Attached { mut output, .. }) =
            self.docker.start_exec(&created.id, None).await
        {
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                while output.next().await.is_some() {}
            })
            .await;
        }
    }

    async fn remove(&mut self) -> Result<()> {
        if self.destroyed {
            return Ok(());
        }
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match timed(
            "container delete",
            self.docker.remove_container(&self.id, Some(opts)),
        )
        .await
        {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(docker_err(&format!("remove container {}", self.id), e)),
        }
        self.destroyed = true;
        Ok(())
    }
}

#[async_trait]
impl Sandbox for DockerSandbox {
    fn workdir(&self) -> &str {
        &self.workdir
    }

    async fn exec(&self, req: ExecRequest) -> Result<ExecOutput> {
        if self.destroyed {
            return Err(InfraClass::Sandbox.error("exec in a destroyed sandbox"));
        }
        let cwd = normalize(
            &self.workdir,
            req.workdir.as_deref().unwrap_or(&self.workdir),
        );
        let command = self.with_pending(&req.command)?;
        self.exec_raw(&command, req.timeout, &cwd, &req.env).await
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        self.flush_pending().await?;
        let p = normalize(&self.workdir, path);
        let opts = DownloadFromContainerOptionsBuilder::default()
            .path(&p)
            .build();
        let t = Instant::now();
        let mut stream = self.docker.download_from_container(&self.id, Some(opts));
        let mut tar_bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => tar_bytes.extend_from_slice(&c),
                Err(e) if is_not_found(&e) => {
                    return Err(Error::io(
                        &p,
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "no such file in the sandbox",
                        ),
                    ));
                }
                Err(e) => return Err(archive_err(&p, e)),
            }
        }
        api_call("archive get", t);
        let mut ar = tar::Archive::new(&tar_bytes[..]);
        let mut entries = ar.entries().at(&p)?;
        let Some(entry) = entries.next() else {
            return Err(Error::io(
                &p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "empty archive"),
            ));
        };
        let mut entry = entry.at(&p)?;
        if !entry.header().entry_type().is_file() {
            return Err(Error::io(&p, std::io::Error::other("not a regular file")));
        }
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).at(&p)?;
        Ok(data)
    }

    async fn write_file(&self, path: &str, data: &[u8]) -> Result<()> {
        let p = self.staged(&normalize(&self.workdir, path));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, p.trim_start_matches('/'), data)
            .at(&p)?;
        let tar = b.into_inner().at(&p)?;
        self.upload(tar, &p).await
    }

    async fn copy_dir_in(&self, host_dir: &Path, dest: &str) -> Result<()> {
        let d = self.staged(&normalize(&self.workdir, dest));
        let tar = tar_dir(host_dir, d.trim_start_matches('/'))?;
        self.upload(tar, &d).await
    }

    async fn destroy(&mut self) -> Result<()> {
        self.remove().await
    }

    fn agent_installed(&self) -> bool {
        self.installed
    }

    async fn gateway_route(
        &self,
        gw: &crate::sandbox::GatewayEndpoints,
    ) -> Result<crate::sandbox::GatewayRoute> {
        // The container's only link to the host is an exec: this binary goes in and, as
        // `__tunnel`, carries the connections to its loopback port over the exec's
        // stdin/stdout to the gateway's socket. Nothing else becomes reachable.
        let bin = format!("{TUNNEL_DIR}/git-harness");
        // Streamed from disk: the binary is never held in memory, once per trial.
        let (_, tar) = crate::sandbox::tunnel::helper_tar(&bin)?;
        self.upload_stream(tar, &bin).await?;
        let port = crate::sandbox::local::FORWARD_PORT;
        let created = self
            .docker
            .create_exec(
                &self.id,
                CreateExecOptions {
                    cmd: Some(vec![bin.clone(), "__tunnel".into(), port.to_string()]),
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    working_dir: Some("/".to_string()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| docker_err("create the gateway tunnel", e))?;
        let started = self
            .docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|e| docker_err("start the gateway tunnel", e))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(InfraClass::Sandbox.error("the gateway tunnel started detached"));
        };
        let incoming = Box::pin(output.filter_map(|r| async move {
            match r {
                Ok(bollard::container::LogOutput::StdOut { message }) => Some(message.to_vec()),
                _ => None,
            }
        }));
        let task =
            crate::sandbox::tunnel::tunnel_client(incoming, input, gw.socket.clone()).await?;
        if let Ok(mut t) = self.tunnel.lock()
            && let Some(old) = t.replace(task)
        {
            old.abort();
        }
        Ok(crate::sandbox::GatewayRoute {
            base_url: format!("http://127.0.0.1:{port}"),
            prelude: None,
        })
    }

    async fn hide_read_only(&self) {
        let task = self.tunnel.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = task {
            // Dropping the exec's stdin ends the tunnel inside.
            t.abort();
            let _ = self
                .exec_raw(
                    &format!("rm -rf {TUNNEL_DIR}"),
                    Duration::from_secs(30),
                    "/",
                    &[],
                )
                .await;
        }
    }

    async fn kill_strays(&self) -> Result<()> {
        // One exec ends the strays and resolves the PATH directories for `toolchain_changes`.
        let script = format!("{KILL_STRAYS}{}exit 0\n", resolve_path_dirs(&self.path_env));
        let script = self.with_pending(&script)?;
        let out = self
            .exec_raw(&script, Duration::from_secs(30), "/", &[])
            .await?;
        let found = if out.success() {
            let dirs = out
                .output
                .split_once("--- path\n")
                .map(|(_, d)| d.lines().map(|l| l.trim().to_string()).collect())
                .unwrap_or_default();
            AfterKill::PathDirs(dirs)
        } else if out.output.contains(STOPPED) || self.stopped().await {
            AfterKill::Stopped
        } else {
            return Err(
                InfraClass::Sandbox.error(format!("kill stray processes: {}", out.output.trim()))
            );
        };
        if let Ok(mut a) = self.after_kill.lock() {
            *a = Some(found);
        }
        Ok(())
    }

    /// One exec does what the default does in steps: it stops the agent's leftover processes
    /// (and kills them, under `runner.strays: kill`), makes the verifier's directories anew and
    /// unpacks the tests (sent in the exec's own script, so they are never in the container
    /// before the agent's processes are stopped, and need no upload), lets kept processes go on
    /// (`runner.strays: keep`), runs the verifier's command, stops and
    /// kills everything but the container's own processes, and resolves the PATH directories.
    /// The toolchain check follows on the host (the overlay upper directory keeps every change
    /// the agent made, also while the verifier ran) and voids the result when it finds one. When
    /// the verifier has a network the agent did not, the agent's processes are killed first
    /// instead, so none of them is ever online.
    async fn run_verifier(
        &self,
        run: crate::sandbox::VerifierRun,
    ) -> Result<crate::sandbox::VerifierRan> {
        use crate::sandbox::VerifierRan;
        if self.phases.verifier && !self.phases.agent {
            self.kill_strays().await?;
        }
        self.set_phase(crate::sandbox::Phase::Verifier).await?;
        let key = format!("{:016x}", rand::random::<u64>());
        let tar = {
            let (tests, dir, files) = (run.tests.clone(), run.tests_dir.clone(), run.files);
            tokio::task::spawn_blocking(move || tests_tar(tests.as_deref(), &dir, &files))
                .await
                .map_err(|e| Error::Internal(format!("pack the tests: {e}")))?
        };
        let tar = match tar {
            Ok(t) => t,
            Err(e) => return Ok(VerifierRan::CopyFailed(e)),
        };
        let vdir = run.reset.first().cloned().unwrap_or_default();
        let aside = match vdir.rsplit_once('/') {
            Some((parent, _)) => format!("{parent}/.git-harness-verifier-{key}"),
            None => format!("/.git-harness-verifier-{key}"),
        };
        let mut script = String::from("{\n");
        script.push_str(VERIFY_PRE);
        if self.strays == crate::experiment::Strays::Kill {
            script.push_str(VERIFY_KILL);
        }
        let dirs: Vec<String> = run.reset.iter().map(|d| q(d)).collect();
        script.push_str(&format!(
            "rm -rf -- {l} && mkdir -p -- {l} || {{ echo \"git-harness: cannot clear the verifier's directories\" >&2; exit 125; }}\n",
            l = dirs.join(" ")
        ));
        if let Some(tar) = tar {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(tar);
            script.push_str(&format!(
                "base64 -d <<'GH_TESTS_END' | tar -xf - -C / || {{ echo \"git-harness: cannot unpack the tests into {t} (the image needs base64 and tar)\" >&2; exit 125; }}\n",
                t = run.tests_dir
            ));
            for chunk in b64.as_bytes().chunks(76) {
                script.push_str(&String::from_utf8_lossy(chunk));
                script.push('\n');
            }
            script.push_str("GH_TESTS_END\n");
        }
        script.push_str("if [ -n \"$gh_any\" ]; then gh_sig CONT; fi\n(\n");
        script.push_str(&run.command.command);
        script.push_str("\n)\ngh_rc=$?\n");
        script.push_str(&format!("gh_v={}; gh_a={}\n", q(&vdir), q(&aside)));
        script.push_str(VERIFY_POST);
        script.push_str(&format!(
            "printf '\\n--- git-harness %s\\n' {key}\nif [ -n \"$gh_w\" ]; then echo \"wrote$gh_w\"; fi\necho '--- path'\n"
        ));
        script.push_str(&resolve_path_dirs(&self.path_env));
        // A compound command is read whole before it runs: the script cannot be changed
        // under the shell.
        script.push_str("exit \"$gh_rc\"\n}\n");
        let script = self.with_pending(&script)?;
        let cwd = normalize(
            &self.workdir,
            run.command.workdir.as_deref().unwrap_or(&self.workdir),
        );
        let mut out = self
            .exec_raw(&script, run.command.timeout, &cwd, &run.command.env)
            .await?;
        let marker = format!("\n--- git-harness {key}\n");
        let mut wrote = Vec::new();
        let after = match out.output.rfind(&marker) {
            Some(i) => {
                let trailer = out.output[i + marker.len()..].to_string();
                out.output.truncate(i);
                let (head, dirs) = trailer.split_once("--- path\n").unwrap_or((&trailer, ""));
                if let Some(names) = head.lines().find_map(|l| l.strip_prefix("wrote ")) {
                    wrote = names.split_whitespace().map(str::to_string).collect();
                }
                Some(AfterKill::PathDirs(
                    dirs.lines().map(|l| l.trim().to_string()).collect(),
                ))
            }
            None if out.output.contains(STOPPED) => Some(AfterKill::Stopped),
            None => None,
        };
        if let Ok(mut a) = self.after_kill.lock() {
            *a = after;
        }
        let tampered = self.toolchain_changes().await?;
        if !tampered.is_empty() {
            return Ok(VerifierRan::Tampered {
                why: "the verifier's result does not count: the agent changed its toolchain",
                causes: tampered,
            });
        }
        if !wrote.is_empty() {
            return Ok(VerifierRan::Tampered {
                why: "the verifier's result does not count: a process the agent left wrote to the verifier's log dir",
                causes: wrote
                    .iter()
                    .map(|n| format!("a process of the agent wrote {vdir}/{n} after the tests"))
                    .collect(),
            });
        }
        Ok(VerifierRan::Ran(out))
    }

    async fn reset_dirs(&self, dirs: &[&str]) -> Result<()> {
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| Error::Internal("pending reset poisoned".into()))?;
        let p = pending.get_or_insert_with(|| Pending {
            dirs: Vec::new(),
            stage: format!("/.git-harness-stage-{:016x}", rand::random::<u64>()),
        });
        for d in dirs {
            let d = normalize(&self.workdir, d);
            if d != "/" && !p.dirs.contains(&d) {
                p.dirs.push(d);
            }
        }
        Ok(())
    }

    async fn read_dir_files(&self, dir: &str, names: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        self.flush_pending().await?;
        let d = normalize(&self.workdir, dir);
        let opts = DownloadFromContainerOptionsBuilder::default()
            .path(&d)
            .build();
        let t = Instant::now();
        let mut stream = self.docker.download_from_container(&self.id, Some(opts));
        let mut tar_bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => tar_bytes.extend_from_slice(&c),
                Err(e) if is_not_found(&e) => return Ok(vec![None; names.len()]),
                Err(e) => return Err(archive_err(&d, e)),
            }
            if tar_bytes.len() > DIR_DOWNLOAD_CAP {
                // A directory this large is read file by file.
                drop(stream);
                let mut out = Vec::new();
                for n in names {
                    out.push(self.read_file(&format!("{d}/{n}")).await.ok());
                }
                return Ok(out);
            }
        }
        api_call("archive get", t);
        crate::sandbox::files_of_dir_tar(&tar_bytes, &d, names)
    }

    fn trial_id(&self) -> &str {
        &self.trial
    }

    /// On the bridge or off it: a container made without any network (`none`) stays so.
    async fn set_phase(&self, phase: crate::sandbox::Phase) -> Result<()> {
        if !self.phases.any() {
            return Ok(());
        }
        let want = self.phases.get(phase);
        let mut connected = self.connected.lock().await;
        if *connected == want {
            return Ok(());
        }
        let t = Instant::now();
        let r = if want {
            self.docker
                .connect_network(
                    BRIDGE,
                    NetworkConnectRequest {
                        container: self.id.clone(),
                        endpoint_config: None,
                    },
                )
                .await
        } else {
            self.docker
                .disconnect_network(
                    BRIDGE,
                    NetworkDisconnectRequest {
                        container: self.id.clone(),
                        force: Some(true),
                    },
                )
                .await
        };
        api_call("network connect/disconnect", t);
        r.map_err(|e| {
            docker_err(
                &format!(
                    "{} the container {} the {BRIDGE} network",
                    if want { "connect" } else { "disconnect" },
                    if want { "to" } else { "from" }
                ),
                e,
            )
        })?;
        *connected = want;
        Ok(())
    }

    fn verifier_path(&self) -> Option<String> {
        Some(self.path_env.clone())
    }

    async fn toolchain_changes(&self) -> Result<Vec<String>> {
        let after_kill = self.after_kill.lock().ok().and_then(|mut a| a.take());
        let known_dirs = match after_kill {
            Some(AfterKill::Stopped) => return Ok(vec![STOPPED.to_string()]),
            Some(AfterKill::PathDirs(d)) => Some(d),
            None if self.stopped().await => return Ok(vec![STOPPED.to_string()]),
            None => None,
        };
        let changes = match self.host_changes().await {
            Some(c) => c,
            None => self.engine_changes().await?,
        };
        let mut found = toolchain_tampering(&changes, &[]);
        if !found.is_empty() {
            // The shell below could be the agent's: report without running anything.
            return Ok(found);
        }
        // The PATH directories as the container resolves them (only shell builtins run here),
        // as the stray kill found them when it ran.
        let dirs: Vec<String> = match known_dirs {
            Some(d) => d,
            None => {
                let script = self.with_pending(&resolve_path_dirs(&self.path_env))?;
                let out = self
                    .exec_raw(&script, Duration::from_secs(30), "/", &[])
                    .await?;
                out.output.lines().map(|l| l.trim().to_string()).collect()
            }
        };
        found = toolchain_tampering(&changes, &dirs);
        // An added command earlier on PATH than one of the same name shadows it.
        let mut probes: Vec<(String, String)> = Vec::new();
        for (kind, path) in &changes {
            let Some((dir, name)) = path.rsplit_once('/') else {
                continue;
            };
            // Docker's own init, bind-mounted by `--init`, is no command of the agent's.
            if *kind != Change::Added || name.is_empty() || DOCKER_INIT.contains(&path.as_str()) {
                continue;
            }
            let Some(i) = dirs.iter().position(|d| d == dir) else {
                continue;
            };
            for later in dirs[i + 1..].iter().filter(|d| !d.is_empty() && *d != dir) {
                probes.push((path.clone(), format!("{later}/{name}")));
            }
        }
        if !probes.is_empty() {
            let script: String = probes
                .iter()
                .map(|(added, other)| format!("[ -e {} ] && echo {};\n", q(other), q(added)))
                .collect::<String>()
                + "exit 0";
            let out = self
                .exec_raw(&script, Duration::from_secs(30), "/", &[])
                .await?;
            for line in out.output.lines() {
                let entry = format!("added {line} (shadows a command on PATH)");
                if !line.is_empty() && !found.contains(&entry) {
                    found.push(entry);
                }
            }
        }
        Ok(found)
    }
}

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Where `--init` mounts Docker's init.
const DOCKER_INIT: [&str; 2] = ["/sbin/docker-init", "/usr/sbin/docker-init"];

/// The two zero blocks that end a tar archive.
const TAR_END: usize = 1024;

/// A download of a directory larger than this is read file by file instead.
const DIR_DOWNLOAD_CAP: usize = 64 << 20;

/// The tests (`tests` copied to `dir`) and further files in one tar, paths relative to `/`;
/// `None` when there is nothing to put in.
fn tests_tar(
    tests: Option<&Path>,
    dir: &str,
    files: &[(String, Vec<u8>)],
) -> Result<Option<Vec<u8>>> {
    if tests.is_none() && files.is_empty() {
        return Ok(None);
    }
    let mut tar = match tests {
        Some(t) => tar_dir(t, dir.trim_start_matches('/'))?,
        None => Vec::new(),
    };
    tar.truncate(tar.len().saturating_sub(TAR_END));
    let mut b = tar::Builder::new(tar);
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path.trim_start_matches('/'), data.as_slice())
            .at(path)?;
    }
    Ok(Some(b.into_inner().at(dir)?))
}

/// A script printing each directory of `path` resolved (`pwd -P`), an empty line for one that
/// does not exist; builtins only.
fn resolve_path_dirs(path: &str) -> String {
    format!(
        "p={}; IFS=:; for e in $p; do (cd \"$e\" 2>/dev/null && pwd -P) || echo; done\n",
        q(path)
    )
}

/// Changes of a container's filesystem that touch what the verifier runs on: a command in a
/// PATH directory (`path_dirs`, resolved) changed or removed, a shared library changed or
/// removed, the dynamic loader's preload or configuration touched, a file of Python's standard
/// library changed or removed, or a Python startup hook (`sitecustomize.py`,
/// `usercustomize.py`) added. Installing new commands, libraries or Python packages is not
/// tampering; an added command that shadows an existing one is found by the caller.
pub fn toolchain_tampering(changes: &[(Change, String)], path_dirs: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    // Directories listed because something inside them changed are not changes themselves.
    let parents: std::collections::HashSet<&str> = changes
        .iter()
        .filter_map(|(_, p)| p.rsplit_once('/').map(|(d, _)| d))
        .collect();
    for (kind, path) in changes {
        if *kind == Change::Modified && parents.contains(path.as_str()) {
            continue;
        }
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        let lib = [
            "/lib/",
            "/lib64/",
            "/usr/lib/",
            "/usr/lib64/",
            "/usr/local/lib/",
        ]
        .iter()
        .any(|l| path.starts_with(l));
        let python_stdlib = ["/usr/lib/python3", "/usr/local/lib/python3"]
            .iter()
            .any(|l| path.starts_with(l))
            && !path.contains("/site-packages/")
            && !path.contains("/dist-packages/");
        let suspect = match kind {
            Change::Modified | Change::Deleted => {
                path_dirs.iter().any(|d| d == dir)
                    || ["/bin", "/usr/bin"].contains(&dir) && !name.is_empty()
                    || lib && (name.ends_with(".so") || name.contains(".so."))
                    || python_stdlib && name.ends_with(".py")
            }
            Change::Added => name == "sitecustomize.py" || name == "usercustomize.py",
        } || path == "/etc/ld.so.preload"
            || path.starts_with("/etc/ld.so.conf");
        if suspect {
            let what = match kind {
                Change::Modified => "changed",
                Change::Added => "added",
                Change::Deleted => "removed",
            };
            found.push(format!("{what} {path}"));
        }
    }
    found
}

/// Why nothing runs in a container the agent stopped.
const STOPPED: &str = "the sandbox's container stopped during the trial (its main process was killed, or it ran out of memory)";

impl DockerSandbox {
    /// Where a file for `path` goes now: under the stage while its directory waits for a reset.
    fn staged(&self, path: &str) -> String {
        match self.pending.lock().ok().as_deref().and_then(|p| p.as_ref()) {
            Some(p)
                if p.dirs
                    .iter()
                    .any(|d| path == d || path.starts_with(&format!("{d}/"))) =>
            {
                format!("{}{path}", p.stage)
            }
            _ => path.to_string(),
        }
    }

    /// `command` preceded by the pending reset, if any (which it then no longer is).
    fn with_pending(&self, command: &str) -> Result<String> {
        let pending = self
            .pending
            .lock()
            .map_err(|_| Error::Internal("pending reset poisoned".into()))?
            .take();
        let Some(p) = pending else {
            return Ok(command.to_string());
        };
        let mut s = String::new();
        for d in &p.dirs {
            let staged = format!("{}{d}", p.stage);
            let parent = d
                .rsplit_once('/')
                .map_or("/", |(a, _)| if a.is_empty() { "/" } else { a });
            s.push_str(&format!(
                "rm -rf {d} && if [ -d {st} ]; then mkdir -p {pa} && mv {st} {d}; else mkdir -p {d}; fi \
                 || {{ echo \"git-harness: cannot clear {d}\" >&2; exit 125; }}\n",
                d = q(d),
                st = q(&staged),
                pa = q(parent),
            ));
        }
        s.push_str(&format!("rm -rf {}\n", q(&p.stage)));
        Ok(s + command)
    }

    /// Run a pending reset now (before a read that must see it).
    async fn flush_pending(&self) -> Result<()> {
        let script = self.with_pending("")?;
        if script.is_empty() {
            return Ok(());
        }
        let out = self
            .exec_raw(&script, Duration::from_secs(60), "/", &[])
            .await?;
        if !out.success() {
            return Err(InfraClass::Sandbox.error(format!(
                "clear the verifier's directories: {}",
                out.output.trim()
            )));
        }
        Ok(())
    }

    /// The container's changes read from its overlay upper directory on this host, when the
    /// engine keeps its layers here (`super::overlay`); `None` sends the caller to the engine.
    async fn host_changes(&self) -> Option<Vec<(Change, String)>> {
        let gd = {
            let mut g = self.graph.lock().await;
            if let Graph::Inspecting(h) = &mut *g {
                let known = h.await.ok().flatten();
                *g = Graph::Known(known);
            }
            match &*g {
                Graph::Known(d) => d.clone()?,
                Graph::Inspecting(_) => return None,
            }
        };
        let (upper, lowers) = super::overlay::overlay_dirs(&gd.name, &gd.data)?;
        let t = Instant::now();
        let r = tokio::task::spawn_blocking(move || super::overlay::upper_changes(&upper, &lowers))
            .await
            .ok()?;
        tracing::debug!(
            target: super::API_TARGET,
            us = t.elapsed().as_micros() as u64,
            exact = r.is_ok(),
            "overlay upper directory read on the host"
        );
        r.ok()
    }

    /// The container's changes as the engine computes them (`/containers/{id}/changes`).
    async fn engine_changes(&self) -> Result<Vec<(Change, String)>> {
        let changes = timed("container changes", self.docker.container_changes(&self.id))
            .await
            .map_err(|e| docker_err("read the container's filesystem changes", e))?
            .unwrap_or_default();
        Ok(changes
            .into_iter()
            .map(|c| {
                let kind = match c.kind {
                    bollard::models::ChangeType::_1 => Change::Added,
                    bollard::models::ChangeType::_2 => Change::Deleted,
                    _ => Change::Modified,
                };
                (kind, c.path)
            })
            .collect())
    }

    /// Whether the container exists but no longer runs.
    async fn stopped(&self) -> bool {
        match timed(
            "container inspect",
            self.docker.inspect_container(&self.id, None),
        )
        .await
        {
            Ok(info) => info.state.and_then(|s| s.running) == Some(false),
            Err(_) => false,
        }
    }

    /// The runtime's directories if no call made them yet (then the caller does).
    fn take_runtime_dirs(&self) -> &'static [&'static str] {
        self.runtime_dirs
            .lock()
            .ok()
            .and_then(|mut d| d.take())
            .unwrap_or_default()
    }

    /// A tar making the directories `dirs` (absolute, parents first).
    fn dirs_tar(dirs: &[&str]) -> Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        for d in dirs {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_mode(0o755);
            h.set_mtime(0);
            b.append_data(
                &mut h,
                format!("{}/", d.trim_start_matches('/')),
                std::io::empty(),
            )
            .at(d)?;
        }
        b.into_inner().at("/")
    }

    /// What an upload starts with: the entries of the runtime's directories if no call made them
    /// yet, without the end-of-archive blocks, so that one archive makes them and then holds
    /// the upload's own entries.
    fn upload_head(&self) -> Result<Vec<u8>> {
        let dirs = self.take_runtime_dirs();
        if dirs.is_empty() {
            return Ok(Vec::new());
        }
        let mut head = Self::dirs_tar(dirs)?;
        head.truncate(head.len().saturating_sub(TAR_END));
        Ok(head)
    }

    /// Unpack `tar` at `/` in the container.
    async fn upload(&self, tar: Vec<u8>, what: &str) -> Result<()> {
        let mut all = self.upload_head()?;
        if all.is_empty() {
            all = tar;
        } else {
            all.extend_from_slice(&tar);
        }
        let opts = UploadToContainerOptionsBuilder::default().path("/").build();
        timed(
            "archive put",
            self.docker
                .upload_to_container(&self.id, Some(opts), bollard::body_full(all.into())),
        )
        .await
        .map_err(|e| archive_err(what, e))
    }

    /// Unpack the tar that `tar` reads at `/` in the container, streamed as it is read.
    async fn upload_stream(
        &self,
        tar: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        what: &str,
    ) -> Result<()> {
        use tokio::io::AsyncReadExt;
        let body = std::io::Cursor::new(self.upload_head()?).chain(tar);
        let opts = UploadToContainerOptionsBuilder::default().path("/").build();
        let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(body));
        timed(
            "archive put",
            self.docker.upload_to_container(&self.id, Some(opts), body),
        )
        .await
        .map_err(|e| archive_err(what, e))
    }
}

impl Drop for DockerSandbox {
    fn drop(&mut self) {
        if self.destroyed {
            return;
        }
        // Synchronous cleanup on its own thread and runtime: this may run inside a runtime
        // (dropped future, panic) or after it.
        let docker = self.docker.clone();
        let id = self.id.clone();
        let t = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let opts = RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build();
                let _ = tokio::time::timeout(
                    Duration::from_secs(30),
                    docker.remove_container(&id, Some(opts)),
                )
                .await;
            });
        });
        let _ = t.join();
        self.destroyed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records come out whatever the chunks' boundaries; other text, also text that looks
    /// like a record of another nonce, stays output.
    #[test]
    fn records_are_taken_out_across_chunk_boundaries() {
        let nonce = "00ff";
        let stream = "\x1egh00ff pid 42\nhello \x1egh0 rc 0\nworld\x1egh00ff rc 3\nlate\x1eg";
        for cut in 0..=stream.len() {
            for step in [1, 2, 5, usize::MAX] {
                let mut cap = Capture::default();
                let mut r = Records::new(nonce);
                let (a, b) = stream.as_bytes().split_at(cut);
                for part in [a, b] {
                    for chunk in part.chunks(step.min(part.len().max(1))) {
                        r.push(chunk, &mut cap);
                    }
                }
                r.finish(&mut cap);
                let (out, _) = cap.finish();
                assert_eq!(
                    (r.pid, r.status, out.as_str()),
                    (Some(42), Some(3), "hello \x1egh0 rc 0\nworldlate\x1eg"),
                    "cut {cut} step {step}"
                );
            }
        }
    }

    #[test]
    fn toolchain_tampering_rules() {
        let c = |k: Change, p: &str| (k, p.to_string());
        let changes = vec![
            c(Change::Modified, "/usr/bin"),
            c(Change::Modified, "/usr/bin/bash"),
            c(Change::Added, "/usr/bin/rg"),
            c(Change::Modified, "/usr/local/bin"),
            c(Change::Added, "/usr/local/bin/tool"),
            c(Change::Deleted, "/usr/sbin/ldconfig"),
            c(Change::Modified, "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            c(Change::Added, "/usr/lib/x86_64-linux-gnu/libnew.so.1"),
            c(Change::Modified, "/usr/lib/python3.11/os.py"),
            c(Change::Modified, "/usr/lib/python3/dist-packages/six.py"),
            c(
                Change::Added,
                "/usr/local/lib/python3.11/site-packages/sitecustomize.py",
            ),
            c(Change::Added, "/etc/ld.so.preload"),
            c(Change::Modified, "/app/answer.txt"),
        ];
        let dirs = vec![
            "/usr/local/bin".to_string(),
            "/usr/sbin".to_string(),
            "/usr/bin".to_string(),
        ];
        assert_eq!(
            toolchain_tampering(&changes, &dirs),
            vec![
                "changed /usr/bin/bash",
                "removed /usr/sbin/ldconfig",
                "changed /usr/lib/x86_64-linux-gnu/libc.so.6",
                "changed /usr/lib/python3.11/os.py",
                "added /usr/local/lib/python3.11/site-packages/sitecustomize.py",
                "added /etc/ld.so.preload",
            ]
        );
    }
}
