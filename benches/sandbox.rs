//! Per-trial sandbox overhead: create, `exec true`, verify (clear, copy tests, run a trivial
//! verifier, read the reward), destroy — for local bubblewrap, local plain and Docker, median of
//! N trials, beside a bare `docker run --rm IMAGE true` measured in the same run.
//!
//! `cargo bench --profile dev --bench sandbox` (the dev profile reuses the debug build; the
//! overhead measured is dominated by processes and the Docker daemon, not by our code).
//! N from BENCH_N, default 15. Prints figures; asserts nothing.
//!
//! Then one whole oracle trial on Docker (create, copy the solution, run it, verify, destroy)
//! beside two floors doing the least the same trial needs: an Engine-API floor (bollard:
//! create + start, one upload, one exec for the solution, one for the verifier, one download of
//! `/logs/verifier`, delete) and a docker-CLI floor (`docker run -d`, `docker cp` in, two
//! `docker exec`, `docker cp` out, `docker rm -f`), with the ratios.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::disallowed_methods,
    reason = "tests drive the binary and other processes, and panic on what they did not expect"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use git_harness::eval::VerifyOptions;
use git_harness::experiment::{RunnerConfig, RunnerKind};
use git_harness::sandbox::{self, Bwrap, ExecRequest, ProviderOptions, SandboxProvider};
use git_harness::task::{self, Task};

#[path = "support/api_calls.rs"]
mod api_calls;
#[path = "support/floor.rs"]
mod floor;
use api_calls::Calls;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn trivial_task(dir: &std::path::Path) -> Task {
    let t = dir.join("trivial");
    std::fs::create_dir_all(t.join("environment/workspace")).expect("mkdir");
    std::fs::create_dir_all(t.join("tests")).expect("mkdir");
    std::fs::write(t.join("instruction.md"), "Nothing to do.").expect("write");
    std::fs::write(t.join("environment/workspace/README"), "x").expect("write");
    std::fs::write(
        t.join("environment/Dockerfile"),
        "FROM git-harness/base:bookworm\nCOPY workspace/ /app/\n",
    )
    .expect("write");
    std::fs::write(
        t.join("tests/test.sh"),
        "#!/bin/bash\necho 1 > \"$HARNESS_LOGS_DIR/verifier/reward.txt\"\n",
    )
    .expect("write");
    task::load_task(&t).expect("trivial task loads")
}

struct Row {
    name: String,
    create: f64,
    exec: f64,
    verify: f64,
    destroy: f64,
    total: f64,
}

async fn measure(
    name: &str,
    p: Arc<dyn SandboxProvider>,
    task: &Task,
    n: usize,
) -> Result<Row, String> {
    let (mut c, mut e, mut v, mut d, mut t) = (vec![], vec![], vec![], vec![], vec![]);
    // One warm-up trial (image build, page cache), not counted.
    for i in 0..=n {
        let t0 = Instant::now();
        let mut sb = p.create(task).await.map_err(|e| e.to_string())?;
        let t1 = Instant::now();
        let out = sb
            .exec(ExecRequest::new("true", Duration::from_secs(30)))
            .await
            .map_err(|e| e.to_string())?;
        assert!(out.success(), "{out:?}");
        let t2 = Instant::now();
        let o = git_harness::eval::verify(sb.as_ref(), task, &VerifyOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        assert!(o.passed, "{o:?}");
        let t3 = Instant::now();
        sb.destroy().await.map_err(|e| e.to_string())?;
        let t4 = Instant::now();
        if i > 0 {
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1000.0;
            c.push(ms(t0, t1));
            e.push(ms(t1, t2));
            v.push(ms(t2, t3));
            d.push(ms(t3, t4));
            t.push(ms(t0, t4));
        }
    }
    Ok(Row {
        name: name.to_string(),
        create: median(&mut c),
        exec: median(&mut e),
        verify: median(&mut v),
        destroy: median(&mut d),
        total: median(&mut t),
    })
}

fn bare_docker_run(n: usize) -> Result<f64, String> {
    let mut v = Vec::new();
    for i in 0..=n {
        let t0 = Instant::now();
        let s = std::process::Command::new("docker")
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                sandbox::image::BASE_IMAGE,
                "true",
            ])
            .output()
            .map_err(|e| e.to_string())?;
        if !s.status.success() {
            return Err(String::from_utf8_lossy(&s.stderr).into_owned());
        }
        if i > 0 {
            v.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(median(&mut v))
}

/// A Harbor task with a solution, built FROM the base image.
fn oracle_task(dir: &std::path::Path) -> Task {
    let t = dir.join("oracle");
    for sub in ["environment", "tests", "solution"] {
        std::fs::create_dir_all(t.join(sub)).expect("mkdir");
    }
    std::fs::write(t.join("instruction.md"), "Write ok to /app/out.txt.").expect("write");
    std::fs::write(
        t.join("task.toml"),
        "[environment]\nworkdir = \"/app\"\nnetwork_mode = \"no-network\"\n",
    )
    .expect("write");
    std::fs::write(
        t.join("environment/Dockerfile"),
        "FROM git-harness/base:bookworm\nWORKDIR /app\n",
    )
    .expect("write");
    std::fs::write(t.join("solution/solve.sh"), "echo ok > /app/out.txt\n").expect("write");
    std::fs::write(
        t.join("tests/test.sh"),
        "#!/bin/bash\nif grep -qx ok /app/out.txt; then echo 1; else echo 0; fi > /logs/verifier/reward.txt\n",
    )
    .expect("write");
    task::load_task(&t).expect("oracle task loads")
}

/// The trial's files as the floors copy them in: `solution/`, `tests/`, `logs/verifier/`.
fn floor_tree(task: &Task, root: &std::path::Path) {
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        std::fs::create_dir_all(to).expect("mkdir");
        for e in std::fs::read_dir(from).expect("read_dir") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    };
    copy(&task.dir.join("solution"), &root.join("solution"));
    copy(&task.dir.join("tests"), &root.join("tests"));
    std::fs::create_dir_all(root.join("logs/verifier")).expect("mkdir");
}

