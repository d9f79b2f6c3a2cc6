//! One evaluation run end to end: resolve the harness at a revision, plan trials, reuse the
//! cache, execute the rest, record the run in git.

use std::sync::Arc;
use std::time::Duration;

use git2::Oid;
use globset::Glob;
use tokio::sync::watch;

use super::cache::{Cache, CacheKey};
use super::journal::{Journal, RunMeta};
use super::record::{RunRecord, now, write_record};
use super::schedule::{self, Executor, Observer, PlannedTrial, Stop, Stopper};
use super::{AgentKind, TrialResult, trial_seed};
use crate::error::{Error, Result};
use crate::experiment::Split;
use crate::harness::Harness;
use crate::lineage;
use crate::workspace::{Fixed, Workspace};

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The harness revision (default HEAD); ignored with `worktree`.
    pub rev: String,
    /// Evaluate uncommitted edits of the worktree (never cached as a commit's results).
    pub worktree: bool,
    pub splits: Vec<Split>,
    /// Trials per task (default: the experiment's).
    pub trials: Option<u32>,
    /// Only tasks whose id matches this glob.
    pub tasks: Option<String>,
    pub concurrency: Option<usize>,
    pub agent: AgentKind,
    pub no_cache: bool,
    /// Continue an interrupted run.
    pub resume: Option<String>,
    /// Only `report --final` may open the test split.
    pub allow_test: bool,
    /// Run trials in this order (gate: decisive first); others follow in plan order.
    pub order: Option<Vec<(Split, String, u32)>>,
    /// A look-up the cache answers completely may return an existing run that holds every
    /// result instead of recording a new one. Off for validation, whose records name the runs
    /// it made (their executed trials are what it cost).
    pub reuse_recorded: bool,
}

impl RunRequest {
    pub fn new(rev: impl Into<String>, splits: Vec<Split>) -> Self {
        RunRequest {
            rev: rev.into(),
            worktree: false,
            splits,
            trials: None,
            tasks: None,
            concurrency: None,
            agent: AgentKind::Harness,
            no_cache: false,
            resume: None,
            allow_test: false,
            order: None,
            reuse_recorded: true,
        }
    }
}

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

/// What a run needs besides the request: the loaded suite, the fingerprint and the trial
/// executor factory. Built once and shared by the many runs of `validate` and `evolve`.
pub struct EvalContext {
    pub fixed: Fixed,
    pub suite: crate::task::Suite,
    pub fingerprint: String,
    pub state_dir: std::path::PathBuf,
    pub executors: Arc<dyn super::trial::ExecutorFactory>,
    /// Warnings to show once (e.g. weaker isolation without bubblewrap).
    pub warnings: Vec<String>,
    /// The experiment's model, for the proposer and the optional diagnosis.
    pub model: Option<Arc<dyn crate::model::Model>>,
    /// Interrupt requests for every run of this context (see [`schedule::Options::interrupt`]).
    pub interrupt: Option<watch::Receiver<u8>>,
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
    // A resumed run continues what it was asked to do: its revision, splits, tasks, trials
    // and agent come from its journal, whatever the request says.
    if let Some(id) = &req.resume
        && repo
            .refname_to_id(&format!("{}{id}", lineage::RUNS_PREFIX))
            .is_ok()
    {
        // Recorded already (its process was killed after writing the ref, and the journal may
        // have been swept since): resuming it finishes the record and runs nothing.
        return finish_resumed(ws, ctx, id);
    }
    let resumed = match &req.resume {
        Some(id) => {
            let meta = Journal::read_meta(&ctx.state_dir, id)?;
            let mut r = req.clone();
            r.rev = meta.harness_commit.clone();
            r.worktree = meta.worktree;
            r.splits = meta
                .splits
                .iter()
                .map(|s| s.parse())
                .collect::<Result<Vec<Split>>>()?;
            r.trials = Some(meta.trials);
            r.tasks = None;
            r.agent = meta.agent;
            r.no_cache = r.no_cache || meta.no_cache;
            Some((r, meta))
        }
        None => None,
    };
    let (req, resumed_meta) = match &resumed {
        Some((r, meta)) => (r, Some(meta)),
        None => (req, None),
    };
    if req.splits.contains(&Split::Test) && !req.allow_test {
        return Err(Error::usage_hint(
            "the test split is sealed",
            "only `git harness report --final` evaluates it, and every opening is logged",
        ));
    }
    let commit = if req.worktree {
        repo.head()
            .and_then(|h| h.peel_to_commit())
            .map_err(|e| Error::Git {
                context: "read HEAD".into(),
                source: e,
            })?
    } else {
        lineage::resolve_commit(repo, &req.rev)?
    };
    let fixed_here = ws.fixed_at(&commit)?;
    if fixed_here.experiment != ctx.fixed.experiment || fixed_here.splits != ctx.fixed.splits {
        return Err(Error::usage_hint(
            format!(
                "{} has a different experiment (.harness/) than main",
                lineage::short(commit.id())
            ),
            "results under different experiments are never compared; evaluate commits of this lineage",
        ));
    }
    let harness = if req.worktree {
        Harness::from_dir(&ws.root())?
    } else {
        Harness::from_commit(repo, &commit)?
    };
    if req.agent == AgentKind::Harness {
        // A broken harness file is the user's to fix, said once before anything runs or is
        // written, never an infrastructure error of every trial.
        crate::agent::preflight(&harness, &ctx.fixed.experiment.budgets)?;
    }
    let surface_tree = if req.worktree {
        "worktree".to_string()
    } else {
        lineage::surface_tree(repo, &commit)?.to_string()
    };
    let trials = req.trials.unwrap_or(ctx.fixed.experiment.trials);
    let matcher = match &req.tasks {
        Some(p) => Some(
            Glob::new(p)
                .map_err(|e| Error::usage(format!("invalid --tasks pattern `{p}`: {e}")))?
                .compile_matcher(),
        ),
        None => None,
    };

