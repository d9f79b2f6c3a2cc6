//! The noisy stand-in model: the sim with `draws: conversation` draws each conversation's
//! outcome afresh from a fixed per-task probability, independently of the request seed and of
//! the harness (unless the harness neutralises the task's quirk). A task passes iff its quirk is
//! inactive (no slips), so its pass rate on main is `1 − p` of its quirk, and a candidate that
//! neutralises the quirk passes it always. Shared by `loop_noisy_gate`,
//! `benches/gate_pipeline.rs` (through the binary) and `benches/gate.rs` (e) (in process): the
//! tables below are the one definition of both experiments.
//!
//! Two experiments ([`Suite`]):
//!
//! - [`Suite::Wide`] (the benches' default): 20 held_in + 12 validation tasks of the demo suite
//!   (the 32), main's per-task pass rates drawn once from Beta(0.5, 0.5) (the spread of
//!   real suites: most tasks near 0 or 1) with a fixed seed, 2 decimals, then assigned to the
//!   tasks so that each effect below has its size: a +k point effect is +k points of the mean
//!   pass rate over the 32 tasks, carried by the tasks of the neutralised quirks that can
//!   improve (each goes to 100%; those at 100% already cannot).
//! - [`Suite::Small`]: the small loop split, 8 + 6 tasks; the late-artifact and env-loss tasks
//!   pass 65%, the others 50%.
//!
//! | effect | what the candidate says | quirks neutralised | gain, wide | gain, small |
//! |---|---|---|---|---|
//! | A/A | a comment in a middleware file | none | 0 | 0 |
//! | +5 | the env-loss phrase | env-loss | 1.58 / 32 = +4.9 | 0.7 / 14 = +5.0 |
//! | +10 | the late-artifact phrases | late-artifact | 3.18 / 32 = +9.9 | 1.4 / 14 = +10.0 |
//! | +20 | late-artifact and no-verify phrases | both | 6.40 / 32 = +20.0 | 2.9 / 14 = +20.7 |

use std::path::Path;

use serde_json::Value;

use super::loops::TEST;
use super::repo::Repo;

/// Probability that the late-artifact and env-loss quirks are active (small suite).
pub const LOW_P: f64 = 0.35;
/// Probability that every other quirk is active (small suite; the scenario's default).
pub const OTHER_P: f64 = 0.5;

/// One gated task of a stand-in experiment: id, split (`held_in` or `validation`), the quirk
/// the demo scenario gives it, and main's pass rate.
#[derive(Debug, Clone, Copy)]
pub struct StandIn {
    pub id: &'static str,
    pub split: &'static str,
    pub quirk: &'static str,
    pub rate: f64,
}

const fn t(id: &'static str, split: &'static str, quirk: &'static str, rate: f64) -> StandIn {
    StandIn {
        id,
        split,
        quirk,
        rate,
    }
}

