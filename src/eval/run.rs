//! One evaluation run end to end: resolve the harness at a revision, plan trials, reuse the
//! cache, execute the rest, record the run in git.

use std::sync::Arc;
use std::time::Duration;

use git2::Oid;
use tokio::sync::watch;

use super::cache::{Cache, CacheKey};
use super::journal::{Journal, RunMeta};
use super::plan;
pub use super::plan::{EvalContext, RunRequest};
use super::record::{RunRecord, write_record};
use super::schedule::{self, Executor, Observer, Stop, Stopper};
use super::{AgentKind, TrialResult};
use crate::error::{Error, Result};
use crate::experiment::Split;
use crate::lineage;
use crate::workspace::Workspace;

#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub id: String,
    pub run_commit: Oid,
    pub harness_commit: Oid,
    pub record: RunRecord,
    pub results: Vec<TrialResult>,
    pub executed: usize,
    pub stopped: Option<String>,
    /// The gate's decision when a stopper settled it before every trial ran.
    pub settled: Option<crate::gate::Decision>,
    /// Wall-clock time of this evaluation (trials run concurrently: less than their sum).
    pub wall_ms: u64,
}

/// Evaluate one harness revision.
pub async fn evaluate(
    ws: &Workspace,
    ctx: &EvalContext,
    req: &RunRequest,
    observer: &mut dyn Observer,
    stopper: Option<Stopper<'_>>,
    interrupt: Option<watch::Receiver<u8>>,
) -> Result<RunOutcome> {
    let repo = &ws.repo;
    let started = std::time::Instant::now();
    let interrupt = interrupt.or_else(|| ctx.interrupt.clone());
    // Interrupted before this run began (e.g. between the steps of `evolve`): start nothing.
    if interrupt.as_ref().is_some_and(|rx| *rx.borrow() > 0) {
        return Err(Error::Interrupted { run: None });
    }
    if let Some(id) = &req.resume
        && repo
            .refname_to_id(&format!("{}{id}", lineage::RUNS_PREFIX))
            .is_ok()
    {
        // Recorded already (its process was killed after writing the ref, and the journal may
        // have been swept since): resuming it finishes the record and runs nothing.
        return finish_resumed(ws, ctx, id);
    }
    let resumed = plan::resumed_request(ctx, req)?;
    let (req, resumed_meta) = match &resumed {
        Some((r, meta)) => (r, Some(meta)),
        None => (req, None),
    };
    let target = plan::resolve_target(ws, ctx, req)?;
    let trials = req.trials.unwrap_or(ctx.fixed.experiment.trials);
    let planned = plan::plan_trials(
        ctx,
        req,
        resumed_meta,
        &target.surface_tree,
        trials,
        observer,
    )
    .await?;

    let cache = Cache::new(&ctx.state_dir);
    cache.sync_from_refs(repo)?;
    cache.sync_from_journals(&ctx.state_dir)?;
    let (meta, journaled) = plan::run_meta(ctx, req, resumed_meta, &target, trials, &planned)?;
    let mut journal = Journal::open(&ctx.state_dir, &meta, req.resume.is_some())?;
    let executor: Arc<dyn Executor> = ctx.executors.executor(&target.harness, req.agent).await?;
    let opts = schedule::Options {
        run_id: meta.id.clone(),
        concurrency: req
            .concurrency
            .unwrap_or(ctx.fixed.experiment.runner.trial_concurrency()),
        no_cache: req.no_cache,
        stopper,
        interrupt,
        grace: Duration::from_secs(30),
        breaker: ctx.fixed.experiment.infra_breaker,
    };
    let finished = match schedule::execute(
        planned,
        journaled,
        executor,
        &cache,
        &mut journal,
        opts,
        observer,
    )
    .await
    {
        Ok(f) => f,
        Err(Error::Interrupted { .. }) => {
            ctx.executors.after_abort().await;
            return Err(interrupted(&ctx.state_dir, &meta.id));
        }
        Err(e) => return Err(e),
    };
    if let Some(Stop::Tripped(t)) = &finished.stopped {
        // No record: the journal keeps what ran, so nothing is lost and nothing is counted.
        return Err(tripped(&meta.id, t));
    }
    // An interrupted run is not recorded: its journal keeps what finished, for `--resume`.
    if finished.interrupted && matches!(finished.stopped, Some(Stop::Interrupted)) {
        return Err(interrupted(&ctx.state_dir, &meta.id));
    }
    let commit = target.commit.id();
    let mut results = finished.results;
    results.sort_by(|a, b| (&a.split, &a.task, a.trial).cmp(&(&b.split, &b.task, b.trial)));
    let partial = finished.stopped.is_some();
    // A look-up answered entirely by results an existing run of this commit already records
    // (mine, check, bisect, report after a run) writes nothing: that run stands for it.
    if req.reuse_recorded
        && finished.executed == 0
        && !partial
        && req.resume.is_none()
        && let Some((id, run_commit, record)) = covering_run(repo, &meta, &results)?
    {
        Journal::remove(&ctx.state_dir, &meta.id);
        return Ok(RunOutcome {
            id,
            run_commit,
            harness_commit: commit,
            record: with_lookup_totals(record, &results),
            results,
            executed: 0,
            stopped: None,
            settled: None,
            wall_ms: started.elapsed().as_millis() as u64,
        });
    }
    let run_commit = write_record(
        repo,
        &ctx.state_dir,
        &meta,
        &mut results,
        partial,
        finished.stopped.as_ref().map(ToString::to_string),
        finished.cancelled,
    )?;
    let (record, _) = super::record::read_run(repo, &meta.id)?;
    Ok(RunOutcome {
        id: meta.id,
        run_commit,
        harness_commit: commit,
        record,
        results,
        executed: finished.executed,
        stopped: finished.stopped.as_ref().map(ToString::to_string),
        settled: match finished.stopped {
            Some(Stop::Settled(d)) => Some(*d),
            _ => None,
        },
        wall_ms: started.elapsed().as_millis() as u64,
    })
}

