//! Figures of evaluation runs: trials per second and orchestration overhead per trial at
//! concurrency 1, 2 and 8, and resident memory across a 2,000-trial run. Prints tables; not a
//! timed assertion. Run: `cargo bench --bench eval` (`BENCH_TASKS`, `BENCH_TRIALS`,
//! `BENCH_SPEED_TRIALS` scale it down).
//!
//! Setup: a synthetic suite of trivial tasks (empty workspace, a verifier that writes reward 1)
//! in a temp dir; the sim model with a scenario in which it submits at once (one model call per
//! trial, answered at once); the local sandbox (bubblewrap when
//! installed). Every run is `--no-cache`, so every trial executes.
//!
//! Then the local runner on the demo suite with a middleware rule that watches file changes
//! (`turns_without_file_change`, as the demo's promoted `progress-nudge` remedy has): trials/s
//! and sandbox launches per trial with the working-tree fingerprint read on the host (what the
//! runner does) and taken the old way, by a `find` launched in the sandbox after every bash call
//! (reachable only here: a wrapper hides the host fingerprint from the agent loop).
//! `BENCH_DEMO_TRIALS` (default 2 per task) scales it; `BENCH_ONLY=fingerprint` runs only it.
//!
//! Overhead per trial is time outside sandbox execs and model calls:
//! * in-trial: `total_ms - model_ms - sandbox_ms` of each trial (prompt rendering, the agent
//!   loop, sandbox teardown, bookkeeping inside the trial);
//! * per slot: `concurrency * wall / trials - mean(model_ms + sandbox_ms)`, i.e. everything a
//!   run spends per trial besides the sandbox and the model: the in-trial part plus scheduling,
//!   journaling (one fsync per trial), caching and writing the run record. With more slots than
//!   cores this also counts waiting for a CPU.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::disallowed_methods,
    reason = "tests drive the binary and other processes, and panic on what they did not expect"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use git_harness::sandbox::{
    CreateOptions, ExecOutput, ExecRequest, GatewayEndpoints, GatewayRoute, NetworkPolicy, Notes,
    Phase, Sandbox, SandboxProvider,
};
use git_harness::task::Task;

use git_harness::eval::context::{Overrides, open_context};
use git_harness::eval::run::{RunRequest, evaluate};
use git_harness::eval::schedule::Observer;
use git_harness::eval::{AgentKind, TrialResult};
use git_harness::experiment::Split;
use git_harness::workspace::Workspace;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn hermetic<'a>(cmd: &'a mut Command, home: &Path) -> &'a mut Command {
    cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .env("HOME", home)
        .env("TZ", "UTC")
        .env("CI", "true")
}

