//! Re-scoring a recorded run without running its agent again: each trial's kept final
//! workspace (`run --keep-workspace`) is restored into a fresh sandbox of the task as the suite
//! has it now, and the verifier runs on it. The result is a new run (the current task checksums
//! in its fingerprint, `regraded_from` naming the source); the source run is never changed.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use git2::Oid;

use super::journal::RunMeta;
use super::record::{now, read_run, write_record};
use super::run::EvalContext;
use super::{InfraClass, Outcome, Overhead, TrialResult};
use crate::error::{Error, Result};
use crate::workspace::Workspace;

/// A trial of the source run that was not verified again, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub task: String,
    pub trial: u32,
    pub reason: String,
}

/// A regraded trial: its verdict before and after.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub task: String,
    pub trial: u32,
    pub before: Outcome,
    pub after: Outcome,
}

#[derive(Debug, Clone)]
pub struct RegradeOutcome {
    /// The new run, and its commit.
    pub id: String,
    pub run_commit: Oid,
    pub source: String,
    pub changes: Vec<Change>,
    pub skipped: Vec<Skipped>,
    pub results: Vec<TrialResult>,
}

/// The hint for trials that have no kept workspace.
pub const NO_KEPT_STATE_HINT: &str = "run the trials again with `git harness run --keep-workspace --no-cache` (or set runner.keep_workspace: true in .harness/experiment.yaml), then regrade that run";

/// Verify every trial of run `source` again on its kept workspace and record the new run.
/// Trials without a kept workspace (or whose task the suite no longer has) are skipped and
/// listed; when no trial can be regraded, nothing is recorded and the error says why.
pub async fn regrade(
    ws: &Workspace,
    ctx: &EvalContext,
    source: &str,
    notes: &mut (dyn FnMut(&str) + Send),
) -> Result<RegradeOutcome> {
    let repo = &ws.repo;
    let (record, results) = read_run(repo, source)?;
    let mut skipped = Vec::new();
    // What can be regraded: (the source result, where its kept workspace is, the task).
    let mut todo = Vec::new();
    // Trials whose agent changed the verifier's toolchain stay failed: a fresh sandbox would
    // not show what the agent did outside its workdir.
    let mut carried = Vec::new();
    for r in results {
        let skip = |reason: String| Skipped {
            task: r.task.clone(),
            trial: r.trial,
            reason,
        };
        if r.is_infra() {
            skipped.push(skip(
                "an infrastructure error: no final state to verify".into(),
            ));
            continue;
        }
        let Some(path) = r.workspace.clone() else {
            skipped.push(skip("no kept workspace".into()));
            continue;
        };
        let Some(task) = ctx.suite.get(&r.task) else {
            skipped.push(skip("the suite has no such task".into()));
            continue;
        };
        let holder = r.cached_from.clone().unwrap_or_else(|| source.to_string());
        if !r.verifier.tampered.is_empty() {
            let before = r.outcome;
            let mut r = r;
            r.cache_key = None;
            r.cached_from = Some(holder);
            carried.push((r, before));
            continue;
        }
        todo.push((r, holder, path, task.clone()));
    }
    if todo.is_empty() {
        let why = if skipped.iter().any(|s| s.reason == "no kept workspace") {
            NO_KEPT_STATE_HINT.to_string()
        } else {
            "regrade needs trials that ran to their verifier with a kept workspace".to_string()
        };
        return Err(Error::usage_hint(
            format!(
                "run {source} has no trial with a kept workspace to regrade ({} trial(s) skipped)",
                skipped.len()
            ),
            why,
        ));
    }
    // Images pulled or built once per task, before any trial.
    let mut prepared: BTreeMap<String, std::result::Result<(), String>> = BTreeMap::new();
    for (_, _, _, task) in &todo {
        if prepared.contains_key(&task.id) {
            continue;
        }
        let mut n = |s: &str| notes(s);
        let p = ctx
            .executors
            .prepare(task, &mut n)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        prepared.insert(task.id.clone(), p);
    }
    let concurrency = ctx.fixed.experiment.runner.concurrency.max(1);
    let prepared = &prepared;
    let mut done: Vec<(TrialResult, Outcome)> = futures_util::stream::iter(todo)
        .map(|(r, holder, path, task)| async move {
            let before = r.outcome;
            let regraded = match prepared.get(&task.id) {
                Some(Err(e)) => Err(InfraClass::Sandbox.error(e.clone())),
                _ => match crate::lineage::read_run_file(repo, &holder, &path)? {
                    None => Err(Error::Internal(format!(
                        "run {holder} names the kept workspace {path} but does not hold it"
                    ))),
                    Some(tar) => ctx.executors.regrade(&task, &tar).await,
                },
            };
            Ok::<_, Error>((regraded_result(r, holder, regraded), before))
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    done.extend(carried);
    done.sort_by(|a, b| {
        (&a.0.split, &a.0.task, a.0.trial).cmp(&(&b.0.split, &b.0.task, b.0.trial))
    });
    let changes = done
        .iter()
        .map(|(r, before)| Change {
            task: r.task.clone(),
            trial: r.trial,
            before: *before,
            after: r.outcome,
        })
        .collect();
    let mut results: Vec<TrialResult> = done.into_iter().map(|(r, _)| r).collect();
    let commit = Oid::from_str(&record.meta.harness_commit)
        .map_err(|e| Error::Internal(format!("run {source}: bad harness commit: {e}")))?;
    let meta = RunMeta {
        id: super::plan::new_run_id(commit),
        fingerprint: ctx.fingerprint.clone(),
        tasks: results
            .iter()
            .map(|r| r.task.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
        started_at: now(),
        no_cache: false,
        regraded_from: Some(source.to_string()),
        no_note: false,
        ..record.meta.clone()
    };
    let partial = !skipped.is_empty();
    let stop_reason = partial.then(|| {
        format!(
            "regrade of {source}: {} trial(s) without a kept state were skipped",
            skipped.len()
        )
    });
    let run_commit = write_record(
        repo,
        &ctx.state_dir,
        &meta,
        &mut results,
        partial,
        stop_reason,
        Overhead::default(),
    )?;
    Ok(RegradeOutcome {
        id: meta.id,
        run_commit,
        source: source.to_string(),
        changes,
        skipped,
        results,
    })
}

/// The source trial's result with the new verifier's verdict. The agent's part (trace, usage,
/// turns, kept workspace) stays where it was recorded: `cached_from` names that run, and this
/// run spent no tokens. Never cached: the key of the trial's agent run is not this verdict's.
fn regraded_result(
    mut r: TrialResult,
    holder: String,
    v: Result<crate::task::VerifierOutcome>,
) -> TrialResult {
    match v {
        Ok(v) => {
            r.outcome = if v.passed {
                Outcome::Pass
            } else {
                Outcome::Fail
            };
            r.infra = None;
            r.error = None;
            r.reward = v.reward;
            r.verifier = v;
        }
        Err(e) => {
            r.outcome = Outcome::InfraError;
            r.infra = Some(InfraClass::of(&e).unwrap_or(InfraClass::Sandbox));
            r.error = Some(e.to_string());
            r.reward = 0.0;
            r.verifier = Default::default();
        }
    }
    r.cache_key = None;
    r.cached_from = Some(holder);
    r
}
