//! Mining and a catalog proposal round on the demo suite with the simulated model under the
//! `minimal` template: the clusters name the sim quirks that fired, and each catalog proposal is
//! one branch on one surface whose evidence `git harness show` and the trailers carry.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use crate::support::propose::*;
use serde_json::Value;

struct Demo {
    repo: Repo,
    bundle: Value,
    propose: Out,
}

/// One repository for every test of this file: init, small splits, mine, one catalog round.
fn demo() -> &'static Demo {
    static DEMO: OnceLock<Demo> = OnceLock::new();
    DEMO.get_or_init(|| {
        let repo = Repo::init("minimal");
        repo.small_splits();
        let mined = repo.harness(&["mine", "--format", "json"]).ok();
        let bundle: Value = serde_json::from_str(&mined.stdout).unwrap();
        let propose = repo.harness(&["propose", "--proposer", "catalog", "-n", "3"]);
        Demo {
            repo,
            bundle,
            propose,
        }
    })
}

/// The agent mechanism each sim quirk should be mined as.
fn expected_mechanism(quirk: &str) -> &'static str {
    match quirk {
        "late-artifact" => "no_artifact_before_budget",
        "exact-retry" => "repeated_identical_failing_command",
        "loop" => "repeated_calls_without_progress",
        "no-verify" => "submitted_without_verification",
        "env-loss" => "env_change_not_persisted",
        other => panic!("unknown quirk {other}"),
    }
}

