//! `git harness tasks`: look at a task suite and check that its tasks are sound.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use git_harness::eval::VerifyOptions;
use git_harness::eval::builtin::check_tasks_with;
use git_harness::experiment::{Experiment, NetworkChoice, PullPolicy, RunnerConfig, RunnerKind};
use git_harness::sandbox::{self, Bwrap, ProviderOptions};
use git_harness::task;
use git_harness::{Error, Result, exit};

use super::Ui;

/// Inspect and check task suites.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// List the tasks of a suite with their format, timeouts and checksum.
    List(ListArgs),
    /// Run the oracle and nop agents on every task and list broken tasks.
    Check(CheckArgs),
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// The suite directory or `builtin:NAME` (default: the suite of .harness/experiment.yaml).
    pub suite: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The suite directory, one task directory, or `builtin:NAME` (default: the suite of .harness/experiment.yaml).
    pub suite: Option<PathBuf>,
    /// Where trials run (default: the runner of .harness/experiment.yaml, else local).
    #[arg(long, value_parser = ["local", "docker", "auto", "kubernetes"])]
    pub runner: Option<String>,
    /// Run local trials without bubblewrap even when it is available.
    #[arg(long, conflicts_with = "bwrap")]
    pub no_bwrap: bool,
    /// Require bubblewrap for local trials.
    #[arg(long)]
    pub bwrap: bool,
    /// Trials at a time (default: runner.concurrency).
    #[arg(long, short = 'j')]
    pub concurrency: Option<usize>,
    /// Docker image substitution, `FROM=TO` (repeatable; adds to runner.image_map). FROM may end
    /// in `*` (`python:3.13*`, `ghcr.io/org/*`) or be `*` alone; exact names win, then the
    /// longest prefix, then `*`.
    #[arg(long = "image-map", value_name = "FROM=TO")]
    pub image_map: Vec<String>,
    /// When images are pulled from their registry (default: runner.pull, else missing).
    #[arg(long, value_parser = ["missing", "never", "always"])]
    pub pull: Option<String>,
    /// Check only these tasks (repeatable).
    #[arg(long = "task", short = 't', value_name = "ID")]
    pub tasks: Vec<String>,
    /// The agent phase's network: the task's `network_mode` or none (default: runner.agent_network).
    #[arg(long, value_name = "task|none", value_parser = ["task", "none"])]
    pub agent_network: Option<String>,
    /// The verifier phase's network: the task's `network_mode` or none (default: runner.verifier_network).
    #[arg(long, value_name = "task|none", value_parser = ["task", "none"])]
    pub verifier_network: Option<String>,
}

fn network_choice(arg: &Option<String>, current: NetworkChoice) -> NetworkChoice {
    match arg.as_deref() {
        Some("none") => NetworkChoice::None,
        Some("task") => NetworkChoice::Task,
        _ => current,
    }
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    match args.command {
        Sub::List(a) => list(ui, a),
        Sub::Check(a) => check(ui, a),
    }
}

/// The experiment of the current repository, when there is one.
fn experiment() -> Result<Option<(Experiment, PathBuf)>> {
    let file = Path::new(".harness/experiment.yaml");
    if !file.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    Ok(Some((Experiment::parse(&text, file)?, PathBuf::from("."))))
}

/// The suite directory: an argument (a path or `builtin:NAME`) or experiment.yaml's suite. A
/// bundled suite is extracted to a temp dir that lives as long as the returned guard.
fn suite_dir(
    arg: Option<PathBuf>,
    exp: &Option<(Experiment, PathBuf)>,
) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    let spec = match (arg, exp) {
        (Some(p), _) => p.to_string_lossy().into_owned(),
        (None, Some((e, root))) if !e.suite.path.starts_with("builtin:") => {
            root.join(&e.suite.path).to_string_lossy().into_owned()
        }
        (None, Some((e, _))) => e.suite.path.clone(),
        (None, None) => {
            return Err(Error::usage_hint(
                "no suite given",
                "pass a suite directory: `git harness tasks check path/to/suite`",
            ));
        }
    };
    if let Some(name) = spec.strip_prefix("builtin:") {
        let tmp = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
        git_harness::support::assets::extract_suite(name, tmp.path())?;
        return Ok((tmp.path().to_path_buf(), Some(tmp)));
    }
    if spec.contains("://") {
        return Err(Error::usage_hint(
            format!("suite `{spec}` is a URL"),
            "clone it and pass the directory",
        ));
    }
    Ok((PathBuf::from(spec), None))
}

fn list(ui: &mut Ui, a: ListArgs) -> Result<i32> {
    let exp = experiment()?;
    let (dir, _keep) = suite_dir(a.suite, &exp)?;
    let suite = task::load_suite(&dir)?;
    for t in &suite.tasks {
        let fmt = match t.format {
            task::TaskFormat::Harbor => "harbor",
            task::TaskFormat::Tb1 => "tb1",
        };
        ui.out(format!(
            "{}\t{}\tagent {}s\tverifier {}s\t{}",
            t.id,
            fmt,
            t.agent_timeout.as_secs(),
            t.verifier_timeout.as_secs(),
            &t.checksum[..12]
        ));
    }
    Ok(exit::SUCCESS)
}

