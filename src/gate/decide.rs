//! The gate's rules: compare a candidate's evaluation with its parent's and decide.

use serde::{Deserialize, Serialize};

use crate::experiment::{GateConfig, GateRule, Split};

use super::GateError;
use super::stats::{self, PairedTest};
use super::table::{Evaluation, Outcome, Table};

/// What the gate says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Accept,
    Reject,
    /// The gate could not decide: too few trials free of infrastructure errors, or nothing to
    /// compare. Not a reject: fix the infrastructure and re-run.
    Indecisive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Reject => "reject",
            Verdict::Indecisive => "indecisive",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The numbers of one split, over the kept trial pairs (pairs where neither side hit an
/// infrastructure error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitSummary {
    pub split: Split,
    pub tasks: u32,
    /// Kept trial pairs: the denominator of both pass rates.
    pub trials: u32,
    /// Trial pairs dropped because either side hit an infrastructure error.
    pub dropped: u32,
    pub parent_passes: u32,
    pub candidate_passes: u32,
    /// candidate_passes − parent_passes.
    pub delta: i64,
    /// Tasks the parent failed in every kept trial and the candidate passed in every kept trial.
    pub fixed: Vec<String>,
    /// Tasks the parent passed in every kept trial and the candidate failed in every kept trial.
    pub broke: Vec<String>,
}

/// How well the candidate did, to rank accepted candidates: higher is better.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Margin {
    /// Δheld_in + Δvalidation, in passes.
    pub passes: i64,
    /// Pooled pass rate over both splits, candidate − parent, in percentage points.
    pub rate_points: f64,
}

/// The fraction of trial pairs free of infrastructure errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    pub kept: u32,
    pub total: u32,
    /// kept / total (0 when there are no pairs).
    pub fraction: f64,
    /// The configured minimum.
    pub min: f64,
}

/// Why the evaluation of a candidate stopped before every trial ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarlyStop {
    /// Candidate trials that ran (not pending).
    pub trials_run: u32,
    /// Candidate trials in the full evaluation.
    pub trials_total: u32,
    /// Why no outcome of the remaining trials can change the verdict.
    pub reason: String,
}

/// The gate's decision with everything needed to report and audit it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub rule: GateRule,
    /// One line saying why.
    pub reason: String,
    pub held_in: SplitSummary,
    pub validation: SplitSummary,
    /// The paired test over the tasks of held_in ∪ validation. Computed under both rules (the
    /// paper rule does not use it).
    pub statistic: PairedTest,
    pub margin: Margin,
    pub coverage: Coverage,
    /// Strict rule with adaptive trials on (`max_trials` above the trials evaluated, see
    /// [`is_adaptive`]): rejected only because p is above alpha, with p at most the promising
    /// threshold ([`promising_threshold`]), so more trials could change it. See
    /// [`super::wants_more_trials`].
    pub promising: bool,
    /// Set when the candidate's evaluation stopped early; then the numbers above are over the
    /// trials that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopped: Option<EarlyStop>,
}

/// The p-value up to which a strict rejection counts as promising (adaptive trials): 2·alpha.
/// Re-testing after more trials is a second look at the data; in the worst case it raises the
/// false-accept rate from alpha to at most 2·alpha (the first look accepts with probability
/// ≤ alpha, the second is only taken when alpha < p ≤ 2·alpha, a set of probability ≤ alpha).
pub fn promising_threshold(alpha: f64) -> f64 {
    (2.0 * alpha).min(1.0)
}

impl Decision {
    pub fn split(&self, split: Split) -> Option<&SplitSummary> {
        match split {
            Split::HeldIn => Some(&self.held_in),
            Split::Validation => Some(&self.validation),
            Split::Test => None,
        }
    }