#[test]
fn mine_finds_a_cluster_for_every_sim_quirk() {
    let d = demo();
    let quirks = demo_quirks();
    let clusters = d.bundle["clusters"].as_array().unwrap();
    assert!(!clusters.is_empty());
    // Trials of each quirk, by mechanism; a trial whose quirk did not fire passes, and a slip
    // (explore, then submit) is `submitted_without_changes`.
    let mut by_quirk: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for c in clusters {
        let mechanism = c["signature"]["agent_mechanism"].as_str().unwrap();
        assert!(
            git_harness::mine::MECHANISMS
                .iter()
                .any(|(m, _)| *m == mechanism),
            "{mechanism}"
        );
        assert_eq!(
            c["id"].as_str().unwrap().rsplit('/').next().unwrap(),
            mechanism
        );
        for t in c["trials"].as_array().unwrap() {
            let task = t.as_str().unwrap().split('#').next().unwrap();
            assert!(HELD_IN.contains(&task), "{task} is not held-in");
            let quirk = &quirks[task];
            *by_quirk
                .entry(quirk.clone())
                .or_default()
                .entry(mechanism.to_string())
                .or_default() += 1;
        }
    }
    for quirk in [
        "late-artifact",
        "exact-retry",
        "loop",
        "no-verify",
        "env-loss",
    ] {
        let got = by_quirk
            .get(quirk)
            .unwrap_or_else(|| panic!("no failed trial of quirk {quirk}: {by_quirk:?}"));
        let want = expected_mechanism(quirk);
        for (mechanism, n) in got {
            assert!(
                mechanism == want || mechanism == "submitted_without_changes",
                "{n} trial(s) of quirk {quirk} mined as {mechanism}, expected {want}: {by_quirk:?}"
            );
        }
        assert!(got.contains_key(want), "{quirk}: {got:?}");
    }
    // Only held-in results are read, and the clusters are most actionable first.
    let ranks: Vec<u64> = clusters
        .iter()
        .map(|c| c["rank"].as_u64().unwrap())
        .collect();
    assert_eq!(ranks, (1..=clusters.len() as u64).collect::<Vec<_>>());
    let passing: Vec<&str> = d.bundle["passing_tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(passing.iter().all(|t| HELD_IN.contains(t)), "{passing:?}");
}

#[test]
fn mine_text_and_markdown_name_the_same_clusters() {
    let d = demo();
    let text = d.repo.harness(&["mine"]).ok().stdout;
    let md = d
        .repo
        .harness(&["mine", "--format", "markdown"])
        .ok()
        .stdout;
    for c in d.bundle["clusters"].as_array().unwrap() {
        let id = c["id"].as_str().unwrap();
        assert!(text.contains(id), "{id} not in:\n{text}");
        assert!(md.contains(id), "{id} not in:\n{md}");
    }
    let secret: Vec<&str> = VALIDATION.iter().chain(TEST).copied().collect();
    assert_eq!(mentioned(&text, &secret), Vec::<&str>::new());
    assert_eq!(mentioned(&md, &secret), Vec::<&str>::new());
}

#[test]
fn catalog_round_branches_three_single_surface_proposals() {
    let d = demo();
    let out = &d.propose;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let branches = d.repo.proposal_branches();
    assert_eq!(branches.len(), 3, "{branches:?}\n{}", out.stdout);
    let main = d.repo.git(&["rev-parse", "main"]).trim().to_string();
    let mut surfaces = BTreeSet::new();
    let mut mechanisms = BTreeSet::new();
    for b in &branches {
        assert!(b.starts_with("harness/proposals/1/"), "{b}");
        assert!(
            out.stdout.contains(b.as_str()),
            "{b} not in:\n{}",
            out.stdout
        );
        // One commit on main, touching exactly one file, which is a declared surface.
        assert_eq!(d.repo.git(&["rev-parse", &format!("{b}^")]).trim(), main);
        let files = d.repo.git(&["diff", "--name-only", &format!("{b}^"), b]);
        let files: Vec<&str> = files.lines().collect();
        assert_eq!(files.len(), 1, "{b}: {files:?}");
        let trailers = d.repo.git(&[
            "log",
            "-1",
            "--format=%(trailers:key=Harness-Surface,valueonly)",
            b,
        ]);
        assert_eq!(trailers.trim(), files[0]);
        assert!(!files[0].starts_with(".harness"));
        surfaces.insert(files[0].to_string());
        let cluster = d.repo.git(&[
            "log",
            "-1",
            "--format=%(trailers:key=Harness-Cluster,valueonly)",
            b,
        ]);
        mechanisms.insert(cluster.trim().rsplit('/').next().unwrap().to_string());
        // `show` displays the evidence: cluster, trials, verifier and trace lines, the diff.
        let show = d.repo.harness(&["show", b]).ok().stdout;
        for want in [
            "Evidence",
            "- cluster ",
            "- trials: ",
            "verifier | ",
            "trace    | ",
            "Expected effect: ",
            "Regression risk: ",
            "Harness-Evidence: refs/harness/runs/",
            &format!("+++ b/{}", files[0]),
        ] {
            assert!(show.contains(want), "{b}: `{want}` not in:\n{show}");
        }
        assert!(show.contains(cluster.trim()), "{show}");
    }
    assert_eq!(surfaces.len(), 3, "distinct surfaces: {surfaces:?}");
    assert_eq!(mechanisms.len(), 3, "distinct mechanisms: {mechanisms:?}");
    // The proposals target the three most actionable clusters that have a remedy.
    let top: Vec<&str> = d.bundle["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["signature"]["agent_mechanism"].as_str().unwrap())
        .collect();
    assert!(mechanisms.contains(top[0]), "{top:?} vs {mechanisms:?}");
}

#[test]
fn proposal_trailers_are_all_present() {
    let d = demo();
    assert_eq!(d.propose.code, 0, "{}", d.propose.stderr);
    let main = d.repo.git(&["rev-parse", "main"]).trim().to_string();
    for b in d.repo.proposal_branches() {
        let trailers = d.repo.git(&["log", "-1", "--format=%(trailers)", &b]);
        let mut keys = BTreeMap::new();
        for line in trailers.lines().filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once(": ").unwrap_or_else(|| panic!("{line}"));
            assert!(
                keys.insert(k.to_string(), v.to_string()).is_none(),
                "{k} twice"
            );
        }
        for k in [
            "Harness-Surface",
            "Harness-Cluster",
            "Harness-Evidence",
            "Harness-Parent",
            "Harness-Proposer",
            "Harness-Round",
        ] {
            assert!(keys.contains_key(k), "{b}: {k} missing in:\n{trailers}");
        }
        assert_eq!(keys["Harness-Parent"], main);
        assert_eq!(keys["Harness-Round"], "1");
        assert!(keys["Harness-Proposer"].starts_with("catalog"), "{keys:?}");
        let evidence: Vec<&str> = keys["Harness-Evidence"].split(' ').collect();
        assert!(
            evidence[0].starts_with("refs/harness/runs/"),
            "{evidence:?}"
        );
        assert!(d.repo.git(&["rev-parse", "--verify", evidence[0]]).len() >= 40);
        for trial in &evidence[1..] {
            let task = trial.split('#').next().unwrap();
            assert!(HELD_IN.contains(&task), "{trial}");
        }
        // The cluster is one of the bundle's.
        let cluster = &keys["Harness-Cluster"];
        assert!(
            d.bundle["clusters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["id"] == cluster.as_str()),
            "{cluster}"
        );
    }
}

#[test]
fn catalog_commit_messages_name_no_validation_or_test_task() {
    let d = demo();
    let secret: Vec<&str> = VALIDATION.iter().chain(TEST).copied().collect();
    for b in d.repo.proposal_branches() {
        let msg = d.repo.git(&["log", "-1", "--format=%B", &b]);
        assert_eq!(mentioned(&msg, &secret), Vec::<&str>::new(), "{b}:\n{msg}");
    }
}