/// The wide experiment's gated tasks. Rates: 32 draws `sin²(π/2·U)` (Beta(0.5, 0.5)) of Python's
/// `random.Random(17)`, rounded to 2 decimals, assigned per quirk so that the late-artifact
/// tasks fail 3.18 of 32, the no-verify ones 3.22 and the env-loss ones 1.58 (mean 0.572).
pub const WIDE: &[StandIn] = &[
    t("word-count", "held_in", "late-artifact", 0.10),
    t("log-time-window", "held_in", "late-artifact", 0.01),
    t("extract-emails", "held_in", "late-artifact", 0.99),
    t("shipped-customers", "held_in", "late-artifact", 0.94),
    t("fix-ini-config", "held_in", "late-artifact", 0.71),
    t("count-errors", "held_in", "no-verify", 0.32),
    t("number-lines", "held_in", "no-verify", 0.22),
    t("clean-emails", "held_in", "no-verify", 1.00),
    t("csv-to-json", "held_in", "no-verify", 1.00),
    t("set-server-port", "held_in", "no-verify", 0.56),
    t("sort-names-subdir", "held_in", "env-loss", 0.23),
    t("local-event-times", "held_in", "env-loss", 0.59),
    t("normalize-whitespace", "held_in", "env-loss", 0.87),
    t("private-token-file", "held_in", "env-loss", 1.00),
    t("repair-build-script", "held_in", "exact-retry", 0.15),
    t("sales-total", "held_in", "exact-retry", 0.85),
    t("fix-json-config", "held_in", "exact-retry", 0.03),
    t("reverse-lines", "held_in", "loop", 0.00),
    t("checksum-manifest", "held_in", "loop", 0.02),
    t("dedupe-keep-order", "held_in", "loop", 0.91),
    t("decode-message", "validation", "late-artifact", 0.92),
    t("fizzbuzz-script", "validation", "late-artifact", 0.19),
    t("csv-select-columns", "validation", "late-artifact", 0.96),
    t("top-ips", "validation", "no-verify", 0.53),
    t("sort-scores", "validation", "no-verify", 0.35),
    t("word-frequency", "validation", "no-verify", 0.80),
    t("package-with-env", "validation", "env-loss", 0.74),
    t("pythonpath-report", "validation", "env-loss", 0.99),
    t("fix-slugify", "validation", "exact-retry", 0.97),
    t("extract-archive-member", "validation", "exact-retry", 0.80),
    t("crlf-script", "validation", "loop", 0.06),
    t("env-to-json", "validation", "loop", 0.50),
];

/// The wide experiment's test split: the demo suite's other 8 tasks (never gated).
pub const WIDE_TEST: &[&str] = &[
    "render-production-config",
    "sum-in-subdir",
    "fix-package-import",
    "restore-gzip-backup",
    "versioned-release",
    "expense-totals",
    "merge-monthly-csv",
    "rename-extensions",
];

/// The small experiment's gated tasks (the small loop split).
pub const SMALL: &[StandIn] = &[
    t("word-count", "held_in", "late-artifact", 0.65),
    t("log-time-window", "held_in", "late-artifact", 0.65),
    t("repair-build-script", "held_in", "exact-retry", 0.5),
    t("sales-total", "held_in", "exact-retry", 0.5),
    t("count-errors", "held_in", "no-verify", 0.5),
    t("number-lines", "held_in", "no-verify", 0.5),
    t("sort-names-subdir", "held_in", "env-loss", 0.65),
    t("reverse-lines", "held_in", "loop", 0.5),
    t("decode-message", "validation", "late-artifact", 0.65),
    t("fizzbuzz-script", "validation", "late-artifact", 0.65),
    t("fix-slugify", "validation", "exact-retry", 0.5),
    t("top-ips", "validation", "no-verify", 0.5),
    t("package-with-env", "validation", "env-loss", 0.65),
    t("crlf-script", "validation", "loop", 0.5),
];

/// Which stand-in experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// 14 tasks at 50% / 65% (the small loop split).
    Small,
    /// 32 tasks with rates spread like real suites.
    Wide,
}

impl Suite {
    /// `GATE_…_SUITE=small|wide`; wide unless told.
    pub fn from_env(var: &str) -> Suite {
        match std::env::var(var).as_deref() {
            Ok("small") => Suite::Small,
            _ => Suite::Wide,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Suite::Small => "small",
            Suite::Wide => "wide",
        }
    }

    pub fn tasks(self) -> &'static [StandIn] {
        match self {
            Suite::Small => SMALL,
            Suite::Wide => WIDE,
        }
    }

    pub fn split(self, split: &str) -> Vec<&'static str> {
        self.tasks()
            .iter()
            .filter(|t| t.split == split)
            .map(|t| t.id)
            .collect()
    }

    fn test(self) -> &'static [&'static str] {
        match self {
            Suite::Small => TEST,
            Suite::Wide => WIDE_TEST,
        }
    }

    /// Main's mean pass rate over the gated tasks.
    pub fn mean_rate(self) -> f64 {
        let ts = self.tasks();
        ts.iter().map(|t| t.rate).sum::<f64>() / ts.len() as f64
    }

    /// The gain of `effect` in points of the mean pass rate.
    pub fn gain(self, effect: Effect) -> f64 {
        let ts = self.tasks();
        100.0
            * ts.iter()
                .filter(|t| effect.quirks().contains(&t.quirk))
                .map(|t| 1.0 - t.rate)
                .sum::<f64>()
            / ts.len() as f64
    }
}

