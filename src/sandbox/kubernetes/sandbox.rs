//! One trial's Pod: commands through exec over the API's websocket, files by tar through
//! exec, and the guard that deletes the Pod on every path.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, AttachParams, AttachedProcess, DeleteParams, PostParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::spec::{PodPlan, deny_all};
use super::{CONTAINER, is_not_found, kube_err};
use crate::error::{Error, IoContext, Result};
use crate::sandbox::image::tar_dir;
use crate::sandbox::output::Capture;
use crate::sandbox::{
    ExecOutput, ExecRequest, InfraClass, Phase, PhaseNetworks, Sandbox, normalize,
};

/// How long output is still read after a timeout kill.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// The bytes a file download may have; more is an error rather than memory.
const DOWNLOAD_CAP: usize = 256 << 20;
/// The buffers between the websocket and this side.
const PIPE_BUF: usize = 64 << 10;

/// Runs the command read from stdin (exactly `$3` bytes: the exec API cannot always say where
/// stdin ends, so its length comes first) in `$1` as a new session (`setsid`), so a group kill
/// ends its background children; `$2` keys its script and pid files. Stderr joins stdout, in
/// order. As under Docker, the interpreter and `setsid` are named by absolute path.
const WRAPPER: &str = r#"exec 2>&1; d=/tmp/.git-harness-exec; f="$d/$2"
mkdir -p "$d" 2>/dev/null
if ! head -c "$3" > "$f.sh"; then rm -f "$f.sh"; echo "git-harness: cannot store the command in $f.sh (disk full or /tmp unusable?)"; exit 126; fi
cd "$1" 2>/dev/null || { rm -f "$f.sh"; echo "git-harness: no such directory: $1"; exit 126; }
sh_=/bin/sh; [ -x /bin/bash ] && sh_=/bin/bash
ss_=; for c in /usr/bin/setsid /bin/setsid /usr/sbin/setsid; do [ -x "$c" ] && { ss_=$c; break; }; done
$ss_ "$sh_" -c 'echo $$ > "$0.pid" 2>/dev/null; exec "$1" "$0.sh"' "$f" "$sh_" </dev/null
rc=$?
p=$(cat "$f.pid" 2>/dev/null); [ -n "$p" ] && kill -KILL "-$p" 2>/dev/null
rm -f "$f.sh" "$f.pid"
exit "$rc""#;

/// Starts the gateway's tunnel in directory `$1` on port `$2`: its pid in `$1/tunnel.pid` (the
/// shell's, which `exec` hands on), its errors in `$1/tunnel.err`.
const TUNNEL_START: &str =
    r#"echo $$ > "$1/tunnel.pid"; exec "$1/git-harness" __tunnel "$2" 2>"$1/tunnel.err""#;

/// Unpacks the tar of exactly `$1` bytes on stdin at `/`.
const UNTAR: &str = r#"head -c "$1" | tar -x -f - -C / 2>&1"#;
/// Packs `$2` of directory `$1` as a tar on stdout; exits 3 when it is missing.
const TAR_OUT: &str =
    r#"cd "$1" 2>/dev/null && [ -e "$2" ] || exit 3; exec tar -c -f - "$2" 2>/dev/null"#;

/// Lists what the verifier's toolchain is made of, after a `--- toolchain` line: the Pod's PATH
/// (`path ...`), its directories resolved (`dir ...`, empty for one that is missing), then one
/// line `inode size ctime path` per command of those directories, shared library, file of
/// Python's standard library, Python startup hook and file of the dynamic loader's
/// configuration. A change of content changes the ctime, which no process in the Pod can set
/// back; the listing runs the Pod's own `find`.
const TOOLCHAIN_LISTING: &str = r#"echo '--- toolchain'
echo "path $PATH"
IFS=:; for e in $PATH; do echo "dir $(cd "$e" 2>/dev/null && pwd -P)"; done; unset IFS
ds=$(IFS=:; for e in $PATH; do (cd "$e" 2>/dev/null && pwd -P); done)
f='%i %s %C@ %p\n'
[ -n "$ds" ] && find $ds -maxdepth 1 ! -type d -printf "$f" 2>/dev/null
find /lib /lib64 /usr/lib /usr/lib64 /usr/local/lib -xdev \( -name site-packages -o -name dist-packages \) -prune -o ! -type d \( -name '*.so' -o -name '*.so.*' -o -name '*.py' \) -printf "$f" 2>/dev/null
find /lib /lib64 /usr/lib /usr/lib64 /usr/local/lib -xdev ! -type d \( -name sitecustomize.py -o -name usercustomize.py \) -path '*-packages/*' -printf "$f" 2>/dev/null
find /etc/ld.so.preload /etc/ld.so.conf /etc/ld.so.conf.d ! -type d -printf "$f" 2>/dev/null
exit 0
"#;

