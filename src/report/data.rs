//! The lineage as a report reads it: every version of main with per-split pass rates (95% Wilson
//! intervals), every promotion with its evidence and the gate's decision, open and rejected
//! proposals, test-split openings, a task × version matrix and what it all cost. Read-only:
//! collected from refs, notes and run records, never from a local cache.

use std::collections::{BTreeMap, HashMap};

use git2::{Oid, Repository};
use serde::Serialize;

use crate::error::{GitContext, Result};
use crate::eval::TrialResult;
use crate::eval::record::read_run;
use crate::gate::{Decision, Verdict};
use crate::lineage::history::{Version, version_of};
use crate::lineage::trailers::CommitMessage;
use crate::lineage::{
    self, HarnessNote, ProposalState, RUNS_PREFIX, SplitComparison, ValidationRecord, keys,
    read_note,
};
use crate::workspace::Workspace;

/// The two splits whose results a lineage report shows per version.
pub const GATED_SPLITS: [&str; 2] = ["held_in", "validation"];

/// What to collect.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// Start the lineage at this revision (it is included as the first version shown).
    pub since: Option<String>,
}

/// A pass rate with its 95% Wilson score interval (over trials).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rate {
    pub passes: u32,
    pub trials: u32,
    pub rate: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Rate {
    pub fn new(passes: u32, trials: u32) -> Rate {
        let (lo, hi) = wilson(passes, trials);
        Rate {
            passes,
            trials,
            rate: if trials == 0 {
                0.0
            } else {
                f64::from(passes) / f64::from(trials)
            },
            lo,
            hi,
        }
    }

    /// `61% (22/36, 95% CI 45–75%)`.
    pub fn describe(&self) -> String {
        format!(
            "{:.0}% ({}/{}, 95% CI {:.0}–{:.0}%)",
            self.rate * 100.0,
            self.passes,
            self.trials,
            self.lo * 100.0,
            self.hi * 100.0
        )
    }
}

/// The 95% Wilson score interval of `passes` successes in `trials`; (0, 1) with no trials.
pub fn wilson(passes: u32, trials: u32) -> (f64, f64) {
    if trials == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let n = f64::from(trials);
    let p = f64::from(passes) / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    let lo = if passes == 0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let hi = if passes == trials {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    (lo, hi)
}

/// One split's measurement of one version.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    #[serde(flatten)]
    pub rate: Rate,
    pub infra_errors: u32,
    /// The run the numbers come from.
    pub run: String,
    /// `run` (a run of this commit) or `validation` (the candidate run of the validation that
    /// promoted this tree).
    pub source: &'static str,
    /// Not every planned trial ran (stopped early or interrupted).
    pub partial: bool,
}

/// Tokens and cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Spend {
    pub tokens: u64,
    pub cost_usd: f64,
    pub trials: u32,
}

