//! `git harness report`: the lineage for people — a plain summary, markdown for a pull request,
//! or one self-contained HTML page.

use std::path::PathBuf;

use git_harness::method;
use git_harness::report::{self, ReportOptions};
use git_harness::{Error, Result, exit};

use super::Ui;

/// Report the lineage of main: pass rates per version with 95% intervals, promotions and their
/// evidence, rejected proposals, test-split openings, a task × version matrix, tokens and cost.
///
/// Without a format flag, prints the summary and one line per version. Read-only: everything
/// comes from refs and notes.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Write one self-contained HTML page (inline SVG and CSS, no network) to FILE (`-`: stdout).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Print a compact markdown summary fit for a pull request.
    #[arg(long)]
    pub markdown: bool,
    /// Start the lineage at REV (a commit on main's first-parent history; it is shown).
    #[arg(long, value_name = "REV")]
    pub since: Option<String>,
    /// Open the sealed test split: evaluate REV (default main) on it and log the opening in
    /// refs/harness/test-log. The only command that runs test-split tasks.
    #[arg(long = "final")]
    pub final_: bool,
    /// With --final: the revision to evaluate [default: main].
    #[arg(requires = "final_")]
    pub rev: Option<String>,
    /// With --final: also evaluate this bundled template harness on the test split (e.g.
    /// `checklist`, the human-written baseline).
    #[arg(long, requires = "final_")]
    pub baseline: Vec<String>,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    if args.final_ {
        return super::report_final::run_final(ui, args.rev, &args.baseline);
    }
    let ws = method::open_workspace()?;
    let opts = ReportOptions {
        since: args.since.clone(),
    };
    let data = report::collect(&ws, &opts)?;
    for w in &data.warnings {
        ui.warn(w);
    }
    if let Some(path) = &args.html {
        let page = report::html::render(&data)?;
        if path.as_os_str() == "-" {
            ui.out(page);
        } else {
            std::fs::write(path, &page).map_err(|e| Error::io(path, e))?;
            ui.note(format!(
                "wrote {} ({} versions, {} bytes)",
                path.display(),
                data.versions.len(),
                page.len()
            ));
        }
    }
    if args.markdown {
        ui.out(report::markdown::lineage(&data));
    }
    if args.html.is_none() && !args.markdown {
        print_text(ui, &data);
    }
    Ok(exit::SUCCESS)
}

fn print_text(ui: &mut Ui, r: &report::LineageReport) {
    for line in report::summary_lines(r) {
        ui.out(line);
    }
    ui.out("");
    let rate = |m: Option<&report::data::Measurement>| match m {
        Some(m) => format!(
            "{:>4.0}% {:>7}",
            m.rate.rate * 100.0,
            format!("{}/{}", m.rate.passes, m.rate.trials)
        ),
        None => format!("{:>13}", "-"),
    };
    ui.out(ui.paint(
        "1",
        &format!(
            "{:<5} {:<10} {:>13} {:>13}  change",
            "", "commit", "held_in", "validation"
        ),
    ));
    for v in &r.versions {
        let kind = match v.kind {
            "promotion" => ui.paint("32", "+"),
            "override" => ui.paint("31", "!"),
            _ => " ".into(),
        };
        ui.out(format!(
            "{:<5} {:<10} {} {}  {kind} {}",
            v.label,
            v.short,
            rate(v.held_in.as_ref()),
            rate(v.validation.as_ref()),
            v.subject
        ));
    }
}
