//! Estimates before anything is spent: trials, tokens, cost and time of a run or an evolve,
//! from the per-task averages of trials already recorded in run refs.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Result;
use crate::eval::AgentKind;
use crate::eval::cache::{Cache, CacheKey};
use crate::eval::record::read_run;
use crate::eval::run::EvalContext;
use crate::experiment::Split;
use crate::lineage;
use crate::workspace::Workspace;

/// Averages per executed trial.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Averages {
    pub trials_seen: u64,
    pub tokens: f64,
    pub cost_usd: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub what: String,
    pub trials: u64,
    pub cached: u64,
    pub to_execute: u64,
    pub tokens: f64,
    pub cost_usd: f64,
    /// Wall time at the configured concurrency.
    pub seconds: f64,
    /// Trials of tasks never seen before, priced at the overall average.
    pub unseen_tasks: usize,
    pub basis: String,
}

/// Per-task averages over every executed trial of every recorded run.
pub fn averages(ws: &Workspace) -> Result<(BTreeMap<String, Averages>, Averages)> {
    let mut per: BTreeMap<String, Averages> = BTreeMap::new();
    let mut all = Averages::default();
    for (id, _, _) in lineage::list_runs(&ws.repo)? {
        let Ok((record, results)) = read_run(&ws.repo, &id) else {
            continue;
        };
        if record.meta.agent != AgentKind::Harness {
            continue;
        }
        for r in results
            .iter()
            .filter(|r| r.cached_from.is_none() && !r.is_infra())
        {
            for a in [per.entry(r.task.clone()).or_default(), &mut all] {
                a.trials_seen += 1;
                a.tokens += r.tokens() as f64;
                a.cost_usd += r.cost_usd;
                a.seconds += r.durations.total_ms as f64 / 1000.0;
            }
        }
    }
    let norm = |a: &mut Averages| {
        if a.trials_seen > 0 {
            let n = a.trials_seen as f64;
            a.tokens /= n;
            a.cost_usd /= n;
            a.seconds /= n;
        }
    };
    per.values_mut().for_each(norm);
    norm(&mut all);
    Ok((per, all))
}

/// Estimate a run of `rev` on `splits`.
pub async fn estimate_run(
    ws: &Workspace,
    ctx: &EvalContext,
    rev: &str,
    splits: &[Split],
    trials: u32,
) -> Result<Estimate> {
    let (per, all) = averages(ws)?;
    let commit = lineage::resolve_commit(&ws.repo, rev)?;
    let surface = lineage::surface_tree(&ws.repo, &commit)?.to_string();
    let cache = Cache::new(&ctx.state_dir);
    cache.sync_from_refs(&ws.repo)?;
    let mut est = empty(
        format!("run {} on {}", lineage::short(commit.id()), names(splits)),
        &all,
    );
    for split in splits {
        for id in ctx.fixed.splits.get(*split) {
            let Some(task) = ctx.suite.get(id) else {
                continue;
            };
            let environment = ctx
                .executors
                .environment_id(task)
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            for t in 0..trials {
                let key = CacheKey {
                    surface_tree: surface.clone(),
                    fingerprint: ctx.fingerprint.clone(),
                    task_id: task.id.clone(),
                    task_checksum: task.checksum.clone(),
                    environment: environment.clone(),
                    trial: t,
                    agent: AgentKind::Harness,
                }
                .digest();
                est.trials += 1;
                if cache.lookup(&key, id, t)?.is_some() {
                    est.cached += 1;
                } else {
                    add(&mut est, per.get(id), &all);
                }
            }
        }
    }
    finish(&mut est, ctx);
    Ok(est)
}

/// Estimate a revalidation of the versions `commits` (promotions and their parents, each once:
/// one invocation shares a seed namespace) in `ctx`, whose experiment carries the namespace's
/// seed: each version at the design's last look (an upper bound: no futility stop), from the
/// cache only where that namespace ran before.
pub async fn estimate_revalidate(
    ws: &Workspace,
    ctx: &EvalContext,
    commits: &[git2::Oid],
    what: String,
) -> Result<Estimate> {
    let cfg = &ctx.fixed.experiment.gate;
    let base = ctx.fixed.experiment.trials;
    let trials = crate::gate::looks(cfg, base)
        .last()
        .map_or(base, |l| l.trials);
    let (_, all) = averages(ws)?;
    let mut est = empty(what, &all);
    for c in commits {
        let e = estimate_run(
            ws,
            ctx,
            &c.to_string(),
            &[Split::HeldIn, Split::Validation],
            trials,
        )
        .await?;
        est.trials += e.trials;
        est.cached += e.cached;
        est.to_execute += e.to_execute;
        est.tokens += e.tokens;
        est.cost_usd += e.cost_usd;
        est.seconds += e.seconds;
        est.unseen_tasks += e.unseen_tasks;
    }
    Ok(est)
}

/// Estimate `rounds` of evolve with `k` proposals each, without early stopping or caching of
/// candidates (an upper bound): per round, every candidate and one merged candidate are
/// evaluated on held_in and validation.
pub fn estimate_evolve(
    ws: &Workspace,
    ctx: &EvalContext,
    rounds: u32,
    k: usize,
) -> Result<Estimate> {
    let (per, all) = averages(ws)?;
    let trials = ctx.fixed.experiment.trials;
    let mut est = empty(
        format!("evolve {rounds} rounds x {k} proposals (upper bound)"),
        &all,
    );
    let candidates = rounds as u64 * (k as u64 + 1);
    for _ in 0..candidates {
        for split in [Split::HeldIn, Split::Validation] {
            for id in ctx.fixed.splits.get(split) {
                for _ in 0..trials {
                    est.trials += 1;
                    add(&mut est, per.get(id), &all);
                }
            }
        }
    }
    finish(&mut est, ctx);
    Ok(est)
}

fn names(splits: &[Split]) -> String {
    splits
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join("+")
}

fn empty(what: String, all: &Averages) -> Estimate {
    Estimate {
        what,
        trials: 0,
        cached: 0,
        to_execute: 0,
        tokens: 0.0,
        cost_usd: 0.0,
        seconds: 0.0,
        unseen_tasks: 0,
        basis: format!("averages over {} recorded trials", all.trials_seen),
    }
}

fn add(est: &mut Estimate, task: Option<&Averages>, all: &Averages) {
    est.to_execute += 1;
    let a = match task {
        Some(a) if a.trials_seen > 0 => a,
        _ => {
            est.unseen_tasks += 1;
            all
        }
    };
    est.tokens += a.tokens;
    est.cost_usd += a.cost_usd;
    est.seconds += a.seconds;
}

fn finish(est: &mut Estimate, ctx: &EvalContext) {
    est.seconds /= ctx.fixed.experiment.runner.trial_concurrency().max(1) as f64;
}
