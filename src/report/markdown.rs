//! Markdown summaries fit for a pull-request comment.

use super::data::{self, LineageReport};
use super::summary_lines;
use crate::gate::Verdict;
use crate::method::validate::Validation;

/// A validation as markdown: verdict, per-split table, fixed/broke counts, the statistic and
/// where the evidence is. Validation task names are not listed (aggregate only).
pub fn validation(v: &Validation) -> String {
    let d = &v.decision;
    let icon = match d.verdict {
        Verdict::Accept => "✅ accept",
        Verdict::Reject => "❌ reject",
        Verdict::Indecisive => "⚠️ indecisive",
    };
    let mut s = format!(
        "### git harness validate `{}`: {icon}\n\n",
        v.proposal.name()
    );
    s.push_str(&format!(
        "**{}** gate against parent `{}`: {}\n\n",
        v.record.gate,
        &v.record.parent[..10],
        d.reason
    ));
    s.push_str(
        "| split | parent | candidate | Δ | fixed | broke |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for x in [&d.held_in, &d.validation] {
        let of = |passes: u32| {
            if x.trials == 0 {
                "—".to_string()
            } else {
                format!("{passes}/{}", x.trials)
            }
        };
        s.push_str(&format!(
            "| {} | {} | {} | {:+} | {} | {} |\n",
            x.split.as_str(),
            of(x.parent_passes),
            of(x.candidate_passes),
            x.delta,
            x.fixed.len(),
            x.broke.len()
        ));
    }
    if let Some(st) = &v.record.statistic {
        s.push_str(&format!("\nStatistic: {st}\n"));
    }
    if !d.held_in.fixed.is_empty() {
        s.push_str(&format!(
            "\nFixed on held_in: {}\n",
            d.held_in.fixed.join(", ")
        ));
    }
    if !d.held_in.broke.is_empty() {
        s.push_str(&format!(
            "\nBroke on held_in: {}\n",
            d.held_in.broke.join(", ")
        ));
    }
    if let Some(e) = &v.record.early_stop {
        s.push_str(&format!(
            "\nStopped early: {e} (the table counts the trial pairs that ran)\n"
        ));
    }
    let mut evidence = Vec::new();
    if !v.parent_run.is_empty() {
        evidence.push(format!("parent `refs/harness/runs/{}`", v.parent_run));
    }
    for r in &v.candidate_runs {
        evidence.push(format!("candidate `refs/harness/runs/{r}`"));
    }
    s.push_str(&format!(
        "\nEvidence: {} (proposal `{}`)\n",
        evidence.join(", "),
        v.proposal.display_ref()
    ));
    s
}

/// The lineage as a compact markdown summary for a pull request: the summary lines, one row per
/// version, one per promotion with its gate numbers, and the rejected proposals.
pub fn lineage(r: &LineageReport) -> String {
    let mut s = format!(
        "### Harness lineage: `{}` at {} (`{}`)\n\n",
        r.main_branch,
        r.current().label,
        r.current().short
    );
    for line in summary_lines(r) {
        s.push_str(&format!("- {line}\n"));
    }
    for w in &r.warnings {
        s.push_str(&format!("\n> warning: {w}\n"));
    }
    s.push_str("\n| version | commit | change | held_in | validation | test |\n|---|---|---|---:|---:|---:|\n");
    let cell = |m: Option<&data::Measurement>| match m {
        Some(m) => format!(
            "{:.0}% ({}/{})",
            m.rate.rate * 100.0,
            m.rate.passes,
            m.rate.trials
        ),
        None => "–".into(),
    };
    for v in &r.versions {
        let change = match v.kind {
            "override" => format!("{} **(override)**", md_escape(&v.subject)),
            _ => md_escape(&v.subject),
        };
        s.push_str(&format!(
            "| {} | `{}` | {} | {} | {} | {} |\n",
            v.label,
            v.short,
            change,
            cell(v.held_in.as_ref()),
            cell(v.validation.as_ref()),
            v.test
                .as_ref()
                .map(|t| format!("{:.0}% ({}/{})", t.rate * 100.0, t.passes, t.trials))
                .unwrap_or_else(|| "–".into())
        ));
    }
    if !r.promotions.is_empty() {
        s.push_str("\n#### Promotions\n\n| version | proposal | surface | verdict | Δ held_in | Δ validation | fixed / broke | cost |\n|---|---|---|---|---:|---:|---:|---:|\n");
        for p in &r.promotions {
            let (dh, dv, fb, cost) = match &p.gated {
                Some(g) => (
                    format!("{:+}", g.held_in_delta),
                    format!("{:+}", g.validation_delta),
                    format!(
                        "{} / {}",
                        g.flips.fixed_held_in.len() + g.flips.fixed_validation.len(),
                        g.flips.broke_held_in.len() + g.flips.broke_validation.len()
                    ),
                    format!("${:.4}", g.cost.cost_usd),
                ),
                None => ("–".into(), "–".into(), "–".into(), "–".into()),
            };
            s.push_str(&format!(
                "| {} | `{}` | `{}` | {}{} | {dh} | {dv} | {fb} | {cost} |\n",
                p.label,
                p.proposal_ref,
                p.surface.as_deref().unwrap_or("–"),
                p.verdict,
                if p.overridden.is_some() {
                    " (override)"
                } else {
                    ""
                },
            ));
        }
    }
    let rejected: Vec<_> = r.rejected().collect();
    if !rejected.is_empty() {
        s.push_str(&format!(
            "\n<details><summary>{} rejected proposal(s)</summary>\n\n",
            rejected.len()
        ));
        for p in rejected {
            s.push_str(&format!(
                "- `{}` {}{}\n",
                p.name,
                md_escape(&p.subject),
                p.gated
                    .as_ref()
                    .map(|g| format!(
                        " — held_in {:+}, validation {:+}: {}",
                        g.held_in_delta,
                        g.validation_delta,
                        md_escape(&g.reason)
                    ))
                    .unwrap_or_default()
            ));
        }
        s.push_str("\n</details>\n");
    }
    s
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}
