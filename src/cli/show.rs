//! `git harness show`: the code-review view of a proposal.

use git_harness::lineage::history::tree_diff;
use git_harness::lineage::trailers::CommitMessage;
use git_harness::lineage::{self, ProposalState, ValidationRecord};
use git_harness::workspace::Workspace;
use git_harness::{Result, exit};

use super::Ui;

/// Show a proposal (or any harness commit): subject, rationale, evidence, trailers, the surface
/// diff against its parent, and validation results when present.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A proposal (`<round>/<slug>`, its branch, a rejected ref) or a revision.
    pub proposal: String,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let ws = Workspace::open()?;
    let repo = &ws.repo;
    let (commit, label) = match lineage::resolve_proposal(repo, &args.proposal) {
        Ok(p) => {
            let state = match p.state {
                ProposalState::Open => "open",
                ProposalState::Rejected => "rejected",
            };
            (
                repo.find_commit(p.commit)
                    .map_err(|e| git_harness::Error::Git {
                        context: "read proposal".into(),
                        source: e,
                    })?,
                format!("proposal {} ({state}, {})", p.name(), p.display_ref()),
            )
        }
        Err(_) => {
            let c = lineage::resolve_commit(repo, &args.proposal)?;
            (c, "commit".to_string())
        }
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
        for r in &note.validations {
            print_validation(ui, r);
        }
    }
    Ok(exit::SUCCESS)
}

pub fn print_validation(ui: &mut Ui, r: &ValidationRecord) {
    let verdict = match r.verdict {
        lineage::Verdict::Accept => ui.paint("32", "ACCEPT"),
        lineage::Verdict::Reject => ui.paint("31", "REJECT"),
        lineage::Verdict::Indecisive => ui.paint("33", "INDECISIVE"),
    };
    ui.out(format!(
        "  {verdict} ({} gate) against parent {}: {}",
        r.gate,
        &r.parent[..10],
        r.reason
    ));
    ui.out(format!("    held_in     {}", r.held_in.describe()));
    ui.out(format!("    validation  {}", r.validation.describe()));
    if let Some(s) = &r.statistic {
        ui.out(format!("    statistic   {s}"));
    }
    if let Some(e) = &r.early_stop {
        ui.out(format!("    stopped early: {e}"));
    }
}