    let mut plan = Vec::new();
    // A task whose environment cannot be identified now (e.g. a missing image) runs uncached:
    // its trial reports why.
    let mut environments: std::collections::HashMap<String, Option<String>> = Default::default();
    for split in &req.splits {
        for id in ctx.fixed.splits.get(*split) {
            if matcher.as_ref().is_some_and(|m| !m.is_match(id))
                || resumed_meta.is_some_and(|m| !m.tasks.contains(id))
            {
                continue;
            }
            let task = ctx.suite.get(id).ok_or_else(|| {
                Error::usage_hint(
                    format!("task `{id}` of the {split} split is not in the suite"),
                    "the suite changed since the split; restore it or re-split with --force",
                )
            })?;
            if !environments.contains_key(id) {
                let env = match ctx.executors.environment_id(task).await {
                    Ok(e) => Some(e.unwrap_or_default()),
                    Err(_) => None,
                };
                environments.insert(id.clone(), env);
            }
            let environment = environments.get(id).cloned().flatten();
            for t in 0..trials {
                let cache_key = environment.as_ref().filter(|_| !req.worktree).map(|env| {
                    CacheKey {
                        surface_tree: surface_tree.clone(),
                        fingerprint: ctx.fingerprint.clone(),
                        task_id: task.id.clone(),
                        task_checksum: task.checksum.clone(),
                        environment: env.clone(),
                        trial: t,
                        agent: req.agent,
                    }
                    .digest()
                });
                plan.push(PlannedTrial {
                    task: task.clone(),
                    split: *split,
                    trial: t,
                    seed: trial_seed(ctx.fixed.experiment.seed, id, t),
                    cache_key,
                });
            }
        }
    }
    if plan.is_empty() {
        return Err(Error::usage(
            "no trials to run: the selected splits and tasks are empty",
        ));
    }
    if let Some(order) = &req.order {
        let rank = |p: &PlannedTrial| {
            order
                .iter()
                .position(|(s, t, i)| *s == p.split && *t == p.task.id && *i == p.trial)
                .unwrap_or(usize::MAX)
        };
        plan.sort_by_key(rank);
    }

