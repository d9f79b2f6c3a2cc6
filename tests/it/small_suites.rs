//! Small suites are explained in words: `split` warns when a split is empty or the strict gate
//! could never accept on so few tasks, and a strict rejection that comes from too few tasks
//! says so with the remedy instead of a bare p-value.

use crate::support::loops::*;

#[test]
fn split_warns_about_empty_and_too_small_splits() {
    let repo = Repo::init("minimal");
    let empty_test = repo.harness(&["split", "--ratios", "0.6,0.4,0"]).ok();
    assert!(
        empty_test.stderr.contains("warning: test is empty"),
        "{}",
        empty_test.stderr
    );
    assert!(
        !empty_test.stderr.contains("can never accept"),
        "{}",
        empty_test.stderr
    );

    // 40 tasks at 5% / 5%: two held-in and two validation tasks, fewer than the five that the
    // paired test needs to change at alpha 0.05.
    let tiny = repo
        .harness(&["split", "--ratios", "0.05,0.05,0.9", "--force"])
        .ok();
    assert!(
        tiny.stderr
            .contains("the strict gate needs at least 5 tasks")
            && tiny.stderr.contains("can never accept")
            && tiny.stderr.contains("--gate paper"),
        "{}",
        tiny.stderr
    );
    // Said again when the splits are unchanged.
    let again = repo
        .harness(&["split", "--ratios", "0.05,0.05,0.9", "--force"])
        .ok();
    assert!(
        again.stdout.contains("Splits unchanged"),
        "{}",
        again.stdout
    );
    assert!(
        again.stderr.contains("can never accept"),
        "{}",
        again.stderr
    );

    // Under the paper gate there is nothing to say about the test.
    repo.edit_experiment(|t| t.replace("rule: strict", "rule: paper"));
    let paper = repo
        .harness(&["split", "--ratios", "0.05,0.05,0.9", "--force"])
        .ok();
    assert!(
        !paper.stderr.contains("can never accept"),
        "{}",
        paper.stderr
    );
}

#[test]
fn a_strict_rejection_for_too_few_tasks_says_so_in_words() {
    let repo = Repo::init("minimal");
    repo.splits(
        &["word-count", "log-time-window"],
        &["decode-message"],
        &["extract-emails"],
    );
    repo.set_experiment("trials", "1");
    let bootstrap = repo.read("prompts/bootstrap.md");
    let p = repo.proposal(
        1,
        "artifact-early",
        "main",
        &[(
            "prompts/bootstrap.md",
            &format!(
                "{bootstrap}Identify the required output artifact and create a first version of it early.\n"
            ),
        )],
    );
    let v = repo.harness(&["validate", "--gate", "strict", &p]).code(1);
    assert!(
        v.stdout
            .contains("the strict gate needs at least 5 changed tasks")
            && v.stdout
                .contains("add tasks or trials, or use --gate paper"),
        "{}",
        v.stdout
    );
    assert!(
        v.stdout.contains("task(s) can still change") || v.stdout.contains("task(s) changed"),
        "{}",
        v.stdout
    );
    // No `0/0`: a split without a completed pair shows a dash.
    assert!(!v.stdout.contains(" 0/0 "), "{}", v.stdout);
}