fn check(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Write `n` trivial tasks and a sim scenario that submits each at once.
fn synthetic_suite(dir: &Path, n: usize) -> String {
    // `slip: 1.0`: the sim explores (nothing) and submits on its first turn.
    let mut scenario = String::from("name: bench\ndefaults: {p: 0.0, slip: 1.0}\ntasks:\n");
    for i in 0..n {
        let id = format!("bench-{i:04}");
        let t = dir.join(&id);
        std::fs::create_dir_all(t.join("environment/workspace")).unwrap();
        std::fs::create_dir_all(t.join("tests")).unwrap();
        std::fs::write(
            t.join("instruction.md"),
            format!("Bench task number {i:04}: there is nothing to do; submit.\n"),
        )
        .unwrap();
        std::fs::write(
            t.join("task.toml"),
            "[agent]\ntimeout_sec = 60\n\n[verifier]\ntimeout_sec = 30\n\n\
             [environment]\nworkdir = \"/app\"\nnetwork_mode = \"none\"\n",
        )
        .unwrap();
        std::fs::write(
            t.join("environment/Dockerfile"),
            "FROM debian:stable-slim\n",
        )
        .unwrap();
        std::fs::write(
            t.join("tests/test.sh"),
            "#!/bin/bash\nLOGS=\"${HARNESS_LOGS_DIR:-/logs}\"\nmkdir -p \"$LOGS/verifier\"\n\
             echo 1 > \"$LOGS/verifier/reward.txt\"\n",
        )
        .unwrap();
        scenario.push_str(&format!("  {id}: {{solve: [{{bash: 'true'}}]}}\n"));
    }
    scenario
}

/// A harness repository on the synthetic suite with the instant sim. Returns its root.
fn setup(tmp: &Path, tasks: usize) -> PathBuf {
    let suite = tmp.join("suite");
    let scenario = synthetic_suite(&suite, tasks);
    let bin = env!("CARGO_BIN_EXE_git-harness");
    let root = tmp.join("repo");
    check(
        hermetic(&mut Command::new(bin), tmp)
            .args(["init", "repo", "--suite"])
            .arg(&suite)
            .current_dir(tmp),
        "init",
    );
    std::fs::write(root.join("bench-sim.yaml"), scenario).unwrap();
    let exp = root.join(".harness/experiment.yaml");
    let text = std::fs::read_to_string(&exp).unwrap();
    let text = text.replace("scenario: builtin:demo", "scenario: bench-sim.yaml");
    std::fs::write(&exp, text).unwrap();
    check(
        hermetic(&mut Command::new("git"), tmp)
            .args(["add", "-A"])
            .current_dir(&root),
        "git add",
    );
    check(
        hermetic(&mut Command::new("git"), tmp)
            .args(["commit", "-qm", "Bench: the instant sim"])
            .current_dir(&root),
        "git commit",
    );
    check(
        hermetic(&mut Command::new(bin), tmp)
            .arg("split")
            .current_dir(&root),
        "split",
    );
    root
}

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Counts results; samples memory every `every` results.
struct Probe {
    every: usize,
    seen: usize,
    samples: Vec<(usize, u64, u64)>,
    last: Option<Instant>,
}

impl Observer for Probe {
    fn finished(&mut self, _r: &TrialResult) {
        self.seen += 1;
        self.last = Some(Instant::now());
        if self.every > 0 && self.seen.is_multiple_of(self.every) {
            let (rss, hwm) = rss_kib();
            self.samples.push((self.seen, rss, hwm));
        }
    }
}

struct Figures {
    trials: usize,
    wall_s: f64,
    record_ms: f64,
    in_trial_ms: f64,
    /// Of the in-trial overhead: the agent loop outside model calls and tool execs.
    loop_ms: f64,
    /// Of the in-trial overhead: outside setup, agent and verifier (teardown, retries).
    teardown_ms: f64,
    inside_ms: f64,
    per_slot_ms: f64,
    trace_bytes: f64,
    passed: usize,
}

fn measure(
    rt: &tokio::runtime::Runtime,
    ws: &Workspace,
    ctx: &git_harness::eval::context::Context,
    trials: u32,
    concurrency: usize,
    agent: AgentKind,
    probe: &mut Probe,
) -> Figures {
    let mut req = RunRequest::new("HEAD", vec![Split::HeldIn, Split::Validation]);
    req.trials = Some(trials);
    req.concurrency = Some(concurrency);
    req.no_cache = true;
    req.agent = agent;
    let start = Instant::now();
    let out = rt
        .block_on(evaluate(ws, ctx, &req, probe, None, None))
        .expect("run");
    let wall = start.elapsed();
    let n = out.results.len();
    let ms = |f: &dyn Fn(&TrialResult) -> u64| {
        out.results.iter().map(|r| f(r) as f64).sum::<f64>() / n as f64
    };
    let inside = ms(&|r| r.durations.model_ms + r.durations.sandbox_ms);
    let total = ms(&|r| r.durations.total_ms);
    let wall_ms = wall.as_secs_f64() * 1000.0;
    Figures {
        trials: n,
        wall_s: wall.as_secs_f64(),
        record_ms: probe
            .last
            .map(|l| start.elapsed().as_secs_f64() * 1000.0 - l.elapsed().as_secs_f64() * 1000.0)
            .map(|at_last| wall_ms - at_last)
            .unwrap_or(0.0),
        in_trial_ms: total - inside,
        loop_ms: ms(&|r| {
            let d = &r.durations;
            let tools = d.sandbox_ms.saturating_sub(d.verify_ms + d.setup_ms);
            d.agent_ms.saturating_sub(d.model_ms + tools)
        }),
        teardown_ms: ms(&|r| {
            let d = &r.durations;
            d.total_ms
                .saturating_sub(d.setup_ms + d.agent_ms + d.verify_ms)
        }),
        inside_ms: inside,
        per_slot_ms: concurrency as f64 * wall_ms / n as f64 - inside,
        trace_bytes: ms(&|r| r.trace_bytes),
        passed: out.results.iter().filter(|r| r.passed()).count(),
    }
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            total += if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

/// A provider whose sandboxes hide the host fingerprint (the agent loop then launches `find`
/// in the sandbox, the old way) when `find` is set, and count their execs either way.
struct Counting {
    inner: Arc<dyn SandboxProvider>,
    find: bool,
    execs: Arc<AtomicUsize>,
}

struct CountingSandbox {
    inner: Box<dyn Sandbox>,
    find: bool,
    execs: Arc<AtomicUsize>,
}

#[async_trait]
impl SandboxProvider for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn create(&self, task: &Task) -> git_harness::Result<Box<dyn Sandbox>> {
        self.create_with(task, &CreateOptions::default()).await
    }
    async fn create_with(
        &self,
        task: &Task,
        opts: &CreateOptions,
    ) -> git_harness::Result<Box<dyn Sandbox>> {
        Ok(Box::new(CountingSandbox {
            inner: self.inner.create_with(task, opts).await?,
            find: self.find,
            execs: self.execs.clone(),
        }))
    }
    async fn environment_id(&self, task: &Task) -> git_harness::Result<Option<String>> {
        self.inner.environment_id(task).await
    }
    async fn prepare(
        &self,
        task: &Task,
        notes: &mut Notes<'_>,
    ) -> git_harness::Result<Option<String>> {
        self.inner.prepare(task, notes).await
    }
    fn network(&self) -> NetworkPolicy {
        self.inner.network()
    }
    async fn sweep(&self) -> git_harness::Result<usize> {
        self.inner.sweep().await
    }
    async fn sweep_own(&self) -> git_harness::Result<usize> {
        self.inner.sweep_own().await
    }
    fn isolation_warning(&self) -> Option<String> {
        self.inner.isolation_warning()
    }
}

#[async_trait]
impl Sandbox for CountingSandbox {
    fn workdir(&self) -> &str {
        self.inner.workdir()
    }
    async fn exec(&self, req: ExecRequest) -> git_harness::Result<ExecOutput> {
        self.execs.fetch_add(1, Ordering::Relaxed);
        self.inner.exec(req).await
    }
    async fn read_file(&self, path: &str) -> git_harness::Result<Vec<u8>> {
        self.inner.read_file(path).await
    }
    async fn read_file_capped(
        &self,
        path: &str,
        limit: u64,
    ) -> git_harness::Result<(Vec<u8>, u64)> {
        self.inner.read_file_capped(path, limit).await
    }
    async fn write_file(&self, path: &str, data: &[u8]) -> git_harness::Result<()> {
        self.inner.write_file(path, data).await
    }
    async fn copy_dir_in(&self, host_dir: &Path, dest: &str) -> git_harness::Result<()> {
        self.inner.copy_dir_in(host_dir, dest).await
    }
    async fn destroy(&mut self) -> git_harness::Result<()> {
        self.inner.destroy().await
    }
    fn tests_dir(&self) -> &str {
        self.inner.tests_dir()
    }
    fn logs_dir(&self) -> &str {
        self.inner.logs_dir()
    }
    fn solution_dir(&self) -> &str {
        self.inner.solution_dir()
    }
    async fn reset_dirs(&self, dirs: &[&str]) -> git_harness::Result<()> {
        self.inner.reset_dirs(dirs).await
    }
    async fn read_dir_files(
        &self,
        dir: &str,
        names: &[&str],
    ) -> git_harness::Result<Vec<Option<Vec<u8>>>> {
        self.inner.read_dir_files(dir, names).await
    }
    async fn workdir_fingerprint(&self) -> git_harness::Result<Option<String>> {
        if self.find {
            return Ok(None);
        }
        self.inner.workdir_fingerprint().await
    }
    async fn kill_strays(&self) -> git_harness::Result<()> {
        self.inner.kill_strays().await
    }
    async fn toolchain_changes(&self) -> git_harness::Result<Vec<String>> {
        self.inner.toolchain_changes().await
    }
    fn verifier_path(&self) -> Option<String> {
        self.inner.verifier_path()
    }
    fn trial_id(&self) -> &str {
        self.inner.trial_id()
    }
    fn placement(&self) -> Option<&str> {
        self.inner.placement()
    }
    async fn set_phase(&self, phase: Phase) -> git_harness::Result<()> {
        self.inner.set_phase(phase).await
    }
    async fn show_read_only(&self, host_dir: &Path, at: &str) -> git_harness::Result<String> {
        self.inner.show_read_only(host_dir, at).await
    }
    fn agent_installed(&self) -> bool {
        self.inner.agent_installed()
    }
    async fn hide_read_only(&self) {
        self.inner.hide_read_only().await
    }
    async fn gateway_route(&self, gateway: &GatewayEndpoints) -> git_harness::Result<GatewayRoute> {
        self.inner.gateway_route(gateway).await
    }
}

/// A repository on the bundled demo suite whose harness has a rule that watches file changes.
fn demo_setup(tmp: &Path) -> PathBuf {
    let bin = env!("CARGO_BIN_EXE_git-harness");
    let root = tmp.join("demo");
    check(
        hermetic(&mut Command::new(bin), tmp)
            .args(["init", "demo"])
            .current_dir(tmp),
        "init demo",
    );
    std::fs::create_dir_all(root.join("middleware")).unwrap();
    std::fs::write(
        root.join("middleware/progress_guard.yaml"),
        "enabled: true\nrules:\n  - name: stop-re-reading\n    on: model_turn\n    when:\n      \
         turns_without_file_change: 5\n    action: inject\n    message: Stop re-reading; implement the solution now.\n    once: true\n",
    )
    .unwrap();
    for args in [
        &["add", "-A"][..],
        &["commit", "-qm", "Bench: a rule that watches file changes"][..],
    ] {
        check(
            hermetic(&mut Command::new("git"), tmp)
                .args(args)
                .current_dir(&root),
            "git",
        );
    }
    check(
        hermetic(&mut Command::new(bin), tmp)
            .arg("split")
            .current_dir(&root),
        "split",
    );
    root
}

/// Trials/s and execs per trial on the demo suite, host fingerprint vs `find` in the sandbox.
fn fingerprint_figures(rt: &tokio::runtime::Runtime, tmp: &Path, trials: u32) {
    let root = demo_setup(tmp);
    let ws = Workspace::from_repo(git2::Repository::open(&root).expect("open demo repo"));
    let mut ctx = rt
        .block_on(open_context(&ws, &Overrides::default()))
        .expect("demo context");
    let runner = git_harness::experiment::RunnerConfig {
        kind: git_harness::experiment::RunnerKind::Local,
        ..Default::default()
    };
    let local = git_harness::sandbox::provider(&runner, &Default::default()).expect("local");
    println!();
    println!(
        "local runner ({}), demo suite with a file-change rule, {trials} trial(s) per task, concurrency 8",
        if git_harness::sandbox::local::bwrap_available() {
            "bubblewrap"
        } else {
            "plain"
        }
    );
    println!(
        "  {:<34} {:>7} {:>8} {:>9} {:>12}",
        "fingerprint", "trials", "wall s", "trials/s", "execs/trial"
    );
    let mut rates = Vec::new();
    // The old way first and last, so that a slow phase of the machine weighs on both.
    for find in [true, false, true, false] {
        let execs = Arc::new(AtomicUsize::new(0));
        let provider = Arc::new(Counting {
            inner: local.clone(),
            find,
            execs: execs.clone(),
        });
        ctx.eval.executors = Arc::new(git_harness::eval::trial::Factory::new(
            provider,
            ctx.model.clone(),
            ctx.fixed.experiment.clone(),
        ));
        let mut req = RunRequest::new("HEAD", vec![Split::HeldIn, Split::Validation]);
        req.trials = Some(trials);
        req.concurrency = Some(8);
        req.no_cache = true;
        let mut probe = Probe {
            every: 0,
            seen: 0,
            samples: Vec::new(),
            last: None,
        };
        let start = Instant::now();
        let out = rt
            .block_on(evaluate(&ws, &ctx, &req, &mut probe, None, None))
            .expect("demo run");
        let wall = start.elapsed().as_secs_f64();
        let n = out.results.len();
        let rate = n as f64 / wall;
        rates.push((find, rate));
        println!(
            "  {:<34} {:>7} {:>8.1} {:>9.2} {:>12.1}",
            if find {
                "old: find in the sandbox"
            } else {
                "new: read on the host"
            },
            n,
            wall,
            rate,
            execs.load(Ordering::Relaxed) as f64 / n.max(1) as f64
        );
    }
    let mean = |f: bool| {
        let v: Vec<f64> = rates.iter().filter(|r| r.0 == f).map(|r| r.1).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    println!(
        "  trials/s, mean of two runs each: old {:.2}, new {:.2} ({:+.0}%)",
        mean(true),
        mean(false),
        100.0 * (mean(false) / mean(true) - 1.0)
    );
}

fn main() {
    // `cargo test --benches` runs this too; keep that cheap.
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    if std::env::var("BENCH_ONLY").as_deref() == Ok("fingerprint") {
        let tmp = tempfile::tempdir().expect("temp dir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        fingerprint_figures(&rt, tmp.path(), env_or("BENCH_DEMO_TRIALS", 2) as u32);
        return;
    }
    let tasks = env_or("BENCH_TASKS", if quick { 10 } else { 125 });
    let mem_trials = env_or("BENCH_TRIALS", if quick { 1 } else { 20 }) as u32;
    let speed_trials = env_or("BENCH_SPEED_TRIALS", 1) as u32;

    let tmp = tempfile::tempdir().expect("temp dir");
    let root = setup(tmp.path(), tasks);
    let ws = Workspace::from_repo(git2::Repository::open(&root).expect("open repo"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ctx = rt
        .block_on(open_context(&ws, &Overrides::default()))
        .expect("context");
    for w in &ctx.warnings {
        eprintln!("warning: {w}");
    }
    let (rss0, _) = rss_kib();

    println!("eval bench: {tasks} synthetic tasks, instant sim, local sandbox");
    println!();
    println!(
        "  {:<8} {:>5} {:>7} {:>8} {:>9} {:>10} {:>9} {:>7} {:>9} {:>9} {:>10}",
        "agent",
        "conc",
        "trials",
        "wall s",
        "trials/s",
        "inside ms",
        "in-trial",
        "loop",
        "teardown",
        "per slot",
        "record ms"
    );
    let mut trace_bytes = 0.0;
    for (agent, conc) in [
        (AgentKind::Harness, 1),
        (AgentKind::Harness, 2),
        (AgentKind::Harness, 8),
        (AgentKind::Nop, 8),
    ] {
        let mut probe = Probe {
            every: 0,
            seen: 0,
            samples: Vec::new(),
            last: None,
        };
        let f = measure(&rt, &ws, &ctx, speed_trials, conc, agent, &mut probe);
        assert_eq!(
            f.passed,
            if agent == AgentKind::Harness {
                f.trials
            } else {
                f.passed
            },
            "every synthetic trial passes"
        );
        if agent == AgentKind::Harness {
            trace_bytes = f.trace_bytes;
        }
        println!(
            "  {:<8} {:>5} {:>7} {:>8.1} {:>9.1} {:>10.1} {:>9.1} {:>7.1} {:>9.1} {:>9.1} {:>10.0}",
            agent.as_str(),
            conc,
            f.trials,
            f.wall_s,
            f.trials as f64 / f.wall_s,
            f.inside_ms,
            f.in_trial_ms,
            f.loop_ms,
            f.teardown_ms,
            f.per_slot_ms,
            f.record_ms
        );
    }
    println!();
    println!("  trace bytes per trial (harness agent, as stored): {trace_bytes:.0}");

    let objects = root.join(".git/objects");
    let before = dir_bytes(&objects);
    let mut probe = Probe {
        every: 250,
        seen: 0,
        samples: Vec::new(),
        last: None,
    };
    let f = measure(
        &rt,
        &ws,
        &ctx,
        mem_trials,
        8,
        AgentKind::Harness,
        &mut probe,
    );
    let grown = dir_bytes(&objects) - before;
    println!();
    println!(
        "memory across {} trials (harness agent, concurrency 8, {:.1} trials/s, record {:.0} ms)",
        f.trials,
        f.trials as f64 / f.wall_s,
        f.record_ms
    );
    println!("  before the run: VmRSS {:>7} KiB", rss0);
    println!("  {:>8} {:>12} {:>12}", "trials", "VmRSS KiB", "VmHWM KiB");
    for (n, rss, hwm) in &probe.samples {
        println!("  {n:>8} {rss:>12} {hwm:>12}");
    }
    let (rss, hwm) = rss_kib();
    println!("  {:>8} {rss:>12} {hwm:>12}", "recorded");
    if !quick {
        fingerprint_figures(&rt, tmp.path(), env_or("BENCH_DEMO_TRIALS", 2) as u32);
    }
    println!(
        "  git objects written by the run: {} bytes ({:.0} per trial, loose zlib objects)",
        grown,
        grown as f64 / f.trials.max(1) as f64
    );
}
