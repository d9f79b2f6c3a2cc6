//! `git harness demo DIR`, the README's first command, as CI runs it: it finishes, promotes at
//! least one accepted edit, ends with higher held-in and validation pass rates than it started
//! with, and prints test figures for the lineage and the checklist baseline. Takes minutes.

use std::time::Instant;

use crate::support::loops::*;
use serde_json::Value;

fn rate(v: &Value, split: &str) -> f64 {
    let s = &v[split];
    s["passes"].as_f64().unwrap() / s["trials"].as_f64().unwrap()
}

/// `(pass rate %, passes, trials)` of a `report --final` line starting with `name`.
fn figures(stdout: &str, name: &str) -> (f64, u32, u32) {
    let line = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no `{name}` line in:\n{stdout}"));
    let re = regex::Regex::new(r"([0-9.]+)%\s+(\d+)/(\d+)").unwrap();
    let c = re.captures(line).unwrap_or_else(|| panic!("{line}"));
    (
        c[1].parse().unwrap(),
        c[2].parse().unwrap(),
        c[3].parse().unwrap(),
    )
}

#[test]
fn demo_improves_the_harness_and_reports_the_sealed_test_split() {
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = harness_in(tmp.path(), &["demo", "demo"]).ok();
    let wall = started.elapsed().as_secs_f64();
    let repo = Repo::open(tmp.path().join("demo"));
    assert!(out.stdout.contains("SIMULATED"), "{}", out.stdout);

    // At least one promotion the gate accepted.
    let verdicts = repo.git(&[
        "log",
        "--first-parent",
        "--merges",
        "--format=%(trailers:key=Harness-Verdict,valueonly)",
        "main",
    ]);
    assert!(
        verdicts.lines().any(|l| l.trim() == "accept"),
        "no accepted promotion on main:\n{verdicts}"
    );
    assert!(
        !verdicts.lines().any(|l| l.trim() == "none"),
        "the demo never forces a promotion:\n{verdicts}"
    );
    // Each promotion comes from its own round.
    let rounds: Vec<u32> = repo
        .git(&[
            "log",
            "--first-parent",
            "--merges",
            "--reverse",
            "--format=%(trailers:key=Harness-Round,valueonly)",
            "main",
        ])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert!(
        rounds.windows(2).all(|w| w[0] < w[1]),
        "promotions reuse round numbers: {rounds:?}"
    );

    // Pass rates of the first evaluated version and of main's tip.
    let log: Value =
        serde_json::from_str(&repo.harness(&["log", "--format", "json"]).ok().stdout).unwrap();
    let versions: Vec<&Value> = log["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v.get("held_in").is_some() && v.get("validation").is_some())
        .collect();
    let (first, last) = (versions[0], versions[versions.len() - 1]);
    assert_eq!(last["commit"].as_str().unwrap(), repo.rev("main"));
    let (h0, v0) = (rate(first, "held_in"), rate(first, "validation"));
    let (h1, v1) = (rate(last, "held_in"), rate(last, "validation"));
    assert!(h1 > h0, "held_in {h0} -> {h1}");
    assert!(v1 > v0, "validation {v0} -> {v1}");

    // The final report: opened once, figures for the lineage and the checklist baseline.
    assert_eq!(repo.test_log_len(), 1);
    assert!(
        out.stdout.contains("opening #1 (opened 0 times before)"),
        "{}",
        out.stdout
    );
    let lineage = figures(&out.stdout, "lineage");
    let checklist = figures(&out.stdout, "baseline checklist");
    assert!(lineage.2 > 0 && lineage.2 == checklist.2, "{}", out.stdout);

    // Every name the demo, `log --all` and `why` print is accepted by `show`.
    let all = repo.harness(&["log", "--all"]).ok().stdout;
    let mut names: Vec<String> = Vec::new();
    let proposal_re = regex::Regex::new(r"(?:^|[\s(])(\d+/[a-z][a-z0-9-]*)").unwrap();
    let version_re = regex::Regex::new(r"(?m)^(v\d+)\s+([0-9a-f]{10})").unwrap();
    let run_re = regex::Regex::new(r"refs/harness/runs/([0-9A-Za-z-]+)").unwrap();
    for text in [&out.stdout, &out.stderr, &all] {
        names.extend(proposal_re.captures_iter(text).map(|c| c[1].to_string()));
    }
    let versions: Vec<String> = version_re
        .captures_iter(&all)
        .flat_map(|c| [c[1].to_string(), c[2].to_string()])
        .collect();
    names.extend(versions.iter().cloned());
    for v in versions.iter().filter(|v| v.starts_with('v')) {
        let why = repo.harness(&["why", v]);
        if why.code != 0 {
            continue; // not a promotion (v0, the split commit)
        }
        names.extend(
            proposal_re
                .captures_iter(&why.stdout)
                .map(|c| c[1].to_string()),
        );
        names.extend(run_re.captures_iter(&why.stdout).map(|c| c[1].to_string()));
    }
    names.sort();
    names.dedup();
    assert!(
        names.iter().any(|n| n.contains('/')) && names.iter().any(|n| n.starts_with('v')),
        "{names:?}"
    );
    for name in &names {
        let show = repo.harness(&["show", name]);
        assert_eq!(show.code, 0, "show {name}: {}", show.stderr);
    }

    // Look-ups the cache answers completely write nothing (the first may fill the cache).
    repo.harness(&["mine"]).ok();
    let refs = || repo.git(&["for-each-ref", "--format=%(objectname) %(refname)"]);
    let before = refs();
    repo.harness(&["mine"]).ok();
    repo.harness(&["report"]).ok();
    let check = repo.harness(&["check"]);
    assert!(check.code == 0 || check.code == 1, "{}", check.stderr);
    assert_eq!(refs(), before, "cached look-ups wrote refs or notes");

    eprintln!("[demo] {} names resolved by show", names.len());
    eprintln!(
        "[demo] wall {wall:.0} s; held_in {:.1}% -> {:.1}%, validation {:.1}% -> {:.1}%; \
         test: lineage {:.1}% ({}/{}), checklist {:.1}% ({}/{}); {} promotion(s), rounds {rounds:?}",
        h0 * 100.0,
        h1 * 100.0,
        v0 * 100.0,
        v1 * 100.0,
        lineage.0,
        lineage.1,
        lineage.2,
        checklist.0,
        checklist.1,
        checklist.2,
        rounds.len()
    );
}
