//! Turning a finished (or interrupted) run into its git record: `refs/harness/runs/<id>` with
//! run.yaml, results.jsonl and traces/, and a note on the harness commit with pass counts.

use std::collections::BTreeMap;
use std::path::Path;

use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};

use super::cache::Cache;
use super::journal::{Journal, RunMeta};
use super::{RESULTS_FILE, RUN_FILE, Totals, TrialResult, parse_results};
use crate::error::{Error, IoContext, Result};
use crate::lineage::{self, RunSummary};
use crate::support::format;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    #[serde(flatten)]
    pub meta: RunMeta,
    pub tool_version: String,
    pub ended_at: String,
    /// Interrupted or stopped early: not every planned trial has a result.
    #[serde(default)]
    pub partial: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    pub totals: BTreeMap<String, Totals>,
    /// What trials cancelled before their end (early stopping, interrupts) spent; not in the
    /// totals, which count results.
    #[serde(default, skip_serializing_if = "super::Overhead::is_empty")]
    pub cancelled: super::Overhead,
}

/// Write the record of a run and its note; drop the journal. Returns the run commit.
pub fn write_record(
    repo: &Repository,
    state_dir: &Path,
    meta: &RunMeta,
    results: &mut [TrialResult],
    partial: bool,
    stop_reason: Option<String>,
    cancelled: super::Overhead,
) -> Result<Oid> {
    // An earlier attempt wrote the ref and was killed before it finished: the record in git is
    // the truth, and only the steps after it are left to do.
    if let Ok(commit) = repo.refname_to_id(&format!("{}{}", lineage::RUNS_PREFIX, meta.id)) {
        finish_recorded(repo, state_dir, &meta.id)?;
        return Ok(commit);
    }
    let journal_dir = Journal::dir_for(state_dir, &meta.id);
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    // Results reused from an interrupted run that never got a ref are adopted: their traces
    // move into this record so nothing lives only in a local journal.
    for r in results.iter_mut() {
        if let Some(src) = r.cached_from.clone()
            && repo
                .refname_to_id(&format!("{}{src}", lineage::RUNS_PREFIX))
                .is_err()
        {
            for t in r.trace.iter().chain(&r.workspace) {
                let p = Journal::dir_for(state_dir, &src).join(t);
                if let Ok(bytes) = std::fs::read(&p) {
                    files.push((t.clone(), bytes));
                }
            }
            r.cached_from = None;
        } else if r.cached_from.is_none() {
            for t in r.trace.iter().chain(&r.workspace) {
                let p = journal_dir.join(t);
                let bytes = std::fs::read(&p).at(&p)?;
                files.push((t.clone(), bytes));
            }
        }
    }
    let mut by_split: BTreeMap<String, Vec<&TrialResult>> = BTreeMap::new();
    for r in results.iter() {
        by_split.entry(r.split.clone()).or_default().push(r);
    }
    let totals: BTreeMap<String, Totals> = by_split
        .iter()
        .map(|(k, v)| (k.clone(), Totals::of(v.iter().copied())))
        .collect();
    let record = RunRecord {
        meta: meta.clone(),
        tool_version: crate::VERSION.to_string(),
        ended_at: now(),
        partial,
        stop_reason,
        totals: totals.clone(),
        cancelled,
    };
    files.push((
        RUN_FILE.into(),
        crate::support::yaml::to_string(&record).into_bytes(),
    ));
    let mut jsonl = Vec::new();
    for r in results.iter() {
        jsonl.extend(serde_json::to_vec(r).expect("result serializes"));
        jsonl.push(b'\n');
    }
    files.push((RESULTS_FILE.into(), jsonl));
    let harness = Oid::from_str(&meta.harness_commit).ok();
    let summary_line: Vec<String> = totals
        .iter()
        .map(|(s, t)| format!("{s} {}/{}", t.passes, t.trials))
        .collect();
    let msg = format!(
        "Run {}: {} at {}{}\n\n{}\n",
        meta.id,
        meta.agent.as_str(),
        &meta.harness_commit[..meta.harness_commit.len().min(10)],
        if partial { " (partial)" } else { "" },
        summary_line.join(", ")
    );
    let commit = lineage::write_run(repo, &meta.id, harness, &files, &msg)?;
    finish_recorded(repo, state_dir, &meta.id)?;
    // Journals of killed runs whose every result this record adopted are done with, and so
    // are those of killed runs that had finished nothing: this run supersedes them.
    let _ = sweep_journals(repo, state_dir, true);
    Ok(commit)
}

