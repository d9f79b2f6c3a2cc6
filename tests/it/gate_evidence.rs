//! Parent evidence through `validate`: the parent's cached trials beyond the compared ones count
//! towards its per-task pass rates, so a real regression of one task is a significant break,
//! while the same 2/2 → 0/2 without that evidence is only a suspected one.

use crate::support::loops::*;
use serde_json::Value;

/// The candidate blocks the one command that solves `number-lines`: that task fails every trial,
/// nothing else changes.
fn breaking_middleware(note: &str) -> String {
    format!(
        "# Blocks numbering ({note}).\nenabled: true\nrules:\n  - name: no-awk-numbering\n    on: tool_call\n    when: {{ command_matches: \"print NR\" }}\n    action: block\n    message: Not allowed.\n"
    )
}

fn decision(out: &Out) -> Value {
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "validate json: {e}\nstdout:\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        )
    });
    let d = if v.is_array() { v[0].clone() } else { v };
    d.get("decision").cloned().unwrap_or(d)
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn cached_parent_trials_make_a_real_single_task_regression_significant() {
    let repo = Repo::init("minimal");
    repo.splits(
        &["number-lines", "count-errors"],
        &["top-ips", "sort-scores"],
        TEST,
    );
    // The no-verify tasks pass when the system prompt says the phrase that neutralises the
    // quirk; the sim's occasional slips keep them below 100%.
    let system = format!(
        "{}\nVerify final files against the instruction before you submit.\n",
        repo.read("prompts/system.md")
    );
    repo.write("prompts/system.md", &system);
    repo.commit_all("A system prompt that asks to verify");
    repo.edit_experiment(|t| {
        t.replace("max_turns: 30", "max_turns: 16")
            .replace("max_tool_calls: 40", "max_tool_calls: 24")
            .replace("command_timeout_sec: 60", "command_timeout_sec: 20")
            // Four tasks can never reach the strict test's alpha; without early stopping the
            // whole table is there to read.
            .replace("early_stop: true", "early_stop: false")
    });

    // Only the compared trials (2 per task): 2/2 → 0/2 is suspected, not broken.
    let a = repo.proposal(
        1,
        "block-a",
        "main",
        &[("middleware/runtime_control.yaml", &breaking_middleware("a"))],
    );
    let out = repo.harness(&["validate", "--format", "json", &a]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let d = decision(&out);
    assert_eq!(names(&d["held_in"]["suspect"]), ["number-lines"], "{d}");
    assert!(names(&d["held_in"]["broke"]).is_empty(), "{d}");

    // main has been evaluated with more trials since (as `run --trials` or earlier looks
    // leave them): the same regression is now significant.
    repo.harness(&["run", "main", "--split", "held_in", "--trials", "24"])
        .ok();
    let b = repo.proposal(
        1,
        "block-b",
        "main",
        &[("middleware/runtime_control.yaml", &breaking_middleware("b"))],
    );
    let out = repo.harness(&["validate", "--format", "json", &b]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let d = decision(&out);
    assert_eq!(names(&d["held_in"]["broke"]), ["number-lines"], "{d}");
    assert!(
        d["reason"].as_str().unwrap().contains("broke number-lines"),
        "{d}"
    );
}

/// The reads of the parent's cached trials as evidence, from the cache's debug events of a
/// command run with `RUST_LOG=git_harness::cache=debug`.
fn evidence_reads(stderr: &str, commit: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.contains("cached trials read") && l.contains(commit))
        .count()
}

/// A validation reads the parent's cached trials once per look: the compared table's
/// evidence, the marks and the flaky record in main's note all come from that one read (the
/// note was written from a second read of every trial before).
#[test]
fn a_validation_reads_the_parents_cached_trials_once_per_look() {
    let repo = Repo::init("minimal");
    repo.splits(
        &["number-lines", "count-errors"],
        &["top-ips", "sort-scores"],
        TEST,
    );
    repo.edit_experiment(|t| t.replace("early_stop: true", "early_stop: false"));
    // Evidence beyond the compared trials, so that the note has something to count.
    repo.harness(&["run", "main", "--split", "held_in", "--trials", "4"])
        .ok();
    let main = repo.rev("main");
    let a = repo.proposal(
        1,
        "block-a",
        "main",
        &[("middleware/runtime_control.yaml", &breaking_middleware("a"))],
    );
    let out = output(
        repo.harness_cmd(&["validate", "--format", "json", &a])
            .env("RUST_LOG", "git_harness::cache=debug"),
    );
    assert!(matches!(out.code, 0 | 1), "{}\n{}", out.stdout, out.stderr);
    // One look (no `max_trials`): one read of main's trials.
    assert_eq!(evidence_reads(&out.stderr, &main), 1, "{}", out.stderr);
    // The note's record counts every cached trial of main: 4 held-in trials per task from the
    // run, 2 validation trials per task from the validation.
    let flaky = &repo.note("main")["flaky_tasks"];
    assert_eq!(flaky["from_trials"], 2 * 4 + 2 * 2, "{flaky}");
}
