//! Many Docker trials at once on one machine: throughput at concurrency 8, 32 and 64 as a share
//! of the ideal (concurrency ÷ the duration of one trial run alone), and the peak resident memory
//! of the process that runs them. Prints a table; not a timed assertion. Run:
//! `cargo bench --bench scale` (`BENCH_CONCURRENCY=8,32,64`, `BENCH_WAVES=2`, `BENCH_TURN_MS=1000`,
//! `BENCH_TURNS=10` change it). Needs the Docker engine and the base image.
//!
//! Setup: a stand-in OpenAI-compatible model on loopback that answers each request after
//! `BENCH_TURN_MS` (the realistic case: seconds per turn), with a `bash` tool call (`true`)
//! until the trial's `BENCH_TURNS`th turn, which submits; tasks on the base image without
//! network, whose verifier writes reward 1; the Docker runner; `model.concurrency` set to the
//! highest concurrency, so the model client is not what limits. Every run is `--no-cache` and
//! runs `BENCH_WAVES` × concurrency trials.
//!
//! Then the same trials at the Engine-API floor (`BENCH_FLOOR=0` skips it): a program calling
//! the engine directly with the same container work per trial (create + start, one exec per
//! turn after the turn's time, the verifier's exec, one download, the delete), at the same
//! levels, with its own % of ideal, peak RSS and dockerd CPU per trial: the share of the engine
//! (dockerd, containerd, runc) apart from git-harness's.
//!
//! Also printed: the machine's load average during each level (the 1-minute figure, mean and
//! peak of samples every second; other work on the machine shows there), and per level the
//! Engine-API calls of a trial with their mean duration, which shows the calls that queue in
//! the daemon as concurrency grows.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::disallowed_methods,
    reason = "a bench drives processes and panics on what it did not expect"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use git_harness::eval::context::{Overrides, open_context};
use git_harness::eval::run::{RunRequest, evaluate};
use git_harness::eval::schedule::Quiet;
use git_harness::experiment::Split;
use git_harness::workspace::Workspace;
use serde_json::{Value, json};

#[path = "support/api_calls.rs"]
mod api_calls;
#[path = "support/floor.rs"]
mod floor;

/// CPU seconds (user + system) of process `pid` (`self` or a number), when readable.
fn cpu_s(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks / 100.0)
}

/// The pid of a local `dockerd`, to read its CPU time (none when the engine is elsewhere).
fn dockerd_pid() -> Option<String> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (name.chars().all(|c| c.is_ascii_digit()) && comm.trim() == "dockerd").then_some(name)
    })
}

/// The 1-minute load average.
fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Samples the load average every second until dropped; `finish` gives (mean, peak).
struct LoadSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<f64>>,
}

impl LoadSampler {
    fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut v = vec![load1()];
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                v.push(load1());
            }
            v
        });
        LoadSampler { stop, thread }
    }

    fn finish(self) -> (f64, f64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let v = self.thread.join().unwrap_or_default();
        let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
        (mean, v.iter().copied().fold(f64::NAN, f64::max))
    }
}

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

#[derive(Clone)]
struct Model {
    turn: Duration,
    turns: usize,
}

/// One turn of the stand-in agent model: a `bash` call until the last turn, then `submit`.
async fn answer(State(m): State<Model>, body: axum::body::Bytes) -> axum::Json<Value> {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let done = body["messages"]
        .as_array()
        .map(|ms| ms.iter().filter(|m| m["role"] == "assistant").count())
        .unwrap_or(0);
    tokio::time::sleep(m.turn).await;
    let (name, args) = if done + 1 >= m.turns {
        ("submit", json!({"summary": "done"}))
    } else {
        ("bash", json!({"command": "true"}))
    };
    axum::Json(json!({
        "id": "x", "object": "chat.completion", "model": "stub",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null,
            "tool_calls": [{"id": format!("call-{done}"), "type": "function",
                "function": {"name": name, "arguments": args.to_string()}}]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10}
    }))
}

