//! Drift watch: re-run a promoted version against its parent with fresh seeds, through the
//! same gate design, and say whether the gain it was promoted for still holds, has vanished
//! (winner's curse) or reversed. History is not changed: main, every note and every existing
//! ref stay as they are; each result is a new record under `refs/harness/revalidations/`.

use git2::{Oid, Repository};

use crate::error::{Error, Result};
use crate::eval::run::EvalContext;
use crate::eval::schedule::Observer;
use crate::experiment::{GateConfig, GateStatistic, Split};
use crate::gate::{Evaluation, Outcome, Verdict};
use crate::lineage::{self, Drift, FreshGain, OriginalGain, RevalidationRecord, ValidationRecord};
use crate::workspace::Workspace;

use super::validate::{Comparison, compare};

/// A promotion on main's first-parent history: the merge and what it was promoted on.
#[derive(Debug, Clone)]
pub struct Promotion {
    pub commit: Oid,
    pub parent: Oid,
    /// The promoted proposal's commit (the merge's second parent).
    pub candidate: Oid,
    pub proposal: Option<String>,
    pub subject: String,
    pub original: OriginalGain,
}

/// Which promotions to revalidate.
#[derive(Debug, Clone, Default)]
pub enum Select {
    /// The newest promotion on main.
    #[default]
    Latest,
    /// The promotion a revision names (the merge, or the proposal it promoted).
    Rev(String),
    /// Every promotion, newest first, at most `last` of them.
    All { last: Option<usize> },
}

/// Main's promotions, newest first.
pub fn promotions(repo: &Repository) -> Result<Vec<Promotion>> {
    let mut out = Vec::new();
    for c in lineage::first_parent_chain(repo)?.iter().rev() {
        let v = lineage::history::version_of(repo, c, None)?;
        let (Some(proposal), Ok(parent), Ok(candidate)) = (v.proposal, c.parent(0), c.parent(1))
        else {
            continue;
        };
        let record = promoted_on(repo, candidate.id(), parent.id())?;
        out.push(Promotion {
            commit: c.id(),
            parent: parent.id(),
            candidate: candidate.id(),
            proposal: Some(proposal_name(&proposal)).filter(|p| !p.is_empty()),
            subject: v.subject.clone(),
            original: OriginalGain {
                // A forced promotion without a record says `none`.
                verdict: v
                    .verdict
                    .clone()
                    .filter(|v| v != "none")
                    .or_else(|| record.as_ref().map(|r| r.verdict.to_string())),
                gain_points: record.as_ref().map(record_gain),
                p_value: record
                    .as_ref()
                    .and_then(|r| r.decision.as_ref().map(|d| d.statistic.p_value)),
                overridden: v.overridden.clone(),
            },
        });
    }
    Ok(out)
}

/// `<round>/<slug>` of a `Harness-Proposal` trailer (the proposal's branch).
fn proposal_name(trailer: &str) -> String {
    let t = trailer.strip_prefix("refs/heads/").unwrap_or(trailer);
    t.strip_prefix(lineage::PROPOSALS_PREFIX.trim_start_matches("refs/heads/"))
        .unwrap_or(t)
        .to_string()
}

/// The newest validation record of `candidate` against `parent` (its tree): the one the
/// promotion was made on, when there is one.
fn promoted_on(repo: &Repository, candidate: Oid, parent: Oid) -> Result<Option<ValidationRecord>> {
    let note = lineage::read_note(repo, candidate)?;
    let parent_tree = repo
        .find_commit(parent)
        .map_err(|e| Error::Git {
            context: "read promotion parent".into(),
            source: e,
        })?
        .tree_id()
        .to_string();
    let mine =
        |r: &&ValidationRecord| r.parent == parent.to_string() || r.parent_tree == parent_tree;
    Ok(note
        .validations
        .iter()
        .rev()
        .filter(mine)
        .find(|r| r.verdict == Verdict::Accept)
        .or_else(|| note.validations.iter().rev().find(mine))
        .cloned())
}

/// A validation record's gain: the decision's pooled rate difference, or the counts'.
fn record_gain(r: &ValidationRecord) -> f64 {
    if let Some(d) = &r.decision {
        return d.margin.rate_points;
    }
    let trials = r.held_in.parent_trials + r.validation.parent_trials;
    if trials == 0 {
        return 0.0;
    }
    100.0 * (r.held_in.delta() + r.validation.delta()) as f64 / trials as f64
}

