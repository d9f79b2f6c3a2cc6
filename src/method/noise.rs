//! The noise floor of main: per-task pass rates over repeated trials of an unchanged harness,
//! which tasks flip (flaky), and the minimum detectable effect of the configured gate.

use git2::Oid;

use crate::error::{Error, Result};
use crate::eval::run::{EvalContext, RunRequest, cached_trials, evaluate};
use crate::eval::schedule::Observer;
use crate::eval::{Outcome, TrialResult};
use crate::experiment::{GateConfig, GateStatistic, Split};
use crate::gate::{self, stats};
use crate::lineage::{self, FlakyCount, FlakyTask, FlakyTasksRecord};
use crate::workspace::Workspace;

/// Trial ids up to which cached trials of a harness are read as evidence of its per-task pass
/// rates: by `noise` and by the gate for the parent beyond the compared trials (`noise --trials
/// N` and earlier adaptive looks leave them).
pub const EVIDENCE_TRIALS: u32 = 64;

/// One task's repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskNoise {
    pub split: Split,
    pub task: String,
    pub passes: u32,
    /// Trials free of infrastructure errors.
    pub trials: u32,
}

impl TaskNoise {
    fn evidence(&self) -> gate::Evidence {
        gate::Evidence {
            passes: self.passes,
            trials: self.trials,
        }
    }
    pub fn rate(&self) -> f64 {
        self.evidence().rate()
    }
    /// The outcome flips across repeats of the unchanged harness (the gate's test of flakiness).
    pub fn flaky(&self) -> bool {
        self.evidence().flaky()
    }
}

#[derive(Debug, Clone)]
pub struct Noise {
    pub tasks: Vec<TaskNoise>,
    pub run: String,
    pub executed: usize,
    /// The look the minimum detectable effect is computed for (the design's last).
    pub look: gate::Look,
    /// Minimum detectable effect at 80% power, in percentage points of pass rate.
    pub mde_points: f64,
    /// The flaky tasks recorded in the commit's note, from every cached trial of its tree.
    pub flaky: FlakyTasksRecord,
}

/// Per-task repeats from run results (gated splits).
pub fn per_task(results: &[TrialResult]) -> Vec<TaskNoise> {
    let mut out: Vec<TaskNoise> = Vec::new();
    for r in results {
        let Ok(split) = r.split.parse::<Split>() else {
            continue;
        };
        let i = match out
            .iter()
            .position(|t| t.split == split && t.task == r.task)
        {
            Some(i) => i,
            None => {
                out.push(TaskNoise {
                    split,
                    task: r.task.clone(),
                    passes: 0,
                    trials: 0,
                });
                out.len() - 1
            }
        };
        match r.outcome {
            Outcome::Pass => {
                out[i].passes += 1;
                out[i].trials += 1;
            }
            Outcome::Fail => out[i].trials += 1,
            Outcome::InfraError => {}
        }
    }
    out.sort_by(|a, b| (a.split, &a.task).cmp(&(b.split, &b.task)));
    out
}

/// The flaky-task record of `tree` under `fingerprint` from per-task repeats: held-in tasks by
/// name, validation tasks counted.
pub fn flaky_record(tasks: &[TaskNoise], tree: Oid, fingerprint: &str) -> FlakyTasksRecord {
    let tried = |split: Split| {
        tasks
            .iter()
            .filter(move |t| t.split == split && t.trials > 0)
    };
    FlakyTasksRecord {
        format: <FlakyTasksRecord as crate::support::format::Versioned>::FORMAT,
        tree: tree.to_string(),
        fingerprint: fingerprint.to_string(),
        tasks: tried(Split::HeldIn)
            .filter(|t| t.flaky())
            .map(|t| {
                (
                    t.task.clone(),
                    FlakyTask {
                        passes: t.passes,
                        trials: t.trials,
                        rate: t.rate(),
                    },
                )
            })
            .collect(),
        held_in_tasks: tried(Split::HeldIn).count() as u32,
        validation: FlakyCount {
            flaky: tried(Split::Validation).filter(|t| t.flaky()).count() as u32,
            of: tried(Split::Validation).count() as u32,
        },
        from_trials: tasks.iter().map(|t| t.trials).sum(),
    }
}

/// Measure the flaky tasks of `commit` from every cached trial of its tree under the experiment's
/// fingerprint (trial ids below [`EVIDENCE_TRIALS`], held_in and validation) and record them in
/// its note. A commit with another tree has other trials, so a new main starts from its own.
pub async fn mark_flaky(
    ws: &Workspace,
    ctx: &EvalContext,
    commit: Oid,
) -> Result<FlakyTasksRecord> {
    let results = cached_trials(
        ws,
        ctx,
        commit,
        &[Split::HeldIn, Split::Validation],
        0,
        EVIDENCE_TRIALS,
    )
    .await?;
    record_flaky(ws, ctx, commit, &results)
}

/// [`mark_flaky`] from `results`, the cached trials of `commit` a caller has read already.
pub fn record_flaky(
    ws: &Workspace,
    ctx: &EvalContext,
    commit: Oid,
    results: &[TrialResult],
) -> Result<FlakyTasksRecord> {
    let tree = ws
        .repo
        .find_commit(commit)
        .map_err(|e| Error::Git {
            context: "read commit".into(),
            source: e,
        })?
        .tree_id();
    let record = flaky_record(&per_task(results), tree, &ctx.fingerprint);
    lineage::update_note(&ws.repo, commit, |n| n.flaky_tasks = Some(record.clone()))?;
    Ok(record)
}

