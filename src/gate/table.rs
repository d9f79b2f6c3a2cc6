//! Outcome tables: what the gate reads. They are stored in run records, so they serialize.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::experiment::Split;

use super::GateError;

/// The outcome of one trial of one task, as the gate sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The verifier passed the agent's work.
    Pass,
    /// The verifier failed the agent's work (including agent timeouts and budget exhaustion).
    Fail,
    /// Infrastructure failed (sandbox, model API, verifier crashed) after retries: not the
    /// agent's fault, never counted as a failure.
    Infra,
    /// Not run yet (a candidate under early stopping).
    Pending,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Infra => "infra",
            Outcome::Pending => "pending",
        }
    }
}

/// The outcomes of one split: task id → outcomes indexed by trial id (`0..n`).
///
/// Trial `i` of a task in the parent's table and trial `i` in the candidate's table are a pair
/// (same seed, same task): the gate compares them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Table {
    pub tasks: BTreeMap<String, Vec<Outcome>>,
}

impl Table {
    pub fn new() -> Self {
        Table::default()
    }

    /// `tasks` each with `trials` outcomes, all `Pending`.
    pub fn pending<S: AsRef<str>>(tasks: &[S], trials: u32) -> Self {
        Table {
            tasks: tasks
                .iter()
                .map(|t| {
                    (
                        t.as_ref().to_string(),
                        vec![Outcome::Pending; trials as usize],
                    )
                })
                .collect(),
        }
    }

    /// The same task ids and trial ids, every outcome `Pending`.
    pub fn pending_like(&self) -> Self {
        Table {
            tasks: self
                .tasks
                .iter()
                .map(|(k, v)| (k.clone(), vec![Outcome::Pending; v.len()]))
                .collect(),
        }
    }

    pub fn insert(&mut self, task: impl Into<String>, outcomes: Vec<Outcome>) {
        self.tasks.insert(task.into(), outcomes);
    }

    /// Number of (task, trial) cells.
    pub fn cells(&self) -> usize {
        self.tasks.values().map(Vec::len).sum()
    }

    pub fn count(&self, outcome: Outcome) -> usize {
        self.tasks
            .values()
            .flatten()
            .filter(|o| **o == outcome)
            .count()
    }
}

/// The evaluation of one harness: a table per gated split.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluation {
    /// The experiment fingerprint the trials ran under. When both sides carry one, the gate
    /// refuses to compare different fingerprints; when either is `None`, the caller is
    /// responsible for having checked it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    pub held_in: Table,
    pub validation: Table,
    /// Parent side only: more trials of the same tree under the same fingerprint than the
    /// tables hold (earlier runs with more trials), per task id. They count towards the task's
    /// pass rate where rates are compared unpaired (the "broke" test), never in the paired test.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub evidence: BTreeMap<String, Evidence>,
    /// Parent side only, with `gate.flaky` other than `count`: trials of the same tree under the
    /// same fingerprint that neither the table nor `evidence` holds, per task id. They decide
    /// which tasks are flaky (and their weights) and never enter the test, so the selection is
    /// independent of the data it is applied to (`docs/gate.md`). The broke test reads them too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub marks: BTreeMap<String, Evidence>,
}

/// Trials of a task beyond the ones in the table: passes of trials free of infrastructure errors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub passes: u32,
    pub trials: u32,
}

/// Passes and fails a task needs in its mark trials to be quarantined.
pub const QUARANTINE_MIN_EACH: u32 = 2;
/// The pass rates (over the mark trials) at which a task is quarantined.
pub const QUARANTINE_BAND: (f64, f64) = (0.1, 0.9);

/// The variance floor of the flaky weight: the variance of a pass rate drawn uniformly.
const WEIGHT_FLOOR: f64 = 1.0 / 12.0;
/// Flaky weights are multiples of 1/`WEIGHT_SCALE`, so the exact tests stay on integers.
pub const WEIGHT_SCALE: u32 = 4;

impl Evidence {
    pub fn rate(&self) -> f64 {
        if self.trials == 0 {
            0.0
        } else {
            self.passes as f64 / self.trials as f64
        }
    }

    /// The outcome flips across these repeats of an unchanged harness: flaky.
    pub fn flaky(&self) -> bool {
        self.passes > 0 && self.passes < self.trials
    }

