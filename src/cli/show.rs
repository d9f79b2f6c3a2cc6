//! `git harness show`: the code-review view of a proposal.

use git_harness::lineage::history::tree_diff;
use git_harness::lineage::trailers::CommitMessage;
use git_harness::lineage::{self, Named};
use git_harness::method;
use git_harness::report::data::{Gated, RunCache, gated};
use git_harness::report::{self, why};
use git_harness::{Result, exit};

use super::Ui;

/// Show a proposal (or any harness commit): subject, rationale, evidence, trailers, the surface
/// diff against its parent, and validation results when present.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A proposal (`<round>/<slug>`, its branch, a rejected or promoted ref), a version (`v3`),
    /// a run id, or a revision.
    pub proposal: String,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let ws = method::open_workspace()?;
    let repo = &ws.repo;
    let (commit, named) = lineage::resolve_named(repo, &args.proposal)?;
    let label = match &named {
        Named::Proposal(p) => format!(
            "proposal {} ({}, {})",
            p.name(),
            p.state.as_str(),
            p.display_ref()
        ),
        Named::Version(n) => format!("version v{n}"),
        Named::Run(id) => format!("commit evaluated by run {id}"),
        Named::Revision => "commit".to_string(),
    };
    let msg = CommitMessage::parse(commit.message().unwrap_or_default())?;
    ui.out(ui.paint("1", &format!("{label}  {}", lineage::short(commit.id()))));
    ui.out(ui.paint("1", &msg.subject));
    ui.out("");
    if !msg.body.is_empty() {
        for line in msg.body.lines() {
            if line.trim().is_empty() {
                ui.out("");
            } else {
                ui.out(format!("    {line}"));
            }
        }
        ui.out("");
    }
    if !msg.trailers.is_empty() {
        for (k, v) in &msg.trailers {
            ui.out(format!("{}: {v}", ui.paint("36", k)));
        }
        ui.out("");
    }
    let parent_tree = commit.parent(0).ok().map(|p| p.tree_id());
    for d in tree_diff(repo, parent_tree, commit.tree_id())? {
        for line in d.unified().lines() {
            let painted = if line.starts_with("+++") || line.starts_with("---") {
                ui.paint("1", line)
            } else if line.starts_with('+') {
                ui.paint("32", line)
            } else if line.starts_with('-') {
                ui.paint("31", line)
            } else if line.starts_with("@@") {
                ui.paint("36", line)
            } else {
                line.to_string()
            };
            ui.out(painted);
        }
    }
    let note = lineage::read_note(repo, commit.id())?;
    if !note.validations.is_empty() {
        ui.out("");
        ui.out(ui.paint("1", "Validation"));
        let mut cache = RunCache::default();
        for r in &note.validations {
            print_gated(ui, &gated(repo, &mut cache, r));
        }
    }
    Ok(exit::SUCCESS)
}

/// A validation record in full: verdict and reason, the per-split table, fixed and broke tasks
/// (as the gate counted them), the statistic and the rule, early stopping, evidence and cost.
/// Shared by `show` and `why`.
pub fn print_gated(ui: &mut Ui, g: &Gated) {
    let verdict = match g.verdict.as_str() {
        "accept" => ui.paint("32", "ACCEPT"),
        "reject" => ui.paint("31", "REJECT"),
        other => ui.paint("33", &other.to_uppercase()),
    };
    let parent = g
        .record
        .as_ref()
        .map(|r| r.parent.chars().take(10).collect::<String>())
        .unwrap_or_default();
    ui.out(format!(
        "  {verdict} ({} gate) against parent {parent}: {}",
        g.gate, g.reason
    ));
    ui.out(format!(
        "    {:<11} {:>9} {:>11} {:>5}  fixed / broke",
        "split", "parent", "candidate", "Δ"
    ));
    for (split, c, fixed, broke) in [
        (
            "held_in",
            &g.held_in,
            &g.flips.fixed_held_in,
            &g.flips.broke_held_in,
        ),
        (
            "validation",
            &g.validation,
            &g.flips.fixed_validation,
            &g.flips.broke_validation,
        ),
    ] {
        ui.out(format!(
            "    {:<11} {:>9} {:>11} {:>+5}  {} / {}",
            split,
            format!("{}/{}", c.parent_passes, c.parent_trials),
            format!("{}/{}", c.candidate_passes, c.candidate_trials),
            c.delta(),
            fixed.len(),
            broke.len()
        ));
    }
    for (label, list, colour) in [
        ("fixed on held_in", &g.flips.fixed_held_in, "32"),
        ("broke on held_in", &g.flips.broke_held_in, "31"),
        ("fixed on validation", &g.flips.fixed_validation, "32"),
        ("broke on validation", &g.flips.broke_validation, "31"),
    ] {
        if !list.is_empty() {
            ui.out(format!(
                "    {}: {}",
                ui.paint(colour, label),
                list.join(", ")
            ));
        }
    }
    if let Some(s) = &g.statistic {
        ui.out(format!("    statistic   {s}"));
    }
    let alpha = g.decision.as_ref().map(|d| d.statistic.alpha);
    ui.out(format!(
        "    rule        {}",
        why::rule_text(&g.gate, alpha)
    ));
    if let Some(e) = &g.early_stop {
        ui.out(format!("    stopped early: {e}"));
    }
    ui.out(format!(
        "    cost        {} trials executed, {} tokens, ${:.4}",
        g.cost.trials,
        report::human_tokens(g.cost.tokens),
        g.cost.cost_usd
    ));
    // An empty parent run: main's side came from its cache alone (pooled statistic).
    for (i, run) in g.runs.iter().enumerate().filter(|(_, r)| !r.is_empty()) {
        ui.out(format!(
            "    evidence    refs/harness/runs/{run}{}",
            if i == 0 { " (parent)" } else { " (candidate)" }
        ));
    }
}
