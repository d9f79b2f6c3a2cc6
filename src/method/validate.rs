//! Validation: evaluate a candidate and its parent on held_in and validation with the same task
//! ids and trial ids (the parent from the cache), stop the candidate as soon as its verdict is
//! settled, apply the gate, record the verdict on the candidate, and move rejected candidates to
//! `refs/harness/rejected/`.

use git2::Oid;

use crate::error::{Error, Result};
use crate::eval::run::{EvalContext, RunOutcome, RunRequest, cached_trials, evaluate};
use crate::eval::schedule::{Observer, Stopper};
use crate::eval::{Outcome as TrialOutcome, TrialResult};
use crate::experiment::{GateConfig, GateFlaky, GateRule, Split};
use crate::gate::{self, Decision, Evaluation, Outcome, SettleMode, Table, Verdict};
use crate::lineage::{self, Proposal, SplitComparison, ValidationRecord};
use crate::workspace::Workspace;

/// The gate's splits: validation never leaves this module as anything but aggregates.
const GATED: [Split; 2] = [Split::HeldIn, Split::Validation];

pub use super::noise::EVIDENCE_TRIALS;

#[derive(Debug, Clone)]
pub struct Validation {
    pub proposal: Proposal,
    pub parent: Oid,
    pub decision: Decision,
    pub record: ValidationRecord,
    /// Where a rejected proposal went.
    pub rejected_ref: Option<String>,
    pub parent_run: String,
    pub candidate_runs: Vec<String>,
    /// Trials of the parent and the candidate this validation executed (not from the cache),
    /// and the trials its last look compared (both sides; earlier looks' trials are among them).
    pub trials_executed: usize,
    pub trials_planned: usize,
    /// Cost of the trials this validation executed.
    pub cost_usd: f64,
    /// The record existed already (no trial ran).
    pub reused: bool,
    /// The minimum detectable effect of the design on the parent's measured pass rates
    /// (80% power, pass-rate points); `None` for a reused record.
    pub mde_points: Option<f64>,
}

/// A validation recorded earlier for exactly this candidate tree, parent tree and experiment.
pub fn existing(
    ws: &Workspace,
    ctx: &EvalContext,
    proposal: &Proposal,
    rule: GateRule,
) -> Result<Option<Validation>> {
    let repo = &ws.repo;
    let candidate = repo.find_commit(proposal.commit).map_err(|e| Error::Git {
        context: "read proposal".into(),
        source: e,
    })?;
    let Ok(parent) = candidate.parent(0) else {
        return Ok(None);
    };
    let note = lineage::read_note(repo, proposal.commit)?;
    let rule_name = rule.as_str();
    let Some(record) = note.validations.iter().rev().find(|r| {
        r.matches(candidate.tree_id(), parent.tree_id(), &ctx.fingerprint) && r.gate == rule_name
    }) else {
        return Ok(None);
    };
    let Some(decision) = record.decision.as_deref().cloned() else {
        return Ok(None);
    };
    let mut runs = record.runs.clone();
    let parent_run = if runs.is_empty() {
        String::new()
    } else {
        runs.remove(0)
    };
    Ok(Some(Validation {
        proposal: proposal.clone(),
        parent: parent.id(),
        decision,
        record: record.clone(),
        rejected_ref: None,
        parent_run,
        candidate_runs: runs,
        trials_executed: 0,
        trials_planned: 0,
        cost_usd: 0.0,
        reused: true,
        mde_points: None,
    }))
}

/// The gate table of a split from run results; trials without a result are `Pending`.
pub fn table(results: &[TrialResult], split: Split, tasks: &[String], trials: u32) -> Table {
    let mut t = Table::pending(tasks, trials);
    for r in results.iter().filter(|r| r.split == split.as_str()) {
        if let Some(row) = t.tasks.get_mut(&r.task)
            && let Some(cell) = row.get_mut(r.trial as usize)
        {
            *cell = match r.outcome {
                TrialOutcome::Pass => Outcome::Pass,
                TrialOutcome::Fail => Outcome::Fail,
                TrialOutcome::InfraError => Outcome::Infra,
            };
        }
    }
    t
}

