//! `git harness evolve`: the improvement loop.

use git_harness::eval::context::open_context;
use git_harness::experiment::{GateRule, ProposerKind};
use git_harness::lineage::{self, history::versions};
use git_harness::method;
use git_harness::method::evolve::{EvolveOptions, EvolveOutcome, evolve};
use git_harness::model::Decoding;
use git_harness::workspace::Workspace;
use git_harness::{Result, exit};

use super::Ui;
use super::progress::{Bar, runtime};

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
    pub proposer: Option<super::propose::ProposerArg>,
    #[arg(long, value_enum)]
    pub gate: Option<super::validate::GateArg>,
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
    let ws = method::open_workspace()?;
    let rt = runtime();
    let out = rt.block_on(async {
        let ctx = open_context(&ws, &super::signal::overrides()).await?;
        for w in &ctx.warnings {
            ui.warn(w);
        }
        let e = &ctx.fixed.experiment;
        let opts = EvolveOptions {
            rounds: args.rounds,
            k: args.k.unwrap_or(e.proposer.k),
            proposer: match args.proposer {
                Some(super::propose::ProposerArg::Model) => ProposerKind::Model,
                Some(super::propose::ProposerArg::Catalog) => ProposerKind::Catalog,
                None => e.proposer.kind,
            },
            rule: args.gate.map(|g| match g {
                super::validate::GateArg::Paper => GateRule::Paper,
                super::validate::GateArg::Strict => GateRule::Strict,
            }),
            budget_trials: args.budget_trials,
            budget_usd: args.budget_usd,
            patience: args.patience,
            model: ctx.model(),
            decoding: Decoding {
                temperature: e.decoding.temperature,
                max_tokens: e.decoding.max_tokens,
            },
        };
        let mut bar = Bar::new(ui.progress, "evolve");
        let mut log = |line: String| eprintln!("{line}");
        let out = evolve(&ws, &ctx, &opts, &mut bar, &mut log).await;
        bar.finish();
        out
    })?;
    print_lineage(ui, &ws, &out)?;
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
