//! `git harness evolve`: the improvement loop.

use git_harness::lineage::{self, history::versions};
use git_harness::method::evolve::{EvolveOptions, EvolveOutcome, evolve};
use git_harness::model::Decoding;
use git_harness::workspace::Workspace;
use git_harness::{Result, exit};

use super::Ui;
use super::args::{GateArg, ProposerArg};
use super::progress::Bar;
use super::session::Session;

/// Repeat mine → propose → validate → promote, round by round.
///
/// Stops after --rounds, at a budget, or after --patience rounds without an accepted edit.
/// Every phase leaves refs (runs, proposals, validation records), so re-running after a crash
/// resumes where it stopped without paying twice.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Proposals per round [default: the experiment's proposer.k].
    #[arg(short = 'k')]
    pub k: Option<usize>,
    #[arg(long, value_enum)]
    pub proposer: Option<ProposerArg>,
    #[arg(long, value_enum)]
    pub gate: Option<GateArg>,
    /// Stop once this many trials were executed (cached trials are free).
    #[arg(long)]
    pub budget_trials: Option<u64>,
    /// Stop once this much was spent on model tokens.
    #[arg(long)]
    pub budget_usd: Option<f64>,
    /// Stop after this many rounds in a row without an accepted edit.
    #[arg(long, default_value_t = 2)]
    pub patience: u32,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let s = Session::open()?;
    let ws = &s.ws;
    let out = s.block_on(async {
        let ctx = s.context(ui, &Session::interruptible()).await?;
        let e = &ctx.fixed.experiment;
        let opts = EvolveOptions {
            rounds: args.rounds,
            k: args.k.unwrap_or(e.proposer.k),
            proposer: args.proposer.map_or(e.proposer.kind, ProposerArg::kind),
            rule: args.gate.map(GateArg::rule),
            budget_trials: args.budget_trials,
            budget_usd: args.budget_usd,
            patience: args.patience,
            model: ctx.model(),
            decoding: Decoding::from(&e.decoding),
        };
        let mut bar = Bar::new(ui.progress, "evolve");
        let out = evolve(ws, &ctx, &opts, &mut bar).await;
        bar.finish();
        out
    })?;
    print_lineage(ui, ws, &out)?;
    Ok(exit::SUCCESS)
}

/// The lineage table: version, surface, held-in and validation pass rates.
pub fn print_lineage(ui: &mut Ui, ws: &Workspace, out: &EvolveOutcome) -> Result<()> {
    let fixed = ws.fixed_on_main()?;
    let fp = ws.fingerprint(&fixed)?;
    let vs = versions(&ws.repo, Some(&fp))?;
    ui.out(format!(
        "Evolve stopped: {} ({} trials executed, ${:.4})",
        out.stopped, out.trials_executed, out.cost_usd
    ));
    ui.out(format!(
        "  {:<4} {:<10} {:<34} {:>14} {:>14}",
        "ver", "commit", "surface", "held_in", "validation"
    ));
    let rate = |s: &Option<lineage::RunSummary>| match s {
        Some(r) if r.trials == 0 => "no data".into(),
        Some(r) => format!("{:.1}% ({}/{})", r.pass_rate() * 100.0, r.passes, r.trials),
        None => "-".into(),
    };
    for (i, v) in vs.iter().enumerate() {
        if v.held_in.is_none() && v.validation.is_none() && v.proposal.is_none() {
            continue;
        }
        ui.out(format!(
            "  v{:<3} {:<10} {:<34} {:>14} {:>14}",
            i,
            &v.commit[..10],
            v.surface.clone().unwrap_or_else(|| "(initial)".into()),
            rate(&v.held_in),
            rate(&v.validation)
        ));
    }
    Ok(())
}
