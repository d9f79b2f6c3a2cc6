//! `git harness estimate`: what a run or an evolve will cost, before anything is spent.

use git_harness::eval::context::Overrides;
use git_harness::experiment::Split;
use git_harness::method::estimate::{Estimate, estimate_evolve, estimate_revalidate, estimate_run};
use git_harness::method::revalidate::{self, Select};
use git_harness::{Result, exit};

use super::Ui;
use super::args::Format;
use super::session::Session;

/// Predict trials, tokens, cost and time of a run, an evolve or a revalidation from the per-task averages of
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
    /// A revalidation (upper bound: every look of the design, in a new seed namespace).
    Revalidate {
        /// The promotion [default: the latest on main].
        #[arg(conflicts_with = "all")]
        rev: Option<String>,
        /// Every promotion on main, newest first.
        #[arg(long)]
        all: bool,
        /// With --all: at most the N newest.
        #[arg(long, value_name = "N", requires = "all")]
        last: Option<usize>,
        /// The seed namespace [default: the new one `revalidate` would use].
        #[arg(long)]
        seed: Option<u64>,
    },
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let s = Session::open()?;
    let ws = &s.ws;
    // A revalidation runs in a seed namespace: the cache is looked up under it.
    let mut overrides = Overrides {
        no_model: true,
        ..Default::default()
    };
    let mut versions = Vec::new();
    if let What::Revalidate {
        rev,
        all,
        last,
        seed,
    } = &args.what
    {
        let select = match (rev, all) {
            (Some(r), _) => Select::Rev(r.clone()),
            (None, true) => Select::All { last: *last },
            (None, false) => Select::Latest,
        };
        for p in revalidate::select(&ws.repo, &select)? {
            for c in [p.commit, p.parent] {
                if !versions.contains(&c) {
                    versions.push(c);
                }
            }
        }
        let experiment_seed = ws.fixed_on_main()?.experiment.seed;
        overrides.seed = Some(match seed {
            Some(s) => *s,
            None => revalidate::fresh_seed(&ws.repo, experiment_seed)?,
        });
    }
    let est = s.block_on(async {
        let ctx = s.quiet_context(&overrides).await?;
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
            What::Revalidate { .. } => {
                let what = format!(
                    "revalidate {} version(s) in seed namespace {} (upper bound)",
                    versions.len(),
                    ctx.seed
                );
                estimate_revalidate(ws, &ctx, &versions, what).await
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
