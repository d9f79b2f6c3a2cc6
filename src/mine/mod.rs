//! Weakness mining: failed held-in trials get a verifier-grounded signature and are clustered
//! by exact equality; the bundle adds the passing held-in tasks and earlier attempted edits.
//! Only the held-in split is read: nothing of validation or test enters a bundle.

pub mod diagnose;
pub mod render;
pub mod signature;

use std::collections::BTreeMap;
use std::path::Path;

use git2::Repository;
use serde::{Deserialize, Serialize};

use crate::agent::trace::Trace;
use crate::error::Result;
use crate::eval::record::{read_run, read_trace};
use crate::eval::{Outcome, TrialResult};
use crate::lineage::{self, ProposalState, keys};
pub use signature::{CausalStatus, MECHANISMS, Signature, Symptoms, extract};

pub const BUNDLE_FILE: &str = "mine/bundle.json";

/// One failed held-in trial with its signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedTrial {
    pub task: String,
    pub trial: u32,
    pub signature: Signature,
    pub symptoms: Symptoms,
    /// A few lines of the verifier's output.
    pub verifier_excerpt: String,
    /// A few short lines of the trace (commands with exit codes), never secrets.
    pub trace_excerpt: Vec<String>,
    /// How the signature was made: `deterministic` or `model`.
    pub diagnosed_by: String,
}

impl FailedTrial {
    pub fn id(&self) -> String {
        format!("{}#{}", self.task, self.trial)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// 1-based rank in the bundle (`--cluster 1`).
    pub rank: usize,
    /// The signature id `cause/status/mechanism`.
    pub id: String,
    pub signature: Signature,
    pub size: usize,
    pub tasks: Vec<String>,
    pub trials: Vec<String>,
    pub representatives: Vec<FailedTrial>,
    pub symptoms: Vec<String>,
    pub mechanism: String,
}

/// An earlier edit of the lineage, with its measured deltas (aggregate numbers only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub name: String,
    pub state: String,
    pub subject: String,
    pub surface: Option<String>,
    pub cluster: Option<String>,
    pub held_in: Option<String>,
    pub validation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    /// The record's format version (docs/formats.md); absent in records written before: 1.
    #[serde(default = "crate::support::format::v1")]
    pub format: u32,
    pub run: String,
    pub harness_commit: String,
    pub fingerprint: String,
    pub failed: usize,
    pub excluded_infra: usize,
    pub clusters: Vec<Cluster>,
    /// Held-in tasks that passed at least one trial: behaviour to preserve.
    pub passing_tasks: Vec<String>,
    pub attempts: Vec<Attempt>,
    /// Every failed held-in trial with its signature (the clusters group these).
    #[serde(default)]
    pub failed_trials: Vec<FailedTrial>,
    /// What re-diagnosing the failures with the model spent.
    #[serde(default, skip_serializing_if = "crate::eval::Overhead::is_empty")]
    pub diagnosis: crate::eval::Overhead,
}

/// `mine/bundle.json` of a run ref.
impl crate::support::format::Versioned for Bundle {
    const RECORD: &'static str = "mined bundle";
    const FORMAT: u32 = 1;
    fn format(&self) -> u32 {
        self.format
    }
}

impl Bundle {
    pub fn cluster(&self, sel: &str) -> Option<&Cluster> {
        match sel.parse::<usize>() {
            Ok(rank) => self.clusters.iter().find(|c| c.rank == rank),
            Err(_) => self.clusters.iter().find(|c| c.id == sel),
        }
    }
}

/// Mine the held-in failures of a run. `held_in` is the split's task list: results of any
/// other task are ignored even if the run holds them.
pub fn mine_run(
    repo: &Repository,
    state_dir: &Path,
    run_id: &str,
    held_in: &[String],
) -> Result<Bundle> {
    let (record, results) = read_run(repo, run_id)?;
    let held: Vec<&TrialResult> = results
        .iter()
        .filter(|r| r.split == "held_in" && held_in.contains(&r.task))
        .collect();
    let mut failed = Vec::new();
    let mut excluded_infra = 0;
    let mut passing: Vec<String> = Vec::new();
    for r in &held {
        match r.outcome {
            Outcome::InfraError => excluded_infra += 1,
            Outcome::Pass => {
                if !passing.contains(&r.task) {
                    passing.push(r.task.clone());
                }
            }
            Outcome::Fail => {
                let trace = read_trace(repo, state_dir, run_id, r)?
                    .and_then(|b| serde_json::from_slice::<Trace>(&b).ok());
                let (signature, symptoms) = extract(r, trace.as_ref());
                failed.push(FailedTrial {
                    task: r.task.clone(),
                    trial: r.trial,
                    signature,
                    symptoms,
                    verifier_excerpt: excerpt(&r.verifier.output_tail, 4),
                    trace_excerpt: trace.as_ref().map(trace_excerpt).unwrap_or_default(),
                    diagnosed_by: "deterministic".into(),
                });
            }
        }
    }
    passing.sort();
    let clusters = cluster(failed.clone());
    Ok(Bundle {
        format: <Bundle as crate::support::format::Versioned>::FORMAT,
        run: run_id.to_string(),
        harness_commit: record.meta.harness_commit.clone(),
        fingerprint: record.meta.fingerprint.clone(),
        failed: failed.len(),
        excluded_infra,
        clusters,
        passing_tasks: passing,
        attempts: attempts(repo)?,
        failed_trials: failed,
        diagnosis: Default::default(),
    })
}