    /// A few lines of plain text (no colour, no table layout) for logs, commit messages and
    /// notes. The CLI formats its own tables.
    pub fn summary_lines(&self) -> Vec<String> {
        let mut lines = vec![format!("gate ({}): {}", self.rule.as_str(), self.reason)];
        for s in [&self.held_in, &self.validation] {
            let mut line = format!(
                "{}: parent {}/{}, candidate {}/{}, Δ {:+}",
                s.split, s.parent_passes, s.trials, s.candidate_passes, s.trials, s.delta
            );
            if s.dropped > 0 {
                line.push_str(&format!(", {} pair(s) dropped (infra)", s.dropped));
            }
            if !s.fixed.is_empty() {
                line.push_str(&format!(", fixed: {}", s.fixed.join(" ")));
            }
            if !s.broke.is_empty() {
                line.push_str(&format!(", broke: {}", s.broke.join(" ")));
            }
            lines.push(line);
        }
        let t = &self.statistic;
        lines.push(format!(
            "paired test: {} changed task(s), Σd {:+}, p = {}, alpha {}",
            t.m,
            t.observed,
            fmt_p(t.p_value),
            t.alpha
        ));
        lines.push(format!(
            "coverage {}/{} ({:.1}%, min {:.0}%); margin {:+} passes ({:+.1} points)",
            self.coverage.kept,
            self.coverage.total,
            self.coverage.fraction * 100.0,
            self.coverage.min * 100.0,
            self.margin.passes,
            self.margin.rate_points
        ));
        if let Some(e) = &self.early_stopped {
            lines.push(format!(
                "stopped early after {}/{} trials: {}",
                e.trials_run, e.trials_total, e.reason
            ));
        }
        lines
    }
}

pub(crate) fn fmt_p(p: f64) -> String {
    if p >= 0.001 {
        let s = format!("{p:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{p:.2e}")
    }
}

/// Decide whether `candidate` improves on `parent`.
///
/// Both evaluations must be complete (no `Pending`) and cover the same task ids and trial ids
/// per split; otherwise the gate refuses to compare ([`GateError`]). When both carry an
/// experiment fingerprint they must be equal; when either does not, the caller must have
/// checked that both ran under the same fingerprint.
pub fn decide(
    cfg: &GateConfig,
    parent: &Evaluation,
    candidate: &Evaluation,
) -> Result<Decision, GateError> {
    check_comparable(parent, candidate)?;
    check_complete(parent, "parent")?;
    check_complete(candidate, "candidate")?;
    let counts = Counts::of(parent, candidate);
    Ok(counts.decide(cfg, is_adaptive(cfg, parent.max_trials())))
}

/// Adaptive trials are on: strict rule and `max_trials` above the trials per task evaluated.
pub fn is_adaptive(cfg: &GateConfig, trials: u32) -> bool {
    cfg.rule == GateRule::Strict && cfg.max_trials.is_some_and(|m| m > trials)
}

/// Refuse to compare unless parent and candidate cover the same tasks and trial ids.
pub fn check_comparable(parent: &Evaluation, candidate: &Evaluation) -> Result<(), GateError> {
    if let (Some(p), Some(c)) = (&parent.fingerprint, &candidate.fingerprint)
        && p != c
    {
        return Err(GateError::FingerprintMismatch {
            parent: p.clone(),
            candidate: c.clone(),
        });
    }
    for split in [Split::HeldIn, Split::Validation] {
        let (p, c) = (
            parent.table(split).expect("gated split"),
            candidate.table(split).expect("gated split"),
        );
        let only_parent: Vec<String> = p
            .tasks
            .keys()
            .filter(|k| !c.tasks.contains_key(*k))
            .cloned()
            .collect();
        let only_candidate: Vec<String> = c
            .tasks
            .keys()
            .filter(|k| !p.tasks.contains_key(*k))
            .cloned()
            .collect();
        if !only_parent.is_empty() || !only_candidate.is_empty() {
            return Err(GateError::TaskSetMismatch {
                split,
                only_parent,
                only_candidate,
            });
        }
        for (task, po) in &p.tasks {
            let co = &c.tasks[task];
            if po.len() != co.len() {
                return Err(GateError::TrialMismatch {
                    split,
                    task: task.clone(),
                    parent_trials: po.len() as u32,
                    candidate_trials: co.len() as u32,
                });
            }
        }
    }
    Ok(())
}