/// The steps after a run's ref is written, each one idempotent so that a run killed between
/// them is finished by whoever comes next: its summary in the note of the harness commit, its
/// results in the cache, its journal removed.
pub fn finish_recorded(repo: &Repository, state_dir: &Path, id: &str) -> Result<()> {
    let (record, results) = read_run(repo, id)?;
    let meta = &record.meta;
    let harness = Oid::from_str(&meta.harness_commit).ok();
    if !meta.worktree
        && !meta.no_note
        && meta.agent == super::AgentKind::Harness
        && let Some(h) = harness
    {
        let mut by_split: BTreeMap<&str, Vec<&TrialResult>> = BTreeMap::new();
        for r in &results {
            by_split.entry(r.split.as_str()).or_default().push(r);
        }
        // The note describes the harness version, so its tokens and cost cover every trial of
        // the split, also those reused from the cache (the run's own totals count only what it
        // executed).
        let version_cost = |split: &str| -> (u64, f64) {
            by_split.get(split).map_or((0, 0.0), |v| {
                (
                    v.iter().map(|r| r.tokens()).sum(),
                    v.iter().map(|r| r.cost_usd).sum(),
                )
            })
        };
        lineage::update_note(repo, h, |note| {
            if note.runs.iter().any(|r| r.run == meta.id) {
                return;
            }
            for (split, t) in &record.totals {
                let (tokens, cost_usd) = version_cost(split);
                note.add_run(RunSummary {
                    run: meta.id.clone(),
                    split: split.clone(),
                    fingerprint: meta.fingerprint.clone(),
                    passes: t.passes,
                    trials: t.trials,
                    infra_errors: t.infra_errors,
                    tokens,
                    cost_usd,
                    partial: record.partial,
                });
            }
        })?;
    }
    // Point the cache at the record for every trial it holds (those it executed were cached
    // under its id as they finished; adopted ones pointed at a killed run's journal).
    let cache = Cache::new(state_dir);
    for r in results.iter().filter(|r| r.cached_from.is_none()) {
        if let Some(d) = &r.cache_key
            && cache.get(d)?.is_none_or(|c| c.run != id)
        {
            cache.put(d, id, r)?;
        }
    }
    Journal::remove(state_dir, id);
    Ok(())
}

/// Finish or remove the journal of run `id` when the process that wrote it is gone: a journal
/// whose run has a ref is finished; one whose every result is recorded in another run (adopted
/// by a re-run), or (with `drop_empty`) that was killed before any trial counted, is removed.
/// Anything else stays, for `--resume`. Returns whether it went away.
pub fn sweep_journal(
    repo: &Repository,
    state_dir: &Path,
    id: &str,
    drop_empty: bool,
) -> Result<bool> {
    if !Journal::abandoned(state_dir, id) {
        return Ok(false);
    }
    if repo
        .refname_to_id(&format!("{}{id}", lineage::RUNS_PREFIX))
        .is_ok()
    {
        finish_recorded(repo, state_dir, id)?;
        return Ok(true);
    }
    let results = Journal::read_results(state_dir, id);
    let cache = Cache::new(state_dir);
    let recorded_elsewhere = |r: &TrialResult| {
        r.is_infra()
            || r.cache_key
                .as_deref()
                // An entry that does not read proves nothing: the journal stays.
                .and_then(|d| cache.get(d).ok().flatten())
                .is_some_and(|c| {
                    c.run != id
                        && repo
                            .refname_to_id(&format!("{}{}", lineage::RUNS_PREFIX, c.run))
                            .is_ok()
                })
    };
    let countable = results.iter().any(|r| !r.is_infra());
    // Killed before any trial counted: nothing to keep. An interrupted run stays even then:
    // the user was given its resume command.
    let empty = drop_empty && !countable && !Journal::was_interrupted(state_dir, id);
    if empty || (countable && results.iter().all(recorded_elsewhere)) {
        Journal::remove(state_dir, id);
        return Ok(true);
    }
    Ok(false)
}

/// Finish what dead processes left among the journals (see [`sweep_journal`]). With
/// `drop_empty` (after another run was recorded), also journals of killed runs that finished
/// no trial: without it they stay, so that `--resume` of such a run still works.
pub fn sweep_journals(repo: &Repository, state_dir: &Path, drop_empty: bool) -> Result<()> {
    Journal::sweep_removed(state_dir);
    for id in Journal::unfinished(state_dir) {
        sweep_journal(repo, state_dir, &id, drop_empty)?;
    }
    Ok(())
}