pub fn evaluation(ctx: &EvalContext, results: &[TrialResult], trials: u32) -> Evaluation {
    let s = &ctx.fixed.splits;
    let mut e = Evaluation::new(
        table(results, Split::HeldIn, &s.held_in, trials),
        table(results, Split::Validation, &s.validation, trials),
    );
    e.fingerprint = Some(ctx.fingerprint.clone());
    e
}

/// Trials with ids in `from..to` from `results` (a side's cached trials), per task: evidence
/// for the unpaired per-task comparisons of the gate (the broke test, the pooled statistic), or
/// its mark trials.
pub fn evidence_in(
    results: &[TrialResult],
    from: u32,
    to: u32,
) -> std::collections::BTreeMap<String, gate::Evidence> {
    let mut ev = std::collections::BTreeMap::<String, gate::Evidence>::new();
    for r in results.iter().filter(|r| (from..to).contains(&r.trial)) {
        count(ev.entry(r.task.clone()).or_default(), r.outcome);
    }
    ev
}

/// One trial as evidence of a task's pass rate (infrastructure errors say nothing of it).
fn count(e: &mut gate::Evidence, outcome: TrialOutcome) {
    match outcome {
        TrialOutcome::Pass => {
            e.passes += 1;
            e.trials += 1;
        }
        TrialOutcome::Fail => e.trials += 1,
        TrialOutcome::InfraError => {}
    }
}

/// The parent's side for the pooled statistic from its cached trials `results` alone (those
/// with trial ids below `to`: the mark trials of `gate.flaky` from there on never feed the
/// statistic): per task, the first `trials` of them fill the table's columns (those free of
/// infrastructure errors first) and the rest are evidence. `None` when some gated task has
/// fewer than `trials` cached trials: the parent must run.
pub fn cached_parent(
    ctx: &EvalContext,
    results: &[TrialResult],
    trials: u32,
    to: u32,
) -> Option<Evaluation> {
    let mut by_task = std::collections::BTreeMap::<(&str, &str), Vec<TrialResult>>::new();
    for r in results.iter().filter(|r| r.trial < to) {
        by_task
            .entry((r.split.as_str(), r.task.as_str()))
            .or_default()
            .push(r.clone());
    }
    let mut table_results = Vec::new();
    let mut evidence = std::collections::BTreeMap::<String, gate::Evidence>::new();
    for split in GATED {
        for task in ctx.fixed.splits.get(split) {
            let mut rs = by_task.remove(&(split.as_str(), task.as_str()))?;
            if rs.len() < trials as usize {
                return None;
            }
            // Infrastructure errors last, so that they land in the table only when the cache has
            // too few other trials (they count against coverage there, as a run's would).
            rs.sort_by_key(|r| (r.outcome == TrialOutcome::InfraError, r.trial));
            let rest = rs.split_off(trials as usize);
            for (i, mut r) in rs.into_iter().enumerate() {
                r.trial = i as u32;
                table_results.push(r);
            }
            let e = evidence.entry(task.clone()).or_default();
            for r in rest {
                count(e, r.outcome);
            }
        }
    }
    let mut e = evaluation(ctx, &table_results, trials);
    e.evidence = evidence;
    Some(e)
}

/// Every cached trial of `commit` on the gated splits that counts as evidence of its pass rates
/// (trial ids below [`EVIDENCE_TRIALS`]).
async fn evidence_trials(
    ws: &Workspace,
    ctx: &EvalContext,
    commit: Oid,
) -> Result<Vec<TrialResult>> {
    cached_trials(ws, ctx, commit, &GATED, 0, EVIDENCE_TRIALS).await
}

