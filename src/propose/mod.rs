//! Proposals: K distinct, minimal, bounded edits to declared surfaces, from the experiment's own
//! model or from the offline catalog, each checked and then committed as an evidence branch.
//! The proposer sees held-in evidence only.

pub mod catalog;
pub mod check;
pub mod model;

use git2::Repository;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::harness::Harness;
use crate::lineage::trailers::CommitMessage;
use crate::lineage::{self, Proposal, keys};
use crate::mine::{Bundle, Cluster, truncate};

/// One proposed edit: the new content of exactly one surface file, with its audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub title: String,
    pub slug: String,
    /// The target cluster's id.
    pub cluster: String,
    pub surface: String,
    pub content: String,
    pub rationale: String,
    pub expected_effect: String,
    pub regression_risk: String,
    pub why_distinct: String,
    /// `catalog` or `model:<name>`.
    pub proposer: String,
}

/// A candidate that did not become a branch, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    pub title: String,
    pub surface: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct ProposeOutcome {
    pub round: u32,
    pub created: Vec<Proposal>,
    pub refused: Vec<Refusal>,
    pub declined: Vec<String>,
}

/// Candidates from the catalog: for the top clusters (or the chosen one), the first remedy of
/// each cluster's mechanism that passes the checks, one per cluster, at most `k`.
pub fn catalog_candidates(
    harness: &Harness,
    bundle: &Bundle,
    k: usize,
    only: Option<&Cluster>,
    mut accept: impl FnMut(&Candidate) -> Option<String>,
) -> Result<(Vec<Candidate>, Vec<Refusal>)> {
    let remedies = catalog::load()?;
    let clusters: Vec<&Cluster> = match only {
        Some(c) => vec![c],
        None => bundle.clusters.iter().collect(),
    };
    let mut chosen: Vec<Candidate> = Vec::new();
    let mut refused = Vec::new();
    let mut used_surfaces: Vec<String> = Vec::new();
    'clusters: for c in clusters {
        if chosen.len() >= k {
            break;
        }
        // Materially distinct: one proposal per mechanism, each on its own surface file.
        if chosen
            .iter()
            .any(|p| p.cluster.ends_with(&c.signature.agent_mechanism))
        {
            continue;
        }
        for r in remedies
            .iter()
            .filter(|r| r.mechanism == c.signature.agent_mechanism)
        {
            let cand = r.candidate(harness, c);
            if used_surfaces.contains(&cand.surface) {
                continue;
            }
            match accept(&cand) {
                None => {
                    used_surfaces.push(cand.surface.clone());
                    chosen.push(cand);
                    continue 'clusters;
                }
                Some(reason) => refused.push(Refusal {
                    title: cand.title.clone(),
                    surface: Some(cand.surface.clone()),
                    reason,
                }),
            }
        }
    }
    Ok((chosen, refused))
}

/// The commit message of a proposal: subject, rationale, Evidence, expected effect, regression
/// risk, and the trailers of design.md §3. Held-in evidence only.
pub fn message(
    c: &Candidate,
    cluster: Option<&Cluster>,
    bundle: &Bundle,
    parent: git2::Oid,
    round: u32,
) -> CommitMessage {
    let mut body = String::new();
    body.push_str(&wrap(&c.rationale));
    body.push_str("\n\nEvidence\n");
    let run_ref = format!("{}{}", lineage::RUNS_PREFIX, bundle.run);
    let mut trials = Vec::new();
    if let Some(cl) = cluster {
        body.push_str(&format!(
            "- cluster {} ({} failed held-in trials in {} tasks): {}\n",
            cl.id,
            cl.size,
            cl.tasks.len(),
            cl.mechanism
        ));
        body.push_str(&format!("- trials: {}\n", cl.trials.join(", ")));
        for s in &cl.symptoms {
            body.push_str(&format!("- {s}\n"));
        }
        for r in &cl.representatives {
            body.push_str(&format!("- {}:\n", r.id()));
            for l in r.verifier_excerpt.lines().take(3) {
                body.push_str(&format!("    verifier | {}\n", truncate(l, 120)));
            }
            for l in r.trace_excerpt.iter().take(6) {
                body.push_str(&format!("    trace    | {}\n", truncate(l, 120)));
            }
        }
        trials = cl.trials.iter().take(8).cloned().collect();
    }
    body.push_str(&format!(
        "\nExpected effect: {}\n",
        c.expected_effect.trim()
    ));
    body.push_str(&format!(
        "\nRegression risk: {}\n",
        c.regression_risk.trim()
    ));
    if !c.why_distinct.trim().is_empty() {
        body.push_str(&format!(
            "\nDistinct from the other proposals of this round: {}\n",
            c.why_distinct.trim()
        ));
    }
    CommitMessage::new(c.title.clone())
        .body(body)
        .trailer(keys::SURFACE, &c.surface)
        .trailer(keys::CLUSTER, &c.cluster)
        .trailer(keys::EVIDENCE, format!("{run_ref} {}", trials.join(" ")))
        .trailer(keys::PARENT, parent.to_string())
        .trailer(
            keys::PROPOSER,
            format!("{} (experiment {})", c.proposer, bundle.fingerprint),
        )
        .trailer(keys::ROUND, round.to_string())
}

fn wrap(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for w in text.split_whitespace() {
        if !line.is_empty() && line.len() + w.len() + 1 > 76 {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    out.push_str(&line);
    out
}

/// Branch every candidate on `parent` as `harness/proposals/<round>/<slug>`.
pub fn branch_all(
    repo: &Repository,
    parent: &git2::Commit<'_>,
    round: u32,
    bundle: &Bundle,
    candidates: &[Candidate],
) -> Result<Vec<Proposal>> {
    let mut out = Vec::new();
    for c in candidates {
        let cluster = bundle.clusters.iter().find(|cl| cl.id == c.cluster);
        let msg = message(c, cluster, bundle, parent.id(), round);
        let p = lineage::create_proposal(
            repo,
            parent,
            round,
            &c.slug,
            &[(c.surface.clone(), Some(c.content.clone()))],
            &msg,
        )?;
        out.push(p);
    }
    Ok(out)
}
