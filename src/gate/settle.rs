//! Exact early stopping, the order to run candidate trials in, and adaptive trial counts.
//!
//! # Why `settled` is exact
//!
//! Each pending candidate trial can become Pass, Fail or Infra. Its parent trial is complete:
//!
//! - parent **Infra**: the pair is dropped whatever the candidate gives; it cannot matter.
//! - parent **Pass**: the task's difference `d_t` gains 0 (Pass, or Infra: dropped) or −1 (Fail).
//! - parent **Fail**: `d_t` gains +1 (Pass) or 0 (Fail, or Infra: dropped).
//!
//! So every `d_t` ranges over an integer interval independently of the other tasks, and the
//! completion "every pending trial passes" (*best*) puts every `d_t` at its top while "every
//! pending trial fails" (*worst*) puts every one at its bottom. Then:
//!
//! - **coverage** only depends on how many pending trials turn out Infra: it is lowest when all
//!   do and highest when none does. Both ends must agree or nothing is settled.
//! - the **paper rule** accepts on an up-closed set of (Δheld_in, Δvalidation): it accepts every
//!   completion iff it accepts the worst, and rejects every completion iff it rejects the best.
//! - the **p-value** is non-increasing in each `d_t` (proof in [`super::stats`]), so it is
//!   smallest at the best completion and largest at the worst.
//! - a task is **broke** in the best completion only when it has no pending trial that counts,
//!   and then it is broke in every completion. A task *can* be broke in some completion iff its
//!   finished kept pairs are all (parent Pass, candidate Fail) and at least one pair is kept or
//!   pending with a parent Pass.
//!
//! The strict rule accepts iff paper ∧ no broke ∧ p ≤ alpha, so it accepts every completion iff
//! the worst completion passes the paper rule and p ≤ alpha and no task can break; it rejects
//! every completion iff the best completion is rejected. With adaptive trials on, a rejection
//! that is "promising" (would ask for more trials) is told apart from one that is not, and
//! settling requires both to agree too. These conditions are necessary and sufficient, so
//! `settled` returns a verdict exactly when every completion yields the same one; the property
//! test `tests/gate_settle.rs` checks it against brute force.
//!
//! # What it saves (measured by `benches/gate.rs`; 20 + 10 tasks, 1% infra)
//!
//! Rejections settle early, acceptances hardly ever: to accept, every trial the parent passed
//! must be shown not to regress (the worst case assumes each pending one fails). With
//! [`SettleMode::CoverageSoFar`] and the default order, a rejected candidate costs about 45% of
//! its trials (strict and paper, A/A), an accepted one 92–99%; over A/A candidates the strict
//! rule spends 46% (2 trials per task) to 50% (4). [`SettleMode::Exact`] must also rule out that
//! the remaining trials all hit infrastructure errors, so at `min_coverage` 0.9 it spends ≥ 90%.

use serde::{Deserialize, Serialize};

use crate::experiment::{GateConfig, GateRule, Split};

use super::GateError;
use super::decide::{
    Assessment, Counts, Decision, EarlyStop, Verdict, check_comparable, check_complete,
    coverage_ok, fmt_p, indecisive_reason, paper_failure,
};
use super::design::{Look, futility_bound, look_at, next_look};
use super::table::{Evaluation, Outcome};

/// The verdict if it is the same for every possible completion of the candidate's pending
/// trials (each Pass, Fail or Infra); `None` while the remaining trials could still change it,
/// when `cfg.early_stop` is off and trials are pending, or when the evaluations cannot be
/// compared ([`try_settled`] says why; [`super::decide`] refuses the same way).
///
/// With no pending trial this is [`super::decide`]. A settled decision before the end carries
/// `early_stopped`, and its numbers are over the trials that ran.
pub fn settled(
    cfg: &GateConfig,
    parent: &Evaluation,
    candidate_partial: &Evaluation,
) -> Option<Decision> {
    try_settled(cfg, parent, candidate_partial, SettleMode::Exact)
        .ok()
        .flatten()
}

/// How [`try_settled`] treats coverage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SettleMode {
    /// Every completion, coverage included: a pending trial that could still turn out Infra could
    /// still make the final coverage too low (indecisive), so nothing settles (except
    /// "indecisive") before `min_coverage` of all trial pairs are kept. With the default
    /// `min_coverage` 0.9 that means at least 90% of the trials must run.
    Exact,
    /// Coverage is judged on the trials that ran (kept / run ≥ `min_coverage`); everything else
    /// (Δs, p, broke) is settled over every completion (Pass, Fail or Infra) as in `Exact`. The
    /// verdict equals the one of every completion whose final coverage meets the minimum; a
    /// completion in which the never-run trials would all have hit infrastructure errors is
    /// not waited for. This is the mode that saves trials.
    CoverageSoFar,
}