/// The candidates' effects on the pass rate over held_in ∪ validation, in points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    Plus5,
    Plus10,
    Plus20,
}

impl Effect {
    pub const ALL: [Effect; 4] = [Effect::None, Effect::Plus5, Effect::Plus10, Effect::Plus20];

    pub fn name(self) -> &'static str {
        match self {
            Effect::None => "A/A",
            Effect::Plus5 => "+5",
            Effect::Plus10 => "+10",
            Effect::Plus20 => "+20",
        }
    }

    /// The quirks the candidate neutralises (their tasks then always pass).
    pub fn quirks(self) -> &'static [&'static str] {
        match self {
            Effect::None => &[],
            Effect::Plus5 => &["env-loss"],
            Effect::Plus10 => &["late-artifact"],
            Effect::Plus20 => &["late-artifact", "no-verify"],
        }
    }

    /// The prompt text that neutralises the quirks of this effect.
    fn phrases(self) -> &'static str {
        match self {
            Effect::None => "",
            Effect::Plus5 => "Persist environment changes in a file that later commands source.",
            Effect::Plus10 => {
                "Identify the required output artifact and create a first version of it early."
            }
            Effect::Plus20 => {
                "Identify the required output artifact and create a first version of it early.\nVerify final files against the instruction before you submit."
            }
        }
    }
}

/// The small experiment's scenario.
pub fn scenario() -> String {
    scenario_of(Suite::Small)
}

/// The demo scenario with fresh draws per conversation, no slips, and each gated task's quirk
/// active with probability `1 − rate`.
pub fn scenario_of(suite: Suite) -> String {
    let demo = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sim/demo.yaml"),
    )
    .expect("read the demo scenario");
    let mut out = String::new();
    let mut task: Option<String> = None;
    for line in demo.lines() {
        if line.starts_with("defaults:") {
            out.push_str(&format!(
                "defaults: {{p: {OTHER_P}, slip: 0.0, draws: conversation}}\n"
            ));
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.starts_with("  ") && !line.starts_with("   ") && line.ends_with(':') {
            task = Some(line.trim().trim_end_matches(':').to_string());
        }
        // The quirk line of a gated task: its probability right after it.
        if line.starts_with("    quirk: ")
            && let Some(t) = suite.tasks().iter().find(|t| Some(t.id) == task.as_deref())
        {
            let p = 1.0 - t.rate;
            if (p - OTHER_P).abs() > 1e-9 {
                out.push_str(&format!("    p: {:.2}\n", p));
            }
        }
    }
    out.replace("name: demo", "name: noisy")
}

/// The small experiment with the pooled statistic and the given design.
pub fn repo(seed: u32, trials: u32, max_trials: Option<u32>, continue_p: f64) -> Repo {
    repo_of(Suite::Small, seed, trials, max_trials, continue_p)
}

/// The experiment `suite` with the noisy stand-in, the pooled statistic and the given design.
pub fn repo_of(
    suite: Suite,
    seed: u32,
    trials: u32,
    max_trials: Option<u32>,
    continue_p: f64,
) -> Repo {
    let repo = match suite {
        Suite::Small => Repo::small("minimal"),
        Suite::Wide => {
            let repo = Repo::small("minimal");
            repo.splits(
                &suite.split("held_in"),
                &suite.split("validation"),
                suite.test(),
            );
            repo
        }
    };
    repo.write(".harness/noisy-sim.yaml", &scenario_of(suite));
    repo.commit_all("A noisy stand-in model");
    let max = max_trials
        .map(|m| format!("\n  max_trials: {m}"))
        .unwrap_or_default();
    repo.edit_experiment(|t| {
        t.replace(
            "scenario: builtin:demo",
            "scenario: .harness/noisy-sim.yaml",
        )
        .replace("trials: 2", &format!("trials: {trials}"))
        .replace("seed: 1", &format!("seed: {seed}"))
        .replace(
            "  early_stop: true",
            &format!("  early_stop: true\n  statistic: pooled\n  continue_p: {continue_p}{max}"),
        )
    });
    repo
}

