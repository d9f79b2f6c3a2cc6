//! An A/A test of the gate: a candidate whose behaviour is identical to its parent's (a
//! comment-only edit of a middleware file) is validated over several seeded repetitions. The
//! strict gate must accept it in at most 5% of them; what the paper rule does is printed.
//!
//! Parent and candidate trials share their per-trial seeds (common random numbers) and the sim
//! is a pure function of (seed, task, what the harness says), so an A/A pair is expected to give
//! identical outcomes: every difference printed here comes from the environment (timeouts under
//! load), not from the harness.

use std::collections::BTreeMap;

use crate::support::loops::*;

const REPETITIONS: u32 = 5;

/// Outcomes per (split, task, trial) of the given runs; later runs win.
fn outcomes(repo: &Repo, runs: &[String]) -> BTreeMap<(String, String, u64), String> {
    let mut out = BTreeMap::new();
    for id in runs {
        for r in repo.results(id) {
            out.insert(
                (
                    r["split"].as_str().unwrap().to_string(),
                    r["task"].as_str().unwrap().to_string(),
                    r["trial"].as_u64().unwrap(),
                ),
                r["outcome"].as_str().unwrap().to_string(),
            );
        }
    }
    out
}

#[derive(Debug, Default)]
struct Tally {
    accepted: u32,
    rejected: u32,
    indecisive: u32,
}

impl Tally {
    fn add(&mut self, code: i32) {
        match code {
            0 => self.accepted += 1,
            1 => self.rejected += 1,
            3 => self.indecisive += 1,
            c => panic!("validate exited {c}"),
        }
    }
}

#[test]
fn a_behaviour_identical_candidate_is_rarely_accepted() {
    let repo = Repo::init("minimal");
    repo.splits(&HELD_IN[..6], &VALIDATION[..6], TEST);
    repo.edit_experiment(|t| {
        t.replace("max_turns: 30", "max_turns: 16")
            .replace("max_tool_calls: 40", "max_tool_calls: 24")
            .replace("command_timeout_sec: 60", "command_timeout_sec: 20")
            .replace("trials: 2", "trials: 1")
    });
    let mut strict = Tally::default();
    let mut paper = Tally::default();
    let mut compared = 0;
    let mut discordant = 0;
    for rep in 1..=REPETITIONS {
        repo.set_experiment("seed", &(100 + rep).to_string());
        let middleware = format!(
            "{}# A/A repetition {rep}: a comment changes nothing the agent sees.\n",
            repo.read("middleware/runtime_control.yaml")
        );
        let files = [("middleware/runtime_control.yaml", middleware.as_str())];
        // Two branches of the same tree: the second validation reuses the first's trials.
        let s = repo.proposal(rep, "aa-strict", "main", &files);
        let p = repo.proposal(rep, "aa-paper", "main", &files);
        let sv = timed(&format!("rep {rep} strict"), || {
            repo.harness(&["validate", "--gate", "strict", "--format", "json", &s])
        });
        strict.add(sv.code);
        let pv = timed(&format!("rep {rep} paper"), || {
            repo.harness(&["validate", "--gate", "paper", "--format", "json", &p])
        });
        paper.add(pv.code);

        let record: serde_json::Value = serde_json::from_str(&sv.stdout).unwrap();
        let prec: serde_json::Value = serde_json::from_str(&pv.stdout).unwrap();
        let runs = |r: &serde_json::Value| -> Vec<String> {
            r["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect()
        };
        let (sr, pr) = (runs(&record), runs(&prec));
        let parent = outcomes(&repo, &sr[..1]);
        // Both branches hold the same tree: their candidate trials are one candidate's.
        let candidate = outcomes(&repo, &[&sr[1..], &pr[1..]].concat());
        let counts = |r: &serde_json::Value, split: &str| {
            let s = &r[split];
            format!(
                "{}/{} -> {}/{}",
                s["parent_passes"],
                s["parent_trials"],
                s["candidate_passes"],
                s["candidate_trials"]
            )
        };
        eprintln!(
            "rep {rep}: strict {} (held_in {}, validation {}; {}); paper {} (held_in {}, validation {})",
            record["verdict"],
            counts(&record, "held_in"),
            counts(&record, "validation"),
            record["early_stop"],
            prec["verdict"],
            counts(&prec, "held_in"),
            counts(&prec, "validation"),
        );
        for (k, o) in &candidate {
            if let Some(po) = parent.get(k) {
                compared += 1;
                if po != o {
                    discordant += 1;
                    eprintln!("  discordant {k:?}: parent {po}, candidate {o}");
                }
            }
        }
    }
    eprintln!(
        "A/A over {REPETITIONS} seeds: strict {strict:?}, paper {paper:?}; \
         {discordant} of {compared} paired trials differ"
    );
    assert!(compared > 0);
    assert!(
        f64::from(strict.accepted) <= 0.05 * f64::from(REPETITIONS),
        "strict accepted an A/A candidate in {} of {REPETITIONS} repetitions",
        strict.accepted
    );
}