    let cache = Cache::new(&ctx.state_dir);
    cache.sync_from_refs(repo)?;
    cache.sync_from_journals(&ctx.state_dir)?;
    let (meta, journaled) = match resumed_meta {
        Some(meta) => {
            let id = &meta.id;
            if meta.harness_commit != commit.id().to_string() || meta.fingerprint != ctx.fingerprint
            {
                return Err(Error::usage(format!(
                    "run {id} evaluated another harness or experiment; it cannot be resumed with these arguments"
                )));
            }
            let done = Journal::read_results(&ctx.state_dir, id);
            (meta.clone(), done)
        }
        None => (
            RunMeta {
                id: new_run_id(commit.id()),
                harness_commit: commit.id().to_string(),
                harness_tree: commit.tree_id().to_string(),
                surface_tree: surface_tree.clone(),
                fingerprint: ctx.fingerprint.clone(),
                splits: req.splits.iter().map(|s| s.to_string()).collect(),
                trials,
                tasks: {
                    let mut v: Vec<String> = plan.iter().map(|p| p.task.id.clone()).collect();
                    v.dedup();
                    v
                },
                agent: req.agent,
                worktree: req.worktree,
                model: format!(
                    "{}/{}",
                    ctx.fixed.experiment.model.provider, ctx.fixed.experiment.model.name
                ),
                runner: ctx.fixed.experiment.runner.kind.to_string(),
                seed: ctx.fixed.experiment.seed,
                started_at: now(),
                no_cache: req.no_cache,
            },
            Vec::new(),
        ),
    };
    let mut journal = Journal::open(&ctx.state_dir, &meta, req.resume.is_some())?;
    let executor: Arc<dyn Executor> = ctx.executors.executor(&harness, req.agent).await?;
    let opts = schedule::Options {
        run_id: meta.id.clone(),
        concurrency: req
            .concurrency
            .unwrap_or(ctx.fixed.experiment.runner.concurrency),
        no_cache: req.no_cache,
        stopper,
        interrupt,
        grace: Duration::from_secs(30),
        breaker: ctx.fixed.experiment.infra_breaker,
    };
    let finished = match schedule::execute(
        plan,
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
        return Err(Error::Infra {
            class: t.kind,
            message: format!(
                "stopped run {} after {} trials in a row failed with the same {} error: {}",
                meta.id,
                t.count,
                t.kind.as_str(),
                t.error
            ),
            hint: Some(format!(
                "{}; then re-run (finished trials come from the cache) or `git harness run --resume {}`",
                t.kind.hint(),
                meta.id
            )),
        });
    }
    // An interrupted run is not recorded: its journal keeps what finished, for `--resume`.
    if finished.interrupted && matches!(finished.stopped, Some(Stop::Interrupted)) {
        return Err(interrupted(&ctx.state_dir, &meta.id));
    }
    let mut results = finished.results;
    results.sort_by(|a, b| (&a.split, &a.task, a.trial).cmp(&(&b.split, &b.task, b.trial)));
    let partial = finished.stopped.is_some();
    // A look-up answered entirely by results an existing run of this commit already records
    // (mine, check, bisect, report after a run) writes nothing: that run stands for it.
    if req.reuse_recorded
        && finished.executed == 0
        && !partial
        && req.resume.is_none()
        && let Some((id, run_commit, mut record)) = covering_run(repo, &meta, &results)?
    {
        Journal::remove(&ctx.state_dir, &meta.id);
        // Totals of what this look-up did: nothing executed, everything cached.
        let mut by_split: std::collections::BTreeMap<String, Vec<&TrialResult>> =
            std::collections::BTreeMap::new();
        for r in &results {
            by_split.entry(r.split.clone()).or_default().push(r);
        }
        record.totals = by_split
            .into_iter()
            .map(|(k, v)| (k, super::Totals::of(v)))
            .collect();
        return Ok(RunOutcome {
            id,
            run_commit,
            harness_commit: commit.id(),
            record,
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
        harness_commit: commit.id(),
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
        let Ok(record) = serde_yaml::from_slice::<RunRecord>(&bytes) else {
            continue;
        };
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

fn new_run_id(commit: Oid) -> String {
    let suffix: u16 = rand::random();
    format!(
        "{}-{}-{suffix:04x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S"),
        &commit.to_string()[..7]
    )
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
                if let Some(hit) = cache.lookup(&digest, id, t) {
                    out.push(hit.result);
                }
            }
        }
    }
    Ok(out)
}
