//! The sealed test split: opened only by `report --final`, and every opening is appended to
//! `refs/harness/test-log`, so how often the test split was looked at is public.

use crate::error::Result;
use crate::eval::Totals;
use crate::eval::run::{EvalContext, RunRequest, evaluate};
use crate::eval::schedule::Observer;
use crate::experiment::Split;
use crate::lineage::{self, BaselineResult, TestLogEntry};
use crate::workspace::Workspace;

#[derive(Debug, Clone)]
pub struct FinalReport {
    pub entry: TestLogEntry,
    /// Openings before this one.
    pub previous_openings: usize,
    pub totals: Totals,
    pub baselines: Vec<(String, Totals)>,
}

/// Evaluate `rev` (and the named baseline templates) on the test split and log the opening.
pub async fn open_test_split(
    ws: &Workspace,
    ctx: &EvalContext,
    rev: &str,
    baselines: &[String],
    observer: &mut dyn Observer,
) -> Result<FinalReport> {
    let repo = &ws.repo;
    let previous = lineage::test_log_entries(repo)?.len();
    let commit = lineage::resolve_commit(repo, rev)?;
    let mut req = RunRequest::new(commit.id().to_string(), vec![Split::Test]);
    req.allow_test = true;
    let run = evaluate(ws, ctx, &req, observer, None, None).await?;
    let totals = Totals::of(&run.results);
    let main = lineage::main_commit(repo)?;
    let mut base_results = Vec::new();
    for name in baselines {
        let files: Vec<(String, String)> = crate::support::assets::harness_template(name)?
            .into_iter()
            .map(|(p, c)| (p, c.to_string()))
            .collect();
        let c = lineage::baseline_commit(repo, name, &files, &main)?;
        let mut req = RunRequest::new(c.to_string(), vec![Split::Test]);
        req.allow_test = true;
        let r = evaluate(ws, ctx, &req, observer, None, None).await?;
        base_results.push((name.clone(), Totals::of(&r.results), r.id));
    }
    let entry = TestLogEntry {
        opening: 0,
        harness: commit.id().to_string(),
        harness_tree: commit.tree_id().to_string(),
        fingerprint: ctx.fingerprint.clone(),
        passes: totals.passes,
        trials: totals.trials,
        infra_errors: totals.infra_errors,
        runs: std::iter::once(run.id.clone())
            .chain(base_results.iter().map(|b| b.2.clone()))
            .collect(),
        baselines: base_results
            .iter()
            .map(|(n, t, _)| BaselineResult {
                name: n.clone(),
                passes: t.passes,
                trials: t.trials,
                infra_errors: t.infra_errors,
            })
            .collect(),
        at: crate::eval::record::now(),
    };
    let entry = lineage::append_test_log(repo, entry)?;
    Ok(FinalReport {
        entry,
        previous_openings: previous,
        totals,
        baselines: base_results.into_iter().map(|(n, t, _)| (n, t)).collect(),
    })
}
