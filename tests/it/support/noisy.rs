//! The noisy stand-in model on the small loop split: the sim with `draws: conversation` draws
//! each conversation's outcome afresh from a fixed per-task probability, independently of the
//! request seed and of the harness (unless the harness neutralises the task's quirk). Shared by
//! `loop_noisy_gate` and `benches/gate_pipeline.rs`; `benches/gate.rs` (e) runs the same
//! experiment in process.
//!
//! Per-task pass rates of main (a task passes iff its quirk is inactive; no slips): the 4
//! late-artifact tasks and the 2 env-loss tasks 65%, the 8 others 50%. Candidates:
//!
//! | effect | what the candidate says | tasks that then always pass | gain |
//! |---|---|---|---|
//! | A/A | a comment in a middleware file | none | 0 |
//! | +5 | the env-loss phrase | 2 × 35% | 0.7 / 14 = +5.0 points |
//! | +10 | the late-artifact phrases | 4 × 35% | 1.4 / 14 = +10.0 points |
//! | +20 | late-artifact and no-verify phrases | 4 × 35% + 3 × 50% | 2.9 / 14 = +20.7 points |

use std::path::Path;

use serde_json::Value;

use super::loops::{HELD_IN, VALIDATION};
use super::repo::Repo;

/// Probability that the late-artifact and env-loss quirks are active.
pub const LOW_P: f64 = 0.35;
/// Probability that every other quirk is active.
pub const OTHER_P: f64 = 0.5;

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

/// The demo scenario with fresh draws per conversation, no slips and the probabilities above.
pub fn scenario() -> String {
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
        if let Some(quirk) = line.strip_prefix("    quirk: ")
            && task
                .as_deref()
                .is_some_and(|t| HELD_IN.contains(&t) || VALIDATION.contains(&t))
            && matches!(quirk.trim(), "late-artifact" | "env-loss")
        {
            out.push_str(&format!("    p: {LOW_P}\n"));
        }
    }
    out.replace("name: demo", "name: noisy")
}

/// The small split with the noisy stand-in, the pooled statistic and the given design.
pub fn repo(seed: u32, trials: u32, max_trials: Option<u32>, continue_p: f64) -> Repo {
    let repo = Repo::small("minimal");
    repo.write(".harness/noisy-sim.yaml", &scenario());
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
