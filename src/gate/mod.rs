//! The gate: decides whether a candidate harness improves on its parent.
//!
//! Pure logic, no I/O and no git. The caller (validate / evolve) evaluates parent and
//! candidate on the held_in and validation splits with the same task ids and trial ids, fills an
//! [`Evaluation`] per harness, and asks [`decide`]. To stop a candidate early it lays the
//! candidate out with [`Evaluation::pending_like`], runs trials in [`trial_order`], records each
//! outcome with [`Evaluation::set`] and calls [`settled`] after each; the first `Some` is final.
//!
//! Rules (`GateConfig::rule`):
//! - `paper`: on pass counts over kept trial pairs, accept iff Δheld_in ≥ 0 and Δvalidation ≥ 0
//!   and at least one is > 0. Ties and trade-offs between splits are rejected.
//! - `strict` (default): the paper rule, plus an exact one-sided paired sign-flip permutation
//!   test over the tasks of held_in ∪ validation with p ≤ alpha ([`stats`]), plus no *broke*
//!   task unless `allow_broke`.
//!
//! Both rules: a (task, trial) pair where either side hit an infrastructure error is dropped from
//! both sides; when the kept fraction is below `min_coverage` (or nothing is kept) the verdict is
//! *indecisive*, never reject.

mod decide;
pub mod design;
mod settle;
pub mod stats;
mod table;

pub use decide::{
    Coverage, Decision, EarlyStop, Margin, SplitSummary, Verdict, check_comparable, decide,
    decide_at, is_adaptive, promising_threshold,
};
pub use design::{Look, futility_bound, look_at, looks};
pub use settle::{
    DEFAULT_ORDER, SettleMode, TrialOrder, settled, trial_order, trial_order_with, try_settled,
    try_settled_at, wants_more_trials,
};
pub use stats::PairedTest;
pub use table::{Evaluation, Evidence, Outcome, Table};

use crate::experiment::Split;

/// The gate refuses to compare: not a verdict, the inputs are wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    #[error(
        "parent and candidate ran under different experiment fingerprints ({parent} vs {candidate})"
    )]
    FingerprintMismatch { parent: String, candidate: String },
    #[error(
        "parent and candidate cover different {split} tasks (only the parent: [{}]; only the candidate: [{}])",
        only_parent.join(", "),
        only_candidate.join(", ")
    )]
    TaskSetMismatch {
        split: Split,
        only_parent: Vec<String>,
        only_candidate: Vec<String>,
    },
    #[error(
        "parent and candidate cover different trials of {split} task `{task}` ({parent_trials} vs {candidate_trials})"
    )]
    TrialMismatch {
        split: Split,
        task: String,
        parent_trials: u32,
        candidate_trials: u32,
    },
    #[error(
        "the {side}'s evaluation is incomplete: {split} task `{task}` trial {trial} is pending"
    )]
    Incomplete {
        side: &'static str,
        split: Split,
        task: String,
        trial: u32,
    },
    #[error("no {split} task `{task}` trial {trial} in this evaluation")]
    NoSuchTrial {
        split: Split,
        task: String,
        trial: u32,
    },
}

impl From<GateError> for crate::Error {
    fn from(e: GateError) -> Self {
        let hint = match &e {
            GateError::FingerprintMismatch { .. } => {
                "results made under one experiment fingerprint are never compared with another; re-evaluate the parent"
            }
            GateError::TaskSetMismatch { .. } | GateError::TrialMismatch { .. } => {
                "evaluate parent and candidate on the same tasks and trial ids (re-run validate)"
            }
            GateError::Incomplete { .. } => "finish (or resume) the evaluation before gating",
            GateError::NoSuchTrial { .. } => "lay the table out first (Evaluation::pending_like)",
        };
        crate::Error::Usage {
            message: e.to_string(),
            hint: Some(hint.to_string()),
        }
    }
}

/// Why the strict rule can never accept on `tasks` gated tasks (held_in ∪ validation), or `None`
/// when it can: the paired sign-flip test needs at least [`stats::min_changed_tasks`] tasks
/// that change to reach `alpha`, whatever the number of trials.
pub fn strict_infeasible(tasks: usize, cfg: &crate::experiment::GateConfig) -> Option<String> {
    let need = stats::min_changed_tasks(cfg.alpha) as usize;
    (cfg.rule == crate::experiment::GateRule::Strict
        && cfg.statistic == crate::experiment::GateStatistic::Paired
        && tasks < need)
        .then(|| {
        format!(
            "held_in ∪ validation has {tasks} task(s); the strict gate needs at least {need} tasks \
             that change to accept at alpha {}, so it can never accept — add tasks, or use \
             --gate paper",
            cfg.alpha
        )
    })
}

/// The words for a strict rejection where too few tasks can still change: `None` when `m` (the
/// tasks that change even if every remaining trial goes the candidate's way) is enough.
/// `settled` says whether the counts are complete ("changed") or not ("can still change").
pub(crate) fn too_few_changes(m: u32, alpha: f64, settled: bool) -> Option<String> {
    let need = stats::min_changed_tasks(alpha);
    let verb = if settled {
        "changed"
    } else {
        "can still change"
    };
    (m < need).then(|| {
        format!(
            "only {m} task(s) {verb}; the strict gate needs at least {need} changed tasks — add \
             tasks or trials, or use --gate paper"
        )
    })
}
