//! The null control of an evolve round (`gate.null_control: true`): a byte-different,
//! behaviour-identical copy of main is validated like a candidate, recorded in main's note with
//! its verdict and the round's minimum detectable effect, shown in the loop's output, and never
//! promoted.

use crate::support::loops::*;

#[test]
fn an_evolve_round_validates_and_records_a_null_control() {
    let repo = Repo::small("minimal");
    repo.edit_experiment(|t| {
        t.replace("trials: 2", "trials: 1").replace(
            "  early_stop: true",
            "  early_stop: true\n  null_control: true",
        )
    });
    let main = repo.rev("main");
    let out = timed("evolve --rounds 1", || {
        repo.harness(&["evolve", "--rounds", "1", "--proposer", "catalog"])
    });
    assert_eq!(out.code, 0, "{out:#?}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("round 1: null control"),
        "the loop says what the null control gave: {text}"
    );

    let note = repo.note(&main);
    let controls = note["null_controls"].as_array().expect("null_controls");
    assert_eq!(controls.len(), 1, "{note:#}");
    let c = &controls[0];
    assert_eq!(c["format"], 1);
    assert_eq!(c["round"], 1);
    assert!(
        ["accept", "reject", "indecisive"].contains(&c["verdict"].as_str().unwrap()),
        "{c:#}"
    );
    let mde = c["mde_points"].as_f64().expect("mde_points");
    assert!(mde > 0.0 && mde <= 100.0, "{c:#}");

    // The control's tree differs from main's only by a comment; its branch is retired and it is
    // nowhere in main's history.
    let commit = c["commit"].as_str().unwrap();
    let diff = repo.git(&["diff", &main, commit, "--", "."]);
    let added: Vec<&str> = diff
        .lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .collect();
    assert_eq!(added.len(), 1, "{diff}");
    assert!(added[0].starts_with("+# null control of round 1"), "{diff}");
    assert!(
        repo.git(&[
            "for-each-ref",
            "refs/heads/harness/proposals/1/null-control"
        ])
        .trim()
        .is_empty(),
        "the control's branch is retired"
    );
    assert!(
        !repo
            .git(&["for-each-ref", "refs/harness/rejected/1/null-control"])
            .trim()
            .is_empty(),
        "it is kept under refs/harness/rejected/"
    );
    let in_main = repo.git(&["rev-list", "main"]);
    assert!(!in_main.contains(commit), "never promoted");

    // The report lists each round's null control with its verdict, p, trials and effect.
    let report = repo.harness(&["report"]).ok();
    let line = report
        .stdout
        .lines()
        .find(|l| l.starts_with("null control of round 1 (main v"))
        .unwrap_or_else(|| panic!("{}", report.stdout));
    assert!(
        line.contains(&format!("): {}, p = ", c["verdict"].as_str().unwrap()))
            && line.contains(&format!("{} candidate trials", c["trials"]))
            && line.contains(&format!("minimum detectable effect +{mde:.1} points")),
        "{line}"
    );
    // Evaluating main as the parent measured its flaky tasks, for its own tree.
    let marks = &note["flaky_tasks"];
    assert_eq!(marks["format"], 1, "{note:#}");
    assert_eq!(
        marks["tree"].as_str().unwrap(),
        repo.git(&["rev-parse", &format!("{main}^{{tree}}")]).trim(),
        "{note:#}"
    );
}