/// The error of a run the infrastructure breaker stopped.
fn tripped(run: &str, t: &schedule::Tripped) -> Error {
    Error::Infra {
        class: t.kind,
        message: format!(
            "stopped run {run} after {} trials in a row failed with the same {} error: {}",
            t.count,
            t.kind.as_str(),
            t.error
        ),
        hint: Some(format!(
            "{}; then re-run (finished trials come from the cache) or `git harness run --resume {run}`",
            t.kind.hint(),
        )),
    }
}

/// A covering run's record with the totals of what this look-up did: nothing executed,
/// everything cached.
fn with_lookup_totals(mut record: RunRecord, results: &[TrialResult]) -> RunRecord {
    let mut by_split: std::collections::BTreeMap<String, Vec<&TrialResult>> =
        std::collections::BTreeMap::new();
    for r in results {
        by_split.entry(r.split.clone()).or_default().push(r);
    }
    record.totals = by_split
        .into_iter()
        .map(|(k, v)| (k, super::Totals::of(v)))
        .collect();
    record
}

/// A complete run record of the same commit, experiment and agent that already holds every one
/// of `results` (same split, task, trial and outcome), each of them cached from a recorded run.
/// The smallest such run, so a look-up names the run closest to what it asked.
fn covering_run(
    repo: &git2::Repository,
    meta: &RunMeta,
    results: &[TrialResult],
) -> Result<Option<(String, Oid, RunRecord)>> {
    if meta.worktree || results.is_empty() {
        return Ok(None);
    }
    // Results adopted from a journal must be written into a record.
    let all_recorded = results.iter().all(|r| {
        r.cached_from.as_ref().is_some_and(|src| {
            repo.refname_to_id(&format!("{}{src}", lineage::RUNS_PREFIX))
                .is_ok()
        })
    });
    if !all_recorded {
        return Ok(None);
    }
    let wanted: std::collections::BTreeMap<(&str, &str, u32), super::Outcome> = results
        .iter()
        .map(|r| ((r.split.as_str(), r.task.as_str(), r.trial), r.outcome))
        .collect();
    let mut best: Option<(String, Oid, RunRecord, usize)> = None;
    for (id, oid, _) in lineage::list_runs(repo)? {
        // run.yaml alone decides most candidates; results are read only for those it admits.
        let Some(bytes) = lineage::read_run_file(repo, &id, super::RUN_FILE)? else {
            continue;
        };
        let record = super::record::parse_run_record(&bytes, &id)?;
        let m = &record.meta;
        if m.harness_commit != meta.harness_commit
            || m.fingerprint != meta.fingerprint
            || m.agent != meta.agent
            || m.worktree
            || record.partial
        {
            continue;
        }
        let Ok((_, recorded)) = super::record::read_run(repo, &id) else {
            continue;
        };
        let held = recorded
            .iter()
            .filter(|r| {
                wanted.get(&(r.split.as_str(), r.task.as_str(), r.trial)) == Some(&r.outcome)
            })
            .count();
        if held == wanted.len() && best.as_ref().is_none_or(|b| recorded.len() < b.3) {
            best = Some((id, oid, record, recorded.len()));
        }
    }
    Ok(best.map(|(id, oid, record, _)| (id, oid, record)))
}