/// A [`TOOLCHAIN_LISTING`] read back.
#[derive(Debug, Clone, Default, PartialEq)]
struct Toolchain {
    path: String,
    dirs: Vec<String>,
    /// Path to `inode size ctime`.
    files: std::collections::BTreeMap<String, String>,
}

impl Toolchain {
    /// The listing in `output` (after its marker); `None` when there is none.
    fn parse(output: &str) -> Option<Toolchain> {
        let (_, rest) = output.split_once("--- toolchain\n")?;
        let mut t = Toolchain::default();
        for line in rest.lines() {
            if let Some(p) = line.strip_prefix("path ") {
                t.path = p.to_string();
            } else if let Some(d) = line.strip_prefix("dir ") {
                t.dirs.push(d.trim().to_string());
            } else if line == "dir" {
                t.dirs.push(String::new());
            } else {
                let mut w = line.splitn(4, ' ');
                if let (Some(i), Some(n), Some(c), Some(p)) =
                    (w.next(), w.next(), w.next(), w.next())
                {
                    t.files.insert(p.to_string(), format!("{i} {n} {c}"));
                }
            }
        }
        Some(t)
    }

    /// What changed from `self` (before the agent) to `now`, by the Docker runner's rules,
    /// and each added command that shadows one of a later PATH directory.
    fn tampering(&self, now: &Toolchain) -> Vec<String> {
        use crate::sandbox::docker::{Change, toolchain_tampering};
        let mut changes = Vec::new();
        for (p, sig) in &self.files {
            match now.files.get(p) {
                None => changes.push((Change::Deleted, p.clone())),
                Some(s) if s != sig => changes.push((Change::Modified, p.clone())),
                Some(_) => {}
            }
        }
        for p in now.files.keys().filter(|p| !self.files.contains_key(*p)) {
            changes.push((Change::Added, p.clone()));
        }
        let mut found = toolchain_tampering(&changes, &self.dirs);
        for (kind, p) in &changes {
            let Some((dir, name)) = p.rsplit_once('/') else {
                continue;
            };
            let Some(i) = self.dirs.iter().position(|d| d == dir) else {
                continue;
            };
            let shadows = self.dirs[i + 1..]
                .iter()
                .filter(|d| !d.is_empty() && *d != dir)
                .any(|d| self.files.contains_key(&format!("{d}/{name}")));
            if *kind == Change::Added && shadows {
                found.push(format!("added {p} (shadows a command on PATH)"));
            }
        }
        found
    }
}

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Deletes a trial's Pod and NetworkPolicy: `delete`, or on drop (an aborted trial, a panic,
/// a failed start), synchronously so that nothing outlives the trial.
pub struct PodGuard {
    pods: Api<Pod>,
    policies: Api<NetworkPolicy>,
    name: String,
    /// Whether the deny-all policy exists now (or its creation was asked for).
    denied: AtomicBool,
    deleted: bool,
}