/// The stand-in model's base URL; it serves on a runtime of its own until the process ends.
fn stand_in(model: Model) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = Router::new()
                .route("/v1/chat/completions", post(answer))
                .with_state(model);
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}/v1", rx.recv().unwrap())
}

fn suite(dir: &Path, n: usize) {
    for i in 0..n {
        let t = dir.join(format!("scale-{i:03}"));
        std::fs::create_dir_all(t.join("tests")).unwrap();
        std::fs::write(t.join("instruction.md"), "Nothing to do; submit.\n").unwrap();
        std::fs::write(
            t.join("task.toml"),
            "[environment]\nworkdir = \"/app\"\nnetwork_mode = \"none\"\n",
        )
        .unwrap();
        std::fs::write(
            t.join("tests/test.sh"),
            "#!/bin/bash\necho 1 > \"${HARNESS_LOGS_DIR:-/logs}/verifier/reward.txt\"\n",
        )
        .unwrap();
    }
}

fn setup(tmp: &Path, tasks: usize, base_url: &str, model_concurrency: usize) -> PathBuf {
    let dir = tmp.join("suite");
    suite(&dir, tasks);
    let bin = env!("CARGO_BIN_EXE_git-harness");
    check(
        hermetic(&mut Command::new(bin), tmp)
            .args(["init", "repo", "--runner", "docker", "--suite"])
            .arg(&dir)
            .current_dir(tmp),
        "init",
    );
    let root = tmp.join("repo");
    let exp = root.join(".harness/experiment.yaml");
    let text = std::fs::read_to_string(&exp).unwrap();
    let start = text.find("model:\n").unwrap();
    let end = text.find("\ndecoding:").unwrap();
    let text = format!(
        "{}model:\n  provider: openai\n  name: stub\n  base_url: {base_url}\n  timeout_sec: 60\n  max_retries: 0\n  concurrency: {model_concurrency}\n{}",
        &text[..start],
        &text[end + 1..]
    );
    std::fs::write(&exp, text).unwrap();
    // Every task held in: the splits' shares do not matter here.
    let list: String = (0..tasks).map(|i| format!("- scale-{i:03}\n")).collect();
    std::fs::write(
        root.join(".harness/splits.yaml"),
        format!("held_in:\n{list}validation: []\ntest: []\n"),
    )
    .unwrap();
    for args in [
        vec!["add", "-A"],
        vec!["commit", "-qm", "Bench: the stand-in model"],
    ] {
        check(
            hermetic(&mut Command::new("git"), tmp)
                .args(&args)
                .current_dir(&root),
            "git",
        );
    }
    root
}

/// One trial at the Engine-API floor: the container work of one trial of this bench, without
/// git-harness (bollard alone, as `benches/sandbox.rs`'s floor): create + start on the base
/// image without network, `turns - 1` execs of `true`, each after a turn of the model's length
/// (a sleep: the stand-in answers in that time), the verifier's exec after the last turn, one
/// download of `/logs/verifier`, the delete.
async fn floor_trial(docker: &bollard::Docker, model: &Model) -> Result<(), String> {
    let calls = api_calls::Calls::default();
    let image = git_harness::sandbox::image::BASE_IMAGE;
    let id = floor::create(docker, image, Some("/app"), &calls).await?;
    let run = async {
        floor::start(docker, &id, &calls).await?;
        for turn in 0..model.turns {
            tokio::time::sleep(model.turn).await;
            if turn + 1 < model.turns {
                floor::exec(docker, &id, "true", &calls).await?;
            }
        }
        let verify = "mkdir -p /logs/verifier && echo 1 > /logs/verifier/reward.txt";
        floor::exec(docker, &id, verify, &calls).await?;
        floor::logs(docker, &id, &calls).await.map(drop)
    }
    .await;
    floor::remove(docker, &id, &calls).await?;
    run
}