/// Read a run's record and results from its ref.
pub fn read_run(repo: &Repository, id: &str) -> Result<(RunRecord, Vec<TrialResult>)> {
    let run = lineage::read_run_file(repo, id, RUN_FILE)?.ok_or_else(|| {
        Error::usage_hint(
            format!("no run `{id}`"),
            "list runs with `git harness status`",
        )
    })?;
    let record = parse_run_record(&run, id)?;
    let results = match lineage::read_run_file(repo, id, RESULTS_FILE)? {
        Some(b) => parse_results(&b, &format!("{}{id}:{RESULTS_FILE}", lineage::RUNS_PREFIX))?,
        None => Vec::new(),
    };
    Ok((record, results))
}

/// A stored `run.yaml` of run `id`: one that does not read, or of a newer format, is an error
/// naming it.
pub fn parse_run_record(bytes: &[u8], id: &str) -> Result<RunRecord> {
    let record: RunRecord = serde_yaml::from_slice(bytes)
        .map_err(|e| Error::Internal(format!("run {id}: unreadable {RUN_FILE}: {e}")))?;
    format::check(
        &record.meta,
        &format!("{}{id}:{RUN_FILE}", lineage::RUNS_PREFIX),
    )?;
    Ok(record)
}

/// A trial's trace bytes: from the run that executed it.
pub fn read_trace(
    repo: &Repository,
    state_dir: &Path,
    run: &str,
    result: &TrialResult,
) -> Result<Option<Vec<u8>>> {
    let src = result.cached_from.as_deref().unwrap_or(run);
    let Some(path) = &result.trace else {
        return Ok(None);
    };
    if let Some(b) = lineage::read_run_file(repo, src, path)? {
        return Ok(Some(b));
    }
    Ok(std::fs::read(Journal::dir_for(state_dir, src).join(path)).ok())
}

/// One trial of a recorded run, as users name it: `<run>:<task>#<n>` (`#<n>` the trial index,
/// as mining's evidence prints it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialRef {
    pub run: String,
    pub task: String,
    pub trial: u32,
}

impl TrialRef {
    /// Parse `<run>:<task>#<n>`; `None` when `s` does not have that shape.
    pub fn parse(s: &str) -> Option<TrialRef> {
        let (run, rest) = s.split_once(':')?;
        let (task, trial) = Self::parse_task(rest)?;
        (!run.is_empty()).then(|| TrialRef {
            run: run.to_string(),
            task,
            trial,
        })
    }

    /// Parse `<task>#<n>` (a bare `<task>` means trial 0).
    pub fn parse_task(s: &str) -> Option<(String, u32)> {
        let (task, trial) = match s.rsplit_once('#') {
            Some((t, n)) => (t, n.parse::<u32>().ok()?),
            None => (s, 0),
        };
        (!task.is_empty()).then(|| (task.to_string(), trial))
    }
}

impl std::fmt::Display for TrialRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}#{}", self.run, self.task, self.trial)
    }
}

/// The trace of one trial of a recorded run (from the run that executed it, when it was
/// reused from the cache).
pub fn trial_trace(
    repo: &Repository,
    state_dir: &Path,
    at: &TrialRef,
) -> Result<(TrialResult, crate::agent::Trace)> {
    let (_, results) = read_run(repo, &at.run)?;
    let Some(result) = results
        .iter()
        .find(|r| r.task == at.task && r.trial == at.trial)
    else {
        let mut tasks: Vec<String> = results
            .iter()
            .map(|r| format!("{}#{}", r.task, r.trial))
            .collect();
        tasks.truncate(6);
        return Err(Error::usage_hint(
            format!("run {} has no trial {}#{}", at.run, at.task, at.trial),
            format!(
                "its trials are named like {}",
                if tasks.is_empty() {
                    "(none)".to_string()
                } else {
                    tasks.join(", ")
                }
            ),
        ));
    };
    let bytes = read_trace(repo, state_dir, &at.run, result)?.ok_or_else(|| {
        Error::usage(format!(
            "trial {at} left no trace ({})",
            result.error.as_deref().unwrap_or("the agent did not run")
        ))
    })?;
    let trace: crate::agent::Trace = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Internal(format!("the trace of {at} is not a git-harness trace: {e}"))
    })?;
    format::check(&trace, &format!("the trace of {at}"))?;
    Ok((result.clone(), trace))
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
