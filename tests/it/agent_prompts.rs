//! Conditional instructions appear exactly when they should, checked on the requests a
//! stand-in server received.

use crate::support::agent::*;

#[tokio::test]
async fn bootstrap_only_first_and_on_tool_error_only_right_after_a_failure() {
    let server = StandIn::start(vec![
        openai_bash("1", "true"),
        openai_bash("2", "false"),
        openai_bash("3", "true"),
        openai_call("4", "read_file", r#"{"path": "missing.txt"}"#),
        openai_submit("5"),
    ])
    .await;
    let h = harness(
        "minimal",
        &[
            ("prompts/bootstrap.md", Some("BOOTSTRAP-MARK")),
            ("prompts/on_tool_error.md", Some("ON-ERROR-MARK")),
            ("prompts/execution.md", Some("EXECUTION-MARK")),
            (
                "prompts/system.md",
                Some(
                    "Task: {{ instruction }} in {{ workdir }}; tools: {% for t in tools %}{{ t.name }} {% endfor %}; turns {{ budgets.max_turns }}",
                ),
            ),
        ],
    );
    let sb = TestSandbox::new();
    let m = openai_model(&server.base_url, None);
    Run::new(&h).episode("t", "Do the thing.", &sb, &m).await;
    let got = server.received();
    assert_eq!(got.len(), 5);
    let sys: Vec<String> = got.iter().map(system_of).collect();
    let has = |i: usize, mark: &str| sys[i].contains(mark);
    assert!(has(0, "BOOTSTRAP-MARK"));
    assert!((1..5).all(|i| !has(i, "BOOTSTRAP-MARK")));
    // Failures: request 3 follows `false`, request 5 follows the failed read.
    let on_err: Vec<bool> = (0..5).map(|i| has(i, "ON-ERROR-MARK")).collect();
    assert_eq!(on_err, vec![false, false, true, false, true]);
    assert!((0..5).all(|i| has(i, "EXECUTION-MARK")));
    assert!(sys[0].starts_with("Task: Do the thing. in "), "{}", sys[0]);
    assert!(
        sys[0].contains("bash edit read_file submit write_file"),
        "{}",
        sys[0]
    );
    assert!(sys[0].contains("turns 20"));
    // The task is in the system prompt, so the first user message does not repeat it.
    assert!(
        !messages_of(&got[0], "user")[0]["content"]
            .as_str()
            .unwrap()
            .contains("Do the thing.")
    );
}
