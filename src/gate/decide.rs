//! The gate's rules: compare a candidate's evaluation with its parent's and decide.

use serde::{Deserialize, Serialize};

use crate::experiment::{GateConfig, GateFlaky, GateRule, GateStatistic, Split};

use super::GateError;
use super::design::{Look, look_at};
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
    /// Tasks whose regression is significant ([`stats::regression_p`] at the family-wise
    /// `broke_alpha`, Bonferroni over the tasks the parent ever passed).
    pub broke: Vec<String>,
    /// Tasks the parent passed in every kept trial and the candidate failed in every kept
    /// trial, without that being significant (yet): before the last look they ask for more
    /// trials instead of an accept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspect: Vec<String>,
    /// Tasks the parent's mark trials found flaky (`gate.flaky` other than `count`): left out of
    /// the accept decision (`quarantine`) or down-weighted (`weight`). Their trials still run
    /// and count in the numbers above.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flaky: Vec<String>,
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
    /// Strict rule before the last look of the sequential design: not accepted, no significant
    /// break and p at most `continue_p`, so the next look could accept it. See [`super::wants_more_trials`].
    pub promising: bool,
    /// The look of the sequential design this decision was taken at ([`super::design`]);
    /// `statistic.alpha` is the level spent at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub look: Option<Look>,
    /// Set when the candidate's evaluation stopped early; then the numbers above are over the
    /// trials that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopped: Option<EarlyStop>,
}