/// `trials` floor trials, `conc` at a time: (wall seconds, dockerd CPU seconds per trial).
fn floor_level(
    rt: &tokio::runtime::Runtime,
    model: &Model,
    trials: usize,
    conc: usize,
) -> (f64, Option<f64>) {
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    let dockerd = dockerd_pid();
    let cpu0 = dockerd.as_deref().and_then(cpu_s);
    let start = Instant::now();
    rt.block_on(async {
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(conc));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..trials {
            let (docker, model, slots) = (docker.clone(), model.clone(), slots.clone());
            set.spawn(async move {
                let _slot = slots.acquire_owned().await.unwrap();
                floor_trial(&docker, &model).await
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap().expect("floor trial");
        }
    });
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu0
        .zip(dockerd.as_deref().and_then(cpu_s))
        .map(|(a, b)| (b - a) / trials.max(1) as f64);
    (wall, cpu)
}

/// Forget this process's peak resident memory, so the next reading is the next level's own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `VmHWM` of this process, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Mean seconds per trial: in all, in model calls, in sandbox execs, in setup.
struct Split3 {
    total: f64,
    model: f64,
    sandbox: f64,
    setup: f64,
}

fn main() {
    // `cargo test --benches` runs this too: nothing to measure there.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let levels: Vec<usize> = std::env::var("BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "8,32,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let waves = env_or("BENCH_WAVES", 2);
    let turn_ms = env_or("BENCH_TURN_MS", 1000);
    let turns = env_or("BENCH_TURNS", 10);
    let top = levels.iter().copied().max().unwrap_or(1);
    let model = Model {
        turn: Duration::from_millis(turn_ms as u64),
        turns,
    };
    let (calls, on) = api_calls::install();
    let base_url = stand_in(model.clone());
    let tmp = tempfile::tempdir().unwrap();
    let root = setup(tmp.path(), top, &base_url, top);
    let ws = Workspace::from_repo(git2::Repository::open(&root).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ctx = rt
        .block_on(open_context(&ws, &Overrides::default()))
        .expect("context");
    let run = |trials: u32, tasks: usize, conc: usize| {
        let mut req = RunRequest::new("HEAD", vec![Split::HeldIn]);
        req.trials = Some(trials);
        req.concurrency = Some(conc);
        req.no_cache = true;
        req.tasks = Some(if tasks >= top {
            "*".to_string()
        } else {
            format!(
                "{{{}}}",
                (0..tasks)
                    .map(|i| format!("scale-{i:03}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        });
        let dockerd = dockerd_pid();
        let cpu0 = (cpu_s("self"), dockerd.as_deref().and_then(cpu_s));
        let start = Instant::now();
        let load = LoadSampler::start();
        on.store(true, std::sync::atomic::Ordering::Relaxed);
        let out = rt
            .block_on(evaluate(&ws, &ctx, &req, &mut Quiet, None, None))
            .expect("run");
        on.store(false, std::sync::atomic::Ordering::Relaxed);
        let wall = start.elapsed().as_secs_f64();
        let load = load.finish();
        let n = out.results.len().max(1) as f64;
        let per = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| (b - a) / n);
        let cpu = (
            per(cpu0.0, cpu_s("self")),
            per(cpu0.1, dockerd.as_deref().and_then(cpu_s)),
        );
        let passed = out.results.iter().filter(|r| r.passed()).count();
        let mean = |f: &dyn Fn(&git_harness::eval::Durations) -> u64| {
            out.results
                .iter()
                .map(|r| f(&r.durations) as f64 / 1000.0)
                .sum::<f64>()
                / out.results.len().max(1) as f64
        };
        let split = Split3 {
            total: mean(&|d| d.total_ms),
            model: mean(&|d| d.model_ms),
            sandbox: mean(&|d| d.sandbox_ms),
            setup: mean(&|d| d.setup_ms),
        };
        let per_call = calls.per_trial(out.results.len().max(1));
        (out.results.len(), passed, wall, split, load, per_call, cpu)
    };

    // One trial alone: the duration the ideal divides by.
    let (_, _, alone, one, _, alone_calls, _) = run(1, 1, 1);
    println!(
        "scale bench: Docker runner, stand-in model {turn_ms} ms per turn, {turns} turns per trial, {waves} waves per level"
    );
    println!(
        "  one trial alone: {alone:.2} s (model {:.2} s, sandbox execs {:.2} s, setup {:.2} s)",
        one.model, one.sandbox, one.setup
    );
    println!();
    println!(
        "  {:>5} {:>7} {:>7} {:>8} {:>10} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>12} {:>11}",
        "conc",
        "trials",
        "passed",
        "wall s",
        "trials/s",
        "ideal/s",
        "% ideal",
        "trial s",
        "model s",
        "exec s",
        "setup s",
        "peak RSS MiB",
        "load1 mean/peak"
    );
    let floor_levels = levels.clone();
    let mut breakdowns = vec![(1, alone_calls)];
    let mut cpus = Vec::new();
    for conc in levels {
        let tasks = conc.min(top);
        let trials = (waves * conc).div_ceil(tasks) as u32;
        reset_peak_rss();
        let (n, passed, wall, d, load, per_call, cpu) = run(trials, tasks, conc);
        breakdowns.push((conc, per_call));
        cpus.push((conc, cpu));
        let got = n as f64 / wall;
        let ideal = conc as f64 / alone;
        println!(
            "  {:>5} {:>7} {:>7} {:>8.1} {:>10.2} {:>9.2} {:>9.1}% {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>12.1} {:>6.1}/{:<5.1}",
            conc,
            n,
            passed,
            wall,
            got,
            ideal,
            100.0 * got / ideal,
            d.total,
            d.model,
            d.sandbox,
            d.setup,
            peak_rss_kib() as f64 / 1024.0,
            load.0,
            load.1
        );
    }
    println!(
        "  (cores: {}; peak RSS is each level's own)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if std::env::var("BENCH_FLOOR").as_deref() != Ok("0") {
        // The same trials at the Engine-API floor: what the engine itself does at each level,
        // so the share of git-harness and of dockerd / containerd / runc show apart.
        let (floor_alone, _) = floor_level(&rt, &model, 1, 1);
        println!();
        println!(
            "  Engine-API floor (same container work, no git-harness): one trial alone {floor_alone:.2} s"
        );
        println!(
            "  {:>5} {:>7} {:>8} {:>10} {:>9} {:>10} {:>12} {:>11} {:>10}",
            "conc",
            "trials",
            "wall s",
            "trials/s",
            "ideal/s",
            "% ideal",
            "peak RSS MiB",
            "load1 mean/peak",
            "dockerd s"
        );
        for &conc in &floor_levels {
            let trials = waves * conc;
            reset_peak_rss();
            let load = LoadSampler::start();
            let (wall, cpu) = floor_level(&rt, &model, trials, conc);
            let load = load.finish();
            let got = trials as f64 / wall;
            let ideal = conc as f64 / floor_alone;
            println!(
                "  {:>5} {:>7} {:>8.1} {:>10.2} {:>9.2} {:>9.1}% {:>12.1} {:>6.1}/{:<5.1} {:>10}",
                conc,
                trials,
                wall,
                got,
                ideal,
                100.0 * got / ideal,
                peak_rss_kib() as f64 / 1024.0,
                load.0,
                load.1,
                cpu.map_or("-".to_string(), |v| format!("{v:.3}"))
            );
        }
    }
    println!();
    println!("  CPU seconds per trial: this process (git-harness) / dockerd");
    for (conc, (me, d)) in &cpus {
        let f = |v: &Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        println!("  {conc:>5} {:>8} / {:<8}", f(me), f(d));
    }
    for (conc, per_call) in &breakdowns {
        println!();
        println!("  Engine-API calls per trial at concurrency {conc} (count, mean ms per trial)");
        api_calls::print_table(per_call, None);
    }
}
