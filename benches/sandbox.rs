//! Per-trial sandbox overhead: create, `exec true`, verify (clear, copy tests, run a trivial
//! verifier, read the reward), destroy — for local bubblewrap, local plain and Docker, median of
//! N trials, beside a bare `docker run --rm IMAGE true` measured in the same run.
//!
//! `cargo bench --profile dev --bench sandbox` (the dev profile reuses the debug build; the
//! overhead measured is dominated by processes and the Docker daemon, not by our code).
//! N from BENCH_N, default 15. Prints figures; asserts nothing.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::disallowed_methods,
    reason = "tests drive the binary and other processes, and panic on what they did not expect"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use git_harness::eval::VerifyOptions;
use git_harness::experiment::{RunnerConfig, RunnerKind};
use git_harness::sandbox::{self, Bwrap, ExecRequest, ProviderOptions, SandboxProvider};
use git_harness::task::{self, Task};

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

fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let task = trivial_task(tmp.path());
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
    let mut notes = Vec::new();
    if sandbox::local::bwrap_available() {
        let p = local(Bwrap::Always).expect("provider");
        match rt.block_on(measure("local (bubblewrap)", p, &task, n)) {
            Ok(r) => rows.push(r),
            Err(e) => notes.push(format!("local (bubblewrap): {e}")),
        }
    } else {
        notes.push("local (bubblewrap): skipped, bwrap not available".into());
    }
    let p = local(Bwrap::Never).expect("provider");
    match rt.block_on(measure("local (plain)", p, &task, n)) {
        Ok(r) => rows.push(r),
        Err(e) => notes.push(format!("local (plain): {e}")),
    }
    let cfg = RunnerConfig {
        kind: RunnerKind::Docker,
        ..Default::default()
    };
    match sandbox::provider(&cfg, &ProviderOptions::default()) {
        Ok(p) => match rt.block_on(measure("docker", p, &task, n)) {
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
    for n in notes {
        println!("note: {n}");
    }
}
