//! `git harness export`: convert a trial's trace to other formats.

use std::path::PathBuf;

use git_harness::agent::{Trace, atif};
use git_harness::error::IoContext;
use git_harness::{Error, Result, exit};

use super::Ui;

/// Export a trace as an ATIF trajectory.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The trace file (trace.json) to export as ATIF v1.7.
    #[arg(long, value_name = "TRACE")]
    pub atif: Option<PathBuf>,
    /// Write to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let Some(path) = args.atif else {
        return Err(Error::usage_hint("nothing to export", "pass --atif TRACE"));
    };
    let trace = Trace::read(&path)?;
    let text = serde_json::to_string_pretty(&atif::to_atif(&trace))
        .map_err(|e| Error::Internal(format!("serialize the ATIF trajectory: {e}")))?;
    match args.output {
        Some(out) => std::fs::write(&out, text + "\n").at(&out)?,
        None => ui.out(text),
    }
    Ok(exit::SUCCESS)
}
