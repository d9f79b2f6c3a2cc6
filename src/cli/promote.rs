//! `git harness promote`: merge an accepted proposal into main.

use git_harness::lineage;
use git_harness::method;
use git_harness::{Error, Result, exit};

use super::Ui;

/// Merge a proposal into main when its validation record says accept.
///
/// The record must be for exactly this candidate tree, main's current tree and the current
/// experiment fingerprint. The merge is built in memory and moves main compare-and-swap; a
/// clean checkout of main is updated.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The proposal (`<round>/<slug>` or its branch name).
    pub proposal: String,
    /// Promote without an accepting record (recorded as Harness-Override).
    #[arg(long, requires = "reason")]
    pub force: bool,
    /// Why the gate is overridden.
    #[arg(long)]
    pub reason: Option<String>,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    if args.reason.is_some() && !args.force {
        return Err(Error::usage("--reason is only meaningful with --force"));
    }
    let ws = method::open_workspace()?;
    let proposal = lineage::resolve_proposal(&ws.repo, &args.proposal)?;
    let fixed = ws.fixed_on_main()?;
    let fingerprint = ws.fingerprint(&fixed)?;
    let main = lineage::main_commit(&ws.repo)?;
    let note = lineage::read_note(&ws.repo, proposal.commit)?;
    let candidate_tree = ws
        .repo
        .find_commit(proposal.commit)
        .map_err(|e| Error::Git {
            context: "read proposal".into(),
            source: e,
        })?
        .tree_id();
    let record = note
        .validations
        .iter()
        .rev()
        .find(|r| r.matches(candidate_tree, main.tree_id(), &fingerprint));
    let report = record
        .map(git_harness::lineage::ValidationRecord::gate_report)
        .unwrap_or_else(|| "No validation record.".into());
    let force = if args.force {
        args.reason.as_deref()
    } else {
        None
    };
    let out = lineage::promote(&ws.repo, &proposal, &fingerprint, &report, force)?;
    ui.out(format!(
        "Promoted {} into {}: merge {} (was {})",
        proposal.name(),
        lineage::main_branch(&ws.repo),
        lineage::short(out.merge),
        lineage::short(out.main_before)
    ));
    if force.is_some() {
        ui.warn("promoted WITHOUT an accepting validation record (Harness-Override recorded)");
    }
    if let Some(why) = &out.kept_branch {
        ui.warn(format!("kept the branch {}: {why}", proposal.display_ref()));
    }
    if out.worktree_updated {
        ui.note("updated the checked-out worktree");
    }
    Ok(exit::SUCCESS)
}
