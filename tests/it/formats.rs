//! Every record git-harness stores carries a `format:` version (docs/formats.md), and a record
//! of a version newer than this build reads is refused with an error naming the record and the
//! version, never half-read or skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::loops::*;
use serde_json::Value;

/// A template repository with tiny splits and one trial per task, run once and mined.
fn ran() -> Repo {
    let repo = Repo::init("minimal");
    repo.splits(
        &["word-count", "sales-total"],
        &["fizzbuzz-script"],
        &["extract-emails"],
    );
    repo.set_experiment("trials", "1");
    repo.harness(&["run", "--split", "held_in"]).ok();
    repo.harness(&["mine"]).ok();
    repo
}

fn format_of_json(v: &Value, what: &str) -> u64 {
    v["format"]
        .as_u64()
        .unwrap_or_else(|| panic!("{what} carries no format: {v}"))
}

fn format_of_yaml(v: &serde_yaml::Value, what: &str) -> u64 {
    v["format"]
        .as_u64()
        .unwrap_or_else(|| panic!("{what} carries no format: {v:?}"))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn every_stored_record_carries_a_format_version() {
    let repo = ran();
    // A validation record in a note: a proposal validated (whatever the verdict).
    let p = repo.proposal(
        1,
        "say-more",
        "main",
        &[(
            "prompts/bootstrap.md",
            &format!(
                "{}Check the output before you submit.\n",
                repo.read("prompts/bootstrap.md")
            ),
        )],
    );
    let v = repo.harness(&["validate", "--gate", "paper", &p]);
    assert!([0, 1, 3].contains(&v.code), "{}\n{}", v.stdout, v.stderr);

    // Run refs: run.yaml, every results line, every trace, the mined bundle.
    let runs = repo.runs();
    assert!(!runs.is_empty());
    let mut bundles = 0;
    for id in &runs {
        let r = format!("refs/harness/runs/{id}");
        assert_eq!(
            format_of_yaml(&repo.run_yaml(id), &format!("{r}:run.yaml")),
            1
        );
        for (n, line) in repo.results(id).iter().enumerate() {
            assert_eq!(format_of_json(line, &format!("{r}:results.jsonl:{n}")), 1);
        }
        for path in repo.git(&["ls-tree", "-r", "--name-only", &r]).lines() {
            if path.starts_with("traces/") || path == "mine/bundle.json" {
                let v: Value =
                    serde_json::from_str(&repo.git(&["show", &format!("{r}:{path}")])).unwrap();
                assert_eq!(format_of_json(&v, &format!("{r}:{path}")), 1);
                bundles += usize::from(path == "mine/bundle.json");
            }
        }
    }
    assert_eq!(bundles, 1, "mine stored one bundle");

    // Notes: the note and each validation record in it.
    let mut validations = 0;
    for line in repo
        .git(&["notes", "--ref=refs/notes/harness", "list"])
        .lines()
    {
        let commit = line.split_whitespace().nth(1).unwrap();
        let text = repo.git(&["notes", "--ref=refs/notes/harness", "show", commit]);
        let note: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(format_of_yaml(&note, &format!("note on {commit}")), 1);
        for v in note["validations"].as_sequence().into_iter().flatten() {
            assert_eq!(format_of_yaml(v, "validation record"), 1);
            validations += 1;
        }
    }
    assert!(validations >= 1, "validate wrote a validation record");

    // Cache entries (the `runs/` marks are empty files, not records).
    let cache = repo.root.join(".git/harness/cache");
    let mut entries = Vec::new();
    files_under(&cache, &mut entries);
    entries.retain(|p| p.extension().is_some_and(|e| e == "json"));
    assert!(!entries.is_empty(), "the run filled the cache");
    for p in entries {
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(format_of_json(&v, &p.display().to_string()), 1);
        assert_eq!(format_of_json(&v["result"], "a cached result"), 1);
    }
}

/// Replace `path` in the tree of run ref `id` with `text`, with plain git.
fn rewrite_run_file(repo: &Repo, id: &str, path: &str, text: &str) {
    let r = format!("refs/harness/runs/{id}");
    let index = repo.root.join(".git/rewrite-index");
    let git = |args: &[&str]| {
        output(
            Command::new("git")
                .args(args)
                .env("GIT_INDEX_FILE", &index)
                .current_dir(&repo.root),
        )
        .ok()
        .stdout
        .trim()
        .to_string()
    };
    let file = repo.root.join(".git/rewrite-blob");
    std::fs::write(&file, text).unwrap();
    git(&["read-tree", &r]);
    let blob = git(&["hash-object", "-w", file.to_str().unwrap()]);
    git(&[
        "update-index",
        "--cacheinfo",
        &format!("100644,{blob},{path}"),
    ]);
    let tree = git(&["write-tree"]);
    let commit = git(&["commit-tree", &tree, "-p", &r, "-m", "rewrite"]);
    git(&["update-ref", &r, &commit]);
}

#[test]
fn records_of_a_newer_format_are_refused_by_name() {
    let repo = ran();
    let id = repo.runs()[0].clone();

    // A cache entry of a newer format: the run that would read it says which file.
    let cache = repo.root.join(".git/harness/cache");
    let mut entries = Vec::new();
    files_under(&cache, &mut entries);
    entries.retain(|p| p.extension().is_some_and(|e| e == "json"));
    let entry = entries[0].clone();
    let saved = std::fs::read_to_string(&entry).unwrap();
    let mut v: Value = serde_json::from_str(&saved).unwrap();
    v["format"] = Value::from(7);
    std::fs::write(&entry, v.to_string()).unwrap();
    let out = repo.harness(&["run", "--split", "held_in"]).code(2);
    assert!(
        out.stderr.contains(&format!(
            "cache entry at {} has format 7; this git-harness reads formats up to 1",
            entry.display()
        )),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("newer git-harness"), "{}", out.stderr);
    std::fs::write(&entry, saved).unwrap();

    // A run record of a newer format.
    let yaml = repo.git(&["show", &format!("refs/harness/runs/{id}:run.yaml")]);
    let newer = yaml.replacen("format: 1", "format: 9", 1);
    assert_ne!(newer, yaml, "run.yaml states its format");
    rewrite_run_file(&repo, &id, "run.yaml", &newer);
    let out = repo.harness(&["run", "--split", "held_in"]).code(2);
    assert!(
        out.stderr.contains(&format!(
            "run record at refs/harness/runs/{id}:run.yaml has format 9; this git-harness reads formats up to 1"
        )),
        "{}",
        out.stderr
    );
    rewrite_run_file(&repo, &id, "run.yaml", &yaml);

    // A note of a newer format.
    let main = repo.rev("main");
    let note = repo.git(&["notes", "--ref=refs/notes/harness", "show", &main]);
    let newer = note.replacen("format: 1", "format: 5", 1);
    assert_ne!(newer, note, "the note states its format");
    repo.git(&[
        "notes",
        "--ref=refs/notes/harness",
        "add",
        "-f",
        "-m",
        &newer,
        &main,
    ]);
    let out = repo.harness(&["log"]).code(2);
    assert!(
        out.stderr.contains(&format!(
            "harness note at refs/notes/harness on {main} has format 5; this git-harness reads formats up to 1"
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn records_without_a_format_read_as_version_one() {
    let repo = ran();
    let id = repo.runs()[0].clone();
    // Strip `format` from the run record, its results and the note, as written before formats
    // were numbered: everything still reads, and a second run is answered from the first.
    let yaml = repo.git(&["show", &format!("refs/harness/runs/{id}:run.yaml")]);
    let old: String = yaml
        .lines()
        .filter(|l| !l.starts_with("format:"))
        .map(|l| format!("{l}\n"))
        .collect();
    rewrite_run_file(&repo, &id, "run.yaml", &old);
    let results: String = repo
        .results(&id)
        .into_iter()
        .map(|mut v| {
            v.as_object_mut().unwrap().remove("format");
            format!("{v}\n")
        })
        .collect();
    rewrite_run_file(&repo, &id, "results.jsonl", &results);
    let main = repo.rev("main");
    let note = repo.git(&["notes", "--ref=refs/notes/harness", "show", &main]);
    let old_note: String = note
        .lines()
        .filter(|l| !l.starts_with("format:"))
        .map(|l| format!("{l}\n"))
        .collect();
    repo.git(&[
        "notes",
        "--ref=refs/notes/harness",
        "add",
        "-f",
        "-m",
        &old_note,
        &main,
    ]);
    let out = repo
        .harness(&["run", "--split", "held_in", "--format", "json"])
        .ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["executed"], 0, "{}", out.stdout);
}