impl PodGuard {
    pub fn new(pods: Api<Pod>, policies: Api<NetworkPolicy>, name: String) -> Self {
        PodGuard {
            pods,
            policies,
            name,
            denied: AtomicBool::new(false),
            deleted: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Take the Pod off the network (idempotent).
    pub async fn deny(&self, plan: &PodPlan) -> Result<()> {
        // Marked first: a creation cut short is still deleted.
        if self.denied.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        match self
            .policies
            .create(&PostParams::default(), &deny_all(plan))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(kube_err(&format!("create network policy {}", self.name), e)),
        }
    }

    /// Give the Pod its network back (idempotent).
    pub async fn allow(&self) -> Result<()> {
        if !self.denied.load(Ordering::SeqCst) {
            return Ok(());
        }
        delete_policy(&self.policies, &self.name).await?;
        self.denied.store(false, Ordering::SeqCst);
        Ok(())
    }

    pub async fn delete(&mut self) -> Result<()> {
        if self.deleted {
            return Ok(());
        }
        delete_pod(&self.pods, &self.name).await?;
        if self.denied.load(Ordering::SeqCst) {
            delete_policy(&self.policies, &self.name).await?;
            self.denied.store(false, Ordering::SeqCst);
        }
        self.deleted = true;
        Ok(())
    }
}

async fn delete_pod(pods: &Api<Pod>, name: &str) -> Result<()> {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::background()
    };
    match pods.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(kube_err(&format!("delete pod {name}"), e)),
    }
}

async fn delete_policy(policies: &Api<NetworkPolicy>, name: &str) -> Result<()> {
    match policies.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(kube_err(&format!("delete network policy {name}"), e)),
    }
}

impl Drop for PodGuard {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        self.deleted = true;
        let (pods, policies, name, denied) = (
            self.pods.clone(),
            self.policies.clone(),
            self.name.clone(),
            self.denied.load(Ordering::SeqCst),
        );
        let work = async move {
            let _ = tokio::time::timeout(Duration::from_secs(30), async {
                let _ = delete_pod(&pods, &name).await;
                if denied {
                    let _ = delete_policy(&policies, &name).await;
                }
            })
            .await;
        };
        // On a multi-threaded runtime the deletion runs on it (its connections live there);
        // elsewhere (a single-threaded runtime, none at all) on a thread and runtime of its own.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| h.block_on(work));
            }
            _ => {
                let t = std::thread::spawn(move || {
                    if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        rt.block_on(work);
                    }
                });
                let _ = t.join();
            }
        }
    }
}

/// The model gateway's route into a Pod: the exec that runs `__tunnel` there, and the host
/// side that carries its connections to the gateway. Dropping it ends both.
struct PodTunnel {
    host: crate::sandbox::tunnel::TunnelHandle,
    exec: AttachedProcess,
}

/// One trial's Pod.
pub struct KubeSandbox {
    /// The gateway's tunnel while the agent may use it. First, so that it ends before the
    /// guard deletes the Pod when the sandbox is dropped.
    tunnel: std::sync::Mutex<Option<PodTunnel>>,
    guard: PodGuard,
    plan: PodPlan,
    workdir: String,
    trial: String,
    phases: PhaseNetworks,
    /// The phase whose network the Pod has now (held while the policy changes).
    phase: tokio::sync::Mutex<Phase>,
    /// The toolchain before the agent's first command (`take_baseline`), and as the stray
    /// kill before the verifier found it.
    baseline: std::sync::Mutex<Option<Toolchain>>,
    after_kill: std::sync::Mutex<Option<Option<Toolchain>>>,
    /// Whether the baseline is to be taken before the next command (set once the Pod is
    /// seeded; see `expect_agent`).
    baseline_due: AtomicBool,
}

impl KubeSandbox {
    pub fn new(
        guard: PodGuard,
        plan: PodPlan,
        workdir: String,
        phases: PhaseNetworks,
        trial: &str,
    ) -> Self {
        KubeSandbox {
            tunnel: std::sync::Mutex::new(None),
            guard,
            plan,
            workdir,
            trial: trial.to_string(),
            phases,
            phase: tokio::sync::Mutex::new(Phase::Setup),
            baseline: std::sync::Mutex::new(None),
            after_kill: std::sync::Mutex::new(None),
            baseline_due: AtomicBool::new(false),
        }
    }

    /// The Pod is ready for the agent: its toolchain is listed before the next command runs
    /// (the agent's, or the solution's), which `toolchain_changes` compares with.
    pub fn expect_agent(&self) {
        self.baseline_due.store(true, Ordering::SeqCst);
    }

