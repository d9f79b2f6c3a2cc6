//! `git harness regrade`: verify a run's kept final workspaces again with the suite's current
//! verifiers, without running the agent or the model.

use git_harness::eval::Outcome;
use git_harness::eval::context::Overrides;
use git_harness::eval::regrade::{NO_KEPT_STATE_HINT, RegradeOutcome, regrade};
use git_harness::{Result, exit};

use super::Ui;
use super::args::{Format, RunnerArg};
use super::session::Session;

/// Re-score a run with the current verifiers, without running the agent again.
///
/// Each trial's final workspace, kept by `git harness run --keep-workspace`, is restored into
/// a fresh sandbox of its task as the suite has it now, and the task's verifier runs on it. The
/// verdicts are recorded as a new run (the current task checksums in its fingerprint,
/// `regraded_from` naming RUN); RUN itself is not changed. Trials without a kept workspace are
/// listed and skipped.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run to re-score (as `git harness status` lists it).
    pub run: String,
    /// Read the tasks (and their verifiers) from this suite instead of the experiment's.
    #[arg(long, value_name = "PATH")]
    pub suite: Option<std::path::PathBuf>,
    #[arg(long, value_enum)]
    pub runner: Option<RunnerArg>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let s = Session::open()?;
    let suite = match &args.suite {
        Some(p) => Some(std::path::absolute(p).map_err(|e| git_harness::Error::io(p, e))?),
        None => None,
    };
    let overrides = Overrides {
        runner: args.runner.map(RunnerArg::kind),
        // Only verifiers run: the model is never connected.
        no_model: true,
        suite,
        ..Default::default()
    };
    let out = s.block_on(async {
        let ctx = s.context(ui, &overrides).await?;
        let mut notes = |line: &str| eprintln!("{line}");
        regrade(&s.ws, &ctx, &args.run, &mut notes).await
    })?;
    print(ui, &out, args.format);
    let counted = out.results.iter().filter(|r| !r.is_infra()).count();
    Ok(if counted == 0 {
        exit::CANNOT_TEST
    } else {
        exit::SUCCESS
    })
}

fn word(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "pass",
        Outcome::Fail => "fail",
        Outcome::InfraError => "infra-error",
    }
}

fn print(ui: &mut Ui, o: &RegradeOutcome, format: Format) {
    if format == Format::Json {
        let v = serde_json::json!({
            "run": o.id,
            "regraded_from": o.source,
            "changes": o.changes.iter().map(|c| serde_json::json!({
                "task": c.task, "trial": c.trial,
                "before": word(c.before), "after": word(c.after),
            })).collect::<Vec<_>>(),
            "skipped": o.skipped.iter().map(|s| serde_json::json!({
                "task": s.task, "trial": s.trial, "reason": s.reason,
            })).collect::<Vec<_>>(),
            "results": o.results,
        });
        ui.out(serde_json::to_string_pretty(&v).expect("json"));
        return;
    }
    let flipped = o.changes.iter().filter(|c| c.before != c.after).count();
    ui.out(format!(
        "Run {} regrades {}: {} trial(s) verified again ({} changed), no agent run",
        o.id,
        o.source,
        o.changes.len(),
        flipped
    ));
    for c in &o.changes {
        let mark = if c.before == c.after { " " } else { "*" };
        ui.out(format!(
            "  {mark} {}#{}  {} -> {}",
            c.task,
            c.trial,
            word(c.before),
            word(c.after)
        ));
    }
    let totals = git_harness::eval::Totals::of(&o.results);
    ui.out(format!(
        "  pass rate {} ({}/{}, {} infra)",
        totals.pass_rate_text(),
        totals.passes,
        totals.trials,
        totals.infra_errors
    ));
    if !o.skipped.is_empty() {
        ui.warn(format!(
            "{} trial(s) of {} not regraded:",
            o.skipped.len(),
            o.source
        ));
        for s in &o.skipped {
            ui.warn(format!("  {}#{}: {}", s.task, s.trial, s.reason));
        }
        if o.skipped.iter().any(|s| s.reason == "no kept workspace") {
            ui.note(format!("hint: {NO_KEPT_STATE_HINT}"));
        }
    }
}
