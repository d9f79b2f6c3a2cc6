//! Markdown summaries fit for a pull-request comment.

use crate::gate::Verdict;
use crate::validate::Validation;

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
        s.push_str(&format!(
            "| {} | {}/{} | {}/{} | {:+} | {} | {} |\n",
            x.split.as_str(),
            x.parent_passes,
            x.trials,
            x.candidate_passes,
            x.trials,
            x.delta,
            x.fixed.len(),
            x.broke.len()
        ));
    }
    s.push_str(&format!(
        "\n{}\n",
        v.record.statistic.clone().unwrap_or_default()
    ));
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
        s.push_str(&format!("\nStopped early: {e}\n"));
    }
    s.push_str(&format!(
        "\nEvidence: `refs/harness/runs/{}`\n",
        v.candidate_runs.join("`, `refs/harness/runs/")
    ));
    s
}
