//! Each sim quirk makes its task fail under the minimal harness, and the harness text or
//! middleware that addresses it makes the same task pass with the same seed, through the real
//! HTTP path (sim server + openai client).

use crate::support::agent::*;
use git_harness::agent::{Ending, Episode, trace::Event};
use git_harness::experiment::{ModelConfig, Provider};
use git_harness::harness::Harness;
use git_harness::model::{ConnectContext, connect};

fn sim_config() -> ModelConfig {
    ModelConfig {
        provider: Provider::Sim,
        name: "sim".into(),
        base_url: None,
        api_key_env: None,
        scenario: Some("sim.yaml".into()),
        timeout_sec: 10,
        max_retries: 0,
        concurrency: 4,
    }
}

async fn run_sim(task_id: &str, h: &Harness, seed: u64) -> (bool, Episode) {
    let suite = suite();
    let root = fixtures();
    let ctx = ConnectContext::new(&root, Some(&suite));
    let conn = connect(&sim_config(), &ctx).await.unwrap();
    let task = suite.get(task_id).unwrap();
    let sb = TestSandbox::for_task(task);
    let mut run = Run::new(h);
    run.seed = seed;
    let ep = run
        .episode(task_id, &task.instruction, &sb, conn.model.as_ref())
        .await;
    let passed = verify(task, &sb).await;
    (passed, ep)
}

fn minimal() -> Harness {
    harness("minimal", &[])
}

fn commands(ep: &Episode) -> Vec<String> {
    ep.trace
        .bash_commands()
        .map(|(c, _, _)| c.to_string())
        .collect()
}

#[tokio::test]
async fn late_artifact_fails_minimal_and_passes_with_early_artifact_bootstrap() {
    let (passed, ep) = run_sim("count-words", &minimal(), 7).await;
    assert!(
        !passed,
        "late-artifact should fail under minimal; ending {:?}",
        ep.ending
    );
    assert_eq!(ep.ending, Ending::BudgetTurns);
    assert!(ep.trace.files_written().next().is_none());
    assert!(ep.trace.model.starts_with("sim/"), "{}", ep.trace.model);

    let fixed = harness(
        "minimal",
        &[(
            "prompts/bootstrap.md",
            Some("Identify the required output artifact and create a first version of it early."),
        )],
    );
    let (passed, ep) = run_sim("count-words", &fixed, 7).await;
    assert!(
        passed,
        "ending {:?}, commands {:?}",
        ep.ending,
        commands(&ep)
    );
    assert_eq!(ep.ending, Ending::Submitted);
}

#[tokio::test]
async fn exact_retry_fails_minimal_and_passes_with_blocking_middleware() {
    let (passed, ep) = run_sim("make-report", &minimal(), 7).await;
    assert!(!passed);
    let retries = commands(&ep)
        .iter()
        .filter(|c| *c == "./build_report.sh")
        .count();
    assert!(
        retries >= 5,
        "the sim should retry verbatim: {:?}",
        commands(&ep)
    );

    let mw = "rules:\n  - name: no-identical-retries\n    on: tool_call\n    when: { repeated_command: 2, consecutive_tool_errors: 1 }\n    action: block\n    message: This exact command just failed; change something before running it again.\n";
    let fixed = harness("minimal", &[("middleware/runtime_control.yaml", Some(mw))]);
    let (passed, ep) = run_sim("make-report", &fixed, 7).await;
    assert!(
        passed,
        "ending {:?}, commands {:?}",
        ep.ending,
        commands(&ep)
    );
    let blocked: Vec<_> = ep.trace.tool_calls().filter(|t| t.blocked).collect();
    assert_eq!(blocked.len(), 1, "blocked exactly the first verbatim retry");
    assert_eq!(ep.trace.middleware_firings().count(), 1);
}

#[tokio::test]
async fn exact_retry_also_yields_to_the_on_tool_error_phrase() {
    let fixed = harness(
        "minimal",
        &[(
            "prompts/on_tool_error.md",
            Some("Never repeat an identical failing command; read the error first."),
        )],
    );
    let (passed, ep) = run_sim("make-report", &fixed, 7).await;
    assert!(
        passed,
        "ending {:?}, commands {:?}",
        ep.ending,
        commands(&ep)
    );
    let retries = commands(&ep)
        .iter()
        .filter(|c| *c == "./build_report.sh")
        .count();
    assert_eq!(retries, 1);
}