/// The p-value up to which a strict rejection before the last look counts as promising with
/// the fixed futility bound `continue_p` (without `futility_power`; see
/// [`super::design::futility_bound`], which the gate uses). It does not enter the error
/// control: more looks are paid for by the alpha spent at each ([`super::design`]).
pub fn promising_threshold(cfg: &GateConfig) -> f64 {
    super::design::fixed_futility_bound(cfg)
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
            if !s.suspect.is_empty() {
                line.push_str(&format!(
                    ", suspected (not significant): {}",
                    s.suspect.join(" ")
                ));
            }
            if !s.flaky.is_empty() {
                line.push_str(&format!(", flaky: {}", s.flaky.join(" ")));
            }
            lines.push(line);
        }
        let t = &self.statistic;
        let look = match &self.look {
            Some(l) if l.of > 1 => format!(" (look {} of {}, {} trials)", l.index, l.of, l.trials),
            _ => String::new(),
        };
        lines.push(format!(
            "paired test: {} changed task(s), Σd {:+}, p = {}, alpha {}{look}",
            t.m,
            t.observed,
            fmt_p(t.p_value),
            fmt_p(t.alpha)
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
    let trials = parent.max_trials();
    decide_at(cfg, look_at(cfg, trials, trials), parent, candidate)
}

/// [`decide`] at a given look of the sequential design ([`super::design::look_at`]).
pub fn decide_at(
    cfg: &GateConfig,
    look: Look,
    parent: &Evaluation,
    candidate: &Evaluation,
) -> Result<Decision, GateError> {
    check_comparable(parent, candidate)?;
    check_complete(parent, "parent")?;
    check_complete(candidate, "candidate")?;
    let counts = Counts::of(cfg, parent, candidate);
    Ok(counts.decide(cfg, &look))
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
    /// Unpaired evidence for the broke test: the parent's trials free of infrastructure errors
    /// (the table's and any earlier ones), the candidate's (whatever its parent trial gave).
    pub ev_parent_pass: u32,
    pub ev_parent_n: u32,
    pub cand_all_pass: u32,
    pub cand_all_n: u32,
    /// The level the task's regression test is held to (family-wise `broke_alpha`, Bonferroni).
    pub broke_level: f64,
    /// The parent's mark trials of this task ([`Evaluation::marks`]): they decide flakiness and
    /// count in the broke test, never in the statistic.
    pub mark_pass: u32,
    pub mark_n: u32,
    /// Flaky in the mark trials and `gate.flaky` is not `count`.
    pub flaky: bool,
    /// Left out of the accept decision (`gate.flaky: quarantine`).
    pub quarantined: bool,
    /// The task's weight in the strict test, in units of 1/[`super::table::WEIGHT_SCALE`]
    /// under `gate.flaky: weight`, else 1.
    pub weight: u32,
}

impl TaskCounts {
    pub fn diff(&self) -> i64 {
        self.cand_pass as i64 - self.parent_pass as i64
    }
    /// The regression is significant given the task's measured pass rates.
    /// A quarantined task never breaks: it is out of the accept decision.
    pub fn broke(&self) -> bool {
        !self.quarantined && self.regression_p() <= self.broke_level
    }
    pub fn regression_p(&self) -> f64 {
        stats::regression_p(
            self.ev_parent_pass + self.mark_pass,
            self.ev_parent_n + self.mark_n,
            self.cand_all_pass,
            self.cand_all_n,
        )
    }
    /// Passed every kept trial before and fails every one now, significant or not.
    pub fn suspect(&self) -> bool {
        !self.quarantined
            && self.kept > 0
            && self.parent_pass == self.kept
            && self.cand_pass == 0
            && !self.broke()
    }
    pub fn fixed(&self) -> bool {
        self.kept > 0 && self.parent_pass == 0 && self.cand_pass == self.kept
    }
    pub fn pending(&self) -> u32 {
        self.pend_pp + self.pend_pf + self.pend_pi
    }
    /// The task in the pooled test: every parent trial the evidence holds against every
    /// candidate trial that ran.
    pub fn stratum(&self) -> stats::Stratum {
        stats::Stratum {
            parent_pass: self.ev_parent_pass,
            parent_n: self.ev_parent_n,
            cand_pass: self.cand_all_pass,
            cand_n: self.cand_all_n,
        }
    }
    /// Candidate pass rate − parent pass rate over all their trials (0 when a side has none).
    pub fn rate_diff(&self) -> f64 {
        if self.ev_parent_n == 0 || self.cand_all_n == 0 {
            return 0.0;
        }
        self.cand_all_pass as f64 / self.cand_all_n as f64
            - self.ev_parent_pass as f64 / self.ev_parent_n as f64
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
    /// Pooled statistic: Σ over each split's tasks of (candidate rate − parent rate), in tasks;
    /// the paper rule reads these instead of the paired Δs.
    pub pooled: Option<(f64, f64)>,
    pub broke: Vec<String>,
    pub suspect: Vec<String>,
    pub test: PairedTest,
    pub look: Look,
    /// Tasks the mark trials found flaky (0 unless `gate.flaky` is not `count`).
    pub flaky: usize,
}

impl Assessment {
    pub fn broke_ok(&self, cfg: &GateConfig) -> bool {
        cfg.allow_broke || self.broke.is_empty()
    }
    /// No suspected break stands in the way: at the last look only significant breaks count.
    pub fn suspect_ok(&self, cfg: &GateConfig) -> bool {
        cfg.allow_broke || self.look.last() || self.suspect.is_empty()
    }
    pub fn significant(&self) -> bool {
        self.test.p_value <= self.look.alpha
    }
    /// Not accepted before the last look, no significant break and p up to the futility bound:
    /// the next look could accept it. A paper-rule failure on few trials is noise as often as
    /// not, so it only stands in the way of an accept, not of the next look.
    pub fn promising(&self, cfg: &GateConfig) -> bool {
        !self.look.last()
            && cfg.rule == GateRule::Strict
            && self.coverage_ok
            && self.broke_ok(cfg)
            && self.verdict(cfg) != Verdict::Accept
            && self.test.p_value <= super::design::futility_bound(cfg, &self.look)
    }
    pub fn verdict(&self, cfg: &GateConfig) -> Verdict {
        if !self.coverage_ok {
            return Verdict::Indecisive;
        }
        let accept = match cfg.rule {
            GateRule::Paper => self.paper_ok,
            GateRule::Strict => {
                self.paper_ok && self.broke_ok(cfg) && self.suspect_ok(cfg) && self.significant()
            }
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

/// The paper rule on rate differences (pooled statistic): no split loses, one gains. A tiny
/// tolerance keeps rounding from turning a tie into a loss.
pub(crate) fn rates_ok(r_in: f64, r_val: f64) -> bool {
    const EPS: f64 = 1e-9;
    r_in >= -EPS && r_val >= -EPS && (r_in > EPS || r_val > EPS)
}

impl Counts {
    /// Counts of a comparable pair of evaluations; pending candidate trials are not kept.
    pub fn of(cfg: &GateConfig, parent: &Evaluation, candidate: &Evaluation) -> Self {
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
                let extra = parent.evidence.get(task).copied().unwrap_or_default();
                t.ev_parent_pass = extra.passes;
                t.ev_parent_n = extra.trials;
                let marks = parent.marks.get(task).copied().unwrap_or_default();
                t.mark_pass = marks.passes;
                t.mark_n = marks.trials;
                t.flaky = match cfg.flaky {
                    GateFlaky::Count => false,
                    GateFlaky::Weight => marks.flaky(),
                    // Leaving a task out needs more than one flip (`Evidence::clearly_flaky`).
                    GateFlaky::Quarantine => marks.clearly_flaky(),
                };
                t.quarantined = t.flaky && cfg.flaky == GateFlaky::Quarantine;
                t.weight = match cfg.flaky {
                    GateFlaky::Weight => marks.weight(),
                    _ => 1,
                };
                for (a, b) in po.iter().zip(co) {
                    t.pairs += 1;
                    if matches!(a, Outcome::Pass | Outcome::Fail) {
                        t.ev_parent_n += 1;
                        t.ev_parent_pass += (*a == Outcome::Pass) as u32;
                    }
                    if matches!(b, Outcome::Pass | Outcome::Fail) {
                        t.cand_all_n += 1;
                        t.cand_all_pass += (*b == Outcome::Pass) as u32;
                    }
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
        // Only a task the parent ever passed can regress; the level does not depend on the
        // candidate, so it is the same in every completion of a partial evaluation.
        let can_regress = tasks
            .iter()
            .filter(|t| !t.quarantined && t.ev_parent_pass + t.mark_pass > 0)
            .count()
            .max(1);
        let level = cfg.broke_alpha / can_regress as f64;
        for t in &mut tasks {
            t.broke_level = level;
        }
        Counts { tasks }
    }

    pub fn total_pairs(&self) -> u32 {
        self.tasks.iter().map(|t| t.pairs).sum()
    }

    pub fn assess(&self, cfg: &GateConfig, look: &Look, total: u32) -> Assessment {
        let kept: u32 = self.tasks.iter().map(|t| t.kept).sum();
        // Quarantined tasks run and are reported, but decide nothing.
        let decided = || self.tasks.iter().filter(|t| !t.quarantined);
        let delta = |s: Split| {
            decided()
                .filter(|t| t.split == Some(s))
                .map(|t| t.diff())
                .sum::<i64>()
        };
        let (delta_in, delta_val) = (delta(Split::HeldIn), delta(Split::Validation));
        let (test, pooled) = match cfg.statistic {
            GateStatistic::Paired => {
                let diffs: Vec<i64> = decided().map(|t| t.weight as i64 * t.diff()).collect();
                (stats::paired_test(&diffs, look.alpha), None)
            }
            GateStatistic::Pooled => {
                let strata: Vec<(stats::Stratum, u32)> =
                    decided().map(|t| (t.stratum(), t.weight)).collect();
                let rate = |s: Split| {
                    decided()
                        .filter(|t| t.split == Some(s))
                        .map(|t| t.rate_diff())
                        .sum::<f64>()
                };
                (
                    stats::pooled_test_weighted(&strata, look.alpha),
                    Some((rate(Split::HeldIn), rate(Split::Validation))),
                )
            }
        };
        Assessment {
            kept,
            total,
            coverage_ok: coverage_ok(kept, total, cfg.min_coverage),
            delta_in,
            delta_val,
            paper_ok: match pooled {
                None => paper_ok(delta_in, delta_val),
                Some((r_in, r_val)) => rates_ok(r_in, r_val),
            },
            pooled,
            broke: self
                .tasks
                .iter()
                .filter(|t| t.broke())
                .map(|t| t.task.clone())
                .collect(),
            suspect: self
                .tasks
                .iter()
                .filter(|t| t.suspect())
                .map(|t| t.task.clone())
                .collect(),
            test,
            look: *look,
            flaky: self.tasks.iter().filter(|t| t.flaky).count(),
        }
    }

    /// The decision over complete counts.
    pub fn decide(&self, cfg: &GateConfig, look: &Look) -> Decision {
        let total = self.total_pairs();
        let a = self.assess(cfg, look, total);
        let verdict = a.verdict(cfg);
        let reason = reason(cfg, &a, verdict);
        self.decision(cfg, &a, total, verdict, reason, a.promising(cfg), None)
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
                suspect: ts
                    .iter()
                    .filter(|t| t.suspect())
                    .map(|t| t.task.clone())
                    .collect(),
                flaky: ts
                    .iter()
                    .filter(|t| t.flaky)
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
            look: Some(a.look),
            early_stopped,
        }
    }
}

/// " at look k of K" when the design has more than one look.
pub(crate) fn look_words(l: &Look) -> String {
    if l.of > 1 {
        format!(" at look {} of {} ({} trials)", l.index, l.of, l.trials)
    } else {
        String::new()
    }
}

fn deltas(a: &Assessment) -> String {
    match a.pooled {
        None => format!("Δheld_in {:+}, Δvalidation {:+}", a.delta_in, a.delta_val),
        Some((r_in, r_val)) => format!(
            "Δrate held_in {:+.2} tasks, Δrate validation {:+.2} tasks",
            r_in, r_val
        ),
    }
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
                "broke {} (a significant regression at broke_alpha {}; allow_broke is off)",
                a.broke.join(", "),
                cfg.broke_alpha
            ));
        }
        if !a.suspect_ok(cfg) {
            why.push(format!(
                "suspected break of {} (passed every trial before, fails every trial now, not yet significant): more trials decide",
                a.suspect.join(", ")
            ));
        }
        if a.paper_ok && !a.significant() {
            let mut s = format!(
                "not significant: p = {} > alpha {} over {} changed task(s)",
                fmt_p(a.test.p_value),
                fmt_p(a.look.alpha),
                a.test.m
            );
            if let Some(words) = super::too_few_changes(a.test.m, a.look.alpha, true) {
                s.push_str(&format!(" ({words})"));
            }
            why.push(s);
        }
    }
    let words = match verdict {
        Verdict::Accept => match cfg.rule {
            GateRule::Paper => format!("accept: {}", deltas(a)),
            GateRule::Strict => format!(
                "accept: {}, p = {} ≤ alpha {} over {} changed task(s){}",
                deltas(a),
                fmt_p(a.test.p_value),
                fmt_p(a.look.alpha),
                a.test.m,
                look_words(&a.look)
            ),
        },
        _ => format!("reject: {}", why.join("; ")),
    };
    format!("{words}{}", flaky_words(cfg, a.flaky))
}

/// " (N flaky task(s) quarantined)" or "… down-weighted" when the setting touched any task.
pub(crate) fn flaky_words(cfg: &GateConfig, flaky: usize) -> String {
    match cfg.flaky {
        _ if flaky == 0 => String::new(),
        GateFlaky::Count => String::new(),
        GateFlaky::Quarantine => format!(" ({flaky} flaky task(s) quarantined)"),
        GateFlaky::Weight => format!(" ({flaky} flaky task(s) down-weighted)"),
    }
}

pub(crate) fn paper_failure(a: &Assessment) -> String {
    if let Some((r_in, r_val)) = a.pooled {
        return if r_in.abs() < 1e-9 && r_val.abs() < 1e-9 {
            format!("no improvement ({})", deltas(a))
        } else if (r_in > 0.0) != (r_val > 0.0) && r_in.abs() > 1e-9 && r_val.abs() > 1e-9 {
            format!(
                "trade-off between splits ({}); a loss on either split is rejected",
                deltas(a)
            )
        } else {
            format!("regression ({})", deltas(a))
        };
    }
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
