//! The gate through the real pipeline with a noisy stand-in model: the sim with
//! `draws: conversation` draws each conversation's outcome afresh from a fixed per-task
//! probability, independently of the harness (unless it neutralises the quirk) and of the
//! request seed. `validate` with the pooled statistic then runs on hermetic temp repositories.
//!
//! The smoke test runs one A/A and one +10-point validation. The figures (A/A accept rate with
//! its 95% interval, power at +10 points, candidate trials per decision) come from the ignored
//! `figures` test, out of the timed suite:
//! `GATE_PIPELINE_REPS=40 cargo test --test it -- --ignored --nocapture loop_noisy_gate::figures`.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::loops::*;

/// Late-artifact tasks of the small split (4 of 14): the +10-point candidate neutralises their
/// quirk, which is active with probability `LATE_P`: 4 × 0.35 / 14 = +10 points.
const LATE: &[&str] = &[
    "word-count",
    "log-time-window",
    "decode-message",
    "fizzbuzz-script",
];
const LATE_P: f64 = 0.35;
/// Every other task's quirk is active half the time, whatever the harness.
const OTHER_P: f64 = 0.5;

/// The demo scenario with fresh draws per conversation, no slips and the probabilities above.
fn noisy_scenario() -> String {
    let demo = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sim/demo.yaml"),
    )
    .unwrap();
    let mut out = String::new();
    for line in demo.lines() {
        if line.starts_with("defaults:") {
            out.push_str(&format!(
                "defaults: {{p: {OTHER_P}, slip: 0.0, draws: conversation}}\n"
            ));
            continue;
        }
        out.push_str(line);
        out.push('\n');
        // `  task-id:` lines: a per-task probability for the late-artifact ones.
        let id = line.trim().trim_end_matches(':');
        if line.starts_with("  ") && !line.starts_with("   ") && LATE.contains(&id) {
            out.push_str(&format!("    p: {LATE_P}\n"));
        }
    }
    out.replace("name: demo", "name: noisy")
}

fn noisy_repo(seed: u32, trials: u32, max_trials: u32) -> Repo {
    let repo = Repo::small("minimal");
    repo.write(".harness/noisy-sim.yaml", &noisy_scenario());
    repo.commit_all("A noisy stand-in model");
    repo.edit_experiment(|t| {
        t.replace(
            "scenario: builtin:demo",
            "scenario: .harness/noisy-sim.yaml",
        )
        .replace("trials: 2", &format!("trials: {trials}"))
        .replace("seed: 1", &format!("seed: {seed}"))
        .replace(
            "  early_stop: true",
            &format!("  early_stop: true\n  statistic: pooled\n  max_trials: {max_trials}"),
        )
    });
    repo
}

