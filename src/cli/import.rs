//! `git harness import`: runs made elsewhere as run records.

use std::path::PathBuf;

use git_harness::eval::harbor::{ImportOptions, import};
use git_harness::method;
use git_harness::{Result, exit, lineage};

use super::Ui;

/// Record runs made by another tool as a run of a harness commit, for `mine` and `propose`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand, Debug)]
pub enum What {
    /// A Harbor job directory (jobs/<date>/): each trial's result.json, verifier/ output and
    /// agent/trajectory.json (ATIF). Trials without a trajectory count for pass rates;
    /// Harbor's infrastructure exceptions become infra trials; test-split tasks are left out.
    /// Importing the same job again changes nothing.
    Harbor {
        job_dir: PathBuf,
        /// Harness revision the trials were made with [default: main].
        #[arg(long)]
        rev: Option<String>,
    },
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let ws = method::open_workspace()?;
    let What::Harbor { job_dir, rev } = args.what;
    let rev = rev.unwrap_or_else(|| lineage::main_branch(&ws.repo));
    let out = import(&ws, &ImportOptions { job_dir, rev })?;
    let commit = &out.harness_commit[..10.min(out.harness_commit.len())];
    if out.already {
        ui.out(format!(
            "Run {} of {commit} already holds this job ({} trials); nothing written",
            out.run, out.trials
        ));
        return Ok(exit::SUCCESS);
    }
    ui.out(format!(
        "Run {} of {commit}: {} trials imported ({} with a trajectory, {} infra)",
        out.run, out.trials, out.with_trajectory, out.infra
    ));
    if out.sealed > 0 {
        ui.note(format!(
            "{} trials of test-split tasks left out: the test split is sealed",
            out.sealed
        ));
    }
    if out.unsplit > 0 {
        ui.note(format!(
            "{} trials of tasks in no split left out (`git harness split`)",
            out.unsplit
        ));
    }
    ui.note(format!(
        "next: `git harness mine --run {}`, `git harness propose --run {}`",
        out.run, out.run
    ));
    Ok(exit::SUCCESS)
}