/// The smallest uniform gain in pass rate (points) the strict test detects with 80% power at
/// `look`, for tasks with pass rates `rates` (normal approximation of the paired sum: each task's
/// difference over `n` trial pairs has variance `2·n·p(1−p)`), and never below what the
/// discrete test needs: `min_changed_tasks` tasks that change.
pub fn minimum_detectable_effect(rates: &[f64], look: &gate::Look) -> f64 {
    let t = rates.len().max(1) as f64;
    let n = look.trials.max(1) as f64;
    let var: f64 = rates.iter().map(|p| 2.0 * p * (1.0 - p)).sum();
    let z = normal_quantile(1.0 - look.alpha) + normal_quantile(0.8);
    let approx = z * (var / n).sqrt() / t;
    let floor = stats::min_changed_tasks(look.alpha) as f64 / t;
    100.0 * approx.max(floor).min(1.0)
}

/// The same for the pooled statistic: the candidate's `look.trials` trials of each task against
/// the parent's `n_p` cached ones (`tasks`: rate and `n_p` per task); a task's rate difference
/// has variance `p(1−p)·(1/n + 1/n_p)`. No discrete floor: the pooled test's resolution grows
/// with the trials, not only with the tasks.
pub fn minimum_detectable_effect_pooled(tasks: &[(f64, u32)], look: &gate::Look) -> f64 {
    let t = tasks.len().max(1) as f64;
    let n = look.trials.max(1) as f64;
    let var: f64 = tasks
        .iter()
        .map(|(p, np)| p * (1.0 - p) * (1.0 / n + 1.0 / (*np).max(1) as f64))
        .sum();
    let z = normal_quantile(1.0 - look.alpha) + normal_quantile(0.8);
    100.0 * (z * var.sqrt() / t).min(1.0)
}

/// Φ⁻¹ (one implementation, the gate's).
pub(crate) fn normal_quantile(q: f64) -> f64 {
    crate::gate::stats::normal_quantile(q)
}

/// Evaluate `commit` with `trials` trials per task on held_in and validation (cached trials
/// reused; the new ones become parent evidence for later validations) and measure its noise.
pub async fn measure(
    ws: &Workspace,
    ctx: &EvalContext,
    commit: Oid,
    trials: u32,
    observer: &mut dyn Observer,
) -> Result<Noise> {
    let mut req = RunRequest::new(commit.to_string(), vec![Split::HeldIn, Split::Validation]);
    req.trials = Some(trials);
    let out = evaluate(ws, ctx, &req, observer, None, None).await?;
    let tasks = per_task(&out.results);
    let flaky = mark_flaky(ws, ctx, commit).await?;
    let cfg: &GateConfig = &ctx.fixed.experiment.gate;
    let base = ctx.fixed.experiment.trials;
    let look = *gate::looks(cfg, base)
        .last()
        .unwrap_or(&gate::Look::fixed(cfg.alpha, base));
    let rates: Vec<f64> = tasks.iter().map(TaskNoise::rate).collect();
    let mde_points = match cfg.statistic {
        GateStatistic::Paired => minimum_detectable_effect(&rates, &look),
        GateStatistic::Pooled => {
            let with_n: Vec<(f64, u32)> = tasks.iter().map(|t| (t.rate(), t.trials)).collect();
            minimum_detectable_effect_pooled(&with_n, &look)
        }
    };
    Ok(Noise {
        mde_points,
        flaky,
        tasks,
        run: out.id,
        executed: out.executed,
        look,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        assert!((normal_quantile(0.975) - 1.95996).abs() < 1e-3);
        assert!((normal_quantile(0.8) - 0.84162).abs() < 1e-3);
    }

    #[test]
    fn more_trials_or_tasks_detect_smaller_effects_down_to_the_discrete_floor() {
        let look = |trials| gate::Look::fixed(0.05, trials);
        let half = vec![0.5; 30];
        let two = minimum_detectable_effect(&half, &look(2));
        let eight = minimum_detectable_effect(&half, &look(8));
        assert!(eight < two, "{eight} vs {two}");
        // A deterministic model: no variance, only the floor of 5 changed tasks out of 30.
        let det = minimum_detectable_effect(&[1.0; 30], &look(2));
        assert!((det - 100.0 * 5.0 / 30.0).abs() < 1e-9, "{det}");
    }

    #[test]
    fn the_parents_cache_lowers_the_pooled_effect_it_can_detect() {
        let look = gate::Look::fixed(0.05, 4);
        let few = minimum_detectable_effect_pooled(&[(0.5, 4); 30], &look);
        let many = minimum_detectable_effect_pooled(&[(0.5, 64); 30], &look);
        // With as many parent trials as candidate ones the variance is the paired one's
        // (2·p(1−p)/n per task: no pairing information); a larger cache nearly halves it.
        let z = normal_quantile(0.95) + normal_quantile(0.8);
        let paired_approx = 100.0 * z * (30.0 * 2.0 * 0.25 / 4.0f64).sqrt() / 30.0;
        assert!(
            (few - paired_approx).abs() < 1e-6,
            "{few} vs {paired_approx}"
        );
        assert!(many < few, "{many} vs {few}");
        // Below the paired test's discrete floor of 5 changed tasks in 30.
        assert!(
            many < minimum_detectable_effect(&[0.5; 30], &look),
            "{many}"
        );
    }
}