fn check(ui: &mut Ui, a: CheckArgs) -> Result<i32> {
    let exp = experiment()?;
    let (dir, _keep) = suite_dir(a.suite, &exp)?;
    let suite = task::load_suite(&dir)?;
    let mut tasks = suite.tasks.clone();
    if !a.tasks.is_empty() {
        for id in &a.tasks {
            if suite.get(id).is_none() {
                return Err(Error::usage(format!("no task `{id}` in {}", dir.display())));
            }
        }
        tasks.retain(|t| a.tasks.contains(&t.id));
    }
    let mut cfg: RunnerConfig = exp
        .as_ref()
        .map(|(e, _)| e.runner.clone())
        .unwrap_or_default();
    match a.runner.as_deref() {
        Some("docker") => cfg.kind = RunnerKind::Docker,
        Some("local") => cfg.kind = RunnerKind::Local,
        Some("auto") => cfg.kind = RunnerKind::Auto,
        Some("kubernetes") => cfg.kind = RunnerKind::Kubernetes,
        _ => {}
    }
    git_harness::sandbox::image_map::extend_from_args(&mut cfg.image_map, &a.image_map)?;
    cfg.agent_network = network_choice(&a.agent_network, cfg.agent_network);
    cfg.verifier_network = network_choice(&a.verifier_network, cfg.verifier_network);
    match a.pull.as_deref() {
        Some("missing") => cfg.pull = PullPolicy::Missing,
        Some("never") => cfg.pull = PullPolicy::Never,
        Some("always") => cfg.pull = PullPolicy::Always,
        _ => {}
    }
    let opts = ProviderOptions {
        bwrap: if a.no_bwrap {
            Bwrap::Never
        } else if a.bwrap {
            Bwrap::Always
        } else {
            Bwrap::Auto
        },
        hidden: vec![dir.clone()],
        ..Default::default()
    };
    let provider = sandbox::provider(&cfg, &opts)?;
    if let Some(w) = provider.isolation_warning() {
        ui.warn(w);
    }
    let concurrency = a.concurrency.unwrap_or(cfg.trial_concurrency()).max(1);
    ui.note(format!(
        "checking {} task{} with {} ({} at a time)",
        tasks.len(),
        if tasks.len() == 1 { "" } else { "s" },
        provider.name(),
        concurrency
    ));
    let rt = super::session::runtime()?;
    let vopts = VerifyOptions::default();
    let mut interrupt = super::signal::interrupts();
    let (broken, setup) = (
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
    );
    let shown = std::sync::Mutex::new(&mut *ui);
    // Each task as soon as both its trials ended, with their wall time.
    let report = |c: &git_harness::eval::builtin::TaskCheck| {
        let Ok(mut ui) = shown.lock() else { return };
        let secs = format!("({:.1}s)", c.elapsed_ms as f64 / 1000.0);
        let problems = c.problems();
        if problems.is_empty() {
            ui.out(format!("ok      {}  {secs}", c.task));
            return;
        }
        // A setup problem says nothing about the task: it could not be tried here.
        let label = if c.setup {
            setup.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            "SETUP "
        } else {
            broken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            "BROKEN"
        };
        ui.out(format!("{label}  {}  {secs}", c.task));
        for p in problems {
            ui.out(format!("        {p}"));
        }
    };
    let checks = rt.block_on(async {
        let _ = provider.sweep().await;
        // Images are pulled before the checks, with progress; a failure is reported by the
        // check of its task, unless it is the user's to fix (e.g. TLS certificates that do not
        // match): then nothing is tried.
        for t in &tasks {
            if let Err(e) = provider.prepare(t, &mut |n| eprintln!("{n}")).await
                && e.kind() == git_harness::error::Kind::Usage
            {
                return Err(e);
            }
        }
        let _busy = super::signal::Busy::new();
        let work = check_tasks_with(Arc::clone(&provider), &tasks, concurrency, &vopts, &report);
        // Checks are short: the first interrupt drops them, and their sandboxes with them.
        tokio::select! {
            c = work => Ok(c),
            _ = interrupt.changed() => {
                let _ = provider.sweep_own().await;
                Err(Error::Interrupted { run: None })
            }
        }
    })?;
    let (broken, setup) = (broken.into_inner(), setup.into_inner());
    let mut summary = format!(
        "{} task{} checked, {broken} broken",
        checks.len(),
        if checks.len() == 1 { "" } else { "s" }
    );
    if setup > 0 {
        summary.push_str(&format!(
            ", {setup} could not be tried here (setup problems: see each hint)"
        ));
    }
    ui.out(summary);
    Ok(if broken > 0 {
        exit::NEGATIVE
    } else if setup > 0 {
        exit::CANNOT_TEST
    } else {
        exit::SUCCESS
    })
}
