//! Why a promotion happened: the proposal it merged (rationale, cluster, evidence), what the
//! proposer expected, what the gate measured (per-task flips on held_in and validation), the
//! rule it applied and what the validation cost.

use git2::Oid;
use serde::Serialize;

use super::data::{Gated, RunCache, gated, record_for};
use crate::error::{Error, GitContext, Result};
use crate::lineage::trailers::CommitMessage;
use crate::lineage::{self, keys, read_note};
use crate::workspace::Workspace;

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// Index on main's first-parent history (`v<index>`).
    pub version: usize,
    pub merge: String,
    pub short: String,
    pub subject: String,
    pub date: String,
    /// The version it was merged onto.
    pub parent: String,
    pub proposal_ref: String,
    pub proposal_commit: String,
    pub proposal_subject: String,
    /// The proposal's prose before its evidence section.
    pub rationale: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_effect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regression_risk: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub surface: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposer: Option<String>,
    /// The merge's `Harness-Verdict`.
    pub verdict: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overridden: Option<String>,
    /// The validation record the promotion relied on (absent for overrides without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gated: Option<Gated>,
}

/// Explain the promotion `rev` names: a merge on main, `v<N>`, the promoted proposal
/// (`<round>/<slug>`, its branch name or commit).
pub fn explain(ws: &Workspace, rev: &str) -> Result<Explanation> {
    let repo = &ws.repo;
    let chain = lineage::first_parent_chain(repo)?;
    // A version label picks the chain position; any other name (a promoted proposal, a run,
    // a hash) resolves to a commit that is the merge, its candidate, or one of the proposals a
    // merged candidate combined.
    let by_label = rev
        .strip_prefix('v')
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|i| *i < chain.len());
    let resolved: Option<Oid> = match by_label {
        Some(_) => None,
        None => lineage::resolve_commit(repo, rev).ok().map(|c| c.id()),
    };
    let name = rev
        .trim_start_matches("refs/heads/")
        .trim_start_matches("harness/proposals/");
    let found = chain.iter().enumerate().find(|(i, c)| {
        if Some(*i) == by_label || Some(c.id()) == resolved {
            return true;
        }
        let msg = CommitMessage::parse(c.message().unwrap_or_default()).unwrap_or_default();
        let proposal = msg.get(keys::PROPOSAL).unwrap_or_default();
        if c.parent_count() != 2 || proposal.is_empty() {
            return false;
        }
        // Promotions made before promoted branches were kept name their proposal only here.
        if proposal == rev || proposal.trim_start_matches("harness/proposals/") == name {
            return true;
        }
        let Some(target) = resolved else {
            return false;
        };
        let Ok(candidate) = c.parent(1) else {
            return false;
        };
        candidate.id() == target || candidate.parent_ids().skip(1).any(|p| p == target)
    });
    let Some((index, merge)) = found else {
        return Err(Error::usage_hint(
            format!(
                "`{rev}` names no promotion on {}",
                lineage::main_branch(repo)
            ),
            "give a promotion merge, its version (`v3`) or the promoted proposal (`<round>/<slug>`); `git harness log` lists them",
        ));
    };
    let msg = CommitMessage::parse(merge.message().unwrap_or_default())?;
    let Some(proposal_ref) = msg
        .get(keys::PROPOSAL)
        .filter(|_| merge.parent_count() == 2)
    else {
        return Err(Error::usage_hint(
            format!(
                "v{index} ({}) is not a promotion: {}",
                lineage::short(merge.id()),
                msg.subject
            ),
            "`git harness why` explains promotion merges; `git harness log` lists them",
        ));
    };
    let candidate = merge.parent(1).git("read the promoted proposal")?;
    let parent = merge.parent(0).git("read the merge's first parent")?;
    let pmsg = CommitMessage::parse(candidate.message().unwrap_or_default())?;
    let (rationale, expected_effect, regression_risk) = sections(&pmsg.body);
    let fixed = ws.fixed_on_main().ok();
    let fp = fixed.as_ref().and_then(|f| ws.fingerprint(f).ok());
    let note = read_note(repo, candidate.id())?;
    let record = record_for(
        &note,
        candidate.tree_id(),
        Some(parent.tree_id()),
        fp.as_deref(),
    )
    .or_else(|| record_for(&note, candidate.tree_id(), Some(parent.tree_id()), None));
    let mut cache = RunCache::default();
    Ok(Explanation {
        version: index,
        merge: merge.id().to_string(),
        short: lineage::short(merge.id()),
        subject: msg.subject.clone(),
        date: chrono::DateTime::from_timestamp(merge.time().seconds(), 0)
            .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default(),
        parent: parent.id().to_string(),
        proposal_ref: proposal_ref.to_string(),
        proposal_commit: candidate.id().to_string(),
        proposal_subject: pmsg.subject.clone(),
        rationale,
        expected_effect,
        regression_risk,
        surface: pmsg.get(keys::SURFACE).map(str::to_string),
        cluster: pmsg.get(keys::CLUSTER).map(str::to_string),
        evidence: pmsg.get(keys::EVIDENCE).map(str::to_string),
        round: pmsg.get(keys::ROUND).map(str::to_string),
        proposer: pmsg.get(keys::PROPOSER).map(str::to_string),
        verdict: msg.get(keys::VERDICT).unwrap_or("none").to_string(),
        overridden: msg.get(keys::OVERRIDE).map(str::to_string),
        gated: record.map(|r| gated(repo, &mut cache, &r)),
    })
}

/// (rationale, expected effect, regression risk) from a proposal body: the rationale is the
/// prose before the `Evidence` section; the other two are the paragraphs so labelled.
pub fn sections(body: &str) -> (String, Option<String>, Option<String>) {
    let paras: Vec<&str> = body.split("\n\n").map(str::trim).collect();
    let labelled = |label: &str| {
        paras.iter().find_map(|p| {
            p.strip_prefix(label).map(|rest| {
                rest.trim_start_matches(':')
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        })
    };
    let rationale: Vec<&str> = paras
        .iter()
        .take_while(|p| !p.starts_with("Evidence"))
        .filter(|p| !p.starts_with("Expected effect") && !p.starts_with("Regression risk"))
        .copied()
        .collect();
    (
        rationale.join("\n\n"),
        labelled("Expected effect"),
        labelled("Regression risk"),
    )
}

/// The gate rule in words.
pub fn rule_text(gate: &str, alpha: Option<f64>) -> String {
    match gate {
        "paper" => "paper: accept iff Δheld_in ≥ 0 and Δvalidation ≥ 0 and at least one is > 0 (pass counts over trials, against the parent)".into(),
        "strict" => format!(
            "strict: the paper rule (Δheld_in ≥ 0, Δvalidation ≥ 0, one > 0), plus a one-sided paired sign-flip test over the tasks of held_in ∪ validation with p ≤ the look's alpha{}, plus no task broken (a regression significant against the parent's per-task evidence, family-wise at broke_alpha); with max_trials, looks at more trials with alpha spent over them; indecisive when infrastructure errors leave too little coverage",
            alpha.map(|a| format!(" = {a}")).unwrap_or_default()
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_of_a_catalog_body() {
        let body = "Failed trials submitted early.\n\nEvidence\n- cluster x\n\nExpected effect: The agent\ninspects its output.\n\nRegression risk: Low.\n\nDistinct from the others";
        let (r, e, k) = sections(body);
        assert_eq!(r, "Failed trials submitted early.");
        assert_eq!(e.as_deref(), Some("The agent inspects its output."));
        assert_eq!(k.as_deref(), Some("Low."));
    }
}
