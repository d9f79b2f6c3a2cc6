//! `git harness export`: convert a trial's trace to other formats.

use std::path::{Path, PathBuf};

use git_harness::agent::{Trace, atif};
use git_harness::error::IoContext;
use git_harness::eval::record::{TrialRef, trial_trace};
use git_harness::method;
use git_harness::{Error, Result, exit};

use super::Ui;

/// Export a trace as an ATIF trajectory.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The trace to export as ATIF v1.7: a trial of a run (`<run>:<task>#<n>`, as `mine` and
    /// `trace` name them) or a trace file (trace.json).
    #[arg(long, value_name = "TRIAL|FILE")]
    pub atif: Option<String>,
    /// Write to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let Some(source) = args.atif else {
        return Err(Error::usage_hint(
            "nothing to export",
            "pass --atif <run>:<task>#<n> or --atif TRACE_FILE",
        ));
    };
    let trace = load(&source)?;
    let text = serde_json::to_string_pretty(&atif::to_atif(&trace))
        .map_err(|e| Error::Internal(format!("serialize the ATIF trajectory: {e}")))?;
    match args.output {
        Some(out) => std::fs::write(&out, text + "\n").at(&out)?,
        None => ui.out(text),
    }
    Ok(exit::SUCCESS)
}

/// A trace file when one exists at `source`, else a trial of a recorded run.
fn load(source: &str) -> Result<Trace> {
    let path = Path::new(source);
    if path.is_file() {
        return Trace::read(path);
    }
    if let Some(at) = TrialRef::parse(source) {
        let ws = method::open_workspace()?;
        return trial_trace(&ws.repo, &ws.state_dir(), &at).map(|(_, t)| t);
    }
    Err(Error::usage_hint(
        format!("no trace file `{source}`"),
        "give a trace file or a trial of a run as `<run>:<task>#<n>` (runs: `git harness status`)",
    ))
}