/// Group by exact signature; order by causal status, then support.
pub fn cluster(failed: Vec<FailedTrial>) -> Vec<Cluster> {
    let mut groups: BTreeMap<Signature, Vec<FailedTrial>> = BTreeMap::new();
    for f in failed {
        groups.entry(f.signature.clone()).or_default().push(f);
    }
    let mut clusters: Vec<Cluster> = groups
        .into_iter()
        .map(|(sig, mut members)| {
            members.sort_by(|a, b| (&a.task, a.trial).cmp(&(&b.task, b.trial)));
            let mut tasks: Vec<String> = members.iter().map(|m| m.task.clone()).collect();
            tasks.dedup();
            let trials = members.iter().map(|m| m.id()).collect();
            // Representatives: one trial per task first, so the evidence spans tasks.
            let mut reps: Vec<FailedTrial> = Vec::new();
            for m in &members {
                if reps.len() < 3 && !reps.iter().any(|r| r.task == m.task) {
                    reps.push(m.clone());
                }
            }
            let mechanism = MECHANISMS
                .iter()
                .find(|(k, _)| *k == sig.agent_mechanism)
                .map(|(_, d)| d.to_string())
                .unwrap_or_else(|| sig.agent_mechanism.replace('_', " "));
            Cluster {
                rank: 0,
                id: sig.id(),
                symptoms: shared_symptoms(&members),
                size: members.len(),
                tasks,
                trials,
                representatives: reps,
                mechanism,
                signature: sig,
            }
        })
        .collect();
    clusters.sort_by(|a, b| {
        (a.signature.causal_status, std::cmp::Reverse(a.size), &a.id).cmp(&(
            b.signature.causal_status,
            std::cmp::Reverse(b.size),
            &b.id,
        ))
    });
    for (i, c) in clusters.iter_mut().enumerate() {
        c.rank = i + 1;
    }
    clusters
}

fn shared_symptoms(members: &[FailedTrial]) -> Vec<String> {
    let n = members.len();
    let mut out = Vec::new();
    let mut endings: BTreeMap<&str, usize> = BTreeMap::new();
    for m in members {
        *endings.entry(m.symptoms.ending.as_str()).or_default() += 1;
    }
    for (e, k) in endings {
        out.push(format!("ended by {e} in {k}/{n}"));
    }
    let no_writes = members.iter().filter(|m| m.symptoms.writes == 0).count();
    if no_writes > 0 {
        out.push(format!("no file written in {no_writes}/{n}"));
    }
    let repeats = members
        .iter()
        .filter(|m| m.symptoms.max_repeat >= 3)
        .count();
    if repeats > 0 {
        out.push(format!(
            "an identical call repeated 3+ times in a row in {repeats}/{n}"
        ));
    }
    let unverified = members
        .iter()
        .filter(|m| m.symptoms.writes > 0 && !m.symptoms.verified_after_last_change)
        .count();
    if unverified > 0 {
        out.push(format!(
            "no check after the last change in {unverified}/{n}"
        ));
    }
    out
}

fn excerpt(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = v.len().saturating_sub(lines);
    v[start..]
        .iter()
        .map(|l| truncate(l, 160))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// Short lines: each tool call with its exit code, clipped; repeated runs are folded.
fn trace_excerpt(t: &Trace) -> Vec<String> {
    let mut lines: Vec<(String, u32)> = Vec::new();
    for c in t.tool_calls() {
        let what = match &c.command {
            Some(cmd) => format!("$ {}", truncate(cmd, 100)),
            None => match &c.path {
                Some(p) => format!("{} {p}", c.tool),
                None => c.tool.clone(),
            },
        };
        let status = if c.blocked {
            " [blocked]".to_string()
        } else {
            match c.exit_code {
                Some(e) => format!(" -> {e}"),
                // Traces imported from ATIF carry no exit codes: no status, not a kill.
                None if c.ok && !c.timed_out => String::new(),
                None => " -> killed".into(),
            }
        };
        let line = format!("{what}{status}");
        match lines.last_mut() {
            Some((l, n)) if *l == line => *n += 1,
            _ => lines.push((line, 1)),
        }
    }
    let mut out: Vec<String> = lines
        .into_iter()
        .map(|(l, n)| if n > 1 { format!("{l}  (x{n})") } else { l })
        .collect();
    if out.len() > 12 {
        let tail = out.split_off(out.len() - 6);
        out.truncate(6);
        out.push("…".into());
        out.extend(tail);
    }
    out.push(format!("ended: {}", t.ending.reason()));
    out
}

/// Every earlier attempted edit: promotions from merge trailers, rejected proposals from their
/// refs and validation records (aggregate deltas only), and open proposals.
pub fn attempts(repo: &Repository) -> Result<Vec<Attempt>> {
    let mut out = Vec::new();
    if let Ok(versions) = lineage::history::versions(repo, None) {
        for v in versions.iter().filter(|v| v.proposal.is_some()) {
            out.push(Attempt {
                name: v.proposal.clone().unwrap_or_default(),
                state: "accepted".into(),
                subject: v.subject.clone(),
                surface: v.surface.clone(),
                cluster: v.cluster.clone(),
                held_in: v.message.get(keys::HELD_IN).map(str::to_string),
                validation: v.message.get(keys::VALIDATION).map(str::to_string),
            });
        }
    }
    // Promoted proposals are listed above as the versions they made.
    for p in lineage::list_proposals(repo)?
        .into_iter()
        .filter(|p| p.state != ProposalState::Promoted)
    {
        let note = lineage::read_note(repo, p.commit)?;
        let rec = note.validations.last();
        out.push(Attempt {
            name: p.name(),
            state: p.state.as_str().into(),
            subject: p.message.subject.clone(),
            surface: p.message.get(keys::SURFACE).map(str::to_string),
            cluster: p.message.get(keys::CLUSTER).map(str::to_string),
            held_in: rec.map(|r| r.held_in.describe()),
            validation: rec.map(|r| r.validation.describe()),
        });
    }
    Ok(out)
}
