//! `init` adopting a directory with malformed config (file, line, field, exit 2, no commit) and
//! `split` (deterministic, refuses to re-split once results exist unless --force, which the
//! commit records).

use crate::support::repo::Repo;
use git_harness::lineage;

/// `init repo` in a directory that already holds `files`; returns the run.
fn adopt(files: &[(&str, &str)]) -> (Repo, crate::support::hermetic::Out) {
    let r = Repo::empty();
    for (path, text) in files {
        let full = r.root.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, text).expect("write");
    }
    let run = r.harness_in(r.tmp.path(), &["init", "repo"]);
    (r, run)
}

/// Nothing was committed, and no template file was written next to the user's files.
fn assert_nothing_committed(r: &Repo, files: &[(&str, &str)]) {
    let head = r.git_in(&r.root, &["rev-parse", "--verify", "-q", "HEAD"]);
    assert_ne!(head.code, 0, "no commit may exist: {}", head.stdout);
    let refs = r.git(&["for-each-ref"]);
    assert_eq!(refs, "", "no refs may exist");
    let mut on_disk: Vec<String> = walk(&r.root);
    on_disk.sort();
    let mut expected: Vec<String> = files.iter().map(|(p, _)| p.to_string()).collect();
    expected.sort();
    assert_eq!(on_disk, expected, "init wrote files although it failed");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("inside");
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out
}

const BAD_KIND: &str = "\
name: mine
protocol: tools
surfaces:
  - path: prompts/system.md
    kind: promt
";

const BAD_BOUNDS: &str = "\
name: mine
protocol: tools
surfaces:
  - path: prompts/system.md
    kind: prompt
    bounds: { max_lines_added: lots }
";

const BAD_TRIALS: &str = "\
model:
  provider: sim
  name: sim-quirky-1
trials: two
";

#[test]
fn malformed_manifest_names_file_line_and_field() {
    let files = [("harness.yaml", BAD_KIND)];
    let (r, run) = adopt(&files);
    insta::assert_snapshot!("init_bad_kind", r.snapshot(&run));
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .starts_with("error: harness.yaml:5: surfaces[0].kind: unknown variant `promt`"),
        "{}",
        run.stderr
    );
    assert_nothing_committed(&r, &files);
}

#[test]
fn malformed_bounds_names_the_nested_field() {
    let files = [("harness.yaml", BAD_BOUNDS)];
    let (r, run) = adopt(&files);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr
            .starts_with("error: harness.yaml:6: surfaces[0].bounds.max_lines_added: invalid type"),
        "{}",
        run.stderr
    );
    assert_nothing_committed(&r, &files);
}

#[test]
fn malformed_experiment_names_file_line_and_field() {
    let files = [(".harness/experiment.yaml", BAD_TRIALS)];
    let (r, run) = adopt(&files);
    insta::assert_snapshot!("init_bad_experiment", r.snapshot(&run));
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .starts_with("error: .harness/experiment.yaml:4: trials: invalid type: string \"two\""),
        "{}",
        run.stderr
    );
    assert_nothing_committed(&r, &files);
}

#[test]
fn overlapping_splits_name_the_task() {
    let files = [(
        ".harness/splits.yaml",
        "held_in:\n- a\nvalidation:\n- b\ntest:\n- a\n",
    )];
    let (r, run) = adopt(&files);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr
            .starts_with("error: .harness/splits.yaml:2: test: task `a` is in both"),
        "{}",
        run.stderr
    );
    assert_nothing_committed(&r, &files);
}

#[test]
fn malformed_surface_file_is_refused() {
    let files = [("tools/bash.yaml", "name: [unclosed\n")];
    let (r, run) = adopt(&files);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.starts_with("error: tools/bash.yaml:"),
        "{}",
        run.stderr
    );
    assert_nothing_committed(&r, &files);
}

#[test]
fn valid_existing_files_are_adopted() {
    let prompt = "You are careful. {{ instruction }}\n";
    let (r, run) = adopt(&[("prompts/system.md", prompt)]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout.contains("14 files written, 1 kept"),
        "{}",
        run.stdout
    );
    assert_eq!(r.git(&["show", "main:prompts/system.md"]), prompt);
}

fn splits_at(r: &Repo, rev: &str) -> String {
    r.git(&["show", &format!("{rev}:.harness/splits.yaml")])
}

#[test]
fn split_is_deterministic() {
    let a = Repo::init("minimal");
    let b = Repo::init("minimal");
    a.harness(&["split", "--seed", "7"]).ok();
    b.harness(&["split", "--seed", "7"]).ok();
    assert_eq!(splits_at(&a, "main"), splits_at(&b, "main"));
    assert_eq!(a.rev("main^{tree}"), b.rev("main^{tree}"));
    // Another seed gives another split of the same tasks.
    let c = Repo::init("minimal");
    c.harness(&["split", "--seed", "8"]).ok();
    assert_ne!(splits_at(&a, "main"), splits_at(&c, "main"));
    let ids = |r: &Repo| {
        let mut v: Vec<String> = splits_at(r, "main")
            .lines()
            .filter_map(|l| l.strip_prefix("- ").map(str::to_string))
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(&a), ids(&c));
    assert_eq!(ids(&a).len(), 40);
    // The default seed is the experiment's, and the sizes follow the ratios.
    let d = Repo::init("minimal");
    let run = d.harness(&["split", "--ratios", "2,1,1"]).ok();
    assert!(run.stdout.contains("(seed 1)"), "{}", run.stdout);
    assert!(
        run.stdout.contains("held_in      20 tasks"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("validation   10 tasks"),
        "{}",
        run.stdout
    );
}

#[test]
fn split_rejects_bad_ratios() {
    let r = Repo::init("minimal");
    let run = r.harness(&["split", "--ratios", "1,2"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("hint: give three numbers"));
    let run = r.harness(&["split", "--ratios", "0,0,0"]);
    assert_eq!(run.code, 2, "{run:#?}");
}

#[test]
fn resplit_after_results_needs_force_and_is_recorded() {
    let r = Repo::demo();
    // Before any results, re-splitting is allowed.
    r.harness(&["split", "--seed", "2"]).ok();
    {
        let repo = r.git2();
        let main = lineage::main_commit(&repo).expect("main").id();
        lineage::write_run(
            &repo,
            "r1",
            Some(main),
            &[("run.yaml".into(), b"id: r1\n".to_vec())],
            "Run r1\n",
        )
        .expect("write run");
    }
    let before = r.rev("main");
    let run = r.harness(&["split", "--seed", "3"]);
    insta::assert_snapshot!("split_refused", r.snapshot(&run));
    assert_eq!(run.code, 2);
    assert_eq!(r.rev("main"), before, "nothing committed");

    let run = r.harness(&["split", "--seed", "3", "--force"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let msg = r.git(&["log", "-1", "--format=%B", "main"]);
    insta::assert_snapshot!("split_forced_message", msg);
    let trailers = r.git(&[
        "log",
        "-1",
        "--format=%(trailers:key=Harness-Resplit)",
        "main",
    ]);
    assert!(trailers.contains("forced"), "{msg}");
    assert_eq!(r.git(&["log", "-1", "--format=%P", "main"]).trim(), before);
    assert_eq!(r.git(&["status", "--porcelain"]), "");
}

#[test]
fn split_refuses_a_dirty_worktree() {
    let r = Repo::init("minimal");
    std::fs::write(r.root.join(".harness/splits.yaml"), "held_in: []\n").expect("write");
    let before = r.rev("main");
    let run = r.harness(&["split"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("uncommitted changes"), "{}", run.stderr);
    assert_eq!(r.rev("main"), before);
}
