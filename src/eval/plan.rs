//! Planning an evaluation run: what is asked (a request, or the journal of a run to resume),
//! which commit and harness it evaluates, the trials with their cache keys, and the run's
//! metadata. Nothing here executes a trial.

use std::sync::Arc;

use git2::{Commit, Oid};
use globset::Glob;
use tokio::sync::watch;

use super::cache::CacheKey;
use super::journal::{Journal, RunMeta};
use super::record::now;
use super::schedule::{Observer, PlannedTrial};
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
    /// Leave the harness commit's note as it is (`revalidate` changes no history): the run is
    /// recorded under its ref only.
    pub no_note: bool,
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
            no_note: false,
        }
    }
}

/// What a run needs besides the request: the loaded suite, the fingerprint and the trial
/// executor factory. Built once and shared by the many runs of `validate` and `evolve`.
pub struct EvalContext {
    pub fixed: Fixed,
    pub suite: crate::task::Suite,
    pub fingerprint: String,
    /// The seed the trials' seeds derive from: the experiment's, or a command's seed namespace
    /// (`revalidate`; the fingerprint covers it).
    pub seed: u64,
    /// The runner trials run under: the experiment's, or `run --runner` (the fingerprint
    /// covers it).
    pub runner: crate::experiment::RunnerKind,
    pub state_dir: std::path::PathBuf,
    pub executors: Arc<dyn super::trial::ExecutorFactory>,
    /// Warnings to show once (e.g. weaker isolation without bubblewrap).
    pub warnings: Vec<String>,
    /// The experiment's model, for the proposer and the optional diagnosis.
    pub model: Option<Arc<dyn crate::model::Model>>,
    /// Interrupt requests for every run of this context (see [`schedule::Options::interrupt`]).
    pub interrupt: Option<watch::Receiver<u8>>,
}

/// The request a resumed run continues, with its journal's metadata: its revision, splits,
/// tasks, trials and agent come from its journal, whatever the request says.
pub(super) fn resumed_request(
    ctx: &EvalContext,
    req: &RunRequest,
) -> Result<Option<(RunRequest, RunMeta)>> {
    let Some(id) = &req.resume else {
        return Ok(None);
    };
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
    Ok(Some((r, meta)))
}

/// What a run evaluates: the commit, its harness and the surface tree its cache keys name.
pub(super) struct Target<'repo> {
    pub commit: Commit<'repo>,
    pub harness: Harness,
    pub surface_tree: String,
}

/// Resolve the request's revision (or the worktree) and check it may be evaluated here.
pub(super) fn resolve_target<'repo>(
    ws: &'repo Workspace,
    ctx: &EvalContext,
    req: &RunRequest,
) -> Result<Target<'repo>> {
    let repo = &ws.repo;
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
    Ok(Target {
        commit,
        harness,
        surface_tree,
    })
}

/// The trials of the request, `trials` per selected task, each with its cache key, in the
/// request's order when it gives one.
pub(super) async fn plan_trials(
    ctx: &EvalContext,
    req: &RunRequest,
    resumed: Option<&RunMeta>,
    surface_tree: &str,
    trials: u32,
    observer: &mut dyn Observer,
) -> Result<Vec<PlannedTrial>> {
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
                || resumed.is_some_and(|m| !m.tasks.contains(id))
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
                let env = match ctx.executors.prepare(task, &mut |n| observer.note(n)).await {
                    Ok(e) => Some(e.unwrap_or_default()),
                    // The user's to fix (the engine refuses our certificates): no trial can run.
                    Err(e) if e.kind() == crate::error::Kind::Usage => return Err(e),
                    Err(_) => None,
                };
                environments.insert(id.clone(), env);
            }
            let environment = environments.get(id).cloned().flatten();
            for t in 0..trials {
                let cache_key = environment.as_ref().filter(|_| !req.worktree).map(|env| {
                    CacheKey {
                        surface_tree: surface_tree.to_string(),
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
                    seed: trial_seed(ctx.seed, id, t),
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
    Ok(plan)
}

/// The run's metadata and the results its journal already holds: a resumed run's own (after
/// checking it evaluated this commit and experiment), or a new run's with none.
pub(super) fn run_meta(
    ctx: &EvalContext,
    req: &RunRequest,
    resumed: Option<&RunMeta>,
    target: &Target<'_>,
    trials: u32,
    plan: &[PlannedTrial],
) -> Result<(RunMeta, Vec<TrialResult>)> {
    let commit = &target.commit;
    if let Some(meta) = resumed {
        let id = &meta.id;
        if meta.harness_commit != commit.id().to_string() || meta.fingerprint != ctx.fingerprint {
            return Err(Error::usage(format!(
                "run {id} evaluated another harness or experiment; it cannot be resumed with these arguments"
            )));
        }
        let done = Journal::read_results(&ctx.state_dir, id);
        return Ok((meta.clone(), done));
    }
    let meta = RunMeta {
        format: <RunMeta as crate::support::format::Versioned>::FORMAT,
        id: new_run_id(commit.id()),
        harness_commit: commit.id().to_string(),
        harness_tree: commit.tree_id().to_string(),
        surface_tree: target.surface_tree.clone(),
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
        runner: ctx.runner.to_string(),
        seed: ctx.seed,
        started_at: now(),
        no_cache: req.no_cache,
        regraded_from: None,
        no_note: req.no_note,
    };
    Ok((meta, Vec::new()))
}

pub(super) fn new_run_id(commit: Oid) -> String {
    let suffix: u16 = rand::random();
    format!(
        "{}-{}-{suffix:04x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S"),
        &commit.to_string()[..7]
    )
}
