//! The information wall of a full model round: every recorded proposer prompt and every
//! proposal commit message holds held-in evidence and no validation or test task id or name.

use crate::support::propose::*;

#[test]
fn proposer_prompts_and_messages_name_no_validation_or_test_task() {
    let server = StandIn::start(vec![]);
    let repo = Repo::init("minimal");
    repo.small_splits();
    repo.use_openai_model(&server.base_url);
    let execution = repo.read("prompts/execution.md");
    let verification = repo.read("prompts/verification.md");
    server.script(vec![
        proposal(
            "Do every requested change before submitting",
            "prompts/execution.md",
            &format!("{execution}Do every change the task asks for before you submit.\n"),
        ),
        proposal(
            "Print the outputs before submitting",
            "prompts/verification.md",
            &format!("{verification}Print every output file before you submit.\n"),
        ),
        proposal(
            "Nudge toward the deliverable",
            "middleware/nudge.yaml",
            "enabled: true\nrules:\n  - name: nudge\n    on: model_turn\n    when:\n      turns_without_file_change: 4\n    action: inject\n    message: Write the output now.\n    once: true\n",
        ),
    ]);
    let out = repo.harness(&["propose", "--proposer", "model", "-n", "3"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let branches = repo.proposal_branches();
    assert_eq!(branches.len(), 3, "{}", out.stdout);

    let secret: Vec<&str> = VALIDATION.iter().chain(TEST).copied().collect();
    // The prompts as recorded.
    let log = repo.files_at("refs/harness/proposer-log");
    let prompts: Vec<&(String, String)> =
        log.iter().filter(|f| f.0.ends_with(".prompt.md")).collect();
    assert_eq!(prompts.len(), 3);
    assert_eq!(server.prompts().len(), 3);
    for (path, text) in &log {
        assert_eq!(
            mentioned(text, &secret),
            Vec::<&str>::new(),
            "{path} leaks:\n{text}"
        );
    }
    for (path, text) in &prompts {
        // The prompt carries held-in evidence (verifier output and trace lines of the cluster).
        assert!(text.contains("cluster `"), "{path}");
        assert!(text.contains("verifier said: FAIL"), "{path}:\n{text}");
    }
    // The prompts as received by the model are the recorded ones.
    for p in server.prompts() {
        assert!(prompts.iter().any(|(_, t)| t.trim_end() == p.trim_end()));
    }
    // The proposal commit messages.
    for b in &branches {
        let msg = repo.git(&["log", "-1", "--format=%B", b]);
        assert_eq!(
            mentioned(&msg, &secret),
            Vec::<&str>::new(),
            "{b} leaks:\n{msg}"
        );
        assert!(!mentioned(&msg, HELD_IN).is_empty(), "{b}:\n{msg}");
    }
    // Nor the bundle any command shows to a proposer.
    let mined = repo.harness(&["mine", "--format", "json"]).ok().stdout;
    assert_eq!(mentioned(&mined, &secret), Vec::<&str>::new());
}
