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
use crate::gate::{Decision, Verdict};
use crate::lineage::trailers::CommitMessage;
use crate::lineage::{Proposal, ProposalState, keys};
use crate::method::validate::{Validation, existing, validate};
use crate::model::{Decoding, Model};
use crate::propose::{RoundOptions, propose_round};

/// What the loop reports, one event per phase of a round; the CLI words them.
#[derive(Debug, Clone)]
pub enum LoopEvent {
    /// Open proposals on main are validated before anything new is mined.
    Resuming {
        round: u32,
        open: usize,
    },
    /// Main is evaluated on held_in and its failures mined.
    Mining {
        round: u32,
        main: git2::Oid,
    },
    /// The proposer's candidate that a check refused.
    Refused {
        title: String,
        reason: String,
    },
    Proposed {
        round: u32,
        count: usize,
    },
    /// A proposal's gate decision.
    Validated {
        name: String,
        decision: Box<Decision>,
    },
    /// Several accepted edits: their merge is gated against main.
    GatingMerge {
        parts: usize,
    },
    MergeValidated {
        name: String,
        decision: Box<Decision>,
    },
    /// The merge failed the gate, or the edits conflict: the single best edit is promoted.
    MergeRejected,
    MergeConflicts,
    Promoted {
        round: u32,
        name: String,
        merge: git2::Oid,
    },
    NothingAccepted {
        round: u32,
    },
}

/// The loop's observer: the trials' progress, and the loop's own events.
pub trait LoopObserver: Observer {
    fn event(&mut self, _event: &LoopEvent) {}
}

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

/// Run the loop; `observer` is told of every trial and every phase.
pub async fn evolve(
    ws: &Workspace,
    ctx: &EvalContext,
    opts: &EvolveOptions<'_>,
    observer: &mut dyn LoopObserver,
) -> Result<EvolveOutcome> {
    let repo = &ws.repo;
    let lp = Loop {
        ws,
        ctx,
        rule: opts.rule.unwrap_or(ctx.fixed.experiment.gate.rule),
    };
    let mut reports = Vec::new();
    let mut spent = Spent::default();
    let mut dry = 0;
    let mut stopped = format!("{} rounds done", opts.rounds);
    let mut names = ctx.fixed.splits.held_in.clone();
    names.extend(ctx.fixed.splits.validation.iter().cloned());
    names.extend(ctx.fixed.splits.test.iter().cloned());

    for _ in 0..opts.rounds {
        if let Some(why) = budget_spent(opts, spent) {
            stopped = why;
            break;
        }
        let main = lineage::main_commit(repo)?;
        // Resume: open proposals on the current main are this round's, already paid for.
        let open = open_on(repo, main.id())?;
        let (round, proposals) = if !open.is_empty() {
            observer.event(&LoopEvent::Resuming {
                round: open[0].round,
                open: open.len(),
            });
            (open[0].round, open)
        } else {
            match mine_and_propose(ws, ctx, opts, &main, &names, observer, &mut spent).await? {
                Some(new) => new,
                None => {
                    stopped = "no failure left to mine on held_in".into();
                    break;
                }
            }
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
        let accepted = validate_all(&lp, &proposals, &mut report, observer, &mut spent).await?;
        let promoted = promote_round(&lp, round, &main, &accepted, observer, &mut spent).await?;
        match promoted {
            Some((name, merge)) => {
                dry = 0;
                observer.event(&LoopEvent::Promoted {
                    round,
                    name: name.clone(),
                    merge,
                });
                report.promoted = Some((name, merge));
            }
            None => {
                dry += 1;
                report.note = "nothing accepted".into();
                observer.event(&LoopEvent::NothingAccepted { round });
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
        trials_executed: spent.trials,
        cost_usd: spent.cost_usd,
    })
}

/// What the steps of one evolve share: the workspace, the evaluation context and the gate rule.
struct Loop<'a> {
    ws: &'a Workspace,
    ctx: &'a EvalContext,
    rule: GateRule,
}

impl Loop<'_> {
    /// The validation of `p` (an existing record counts, and costs nothing), its trials and cost
    /// added to `spent`.
    async fn validation(
        &self,
        p: &Proposal,
        observer: &mut dyn LoopObserver,
        spent: &mut Spent,
    ) -> Result<Validation> {
        let v = match existing(self.ws, self.ctx, p, self.rule)? {
            Some(v) => v,
            None => validate(self.ws, self.ctx, p, Some(self.rule), observer).await?,
        };
        spent.trials += v.trials_executed as u64;
        spent.cost_usd += v.cost_usd;
        Ok(v)
    }
}

/// What the loop has spent so far: the trials it executed (cached ones are free) and the cost
/// of those trials, of mining's diagnoses and of the proposer's calls.
#[derive(Debug, Clone, Copy, Default)]
struct Spent {
    trials: u64,
    cost_usd: f64,
}

