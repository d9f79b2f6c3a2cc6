//! `git harness bisect` finds a planted regression in a lineage of six promotions, driving
//! `git bisect run git-harness check`, and leaves the repository as it found it.

use crate::support::loops::*;

/// A middleware rule that ends every episode before the first model turn: every task fails.
const HALT: &str = "enabled: true
rules:
  - name: halt
    on: model_turn
    when:
      turns: 1
    action: stop
";

#[test]
fn bisect_names_the_promotion_that_planted_a_regression() {
    // The checklist harness passes the late-artifact task word-count; the regression breaks it.
    let repo = Repo::small("checklist");
    let v0 = repo.rev("main");
    let mut merges = Vec::new();
    for n in 1..=6u32 {
        let files: Vec<(&str, String)> = if n == 4 {
            vec![("middleware/runtime_control.yaml", HALT.to_string())]
        } else {
            vec![(
                "prompts/on_tool_error.md",
                format!(
                    "{}\nRead the error message first ({n}).\n",
                    repo.read("prompts/on_tool_error.md")
                ),
            )]
        };
        let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
        let name = repo.proposal(n, &format!("edit-{n}"), "main", &files);
        repo.harness(&[
            "promote",
            &name,
            "--force",
            "--reason",
            "lineage for the bisect test",
        ])
        .ok();
        merges.push(repo.rev("main"));
    }
    assert_eq!(
        repo.git(&[
            "rev-list",
            "--first-parent",
            "--count",
            &format!("{v0}..main")
        ])
        .trim(),
        "6"
    );

    // The contract bisect relies on: good exits 0, bad exits 1.
    repo.harness(&["check", &v0, "--tasks", "word-*"]).ok();
    let bad = repo
        .harness(&["check", "main", "--tasks", "word-*"])
        .code(1);
    assert!(bad.stdout.starts_with("bad:"), "{}", bad.stdout);

    let out = timed("bisect", || {
        repo.harness(&["bisect", "--good", &v0, "--bad", "main", "--task", "word-*"])
            .ok()
    });
    let fourth = &merges[3];
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("First bad promotion:"))
        .unwrap_or_else(|| panic!("no verdict in:\n{}\n{}", out.stdout, out.stderr));
    assert!(
        line.contains(&fourth[..10]) && line.contains("Promote 4/edit-4"),
        "expected the 4th promotion {fourth}: {line}"
    );
    // Its evidence follows: the planted rule.
    assert!(out.stdout.contains("action: stop"), "{}", out.stdout);

    // The repository is back where it was: on main, clean, no bisect in progress.
    assert_eq!(
        repo.git(&["symbolic-ref", "--short", "HEAD"]).trim(),
        "main"
    );
    assert_eq!(repo.rev("HEAD"), merges[5]);
    assert_eq!(repo.git(&["status", "--porcelain"]), "");
    assert!(!repo.root.join(".git/BISECT_LOG").exists());
}