/// [`settled`] in the given mode, with the refusal to compare as an error.
pub fn try_settled(
    cfg: &GateConfig,
    parent: &Evaluation,
    candidate_partial: &Evaluation,
    mode: SettleMode,
) -> Result<Option<Decision>, GateError> {
    let trials = parent.max_trials();
    try_settled_at(
        cfg,
        look_at(cfg, trials, trials),
        parent,
        candidate_partial,
        mode,
    )
}

/// [`try_settled`] at a given look of the sequential design.
pub fn try_settled_at(
    cfg: &GateConfig,
    look: Look,
    parent: &Evaluation,
    candidate_partial: &Evaluation,
    mode: SettleMode,
) -> Result<Option<Decision>, GateError> {
    check_comparable(parent, candidate_partial)?;
    check_complete(parent, "parent")?;
    let counts = Counts::of(cfg, parent, candidate_partial);
    let pending: u32 = counts.tasks.iter().map(|t| t.pending()).sum();
    if pending == 0 {
        return Ok(Some(counts.decide(cfg, &look)));
    }
    if !cfg.early_stop {
        return Ok(None);
    }
    let total = counts.total_pairs();
    let kept_now: u32 = counts.tasks.iter().map(|t| t.kept).sum();
    let kept_max = kept_now
        + counts
            .tasks
            .iter()
            .map(|t| t.pend_pp + t.pend_pf)
            .sum::<u32>();

    let stop = |verdict: Verdict, promising: bool, why: String| {
        let run_pairs = total - pending;
        let partial = counts.assess(cfg, &look, run_pairs);
        let early = EarlyStop {
            trials_run: candidate_partial.cells() as u32
                - candidate_partial.count(Outcome::Pending) as u32,
            trials_total: candidate_partial.cells() as u32,
            reason: why.clone(),
        };
        let label = if verdict == Verdict::Indecisive {
            "INDECISIVE"
        } else {
            verdict.as_str()
        };
        let reason = format!(
            "{label}: {why} (settled after {}/{} trials){}",
            early.trials_run,
            early.trials_total,
            super::decide::flaky_words(cfg, partial.flaky)
        );
        Some(counts.decision(
            cfg,
            &partial,
            run_pairs,
            verdict,
            reason,
            promising,
            Some(early),
        ))
    };

    // Coverage is monotone in how many pending trials turn out Infra.
    if !coverage_ok(kept_max, total, cfg.min_coverage) {
        let why = format!(
            "even with no more infrastructure errors, {}",
            indecisive_reason(kept_max, total, cfg.min_coverage).trim_start_matches("INDECISIVE: ")
        );
        return Ok(stop(Verdict::Indecisive, false, why));
    }
    let coverage_settled = match mode {
        SettleMode::Exact => coverage_ok(kept_now, total, cfg.min_coverage),
        SettleMode::CoverageSoFar => coverage_ok(kept_now, total - pending, cfg.min_coverage),
    };
    if !coverage_settled {
        return Ok(None);
    }

    let (best, worst) = completions(&counts);
    let hi = best.assess(cfg, &look, total);
    let lo = worst.assess(cfg, &look, total);

    match cfg.rule {
        GateRule::Paper => {
            if !hi.paper_ok {
                return Ok(stop(
                    Verdict::Reject,
                    false,
                    format!(
                        "even if every remaining trial passes: {}",
                        paper_failure(&hi)
                    ),
                ));
            }
            if lo.paper_ok {
                return Ok(stop(
                    Verdict::Accept,
                    false,
                    format!(
                        "even if every remaining trial fails: {}",
                        deltas_at_least(&lo)
                    ),
                ));
            }
            Ok(None)
        }
        GateRule::Strict => {
            // Breaks are judged per task and are monotone in the task's candidate passes: a
            // task can break in some completion iff it breaks when its pending trials fail
            // (worst), and breaks in every completion iff it breaks when they pass (best).
            let can_break: Vec<&str> = worst
                .tasks
                .iter()
                .filter(|t| t.broke())
                .map(|t| t.task.as_str())
                .collect();
            let break_risk = !cfg.allow_broke && !can_break.is_empty();
            // A suspected break (not significant) only matters before the last look.
            let can_suspect = !cfg.allow_broke
                && !look.last()
                && counts.tasks.iter().any(|t| {
                    !t.quarantined
                        && t.parent_pass == t.kept
                        && t.cand_pass == 0
                        && (t.kept > 0 || t.pend_pp > 0)
                });
            let last = look.last();
            let reject_above = if last {
                look.alpha
            } else {
                futility_bound(cfg, &look)
            };
            // Before the last look a paper-rule failure does not reject (more trials may undo
            // it); at the last look it does.
            if (last && !hi.paper_ok) || !hi.broke_ok(cfg) || hi.test.p_value > reject_above {
                let mut why = Vec::new();
                if last && !hi.paper_ok {
                    why.push(paper_failure(&hi));
                }
                if !hi.broke_ok(cfg) {
                    why.push(format!("broke {}", hi.broke.join(", ")));
                }
                if hi.test.p_value > reject_above
                    && let Some(words) = super::too_few_changes(hi.test.m, reject_above, false)
                {
                    why.push(words);
                } else if hi.test.p_value > reject_above {
                    why.push(format!(
                        "p ≥ {} > {} {}",
                        fmt_p(hi.test.p_value),
                        if last { "alpha" } else { "the futility bound" },
                        fmt_p(reject_above)
                    ));
                }
                return Ok(stop(
                    Verdict::Reject,
                    false,
                    format!("even if every remaining trial passes: {}", why.join("; ")),
                ));
            }
            if lo.paper_ok && !break_risk && !can_suspect && lo.test.p_value <= look.alpha {
                return Ok(stop(
                    Verdict::Accept,
                    false,
                    format!(
                        "even if every remaining trial fails: {}, p ≤ {} ≤ alpha {}, no task can break",
                        deltas_at_least(&lo),
                        fmt_p(lo.test.p_value),
                        fmt_p(look.alpha)
                    ),
                ));
            }
            // Promising in every completion: nothing rejects it and none accepts it (the best
            // completion has the smallest p and the fewest suspected breaks).
            if !last
                && !break_risk
                && lo.test.p_value <= futility_bound(cfg, &look)
                && (!hi.paper_ok || hi.test.p_value > look.alpha || !hi.suspect_ok(cfg))
            {
                return Ok(stop(
                    Verdict::Reject,
                    true,
                    format!(
                        "whatever the remaining trials give, it is not accepted at this look and p ≤ {} ≤ the futility bound {}: promising",
                        fmt_p(lo.test.p_value),
                        fmt_p(futility_bound(cfg, &look))
                    ),
                ));
            }
            Ok(None)
        }
    }
}