/// Validate one proposal against its parent.
pub async fn validate(
    ws: &Workspace,
    ctx: &EvalContext,
    proposal: &Proposal,
    rule: Option<GateRule>,
    observer: &mut dyn Observer,
) -> Result<Validation> {
    let repo = &ws.repo;
    // A rejection retires the branch: refuse before any trial runs if its checkout could not
    // be switched to main then.
    if proposal.state == lineage::ProposalState::Open {
        lineage::ensure_can_leave(repo, &proposal.refname)?;
    }
    let mut cfg: GateConfig = ctx.fixed.experiment.gate.clone();
    if let Some(r) = rule {
        cfg.rule = r;
    }
    let candidate = repo.find_commit(proposal.commit).map_err(|e| Error::Git {
        context: "read proposal".into(),
        source: e,
    })?;
    let parent = candidate.parent(0).map_err(|_| {
        Error::usage(format!(
            "proposal {} has no parent commit to compare with",
            proposal.name()
        ))
    })?;
    let Comparison {
        decision,
        parent_run,
        candidate_runs,
        executed,
        cost_usd: cost,
        mde_points,
        trials,
        parent_trials,
        ..
    } = compare(ws, ctx, &cfg, proposal.commit, parent.id(), false, observer).await?;
    let mde_points = Some(mde_points);

    // Every evaluation of the parent is evidence of its flakiness: record it in its note, from
    // the trials the comparison read already.
    super::noise::record_flaky(ws, ctx, parent.id(), &parent_trials)?;

    // Both sides, once: the last look's plan holds the trials of the earlier ones.
    let planned =
        2 * (ctx.fixed.splits.held_in.len() + ctx.fixed.splits.validation.len()) * trials as usize;
    let record = record_of(
        &candidate,
        &parent,
        ctx,
        &cfg,
        &decision,
        &parent_run,
        &candidate_runs,
    );
    lineage::update_note(repo, proposal.commit, |n| n.add_validation(record.clone()))?;
    let rejected_ref = if decision.verdict == Verdict::Reject {
        Some(lineage::reject_proposal(repo, proposal, &decision.reason)?)
    } else {
        None
    };
    Ok(Validation {
        proposal: proposal.clone(),
        parent: parent.id(),
        decision,
        record,
        rejected_ref,
        parent_run,
        candidate_runs,
        trials_executed: executed,
        trials_planned: planned,
        cost_usd: cost,
        reused: false,
        mde_points,
    })
}

/// What one comparison of a candidate with its parent through the gate's design found.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The decision at the last look taken.
    pub decision: Decision,
    pub parent_run: String,
    /// One run per look.
    pub candidate_runs: Vec<String>,
    /// Trials of both sides executed (not from the cache).
    pub executed: usize,
    pub cost_usd: f64,
    /// The minimum detectable effect of the design on the parent's measured pass rates.
    pub mde_points: f64,
    /// Trials per task at the last look.
    pub trials: u32,
    /// Both sides' tables at the last look (the parent's with its cached evidence; the
    /// candidate's with pending cells where it stopped early).
    pub parent: Evaluation,
    pub candidate: Evaluation,
    /// The parent's cached trials as the last look read them (every trial id below
    /// [`EVIDENCE_TRIALS`], gated splits): what its flaky tasks are measured from.
    pub parent_trials: Vec<TrialResult>,
}