/// The outcome of a resumed run that was already recorded (its process was killed after
/// writing the ref): the steps after the ref are finished, nothing is executed.
fn finish_resumed(ws: &Workspace, ctx: &EvalContext, id: &str) -> Result<RunOutcome> {
    super::record::finish_recorded(&ws.repo, &ctx.state_dir, id)?;
    let (record, results) = super::record::read_run(&ws.repo, id)?;
    let harness_commit = Oid::from_str(&record.meta.harness_commit)
        .map_err(|e| Error::Internal(format!("run {id}: bad harness commit: {e}")))?;
    let run_commit = ws
        .repo
        .refname_to_id(&format!("{}{id}", lineage::RUNS_PREFIX))
        .map_err(|e| Error::Git {
            context: format!("read run {id}"),
            source: e,
        })?;
    let stopped = record.stop_reason.clone();
    Ok(RunOutcome {
        id: id.to_string(),
        run_commit,
        harness_commit,
        record,
        results,
        executed: 0,
        stopped,
        settled: None,
        wall_ms: 0,
    })
}

fn interrupted(state_dir: &std::path::Path, id: &str) -> Error {
    Journal::mark_interrupted(state_dir, id);
    Error::Interrupted {
        run: Some(id.to_string()),
    }
}

/// Trials of `commit` on `splits` with trial ids in `from..to` that the cache already holds
/// (same surface tree, fingerprint, task checksum and environment): evidence about the
/// harness's per-task pass rates that costs nothing to read. Runs no trial and records nothing.
pub async fn cached_trials(
    ws: &Workspace,
    ctx: &EvalContext,
    commit: Oid,
    splits: &[Split],
    from: u32,
    to: u32,
) -> Result<Vec<TrialResult>> {
    let repo = &ws.repo;
    let commit = repo.find_commit(commit).map_err(|e| Error::Git {
        context: "read commit".into(),
        source: e,
    })?;
    let surface_tree = lineage::surface_tree(repo, &commit)?.to_string();
    let cache = Cache::new(&ctx.state_dir);
    let mut out = Vec::new();
    for split in splits {
        for id in ctx.fixed.splits.get(*split) {
            let Some(task) = ctx.suite.get(id) else {
                continue;
            };
            let Ok(env) = ctx.executors.environment_id(task).await else {
                continue;
            };
            let env = env.unwrap_or_default();
            for t in from..to {
                let digest = CacheKey {
                    surface_tree: surface_tree.clone(),
                    fingerprint: ctx.fingerprint.clone(),
                    task_id: task.id.clone(),
                    task_checksum: task.checksum.clone(),
                    environment: env.clone(),
                    trial: t,
                    agent: AgentKind::Harness,
                }
                .digest();
                if let Some(hit) = cache.lookup(&digest, id, t)? {
                    out.push(hit.result);
                }
            }
        }
    }
    // Each read costs a lookup per task and trial id: a debug event lets tests count them.
    tracing::debug!(
        target: CACHE_TARGET,
        commit = %commit.id(),
        from,
        to,
        found = out.len(),
        "cached trials read"
    );
    Ok(out)
}

/// The `tracing` target of reads of cached trials as evidence
/// (`RUST_LOG=git_harness::cache=debug`).
pub const CACHE_TARGET: &str = "git_harness::cache";
