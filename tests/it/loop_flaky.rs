//! Flaky tasks through the binary: the sim with `draws: conversation` plays a model whose
//! outcome on one task (`number-lines`) is a coin flip whatever the harness, while the
//! late-artifact tasks fail until the harness says the phrase that neutralises their quirk.
//! `noise` marks the flaky task in main's note, `status` and `report` show it, and with
//! `gate.flaky: quarantine` it runs but does not decide the verdict.

use serde_json::Value;

use crate::support::loops::*;

/// Fail every trial until the harness neutralises the quirk.
const GAINS: &[&str] = &[
    "word-count",
    "shipped-customers",
    "fizzbuzz-script",
    "decode-message",
    "log-time-window",
];
/// A coin flip on every conversation, whatever the harness.
const FLAKY: &str = "number-lines";

fn scenario() -> String {
    let demo = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sim/demo.yaml"),
    )
    .unwrap();
    let mut out = String::new();
    for line in demo.lines() {
        if line.starts_with("defaults:") {
            out.push_str("defaults: {p: 0.0, slip: 0.0, draws: conversation}\n");
            continue;
        }
        out.push_str(line);
        out.push('\n');
        let id = line.trim().trim_end_matches(':');
        if line.starts_with("  ") && !line.starts_with("   ") {
            if GAINS.contains(&id) {
                out.push_str("    p: 1.0\n");
            } else if id == FLAKY {
                out.push_str("    p: 0.5\n");
            }
        }
    }
    out.replace("name: demo", "name: flaky")
}

#[test]
fn a_flaky_task_is_marked_shown_and_quarantined_without_deciding_the_verdict() {
    let repo = Repo::init("minimal");
    repo.splits(
        &["word-count", "shipped-customers", "fizzbuzz-script", FLAKY],
        &["decode-message", "log-time-window"],
        &["extract-emails"],
    );
    repo.write(".harness/flaky-sim.yaml", &scenario());
    repo.commit_all("A stand-in model with one flaky task");
    repo.edit_experiment(|t| {
        t.replace("max_turns: 30", "max_turns: 12")
            .replace("max_tool_calls: 40", "max_tool_calls: 16")
            .replace("command_timeout_sec: 60", "command_timeout_sec: 20")
            .replace(
                "scenario: builtin:demo",
                "scenario: .harness/flaky-sim.yaml",
            )
            .replace(
                "  early_stop: true",
                "  early_stop: true\n  flaky: quarantine",
            )
    });
    let status = repo.harness(&["status"]).ok();
    assert!(
        status
            .stdout
            .contains("flaky     not measured on this tree yet"),
        "{}",
        status.stdout
    );

    // 12 trials per task: ids 0–1 are what the gate compares (trials: 2), ids 2–11 the mark
    // trials. A coin flip shows both outcomes in 10 of them but for 2 in 1024.
    let noise = repo.harness(&["noise", "--trials", "12"]).ok();
    assert!(
        noise.stdout.contains("recorded in the note of"),
        "{}",
        noise.stdout
    );
    assert!(
        noise.stdout.contains(
            "gate.flaky: quarantine: validations judge flakiness on trials 2–11 (10 per task)"
        ),
        "{}",
        noise.stdout
    );
    let note = repo.note("main");
    let marks = &note["flaky_tasks"];
    assert_eq!(marks["format"], 1, "{note:#}");
    let tasks = marks["tasks"].as_object().expect("tasks");
    assert_eq!(
        tasks.keys().collect::<Vec<_>>(),
        [FLAKY],
        "only the coin flip flips: {note:#}"
    );
    assert_eq!(tasks[FLAKY]["trials"], 12, "{note:#}");
    assert_eq!(marks["validation"]["flaky"], 0, "{note:#}");
    assert_eq!(marks["from_trials"], 6 * 12, "{note:#}");

    let status = repo.harness(&["status"]).ok();
    let line = status
        .stdout
        .lines()
        .find(|l| l.starts_with("flaky "))
        .unwrap_or_else(|| panic!("{}", status.stdout));
    assert!(line.contains("1 of 4 held_in, 0 of 2 validation"), "{line}");
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with(FLAKY) && l.contains("/12")),
        "{}",
        status.stdout
    );
    let report = repo.harness(&["report"]).ok();
    assert!(
        report
            .stdout
            .lines()
            .any(|l| l.starts_with("flaky: 1 of 4 held_in task(s)") && l.contains(FLAKY)),
        "{}",
        report.stdout
    );

    // The candidate neutralises the late-artifact quirk: five tasks go 0/2 → 2/2, the coin
    // flip goes wherever it goes. Quarantined, it is left out of the test: five changed tasks
    // whatever it did (p = 1/32 ≤ 0.05), so the candidate is accepted.
    let system = format!(
        "{}\nIdentify the required output artifact and create a first version of it early.\n",
        repo.read("prompts/system.md")
    );
    let better = repo.proposal(
        1,
        "artifact",
        "main",
        &[("prompts/system.md", system.as_str())],
    );
    let out = repo.harness(&["validate", "--format", "json", &better]);
    assert_eq!(out.code, 0, "{out:#?}");
    let record: Value = serde_json::from_str(&out.stdout).unwrap();
    let d = &record["decision"];
    assert_eq!(record["verdict"], "accept", "{record:#}");
    assert_eq!(d["statistic"]["m"], 5, "{record:#}");
    assert_eq!(
        d["held_in"]["flaky"],
        serde_json::json!([FLAKY]),
        "{record:#}"
    );
    assert!(
        record["reason"]
            .as_str()
            .unwrap()
            .contains("1 flaky task(s) quarantined"),
        "{record:#}"
    );

    // Marks hold for one tree: a commit that changes no file carries them, a main with another
    // tree starts without them.
    repo.git(&["commit", "-q", "--allow-empty", "-m", "Nothing changes"]);
    let status = repo.harness(&["status"]).ok();
    assert!(
        status.stdout.contains("flaky     1 of 4 held_in"),
        "the same tree keeps its marks: {}",
        status.stdout
    );
    repo.edit_experiment(|t| t.replace("  flaky: quarantine\n", ""));
    let status = repo.harness(&["status"]).ok();
    assert!(
        status
            .stdout
            .contains("flaky     not measured on this tree yet"),
        "a new tree has no marks: {}",
        status.stdout
    );
}