/// Compare `candidate` with `parent` through the gate's design `cfg`: evaluate both on the
/// gated splits at the trial ids of each look (the parent from the cache where possible), stop
/// the candidate early when `cfg.early_stop` and its verdict is settled, and take the next look
/// while the design asks for more trials. `no_note` keeps the runs out of the commits' notes.
pub async fn compare(
    ws: &Workspace,
    ctx: &EvalContext,
    cfg: &GateConfig,
    candidate: Oid,
    parent: Oid,
    no_note: bool,
    observer: &mut dyn Observer,
) -> Result<Comparison> {
    let base = ctx.fixed.experiment.trials;
    let mut trials = base;
    let mut candidate_runs = Vec::new();
    let mut executed = 0;
    let mut cost = 0.0;
    let pooled = cfg.statistic == crate::experiment::GateStatistic::Pooled;
    let mut parent_run = String::new();
    let (decision, parent_eval, cand_eval, mde_points, parent_trials) = loop {
        // With `gate.flaky` other than `count`, the trials beyond the design's last look decide
        // which tasks are flaky and never feed the statistic: the selection is then
        // independent of the data it is applied to (docs/gate.md).
        let marks_from = match cfg.flaky {
            GateFlaky::Count => EVIDENCE_TRIALS,
            _ => last_look_trials(cfg, base).max(trials).min(EVIDENCE_TRIALS),
        };
        // The pooled statistic compares per-task rates, so any cached trials of the parent serve
        // (whatever their trial ids): the parent costs nothing once the cache holds `trials`
        // per task. Otherwise (and always for the paired test, which needs the same trial ids)
        // the parent runs at the look's trial ids, from the cache where it ran them before.
        // The parent's cached trials are read once per look (twice when the pooled statistic
        // finds too few and the parent runs): its table, evidence and marks, and at the end its
        // flaky tasks, all come from that one read.
        let mut read = if pooled {
            Some(evidence_trials(ws, ctx, parent).await?)
        } else {
            None
        };
        let cached = read
            .as_deref()
            .and_then(|all| cached_parent(ctx, all, trials, marks_from));
        let mut parent_eval = match cached {
            Some(e) => e,
            None => {
                let parent_out =
                    evaluate_side(ws, ctx, parent, trials, None, no_note, observer).await?;
                executed += parent_out.executed;
                cost += run_cost(&parent_out);
                parent_run = parent_out.id.clone();
                let all = evidence_trials(ws, ctx, parent).await?;
                let mut e = evaluation(ctx, &parent_out.results, trials);
                e.evidence = evidence_in(&all, trials, marks_from);
                read = Some(all);
                e
            }
        };
        let all = read.unwrap_or_default();
        if marks_from < EVIDENCE_TRIALS {
            parent_eval.marks = evidence_in(&all, marks_from, EVIDENCE_TRIALS);
        }
        let mde = design_mde(cfg, base, &parent_eval);
        let look = gate::look_at(cfg, base, trials);
        let order = gate::trial_order(&parent_eval);
        let cfg_s = cfg.clone();
        let pe = parent_eval.clone();
        let s_ref = ctx.fixed.splits.clone();
        let fp = ctx.fingerprint.clone();
        let stopper = Box::new(move |results: &[TrialResult]| -> Option<Decision> {
            if !cfg_s.early_stop {
                return None;
            }
            let mut cand = Evaluation::new(
                table(results, Split::HeldIn, &s_ref.held_in, trials),
                table(results, Split::Validation, &s_ref.validation, trials),
            );
            cand.fingerprint = Some(fp.clone());
            let pending =
                cand.held_in.count(Outcome::Pending) + cand.validation.count(Outcome::Pending);
            if pending == 0 {
                return None;
            }
            gate::try_settled_at(&cfg_s, look, &pe, &cand, SettleMode::CoverageSoFar)
                .ok()
                .flatten()
        });
        let cand_out = evaluate_side(
            ws,
            ctx,
            candidate,
            trials,
            Some((order, stopper)),
            no_note,
            observer,
        )
        .await?;
        executed += cand_out.executed;
        cost += run_cost(&cand_out);
        candidate_runs.push(cand_out.id.clone());
        let cand_eval = evaluation(ctx, &cand_out.results, trials);
        let decision = match cand_out.settled.clone() {
            Some(d) => d,
            None => {
                gate::decide_at(cfg, look, &parent_eval, &cand_eval).map_err(|e| Error::Usage {
                    message: format!("the gate refuses to compare: {e}"),
                    hint: Some("parent and candidate must cover the same tasks and trials under one experiment".into()),
                })?
            }
        };
        match gate::wants_more_trials(cfg, &decision, base) {
            Some(n) if n > trials => trials = n,
            _ => break (decision, parent_eval, cand_eval, mde, all),
        }
    };
    Ok(Comparison {
        decision,
        parent_run,
        candidate_runs,
        executed,
        cost_usd: cost,
        mde_points,
        trials,
        parent: parent_eval,
        candidate: cand_eval,
        parent_trials,
    })
}

/// What a run cost in all: its finished trials and those it cancelled.
fn run_cost(out: &RunOutcome) -> f64 {
    out.record.totals.values().map(|t| t.cost_usd).sum::<f64>() + out.record.cancelled.cost_usd
}