#[tokio::test]
async fn no_verify_fails_minimal_and_passes_with_verification_text() {
    let (passed, ep) = run_sim("sort-names", &minimal(), 7).await;
    assert!(!passed);
    assert_eq!(ep.ending, Ending::Submitted);

    let fixed = harness(
        "minimal",
        &[(
            "prompts/verification.md",
            Some(
                "Before you submit, verify final files against the instruction and fix what differs.",
            ),
        )],
    );
    let (passed, ep) = run_sim("sort-names", &fixed, 7).await;
    assert!(
        passed,
        "ending {:?}, commands {:?}",
        ep.ending,
        commands(&ep)
    );
}

#[tokio::test]
async fn no_verify_passes_with_a_completion_check() {
    let check = "name: sorted-ascending\nrun: sort -c sorted.txt\nmessage: sorted.txt is not in ascending order.\ntimeout_sec: 10\n";
    let fixed = harness("minimal", &[("checks/sorted.yaml", Some(check))]);
    let (passed, ep) = run_sim("sort-names", &fixed, 7).await;
    assert!(
        passed,
        "ending {:?}, commands {:?}",
        ep.ending,
        commands(&ep)
    );
    let checks: Vec<bool> = ep
        .trace
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Check(c) => Some(c.ok),
            _ => None,
        })
        .collect();
    assert_eq!(
        checks,
        vec![false, true],
        "first submit rejected by the check, second accepted"
    );
}

#[tokio::test]
async fn env_loss_fails_minimal_and_passes_with_persist_text() {
    let (passed, ep) = run_sim("data-sort", &minimal(), 7).await;
    assert!(!passed);
    assert!(commands(&ep).contains(&"cd data".to_string()));

    let fixed = harness(
        "minimal",
        &[(
            "prompts/execution.md",
            Some(
                "Each shell call starts fresh: persist environment changes by chaining commands with &&.",
            ),
        )],
    );
    let (passed, ep) = run_sim("data-sort", &fixed, 7).await;
    assert!(
        passed,
        "ending {:?}, commands {:?}",
        ep.ending,
        commands(&ep)
    );
}

#[tokio::test]
async fn loop_fails_minimal_and_passes_with_injecting_middleware() {
    let (passed, ep) = run_sim("find-max", &minimal(), 7).await;
    assert!(!passed);
    assert_eq!(ep.ending, Ending::BudgetTurns);

    let mw = "rules:\n  - name: break-loops\n    on: tool_result\n    when: { repeated_command: 3 }\n    action: inject\n    message: You ran the same command three times; stop exploring and write the output.\n    once: true\n";
    let fixed = harness("minimal", &[("middleware/runtime_control.yaml", Some(mw))]);
    let (passed, ep) = run_sim("find-max", &fixed, 7).await;
    assert!(
        passed,
        "ending {:?}, commands {:?}",
        ep.ending,
        commands(&ep)
    );
    assert_eq!(ep.trace.middleware_firings().count(), 1);
}

#[tokio::test]
async fn the_sim_is_deterministic_per_seed_and_speaks_the_text_protocol() {
    let text = harness(
        "minimal",
        &[(
            "harness.yaml",
            Some(
                &git_harness::support::assets::harness_template("minimal")
                    .unwrap()
                    .into_iter()
                    .find(|(p, _)| p == "harness.yaml")
                    .unwrap()
                    .1
                    .replace("protocol: tools", "protocol: text"),
            ),
        )],
    );
    let (passed, a) = run_sim("plain-echo", &text, 3).await;
    assert!(passed, "ending {:?}", a.ending);
    let (_, b) = run_sim("plain-echo", &text, 3).await;
    let calls = |e: &Episode| {
        e.trace
            .tool_calls()
            .map(|t| (t.tool.clone(), t.arguments.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(calls(&a), calls(&b));
    assert!(a.trace.tool_calls().any(|t| t.tool == "edit"));
}
