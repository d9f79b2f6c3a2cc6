//! `revalidate`: a promoted version re-run against its parent with fresh seeds, through the
//! gate's design, says whether its gain holds, vanished or reversed, and changes no history.

use serde_json::Value;

use crate::support::loops::*;

/// Every ref with its object, except run records and revalidation records (the two kinds a
/// revalidation adds), plus HEAD: what must stay byte-identical.
fn history(repo: &Repo) -> String {
    let refs: Vec<String> = repo
        .git(&["for-each-ref", "--format=%(objectname) %(refname)"])
        .lines()
        .filter(|l| {
            !l.contains(" refs/harness/runs/") && !l.contains(" refs/harness/revalidations/")
        })
        .map(str::to_string)
        .collect();
    format!("HEAD {}\n{}", repo.rev("HEAD"), refs.join("\n"))
}

/// Every note under refs/notes/harness: (annotated commit, note text).
fn notes(repo: &Repo) -> Vec<(String, String)> {
    repo.git(&["notes", "--ref=refs/notes/harness", "list"])
        .lines()
        .map(|l| {
            let (_, commit) = l.split_once(' ').unwrap();
            let text = repo.git(&["notes", "--ref=refs/notes/harness", "show", commit]);
            (commit.to_string(), text)
        })
        .collect()
}

/// The revalidation records the repository holds.
fn records(repo: &Repo) -> Vec<Value> {
    repo.git(&[
        "for-each-ref",
        "--format=%(refname)",
        "refs/harness/revalidations/",
    ])
    .lines()
    .map(|r| serde_json::from_str(&repo.git(&["show", &format!("{r}:revalidation.json")])).unwrap())
    .collect()
}

/// The run ids a revalidation record names, with their seeds and trial ids.
fn trials_of(repo: &Repo, record: &Value) -> Vec<(u64, String, u64)> {
    let mut out = Vec::new();
    for id in record["runs"].as_array().unwrap() {
        for r in repo.results(id.as_str().unwrap()) {
            out.push((
                r["seed"].as_u64().unwrap(),
                r["task"].as_str().unwrap().to_string(),
                r["trial"].as_u64().unwrap(),
            ));
        }
    }
    out
}