/// The promotions `select` names, newest first; a revision that names none is a usage error.
pub fn select(repo: &Repository, select: &Select) -> Result<Vec<Promotion>> {
    let all = promotions(repo)?;
    let main = lineage::main_branch(repo);
    match select {
        Select::Latest => match all.into_iter().next() {
            Some(p) => Ok(vec![p]),
            None => Err(Error::usage_hint(
                format!("{main} has no promotion to revalidate"),
                "promotions are the merges `git harness promote` makes; `git harness log` lists them",
            )),
        },
        Select::Rev(rev) => {
            let c = lineage::resolve_commit(repo, rev)?;
            all.into_iter()
                .find(|p| p.commit == c.id() || p.candidate == c.id())
                .map(|p| vec![p])
                .ok_or_else(|| {
                    Error::usage_hint(
                        format!(
                            "`{rev}` ({}) is not a promotion on {main}'s first-parent history",
                            lineage::short(c.id())
                        ),
                        "give a promotion merge or the proposal it promoted; `git harness log` lists them",
                    )
                })
        }
        Select::All { last } => {
            let n = last.unwrap_or(usize::MAX);
            Ok(all.into_iter().take(n).collect())
        }
    }
}

/// The seed namespace of a new revalidation: derived from the experiment's seed and how many
/// namespaces earlier revalidations used, so each revalidation draws fresh trials and none
/// reuses the trials of the original validations (those ran under the experiment's own seed).
pub fn fresh_seed(repo: &Repository, experiment_seed: u64) -> Result<u64> {
    let mut used: Vec<u64> = lineage::list_revalidations(repo)?
        .into_iter()
        .map(|(_, r)| r.seed)
        .collect();
    used.sort_unstable();
    used.dedup();
    let mut ordinal = used.len() as u64 + 1;
    loop {
        let mut h = crate::support::digest::Hasher::new();
        h.update(b"git-harness revalidate\n");
        h.update(experiment_seed.to_le_bytes());
        h.update(ordinal.to_le_bytes());
        let d = h.finish();
        let seed = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
        if seed != experiment_seed && used.binary_search(&seed).is_err() {
            return Ok(seed);
        }
        ordinal += 1;
    }
}

/// One promotion revalidated.
#[derive(Debug, Clone)]
pub struct Revalidation {
    pub promotion: Promotion,
    pub record: RevalidationRecord,
    /// The ref the record is stored under.
    pub refname: String,
    pub comparison: Comparison,
}

/// Revalidate one promotion in `ctx`, whose experiment carries the fresh seed (see
/// [`fresh_seed`]; the caller opens the context with it), and store the result as a new record.
pub async fn revalidate(
    ws: &Workspace,
    ctx: &EvalContext,
    experiment_fingerprint: &str,
    promotion: &Promotion,
    observer: &mut dyn Observer,
) -> Result<Revalidation> {
    let repo = &ws.repo;
    // The same design as the experiment's, every look run in full: the estimate, not only the
    // verdict, is the point, and a candidate stopped early leaves a sample in decisive order.
    let mut cfg: GateConfig = ctx.fixed.experiment.gate.clone();
    cfg.early_stop = false;
    let comparison = compare(
        ws,
        ctx,
        &cfg,
        promotion.commit,
        promotion.parent,
        true,
        observer,
    )
    .await?;
    let est = estimate(&comparison.parent, &comparison.candidate, cfg.alpha);
    let d = &comparison.decision;
    let (verdict, reason) = drift(d.verdict, &est, comparison.mde_points);
    let commit_of = |oid: Oid| {
        repo.find_commit(oid).map_err(|e| Error::Git {
            context: "read promotion".into(),
            source: e,
        })
    };
    let (merge, parent) = (commit_of(promotion.commit)?, commit_of(promotion.parent)?);
    let mut runs = vec![comparison.parent_run.clone()];
    runs.extend(comparison.candidate_runs.iter().cloned());
    let record = RevalidationRecord {
        format: <RevalidationRecord as crate::support::format::Versioned>::FORMAT,
        promotion: promotion.commit.to_string(),
        promotion_tree: merge.tree_id().to_string(),
        parent: promotion.parent.to_string(),
        parent_tree: parent.tree_id().to_string(),
        proposal: promotion.proposal.clone(),
        experiment_fingerprint: experiment_fingerprint.to_string(),
        fingerprint: ctx.fingerprint.clone(),
        seed: ctx.seed,
        gate: cfg.rule.as_str().to_string(),
        statistic: match cfg.statistic {
            GateStatistic::Paired => "paired",
            GateStatistic::Pooled => "pooled",
        }
        .to_string(),
        original: promotion.original.clone(),
        fresh: FreshGain {
            gate_verdict: d.verdict,
            gain_points: est.gain_points,
            low_points: est.low_points,
            high_points: est.high_points,
            confidence: est.confidence,
            mde_points: comparison.mde_points,
            p_value: d.statistic.p_value,
            trials: comparison.trials,
            broke_held_in: d.held_in.broke.clone(),
            broke_validation: d.validation.broke.len() as u32,
        },
        verdict,
        reason,
        runs,
        trials_executed: comparison.executed,
        cost_usd: comparison.cost_usd,
        created_at: crate::eval::record::now(),
    };
    let id = format!(
        "{}-{}-{:04x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S"),
        &record.promotion[..7],
        rand::random::<u16>()
    );
    let refname = lineage::write_revalidation(repo, &id, &record)?;
    Ok(Revalidation {
        promotion: promotion.clone(),
        record,
        refname,
        comparison,
    })
}

