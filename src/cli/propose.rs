//! `git harness propose`: bounded edits as evidence branches.

use git_harness::lineage::{self, keys};
use git_harness::method::mine_rev;
use git_harness::model::Decoding;
use git_harness::propose::{ProposeOutcome, RoundOptions, propose_round};
use git_harness::{Result, exit};

use super::Ui;
use super::args::ProposerArg;
use super::progress::Bar;
use super::session::Session;

/// Propose K distinct, minimal edits for the most actionable failure clusters of main.
///
/// Mines main's held-in failures (from cache when evaluated), asks the proposer (the
/// experiment's own model, or the offline remedy catalog) for K edits, checks each (one
/// declared surface, within bounds, parses, not a no-op or an earlier attempt, no task names)
/// and commits each valid one as branch harness/proposals/<round>/<slug> with its evidence.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of proposals [default: the experiment's proposer.k].
    #[arg(short = 'n', long = "count")]
    pub n: Option<usize>,
    /// Who proposes [default: the experiment's proposer.kind].
    #[arg(long, value_enum)]
    pub proposer: Option<ProposerArg>,
    /// Only this cluster (its rank or signature id from `git harness mine`).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Propose from the failures of this recorded run (e.g. one made by `import harbor`)
    /// instead of evaluating main's held-in split.
    #[arg(long, value_name = "ID")]
    pub run: Option<String>,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let s = Session::open()?;
    let ws = &s.ws;
    let out = s.block_on(async {
        let ctx = s.context(ui, &Session::interruptible()).await?;
        let e = &ctx.fixed.experiment;
        let proposer = args.proposer.map_or(e.proposer.kind, ProposerArg::kind);
        let mut bar = Bar::new(ui.progress, "held_in");
        let main = lineage::main_branch(&ws.repo);
        let bundle = match &args.run {
            Some(id) => {
                if let Some(e) = git_harness::eval::no_evidence(
                    id,
                    &git_harness::eval::record::read_run(&ws.repo, id)?.1,
                ) {
                    return Err(e);
                }
                git_harness::mine::mine_run(
                    &ws.repo,
                    &ctx.state_dir,
                    id,
                    &ctx.fixed.splits.held_in,
                )?
            }
            None => mine_rev(ws, &ctx, &main, &mut bar).await?,
        };
        bar.finish();
        let mut names = ctx.fixed.splits.held_in.clone();
        names.extend(ctx.fixed.splits.validation.iter().cloned());
        names.extend(ctx.fixed.splits.test.iter().cloned());
        let opts = RoundOptions {
            k: args.n.unwrap_or(e.proposer.k),
            proposer,
            cluster: args.cluster.clone(),
            model: ctx.model(),
            decoding: Decoding::from(&e.decoding),
            task_names: names,
            prices: e.prices.clone(),
        };
        propose_round(&ws.repo, &bundle, &opts).await
    })?;
    print_outcome(ui, &out);
    Ok(if out.created.is_empty() {
        exit::NEGATIVE
    } else {
        exit::SUCCESS
    })
}

pub fn print_outcome(ui: &mut Ui, out: &ProposeOutcome) {
    ui.out(format!(
        "Round {}: {} proposal(s)",
        out.round,
        out.created.len()
    ));
    for p in &out.created {
        ui.out(format!(
            "  {}  {}  [{}]",
            p.display_ref(),
            p.message.subject,
            p.message.get(keys::SURFACE).unwrap_or_default()
        ));
    }
    for r in &out.refused {
        ui.out(format!("  refused: {} — {}", r.title, r.reason));
    }
    for d in &out.declined {
        ui.out(format!("  declined: {d}"));
    }
}