pub(crate) fn check_complete(e: &Evaluation, side: &'static str) -> Result<(), GateError> {
    for split in [Split::HeldIn, Split::Validation] {
        for (task, outcomes) in &e.table(split).expect("gated split").tasks {
            if let Some(i) = outcomes.iter().position(|o| *o == Outcome::Pending) {
                return Err(GateError::Incomplete {
                    side,
                    split,
                    task: task.clone(),
                    trial: i as u32,
                });
            }
        }
    }
    Ok(())
}

/// Per-task counts over the kept pairs, plus (for early stopping) what the pending candidate
/// trials can still do.
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskCounts {
    pub split: Option<Split>,
    pub task: String,
    /// Pairs of this task, pending ones included.
    pub pairs: u32,
    pub kept: u32,
    pub parent_pass: u32,
    pub cand_pass: u32,
    /// Pending candidate trials whose parent trial passed / failed (a pending trial whose
    /// parent trial is Infra is dropped whatever it gives).
    pub pend_pp: u32,
    pub pend_pf: u32,
    pub pend_pi: u32,
}

impl TaskCounts {
    pub fn diff(&self) -> i64 {
        self.cand_pass as i64 - self.parent_pass as i64
    }
    pub fn broke(&self) -> bool {
        self.kept > 0 && self.parent_pass == self.kept && self.cand_pass == 0
    }
    pub fn fixed(&self) -> bool {
        self.kept > 0 && self.parent_pass == 0 && self.cand_pass == self.kept
    }
    pub fn pending(&self) -> u32 {
        self.pend_pp + self.pend_pf + self.pend_pi
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Counts {
    pub tasks: Vec<TaskCounts>,
}

/// The gate's checks on one complete set of counts.
#[derive(Debug, Clone)]
pub(crate) struct Assessment {
    pub kept: u32,
    pub total: u32,
    pub coverage_ok: bool,
    pub delta_in: i64,
    pub delta_val: i64,
    pub paper_ok: bool,
    pub broke: Vec<String>,
    pub test: PairedTest,
}

impl Assessment {
    pub fn broke_ok(&self, cfg: &GateConfig) -> bool {
        cfg.allow_broke || self.broke.is_empty()
    }
    pub fn significant(&self, cfg: &GateConfig) -> bool {
        self.test.p_value <= cfg.alpha
    }
    /// Rejected only for want of significance, with p up to the promising threshold, while
    /// adaptive trials are on (`adaptive`, see [`is_adaptive`]).
    pub fn promising(&self, cfg: &GateConfig, adaptive: bool) -> bool {
        adaptive
            && cfg.rule == GateRule::Strict
            && self.coverage_ok
            && self.paper_ok
            && self.broke_ok(cfg)
            && !self.significant(cfg)
            && self.test.p_value <= promising_threshold(cfg.alpha)
    }
    pub fn verdict(&self, cfg: &GateConfig) -> Verdict {
        if !self.coverage_ok {
            return Verdict::Indecisive;
        }
        let accept = match cfg.rule {
            GateRule::Paper => self.paper_ok,
            GateRule::Strict => self.paper_ok && self.broke_ok(cfg) && self.significant(cfg),
        };
        if accept {
            Verdict::Accept
        } else {
            Verdict::Reject
        }
    }
}

pub(crate) fn coverage_ok(kept: u32, total: u32, min: f64) -> bool {
    kept > 0 && (kept as f64 / total as f64) >= min
}

pub(crate) fn paper_ok(delta_in: i64, delta_val: i64) -> bool {
    delta_in >= 0 && delta_val >= 0 && (delta_in > 0 || delta_val > 0)
}

impl Counts {
    /// Counts of a comparable pair of evaluations; pending candidate trials are not kept.
    pub fn of(parent: &Evaluation, candidate: &Evaluation) -> Self {
        let mut tasks = Vec::new();
        for split in [Split::HeldIn, Split::Validation] {
            let (p, c): (&Table, &Table) = (
                parent.table(split).expect("gated split"),
                candidate.table(split).expect("gated split"),
            );
            for (task, po) in &p.tasks {
                let co = &c.tasks[task];
                let mut t = TaskCounts {
                    split: Some(split),
                    task: task.clone(),
                    ..Default::default()
                };
                for (a, b) in po.iter().zip(co) {
                    t.pairs += 1;
                    match (a, b) {
                        (Outcome::Pass, Outcome::Pending) => t.pend_pp += 1,
                        (Outcome::Fail, Outcome::Pending) => t.pend_pf += 1,
                        (_, Outcome::Pending) => t.pend_pi += 1,
                        (Outcome::Infra, _) | (_, Outcome::Infra) | (Outcome::Pending, _) => {}
                        _ => {
                            t.kept += 1;
                            t.parent_pass += (*a == Outcome::Pass) as u32;
                            t.cand_pass += (*b == Outcome::Pass) as u32;
                        }
                    }
                }
                tasks.push(t);
            }
        }
        Counts { tasks }
    }

    pub fn total_pairs(&self) -> u32 {
        self.tasks.iter().map(|t| t.pairs).sum()
    }

    pub fn assess(&self, cfg: &GateConfig, total: u32) -> Assessment {
        let kept: u32 = self.tasks.iter().map(|t| t.kept).sum();
        let delta = |s: Split| {
            self.tasks
                .iter()
                .filter(|t| t.split == Some(s))
                .map(|t| t.diff())
                .sum::<i64>()
        };
        let (delta_in, delta_val) = (delta(Split::HeldIn), delta(Split::Validation));
        let diffs: Vec<i64> = self.tasks.iter().map(|t| t.diff()).collect();
        Assessment {
            kept,
            total,
            coverage_ok: coverage_ok(kept, total, cfg.min_coverage),
            delta_in,
            delta_val,
            paper_ok: paper_ok(delta_in, delta_val),
            broke: self
                .tasks
                .iter()
                .filter(|t| t.broke())
                .map(|t| t.task.clone())
                .collect(),
            test: stats::paired_test(&diffs, cfg.alpha),
        }
    }

    /// The decision over complete counts.
    pub fn decide(&self, cfg: &GateConfig, adaptive: bool) -> Decision {
        let total = self.total_pairs();
        let a = self.assess(cfg, total);
        let verdict = a.verdict(cfg);
        let reason = reason(cfg, &a, verdict);
        self.decision(
            cfg,
            &a,
            total,
            verdict,
            reason,
            a.promising(cfg, adaptive),
            None,
        )
    }

    /// A decision record from these counts, with the given verdict. `total` is the number of
    /// pairs the coverage is over.
    #[allow(clippy::too_many_arguments)]
    pub fn decision(
        &self,
        cfg: &GateConfig,
        a: &Assessment,
        total: u32,
        verdict: Verdict,
        reason: String,
        promising: bool,
        early_stopped: Option<EarlyStop>,
    ) -> Decision {
        let summary = |split: Split| {
            let ts: Vec<&TaskCounts> = self
                .tasks
                .iter()
                .filter(|t| t.split == Some(split))
                .collect();
            let parent_passes: u32 = ts.iter().map(|t| t.parent_pass).sum();
            let candidate_passes: u32 = ts.iter().map(|t| t.cand_pass).sum();
            let trials: u32 = ts.iter().map(|t| t.kept).sum();
            let pairs_run: u32 = ts.iter().map(|t| t.pairs - t.pending()).sum();
            SplitSummary {
                split,
                tasks: ts.len() as u32,
                trials,
                dropped: pairs_run - trials,
                parent_passes,
                candidate_passes,
                delta: candidate_passes as i64 - parent_passes as i64,
                fixed: ts
                    .iter()
                    .filter(|t| t.fixed())
                    .map(|t| t.task.clone())
                    .collect(),
                broke: ts
                    .iter()
                    .filter(|t| t.broke())
                    .map(|t| t.task.clone())
                    .collect(),
            }
        };
        let (held_in, validation) = (summary(Split::HeldIn), summary(Split::Validation));
        let kept = held_in.trials + validation.trials;
        let rate = |passes: u32| {
            if kept == 0 {
                0.0
            } else {
                passes as f64 / kept as f64 * 100.0
            }
        };
        let margin = Margin {
            passes: held_in.delta + validation.delta,
            rate_points: rate(held_in.candidate_passes + validation.candidate_passes)
                - rate(held_in.parent_passes + validation.parent_passes),
        };
        let coverage = Coverage {
            kept,
            total,
            fraction: if total == 0 {
                0.0
            } else {
                kept as f64 / total as f64
            },
            min: cfg.min_coverage,
        };
        Decision {
            verdict,
            rule: cfg.rule,
            reason,
            held_in,
            validation,
            statistic: a.test.clone(),
            margin,
            coverage,
            promising,
            early_stopped,
        }
    }
}

fn deltas(a: &Assessment) -> String {
    format!("Δheld_in {:+}, Δvalidation {:+}", a.delta_in, a.delta_val)
}

/// The one-line reason of a verdict on complete counts.
pub(crate) fn reason(cfg: &GateConfig, a: &Assessment, verdict: Verdict) -> String {
    if verdict == Verdict::Indecisive {
        return indecisive_reason(a.kept, a.total, cfg.min_coverage);
    }
    let mut why = Vec::new();
    if !a.paper_ok {
        why.push(paper_failure(a));
    }
    if cfg.rule == GateRule::Strict {
        if !a.broke_ok(cfg) {
            why.push(format!(
                "broke {} (passed every trial before, fails every trial now; allow_broke is off)",
                a.broke.join(", ")
            ));
        }
        if a.paper_ok && !a.significant(cfg) {
            let mut s = format!(
                "not significant: p = {} > alpha {} over {} changed task(s)",
                fmt_p(a.test.p_value),
                cfg.alpha,
                a.test.m
            );
            if let Some(words) = super::too_few_changes(a.test.m, cfg.alpha, true) {
                s.push_str(&format!(" ({words})"));
            }
            why.push(s);
        }
    }
    match verdict {
        Verdict::Accept => match cfg.rule {
            GateRule::Paper => format!("accept: {}", deltas(a)),
            GateRule::Strict => format!(
                "accept: {}, p = {} ≤ alpha {} over {} changed task(s)",
                deltas(a),
                fmt_p(a.test.p_value),
                cfg.alpha,
                a.test.m
            ),
        },
        _ => format!("reject: {}", why.join("; ")),
    }
}

pub(crate) fn paper_failure(a: &Assessment) -> String {
    if a.delta_in == 0 && a.delta_val == 0 {
        format!("no improvement ({})", deltas(a))
    } else if (a.delta_in > 0 && a.delta_val < 0) || (a.delta_in < 0 && a.delta_val > 0) {
        format!(
            "trade-off between splits ({}); a loss on either split is rejected",
            deltas(a)
        )
    } else {
        format!("regression ({})", deltas(a))
    }
}

pub(crate) fn indecisive_reason(kept: u32, total: u32, min: f64) -> String {
    if kept == 0 {
        format!(
            "INDECISIVE: none of the {total} trial pair(s) is free of infrastructure errors; nothing to compare — fix the infrastructure and re-run"
        )
    } else {
        format!(
            "INDECISIVE: only {kept}/{total} trial pairs ({:.1}%) are free of infrastructure errors, below min_coverage {:.0}% — fix the infrastructure and re-run",
            kept as f64 / total as f64 * 100.0,
            min * 100.0
        )
    }
}