/// The fresh gain with its interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub gain_points: f64,
    pub low_points: f64,
    pub high_points: f64,
    pub confidence: f64,
}

/// The gain of `candidate` over `parent` in pass-rate points and its interval, with the gated
/// tasks as the units: per task `d_t` = candidate rate − parent rate (each side over its trials
/// free of infrastructure errors, the parent's with its cached evidence; tasks where a side has
/// none are left out), the gain their mean and the interval Student's at `1 − 2·alpha` over the
/// `T` tasks' `d_t` (`T − 1` degrees of freedom). Under the null hypothesis every `d_t` is
/// symmetric about 0 whatever the task's rate, which keeps the bounds' one-sided error near
/// `alpha` even with one or two trials per task, where a plug-in binomial variance (zero for a
/// task that passed every trial) is far too narrow. Pairing by common seeds needs no term of its
/// own: it shows in the spread of the `d_t`.
pub fn estimate(parent: &Evaluation, candidate: &Evaluation, alpha: f64) -> Estimate {
    let count = |outcomes: &[Outcome]| {
        let pass = outcomes.iter().filter(|o| **o == Outcome::Pass).count() as f64;
        let n = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Pass | Outcome::Fail))
            .count() as f64;
        (pass, n)
    };
    let mut diffs = Vec::new();
    for split in [Split::HeldIn, Split::Validation] {
        let (Some(p), Some(c)) = (parent.table(split), candidate.table(split)) else {
            continue;
        };
        for (task, po) in &p.tasks {
            let ev = parent.evidence.get(task).copied().unwrap_or_default();
            let (pp, pn) = count(po);
            let (pp, pn) = (pp + ev.passes as f64, pn + ev.trials as f64);
            let (cp, cn) = c.tasks.get(task).map_or((0.0, 0.0), |co| count(co));
            if pn > 0.0 && cn > 0.0 {
                diffs.push(cp / cn - pp / pn);
            }
        }
    }
    let confidence = 1.0 - 2.0 * alpha;
    let t = diffs.len() as f64;
    let gain = if diffs.is_empty() {
        0.0
    } else {
        diffs.iter().sum::<f64>() / t
    };
    // Fewer than two tasks say nothing of the spread: the widest interval a gain can have.
    let (low, high) = if diffs.len() < 2 {
        (-1.0, 1.0)
    } else {
        let var = diffs.iter().map(|d| (d - gain).powi(2)).sum::<f64>() / (t - 1.0);
        let half = student_quantile(1.0 - alpha, t - 1.0) * (var / t).sqrt();
        (gain - half, gain + half)
    };
    Estimate {
        gain_points: 100.0 * gain,
        low_points: 100.0 * low,
        high_points: 100.0 * high,
        confidence,
    }
}

