//! Mining a revision: evaluate it on held-in (cached when possible), cluster its failures, store
//! the bundle with the run. Shared by `mine`, `propose` and every evolve round.

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
    if let Some(e) = crate::eval::no_evidence(&run.id, &run.results) {
        return Err(e);
    }
    let mut bundle = mine_run(&ws.repo, &ctx.state_dir, &run.id, &ctx.fixed.splits.held_in)?;
    if ctx.fixed.experiment.mine.diagnose == crate::experiment::Diagnose::Model
        && let Some(model) = ctx.model.as_deref()
    {
        let d = &ctx.fixed.experiment.decoding;
        crate::mine::diagnose::rediagnose(
            &mut bundle,
            model,
            d.into(),
            &ctx.fixed.experiment.prices,
        )
        .await?;
    }
    let json = serde_json::to_vec_pretty(&bundle).expect("bundle serializes");
    lineage::add_run_files(
        &ws.repo,
        &run.id,
        &[(BUNDLE_FILE.to_string(), json)],
        "Mined failure clusters\n",
    )?;
    Ok(bundle)
}