/// A candidate with `effect` on main; `tag` makes its tree unique (fresh trials).
pub fn candidate(repo: &Repo, round: u32, tag: &str, effect: Effect) -> String {
    let slug = format!("{}-{tag}", effect.name().replace(['+', '/'], ""));
    if effect == Effect::None {
        let middleware = format!(
            "{}# {tag}: a comment changes nothing the agent sees.\n",
            repo.read("middleware/runtime_control.yaml")
        );
        return repo.proposal(
            round,
            &slug,
            "main",
            &[("middleware/runtime_control.yaml", middleware.as_str())],
        );
    }
    let system = format!(
        "{}\n{}\n<!-- {tag} -->\n",
        repo.read("prompts/system.md"),
        effect.phrases()
    );
    repo.proposal(
        round,
        &slug,
        "main",
        &[("prompts/system.md", system.as_str())],
    )
}

/// One validation through the binary.
#[derive(Debug, Clone)]
pub struct Validated {
    pub verdict: String,
    /// Candidate trials executed over every look: its cache entries, so trials that were still
    /// running when the gate settled count too (they are paid for).
    pub candidate_trials: usize,
    /// Trials the gate's decision read (distinct split, task, trial cells of the runs).
    pub decided_on: usize,
    pub record: Value,
}

/// The runs of the cache entries of a repository (one per trial executed, every side).
pub fn cache_runs(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(root.join(".git/harness/cache")) else {
        return out;
    };
    for d in dirs.flatten() {
        let Ok(files) = std::fs::read_dir(d.path()) else {
            continue;
        };
        for f in files.flatten() {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "json")
                && let Ok(text) = std::fs::read_to_string(&p)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
            {
                out.push(v["run"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    out
}

pub fn validate(repo: &Repo, proposal: &str) -> Validated {
    let out = repo.harness(&["validate", "--format", "json", proposal]);
    assert!(matches!(out.code, 0 | 1 | 3), "{out:#?}");
    let record: Value = serde_json::from_str(&out.stdout).expect("validate prints JSON");
    let runs: Vec<String> = record["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r.as_str().unwrap_or_default().to_string())
        .collect();
    let mut cells = std::collections::BTreeSet::new();
    for id in &runs[1..] {
        for r in repo.results(id) {
            cells.insert((
                r["split"].as_str().unwrap_or_default().to_string(),
                r["task"].as_str().unwrap_or_default().to_string(),
                r["trial"].as_u64().unwrap_or_default(),
            ));
        }
    }
    assert!(
        record["statistic"]
            .as_str()
            .is_some_and(|s| s.starts_with("pooled")),
        "{record:#}"
    );
    let executed = cache_runs(&repo.root)
        .iter()
        .filter(|r| runs[1..].contains(r))
        .count();
    Validated {
        verdict: record["verdict"].as_str().unwrap_or_default().to_string(),
        candidate_trials: executed,
        decided_on: cells.len(),
        record,
    }
}

/// Wilson 95% interval of x successes in n, in percent.
pub fn wilson(x: u32, n: u32) -> (f64, f64) {
    if n == 0 {
        return (0.0, 100.0);
    }
    let (n, p, z) = (n as f64, x as f64 / n as f64, 1.96f64);
    let c = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let h = z / (1.0 + z * z / n) * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    (100.0 * (c - h).max(0.0), 100.0 * (c + h).min(1.0))
}