impl Spend {
    fn add(&mut self, r: &TrialResult) {
        self.tokens += r.tokens();
        self.cost_usd += r.cost_usd;
        self.trials += 1;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionRow {
    pub index: usize,
    /// `v3`.
    pub label: String,
    pub commit: String,
    pub short: String,
    pub subject: String,
    pub date: String,
    /// `promotion`, `override` (promoted without an accepting record) or `commit`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_in: Option<Measurement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<Measurement>,
    /// The latest test-split opening of this commit, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<Rate>,
    /// What one evaluation of this version on held_in + validation uses (cached trials counted
    /// at their recorded usage).
    pub evaluation: Spend,
}

impl VersionRow {
    pub fn split(&self, split: &str) -> Option<&Measurement> {
        match split {
            "held_in" => self.held_in.as_ref(),
            "validation" => self.validation.as_ref(),
            _ => None,
        }
    }
}

/// Fixed and broke tasks per split, as the gate saw them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Flips {
    pub fixed_held_in: Vec<String>,
    pub broke_held_in: Vec<String>,
    pub fixed_validation: Vec<String>,
    pub broke_validation: Vec<String>,
}

impl Flips {
    pub fn of(d: &Decision) -> Flips {
        Flips {
            fixed_held_in: d.held_in.fixed.clone(),
            broke_held_in: d.held_in.broke.clone(),
            fixed_validation: d.validation.fixed.clone(),
            broke_validation: d.validation.broke.clone(),
        }
    }
}

/// A validation record in reportable form.
#[derive(Debug, Clone, Serialize)]
pub struct Gated {
    pub gate: String,
    pub verdict: String,
    pub reason: String,
    pub held_in: SplitComparison,
    pub validation: SplitComparison,
    pub held_in_delta: i64,
    pub validation_delta: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistic: Option<String>,
    pub margin: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_stop: Option<String>,
    /// Run refs (`refs/harness/runs/<id>`): the parent's first, then the candidate's.
    pub runs: Vec<String>,
    /// Empty when the record carries no decision.
    pub flips: Flips,
    /// What the validation's runs executed (cached trials are free).
    pub cost: Spend,
    pub created_at: String,
    #[serde(skip)]
    pub decision: Option<Decision>,
    #[serde(skip)]
    pub record: Option<ValidationRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Promotion {
    pub version: usize,
    pub label: String,
    pub commit: String,
    pub short: String,
    pub subject: String,
    /// The proposal's branch (deleted once promoted) as the merge records it.
    pub proposal_ref: String,
    pub proposal_commit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub surface: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round: Option<String>,
    /// The `Harness-Evidence` trailer of the proposal commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// The merge's `Harness-Verdict` trailer (`none` when overridden without a record).
    pub verdict: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overridden: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gated: Option<Gated>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProposalRow {
    pub name: String,
    /// `open` or `rejected`.
    pub state: &'static str,
    pub refname: String,
    pub commit: String,
    pub short: String,
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub surface: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub round: u32,
    /// The version it was proposed on, when that version is in the report.
    pub parent_version: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gated: Option<Gated>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BaselineRate {
    pub name: String,
    #[serde(flatten)]
    pub rate: Rate,
}

#[derive(Debug, Clone, Serialize)]
pub struct TestOpening {
    pub opening: u32,
    pub harness: String,
    pub short: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<usize>,
    #[serde(flatten)]
    pub rate: Rate,
    pub infra_errors: u32,
    pub baselines: Vec<BaselineRate>,
    pub at: String,
}

/// One task's row in the task × version matrix.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRow {
    pub task: String,
    pub split: String,
    /// One per version, in version order.
    pub cells: Vec<Cell>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Cell {
    pub passes: u32,
    pub trials: u32,
    /// Measured at this version at all.
    pub measured: bool,
    /// The promotion that made this version fixed this task (gate: parent failed every trial,
    /// candidate passed every trial).
    pub fixed: bool,
    pub broke: bool,
}

impl Cell {
    pub fn rate(&self) -> Option<f64> {
        (self.measured && self.trials > 0).then(|| f64::from(self.passes) / f64::from(self.trials))
    }
}

/// The first thing a reader sees.
#[derive(Debug, Clone, Serialize)]
pub struct Headline {
    pub current: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<usize>,
    pub promotions: usize,
    pub overrides: usize,
    pub rejected: usize,
    pub open: usize,
    pub test_openings: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SplitSizes {
    pub held_in: usize,
    pub validation: usize,
    pub test: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct LineageReport {
    pub tool_version: String,
    pub main_branch: String,
    pub main_commit: String,
    /// The experiment fingerprint whose results are shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    pub warnings: Vec<String>,
    pub splits: SplitSizes,
    pub versions: Vec<VersionRow>,
    pub promotions: Vec<Promotion>,
    pub proposals: Vec<ProposalRow>,
    pub test_openings: Vec<TestOpening>,
    pub tasks: Vec<TaskRow>,
    /// Everything the run records under refs/harness/runs executed.
    pub spent: Spend,
    pub runs: usize,
    pub headline: Headline,
    /// Main's flaky tasks (its note), when measured on main's tree under the shown fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flaky: Option<crate::lineage::FlakyTasksRecord>,
    /// The null controls of the evolve rounds, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub null_controls: Vec<NullControlRow>,
}

/// An evolve round's null control, on the version that was main in that round.
#[derive(Debug, Clone, Serialize)]
pub struct NullControlRow {
    /// The version that was main (`v2`).
    pub label: String,
    pub round: u32,
    pub verdict: Verdict,
    pub p_value: f64,
    /// Candidate trials its validation ran.
    pub trials: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mde_points: Option<f64>,
}

impl LineageReport {
    pub fn version(&self, index: usize) -> Option<&VersionRow> {
        self.versions.iter().find(|v| v.index == index)
    }

    pub fn current(&self) -> &VersionRow {
        self.versions
            .last()
            .expect("a lineage has at least one version")
    }

    pub fn baseline(&self) -> Option<&VersionRow> {
        self.headline.baseline.and_then(|i| self.version(i))
    }

    pub fn rejected(&self) -> impl Iterator<Item = &ProposalRow> {
        self.proposals.iter().filter(|p| p.state == "rejected")
    }

    pub fn open(&self) -> impl Iterator<Item = &ProposalRow> {
        self.proposals.iter().filter(|p| p.state == "open")
    }
}

/// Run results read once per report.
#[derive(Default)]
pub struct RunCache {
    runs: HashMap<String, Option<(bool, Vec<TrialResult>)>>,
}

impl RunCache {
    /// (partial, results) of a run, `None` when its ref is gone.
    pub fn get(&mut self, repo: &Repository, id: &str) -> Option<&(bool, Vec<TrialResult>)> {
        self.runs
            .entry(id.to_string())
            .or_insert_with(|| read_run(repo, id).ok().map(|(r, res)| (r.partial, res)))
            .as_ref()
    }
}

/// A validation record with its decision, cost and flips.
pub fn gated(repo: &Repository, cache: &mut RunCache, r: &ValidationRecord) -> Gated {
    let decision = r.decision.as_deref().cloned();
    let mut cost = Spend::default();
    for run in &r.runs {
        if let Some((_, results)) = cache.get(repo, run) {
            for t in results.iter().filter(|t| t.cached_from.is_none()) {
                cost.add(t);
            }
        }
    }
    Gated {
        gate: r.gate.clone(),
        verdict: r.verdict.to_string(),
        reason: r.reason.clone(),
        held_in: r.held_in.clone(),
        validation: r.validation.clone(),
        held_in_delta: r.held_in.delta(),
        validation_delta: r.validation.delta(),
        statistic: r.statistic.clone(),
        margin: r.margin,
        early_stop: r.early_stop.clone(),
        runs: r.runs.clone(),
        flips: decision.as_ref().map(Flips::of).unwrap_or_default(),
        cost,
        created_at: r.created_at.clone(),
        decision,
        record: Some(r.clone()),
    }
}

/// The latest record that gated exactly `candidate_tree` against `parent_tree` (under
/// `fingerprint` when given).
pub fn record_for(
    note: &HarnessNote,
    candidate_tree: Oid,
    parent_tree: Option<Oid>,
    fingerprint: Option<&str>,
) -> Option<ValidationRecord> {
    let exact = note.validations.iter().rev().find(|r| {
        r.candidate_tree == candidate_tree.to_string()
            && parent_tree.is_none_or(|p| r.parent_tree == p.to_string())
            && fingerprint.is_none_or(|f| r.fingerprint == f)
    });
    exact.cloned()
}

/// A measured run per gated split: (run id, where it came from).
type Picked = BTreeMap<&'static str, (String, &'static str)>;

/// Collect the lineage report of main.
pub fn collect(ws: &Workspace, opts: &ReportOptions) -> Result<LineageReport> {
    let repo = &ws.repo;
    let mut warnings = Vec::new();
    let fixed = ws.fixed_on_main().ok();
    let computed = fixed.as_ref().and_then(|f| ws.fingerprint(f).ok());

    let main = lineage::main_commit(repo)?;
    let (chain, first_shown) = main_chain(repo, &main, opts.since.as_deref())?;
    let notes: Vec<HarnessNote> = chain
        .iter()
        .map(|c| read_note(repo, c.id()))
        .collect::<Result<_>>()?;
    let fingerprint = shown_fingerprint(computed, &notes, &mut warnings);
    let fp = fingerprint.as_deref();

    let mut cache = RunCache::default();
    let mut versions = Vec::new();
    let mut promotions = Vec::new();
    let mut measured_runs: Vec<Picked> = Vec::new();
    let mut flips_at: Vec<Option<Flips>> = Vec::new();
    for (i, c) in chain.iter().enumerate().skip(first_shown) {
        let v: Version = version_of(repo, c, fp)?;
        let gate_info = promotion_gate(repo, &mut cache, c, &v, fp)?;
        let picked = pick_runs(&notes[i], gate_info.as_ref(), c.tree_id(), fp);
        let mut row = version_row(i, &v);
        measure(repo, &mut cache, &mut row, &picked);
        flips_at.push(
            gate_info
                .as_ref()
                .and_then(|g| g.decision.as_ref().map(Flips::of)),
        );
        measured_runs.push(picked);
        if let Some(proposal_ref) = &v.proposal {
            promotions.push(promotion_row(i, c, &v, &row, proposal_ref, gate_info));
        }
        versions.push(row);
    }

    let index_of: HashMap<String, usize> = versions
        .iter()
        .map(|v| (v.commit.clone(), v.index))
        .collect();
    let test_openings = test_openings(repo, &index_of, opts.since.is_some())?;
    for t in &test_openings {
        if let Some(v) = t
            .version
            .and_then(|i| versions.iter_mut().find(|v| v.index == i))
        {
            v.test = Some(t.rate.clone());
        }
    }
    let proposals = proposal_rows(repo, &mut cache, &index_of, opts.since.is_some(), fp)?;

    let (held_in_tasks, validation_tasks, test_count) = match &fixed {
        Some(f) => (
            f.splits.held_in.clone(),
            f.splits.validation.clone(),
            f.splits.test.len(),
        ),
        None => (Vec::new(), Vec::new(), 0),
    };
    let tasks = task_matrix(
        repo,
        &mut cache,
        [
            ("held_in", &held_in_tasks),
            ("validation", &validation_tasks),
        ],
        &measured_runs,
        &flips_at,
        versions.len(),
    );

    let all_runs = lineage::list_runs(repo)?;
    let spent = spent_overall(repo, &all_runs)?;
    let flaky = match fp {
        Some(fp) => lineage::flaky_marks(repo, &main, fp)?,
        None => None,
    };
    let null_controls = versions
        .iter()
        .flat_map(|v| {
            notes[v.index]
                .null_controls
                .iter()
                .filter(|c| fp.is_none_or(|fp| c.fingerprint == fp))
                .map(|c| NullControlRow {
                    label: v.label.clone(),
                    round: c.round,
                    verdict: c.verdict,
                    p_value: c.p_value,
                    trials: c.trials,
                    mde_points: c.mde_points,
                })
        })
        .collect();

    let baseline = versions
        .iter()
        .find(|v| v.held_in.is_some() || v.validation.is_some())
        .map(|v| v.index);
    let headline = Headline {
        current: versions.last().map(|v| v.index).unwrap_or_default(),
        baseline,
        promotions: promotions.len(),
        overrides: promotions.iter().filter(|p| p.overridden.is_some()).count(),
        rejected: proposals.iter().filter(|p| p.state == "rejected").count(),
        open: proposals.iter().filter(|p| p.state == "open").count(),
        test_openings: test_openings.len(),
    };
    Ok(LineageReport {
        tool_version: crate::VERSION.to_string(),
        main_branch: lineage::main_branch(repo),
        main_commit: main.id().to_string(),
        fingerprint,
        since: opts.since.clone(),
        warnings,
        splits: SplitSizes {
            held_in: held_in_tasks.len(),
            validation: validation_tasks.len(),
            test: test_count,
        },
        versions,
        promotions,
        proposals,
        test_openings,
        tasks,
        spent,
        runs: all_runs.len(),
        headline,
        flaky,
        null_controls,
    })
}

/// Main's first-parent chain, oldest first (indices are absolute), and the index of the first
/// version shown (`since`, when given).
fn main_chain<'r>(
    repo: &'r Repository,
    main: &git2::Commit<'r>,
    since: Option<&str>,
) -> Result<(Vec<git2::Commit<'r>>, usize)> {
    let mut chain: Vec<git2::Commit<'_>> = Vec::new();
    let mut cur = Some(main.clone());
    while let Some(c) = cur {
        cur = c.parent(0).ok();
        chain.push(c);
    }
    chain.reverse();
    let first_shown = match since {
        Some(rev) => {
            let since = lineage::resolve_commit(repo, rev)?;
            chain
                .iter()
                .position(|c| c.id() == since.id())
                .ok_or_else(|| {
                    crate::Error::usage_hint(
                        format!("`{rev}` is not on the first-parent history of main"),
                        "give a version listed by `git harness log`",
                    )
                })?
        }
        None => 0,
    };
    Ok((chain, first_shown))
}

/// Which experiment's results to show: the current one, or the latest recorded one when the
/// current one cannot be computed or has no results (with a warning saying so).
fn shown_fingerprint(
    computed: Option<String>,
    notes: &[HarnessNote],
    warnings: &mut Vec<String>,
) -> Option<String> {
    let has_results = |fp: &str| {
        notes
            .iter()
            .any(|n| n.runs.iter().any(|r| r.fingerprint == fp))
    };
    let latest_recorded = notes
        .iter()
        .rev()
        .flat_map(|n| n.runs.iter().rev())
        .map(|r| r.fingerprint.clone())
        .next();
    match (&computed, &latest_recorded) {
        (Some(c), _) if has_results(c) => Some(c.clone()),
        (Some(c), Some(l)) => {
            warnings.push(format!(
                "no results under the current experiment {c}; showing results recorded under {l}"
            ));
            Some(l.clone())
        }
        (None, Some(l)) => {
            warnings.push(format!(
                "the current experiment's fingerprint could not be computed (is its suite available?); showing results recorded under {l}"
            ));
            Some(l.clone())
        }
        (c, None) => c.clone(),
    }
}

/// The promotion's validation record, on its second parent.
fn promotion_gate(
    repo: &Repository,
    cache: &mut RunCache,
    c: &git2::Commit<'_>,
    v: &Version,
    fp: Option<&str>,
) -> Result<Option<Gated>> {
    if v.proposal.is_some()
        && let Ok(candidate) = c.parent(1)
    {
        let cnote = read_note(repo, candidate.id())?;
        let parent_tree = c.parent(0).ok().map(|p| p.tree_id());
        if let Some(r) = record_for(&cnote, candidate.tree_id(), parent_tree, fp) {
            return Ok(Some(gated(repo, cache, &r)));
        }
    }
    Ok(None)
}

/// Measurements: runs of this commit, else the validation's candidate run (same tree).
fn pick_runs(note: &HarnessNote, gate_info: Option<&Gated>, tree: Oid, fp: Option<&str>) -> Picked {
    let mut picked = Picked::new();
    for split in GATED_SPLITS {
        let from_note = note
            .runs
            .iter()
            .rev()
            .filter(|r| r.split == split && fp.is_none_or(|f| r.fingerprint == f))
            .min_by_key(|r| r.partial)
            .map(|r| r.run.clone());
        let from_validation = gate_info.and_then(|g| {
            let same_tree = g
                .record
                .as_ref()
                .is_some_and(|r| r.candidate_tree == tree.to_string());
            same_tree.then(|| g.runs.last().cloned()).flatten()
        });
        if let Some(run) = from_note {
            picked.insert(split, (run, "run"));
        } else if let Some(run) = from_validation {
            picked.insert(split, (run, "validation"));
        }
    }
    picked
}

/// A version's row before its measurements.
fn version_row(i: usize, v: &Version) -> VersionRow {
    VersionRow {
        index: i,
        label: format!("v{i}"),
        commit: v.commit.clone(),
        short: lineage::short(v.oid),
        subject: v.subject.clone(),
        date: chrono::DateTime::from_timestamp(v.time, 0)
            .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default(),
        kind: if v.proposal.is_some() {
            if v.overridden.is_some() {
                "override"
            } else {
                "promotion"
            }
        } else {
            "commit"
        },
        proposal: v.proposal.clone(),
        held_in: None,
        validation: None,
        test: None,
        evaluation: Spend::default(),
    }
}

/// Fill the row's per-split rates and evaluation cost from the picked runs.
fn measure(repo: &Repository, cache: &mut RunCache, row: &mut VersionRow, picked: &Picked) {
    for (split, (run, source)) in picked {
        if let Some((partial, results)) = cache.get(repo, run) {
            let mut passes = 0;
            let mut trials = 0;
            let mut infra = 0;
            for r in results.iter().filter(|r| r.split == *split) {
                row.evaluation.add(r);
                if r.is_infra() {
                    infra += 1;
                } else {
                    trials += 1;
                    passes += u32::from(r.passed());
                }
            }
            let m = Measurement {
                rate: Rate::new(passes, trials),
                infra_errors: infra,
                run: run.clone(),
                source,
                partial: *partial,
            };
            match *split {
                "held_in" => row.held_in = Some(m),
                _ => row.validation = Some(m),
            }
        }
    }
}

/// The promotion a version of main records, with the evidence its proposal cited.
fn promotion_row(
    i: usize,
    c: &git2::Commit<'_>,
    v: &Version,
    row: &VersionRow,
    proposal_ref: &str,
    gate_info: Option<Gated>,
) -> Promotion {
    let candidate = c.parent(1).ok();
    let pmsg = candidate
        .as_ref()
        .and_then(|p| CommitMessage::parse(p.message().unwrap_or_default()).ok());
    Promotion {
        version: i,
        label: format!("v{i}"),
        commit: v.commit.clone(),
        short: row.short.clone(),
        subject: v.subject.clone(),
        proposal_ref: proposal_ref.to_string(),
        proposal_commit: candidate.map(|p| p.id().to_string()).unwrap_or_default(),
        surface: v.surface.clone(),
        cluster: v.cluster.clone(),
        round: v.message.get(keys::ROUND).map(str::to_string),
        evidence: pmsg
            .as_ref()
            .and_then(|m| m.get(keys::EVIDENCE).map(str::to_string)),
        verdict: v.verdict.clone().unwrap_or_else(|| "none".into()),
        overridden: v.overridden.clone(),
        gated: gate_info,
    }
}

/// Test-split openings (with `since`, only those of a shown version).
fn test_openings(
    repo: &Repository,
    index_of: &HashMap<String, usize>,
    since: bool,
) -> Result<Vec<TestOpening>> {
    let mut test_openings = Vec::new();
    for e in lineage::test_log_entries(repo)? {
        let version = index_of.get(&e.harness).copied();
        if since && version.is_none() {
            continue;
        }
        test_openings.push(TestOpening {
            opening: e.opening,
            short: e.harness.chars().take(10).collect(),
            harness: e.harness.clone(),
            version,
            rate: Rate::new(e.passes, e.trials),
            infra_errors: e.infra_errors,
            baselines: e
                .baselines
                .iter()
                .map(|b| BaselineRate {
                    name: b.name.clone(),
                    rate: Rate::new(b.passes, b.trials),
                })
                .collect(),
            at: e.at.clone(),
        });
    }
    Ok(test_openings)
}

/// Open and rejected proposals made on a shown version (all of them without `since`).
fn proposal_rows(
    repo: &Repository,
    cache: &mut RunCache,
    index_of: &HashMap<String, usize>,
    since: bool,
    fp: Option<&str>,
) -> Result<Vec<ProposalRow>> {
    let mut proposals = Vec::new();
    // Promoted proposals are shown as the versions they made.
    for p in lineage::list_proposals(repo)?
        .into_iter()
        .filter(|p| p.state != ProposalState::Promoted)
    {
        let parent_version = p.parent.and_then(|o| index_of.get(&o.to_string()).copied());
        if since && parent_version.is_none() {
            continue;
        }
        let note = read_note(repo, p.commit)?;
        let commit = repo.find_commit(p.commit).git("read proposal")?;
        let parent_tree = commit.parent(0).ok().map(|c| c.tree_id());
        let gated_row =
            record_for(&note, commit.tree_id(), parent_tree, fp).map(|r| gated(repo, cache, &r));
        proposals.push(ProposalRow {
            name: p.name(),
            state: p.state.as_str(),
            refname: p.display_ref(),
            commit: p.commit.to_string(),
            short: lineage::short(p.commit),
            subject: p.message.subject.clone(),
            surface: p.message.get(keys::SURFACE).map(str::to_string),
            cluster: p.message.get(keys::CLUSTER).map(str::to_string),
            round: p.round,
            parent_version,
            gated: gated_row,
        });
    }
    Ok(proposals)
}

/// Task × version matrix over held_in ∪ validation: each cell's measured trials and the gate's
/// flips at that version.
fn task_matrix(
    repo: &Repository,
    cache: &mut RunCache,
    splits: [(&str, &Vec<String>); 2],
    measured_runs: &[Picked],
    flips_at: &[Option<Flips>],
    versions: usize,
) -> Vec<TaskRow> {
    let mut tasks: Vec<TaskRow> = Vec::new();
    let mut row_of: HashMap<(String, String), usize> = HashMap::new();
    for (split, list) in splits {
        for t in list {
            row_of.insert((split.to_string(), t.clone()), tasks.len());
            tasks.push(TaskRow {
                task: t.clone(),
                split: split.to_string(),
                cells: vec![Cell::default(); versions],
            });
        }
    }
    for (col, picked) in measured_runs.iter().enumerate() {
        for (split, (run, _)) in picked {
            let Some((_, results)) = cache.get(repo, run) else {
                continue;
            };
            for r in results.iter().filter(|r| r.split == *split) {
                let key = (split.to_string(), r.task.clone());
                let idx = match row_of.get(&key) {
                    Some(i) => *i,
                    None => {
                        // A task the current splits do not list (older splits): still shown.
                        row_of.insert(key, tasks.len());
                        tasks.push(TaskRow {
                            task: r.task.clone(),
                            split: split.to_string(),
                            cells: vec![Cell::default(); versions],
                        });
                        tasks.len() - 1
                    }
                };
                let cell = &mut tasks[idx].cells[col];
                cell.measured = true;
                if !r.is_infra() {
                    cell.trials += 1;
                    cell.passes += u32::from(r.passed());
                }
            }
        }
        if let Some(f) = &flips_at[col] {
            for (split, list, fixed) in [
                ("held_in", &f.fixed_held_in, true),
                ("held_in", &f.broke_held_in, false),
                ("validation", &f.fixed_validation, true),
                ("validation", &f.broke_validation, false),
            ] {
                for t in list {
                    if let Some(i) = row_of.get(&(split.to_string(), t.clone())) {
                        let cell = &mut tasks[*i].cells[col];
                        if fixed {
                            cell.fixed = true;
                        } else {
                            cell.broke = true;
                        }
                    }
                }
            }
        }
    }
    tasks
}

/// Everything executed, over every run record, plus the model's diagnoses and the proposer's
/// calls.
fn spent_overall(repo: &Repository, all_runs: &[(String, Oid, i64)]) -> Result<Spend> {
    let mut spent = Spend::default();
    for (id, _, _) in all_runs {
        if let Some(bytes) = lineage::read_run_file(repo, id, crate::eval::RUN_FILE)? {
            let rec = crate::eval::record::parse_run_record(&bytes, id)?;
            for t in rec.totals.values() {
                spent.tokens += t.tokens;
                spent.cost_usd += t.cost_usd;
                spent.trials += t.executed;
            }
            // Trials cancelled by early stopping spent too.
            spent.tokens += rec.cancelled.tokens();
            spent.cost_usd += rec.cancelled.cost_usd;
        }
        // And so did the model's diagnosis of the run's failures.
        #[derive(serde::Deserialize)]
        struct Diagnosed {
            #[serde(default = "crate::support::format::v1")]
            format: u32,
            #[serde(default)]
            diagnosis: crate::eval::Overhead,
        }
        impl crate::support::format::Versioned for Diagnosed {
            const RECORD: &'static str =
                <crate::mine::Bundle as crate::support::format::Versioned>::RECORD;
            const FORMAT: u32 = <crate::mine::Bundle as crate::support::format::Versioned>::FORMAT;
            fn format(&self) -> u32 {
                self.format
            }
        }
        if let Some(bytes) = lineage::read_run_file(repo, id, crate::mine::BUNDLE_FILE)? {
            let place = format!("{}{id}:{}", lineage::RUNS_PREFIX, crate::mine::BUNDLE_FILE);
            let b = serde_json::from_slice::<Diagnosed>(&bytes).map_err(|e| {
                crate::error::Error::Internal(format!("{place}: not a mined bundle: {e}"))
            })?;
            crate::support::format::check(&b, &place)?;
            spent.tokens += b.diagnosis.tokens();
            spent.cost_usd += b.diagnosis.cost_usd;
        }
    }
    // The proposer's calls, from the log of its rounds.
    for bytes in lineage::log_files_named(repo, lineage::PROPOSER_LOG_REF, crate::eval::SPEND_FILE)?
    {
        if let Ok(o) = serde_yaml::from_slice::<crate::eval::Overhead>(&bytes) {
            spent.tokens += o.tokens();
            spent.cost_usd += o.cost_usd;
        }
    }

    Ok(spent)
}

/// `refs/harness/runs/<id>`.
pub fn run_ref(id: &str) -> String {
    format!("{RUNS_PREFIX}{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_known_values() {
        let (lo, hi) = wilson(0, 10);
        assert!(lo == 0.0 && (hi - 0.2775).abs() < 1e-3, "{lo} {hi}");
        let (lo, hi) = wilson(5, 10);
        assert!((lo - 0.2366).abs() < 1e-3 && (hi - 0.7634).abs() < 1e-3);
        let (lo, hi) = wilson(10, 10);
        assert!((lo - 0.7225).abs() < 1e-3 && hi == 1.0);
        assert_eq!(wilson(0, 0), (0.0, 1.0));
    }
}
