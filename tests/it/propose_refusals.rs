//! The model proposer against a stand-in OpenAI-compatible server: every bad answer is refused
//! (or declined) with its reason, no branch is made for it, and every exchange is logged.

use crate::support::propose::*;

fn refused_line<'a>(stdout: &'a str, title: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("refused: {title} — ")))
        .unwrap_or_else(|| panic!("no refusal of `{title}` in:\n{stdout}"))
}

#[test]
fn bad_proposals_are_refused_with_reasons_and_get_no_branch() {
    let server = StandIn::start(vec![]);
    let repo = Repo::init("minimal");
    repo.small_splits();
    repo.use_openai_model(&server.base_url);

    let bootstrap = repo.read("prompts/bootstrap.md");
    let execution = repo.read("prompts/execution.md");
    let verification = repo.read("prompts/verification.md");
    let over_budget = format!(
        "{bootstrap}{}",
        (1..=20)
            .map(|i| format!("Extra bootstrap advice number {i}.\n"))
            .collect::<String>()
    );
    let good = format!("{execution}Do every change the task asks for before you submit.\n");
    let off_cluster = serde_json::json!({
        "decision": "propose", "title": "Target a cluster that does not exist",
        "target_cluster": "missing_artifact/root_cause/made_up", "surface": "prompts/execution.md",
        "content": format!("{execution}Check your work.\n"),
    })
    .to_string();
    server.script(vec![
        proposal("Add a notes file", "notes/agent.md", "Do the work.\n"),
        proposal(
            "Rewrite the bootstrap at length",
            "prompts/bootstrap.md",
            &over_budget,
        ),
        proposal(
            "Do the work before submitting",
            "prompts/execution.md",
            &good,
        ),
        proposal(
            "Do the work before submitting",
            "prompts/execution.md",
            &good,
        ),
        proposal(
            "Name a task",
            "prompts/verification.md",
            &format!("{verification}On the word-count task, count words with wc.\n"),
        ),
        r#"{"decision": "propose", "title": "Cut off"#.to_string(),
        r#"{"decision": "decline", "reason": "no safe, reusable change follows"}"#.to_string(),
        proposal(
            "Edit the fixed experiment",
            ".harness/experiment.yaml",
            "trials: 1\n",
        ),
        proposal("Add a broken rule", "middleware/broken.yaml", "rules: [\n"),
        proposal("Change nothing", "prompts/execution.md", &execution),
        off_cluster,
    ]);
    let out = repo.harness(&["propose", "--proposer", "model", "-n", "11"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = &out.stdout;
    assert!(s.starts_with("Round 1: 1 proposal(s)"), "{s}");

    for (title, reason) in [
        (
            "Add a notes file",
            "`notes/agent.md` is not a declared surface",
        ),
        (
            "Rewrite the bootstrap at length",
            "over the bounds of `prompts/bootstrap.md`: +20/-0 lines, allowed +8/-8",
        ),
        (
            "Do the work before submitting",
            "identical to another proposal of this round",
        ),
        ("Name a task", "mentions task `word-count`"),
        ("(unreadable answer)", "malformed proposal JSON"),
        (
            "Edit the fixed experiment",
            "`.harness/experiment.yaml` is fixed experiment state",
        ),
        ("Add a broken rule", "does not parse"),
        (
            "Change nothing",
            "no-op: `prompts/execution.md` is unchanged",
        ),
        (
            "Target a cluster that does not exist",
            "targets `missing_artifact/root_cause/made_up`, which is not a cluster of the bundle",
        ),
    ] {
        let line = refused_line(s, title);
        assert!(line.contains(reason), "`{reason}` not in `{line}`");
    }
    assert!(
        s.contains("  declined: no safe, reusable change follows"),
        "{s}"
    );
    assert_eq!(
        repo.proposal_branches(),
        vec!["harness/proposals/1/do-the-work-before-submitting".to_string()]
    );
    // The one branch holds exactly the proposed edit.
    assert_eq!(
        repo.git(&[
            "show",
            "harness/proposals/1/do-the-work-before-submitting:prompts/execution.md"
        ]),
        good
    );
    assert!(
        repo.git(&[
            "log",
            "-1",
            "--format=%(trailers:key=Harness-Proposer,valueonly)",
            "harness/proposals/1/do-the-work-before-submitting"
        ])
        .starts_with("model:openai/stub"),
    );

    // Every slot's prompt and answer is logged, exactly as exchanged.
    let log = repo.files_at("refs/harness/proposer-log");
    // 11 prompts, 11 answers and the round's spend.
    assert_eq!(
        log.len(),
        23,
        "{:?}",
        log.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let prompts = server.prompts();
    assert_eq!(prompts.len(), 11);
    for (i, p) in prompts.iter().enumerate() {
        let name = format!("round-1/slot-{}.prompt.md", i + 1);
        let logged = log
            .iter()
            .find(|f| f.0 == name)
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(logged.1.trim_end(), p.trim_end(), "{name}");
    }
    let answer = log
        .iter()
        .find(|f| f.0 == "round-1/slot-7.answer.txt")
        .unwrap();
    assert!(answer.1.contains("decline"), "{}", answer.1);

    // A later round that proposes the same edit again is refused as an earlier attempt.
    server.script(vec![proposal(
        "Do the work before submitting again",
        "prompts/execution.md",
        &good,
    )]);
    let out = repo.harness(&["propose", "--proposer", "model", "-n", "1"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let line = refused_line(&out.stdout, "Do the work before submitting again");
    assert!(
        line.contains("identical to an earlier attempt on `prompts/execution.md`"),
        "{line}"
    );
    assert_eq!(repo.proposal_branches().len(), 1);
}

#[test]
fn a_round_of_declines_creates_nothing_and_exits_one() {
    let server = StandIn::start(vec![
        r#"{"decision": "decline", "reason": "task difficulty, not the harness"}"#.into(),
        "```json\n{\"decision\": \"decline\", \"reason\": \"nothing reusable\"}\n```".into(),
    ]);
    let repo = Repo::init("minimal");
    repo.small_splits();
    repo.use_openai_model(&server.base_url);
    let out = repo.harness(&["propose", "--proposer", "model", "-n", "2"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.starts_with("Round 1: 0 proposal(s)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("declined: task difficulty, not the harness")
    );
    assert!(out.stdout.contains("declined: nothing reusable"));
    assert!(repo.proposal_branches().is_empty());
    assert!(server.agent_requests() > 0);
}

#[test]
fn abnormal_proposal_paths_are_refused_before_any_check_and_the_round_goes_on() {
    let server = StandIn::start(vec![]);
    let repo = Repo::init("minimal");
    repo.small_splits();
    repo.use_openai_model(&server.base_url);

    let bash = repo.read("tools/bash.yaml");
    let edited_bash = bash.replace("Run a command", "Run one command");
    let guard = "rules:\n  - name: check-before-submit\n    on: submit\n    when:\n      first_submit: true\n    action: block\n    message: Check the output files first.\n";
    let execution = repo.read("prompts/execution.md");
    let good = format!("{execution}Check each output file against the instruction.\n");
    let bad: Vec<(&str, &str, String, &str)> = vec![
        (
            "Escape into the experiment",
            "checks/../.harness/experiment.yaml",
            "trials: 1\n".into(),
            "has a `..` component",
        ),
        (
            "Escape into the manifest",
            "tools/../harness.yaml",
            repo.read("harness.yaml"),
            "has a `..` component",
        ),
        (
            "Double slash",
            "tools//bash.yaml",
            edited_bash.clone(),
            "has an empty component",
        ),
        (
            "Dot component",
            "tools/./bash.yaml",
            edited_bash.clone(),
            "has a `.` component",
        ),
        (
            "Absolute path",
            "/tools/bash.yaml",
            edited_bash.clone(),
            "is absolute",
        ),
        (
            "Backslash",
            "tools\\bash.yaml",
            edited_bash.clone(),
            "contains a backslash",
        ),
        (
            "Inside git",
            "checks/.git/guard.yaml",
            guard.into(),
            "has a `.git` component",
        ),
        (
            "Nested check",
            "checks/sub/guard.yaml",
            guard.into(),
            "would be ignored: the runtime loads only `checks/<name>.yaml`",
        ),
    ];
    let mut answers: Vec<String> = bad
        .iter()
        .map(|(title, surface, content, _)| proposal(title, surface, content))
        .collect();
    answers.push(proposal("Check the outputs", "prompts/execution.md", &good));
    server.script(answers);
    let n = (bad.len() + 1).to_string();
    let out = repo.harness(&["propose", "--proposer", "model", "-n", &n]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    for (title, _, _, reason) in &bad {
        let line = refused_line(&out.stdout, title);
        assert!(line.contains(reason), "`{reason}` not in `{line}`");
    }
    // Only the valid proposal of the same round became a branch; nothing else was created.
    assert_eq!(
        repo.proposal_branches(),
        vec!["harness/proposals/1/check-the-outputs".to_string()]
    );
    assert_eq!(
        repo.git(&[
            "show",
            "harness/proposals/1/check-the-outputs:prompts/execution.md"
        ]),
        good
    );
}

/// The tokens of the `spent N tokens` line of `git harness report`.
fn reported_tokens(repo: &Repo) -> u64 {
    let out = repo.harness(&["report"]).ok();
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("spent "))
        .unwrap_or_else(|| panic!("no spent line in:\n{}", out.stdout));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn the_proposers_tokens_are_logged_and_reported() {
    let server = StandIn::start(vec![
        r#"{"decision": "decline", "reason": "nothing reusable"}"#.into(),
        r#"{"decision": "decline", "reason": "still nothing"}"#.into(),
    ]);
    let repo = Repo::init("minimal");
    repo.small_splits();
    repo.use_openai_model(&server.base_url);
    repo.harness(&["run", "--split", "held_in"]).ok();
    let before = reported_tokens(&repo);
    assert!(before > 0);

    repo.harness(&["propose", "--proposer", "model", "-n", "2"])
        .code(1);
    // Two calls of 10 prompt and 1 completion tokens each.
    let spend = repo.git(&["show", "refs/harness/proposer-log:round-1/spend.yaml"]);
    let spend: serde_yaml::Value = serde_yaml::from_str(&spend).unwrap();
    assert_eq!(spend["requests"].as_u64(), Some(2), "{spend:?}");
    assert_eq!(
        spend["usage"]["prompt_tokens"].as_u64(),
        Some(20),
        "{spend:?}"
    );
    assert_eq!(
        spend["usage"]["completion_tokens"].as_u64(),
        Some(2),
        "{spend:?}"
    );
    // The held-in trials came from the cache; only the proposer's tokens were added.
    assert_eq!(reported_tokens(&repo), before + 22);
}

#[test]
fn an_edit_whose_surface_check_fails_is_refused_with_the_checks_output() {
    let server = StandIn::start(vec![]);
    let repo = Repo::init("minimal");
    repo.small_splits();
    let manifest = repo.read("harness.yaml").replace(
        "    description: Shown on every model call.\n",
        "    description: Shown on every model call.\n    check: \"if grep -n TODO {}; then echo 'unfinished advice' >&2; exit 3; fi\"\n",
    );
    assert!(manifest.contains("check: "), "{manifest}");
    repo.write("harness.yaml", &manifest);
    repo.commit_all("Check execution prompt edits");
    repo.use_openai_model(&server.base_url);
    let execution = repo.read("prompts/execution.md");
    let unfinished = format!("{execution}TODO: say what to verify.\n");
    let good = format!("{execution}Do every change the task asks for before you submit.\n");
    server.script(vec![
        proposal("Leave a note", "prompts/execution.md", &unfinished),
        proposal(
            "Do the work before submitting",
            "prompts/execution.md",
            &good,
        ),
    ]);
    let out = repo.harness(&["propose", "--proposer", "model", "-n", "2"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let line = refused_line(&out.stdout, "Leave a note");
    assert!(line.contains("its check `if grep -n TODO"), "{line}");
    assert!(line.contains("exit 3"), "{line}");
    let s = &out.stdout;
    // The check's own output (grep's match, the message) is the reason given.
    assert!(
        s.contains("TODO: say what to verify.") && s.contains("unfinished advice"),
        "{s}"
    );
    assert_eq!(
        repo.proposal_branches(),
        vec!["harness/proposals/1/do-the-work-before-submitting".to_string()]
    );
}

#[test]
fn a_surface_check_runs_confined_writing_nothing_outside_its_copy() {
    let test = "a_surface_check_runs_confined_writing_nothing_outside_its_copy";
    if !crate::support::sandbox::bwrap_or_skip(test) {
        return;
    }
    let server = StandIn::start(vec![]);
    let repo = Repo::init("minimal");
    repo.small_splits();
    // A check that runs the proposer's content, as `python3 {}` or `sh {}` checks do.
    let manifest = repo.read("harness.yaml").replace(
        "    description: Shown on every model call.\n",
        "    description: Shown on every model call.\n    check: \"sh {}\"\n",
    );
    repo.write("harness.yaml", &manifest);
    repo.commit_all("Run execution prompt edits as their check");
    repo.use_openai_model(&server.base_url);
    let outside = repo.root.join("written-by-the-check");
    let execution = repo.read("prompts/execution.md");
    let hostile = format!(
        "{execution}echo owned > '{}' || exit 9\n",
        outside.display()
    );
    server.script(vec![proposal(
        "Write outside the copy",
        "prompts/execution.md",
        &hostile,
    )]);
    let out = repo.harness(&["propose", "--proposer", "model", "-n", "1"]);
    // The check ran (it is the refusal's reason) but could not write into the repository.
    let line = refused_line(&out.stdout, "Write outside the copy");
    assert!(
        line.contains("its check `sh {}` failed: exit 9"),
        "{out:#?}"
    );
    assert!(!outside.exists(), "the check wrote {}", outside.display());
}