fn tar_of(root: &std::path::Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", root).expect("tar");
    b.into_inner().expect("tar")
}

/// One oracle trial at the Engine-API floor; returns the reward file's archive size.
async fn api_floor_trial(
    docker: &bollard::Docker,
    image: &str,
    tar: &[u8],
    calls: &Calls,
) -> Result<usize, String> {
    let id = floor::create(docker, image, None, calls).await?;
    let run = async {
        floor::start(docker, &id, calls).await?;
        floor::put(docker, &id, tar, calls).await?;
        floor::exec(docker, &id, "bash /solution/solve.sh", calls).await?;
        floor::exec(docker, &id, "bash /tests/test.sh", calls).await?;
        floor::logs(docker, &id, calls).await
    }
    .await;
    floor::remove(docker, &id, calls).await?;
    run
}

fn cli_floor_trial(image: &str, tree: &std::path::Path) -> Result<(), String> {
    let docker = |args: &[&str]| -> Result<String, String> {
        let o = std::process::Command::new("docker")
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let id = docker(&[
        "run",
        "-d",
        "--init",
        "--network",
        "none",
        image,
        "sleep",
        "infinity",
    ])?;
    let src = format!("{}/.", tree.display());
    let run = (|| {
        docker(&["cp", &src, &format!("{id}:/")])?;
        docker(&["exec", &id, "bash", "/solution/solve.sh"])?;
        docker(&["exec", &id, "bash", "/tests/test.sh"])?;
        docker(&["cp", &format!("{id}:/logs/verifier"), "-"])?;
        Ok(())
    })();
    docker(&["rm", "-f", &id])?;
    run
}

/// Median ms of one oracle trial on Docker (git-harness, the Engine-API floor, the docker-CLI
/// floor) and the Engine-API calls of git-harness's trials and of the floor's.
struct Oracle {
    gh: f64,
    api: f64,
    cli: f64,
    gh_calls: BTreeMap<String, (f64, f64)>,
    api_calls: BTreeMap<String, (f64, f64)>,
}

fn oracle_trials(
    rt: &tokio::runtime::Runtime,
    n: usize,
    layer: &(Arc<Calls>, Arc<std::sync::atomic::AtomicBool>),
) -> Result<Oracle, String> {
    use git_harness::eval::builtin::{BuiltinAgent, run_trial};
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let task = oracle_task(tmp.path());
    let tree = tmp.path().join("tree");
    floor_tree(&task, &tree);
    let tar = tar_of(&tree);
    let provider = sandbox::DockerProvider::connect(Default::default(), Default::default())
        .map_err(|e| e.to_string())?;
    let (image, _) = rt
        .block_on(provider.image_for(&task))
        .map_err(|e| e.to_string())?;
    let docker = rt
        .block_on(git_harness::sandbox::docker::connect())
        .map_err(|e| e.to_string())?;
    let (mut gh, mut api, mut cli) = (vec![], vec![], vec![]);
    let opts = VerifyOptions::default();
    let floor_calls = Calls::default();
    let (gh_calls, on) = layer;
    // Interleaved, so that a slow phase of the machine weighs on all three alike; the first
    // round warms up and is not counted.
    for i in 0..=n {
        on.store(i > 0, std::sync::atomic::Ordering::Relaxed);
        let t0 = Instant::now();
        let r = rt
            .block_on(run_trial(&provider, &task, BuiltinAgent::Oracle, &opts))
            .map_err(|e| e.to_string())?;
        assert!(r.verifier.passed, "{r:?}");
        let t1 = Instant::now();
        on.store(false, std::sync::atomic::Ordering::Relaxed);
        let counted = Calls::default();
        rt.block_on(api_floor_trial(
            &docker,
            &image,
            &tar,
            if i > 0 { &floor_calls } else { &counted },
        ))?;
        let t2 = Instant::now();
        cli_floor_trial(&image, &tree)?;
        let t3 = Instant::now();
        if i > 0 {
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1000.0;
            gh.push(ms(t0, t1));
            api.push(ms(t1, t2));
            cli.push(ms(t2, t3));
        }
    }
    Ok(Oracle {
        gh: median(&mut gh),
        api: median(&mut api),
        cli: median(&mut cli),
        gh_calls: gh_calls.per_trial(n),
        api_calls: floor_calls.per_trial(n),
    })
}

/// The create / exec / verify / destroy table of each runner, and a bare `docker run`.
fn per_runner(rt: &tokio::runtime::Runtime, task: &Task, n: usize, notes: &mut Vec<String>) {
    let local = |bwrap| {
        let cfg = RunnerConfig {
            kind: RunnerKind::Local,
            ..Default::default()
        };
        sandbox::provider(
            &cfg,
            &ProviderOptions {
                bwrap,
                ..Default::default()
            },
        )
    };
    let mut rows = Vec::new();
    if sandbox::local::bwrap_available() {
        let p = local(Bwrap::Always).expect("provider");
        match rt.block_on(measure("local (bubblewrap)", p, task, n)) {
            Ok(r) => rows.push(r),
            Err(e) => notes.push(format!("local (bubblewrap): {e}")),
        }
    } else {
        notes.push("local (bubblewrap): skipped, bwrap not available".into());
    }
    let p = local(Bwrap::Never).expect("provider");
    match rt.block_on(measure("local (plain)", p, task, n)) {
        Ok(r) => rows.push(r),
        Err(e) => notes.push(format!("local (plain): {e}")),
    }
    let cfg = RunnerConfig {
        kind: RunnerKind::Docker,
        ..Default::default()
    };
    match sandbox::provider(&cfg, &ProviderOptions::default()) {
        Ok(p) => match rt.block_on(measure("docker", p, task, n)) {
            Ok(r) => rows.push(r),
            Err(e) => notes.push(format!("docker: {e}")),
        },
        Err(e) => notes.push(format!("docker: {e}")),
    }
    let bare = bare_docker_run(n);
    println!("per-trial sandbox overhead, median of {n} (ms)");
    println!(
        "{:<22} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "runner", "create", "exec", "verify", "destroy", "total"
    );
    for r in &rows {
        println!(
            "{:<22} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            r.name, r.create, r.exec, r.verify, r.destroy, r.total
        );
    }
    match bare {
        Ok(ms) => println!("{:<22} {:>44.1}", "docker run --rm true", ms),
        Err(e) => notes.push(format!("docker run --rm: {e}")),
    }
}

fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let layer = api_calls::install();
    // `BENCH_ONLY=oracle`: only the oracle trial and its floors.
    let only_oracle = std::env::var("BENCH_ONLY").as_deref() == Ok("oracle");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let task = trivial_task(tmp.path());
    let mut notes = Vec::new();
    if !only_oracle {
        per_runner(&rt, &task, n, &mut notes);
    }
    match oracle_trials(&rt, n, &layer) {
        Ok(o) => {
            println!("\none oracle trial on Docker, median of {n} (ms)");
            println!("{:<22} {:>8.1}", "git-harness", o.gh);
            println!("{:<22} {:>8.1}", "Engine-API floor", o.api);
            println!("{:<22} {:>8.1}", "docker-CLI floor", o.cli);
            println!(
                "git-harness / Engine-API floor = {:.2} (target <= 1.2); / docker-CLI floor = {:.2} (target <= 1.0)",
                o.gh / o.api,
                o.gh / o.cli
            );
            println!("\nEngine-API calls per oracle trial (calls, mean ms per trial)");
            api_calls::print_table(&o.gh_calls, Some(&o.api_calls));
        }
        Err(e) => notes.push(format!("oracle trial on Docker: {e}")),
    }
    for n in notes {
        println!("note: {n}");
    }
}