#[test]
fn a_real_improvement_holds_with_fresh_trials_and_history_stays() {
    let repo = Repo::small("minimal");
    // Two sim phrases: the late-artifact and exact-retry quirks of 7 of the 14 gated tasks.
    let system = format!(
        "{}\nIdentify the required output artifact and create a first version of it early.\nNever repeat an identical failing command; read the error first.\n",
        repo.read("prompts/system.md")
    );
    let better = repo.proposal(1, "better", "main", &[("prompts/system.md", &system)]);
    let v = timed("validate", || repo.harness(&["validate", &better]));
    assert_eq!(v.code, 0, "{v:#?}");
    repo.harness(&["promote", &better]).ok();
    let validated: Vec<(u64, String, u64)> = repo
        .runs()
        .iter()
        .flat_map(|id| {
            repo.results(id).into_iter().map(|r| {
                (
                    r["seed"].as_u64().unwrap(),
                    r["task"].as_str().unwrap().to_string(),
                    r["trial"].as_u64().unwrap(),
                )
            })
        })
        .collect();

    let before = (history(&repo), notes(&repo));
    let out = timed("revalidate", || repo.harness(&["revalidate"]));
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.starts_with("1/better  HOLDS"), "{}", out.stdout);
    assert!(
        out.stdout.contains("  original  accept, gain +"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("  fresh     gain +"), "{}", out.stdout);
    assert!(
        out.stdout.contains("minimum detectable effect"),
        "{}",
        out.stdout
    );

    // History unchanged: main, HEAD, every other ref and every note, byte for byte.
    assert_eq!((history(&repo), notes(&repo)), before);
    let recs = records(&repo);
    assert_eq!(recs.len(), 1, "one new record");
    let rec = &recs[0];
    assert_eq!(rec["format"], 1);
    assert_eq!(rec["verdict"], "holds");
    assert_eq!(rec["promotion"].as_str().unwrap(), repo.rev("main"));
    assert_eq!(rec["parent"].as_str().unwrap(), repo.rev("main^1"));
    assert_eq!(rec["original"]["verdict"], "accept");
    let fresh = &rec["fresh"];
    let (gain, lo, mde) = (
        fresh["gain_points"].as_f64().unwrap(),
        fresh["low_points"].as_f64().unwrap(),
        fresh["mde_points"].as_f64().unwrap(),
    );
    assert!(lo > 0.0 && gain >= mde, "{fresh:#}");
    assert_ne!(rec["fingerprint"], rec["experiment_fingerprint"]);

    // Fresh trials: none of the revalidation's seeds is one the validation used.
    let fresh_trials = trials_of(&repo, rec);
    assert!(!fresh_trials.is_empty());
    let seeds: std::collections::BTreeSet<u64> = validated.iter().map(|t| t.0).collect();
    assert!(
        fresh_trials.iter().all(|t| !seeds.contains(&t.0)),
        "every fresh trial has a new seed"
    );

    // The recorded seed reruns the same trials, from the cache.
    let seed = rec["seed"].as_u64().unwrap().to_string();
    let again = repo.harness(&["revalidate", "--format", "json", "--seed", &seed, "main"]);
    assert_eq!(again.code, 0, "{again:#?}");
    let again: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(again[0]["trials_executed"], 0, "{again:#}");
    assert_eq!(again[0]["fresh"], rec["fresh"]);
    assert_eq!((history(&repo), notes(&repo)), before);
    assert_eq!(records(&repo).len(), 2);

    let status = repo.harness(&["status"]).ok();
    assert!(
        status.stdout.contains("revalidated 1/better: holds"),
        "{}",
        status.stdout
    );

    // A second promotion on top, forced: a no-op. `--all` revalidates both, newest first, in
    // one namespace: the first promotion's trials come from the cache, and the second's parent
    // is the first promotion (same tree, same trials).
    let noop = no_op(&repo);
    repo.harness(&["promote", "--force", "--reason", "looked lucky", &noop])
        .ok();
    let all = timed("revalidate --all", || {
        repo.harness(&["revalidate", "--all", "--seed", &seed, "--format", "json"])
    });
    assert_eq!(all.code, 1, "{all:#?}");
    let all: Value = serde_json::from_str(&all.stdout).unwrap();
    let verdicts: Vec<(&str, &str)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["proposal"].as_str().unwrap(),
                r["verdict"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(verdicts, [("1/noop", "vanished"), ("1/better", "holds")]);
    // Only the no-op's own trials ran: 2 per gated task.
    let cells = 2 * (HELD_IN.len() + VALIDATION.len()) as u64;
    assert_eq!(
        all[0]["trials_executed"].as_u64().unwrap(),
        cells,
        "{all:#}"
    );
    assert_eq!(all[1]["trials_executed"], 0, "{all:#}");
    let last = repo
        .harness(&[
            "revalidate",
            "--all",
            "--last",
            "1",
            "--seed",
            &seed,
            "--format",
            "json",
        ])
        .code(1);
    let last: Value = serde_json::from_str(&last.stdout).unwrap();
    assert_eq!(last.as_array().unwrap().len(), 1);
    assert_eq!(last[0]["proposal"], "1/noop");
}

/// A no-op candidate: a comment changes nothing the agent sees, so it behaves like its parent.
fn no_op(repo: &Repo) -> String {
    let middleware = format!(
        "{}# a comment changes nothing the agent sees\n",
        repo.read("middleware/runtime_control.yaml")
    );
    repo.proposal(
        1,
        "noop",
        "main",
        &[("middleware/runtime_control.yaml", &middleware)],
    )
}

#[test]
fn a_forced_no_op_promotion_vanishes() {
    // The seeded sim: with common seeds a no-op's every trial equals its parent's, so the fresh
    // gain is exactly 0 and its interval [0, 0] covers 0.
    let repo = Repo::small("minimal");
    let noop = no_op(&repo);
    repo.harness(&["promote", "--force", "--reason", "looked lucky", &noop])
        .ok();
    let out = timed("revalidate", || repo.harness(&["revalidate", &noop]));
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.starts_with("1/noop  VANISHED"), "{}", out.stdout);
    assert!(
        out.stdout.contains("  original  no validation record"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("  forced    looked lucky"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("fresh     gain +0.0 points [+0.0, +0.0] at 90%"),
        "{}",
        out.stdout
    );
    let rec = &records(&repo)[0];
    assert_eq!(rec["verdict"], "vanished");
    assert_eq!(rec["original"]["overridden"], "looked lucky");
    assert!(
        rec["reason"]
            .as_str()
            .unwrap()
            .contains("the interval covers 0")
    );
}

/// The demo scenario with fresh draws per conversation (independent of the seed and of the
/// harness), every quirk active with probability 0.1, no slips.
fn noisy_scenario() -> String {
    let demo = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sim/demo.yaml"),
    )
    .unwrap();
    demo.lines()
        .map(|l| {
            if l.starts_with("defaults:") {
                "defaults: {p: 0.1, slip: 0.0, draws: conversation}".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace("name: demo", "name: noisy")
        + "\n"
}

/// A small repository under the noisy stand-in model whose main is a no-op promoted by force
/// (as a lucky validation would have it).
fn noisy_forced_no_op() -> Repo {
    let repo = Repo::small("minimal");
    repo.write(".harness/noisy-sim.yaml", &noisy_scenario());
    repo.commit_all("A noisy stand-in model");
    repo.edit_experiment(|t| {
        t.replace(
            "scenario: builtin:demo",
            "scenario: .harness/noisy-sim.yaml",
        )
    });
    let noop = no_op(&repo);
    repo.harness(&["promote", "--force", "--reason", "looked lucky", &noop])
        .ok();
    repo
}

#[test]
fn a_no_op_under_a_noisy_model_does_not_hold() {
    let repo = noisy_forced_no_op();
    let out = timed("revalidate", || {
        repo.harness(&["revalidate", "--format", "json"])
    });
    // Fresh draws make the gain noisy: the interval covers 0 (vanished) except when it lies
    // below 0 by chance (reversed, at most about alpha of the time); holding would take a gain
    // of at least the design's minimum detectable effect (5 of the 14 tasks), many standard
    // deviations away.
    assert_eq!(out.code, 1, "{out:#?}");
    let recs: Value = serde_json::from_str(&out.stdout).unwrap();
    let v = recs[0]["verdict"].as_str().unwrap();
    assert!(matches!(v, "vanished" | "reversed"), "{:#}", recs[0]);
    let mde = recs[0]["fresh"]["mde_points"].as_f64().unwrap();
    assert!(
        recs[0]["fresh"]["gain_points"].as_f64().unwrap() < mde,
        "{:#}",
        recs[0]
    );
}

#[test]
fn revalidate_names_a_revision_that_is_no_promotion() {
    let repo = Repo::small("minimal");
    let none = repo.harness(&["revalidate"]).code(2);
    assert!(
        none.stderr.contains("main has no promotion to revalidate"),
        "{}",
        none.stderr
    );
    let bad = repo.harness(&["revalidate", "no-such-rev"]).code(2);
    assert!(
        bad.stderr.contains("unknown revision `no-such-rev`"),
        "{}",
        bad.stderr
    );
    let plain = repo.harness(&["revalidate", "main"]).code(2);
    assert!(
        plain.stderr.contains(&format!(
            "`main` ({}) is not a promotion on main's first-parent history",
            &repo.rev("main")[..10]
        )),
        "{}",
        plain.stderr
    );
    let all = repo
        .harness(&["revalidate", "--all", "--last", "3"])
        .code(2);
    assert!(all.stderr.contains("no promotion"), "{}", all.stderr);
    // No trial ran, nothing was recorded.
    assert!(repo.runs().is_empty());
    assert!(records(&repo).is_empty());
}

#[test]
fn estimate_revalidate_prices_both_versions_in_a_fresh_namespace() {
    let repo = Repo::small("minimal");
    // A cached run of main under the experiment's own seed: a revalidation cannot use it.
    repo.harness(&["run", "--split", "held_in", "--trials", "1"])
        .ok();
    let noop = no_op(&repo);
    repo.harness(&["promote", "--force", "--reason", "looked lucky", &noop])
        .ok();
    let runs = repo.runs();
    let out = repo
        .harness(&["estimate", "revalidate", "--format", "json"])
        .ok();
    let est: Value = serde_json::from_str(&out.stdout).unwrap();
    // The promotion and its parent, 2 trials of each of the 14 gated tasks, nothing cached.
    let cells = 2 * 2 * (HELD_IN.len() + VALIDATION.len()) as u64;
    assert_eq!(est["trials"].as_u64().unwrap(), cells, "{est:#}");
    assert_eq!(est["cached"], 0, "{est:#}");
    assert!(
        est["what"]
            .as_str()
            .unwrap()
            .starts_with("revalidate 2 version(s)")
    );
    // An estimate spends nothing and records nothing.
    assert_eq!(repo.runs(), runs);
    assert!(records(&repo).is_empty());
}

/// Figures, out of the timed suite: a forced no-op under the noisy stand-in revalidated in
/// `REVALIDATE_REPS` fresh namespaces (`--seed 1001..`), each an independent sample; prints
/// how often it came out vanished, reversed and holds.
/// `REVALIDATE_REPS=20 cargo test --test it -- --ignored --nocapture loop_revalidate::figures`.
#[test]
#[ignore = "figures, about 15 s per repetition: run with --ignored --nocapture"]
fn figures() {
    let reps: u64 = std::env::var("REVALIDATE_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let repo = noisy_forced_no_op();
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    // Seeds from 1001: 1 is the experiment's own.
    for seed in 1001..=1000 + reps {
        let out = repo.harness(&[
            "revalidate",
            "--seed",
            &seed.to_string(),
            "--format",
            "json",
        ]);
        let recs: Value = serde_json::from_str(&out.stdout).unwrap();
        let v = recs[0]["verdict"].as_str().unwrap().to_string();
        eprintln!(
            "seed {seed}: {v}, gain {:+.1} [{:+.1}, {:+.1}]",
            recs[0]["fresh"]["gain_points"].as_f64().unwrap(),
            recs[0]["fresh"]["low_points"].as_f64().unwrap(),
            recs[0]["fresh"]["high_points"].as_f64().unwrap()
        );
        *counts.entry(v).or_default() += 1;
    }
    println!("revalidate, forced no-op under the noisy stand-in, {reps} namespaces: {counts:?}");
}