    /// Run `script` with `/bin/sh -c` (no wrapper: our own short script), its whole output
    /// collected (up to the download cap).
    async fn run_script(&self, script: &str) -> Result<(Option<i32>, String)> {
        let argv = vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()];
        let (code, timed_out, out) = self
            .collect(argv, Duration::from_secs(120), "the output of a listing")
            .await?;
        let code = if timed_out { None } else { code };
        Ok((code, String::from_utf8_lossy(&out).into_owned()))
    }

    /// Record the toolchain as the verifier will need it, before the agent's first command:
    /// `toolchain_changes` compares with it.
    async fn take_baseline(&self) -> Result<()> {
        if !self.baseline_due.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let (code, out) = self.run_script(TOOLCHAIN_LISTING).await?;
        let Some(t) = Toolchain::parse(&out).filter(|_| code == Some(0)) else {
            return Err(InfraClass::Sandbox.error(format!(
                "kubernetes: list the toolchain of pod {}: {}",
                self.pod_name(),
                out.trim()
            )));
        };
        if let Ok(mut b) = self.baseline.lock() {
            *b = Some(t);
        }
        Ok(())
    }

    fn has_baseline(&self) -> bool {
        self.baseline.lock().is_ok_and(|b| b.is_some())
    }

    /// The Pod's name.
    pub fn pod_name(&self) -> &str {
        self.guard.name()
    }

    fn pods(&self) -> &Api<Pod> {
        &self.guard.pods
    }

    /// Start `argv` in the trial's container.
    async fn start(&self, argv: Vec<String>, stdin: bool) -> Result<AttachedProcess> {
        let ap = AttachParams {
            container: Some(CONTAINER.into()),
            stdin,
            stdout: true,
            stderr: false,
            tty: false,
            max_stdin_buf_size: Some(PIPE_BUF),
            max_stdout_buf_size: Some(PIPE_BUF),
            max_stderr_buf_size: None,
        };
        self.pods()
            .exec(self.pod_name(), argv, &ap)
            .await
            .map_err(|e| kube_err(&format!("exec in pod {}", self.pod_name()), e))
    }

    /// Run `argv` with `input` on stdin (exactly its bytes; the command must read no more),
    /// collecting stdout into `sink` until the process ends or `deadline`. Stdin stays open
    /// until the end: under `v4.channel.k8s.io` closing it closes the whole stream.
    /// Returns the exit code (`None`: killed, or no status), and whether the deadline hit.
    async fn run(
        &self,
        argv: Vec<String>,
        input: &[u8],
        deadline: tokio::time::Instant,
        sink: &mut (dyn FnMut(&[u8]) -> Result<()> + Send),
        on_timeout: Option<&str>,
    ) -> Result<(Option<i32>, bool)> {
        let mut reader = input;
        self.run_from(
            argv,
            (&mut reader, input.len() as u64),
            deadline,
            sink,
            on_timeout,
        )
        .await
    }

    /// [`KubeSandbox::run`] with stdin read from a reader of exactly `len` bytes: one that ends
    /// early or fails closes stdin (the command then ends) and is an error.
    async fn run_from(
        &self,
        argv: Vec<String>,
        (input, len): (&mut (dyn tokio::io::AsyncRead + Unpin + Send), u64),
        deadline: tokio::time::Instant,
        sink: &mut (dyn FnMut(&[u8]) -> Result<()> + Send),
        on_timeout: Option<&str>,
    ) -> Result<(Option<i32>, bool)> {
        let mut proc = self.start(argv, true).await?;
        let mut stdin = proc
            .stdin()
            .ok_or_else(|| InfraClass::Sandbox.error("kubernetes: exec without stdin"))?;
        let mut stdout = proc
            .stdout()
            .ok_or_else(|| InfraClass::Sandbox.error("kubernetes: exec without stdout"))?;
        let status = proc
            .take_status()
            .ok_or_else(|| InfraClass::Sandbox.error("kubernetes: exec without status"))?;
        let mut failed: Option<Error> = None;
        let mut input_failed: Option<std::io::Error> = None;
        let io = async {
            let write = async {
                let mut buf = vec![0u8; PIPE_BUF];
                let mut sent = 0u64;
                while sent < len {
                    let want = buf.len().min((len - sent).min(usize::MAX as u64) as usize);
                    let n = match input.read(&mut buf[..want]).await {
                        Ok(0) => {
                            input_failed = Some(std::io::ErrorKind::UnexpectedEof.into());
                            break;
                        }
                        Ok(n) => n,
                        Err(e) => {
                            input_failed = Some(e);
                            break;
                        }
                    };
                    // A command that ends early stops reading: its output says why.
                    if stdin.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n as u64;
                }
                if input_failed.is_some() {
                    // The command would wait for the rest.
                    let _ = stdin.shutdown().await;
                } else {
                    let _ = stdin.flush().await;
                }
            };
            let read = async {
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    match stdout.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if let Err(e) = sink(&buf[..n]) {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                }
            };
            tokio::join!(write, read);
        };
        let timed_out = tokio::time::timeout_at(deadline, io).await.is_err();
        if let Some(e) = failed {
            return Err(e);
        }
        if let Some(e) = input_failed {
            return Err(InfraClass::Sandbox.error(format!(
                "kubernetes: read what goes into pod {}: {e}",
                self.pod_name()
            )));
        }
        if timed_out {
            if let Some(key) = on_timeout {
                self.kill_exec(key).await;
            }
            let grace = tokio::time::Instant::now() + DRAIN_GRACE;
            let mut buf = vec![0u8; 16 << 10];
            while let Ok(Ok(n)) = tokio::time::timeout_at(grace, stdout.read(&mut buf)).await {
                if n == 0 || sink(&buf[..n]).is_err() {
                    break;
                }
            }
            return Ok((None, true));
        }
        let status = tokio::time::timeout(Duration::from_secs(10), status)
            .await
            .ok()
            .flatten();
        drop(stdin);
        Ok((status.as_ref().and_then(exit_code), false))
    }

    async fn exec_raw(
        &self,
        command: &str,
        timeout: Duration,
        cwd: &str,
        env: &[(String, String)],
    ) -> Result<ExecOutput> {
        let started = Instant::now();
        let key = format!("{:016x}", rand::random::<u64>());
        // The exec API takes no environment: it comes first in the script.
        let mut script = String::new();
        let base = [
            ("HARNESS_WORKDIR", self.workdir.as_str()),
            ("HARNESS_TESTS_DIR", "/tests"),
            ("HARNESS_LOGS_DIR", "/logs"),
            ("HARNESS_SOLUTION_DIR", "/solution"),
        ];
        for (k, v) in base
            .iter()
            .map(|(k, v)| (*k, *v))
            .chain(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        {
            if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                script.push_str(&format!("export {k}={}\n", q(v)));
            }
        }
        script.push_str(command);
        let argv = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            WRAPPER.to_string(),
            "git-harness-exec".to_string(),
            cwd.to_string(),
            key.clone(),
            script.len().to_string(),
        ];
        let mut cap = Capture::default();
        let deadline = tokio::time::Instant::now() + timeout;
        let run = self
            .run(
                argv,
                script.as_bytes(),
                deadline,
                &mut |b| {
                    cap.push(b);
                    Ok(())
                },
                Some(&key),
            )
            .await;
        let (exit_code, timed_out) = match run {
            Ok(r) => r,
            Err(_) if self.stopped().await => {
                return Ok(ExecOutput {
                    exit_code: None,
                    output: format!("git-harness: {STOPPED}; nothing more can run in it\n"),
                    duration_ms: started.elapsed().as_millis() as u64,
                    ..Default::default()
                });
            }
            Err(e) => return Err(e),
        };
        let (output, truncated) = cap.finish();
        Ok(ExecOutput {
            exit_code: if timed_out { None } else { exit_code },
            output,
            truncated,
            timed_out,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// End the gateway's tunnel, if one runs: its process in the Pod first (whatever the API
    /// server does with a closed stream), its binary removed, then the exec awaited and the
    /// host side ended.
    async fn stop_tunnel(&self) {
        let Some(t) = self.tunnel.lock().ok().and_then(|mut t| t.take()) else {
            return;
        };
        let _ = self.run_script(&stop_tunnel_script()).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), t.exec.join()).await;
        drop(t.host);
    }

    /// Kill the process group of the exec keyed `key` (a second exec).
    async fn kill_exec(&self, key: &str) {
        let script = crate::sandbox::docker::sandbox::kill_exec_script(key);
        let argv = vec!["/bin/sh".to_string(), "-c".to_string(), script];
        let Ok(mut proc) = self.start(argv, false).await else {
            return;
        };
        let Some(mut out) = proc.stdout() else {
            return;
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 512];
            while matches!(out.read(&mut buf).await, Ok(n) if n > 0) {}
        })
        .await;
    }

    /// Unpack `tar` at `/` in the container.
    async fn upload(&self, tar: Vec<u8>, what: &str) -> Result<()> {
        let mut reader = &tar[..];
        self.upload_from(&mut reader, tar.len() as u64, what).await
    }

    /// Unpack the tar of `len` bytes that `tar` reads at `/` in the container.
    async fn upload_from(
        &self,
        tar: &mut (dyn tokio::io::AsyncRead + Unpin + Send),
        len: u64,
        what: &str,
    ) -> Result<()> {
        let argv = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            UNTAR.to_string(),
            "git-harness-upload".to_string(),
            len.to_string(),
        ];
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        let (code, timed_out) = self
            .run_from(
                argv,
                (tar, len),
                deadline,
                &mut |b| {
                    out.extend_from_slice(&b[..b.len().min(4096)]);
                    Ok(())
                },
                None,
            )
            .await?;
        if code != Some(0) || timed_out {
            return Err(InfraClass::Sandbox.error(format!(
                "kubernetes: copy {what} into pod {}: {}",
                self.pod_name(),
                String::from_utf8_lossy(&out).trim()
            )));
        }
        Ok(())
    }

    /// Run `argv` with no input and collect its whole output, up to the download cap (`what`
    /// names it in the error): exit code, whether it timed out, the bytes.
    async fn collect(
        &self,
        argv: Vec<String>,
        timeout: Duration,
        what: &str,
    ) -> Result<(Option<i32>, bool, Vec<u8>)> {
        let mut data = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        let (code, timed_out) = self
            .run(
                argv,
                b"",
                deadline,
                &mut |b| {
                    if data.len() + b.len() > DOWNLOAD_CAP {
                        return Err(InfraClass::Sandbox.error(format!(
                            "kubernetes: {what} is larger than {} MiB",
                            DOWNLOAD_CAP >> 20
                        )));
                    }
                    data.extend_from_slice(b);
                    Ok(())
                },
                None,
            )
            .await?;
        Ok((code, timed_out, data))
    }

    /// A tar of `path` (its last component at the archive's root); `None` when it is missing.
    async fn download(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let (parent, name) = match path.rsplit_once('/') {
            Some(("", n)) => ("/", n),
            Some((p, n)) => (p, n),
            None => ("/", path),
        };
        let argv = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            TAR_OUT.to_string(),
            "git-harness-download".to_string(),
            parent.to_string(),
            name.to_string(),
        ];
        let (code, timed_out, data) = self.collect(argv, Duration::from_secs(600), path).await?;
        match code {
            Some(0) if !timed_out => Ok(Some(data)),
            Some(3) => Ok(None),
            _ => Err(InfraClass::Sandbox.error(format!(
                "kubernetes: read {path} from pod {}: {}",
                self.pod_name(),
                crate::exit::describe(code, timed_out)
            ))),
        }
    }

    /// Whether the Pod exists but its container no longer runs.
    async fn stopped(&self) -> bool {
        match self.pods().get(self.pod_name()).await {
            Ok(p) => {
                let status = p.status.as_ref();
                let phase = status.and_then(|s| s.phase.as_deref());
                let terminated = status
                    .and_then(|s| s.container_statuses.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()));
                phase != Some("Running") || terminated
            }
            Err(_) => false,
        }
    }
}

