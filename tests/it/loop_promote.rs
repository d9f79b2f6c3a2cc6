//! `promote` refuses a candidate whose accepting validation was made against a main that has
//! moved since, with a hint that leads to a valid promotion.

use crate::support::loops::*;

/// Append `line` to a file of the repository's main checkout.
fn appended(repo: &Repo, path: &str, line: &str) -> String {
    format!("{}{line}\n", repo.read(path))
}

#[test]
fn promote_refuses_a_validation_against_an_older_main() {
    let repo = Repo::small("minimal");
    repo.set_experiment("trials", "1");
    let main0 = repo.rev("main");

    // Two real improvements on the same main (sim phrases of the late-artifact and exact-retry
    // quirks), on different surfaces.
    let artifact = repo.proposal(
        1,
        "artifact-early",
        "main",
        &[(
            "prompts/bootstrap.md",
            &appended(
                &repo,
                "prompts/bootstrap.md",
                "Identify the required output artifact and create a first version of it early.",
            ),
        )],
    );
    let retry = repo.proposal(
        1,
        "no-identical-retry",
        "main",
        &[(
            "prompts/execution.md",
            &appended(
                &repo,
                "prompts/execution.md",
                "Never repeat an identical failing command; read the error first.",
            ),
        )],
    );
    let v = timed("validate both", || {
        repo.harness(&["validate", "--gate", "paper", &artifact, &retry])
            .ok()
    });
    assert_eq!(v.stdout.matches("ACCEPT").count(), 2, "{}", v.stdout);

    // The other one goes first: main moves.
    repo.harness(&["promote", &retry]).ok();
    assert_ne!(repo.rev("main"), main0);

    let refused = repo.harness(&["promote", &artifact]).code(1);
    assert!(
        refused
            .stderr
            .contains("no accepting validation record for 1/artifact-early"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("main moved since it was validated")
            && refused
                .stderr
                .contains("run `git harness validate 1/artifact-early` again"),
        "{}",
        refused.stderr
    );
    assert!(
        repo.git(&["log", "--format=%s", "main"])
            .lines()
            .all(|s| !s.contains("artifact-early")),
        "nothing of the refused proposal reached main"
    );
    // Validating the same commit again compares with the same old parent: still refused.
    repo.harness(&["validate", "--gate", "paper", &artifact])
        .ok();
    repo.harness(&["promote", &artifact]).code(1);

    // Following the hint: rebase onto main, validate against it, promote.
    repo.git(&["rebase", "-q", "main", "harness/proposals/1/artifact-early"]);
    repo.git(&["checkout", "-q", "main"]);
    let again = timed("validate rebased", || {
        repo.harness(&["validate", "--gate", "paper", &artifact])
    });
    assert_eq!(again.code, 0, "{again:?}");
    let promoted = repo.harness(&["promote", &artifact]).ok();
    assert!(
        promoted.stdout.starts_with("Promoted 1/artifact-early"),
        "{}",
        promoted.stdout
    );
    let trailers = repo.git(&["log", "-1", "--format=%(trailers)", "main"]);
    assert!(trailers.contains("Harness-Verdict: accept"), "{trailers}");
    assert!(
        repo.read("prompts/bootstrap.md")
            .contains("create a first version of it early")
            && repo
                .read("prompts/execution.md")
                .contains("Never repeat an identical failing command"),
        "both edits are on main"
    );
}
