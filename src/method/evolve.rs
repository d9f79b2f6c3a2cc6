//! The loop: evaluate main, mine, propose K, validate each, promote what the gate accepts
//! (re-gating the merge of several accepted edits), round after round. Every phase leaves refs,
//! so a re-run after a crash resumes without paying twice (trials come from the cache).

use crate::error::Result;
use crate::eval::run::EvalContext;
use crate::eval::schedule::Observer;
use crate::lineage;
use crate::workspace::Workspace;

use super::mine_rev;
use crate::experiment::{GateRule, ProposerKind};
use crate::gate::Verdict;
use crate::lineage::trailers::CommitMessage;
use crate::lineage::{Proposal, ProposalState, keys};
use crate::method::validate::{Validation, existing, validate};
use crate::model::{Decoding, Model};
use crate::propose::{RoundOptions, propose_round};

pub struct EvolveOptions<'a> {
    pub rounds: u32,
    pub k: usize,
    pub proposer: ProposerKind,
    pub rule: Option<GateRule>,
    /// Stop once this many trials were executed (cached ones are free).
    pub budget_trials: Option<u64>,
    pub budget_usd: Option<f64>,
    /// Stop after this many rounds in a row without a promotion.
    pub patience: u32,
    pub model: Option<&'a dyn Model>,
    pub decoding: Decoding,
}

#[derive(Debug, Clone)]
pub struct RoundReport {
    pub round: u32,
    pub proposals: Vec<(String, Verdict, f64)>,
    pub promoted: Option<(String, git2::Oid)>,
    pub note: String,
}

#[derive(Debug, Clone)]
pub struct EvolveOutcome {
    pub rounds: Vec<RoundReport>,
    pub stopped: String,
    pub trials_executed: u64,
    pub cost_usd: f64,
}

/// Run the loop. `log` receives one line per phase.
pub async fn evolve(
    ws: &Workspace,
    ctx: &EvalContext,
    opts: &EvolveOptions<'_>,
    observer: &mut dyn Observer,
    log: &mut dyn FnMut(String),
) -> Result<EvolveOutcome> {
    let repo = &ws.repo;
    let rule = opts.rule.unwrap_or(ctx.fixed.experiment.gate.rule);
    let mut reports = Vec::new();
    let mut executed: u64 = 0;
    let mut cost = 0.0;
    let mut dry = 0;
    let mut stopped = format!("{} rounds done", opts.rounds);
    let mut names = ctx.fixed.splits.held_in.clone();
    names.extend(ctx.fixed.splits.validation.iter().cloned());
    names.extend(ctx.fixed.splits.test.iter().cloned());

    for _ in 0..opts.rounds {
        if let Some(b) = opts.budget_trials
            && executed >= b
        {
            stopped = format!("trial budget spent ({executed} >= {b})");
            break;
        }
        if let Some(b) = opts.budget_usd
            && cost >= b
        {
            stopped = format!("cost budget spent (${cost:.4} >= ${b})");
            break;
        }
        let main = lineage::main_commit(repo)?;
        // Resume: open proposals on the current main are this round's, already paid for.
        let open: Vec<Proposal> = lineage::list_proposals(repo)?
            .into_iter()
            .filter(|p| {
                p.state == ProposalState::Open && p.parent == Some(main.id()) && p.slug != "merged"
            })
            .collect();
        let (round, proposals) = if !open.is_empty() {
            log(format!(
                "round {}: resuming {} open proposal(s) on main",
                open[0].round,
                open.len()
            ));
            (open[0].round, open)
        } else {
            log(format!(
                "round {}: evaluating main {} on held_in and mining",
                lineage::next_round(repo)?,
                lineage::short(main.id())
            ));
            let bundle = mine_rev(ws, ctx, &main.id().to_string(), observer).await?;
            if bundle.clusters.is_empty() {
                stopped = "no failure left to mine on held_in".into();
                break;
            }
            let ro = RoundOptions {
                k: opts.k,
                proposer: opts.proposer,
                cluster: None,
                model: opts.model,
                decoding: opts.decoding.clone(),
                task_names: names.clone(),
                prices: ctx.fixed.experiment.prices.clone(),
            };
            let out = propose_round(repo, &bundle, &ro).await?;
            // Mining's diagnosis and the proposer's calls are spent like trials.
            cost += bundle.diagnosis.cost_usd + out.spent.cost_usd;
            for r in &out.refused {
                log(format!("  refused: {} — {}", r.title, r.reason));
            }
            log(format!(
                "round {}: {} proposal(s)",
                out.round,
                out.created.len()
            ));
            (out.round, out.created)
        };
        let mut report = RoundReport {
            round,
            proposals: Vec::new(),
            promoted: None,
            note: String::new(),
        };
        if proposals.is_empty() {
            dry += 1;
            report.note = "no valid proposal".into();
            reports.push(report);
            if dry >= opts.patience {
                stopped = format!("{dry} round(s) without an accepted edit");
                break;
            }
            continue;
        }
        let mut accepted: Vec<Validation> = Vec::new();
        for p in &proposals {
            let v = match existing(ws, ctx, p, rule)? {
                Some(v) => v,
                None => validate(ws, ctx, p, Some(rule), observer).await?,
            };
            executed += v.trials_executed as u64;
            cost += v.cost_usd;
            if v.decision.verdict == Verdict::Indecisive && v.decision.coverage.kept == 0 {
                // Undecided for want of a single clean pair: the evidence is all infrastructure
                // errors, and going on would only spend more.
                return Err(crate::Error::Infra {
                    class: crate::InfraClass::Other,
                    message: format!(
                        "no evidence: every trial pair of the validation of {} hit an infrastructure error",
                        p.name()
                    ),
                    hint: Some(
                        "the first error of each class is shown above with the setting to check; fix it and re-run (finished trials come from the cache)"
                            .into(),
                    ),
                });
            }
            log(format!(
                "  {} {}: held_in {:+}, validation {:+}, p={:.4}{}",
                p.name(),
                v.decision.verdict,
                v.decision.held_in.delta,
                v.decision.validation.delta,
                v.decision.statistic.p_value,
                v.decision
                    .early_stopped
                    .as_ref()
                    .map(|e| format!(
                        " (stopped after {}/{} trials)",
                        e.trials_run, e.trials_total
                    ))
                    .unwrap_or_default()
            ));
            report
                .proposals
                .push((p.name(), v.decision.verdict, v.record.margin));
            if v.decision.verdict == Verdict::Accept {
                accepted.push(v);
            }
        }
        accepted.sort_by(|a, b| b.record.margin.total_cmp(&a.record.margin));
        let promoted = promote_round(
            ws,
            ctx,
            rule,
            round,
            &main,
            &accepted,
            observer,
            log,
            &mut executed,
            &mut cost,
        )
        .await?;
        match promoted {
            Some((name, merge)) => {
                dry = 0;
                log(format!(
                    "round {round}: promoted {name} -> main {}",
                    lineage::short(merge)
                ));
                report.promoted = Some((name, merge));
            }
            None => {
                dry += 1;
                report.note = "nothing accepted".into();
                log(format!("round {round}: no edit accepted"));
            }
        }
        reports.push(report);
        if dry >= opts.patience {
            stopped = format!("{dry} round(s) without an accepted edit");
            break;
        }
    }
    Ok(EvolveOutcome {
        rounds: reports,
        stopped,
        trials_executed: executed,
        cost_usd: cost,
    })
}