fn deltas_at_least(a: &Assessment) -> String {
    if let Some((r_in, r_val)) = a.pooled {
        return format!("Δrate held_in ≥ {r_in:+.2} tasks, Δrate validation ≥ {r_val:+.2} tasks");
    }
    format!(
        "Δheld_in ≥ {:+}, Δvalidation ≥ {:+}",
        a.delta_in, a.delta_val
    )
}

/// The best (every pending trial passes) and worst (every pending trial fails) completions.
fn completions(counts: &Counts) -> (Counts, Counts) {
    let mut best = counts.clone();
    let mut worst = counts.clone();
    for t in &mut best.tasks {
        t.kept += t.pend_pp + t.pend_pf;
        t.parent_pass += t.pend_pp;
        t.cand_pass += t.pend_pp + t.pend_pf;
        t.cand_all_n += t.pending();
        t.cand_all_pass += t.pending();
        (t.pend_pp, t.pend_pf, t.pend_pi) = (0, 0, 0);
    }
    for t in &mut worst.tasks {
        t.kept += t.pend_pp + t.pend_pf;
        t.parent_pass += t.pend_pp;
        t.cand_all_n += t.pending();
        (t.pend_pp, t.pend_pf, t.pend_pi) = (0, 0, 0);
    }
    (best, worst)
}

/// Orders of running candidate trials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrialOrder {
    /// held_in then validation, tasks by id, trials by index: what a plain loop does.
    Sequential,
    /// Trials whose parent trial failed first, then those it passed; within each, tasks the
    /// parent passed least first.
    ParentFailFirst,
    /// Trials whose parent trial passed first (a failure there is a regression), then failed.
    ParentPassFirst,
    /// Trial 0 of every task, then trial 1, …; tasks the parent passed least first.
    RoundRobin,
    /// Task by task, the tasks the parent passed least first (each task's parent-failed
    /// trials before its parent-passed ones); the tasks the parent always passed come last.
    HardestFirst,
    /// [`TrialOrder::HardestFirst`] within each split, the validation split first.
    ValidationHardestFirst,
    /// [`TrialOrder::ParentFailFirst`] within each split, the validation split first.
    ValidationFailFirst,
}

/// The order in which to run a candidate's trials so that the verdict settles early: see
/// [`trial_order_with`] and [`TrialOrder`]; the default was chosen by `benches/gate.rs`.
/// Trials whose parent trial hit an infrastructure error come last: they are dropped from the
/// comparison whatever the candidate gives, so [`settled`] never waits for them.
pub fn trial_order(parent: &Evaluation) -> Vec<(Split, String, u32)> {
    trial_order_with(parent, DEFAULT_ORDER)
}