/// The order a candidate's trials run in: (split, task, trial id), decisive first.
type TrialOrder = Vec<(Split, String, u32)>;

/// One side's evaluation on the gated splits at `trials` trials per task: with an order and a
/// stopper for the candidate, in plan order for the parent. A new run is recorded either way
/// (a validation's record names the runs it made).
async fn evaluate_side(
    ws: &Workspace,
    ctx: &EvalContext,
    commit: Oid,
    trials: u32,
    candidate: Option<(TrialOrder, Stopper<'_>)>,
    no_note: bool,
    observer: &mut dyn Observer,
) -> Result<RunOutcome> {
    let mut req = RunRequest::new(commit.to_string(), GATED.to_vec());
    req.trials = Some(trials);
    req.reuse_recorded = false;
    req.no_note = no_note;
    let stopper = candidate.map(|(order, stopper)| {
        req.order = Some(order);
        stopper
    });
    evaluate(ws, ctx, &req, observer, stopper, None).await
}

/// Trials per task at the design's last look.
fn last_look_trials(cfg: &GateConfig, base: u32) -> u32 {
    gate::looks(cfg, base).last().map_or(base, |l| l.trials)
}

/// The minimum detectable effect of the gate's design (its last look) on the parent's per-task
/// pass rates: every trial of its table and its cached evidence.
pub fn design_mde(cfg: &GateConfig, base: u32, parent: &Evaluation) -> f64 {
    let look = *gate::looks(cfg, base)
        .last()
        .unwrap_or(&gate::Look::fixed(cfg.alpha, base));
    let tasks: Vec<(f64, u32)> = parent
        .per_task()
        .iter()
        .map(|(_, _, e)| (e.rate(), e.trials))
        .collect();
    match cfg.statistic {
        crate::experiment::GateStatistic::Paired => {
            let rates: Vec<f64> = tasks.iter().map(|t| t.0).collect();
            super::noise::minimum_detectable_effect(&rates, &look)
        }
        crate::experiment::GateStatistic::Pooled => {
            super::noise::minimum_detectable_effect_pooled(&tasks, &look)
        }
    }
}

fn record_of(
    candidate: &git2::Commit<'_>,
    parent: &git2::Commit<'_>,
    ctx: &EvalContext,
    cfg: &GateConfig,
    d: &Decision,
    parent_run: &str,
    candidate_runs: &[String],
) -> ValidationRecord {
    let cmp = |s: &gate::SplitSummary| SplitComparison {
        parent_passes: s.parent_passes,
        parent_trials: s.trials,
        candidate_passes: s.candidate_passes,
        candidate_trials: s.trials,
    };
    let mut runs = vec![parent_run.to_string()];
    runs.extend(candidate_runs.iter().cloned());
    ValidationRecord {
        format: <ValidationRecord as crate::support::format::Versioned>::FORMAT,
        candidate: candidate.id().to_string(),
        candidate_tree: candidate.tree_id().to_string(),
        parent: parent.id().to_string(),
        parent_tree: parent.tree_id().to_string(),
        fingerprint: ctx.fingerprint.clone(),
        gate: cfg.rule.as_str().into(),
        verdict: d.verdict,
        reason: d.reason.clone(),
        held_in: cmp(&d.held_in),
        validation: cmp(&d.validation),
        statistic: Some(format!(
            "{} p={:.4} (m={}, sum {:+}) vs alpha {}",
            match cfg.statistic {
                crate::experiment::GateStatistic::Paired => "sign-flip",
                crate::experiment::GateStatistic::Pooled => "pooled",
            },
            d.statistic.p_value,
            d.statistic.m,
            d.statistic.observed,
            d.statistic.alpha
        )),
        margin: d.margin.passes as f64 + d.margin.rate_points / 1000.0,
        runs,
        early_stop: d.early_stopped.as_ref().map(|e| {
            format!(
                "{} of {} trials: {}",
                e.trials_run, e.trials_total, e.reason
            )
        }),
        created_at: crate::eval::record::now(),
        decision: Some(Box::new(d.clone())),
    }
}