/// Promote the round's winner: when several accepted edits touch different surfaces, their
/// merge is a new candidate gated against the parent again; if it fails or conflicts, the single
/// best by margin is promoted.
#[allow(clippy::too_many_arguments)]
async fn promote_round(
    ws: &Workspace,
    ctx: &EvalContext,
    rule: GateRule,
    round: u32,
    main: &git2::Commit<'_>,
    accepted: &[Validation],
    observer: &mut dyn Observer,
    log: &mut dyn FnMut(String),
    executed: &mut u64,
    cost: &mut f64,
) -> Result<Option<(String, git2::Oid)>> {
    let repo = &ws.repo;
    if accepted.is_empty() {
        return Ok(None);
    }
    let report = |v: &Validation| v.record.gate_report();
    if accepted.len() >= 2 {
        let mut surfaces: Vec<&str> = Vec::new();
        let parts: Vec<&Validation> = accepted
            .iter()
            .filter(|v| {
                let s = v.proposal.message.get(keys::SURFACE).unwrap_or_default();
                if surfaces.contains(&s) {
                    false
                } else {
                    surfaces.push(s);
                    true
                }
            })
            .collect();
        if parts.len() >= 2 {
            let props: Vec<Proposal> = parts.iter().map(|v| v.proposal.clone()).collect();
            let mut body = String::from(
                "Merge of the edits of this round that the gate accepted one by one:\n\n",
            );
            for v in &parts {
                body.push_str(&format!(
                    "- {}: {}\n",
                    v.proposal.name(),
                    v.proposal.message.subject
                ));
            }
            let msg = CommitMessage::new(format!(
                "Combine {} accepted edits of round {round}",
                parts.len()
            ))
            .body(body)
            .trailer(keys::SURFACE, surfaces.join(", "))
            .trailer(
                keys::CLUSTER,
                parts
                    .iter()
                    .filter_map(|v| v.proposal.message.get(keys::CLUSTER))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
            .trailer(keys::PARENT, main.id().to_string())
            .trailer(keys::PROPOSER, "merge of accepted proposals")
            .trailer(keys::ROUND, round.to_string());
            let merged = match lineage::list_proposals(repo)?
                .into_iter()
                .find(|p| p.round == round && p.slug == "merged")
            {
                Some(p) => Some(p),
                None => lineage::create_merged_proposal(repo, main, round, &props, &msg)?,
            };
            match merged {
                Some(m) => {
                    log(format!(
                        "  gating the merge of {} accepted edits against main",
                        parts.len()
                    ));
                    let v = match existing(ws, ctx, &m, rule)? {
                        Some(v) => v,
                        None => validate(ws, ctx, &m, Some(rule), observer).await?,
                    };
                    *executed += v.trials_executed as u64;
                    *cost += v.cost_usd;
                    log(format!(
                        "  {} {}: held_in {:+}, validation {:+}",
                        m.name(),
                        v.decision.verdict,
                        v.decision.held_in.delta,
                        v.decision.validation.delta
                    ));
                    if v.decision.verdict == Verdict::Accept {
                        let m = lineage::resolve_proposal(repo, &m.name())?;
                        let out = lineage::promote(repo, &m, &ctx.fingerprint, &report(&v), None)?;
                        for p in &props {
                            lineage::retire_proposal(repo, p)?;
                        }
                        return Ok(Some((m.name(), out.merge)));
                    }
                    log("  the merge did not pass the gate; promoting the single best edit".into());
                }
                None => log("  the accepted edits conflict; promoting the single best edit".into()),
            }
        }
    }
    let best = &accepted[0];
    let p = lineage::resolve_proposal(repo, &best.proposal.name())?;
    let out = lineage::promote(repo, &p, &ctx.fingerprint, &report(best), None)?;
    Ok(Some((p.name(), out.merge)))
}
