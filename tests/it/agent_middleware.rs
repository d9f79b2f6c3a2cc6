//! Middleware triggers and actions, observed through what a stand-in model server received.

use crate::support::agent::*;
use git_harness::Error;
use git_harness::agent::{Ending, Episode, validate_surface};

async fn run(mw: &str, script: Vec<Scripted>) -> (Episode, Vec<Received>) {
    run_with(&[("middleware/rules.yaml", Some(mw))], script).await
}

async fn run_with(
    changes: &[(&str, Option<&str>)],
    script: Vec<Scripted>,
) -> (Episode, Vec<Received>) {
    let server = StandIn::start(script).await;
    let h = harness("minimal", changes);
    let sb = TestSandbox::new();
    let m = openai_model(&server.base_url, None);
    let ep = Run::new(&h).episode("t", "Do the thing.", &sb, &m).await;
    (ep, server.received())
}

fn injected(r: &Received) -> Vec<String> {
    messages_of(r, "user")
        .iter()
        .filter_map(|m| m["content"].as_str())
        .filter(|c| c.starts_with("[harness] "))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn identical_command_three_times_is_blocked_on_the_third_not_before() {
    let mw = "rules:\n  - name: no-repeats\n    on: tool_call\n    when: { repeated_command: 3 }\n    action: block\n    message: Change the command.\n";
    let (ep, got) = run(
        mw,
        vec![
            openai_bash("1", "echo a"),
            openai_bash("2", "echo a"),
            openai_bash("3", "echo a"),
            openai_submit("4"),
        ],
    )
    .await;
    assert_eq!(ep.ending, Ending::Submitted);
    assert!(last_tool_result(&got[1]).starts_with("exit code: 0"));
    assert!(last_tool_result(&got[2]).starts_with("exit code: 0"));
    assert_eq!(
        last_tool_result(&got[3]),
        "[blocked by harness] Change the command."
    );
    assert_eq!(ep.trace.middleware_firings().count(), 1);
}

#[tokio::test]
async fn a_different_command_resets_the_repeat_count() {
    let mw = "rules:\n  - name: no-repeats\n    on: tool_call\n    when: { repeated_command: 2 }\n    action: block\n    message: Change it.\n";
    let (_, got) = run(
        mw,
        vec![
            openai_bash("1", "echo a"),
            openai_bash("2", "echo b"),
            openai_bash("3", "echo a"),
            openai_submit("4"),
        ],
    )
    .await;
    for r in &got[1..] {
        assert!(
            !last_tool_result(r).starts_with("[blocked"),
            "{}",
            last_tool_result(r)
        );
    }
}

#[tokio::test]
async fn nonzero_exit_injects_only_after_a_failure() {
    let mw = "rules:\n  - name: on-fail\n    on: tool_result\n    when: { nonzero_exit: true }\n    action: inject\n    message: Read the error.\n";
    let (_, got) = run(
        mw,
        vec![
            openai_bash("1", "true"),
            openai_bash("2", "false"),
            openai_submit("3"),
        ],
    )
    .await;
    assert!(injected(&got[1]).is_empty());
    assert_eq!(
        injected(&got[2]),
        vec!["[harness] Read the error.".to_string()]
    );
}

#[tokio::test]
async fn tool_error_matches_fires_on_matching_failures_only() {
    let mw = "rules:\n  - name: missing\n    on: tool_result\n    when: { tool_error_matches: 'No such file' }\n    action: inject\n    message: Create the file first.\n";
    let (_, got) = run(
        mw,
        vec![
            openai_bash("1", "exit 3"),
            openai_bash("2", "cat nope.txt"),
            openai_submit("3"),
        ],
    )
    .await;
    assert!(
        injected(&got[1]).is_empty(),
        "a failure that does not match"
    );
    assert_eq!(injected(&got[2]).len(), 1);
}

#[tokio::test]
async fn total_tool_calls_fires_at_the_threshold() {
    let mw = "rules:\n  - name: redirect\n    on: tool_result\n    when: { total_tool_calls: 2 }\n    action: inject\n    message: Stop exploring.\n    once: true\n";
    let (ep, got) = run(
        mw,
        vec![
            openai_bash("1", "ls"),
            openai_bash("2", "pwd"),
            openai_bash("3", "id"),
            openai_submit("4"),
        ],
    )
    .await;
    assert!(injected(&got[1]).is_empty());
    assert_eq!(injected(&got[2]).len(), 1);
    assert_eq!(
        injected(&got[3]).len(),
        1,
        "once: the same single injection, not a second"
    );
    assert_eq!(ep.trace.middleware_firings().count(), 1);
}

#[tokio::test]
async fn turns_without_file_change_counts_bash_writes_as_changes() {
    let mw = "rules:\n  - name: force-change\n    on: model_turn\n    when: { turns_without_file_change: 2 }\n    action: inject\n    message: Make a change.\n    once: true\n";
    let (_, got) = run(
        mw,
        vec![
            openai_bash("1", "ls"),
            openai_bash("2", "echo x > f.txt"),
            openai_bash("3", "ls"),
            openai_bash("4", "cat f.txt"),
            openai_submit("5"),
        ],
    )
    .await;
    assert!(injected(&got[2]).is_empty(), "one idle turn only");
    assert!(
        injected(&got[3]).is_empty(),
        "the bash write reset the count"
    );
    assert_eq!(injected(&got[4]).len(), 1, "two idle turns in a row");
}

#[tokio::test]
async fn elapsed_sec_fires_only_after_the_time() {
    let mw = "rules:\n  - name: slow\n    on: model_turn\n    when: { elapsed_sec: 1 }\n    action: inject\n    message: Hurry.\n    once: true\n";
    let (_, got) = run(
        mw,
        vec![
            openai_bash("1", "true"),
            openai_bash("2", "sleep 1.2"),
            openai_submit("3"),
        ],
    )
    .await;
    assert!(injected(&got[0]).is_empty() && injected(&got[1]).is_empty());
    assert_eq!(injected(&got[2]).len(), 1);
}

#[tokio::test]
async fn first_submit_block_rejects_only_the_first_submit() {
    let mw = "rules:\n  - name: double-check\n    on: submit\n    when: { first_submit: true }\n    action: block\n    message: Verify first.\n";
    let (ep, got) = run(mw, vec![openai_submit("1"), openai_submit("2")]).await;
    assert_eq!(ep.ending, Ending::Submitted);
    assert_eq!(
        last_tool_result(&got[1]),
        "[blocked by harness] Verify first."
    );
    assert_eq!(got.len(), 2);
}

#[tokio::test]
async fn stop_ends_the_episode_naming_the_rule_and_only_for_matching_commands() {
    let mw = "rules:\n  - name: no-rm\n    on: tool_call\n    when: { tool: bash, command_matches: 'rm -rf' }\n    action: stop\n";
    let (ep, got) = run(
        mw,
        vec![
            openai_bash("1", "ls"),
            openai_bash("2", "rm -rf /tmp/nothing-here"),
            openai_submit("3"),
        ],
    )
    .await;
    assert_eq!(
        ep.ending,
        Ending::Stopped {
            rule: "no-rm".into()
        }
    );
    assert_eq!(got.len(), 2);
}

#[tokio::test]
async fn run_checks_injects_failing_checks_after_a_write() {
    let mw = "rules:\n  - name: early-checks\n    on: tool_result\n    when: { tool: write_file }\n    action: run_checks\n";
    let check = "name: has-ok\nrun: grep -q ok out.txt\nmessage: out.txt must say ok.\n";
    let (_, got) = run_with(
        &[
            ("middleware/rules.yaml", Some(mw)),
            ("checks/ok.yaml", Some(check)),
        ],
        vec![
            openai_bash("1", "ls"),
            openai_call("2", "write_file", r#"{"path":"out.txt","content":"no"}"#),
            openai_call("3", "write_file", r#"{"path":"out.txt","content":"ok"}"#),
            openai_submit("4"),
        ],
    )
    .await;
    assert!(injected(&got[1]).is_empty(), "not after bash");
    let inj = injected(&got[2]);
    assert_eq!(inj.len(), 1);
    assert!(
        inj[0].starts_with("[harness] [check failed] out.txt must say ok."),
        "{inj:?}"
    );
    assert_eq!(
        injected(&got[3]).len(),
        1,
        "the passing check injects nothing new"
    );
}

#[tokio::test]
async fn a_disabled_file_is_skipped() {
    let mw = "enabled: false\nrules:\n  - name: no-repeats\n    on: tool_call\n    when: { repeated_command: 1 }\n    action: block\n    message: Never.\n";
    let (ep, got) = run(mw, vec![openai_bash("1", "ls"), openai_submit("2")]).await;
    assert_eq!(ep.ending, Ending::Submitted);
    assert!(last_tool_result(&got[1]).starts_with("exit code: 0"));
}

#[test]
fn validation_errors_name_file_line_and_field() {
    let check = |text: &str, field: &str| match validate_surface("middleware/x.yaml", text) {
        Err(Error::Config {
            file,
            line,
            field: f,
            ..
        }) => {
            assert_eq!(file.to_string_lossy(), "middleware/x.yaml");
            assert!(line.is_some(), "line for {f}");
            assert_eq!(f, field);
        }
        other => panic!("expected a config error for {field}, got {other:?}"),
    };
    check(
        "rules:\n  - name: a\n    on: tool_call\n    when: { bogus: 1 }\n    action: stop\n",
        "rules[0].when.bogus",
    );
    check(
        "rules:\n  - name: a\n    on: model_turn\n    action: block\n    message: m\n",
        "rules[0].action",
    );
    check(
        "rules:\n  - name: a\n    on: tool_call\n    when: { nonzero_exit: true }\n    action: stop\n",
        "rules[0].when.nonzero_exit",
    );
    check(
        "rules:\n  - name: a\n    on: tool_result\n    when: { tool_error_matches: '(' }\n    action: stop\n",
        "rules[0].when.tool_error_matches",
    );
    check(
        "rules:\n  - name: a\n    on: tool_call\n    action: inject\n",
        "rules[0].message",
    );
    check(
        "rules:\n  - name: a\n    on: sometimes\n    action: stop\n",
        "rules[0].on",
    );
    assert!(validate_surface("middleware/x.yaml", "enabled: false\nrules: []\n").is_ok());
    assert!(validate_surface("tools/bash.yaml", "name: shell\ndescription: d\n").is_err());
    assert!(
        validate_surface("prompts/system.md", "{{ instructions }}").is_err(),
        "undefined variable"
    );
    assert!(validate_surface("prompts/system.md", "{{ instruction }} in {{ workdir }}").is_ok());
    assert!(validate_surface("checks/a.yaml", "name: a\nrun: ''\nmessage: m\n").is_err());
    for (path, content) in git_harness::support::assets::harness_template("minimal").unwrap() {
        validate_surface(&path, content).unwrap();
    }
    for (path, content) in git_harness::support::assets::harness_template("checklist").unwrap() {
        validate_surface(&path, content).unwrap();
    }
}
