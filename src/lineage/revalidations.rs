//! Revalidation records `refs/harness/revalidations/<id>`: one commit per revalidated
//! promotion, its tree holding `revalidation.json`, its parent the promotion commit (a fetch of
//! the ref brings the promotion along). A new ref per record: no existing ref or note changes.

use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};

use super::{REVALIDATIONS_PREFIX, Store, create_ref, signature};
use crate::error::{Error, GitContext, Result};
use crate::support::format::{self, Versioned};

/// The file of a revalidation record's tree.
pub const REVALIDATION_FILE: &str = "revalidation.json";

/// What `revalidate` says of a promotion (docs/gate.md, "Drift watch").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Drift {
    /// The fresh gain is significant and at least the design's minimum detectable effect.
    Holds,
    /// The fresh interval covers 0, or the fresh gain is below the minimum detectable effect.
    Vanished,
    /// The fresh interval lies below 0: a significant regression.
    Reversed,
    /// Too few trials free of infrastructure errors to say.
    Indecisive,
}

impl Drift {
    pub fn as_str(self) -> &'static str {
        match self {
            Drift::Holds => "holds",
            Drift::Vanished => "vanished",
            Drift::Reversed => "reversed",
            Drift::Indecisive => "indecisive",
        }
    }
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The promotion as recorded when it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OriginalGain {
    /// The verdict of the validation record it was promoted on (`Harness-Verdict`), absent for
    /// a promotion forced without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// Pooled pass rate over held_in ∪ validation, candidate − parent, in points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gain_points: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// `Harness-Override`: the reason a promotion was forced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overridden: Option<String>,
}

/// The fresh comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FreshGain {
    /// The gate's verdict on the fresh trials.
    pub gate_verdict: crate::gate::Verdict,
    pub gain_points: f64,
    /// The two-sided interval of the gain at `confidence`, in points.
    pub low_points: f64,
    pub high_points: f64,
    /// `1 − 2·alpha`: each bound is a one-sided test at the gate's alpha.
    pub confidence: f64,
    /// The design's minimum detectable effect on the fresh parent's rates (80% power).
    pub mde_points: f64,
    pub p_value: f64,
    /// Trials per task at the last look.
    pub trials: u32,
    /// Tasks whose regression is significant (held_in names; validation as a count).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub broke_held_in: Vec<String>,
    #[serde(default)]
    pub broke_validation: u32,
}

/// One revalidation of one promotion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevalidationRecord {
    /// The record's format version (docs/formats.md).
    #[serde(default = "crate::support::format::v1")]
    pub format: u32,
    /// The promotion merge on main and its first parent (what it was compared with).
    pub promotion: String,
    pub promotion_tree: String,
    pub parent: String,
    pub parent_tree: String,
    /// `Harness-Proposal` of the promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<String>,
    /// The committed experiment's fingerprint and the fresh one the trials ran under (the
    /// committed experiment with `seed`).
    pub experiment_fingerprint: String,
    pub fingerprint: String,
    /// The seed namespace of the fresh trials: `revalidate --seed` with it reruns them (from
    /// the cache).
    pub seed: u64,
    pub gate: String,
    pub statistic: String,
    pub original: OriginalGain,
    pub fresh: FreshGain,
    pub verdict: Drift,
    pub reason: String,
    /// The parent's run, then the promotion's run per look.
    pub runs: Vec<String>,
    pub trials_executed: usize,
    pub cost_usd: f64,
    pub created_at: String,
}

impl Versioned for RevalidationRecord {
    const RECORD: &'static str = "revalidation record";
    const FORMAT: u32 = 1;
    fn format(&self) -> u32 {
        self.format
    }
}

/// Store `record` under a new ref `refs/harness/revalidations/<id>`; returns the ref's name.
pub fn write_revalidation(
    repo: &Repository,
    id: &str,
    record: &RevalidationRecord,
) -> Result<String> {
    let promotion = Oid::from_str(&record.promotion)
        .map_err(|e| Error::Internal(format!("revalidation of a bad oid: {e}")))?;
    let promotion = repo.find_commit(promotion).git("read promotion commit")?;
    let json = serde_json::to_vec_pretty(record)
        .map_err(|e| Error::Internal(format!("serialize revalidation: {e}")))?;
    let blob = repo.store_blob(&json).git("write revalidation record")?;
    let mut tb = repo.treebuilder(None).git("start tree")?;
    tb.insert(REVALIDATION_FILE, blob, git2::FileMode::Blob.into())
        .git("build revalidation tree")?;
    let tree = repo
        .find_tree(tb.write().git("write revalidation tree")?)
        .git("read revalidation tree")?;
    let sig = signature(repo)?;
    let message = format!(
        "Revalidation of {}: {}\n\n{}\n",
        &record.promotion[..record.promotion.len().min(10)],
        record.verdict,
        record.reason
    );
    let commit = repo
        .store_commit(None, &sig, &sig, &message, &tree, &[&promotion])
        .git("write revalidation commit")?;
    let name = format!("{REVALIDATIONS_PREFIX}{id}");
    create_ref(repo, &name, commit, "git-harness: revalidation")?;
    Ok(name)
}

/// Every revalidation record with its ref name, newest first.
pub fn list_revalidations(repo: &Repository) -> Result<Vec<(String, RevalidationRecord)>> {
    let mut out = Vec::new();
    for r in repo
        .references_glob(&format!("{REVALIDATIONS_PREFIX}*"))
        .git("list revalidations")?
    {
        let r = r.git("read revalidation ref")?;
        let Ok(name) = r.name() else { continue };
        let name = name.to_string();
        let tree = r.peel_to_tree().git(format!("read {name}"))?;
        let entry = tree
            .get_name(REVALIDATION_FILE)
            .ok_or_else(|| Error::Internal(format!("{name} has no {REVALIDATION_FILE}")))?;
        let blob = repo.find_blob(entry.id()).git("read revalidation record")?;
        let record: RevalidationRecord = serde_json::from_slice(blob.content())
            .map_err(|e| Error::Internal(format!("{name}: unreadable {REVALIDATION_FILE}: {e}")))?;
        format::check(&record, &name)?;
        out.push((name, record));
    }
    out.sort_by(|a, b| b.1.created_at.cmp(&a.1.created_at).then(b.0.cmp(&a.0)));
    Ok(out)
}