/// The exit code in an exec's final status: `Success` is 0, `NonZeroExitCode` names it.
pub(crate) fn exit_code(
    status: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Status,
) -> Option<i32> {
    if status.status.as_deref() == Some("Success") {
        return Some(0);
    }
    if status.reason.as_deref() != Some("NonZeroExitCode") {
        return None;
    }
    status
        .details
        .as_ref()?
        .causes
        .as_ref()?
        .iter()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))
        .and_then(|c| c.message.as_deref()?.trim().parse().ok())
}

/// Kills the tunnel named by its pid file and removes its directory.
fn stop_tunnel_script() -> String {
    let d = q(crate::sandbox::tunnel::TUNNEL_DIR);
    format!(
        "p=; read -r p < {d}/tunnel.pid 2>/dev/null; [ -n \"$p\" ] && kill -KILL \"$p\" 2>/dev/null; rm -rf {d}; exit 0"
    )
}

/// Why nothing runs in a Pod the agent stopped.
const STOPPED: &str = "the sandbox's pod stopped during the trial (its main process was killed, or it ran out of memory)";

fn one_file(tar_bytes: &[u8], p: &str) -> Result<Vec<u8>> {
    let mut ar = tar::Archive::new(tar_bytes);
    let mut entries = ar.entries().at(p)?;
    let Some(entry) = entries.next() else {
        return Err(Error::io(
            p,
            std::io::Error::new(std::io::ErrorKind::NotFound, "empty archive"),
        ));
    };
    let mut entry = entry.at(p)?;
    if !entry.header().entry_type().is_file() {
        return Err(Error::io(p, std::io::Error::other("not a regular file")));
    }
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut data).at(p)?;
    Ok(data)
}

