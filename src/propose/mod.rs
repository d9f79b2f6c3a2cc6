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
    /// What the proposer's model calls spent (also logged with its prompts).
    pub spent: crate::eval::Overhead,
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
/// risk, and the trailers of docs/formats.md. Held-in evidence only.
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

/// Options of one proposal round.
pub struct RoundOptions<'a> {
    pub k: usize,
    pub proposer: crate::experiment::ProposerKind,
    /// Only this cluster (rank or id).
    pub cluster: Option<String>,
    /// The proposer model (required for `model`).
    pub model: Option<&'a dyn crate::model::Model>,
    pub decoding: crate::model::Decoding,
    /// Every task id of every split: edits must mention none.
    pub task_names: Vec<String>,
    /// Prices of the proposer's tokens.
    pub prices: crate::experiment::Prices,
}

/// One round: K candidates on main from the bundle, each checked, the valid ones branched.
pub async fn propose_round(
    repo: &Repository,
    bundle: &Bundle,
    opts: &RoundOptions<'_>,
) -> Result<ProposeOutcome> {
    let main = lineage::main_commit(repo)?;
    if bundle.harness_commit != main.id().to_string() {
        return Err(crate::Error::usage_hint(
            format!(
                "the bundle was mined from {}, but main is {}",
                &bundle.harness_commit[..10],
                lineage::short(main.id())
            ),
            "mine main again (`git harness mine`) before proposing",
        ));
    }
    let harness = Harness::from_commit(repo, &main)?;
    let round = lineage::next_round(repo)?;
    let earlier = check::earlier_contents(repo)?;
    let only = match &opts.cluster {
        Some(sel) => Some(bundle.cluster(sel).ok_or_else(|| {
            crate::Error::usage_hint(
                format!("no cluster `{sel}` in the bundle"),
                "list clusters with `git harness mine`",
            )
        })?),
        None => None,
    };
    let mut refused = Vec::new();
    let mut declined = Vec::new();
    let mut spent = crate::eval::Overhead::default();
    let candidates = match opts.proposer {
        crate::experiment::ProposerKind::Catalog => {
            let (c, r) = catalog_candidates(&harness, bundle, opts.k, only, |c| {
                check::check(&harness, c, &earlier, &opts.task_names)
            })?;
            refused.extend(r);
            c
        }
        crate::experiment::ProposerKind::Model => {
            let model = opts.model.ok_or_else(|| {
                crate::Error::usage_hint(
                    "the model proposer needs a model",
                    "use --proposer catalog offline",
                )
            })?;
            let mut chosen: Vec<Candidate> = Vec::new();
            let mut log: Vec<(String, Vec<u8>)> = Vec::new();
            let focus = only.map(|c| Bundle {
                clusters: vec![c.clone()],
                ..bundle.clone()
            });
            let b = focus.as_ref().unwrap_or(bundle);
            for slot in 1..=opts.k {
                let prompt = model::prompt(&harness, b, opts.k, slot, &chosen)?;
                let (answer, usage) = model::ask(model, &prompt, opts.decoding.clone()).await?;
                spent += crate::eval::Overhead {
                    requests: 1,
                    unanswered: 0,
                    usage,
                    cost_usd: opts.prices.cost(&usage),
                };
                log.push((
                    format!("round-{round}/slot-{slot}.prompt.md"),
                    prompt.into_bytes(),
                ));
                log.push((
                    format!("round-{round}/slot-{slot}.answer.txt"),
                    answer.clone().into_bytes(),
                ));
                match model::parse(&answer, &model.name()) {
                    model::SlotAnswer::Decline(reason) => declined.push(reason),
                    model::SlotAnswer::Malformed(r) => refused.push(r),
                    model::SlotAnswer::Candidate(mut c) => {
                        if c.slug.is_empty() {
                            c.slug = format!("slot-{slot}");
                        }
                        let reason = check::check(&harness, &c, &earlier, &opts.task_names)
                            .or_else(|| {
                                if chosen
                                    .iter()
                                    .any(|p| p.content == c.content && p.surface == c.surface)
                                {
                                    Some("identical to another proposal of this round".into())
                                } else if chosen.iter().any(|p| p.slug == c.slug) {
                                    Some(format!("duplicate slug `{}` in this round", c.slug))
                                } else if !b.clusters.iter().any(|cl| cl.id == c.cluster) {
                                    Some(format!(
                                        "targets `{}`, which is not a cluster of the bundle",
                                        c.cluster
                                    ))
                                } else {
                                    None
                                }
                            });
                        match reason {
                            None => chosen.push(c),
                            Some(reason) => refused.push(Refusal {
                                title: c.title.clone(),
                                surface: Some(c.surface.clone()),
                                reason,
                            }),
                        }
                    }
                }
            }
            log.push((
                format!("round-{round}/{}", crate::eval::SPEND_FILE),
                crate::support::yaml::to_string(&spent).into_bytes(),
            ));
            lineage::append_log(
                repo,
                lineage::PROPOSER_LOG_REF,
                &log,
                &format!("Proposer prompts of round {round}\n"),
            )?;
            chosen
        }
    };
    let created = branch_all(repo, &main, round, bundle, &candidates)?;
    Ok(ProposeOutcome {
        round,
        created,
        refused,
        declined,
        spent,
    })
}
