//! Reports: terminal tables live in the CLI; markdown for pull requests, the lineage report's
//! data and its HTML page here.

pub mod data;
pub mod html;
pub mod markdown;
pub mod why;

pub use data::{LineageReport, ReportOptions, collect};

/// The plain-text summary a reader sees first: current main against the first measured
/// version on each split, the test split's openings, what was promoted, rejected and spent.
pub fn summary_lines(r: &LineageReport) -> Vec<String> {
    let cur = r.current();
    let mut lines = vec![format!(
        "{} is {} ({}): {}",
        r.main_branch, cur.label, cur.short, cur.subject
    )];
    let base = r.baseline();
    for split in data::GATED_SPLITS {
        let now = r
            .versions
            .iter()
            .rev()
            .find_map(|v| v.split(split).map(|m| (v, m)));
        let Some((v, m)) = now else {
            lines.push(format!("{split}: not measured yet"));
            continue;
        };
        let mut line = format!("{split}: {}", m.rate.describe());
        if v.index != cur.index {
            line.push_str(&format!(" (last measured at {})", v.label));
        }
        if let Some(b) = base.and_then(|b| b.split(split).map(|m| (b, m)))
            && b.0.index != v.index
        {
            let pts = (m.rate.rate - b.1.rate.rate) * 100.0;
            line.push_str(&format!(
                ", {pts:+.0} points vs {:.0}% ({}/{}) at {}",
                b.1.rate.rate * 100.0,
                b.1.rate.passes,
                b.1.rate.trials,
                b.0.label
            ));
        }
        lines.push(line);
    }
    match r.test_openings.last() {
        None => lines.push("test: sealed (never opened)".into()),
        Some(t) => {
            let mut line = format!(
                "test: opened {} time{}; last (#{}, {}) {}",
                r.test_openings.len(),
                if r.test_openings.len() == 1 { "" } else { "s" },
                t.opening,
                t.version
                    .map(|v| format!("v{v}"))
                    .unwrap_or_else(|| t.short.clone()),
                t.rate.describe()
            );
            for b in &t.baselines {
                line.push_str(&format!("; {} baseline {}", b.name, b.rate.describe()));
            }
            lines.push(line);
        }
    }
    let h = &r.headline;
    lines.push(format!(
        "{} promotion{}{}, {} rejected proposal{}, {} open",
        h.promotions,
        if h.promotions == 1 { "" } else { "s" },
        if h.overrides > 0 {
            format!(" ({} by override)", h.overrides)
        } else {
            String::new()
        },
        h.rejected,
        if h.rejected == 1 { "" } else { "s" },
        h.open
    ));
    lines.push(format!(
        "spent {} tokens, ${:.2} over {} trials in {} runs",
        human_tokens(r.spent.tokens),
        r.spent.cost_usd,
        r.spent.trials,
        r.runs
    ));
    if let Some(f) = &r.flaky {
        lines.push(flaky_line(f));
    }
    for c in &r.null_controls {
        lines.push(format!(
            "null control of round {} (main {}): {}, p = {}, {} candidate trials{}",
            c.round,
            c.label,
            c.verdict,
            crate::gate::stats::fmt_level(c.p_value),
            c.trials,
            c.mde_points
                .map(|m| format!(", minimum detectable effect +{m:.1} points"))
                .unwrap_or_default()
        ));
    }
    lines
}

/// `flaky: 2 of 8 held_in task(s) flip across repeats (a 50% 8/16, b 25% 4/16); 1 of 6
/// validation task(s); from 224 trials` — validation tasks are counted, never named.
pub fn flaky_line(f: &crate::lineage::FlakyTasksRecord) -> String {
    let named: Vec<String> = f
        .tasks
        .iter()
        .map(|(id, t)| format!("{id} {:.0}% {}/{}", t.rate * 100.0, t.passes, t.trials))
        .collect();
    format!(
        "flaky: {} of {} held_in task(s) flip across repeats{}; {} of {} validation task(s); from {} trials",
        f.tasks.len(),
        f.held_in_tasks,
        if named.is_empty() {
            String::new()
        } else {
            format!(" ({})", named.join(", "))
        },
        f.validation.flaky,
        f.validation.of,
        f.from_trials
    )
}

/// `1.2M`, `35k`, `812`.
pub fn human_tokens(t: u64) -> String {
    if t >= 1_000_000 {
        format!("{:.1}M", t as f64 / 1e6)
    } else if t >= 10_000 {
        format!("{:.0}k", t as f64 / 1e3)
    } else {
        t.to_string()
    }
}