#[async_trait]
impl Sandbox for KubeSandbox {
    fn workdir(&self) -> &str {
        &self.workdir
    }

    async fn exec(&self, req: ExecRequest) -> Result<ExecOutput> {
        if self.guard.deleted {
            return Err(InfraClass::Sandbox.error("exec in a destroyed sandbox"));
        }
        self.take_baseline().await?;
        let cwd = normalize(
            &self.workdir,
            req.workdir.as_deref().unwrap_or(&self.workdir),
        );
        self.exec_raw(&req.command, req.timeout, &cwd, &req.env)
            .await
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let p = normalize(&self.workdir, path);
        match self.download(&p).await? {
            Some(t) => one_file(&t, &p),
            None => Err(Error::io(
                &p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file in the sandbox"),
            )),
        }
    }

    async fn write_file(&self, path: &str, data: &[u8]) -> Result<()> {
        let p = normalize(&self.workdir, path);
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
        let d = normalize(&self.workdir, dest);
        let tar = tar_dir(host_dir, d.trim_start_matches('/'))?;
        self.upload(tar, &d).await
    }

    async fn destroy(&mut self) -> Result<()> {
        if let Some(t) = self.tunnel.get_mut().ok().and_then(|t| t.take()) {
            drop(t);
        }
        self.guard.delete().await
    }

