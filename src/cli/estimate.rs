//! `git harness estimate`: what a run or an evolve will cost, before anything is spent.

use git_harness::eval::context::Overrides;
use git_harness::experiment::Split;
use git_harness::method::estimate::{Estimate, estimate_evolve, estimate_run};
use git_harness::{Result, exit};

use super::Ui;
use super::args::Format;
use super::session::Session;

/// Predict trials, tokens, cost and time of a run or an evolve from the per-task averages of
/// trials already recorded; cached trials are free.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub format: Format,
}

#[derive(clap::Subcommand, Debug)]
pub enum What {
    /// A run of REV on held_in and validation.
    Run {
        rev: Option<String>,
        #[arg(long)]
        trials: Option<u32>,
    },
    /// An evolve (upper bound: no early stopping).
    Evolve {
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        #[arg(short = 'k')]
        k: Option<usize>,
    },
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let s = Session::open()?;
    let ws = &s.ws;
    let est = s.block_on(async {
        let ctx = s
            .quiet_context(&Overrides {
                no_model: true,
                ..Default::default()
            })
            .await?;
        match &args.what {
            What::Run { rev, trials } => {
                estimate_run(
                    ws,
                    &ctx,
                    rev.as_deref().unwrap_or("HEAD"),
                    &[Split::HeldIn, Split::Validation],
                    trials.unwrap_or(ctx.fixed.experiment.trials),
                )
                .await
            }
            What::Evolve { rounds, k } => estimate_evolve(
                ws,
                &ctx,
                *rounds,
                k.unwrap_or(ctx.fixed.experiment.proposer.k),
            ),
        }
    })?;
    print(ui, &est, args.format);
    Ok(exit::SUCCESS)
}

fn print(ui: &mut Ui, e: &Estimate, format: Format) {
    if format == Format::Json {
        ui.out(serde_json::to_string_pretty(e).expect("json"));
        return;
    }
    ui.out(format!("Estimate for {}", e.what));
    ui.out(format!(
        "  trials      {} ({} cached, {} to execute)",
        e.trials, e.cached, e.to_execute
    ));
    ui.out(format!("  tokens      {:.0}", e.tokens));
    ui.out(format!("  cost        ${:.4}", e.cost_usd));
    ui.out(format!(
        "  time        {:.0} s at the configured concurrency",
        e.seconds
    ));
    if e.unseen_tasks > 0 {
        ui.out(format!(
            "  ({} trials of tasks never run before are priced at the overall average)",
            e.unseen_tasks
        ));
    }
    ui.out(format!("  basis: {}", e.basis));
}