/// Why the loop stops before another round, when a budget is spent.
fn budget_spent(opts: &EvolveOptions<'_>, spent: Spent) -> Option<String> {
    let Spent { trials, cost_usd } = spent;
    if let Some(b) = opts.budget_trials
        && trials >= b
    {
        return Some(format!("trial budget spent ({trials} >= {b})"));
    }
    if let Some(b) = opts.budget_usd
        && cost_usd >= b
    {
        return Some(format!("cost budget spent (${cost_usd:.4} >= ${b})"));
    }
    None
}

/// The open proposals made on `main` (a merge candidate is not one of them).
fn open_on(repo: &git2::Repository, main: git2::Oid) -> Result<Vec<Proposal>> {
    Ok(lineage::list_proposals(repo)?
        .into_iter()
        .filter(|p| {
            p.state == ProposalState::Open
                && p.parent == Some(main)
                && p.slug != lineage::MERGED_SLUG
        })
        .collect())
}

/// Mine main's held_in failures and propose a round of edits: the round and its proposals, or
/// `None` when no failure is left to mine. What mining and proposing spent is added to `spent`.
async fn mine_and_propose(
    ws: &Workspace,
    ctx: &EvalContext,
    opts: &EvolveOptions<'_>,
    main: &git2::Commit<'_>,
    names: &[String],
    observer: &mut dyn LoopObserver,
    spent: &mut Spent,
) -> Result<Option<(u32, Vec<Proposal>)>> {
    let repo = &ws.repo;
    observer.event(&LoopEvent::Mining {
        round: lineage::next_round(repo)?,
        main: main.id(),
    });
    let bundle = mine_rev(ws, ctx, &main.id().to_string(), observer).await?;
    if bundle.clusters.is_empty() {
        return Ok(None);
    }
    let ro = RoundOptions {
        k: opts.k,
        proposer: opts.proposer,
        cluster: None,
        model: opts.model,
        decoding: opts.decoding.clone(),
        task_names: names.to_vec(),
        prices: ctx.fixed.experiment.prices.clone(),
    };
    let out = propose_round(repo, &bundle, &ro).await?;
    // Mining's diagnosis and the proposer's calls are spent like trials.
    spent.cost_usd += bundle.diagnosis.cost_usd + out.spent.cost_usd;
    for r in &out.refused {
        observer.event(&LoopEvent::Refused {
            title: r.title.clone(),
            reason: r.reason.clone(),
        });
    }
    observer.event(&LoopEvent::Proposed {
        round: out.round,
        count: out.created.len(),
    });
    Ok(Some((out.round, out.created)))
}

/// Validate each proposal (an existing record counts), noting its verdict in `report`: the
/// accepted ones, best margin first.
async fn validate_all(
    lp: &Loop<'_>,
    proposals: &[Proposal],
    report: &mut RoundReport,
    observer: &mut dyn LoopObserver,
    spent: &mut Spent,
) -> Result<Vec<Validation>> {
    let mut accepted: Vec<Validation> = Vec::new();
    for p in proposals {
        let v = lp.validation(p, observer, spent).await?;
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
        observer.event(&LoopEvent::Validated {
            name: p.name(),
            decision: Box::new(v.decision.clone()),
        });
        report
            .proposals
            .push((p.name(), v.decision.verdict, v.record.margin));
        if v.decision.verdict == Verdict::Accept {
            accepted.push(v);
        }
    }
    accepted.sort_by(|a, b| b.record.margin.total_cmp(&a.record.margin));
    Ok(accepted)
}

/// Promote the round's winner: when several accepted edits touch different surfaces, their
/// merge is a new candidate gated against the parent again; if it fails or conflicts, the single
/// best by margin is promoted.
async fn promote_round(
    lp: &Loop<'_>,
    round: u32,
    main: &git2::Commit<'_>,
    accepted: &[Validation],
    observer: &mut dyn LoopObserver,
    spent: &mut Spent,
) -> Result<Option<(String, git2::Oid)>> {
    let (repo, ctx) = (&lp.ws.repo, lp.ctx);
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
                .find(|p| p.round == round && p.slug == lineage::MERGED_SLUG)
            {
                Some(p) => Some(p),
                None => lineage::create_merged_proposal(repo, main, round, &props, &msg)?,
            };
            match merged {
                Some(m) => {
                    observer.event(&LoopEvent::GatingMerge { parts: parts.len() });
                    let v = lp.validation(&m, observer, spent).await?;
                    observer.event(&LoopEvent::MergeValidated {
                        name: m.name(),
                        decision: Box::new(v.decision.clone()),
                    });
                    if v.decision.verdict == Verdict::Accept {
                        let m = lineage::resolve_proposal(repo, &m.name())?;
                        let out = lineage::promote(repo, &m, &ctx.fingerprint, &report(&v), None)?;
                        for p in &props {
                            lineage::retire_proposal(repo, p)?;
                        }
                        return Ok(Some((m.name(), out.merge)));
                    }
                    observer.event(&LoopEvent::MergeRejected);
                }
                None => observer.event(&LoopEvent::MergeConflicts),
            }
        }
    }
    let best = &accepted[0];
    let p = lineage::resolve_proposal(repo, &best.proposal.name())?;
    let out = lineage::promote(repo, &p, &ctx.fingerprint, &report(best), None)?;
    Ok(Some((p.name(), out.merge)))
}
