//! `git harness mine`: failure clusters of the held-in split.

use git_harness::method::mine_rev;
use git_harness::mine::{mine_run, render};
use git_harness::{Result, exit};

use super::Ui;
use super::args::ReportFormat;
use super::progress::Bar;
use super::session::Session;

/// Cluster the failed held-in trials of a harness revision by verifier-grounded signature.
///
/// Each failed trial gets (terminal cause, causal status, agent mechanism); clusters are exact
/// signature matches, most actionable first. Only the held-in split is read; infrastructure
/// errors are excluded. The bundle is stored with the run as mine/bundle.json.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Harness revision [default: main]; evaluated on held_in first (from cache when possible).
    pub rev: Option<String>,
    /// Mine an existing run instead.
    #[arg(long, conflicts_with = "rev")]
    pub run: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let s = Session::open()?;
    let ws = &s.ws;
    let bundle = match &args.run {
        Some(id) => {
            let fixed = ws.fixed_on_main()?;
            mine_run(&ws.repo, &ws.state_dir(), id, &fixed.splits.held_in)?
        }
        None => {
            let rev = args
                .rev
                .clone()
                .unwrap_or_else(|| git_harness::lineage::main_branch(&ws.repo));
            s.block_on(async {
                let ctx = s.context(ui, &Session::interruptible()).await?;
                let mut bar = Bar::new(ui.progress, "held_in");
                let b = mine_rev(ws, &ctx, &rev, &mut bar).await;
                bar.finish();
                b
            })?
        }
    };
    match args.format {
        ReportFormat::Text => ui.out(render::text(&bundle)),
        ReportFormat::Markdown => ui.out(render::markdown(&bundle)),
        ReportFormat::Json => ui.out(serde_json::to_string_pretty(&bundle).expect("json")),
    }
    Ok(exit::SUCCESS)
}
