//! `git harness why`: explain one promotion on main.

use git_harness::method;
use git_harness::report::why::{Explanation, explain};
use git_harness::{Result, exit};

use super::Ui;
use super::show::print_gated;

/// Explain a promotion: the proposal and evidence it came from, the effect the proposer
/// expected, the per-task flips the gate measured on held_in and validation, the statistic and
/// rule, and what the validation cost.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The promotion: its merge commit, its version (`v3`), the promoted proposal
    /// (`<round>/<slug>`), or a proposal that a promoted merged candidate combined.
    pub promotion: String,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let ws = method::open_workspace()?;
    let e = explain(&ws, &args.promotion)?;
    match args.format {
        Format::Json => ui.out(serde_json::to_string_pretty(&e).expect("json")),
        Format::Text => print_text(ui, &e),
    }
    Ok(exit::SUCCESS)
}

fn print_text(ui: &mut Ui, e: &Explanation) {
    ui.out(ui.paint("1", &format!("v{} {}  {}", e.version, e.short, e.subject)));
    ui.out(format!(
        "  merged {} onto {}",
        e.date,
        &e.parent[..e.parent.len().min(10)]
    ));
    ui.out("");
    ui.out(ui.paint("1", "Proposal"));
    ui.out(format!(
        "  {} {}{}",
        e.proposal_ref,
        &e.proposal_commit[..e.proposal_commit.len().min(10)],
        e.round
            .as_ref()
            .map(|r| format!("  (round {r})"))
            .unwrap_or_default()
    ));
    ui.out(format!("  {}", e.proposal_subject));
    for (k, v) in [
        ("surface", &e.surface),
        ("cluster", &e.cluster),
        ("evidence", &e.evidence),
        ("proposer", &e.proposer),
    ] {
        if let Some(v) = v {
            ui.out(format!("  {:<9} {v}", k));
        }
    }
    if !e.rationale.is_empty() {
        ui.out("");
        for line in e.rationale.lines() {
            ui.out(format!("    {line}"));
        }
    }
    ui.out("");
    ui.out(ui.paint("1", "Expected (proposer)"));
    ui.out(format!(
        "  effect: {}",
        e.expected_effect.as_deref().unwrap_or("(not stated)")
    ));
    if let Some(r) = &e.regression_risk {
        ui.out(format!("  regression risk: {r}"));
    }
    ui.out("");
    ui.out(ui.paint("1", "Measured (gate)"));
    match &e.gated {
        Some(g) => print_gated(ui, g),
        None => ui.out(format!(
            "  no validation record of this proposal against its parent (verdict trailer: {})",
            e.verdict
        )),
    }
    if let Some(o) = &e.overridden {
        ui.out(format!(
            "  {} {o}",
            ui.paint("31", "promoted by override (Harness-Override):")
        ));
    }
}