    /// Flaky on more than one slip, enough to leave the task out of the decision
    /// (`gate.flaky: quarantine`): at least [`QUARANTINE_MIN_EACH`] passes and as many fails,
    /// and a pass rate inside [`QUARANTINE_BAND`]. A task that passes once in 16 is a task that
    /// fails, and one that fails once in 16 a task that passes: quarantining them would drop
    /// real evidence for a single flip.
    pub fn clearly_flaky(&self) -> bool {
        let fails = self.trials.saturating_sub(self.passes);
        let (lo, hi) = QUARANTINE_BAND;
        self.passes >= QUARANTINE_MIN_EACH
            && fails >= QUARANTINE_MIN_EACH
            && (lo..=hi).contains(&self.rate())
    }

    /// The task's weight under `gate.flaky: weight`, in units of 1/[`WEIGHT_SCALE`]: the
    /// inverse-variance weight `v0 / (v0 + p(1−p))` with the floor `v0 = 1/12`, rounded, at
    /// least one unit. A task that did not flip weighs [`WEIGHT_SCALE`] (1); one that passes
    /// half the time a quarter.
    pub fn weight(&self) -> u32 {
        if !self.flaky() {
            return WEIGHT_SCALE;
        }
        let p = self.rate();
        let w = WEIGHT_FLOOR / (WEIGHT_FLOOR + p * (1.0 - p));
        ((w * WEIGHT_SCALE as f64).round() as u32).clamp(1, WEIGHT_SCALE)
    }
}

impl Evaluation {
    pub fn new(held_in: Table, validation: Table) -> Self {
        Evaluation {
            fingerprint: None,
            held_in,
            validation,
            evidence: BTreeMap::new(),
            marks: BTreeMap::new(),
        }
    }

    /// The table of a gated split; `None` for the test split, which the gate never reads.
    pub fn table(&self, split: Split) -> Option<&Table> {
        match split {
            Split::HeldIn => Some(&self.held_in),
            Split::Validation => Some(&self.validation),
            Split::Test => None,
        }
    }

    pub fn table_mut(&mut self, split: Split) -> Option<&mut Table> {
        match split {
            Split::HeldIn => Some(&mut self.held_in),
            Split::Validation => Some(&mut self.validation),
            Split::Test => None,
        }
    }

    /// A candidate evaluation to fill in: the parent's tasks and trial ids (and fingerprint),
    /// every outcome `Pending`.
    pub fn pending_like(&self) -> Self {
        Evaluation {
            fingerprint: self.fingerprint.clone(),
            held_in: self.held_in.pending_like(),
            validation: self.validation.pending_like(),
            evidence: BTreeMap::new(),
            marks: BTreeMap::new(),
        }
    }

    /// Record one outcome. The cell must exist (use [`Table::pending`] to lay out the table).
    pub fn set(
        &mut self,
        split: Split,
        task: &str,
        trial: u32,
        outcome: Outcome,
    ) -> Result<(), GateError> {
        let cell = self
            .table_mut(split)
            .and_then(|t| t.tasks.get_mut(task))
            .and_then(|v| v.get_mut(trial as usize));
        match cell {
            Some(c) => {
                *c = outcome;
                Ok(())
            }
            None => Err(GateError::NoSuchTrial {
                split,
                task: task.to_string(),
                trial,
            }),
        }
    }

    pub fn get(&self, split: Split, task: &str, trial: u32) -> Option<Outcome> {
        self.table(split)?
            .tasks
            .get(task)?
            .get(trial as usize)
            .copied()
    }

    /// Number of (task, trial) cells over both gated splits.
    pub fn cells(&self) -> usize {
        self.held_in.cells() + self.validation.cells()
    }

    pub fn count(&self, outcome: Outcome) -> usize {
        self.held_in.count(outcome) + self.validation.count(outcome)
    }

    /// Per task of both gated splits: the passes of the trials free of infrastructure errors in
    /// the table and in `evidence` (every trial the statistic may read; `marks` apart).
    pub fn per_task(&self) -> Vec<(Split, String, Evidence)> {
        let mut out = Vec::new();
        for split in [Split::HeldIn, Split::Validation] {
            for (task, outcomes) in &self.table(split).expect("gated split").tasks {
                let mut e = self.evidence.get(task).copied().unwrap_or_default();
                for o in outcomes {
                    match o {
                        Outcome::Pass => {
                            e.passes += 1;
                            e.trials += 1;
                        }
                        Outcome::Fail => e.trials += 1,
                        Outcome::Infra | Outcome::Pending => {}
                    }
                }
                out.push((split, task.clone(), e));
            }
        }
        out
    }

    /// The largest number of trials of any task.
    pub fn max_trials(&self) -> u32 {
        self.held_in
            .tasks
            .values()
            .chain(self.validation.tasks.values())
            .map(Vec::len)
            .max()
            .unwrap_or(0) as u32
    }
}
