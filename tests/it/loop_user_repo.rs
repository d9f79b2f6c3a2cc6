//! A user's own repository, driven through the binary on small splits of the demo suite:
//! rejecting a checked-out proposal lands on main, look-ups answered from the cache write
//! nothing, uncommitted surface edits are named, a new suite starts with the model unset, and
//! stored records carry no Rust debug text.

use std::path::Path;
use std::process::Command;

use crate::support::loops::*;

/// Every ref with its target: what a read-only command must leave as it was.
fn all_refs(repo: &Repo) -> String {
    repo.git(&["for-each-ref", "--format=%(objectname) %(refname)"])
}

fn ref_names(repo: &Repo) -> Vec<String> {
    repo.git(&["for-each-ref", "--format=%(refname)"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// A proposal that changes nothing the simulated model reacts to: the gate rejects it.
fn neutral_proposal(repo: &Repo) -> String {
    let text = format!("{}\n", repo.read("prompts/system.md"));
    repo.proposal(1, "blank-line", "main", &[("prompts/system.md", &text)])
}

#[test]
fn rejecting_a_checked_out_proposal_lands_on_main() {
    let repo = Repo::small("minimal");
    repo.set_experiment("trials", "1");
    let name = neutral_proposal(&repo);
    repo.git(&["checkout", "-q", "harness/proposals/1/blank-line"]);

    // With uncommitted edits the branch could not be left: refused before any trial runs.
    repo.write("prompts/bootstrap.md", "edited by hand\n");
    let refused = repo.harness(&["validate", &name]).code(2);
    assert!(
        refused.stderr.contains(
            "branch harness/proposals/1/blank-line is checked out and has uncommitted changes"
        ),
        "{}",
        refused.stderr
    );
    assert!(repo.runs().is_empty(), "no trial ran");
    repo.git(&["checkout", "-q", "--", "prompts/bootstrap.md"]);

    let out = repo.harness(&["validate", &name]).code(1);
    assert!(out.stdout.contains("REJECT"), "{}", out.stdout);
    assert_eq!(
        repo.git(&["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/main"
    );
    assert_eq!(repo.rev("HEAD"), repo.rev("main"), "HEAD is not unborn");
    assert_eq!(repo.git(&["status", "--porcelain"]), "");
    assert!(!repo.rev("refs/harness/rejected/1/blank-line").is_empty());
}

#[test]
fn look_ups_answered_from_the_cache_write_nothing() {
    let repo = Repo::small("minimal");
    repo.set_experiment("trials", "1");
    repo.harness(&["run"]).ok();
    let runs = repo.runs();
    assert_eq!(runs.len(), 1);
    let names = ref_names(&repo);
    let notes = repo.rev("refs/notes/harness");

    // The first mine stores its bundle with the run it read; no new run, no new note entry.
    repo.harness(&["mine"]).ok();
    assert_eq!(ref_names(&repo), names, "mine made no new ref");
    assert_eq!(repo.rev("refs/notes/harness"), notes, "mine wrote no note");

    let before = all_refs(&repo);
    repo.harness(&["mine"]).ok();
    let check = repo.harness(&["check"]);
    assert!(check.code == 0 || check.code == 1, "{check:?}");
    repo.harness(&["report"]).ok();
    repo.harness(&["run", "--split", "held_in"]).ok();
    repo.harness(&["run"]).ok();
    assert_eq!(
        all_refs(&repo),
        before,
        "fully cached look-ups write nothing"
    );

    // The note of main holds each run summary once.
    let note = repo.note("main");
    let entries = note["runs"].as_array().expect("runs").clone();
    let mut seen = entries.clone();
    seen.dedup();
    assert_eq!(seen.len(), entries.len(), "{entries:#?}");
    assert_eq!(entries.len(), 2, "one summary per split: {entries:#?}");
}

#[test]
fn run_names_uncommitted_surface_edits_and_worktree_evaluates_them() {
    let repo = Repo::small("minimal");
    repo.set_experiment("trials", "1");
    let bootstrap = format!(
        "{}Identify the required output artifact and create a first version of it early.\n",
        repo.read("prompts/bootstrap.md")
    );
    repo.write("prompts/bootstrap.md", &bootstrap);
    repo.write("scratch.txt", "not a surface\n");
    let args = ["run", "--split", "held_in", "--tasks", "word-count"];
    let out = repo.harness(&args).ok();
    assert!(
        out.stderr
            .contains("uncommitted changes to prompts/bootstrap.md;")
            && out.stderr.contains("--worktree"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("scratch.txt"), "{}", out.stderr);
    // The summary line gives the run's wall time; the table's column is the trials' own time.
    assert!(out.stdout.contains("s wall time)"), "{}", out.stdout);
    assert!(out.stdout.contains("trial time"), "{}", out.stdout);

    let out = repo
        .harness(&[
            "run",
            "--worktree",
            "--split",
            "held_in",
            "--tasks",
            "word-count",
        ])
        .ok();
    assert!(!out.stderr.contains("uncommitted"), "{}", out.stderr);
    let id = out
        .stdout
        .split_whitespace()
        .nth(1)
        .expect("run id")
        .to_string();
    let yaml = repo.run_yaml(&id);
    assert_eq!(yaml["worktree"], serde_yaml::Value::Bool(true), "{yaml:?}");
    assert_eq!(yaml["surface_tree"].as_str(), Some("worktree"));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A suite of a few demo tasks under other names: tasks the simulated model never saw.
fn own_suite(dir: &Path) {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/suites/demo");
    for (i, t) in HELD_IN.iter().chain(VALIDATION).chain(TEST).enumerate() {
        copy_dir(&demo.join(t), &dir.join(format!("my-task-{i}")));
    }
}

#[test]
fn init_with_an_own_suite_refuses_to_run_until_the_model_is_set() {
    let tmp = tempfile::tempdir().unwrap();
    own_suite(&tmp.path().join("suite"));
    let init = harness_in(tmp.path(), &["init", "h", "--suite", "suite"]).ok();
    assert!(init.stderr.contains("set the model"), "{}", init.stderr);
    let repo = Repo::open(tmp.path().join("h"));
    let exp = repo.read(".harness/experiment.yaml");
    assert!(exp.contains("  provider: unset\n"), "{exp}");
    assert!(exp.contains("#   provider: openai"), "{exp}");
    repo.harness(&["split"]).ok();
    let run = repo.harness(&["run", "--trials", "1"]).code(2);
    assert!(
        run.stderr.contains("the experiment's model is not set")
            && run.stderr.contains("hint: set model.provider"),
        "{}",
        run.stderr
    );
    assert!(repo.runs().is_empty());

    // The simulated model on these tasks runs, but says on every command what it is.
    repo.edit_experiment(|t| {
        t.replace(
            "  provider: unset\n  name: unset\n",
            "  provider: sim\n  name: sim-quirky-1\n  scenario: builtin:demo\n",
        )
    });
    let splits: serde_yaml::Value =
        serde_yaml::from_str(&repo.read(".harness/splits.yaml")).unwrap();
    let first = |split: &str| splits[split][0].as_str().unwrap().to_string();
    let run = repo
        .harness(&["run", "--trials", "1", "--tasks", &first("held_in")])
        .ok();
    assert!(
        run.stderr
            .contains("warning: the model is `sim`, the SIMULATED model"),
        "{}",
        run.stderr
    );
    let check = repo.harness(&["check", "--tasks", &first("held_in")]);
    assert!(check.code == 0 || check.code == 1, "{check:?}");
    assert!(check.stderr.contains("SIMULATED model"), "{check:?}");
}

#[test]
fn stored_records_and_messages_carry_no_debug_text() {
    let repo = Repo::small("minimal");
    repo.set_experiment("trials", "1");
    // Model names keep their case in records.
    repo.edit_experiment(|t| t.replace("name: sim-quirky-1", "name: Sim-Quirky-1"));
    let out = repo
        .harness(&["run", "--split", "held_in", "--tasks", "word-count"])
        .ok();
    let id = out.stdout.split_whitespace().nth(1).expect("run id");
    let yaml = repo.run_yaml(id);
    assert_eq!(yaml["model"].as_str(), Some("sim/Sim-Quirky-1"), "{yaml:?}");
    assert_eq!(yaml["runner"].as_str(), Some("auto"));
    let status = repo.harness(&["status"]).ok();
    assert!(
        status.stdout.contains("model Sim-Quirky-1 (sim)"),
        "{}",
        status.stdout
    );

    // A reference solution that exits non-zero is described in words.
    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("suite");
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/suites/demo");
    copy_dir(&demo.join("word-count"), &suite.join("word-count"));
    let solve = suite.join("word-count/solution/solve.sh");
    std::fs::write(&solve, "#!/bin/sh\necho giving up\nexit 3\n").unwrap();
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_git-harness"))
            .args(["tasks", "check"])
            .arg(&suite)
            .current_dir(tmp.path()),
    );
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("solve.sh exit 3"), "{text}");
    assert!(!text.contains("Some("), "{text}");
}

#[test]
fn traces_are_one_step_away() {
    let repo = Repo::small("minimal");
    repo.set_experiment("trials", "1");
    let out = repo
        .harness(&["run", "--split", "held_in", "--tasks", "word-count"])
        .ok();
    let id = out
        .stdout
        .split_whitespace()
        .nth(1)
        .expect("run id")
        .to_string();

    let shown = repo.harness(&["trace", &id, "word-count#0"]).ok();
    assert!(
        shown.stdout.starts_with(&format!("{id}:word-count#0  ")),
        "{}",
        shown.stdout
    );
    for part in ["── turn 1", "system:", "── verifier", "ended: "] {
        assert!(shown.stdout.contains(part), "{part}: {}", shown.stdout);
    }
    let joined = repo.harness(&["trace", &format!("{id}:word-count#0")]).ok();
    assert_eq!(joined.stdout, shown.stdout);

    let atif = repo
        .harness(&["export", "--atif", &format!("{id}:word-count#0")])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&atif.stdout).expect("json");
    assert!(v["schema_version"].as_str().is_some(), "{v}");

    // Names that do not resolve are usage errors, not infrastructure errors.
    repo.harness(&["export", "--atif", "missing-trace.json"])
        .code(2);
    let nope = repo.harness(&["trace", &id, "no-such-task#0"]).code(2);
    assert!(
        nope.stderr.contains("has no trial no-such-task#0"),
        "{}",
        nope.stderr
    );
    repo.harness(&["trace", "no-such-run", "word-count#0"])
        .code(2);
}