/// The order [`trial_order`] uses.
pub const DEFAULT_ORDER: TrialOrder = TrialOrder::ValidationHardestFirst;

/// Candidate trials in the given order.
pub fn trial_order_with(parent: &Evaluation, order: TrialOrder) -> Vec<(Split, String, u32)> {
    struct Cell<'a> {
        split: Split,
        task: &'a str,
        trial: u32,
        parent: Outcome,
        task_rate: f64,
    }
    let mut cells = Vec::new();
    for split in [Split::HeldIn, Split::Validation] {
        for (task, outcomes) in &parent.table(split).expect("gated split").tasks {
            let kept = outcomes
                .iter()
                .filter(|o| matches!(o, Outcome::Pass | Outcome::Fail))
                .count();
            let passes = outcomes.iter().filter(|o| **o == Outcome::Pass).count();
            let task_rate = if kept == 0 {
                0.5
            } else {
                passes as f64 / kept as f64
            };
            for (i, o) in outcomes.iter().enumerate() {
                cells.push(Cell {
                    split,
                    task,
                    trial: i as u32,
                    parent: *o,
                    task_rate,
                });
            }
        }
    }
    // Rank of the parent outcome: 0 runs first. Parent Infra (or Pending) always last.
    let outcome_rank = |o: Outcome| -> u8 {
        match (order, o) {
            (_, Outcome::Infra | Outcome::Pending) => 2,
            (TrialOrder::ParentPassFirst, Outcome::Pass)
            | (TrialOrder::ParentFailFirst, Outcome::Fail) => 0,
            (TrialOrder::ParentPassFirst | TrialOrder::ParentFailFirst, _) => 1,
            (TrialOrder::HardestFirst | TrialOrder::ValidationHardestFirst, Outcome::Pass) => 1,
            (TrialOrder::ValidationFailFirst, Outcome::Pass) => 1,
            _ => 0,
        }
    };
    let key = |c: &Cell| -> (u8, u32, u64, Split, String, u32) {
        let rate = (c.task_rate * 1e6) as u64;
        match order {
            TrialOrder::Sequential => (
                outcome_rank(c.parent),
                0,
                0,
                c.split,
                c.task.to_string(),
                c.trial,
            ),
            TrialOrder::RoundRobin => (
                outcome_rank(c.parent),
                c.trial,
                rate,
                c.split,
                c.task.to_string(),
                c.trial,
            ),
            TrialOrder::ParentFailFirst | TrialOrder::ParentPassFirst => (
                outcome_rank(c.parent),
                0,
                rate,
                c.split,
                c.task.to_string(),
                c.trial,
            ),
            TrialOrder::HardestFirst => {
                let infra_last = (outcome_rank(c.parent) == 2) as u8;
                (
                    infra_last,
                    0,
                    rate,
                    c.split,
                    c.task.to_string(),
                    outcome_rank(c.parent) as u32 * 1000 + c.trial,
                )
            }
            TrialOrder::ValidationFailFirst => {
                let infra_last = (outcome_rank(c.parent) == 2) as u8;
                let split_rank =
                    (c.split != Split::Validation) as u32 * 10 + outcome_rank(c.parent) as u32;
                (
                    infra_last,
                    split_rank,
                    rate,
                    c.split,
                    c.task.to_string(),
                    c.trial,
                )
            }
            TrialOrder::ValidationHardestFirst => {
                let infra_last = (outcome_rank(c.parent) == 2) as u8;
                let split_rank = (c.split != Split::Validation) as u32;
                (
                    infra_last,
                    split_rank,
                    rate,
                    c.split,
                    c.task.to_string(),
                    outcome_rank(c.parent) as u32 * 1000 + c.trial,
                )
            }
        }
    };
    cells.sort_by_key(|c| key(c));
    cells
        .into_iter()
        .map(|c| (c.split, c.task.to_string(), c.trial))
        .collect()
}

/// Adaptive trials: the trial count of the next look of the sequential design
/// ([`super::design`]) when the decision was promising (not accepted before the last look, no
/// significant break and p at most `continue_p`), `None` otherwise. `base` is the first
/// look's trial count (the experiment's `trials`).
///
/// The parent must be run on the new trial ids too: the gate compares the same trial ids.
pub fn wants_more_trials(cfg: &GateConfig, decision: &Decision, base: u32) -> Option<u32> {
    if cfg.rule != GateRule::Strict || decision.verdict != Verdict::Reject || !decision.promising {
        return None;
    }
    let look = decision.look?;
    next_look(cfg, base, &look).map(|l| l.trials)
}
