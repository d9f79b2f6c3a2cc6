//! The bundle as text (terminal) and markdown.

use super::Bundle;

pub fn text(b: &Bundle) -> String {
    let mut s = format!(
        "Mined run {} of {}: {} failed held-in trials in {} clusters ({} infrastructure errors excluded)\n",
        b.run,
        &b.harness_commit[..b.harness_commit.len().min(10)],
        b.failed,
        b.clusters.len(),
        b.excluded_infra
    );
    for c in &b.clusters {
        s.push_str(&format!(
            "\n#{} {}  ({} trials, {} tasks)\n",
            c.rank,
            c.id,
            c.size,
            c.tasks.len()
        ));
        s.push_str(&format!("   mechanism: {}\n", c.mechanism));
        for sym in &c.symptoms {
            s.push_str(&format!("   - {sym}\n"));
        }
        s.push_str(&format!("   trials: {}\n", c.trials.join(", ")));
        for r in &c.representatives {
            s.push_str(&format!("   {}:\n", r.id()));
            for l in r.verifier_excerpt.lines() {
                s.push_str(&format!("     verifier | {l}\n"));
            }
            for l in r.trace_excerpt.iter().take(8) {
                s.push_str(&format!("     trace    | {l}\n"));
            }
        }
    }
    s.push_str(&format!(
        "\nPassing held-in tasks ({}): {}\n",
        b.passing_tasks.len(),
        b.passing_tasks.join(", ")
    ));
    if !b.attempts.is_empty() {
        s.push_str("\nEarlier attempts:\n");
        for a in &b.attempts {
            s.push_str(&format!(
                "  {:<9} {:<24} {}  [{}]{}\n",
                a.state,
                a.name,
                a.subject,
                a.surface.clone().unwrap_or_default(),
                match (&a.held_in, &a.validation) {
                    (Some(h), Some(v)) => format!("  held_in {h}, validation {v}"),
                    _ => String::new(),
                }
            ));
        }
    }
    s
}

pub fn markdown(b: &Bundle) -> String {
    let mut s = format!(
        "## Failure clusters of run `{}`\n\n{} failed held-in trials, {} clusters, {} infrastructure errors excluded.\n\n",
        b.run,
        b.failed,
        b.clusters.len(),
        b.excluded_infra
    );
    s.push_str("| # | signature | trials | tasks | mechanism |\n|---|---|---|---|---|\n");
    for c in &b.clusters {
        s.push_str(&format!(
            "| {} | `{}` | {} | {} | {} |\n",
            c.rank,
            c.id,
            c.size,
            c.tasks.len(),
            c.mechanism
        ));
    }
    for c in &b.clusters {
        s.push_str(&format!("\n### #{} `{}`\n\n", c.rank, c.id));
        for sym in &c.symptoms {
            s.push_str(&format!("- {sym}\n"));
        }
        for r in &c.representatives {
            s.push_str(&format!(
                "\n`{}`\n\n```\n{}\n{}\n```\n",
                r.id(),
                r.verifier_excerpt,
                r.trace_excerpt.join("\n")
            ));
        }
    }
    s.push_str(&format!(
        "\n**Passing held-in tasks:** {}\n",
        b.passing_tasks.join(", ")
    ));
    s
}
