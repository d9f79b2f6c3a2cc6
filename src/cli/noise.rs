//! `git harness noise`: per-task flakiness of main and the gate's minimum detectable effect.

use git_harness::experiment::Split;
use git_harness::lineage;
use git_harness::method::noise;
use git_harness::workspace::Workspace;
use git_harness::{Result, exit};

use super::Ui;
use super::progress::Bar;
use super::session::Session;

/// Measure the noise floor: run REV (default main) N times per task on held_in and validation
/// (cached trials reused), show each held-in task's pass rate and whether it flips across
/// repeats (flaky), count the flaky validation tasks, and print the minimum detectable effect
/// of the configured gate (80% power, at the design's last look).
///
/// The flaky tasks (over every cached trial of REV's tree) go into REV's note, where `status`
/// and `report` show them. The trials it runs are cached: later validations read them as
/// evidence of the parent's per-task pass rates (the "broke" test, the pooled statistic) and,
/// with `gate.flaky` other than `count`, the trials beyond the design's last look decide which
/// tasks are flaky.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Revision [default: main].
    pub rev: Option<String>,
    /// Trials per task.
    #[arg(long, default_value_t = 8)]
    pub trials: u32,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    if args.trials < 2 {
        return Err(git_harness::Error::usage(
            "--trials must be at least 2: flakiness needs repeats",
        ));
    }
    let s = Session::with(Workspace::open()?)?;
    let ws = &s.ws;
    let rev = args.rev.unwrap_or_else(|| "main".to_string());
    let commit = lineage::resolve_commit(&ws.repo, &rev)?.id();
    let n = s.block_on(async {
        let ctx = s.context(ui, &Session::interruptible()).await?;
        let mut bar = Bar::new(ui.progress, "noise");
        let out = noise::measure(ws, &ctx, commit, args.trials, &mut bar).await;
        bar.finish();
        out.map(|n| (n, ctx.fixed.experiment.gate.clone()))
    })?;
    let (n, gate) = n;
    ui.out(format!(
        "noise of {rev} ({}): {} trials per task on held_in and validation, run {} ({} executed)",
        lineage::short(commit),
        args.trials,
        n.run,
        n.executed
    ));
    ui.out(format!(
        "  {:<28} {:>9} {:>6}  flaky",
        "held_in task", "passes", "rate"
    ));
    // Held-in task names may be shown; validation tasks only as counts.
    for t in n.tasks.iter().filter(|t| t.split == Split::HeldIn) {
        ui.out(format!(
            "  {:<28} {:>9} {:>5.0}%  {}",
            t.task,
            format!("{}/{}", t.passes, t.trials),
            t.rate() * 100.0,
            if t.flaky() { "flaky" } else { "" }
        ));
    }
    let count = |split: Split| {
        let ts: Vec<_> = n.tasks.iter().filter(|t| t.split == split).collect();
        (ts.len(), ts.iter().filter(|t| t.flaky()).count())
    };
    let (hi, hf) = count(Split::HeldIn);
    let (vi, vf) = count(Split::Validation);
    ui.out(format!(
        "flaky: {hf} of {hi} held_in task(s), {vf} of {vi} validation task(s) flip across repeats"
    ));
    ui.out(format!(
        "recorded in the note of {}: {} of {} held_in and {} of {} validation task(s) flaky over all {} cached trials of its tree",
        lineage::short(commit),
        n.flaky.tasks.len(),
        n.flaky.held_in_tasks,
        n.flaky.validation.flaky,
        n.flaky.validation.of,
        n.flaky.from_trials
    ));
    if gate.flaky != git_harness::experiment::GateFlaky::Count {
        // The gate's own marks come from the parent's trials beyond the design's last look.
        let from = n.look.trials;
        if args.trials > from {
            ui.out(format!(
                "gate.flaky: {}: validations judge flakiness on trials {from}–{} ({} per task), which the test never reads",
                gate.flaky.as_str(),
                args.trials - 1,
                args.trials - from
            ));
        } else {
            ui.warn(format!(
                "gate.flaky: {} judges flakiness on trials from {from} on, beyond the design's last look; run `git harness noise --trials {}` to mark any task",
                gate.flaky.as_str(),
                2 * from
            ));
        }
    }
    let l = &n.look;
    let design = if l.of > 1 {
        format!("sequential, last of {} looks at {} trials", l.of, l.trials)
    } else {
        format!("fixed, {} trials", l.trials)
    };
    ui.out(format!(
        "minimum detectable effect: +{:.1} points of pass rate (80% power; {}, {design}, alpha {} at that look)",
        n.mde_points,
        match gate.rule {
            git_harness::experiment::GateRule::Paper => "strict test (the paper rule has no level)",
            git_harness::experiment::GateRule::Strict => "strict",
        },
        git_harness::gate::stats::fmt_level(l.alpha)
    ));
    Ok(exit::SUCCESS)
}