/// Student's t quantile with `nu` degrees of freedom: exact for 1 and 2, else the
/// Cornish–Fisher expansion around the normal quantile (Abramowitz–Stegun 26.7.5; below 0.2%
/// off from 3 degrees of freedom on at the levels used here).
fn student_quantile(q: f64, nu: f64) -> f64 {
    if nu <= 1.0 {
        return (std::f64::consts::PI * (q - 0.5)).tan();
    }
    if nu <= 2.0 {
        return (2.0 * q - 1.0) / (2.0 * q * (1.0 - q)).sqrt();
    }
    let z = super::noise::normal_quantile(q);
    let g1 = (z.powi(3) + z) / 4.0;
    let g2 = (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / 96.0;
    let g3 = (3.0 * z.powi(7) + 19.0 * z.powi(5) + 17.0 * z.powi(3) - 15.0 * z) / 384.0;
    let g4 = (79.0 * z.powi(9) + 776.0 * z.powi(7) + 1482.0 * z.powi(5)
        - 1920.0 * z.powi(3)
        - 945.0 * z)
        / 92160.0;
    z + g1 / nu + g2 / nu.powi(2) + g3 / nu.powi(3) + g4 / nu.powi(4)
}

/// The drift verdict (docs/gate.md, "Drift watch") and why.
pub fn drift(gate: Verdict, est: &Estimate, mde_points: f64) -> (Drift, String) {
    let interval = format!(
        "fresh gain {:+.1} points [{:+.1}, {:+.1}] at {:.0}%",
        est.gain_points,
        est.low_points,
        est.high_points,
        100.0 * est.confidence
    );
    if gate == Verdict::Indecisive {
        return (
            Drift::Indecisive,
            "too few fresh trials free of infrastructure errors to compare".to_string(),
        );
    }
    if est.high_points < 0.0 {
        return (
            Drift::Reversed,
            format!("{interval}: a significant regression against the parent"),
        );
    }
    if est.low_points <= 0.0 {
        return (
            Drift::Vanished,
            format!("{interval}: the interval covers 0"),
        );
    }
    if est.gain_points < mde_points {
        return (
            Drift::Vanished,
            format!(
                "{interval}: below the design's minimum detectable effect of {mde_points:.1} points"
            ),
        );
    }
    (
        Drift::Holds,
        format!(
            "{interval}: above 0 and at least the minimum detectable effect of {mde_points:.1} points"
        ),
    )
}

/// The promotion's label: its proposal, else its short id.
pub fn label(p: &Promotion) -> String {
    p.proposal
        .clone()
        .unwrap_or_else(|| lineage::short(p.commit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(gain: f64, lo: f64, hi: f64) -> Estimate {
        Estimate {
            gain_points: gain,
            low_points: lo,
            high_points: hi,
            confidence: 0.9,
        }
    }

    #[test]
    fn student_quantiles() {
        for (q, nu, want) in [
            (0.95, 1.0, 6.3138),
            (0.95, 2.0, 2.9200),
            (0.95, 3.0, 2.3534),
            (0.95, 13.0, 1.7709),
            (0.975, 5.0, 2.5706),
        ] {
            let got = student_quantile(q, nu);
            assert!(
                (got - want).abs() < 0.005 * want,
                "t({q}, {nu}) = {got}, not {want}"
            );
        }
    }

    #[test]
    fn identical_sides_give_an_interval_on_zero_and_gains_a_student_interval() {
        use crate::gate::Table;
        let table = |rows: &[(&str, Vec<Outcome>)]| {
            let mut t = Table::new();
            for (task, o) in rows {
                t.insert(*task, o.clone());
            }
            t
        };
        let (p, f) = (Outcome::Pass, Outcome::Fail);
        let parent = Evaluation::new(
            table(&[("a", vec![p, f]), ("b", vec![f, f]), ("c", vec![p, p])]),
            table(&[("d", vec![f, p])]),
        );
        let same = estimate(&parent, &parent, 0.05);
        assert_eq!(
            (same.gain_points, same.low_points, same.high_points),
            (0.0, 0.0, 0.0)
        );
        let better = Evaluation::new(
            table(&[("a", vec![p, p]), ("b", vec![p, f]), ("c", vec![p, p])]),
            table(&[("d", vec![p, p])]),
        );
        let e = estimate(&parent, &better, 0.05);
        // d = (+0.5, +0.5, 0, +0.5): gain 37.5 points, sd 0.25, t(0.95, 3) = 2.353.
        assert!((e.gain_points - 37.5).abs() < 1e-9, "{e:?}");
        let half = 100.0 * 2.3534 * 0.25 / 2.0;
        assert!((e.low_points - (37.5 - half)).abs() < 0.1, "{e:?}");
        assert!((e.confidence - 0.9).abs() < 1e-12);
    }

    #[test]
    fn verdicts_follow_the_interval_and_the_minimum_detectable_effect() {
        let v = |e: Estimate, mde| drift(Verdict::Accept, &e, mde).0;
        assert_eq!(v(est(20.0, 10.0, 30.0), 15.0), Drift::Holds);
        assert_eq!(v(est(12.0, 5.0, 19.0), 15.0), Drift::Vanished);
        assert_eq!(v(est(3.0, -2.0, 8.0), 1.0), Drift::Vanished);
        assert_eq!(v(est(0.0, 0.0, 0.0), 0.0), Drift::Vanished);
        assert_eq!(v(est(-10.0, -15.0, -5.0), 5.0), Drift::Reversed);
        assert_eq!(
            drift(Verdict::Indecisive, &est(20.0, 10.0, 30.0), 5.0).0,
            Drift::Indecisive
        );
    }
}