/// One validation: (verdict, candidate trials run).
fn validate(repo: &Repo, proposal: &str) -> (String, usize) {
    let out = repo.harness(&["validate", "--format", "json", proposal]);
    assert!(matches!(out.code, 0 | 1 | 3), "{out:#?}");
    let record: Value = serde_json::from_str(&out.stdout).unwrap();
    let runs: Vec<String> = record["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let mut cells = BTreeSet::new();
    for id in &runs[1..] {
        for r in repo.results(id) {
            cells.insert((
                r["split"].as_str().unwrap().to_string(),
                r["task"].as_str().unwrap().to_string(),
                r["trial"].as_u64().unwrap(),
            ));
        }
    }
    assert!(
        record["statistic"].as_str().unwrap().starts_with("pooled"),
        "{record:#}"
    );
    (record["verdict"].as_str().unwrap().to_string(), cells.len())
}

/// An A/A candidate (a comment in a middleware file) and a +10-point one (the phrase that
/// neutralises the late-artifact quirk), each with a unique tree.
fn candidates(repo: &Repo, rep: u32) -> (String, String) {
    let middleware = format!(
        "{}# repetition {rep}: a comment changes nothing the agent sees.\n",
        repo.read("middleware/runtime_control.yaml")
    );
    let aa = repo.proposal(
        rep,
        "aa",
        "main",
        &[("middleware/runtime_control.yaml", middleware.as_str())],
    );
    let system = format!(
        "{}\nIdentify the required output artifact and create a first version of it early.\n<!-- {rep} -->\n",
        repo.read("prompts/system.md")
    );
    let better = repo.proposal(
        rep,
        "plus10",
        "main",
        &[("prompts/system.md", system.as_str())],
    );
    (aa, better)
}

#[test]
fn noisy_stand_in_drives_pooled_validation() {
    let repo = noisy_repo(7, 1, 2);
    // The parent's cache: main's trials are evidence for every validation after.
    let noise = repo.harness(&["noise", "--trials", "4"]);
    assert_eq!(noise.code, 0, "{noise:#?}");
    let (aa, better) = candidates(&repo, 1);
    let (v_aa, n_aa) = validate(&repo, &aa);
    let (v_b, n_b) = validate(&repo, &better);
    eprintln!("A/A: {v_aa} after {n_aa} candidate trials; +10: {v_b} after {n_b}");
    assert!(n_aa > 0 && n_b > 0);
    assert!(n_aa <= 28 && n_b <= 28, "at most max_trials per task");
}

/// Wilson 95% interval of x successes in n, in percent.
fn wilson(x: u32, n: u32) -> (f64, f64) {
    let (n, p, z) = (n as f64, x as f64 / n as f64, 1.96f64);
    let c = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let h = z / (1.0 + z * z / n) * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    (100.0 * (c - h).max(0.0), 100.0 * (c + h).min(1.0))
}

#[test]
#[ignore = "figures, minutes per repetition: run with --ignored --nocapture"]
fn figures() {
    let env = |k: &str, d: u32| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let reps = env("GATE_PIPELINE_REPS", 10);
    let (trials, max_trials, cached) = (
        env("GATE_PIPELINE_TRIALS", 2),
        env("GATE_PIPELINE_MAX_TRIALS", 8),
        env("GATE_PIPELINE_CACHED", 16),
    );
    let tasks = (HELD_IN.len() + VALIDATION.len()) as u32;
    let budget = 2 * tasks * 2;
    let (mut aa_acc, mut b_acc, mut aa_trials, mut b_trials) = (0, 0, 0, 0);
    for rep in 1..=reps {
        // A fresh seed per repetition: a new fingerprint, so a fresh sample of the parent.
        let repo = noisy_repo(1000 + rep, trials, max_trials);
        let noise = timed(&format!("rep {rep} noise"), || {
            repo.harness(&["noise", "--trials", &cached.to_string()])
        });
        assert_eq!(noise.code, 0, "{noise:#?}");
        let (aa, better) = candidates(&repo, rep);
        let (v, n) = timed(&format!("rep {rep} A/A"), || validate(&repo, &aa));
        aa_acc += (v == "accept") as u32;
        aa_trials += n;
        let (w, m) = timed(&format!("rep {rep} +10"), || validate(&repo, &better));
        b_acc += (w == "accept") as u32;
        b_trials += m;
        eprintln!("rep {rep}: A/A {v} ({n} trials), +10 {w} ({m} trials)");
    }
    let (lo, hi) = wilson(aa_acc, reps);
    let per = |t: usize| t as f64 / reps as f64;
    println!(
        "pipeline, noisy stand-in ({tasks} tasks, trials {trials}→{max_trials}, parent cache {cached} trials per task, pooled statistic), {reps} repetitions:"
    );
    println!(
        "  A/A accept {:.1}% [{lo:.1}, {hi:.1}]; +10pt accept {:.1}%; candidate trials per decision A/A {:.0}, +10 {:.0}, mix 80/20 {:.0} (budget {budget})",
        100.0 * aa_acc as f64 / reps as f64,
        100.0 * b_acc as f64 / reps as f64,
        per(aa_trials),
        per(b_trials),
        0.8 * per(aa_trials) + 0.2 * per(b_trials)
    );
}
