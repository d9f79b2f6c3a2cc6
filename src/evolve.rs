//! The loop: evaluate main, mine, propose K, validate each, promote what the gate accepts
//! (re-gating the merge of several accepted edits), round after round. Every phase leaves refs,
//! so a re-run after a crash resumes without paying twice (trials come from the cache).

use crate::error::Result;
use crate::eval::run::{EvalContext, RunRequest, evaluate};
use crate::eval::schedule::Observer;
use crate::experiment::Split;
use crate::lineage;
use crate::mine::{BUNDLE_FILE, Bundle, mine_run};
use crate::workspace::Workspace;

/// Evaluate `rev` on held_in (cached when possible), mine its failures, store the bundle with
/// the run.
pub async fn mine_rev(
    ws: &Workspace,
    ctx: &EvalContext,
    rev: &str,
    observer: &mut dyn Observer,
) -> Result<Bundle> {
    let req = RunRequest::new(rev.to_string(), vec![Split::HeldIn]);
    let run = evaluate(ws, ctx, &req, observer, None, None).await?;
    let bundle = mine_run(&ws.repo, &ctx.state_dir, &run.id, &ctx.fixed.splits.held_in)?;
    let json = serde_json::to_vec_pretty(&bundle).expect("bundle serializes");
    lineage::add_run_files(
        &ws.repo,
        &run.id,
        &[(BUNDLE_FILE.to_string(), json)],
        "Mined failure clusters\n",
    )?;
    Ok(bundle)
}
