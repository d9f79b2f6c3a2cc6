//! `import harbor`: a Harbor job directory becomes a run on a harness commit that `status`
//! lists, `mine --run` clusters and `propose --run` cites.
//!
//! The job is `tests/fixtures/harbor/job-2026-11-30__09-12-44`, written by hand to Harbor's
//! documented job layout and trial `result.json` schema (Harbor from PyPI needs Python >= 3.12,
//! which CI machines may lack); it is not output of Harbor itself.

use std::path::{Path, PathBuf};

use crate::support::loops::*;

fn job() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/harbor/job-2026-11-30__09-12-44")
}

fn run_id(out: &Out) -> String {
    out.stdout
        .split_whitespace()
        .find(|w| w.starts_with("harbor-"))
        .expect("a run id")
        .to_string()
}

/// A copy of the fixture job with `edit` applied to one trial's result.json.
fn edited_job(tmp: &Path, trial: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let dst = tmp.join("job");
    copy_dir(&job(), &dst);
    let f = dst.join(trial).join("result.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&f, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    dst
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let to = dst.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &to);
        } else {
            std::fs::copy(&p, &to).unwrap();
        }
    }
}

#[test]
fn an_imported_job_is_a_run_that_mine_clusters_and_proposals_cite() {
    let repo = Repo::small("minimal");
    let j = job();
    let out = repo
        .harness(&["import", "harbor", j.to_str().unwrap()])
        .ok();
    let id = run_id(&out);
    // 8 trials in the job; extract-emails is on the sealed test split.
    assert!(
        out.stdout
            .contains("7 trials imported (3 with a trajectory, 1 infra)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("1 trials of test-split"),
        "{}",
        out.stderr
    );

    let results = repo.results(&id);
    let by = |task: &str| -> Vec<&serde_json::Value> {
        results.iter().filter(|r| r["task"] == task).collect()
    };
    assert_eq!(results.len(), 7);
    assert!(by("extract-emails").is_empty(), "test split stays sealed");
    // `terminal-bench/sales-total` maps to the suite's `sales-total`.
    assert_eq!(by("sales-total").len(), 1);
    assert_eq!(by("word-count").len(), 2);
    assert_eq!(by("word-count")[0]["outcome"], "pass");
    assert_eq!(by("word-count")[1]["outcome"], "fail");
    // Harbor's environment failure is infrastructure; its agent timeout is the agent's failure.
    assert_eq!(by("reverse-lines")[0]["outcome"], "infra-error");
    assert_eq!(by("reverse-lines")[0]["infra"], "sandbox");
    assert_eq!(by("number-lines")[0]["outcome"], "fail");
    assert_eq!(by("number-lines")[0]["ending"], "budget_wall_clock");
    // A trial without a trajectory still counts.
    assert_eq!(by("count-errors")[0]["outcome"], "fail");
    assert!(by("count-errors")[0].get("trace").is_none());
    assert_eq!(by("decode-message")[0]["split"], "validation");
    let y = repo.run_yaml(&id);
    assert_eq!(y["totals"]["held_in"]["passes"], 1, "{y:?}");
    assert_eq!(y["totals"]["held_in"]["trials"], 5, "{y:?}");
    assert_eq!(y["totals"]["validation"]["passes"], 1, "{y:?}");
    assert_eq!(y["totals"]["held_in"]["infra_errors"], 1, "{y:?}");
    assert_eq!(
        y["harness_commit"].as_str(),
        Some(repo.rev("main").as_str())
    );

    // Importing the same job again records nothing new.
    let again = repo
        .harness(&["import", "harbor", j.to_str().unwrap()])
        .ok();
    assert!(
        again.stdout.contains("already holds this job"),
        "{}",
        again.stdout
    );
    assert_eq!(repo.runs(), vec![id.clone()]);

    let status = repo.harness(&["status"]).ok();
    assert!(status.stdout.contains(&id), "{}", status.stdout);

    let mined = repo
        .harness(&["mine", "--run", &id, "--format", "json"])
        .ok();
    let bundle: serde_json::Value = serde_json::from_str(&mined.stdout).unwrap();
    assert_eq!(bundle["excluded_infra"], 1);
    let cluster = bundle["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "wrong_content/root_cause/submitted_without_verification")
        .unwrap_or_else(|| panic!("{}", mined.stdout));
    assert_eq!(
        cluster["trials"],
        serde_json::json!(["sales-total#0", "word-count#1"])
    );

    let proposed = repo
        .harness(&["propose", "--run", &id, "--proposer", "catalog", "-n", "1"])
        .ok();
    let name = proposed
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("proposals/") || w.contains("/verify-final-files"))
        .unwrap_or_else(|| panic!("{}", proposed.stdout))
        .to_string();
    let show = repo
        .harness(&["show", name.trim_start_matches("proposals/")])
        .ok();
    assert!(
        show.stdout.contains(&format!("refs/harness/runs/{id}")),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("word-count#1"), "{}", show.stdout);
    assert!(show.stdout.contains("sales-total#0"), "{}", show.stdout);
}

#[test]
fn malformed_results_are_refused_naming_file_and_field() {
    let repo = Repo::small("minimal");
    let tmp = tempfile::tempdir().unwrap();
    let bad = edited_job(tmp.path(), "word-count__Lm8rT4b", |v| {
        v["verifier_result"]["rewards"]["reward"] = serde_json::json!("one");
    });
    let out = repo
        .harness(&["import", "harbor", bad.to_str().unwrap()])
        .code(2);
    assert!(
        out.stderr.contains("word-count__Lm8rT4b/result.json"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("verifier_result.rewards.reward"),
        "{}",
        out.stderr
    );
    assert!(repo.runs().is_empty(), "nothing is recorded");

    // A revision whose experiment differs from main's is not comparable evidence.
    let out = repo
        .harness(&[
            "import",
            "harbor",
            job().to_str().unwrap(),
            "--rev",
            "main~1",
        ])
        .code(2);
    assert!(
        out.stderr.contains("different experiment"),
        "{}",
        out.stderr
    );
    assert!(repo.runs().is_empty(), "nothing is recorded");

    let tmp = tempfile::tempdir().unwrap();
    let unknown = edited_job(tmp.path(), "count-errors__Zx7vB1d", |v| {
        v["task_name"] = serde_json::json!("not-in-the-suite");
    });
    let out = repo
        .harness(&["import", "harbor", unknown.to_str().unwrap()])
        .code(2);
    assert!(
        out.stderr.contains("count-errors__Zx7vB1d/result.json")
            && out.stderr.contains("task_name")
            && out.stderr.contains("not-in-the-suite"),
        "{}",
        out.stderr
    );

    let tmp = tempfile::tempdir().unwrap();
    let unfinished = edited_job(tmp.path(), "decode-message__Ui9oP0g", |v| {
        v["verifier_result"] = serde_json::Value::Null;
    });
    let out = repo
        .harness(&["import", "harbor", unfinished.to_str().unwrap()])
        .code(2);
    assert!(out.stderr.contains("verifier_result"), "{}", out.stderr);
    assert!(repo.runs().is_empty(), "nothing is recorded");
}