    /// The Pod's only link to this host is the API's exec: this binary goes in (by tar through
    /// exec, streamed from disk) and, as `__tunnel`, carries the connections to the Pod's own
    /// loopback port over the exec's stdin/stdout to the gateway's socket. Nothing else of the
    /// host becomes reachable, and a NetworkPolicy that denies the Pod all traffic leaves its
    /// loopback alone. The binary is this host's: the Pod's image must run it (the same
    /// architecture, a glibc no older than the host's), as under Docker.
    async fn gateway_route(
        &self,
        gw: &crate::sandbox::GatewayEndpoints,
    ) -> Result<crate::sandbox::GatewayRoute> {
        use crate::sandbox::tunnel::{TUNNEL_DIR, helper_tar, tunnel_client};
        use futures_util::StreamExt;
        self.stop_tunnel().await;
        let bin = format!("{TUNNEL_DIR}/git-harness");
        let (len, mut tar) = helper_tar(&bin)?;
        self.upload_from(&mut tar, len, &bin).await?;
        drop(tar);
        let port = crate::sandbox::local::FORWARD_PORT;
        let argv = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            TUNNEL_START.to_string(),
            "git-harness-tunnel".to_string(),
            TUNNEL_DIR.to_string(),
            port.to_string(),
        ];
        let mut exec = self.start(argv, true).await?;
        let (Some(stdin), Some(stdout)) = (exec.stdin(), exec.stdout()) else {
            return Err(
                InfraClass::Sandbox.error("kubernetes: the tunnel's exec has no stdin or stdout")
            );
        };
        let incoming = Box::pin(
            tokio_util::io::ReaderStream::new(stdout)
                .filter_map(|r| futures_util::future::ready(r.ok().map(|b| b.to_vec()))),
        );
        match tunnel_client(incoming, stdin, gw.socket.clone()).await {
            Ok(host) => {
                if let Ok(mut t) = self.tunnel.lock() {
                    *t = Some(PodTunnel { host, exec });
                }
                Ok(crate::sandbox::GatewayRoute {
                    base_url: format!("http://127.0.0.1:{port}"),
                    prelude: None,
                })
            }
            Err(_) => {
                drop(exec);
                let why = self
                    .run_script(&format!("cat {TUNNEL_DIR}/tunnel.err 2>/dev/null"))
                    .await
                    .map(|(_, out)| out.trim().to_string())
                    .unwrap_or_default();
                let _ = self.run_script(&stop_tunnel_script()).await;
                Err(InfraClass::Sandbox.error_hint(
                    format!(
                        "kubernetes: the model gateway's tunnel did not start in pod {}{}",
                        self.pod_name(),
                        if why.is_empty() { String::new() } else { format!(": {why}") }
                    ),
                    "the Pod's image must run this host's git-harness binary: the same architecture, and a glibc no older than the host's",
                ))
            }
        }
    }

    async fn hide_read_only(&self) {
        self.stop_tunnel().await;
    }

    async fn read_dir_files(&self, dir: &str, names: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let d = normalize(&self.workdir, dir);
        let Some(tar_bytes) = self.download(&d).await? else {
            return Ok(vec![None; names.len()]);
        };
        crate::sandbox::files_of_dir_tar(&tar_bytes, &d, names)
    }

    async fn kill_strays(&self) -> Result<()> {
        // One exec ends the strays and lists the toolchain for `toolchain_changes`.
        let listing = if self.has_baseline() {
            TOOLCHAIN_LISTING
        } else {
            ""
        };
        let script = format!("{}{listing}", crate::sandbox::docker::sandbox::KILL_STRAYS);
        let (code, out) = match self.run_script(&script).await {
            Ok(r) => r,
            Err(_) if self.stopped().await => {
                if let Ok(mut a) = self.after_kill.lock() {
                    *a = Some(None);
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if code != Some(0) {
            return Err(InfraClass::Sandbox.error(format!(
                "kill stray processes: {}",
                crate::exit::describe(code, false)
            )));
        }
        if let Ok(mut a) = self.after_kill.lock() {
            *a = Some(Toolchain::parse(&out));
        }
        Ok(())
    }

    fn verifier_path(&self) -> Option<String> {
        self.baseline
            .lock()
            .ok()
            .and_then(|b| b.as_ref().map(|t| t.path.clone()))
            .filter(|p| !p.is_empty())
    }

    /// The toolchain listed before the verifier against the one before the agent.
    async fn toolchain_changes(&self) -> Result<Vec<String>> {
        let Some(before) = self.baseline.lock().ok().and_then(|b| b.clone()) else {
            return Ok(Vec::new());
        };
        let known = self.after_kill.lock().ok().and_then(|mut a| a.take());
        let now = match known {
            Some(Some(t)) => t,
            Some(None) => return Ok(vec![STOPPED.to_string()]),
            None => match self.run_script(TOOLCHAIN_LISTING).await {
                Ok((_, out)) => match Toolchain::parse(&out) {
                    Some(t) => t,
                    None => {
                        return Ok(vec![format!(
                            "the toolchain could not be listed: {}",
                            out.trim()
                        )]);
                    }
                },
                Err(_) if self.stopped().await => return Ok(vec![STOPPED.to_string()]),
                Err(e) => return Err(e),
            },
        };
        Ok(before.tampering(&now))
    }

    fn trial_id(&self) -> &str {
        &self.trial
    }

    /// The deny-all policy present exactly while the phase has no network.
    async fn set_phase(&self, phase: Phase) -> Result<()> {
        let mut now = self.phase.lock().await;
        if self.phases.get(phase) {
            self.guard.allow().await?;
        } else {
            self.guard.deny(&self.plan).await?;
        }
        *now = phase;
        Ok(())
    }
}
