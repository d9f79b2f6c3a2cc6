//! `protocol: command` harnesses: agent programs on the official `openai` and `anthropic`
//! Python SDKs run inside bubblewrap and reach a stand-in model only through the gateway. The
//! tokens in the record are the stand-in's, the real key is in no sandbox environment and no
//! stored object, nothing but the gateway is reachable, and requests for another model or
//! temperature are refused and recorded.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::support::command::{
    KEY, Reported, assert_key_stored_nowhere, assert_word_count_solved, command_repo_with,
    run_word_count, serve, serve_with, usage_of,
};
use crate::support::repo::Repo;

/// The directory the SDKs are installed in (`pip install --target`), prepared by `.ci/run`.
/// Outside CI a missing directory skips the test loudly; in CI it fails.
fn pydeps(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("GIT_HARNESS_PYDEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pydeps"));
    let ok = dir.join("openai").is_dir() && dir.join("anthropic").is_dir();
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !ok {
        assert!(
            !ci,
            "{test}: the Python SDKs are missing from {} (pip install --target it openai anthropic)",
            dir.display()
        );
        eprintln!(
            "\n!!!!! SKIPPING {test}: no openai/anthropic SDKs in {} (pip install --target {} openai anthropic) !!!!!\n",
            dir.display(),
            dir.display()
        );
        return None;
    }
    if !git_harness::sandbox::local::bwrap_available() {
        assert!(!ci, "{test}: bubblewrap is not available");
        eprintln!("\n!!!!! SKIPPING {test}: bubblewrap is not available !!!!!\n");
        return None;
    }
    Some(dir)
}

/// A repository whose harness is `agent` (a file of tests/fixtures/agents/) with the SDKs of
/// `pydeps`, run through the gateway on the stand-in at `base_url`, on `runner`.
fn command_repo_on(
    runner: &str,
    agent: &str,
    api: &str,
    env: &str,
    base_url: &str,
    pydeps: &std::path::Path,
) -> Repo {
    let prefix = format!("{env} PYTHONPATH={}", pydeps.display());
    let runner = json!({"kind": runner, "concurrency": 1, "agent_paths": [pydeps]});
    command_repo_with(agent, &prefix, api, base_url, runner)
}

fn command_repo(
    agent: &str,
    api: &str,
    env: &str,
    base_url: &str,
    pydeps: &std::path::Path,
) -> Repo {
    command_repo_on("local", agent, api, env, base_url, pydeps)
}

fn check_sdk_run(repo: &Repo, reported: &Arc<Mutex<Reported>>) -> Value {
    let (run, trace) = run_word_count(repo);
    assert_word_count_solved(repo, &run, &trace, reported);
    trace
}

#[test]
fn openai_sdk_agent_streams_and_calls_tools_through_the_gateway() {
    let Some(deps) = pydeps("openai_sdk_agent_streams_and_calls_tools_through_the_gateway") else {
        return;
    };
    let (base_url, reported) = serve();
    let repo = command_repo("openai_agent.py", "openai", "", &base_url, &deps);
    let trace = check_sdk_run(&repo, &reported);
    assert_eq!(trace["ending"]["reason"], "exited");
}

#[test]
fn anthropic_sdk_agent_runs_through_the_gateway() {
    let Some(deps) = pydeps("anthropic_sdk_agent_runs_through_the_gateway") else {
        return;
    };
    let (base_url, reported) = serve();
    let repo = command_repo("anthropic_agent.py", "anthropic", "", &base_url, &deps);
    check_sdk_run(&repo, &reported);
}

#[test]
fn only_the_gateway_is_reachable_and_other_models_are_refused() {
    let Some(deps) = pydeps("only_the_gateway_is_reachable_and_other_models_are_refused") else {
        return;
    };
    let (base_url, reported) = serve();
    // The stand-in's own port and an outside address must fail from inside the sandbox.
    let stand_in = base_url
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_string();
    let env = format!(
        "PROBE={stand_in},1.1.1.1:80,127.0.0.1:{port} REFUSE=gpt-other,temperature=0.7,top_p=0.5",
        port = git_harness::sandbox::local::FORWARD_PORT
    );
    let repo = command_repo("openai_agent.py", "openai", &env, &base_url, &deps);
    let (run, trace) = run_word_count(&repo);
    assert_eq!(run.code, 0, "{run:#?}");
    let output = trace["command"]["output"].as_str().unwrap();
    assert!(
        output.contains(&format!("REACH {stand_in} failed")),
        "{output}"
    );
    assert!(output.contains("REACH 1.1.1.1:80 failed"), "{output}");
    assert!(
        output.contains(&format!(
            "REACH 127.0.0.1:{} ok",
            git_harness::sandbox::local::FORWARD_PORT
        )),
        "{output}"
    );
    assert!(output.contains("REFUSED gpt-other yes: 400"), "{output}");
    assert!(
        output.contains("REFUSED temperature=0.7 yes: 400"),
        "{output}"
    );
    // Another nucleus (top_p) is another decoding: refused and recorded, not dropped.
    assert!(output.contains("REFUSED top_p=0.5 yes: 400"), "{output}");
    let refused = trace["command"]["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(refused[0].as_str().unwrap().contains("gpt-other"));
    assert!(refused[1].as_str().unwrap().contains("temperature 0.7"));
    assert!(refused[2].as_str().unwrap().contains("top_p 0.5"));
    let events = trace["events"].as_array().unwrap();
    assert_eq!(events.iter().filter(|e| e["type"] == "refused").count(), 3);
    // Refused requests never reached the model.
    assert_eq!(reported.lock().unwrap().requests.len(), 2);
}

#[test]
fn in_docker_the_tunnel_reaches_only_the_gateway() {
    let test = "in_docker_the_tunnel_reaches_only_the_gateway";
    let Some(deps) = pydeps(test) else { return };
    if !crate::support::sandbox::docker_engine_or_skip(test) {
        return;
    }
    let (base_url, reported) = serve();
    let stand_in = base_url
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_string();
    let env = format!("PROBE={stand_in},1.1.1.1:80");
    let repo = command_repo_on(
        "docker",
        "openai_agent.py",
        "openai",
        &env,
        &base_url,
        &deps,
    );
    let (run, trace) = run_word_count(&repo);
    assert_eq!(run.code, 0, "{run:#?}\n{trace:#}");
    let output = trace["command"]["output"].as_str().unwrap();
    assert!(
        output.contains(&format!("REACH {stand_in} failed")),
        "{output}"
    );
    assert!(output.contains("REACH 1.1.1.1:80 failed"), "{output}");
    let r = reported.lock().unwrap();
    assert_eq!(r.requests.len(), 2, "{output}");
    assert_eq!(usage_of(&trace), (r.prompt, r.completion), "{output}");
    drop(r);
    assert_key_stored_nowhere(&repo);
}

#[test]
fn an_exhausted_turn_budget_is_the_agents_failure_and_the_trace_is_mined_and_exported() {
    let test = "an_exhausted_turn_budget_is_the_agents_failure_and_the_trace_is_mined_and_exported";
    let Some(deps) = pydeps(test) else { return };
    let (base_url, reported) = serve_with("cat missing.txt");
    let repo = command_repo("openai_agent.py", "openai", "", &base_url, &deps);
    let path = repo.root.join(".harness/experiment.yaml");
    let mut exp: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    exp["budgets"]["max_turns"] = json!(1);
    std::fs::write(&path, serde_yaml::to_string(&exp).unwrap()).unwrap();
    repo.git(&["commit", "-qam", "One turn"]);
    // The agent loops up to HARNESS_MAX_TURNS; a second request would need a second turn.
    let manifest = std::fs::read_to_string(repo.root.join("harness.yaml"))
        .unwrap()
        .replace(
            "python3 $HARNESS_DIR/agent.py",
            "HARNESS_MAX_TURNS=5 python3 $HARNESS_DIR/agent.py",
        );
    std::fs::write(repo.root.join("harness.yaml"), manifest).unwrap();
    repo.git(&["commit", "-qam", "Let the agent try more turns"]);
    let (run, trace) = run_word_count(&repo);
    // A failed trial, not an infrastructure error.
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.contains("0/1"), "{}", run.stdout);
    assert_eq!(trace["ending"]["reason"], "budget_turns", "{trace:#}");
    assert_eq!(reported.lock().unwrap().requests.len(), 1);
    let tool = trace["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "tool_call")
        .unwrap_or_else(|| panic!("{trace:#}"));
    assert_eq!(tool["command"], "cat missing.txt");
    assert_eq!(tool["ok"], false);

    let run_id = repo
        .git(&[
            "for-each-ref",
            "--format=%(refname:lstrip=3)",
            "refs/harness/runs/",
        ])
        .trim()
        .to_string();
    let mined = repo.harness(&["mine", "--run", &run_id]);
    assert_eq!(mined.code, 0, "{mined:#?}");
    assert!(mined.stdout.contains("word-count"), "{}", mined.stdout);
    let atif = repo.harness(&["export", "--atif", &format!("{run_id}:word-count#0")]);
    assert_eq!(atif.code, 0, "{atif:#?}");
    assert!(atif.stdout.contains("cat missing.txt"), "{}", atif.stdout);
}

#[test]
fn the_simulated_model_answers_a_command_harness_offline() {
    let test = "the_simulated_model_answers_a_command_harness_offline";
    let Some(deps) = pydeps(test) else { return };
    // The repository's own model: the sim on the demo suite, reached through the gateway.
    let repo = Repo::demo();
    let src =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agents/openai_agent.py");
    std::fs::copy(&src, repo.root.join("agent.py")).unwrap();
    let manifest = format!(
        "name: sdk-agent\nprotocol: command\nagent:\n  command: PYTHONPATH={deps} python3 $HARNESS_DIR/agent.py\nsurfaces:\n  - path: prompts/system.md\n    kind: prompt\n  - path: agent.py\n    kind: file\n",
        deps = deps.display()
    );
    std::fs::write(repo.root.join("harness.yaml"), manifest).unwrap();
    let path = repo.root.join(".harness/experiment.yaml");
    let mut exp: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    exp["runner"] = json!({"kind": "local", "concurrency": 2, "agent_paths": [deps]});
    exp["trials"] = json!(1);
    std::fs::write(&path, serde_yaml::to_string(&exp).unwrap()).unwrap();
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-qm", "Run an SDK agent on the sim"]);
    let (run, trace) = run_word_count(&repo);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout.contains("infra") && !run.stderr.contains("infrastructure"),
        "{run:#?}"
    );
    assert!(
        trace["model"].as_str().unwrap().starts_with("sim"),
        "{trace:#}"
    );
    assert_eq!(trace["ending"]["reason"], "exited", "{trace:#}");
    let tools: Vec<&Value> = trace["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "tool_call")
        .collect();
    assert!(tools.iter().any(|t| t["tool"] == "bash"), "{trace:#}");
    // Every answer's call is in the trace, the last one (no request came after it) without
    // an observation.
    let answered: usize = trace["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "model_response")
        .map(|e| e["tool_calls"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(tools.len(), answered, "{trace:#}");
    assert_eq!(
        tools.last().unwrap()["output"],
        git_harness::agent::gateway::NO_OBSERVATION
    );
    assert!(trace["totals"]["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn an_upstream_failure_is_an_infrastructure_error_not_the_agents() {
    let test = "an_upstream_failure_is_an_infrastructure_error_not_the_agents";
    let Some(deps) = pydeps(test) else { return };
    let (base_url, reported) = serve();
    reported.lock().unwrap().down = true;
    let repo = command_repo("openai_agent.py", "openai", "", &base_url, &deps);
    let (run, trace) = run_word_count(&repo);
    assert_eq!(trace["ending"]["reason"], "model_error", "{trace:#}");
    assert!(run.stdout.contains("infra"), "{run:#?}");
    let results = repo.git(&[
        "show",
        &format!(
            "{}:results.jsonl",
            repo.git(&["for-each-ref", "--format=%(refname)", "refs/harness/runs/"])
                .trim()
        ),
    ]);
    let r: Value = serde_json::from_str(results.lines().next().unwrap()).unwrap();
    assert_eq!(r["outcome"], "infra-error", "{r}");
    assert_eq!(r["infra"], "model", "{r}");
}

#[test]
fn an_edit_to_an_agent_file_outside_the_repository_misses_the_trial_cache() {
    let test = "an_edit_to_an_agent_file_outside_the_repository_misses_the_trial_cache";
    if !crate::support::sandbox::bwrap_or_skip(test) {
        return;
    }
    // The agent program lives in a host directory (`runner.agent_paths`), not in the harness
    // commit: the commit's tree alone cannot tell that it changed.
    let agent_dir = tempfile::tempdir().unwrap();
    let agent = agent_dir.path().join("agent.sh");
    std::fs::write(&agent, "wc -w < input.txt > count.txt\n").unwrap();
    let repo = Repo::demo();
    let manifest = "name: sh-agent\nprotocol: command\nagent:\n  command: sh \"$HARNESS_AGENT_PATHS/agent.sh\"\nsurfaces:\n  - path: prompts/system.md\n    kind: prompt\n";
    std::fs::write(repo.root.join("harness.yaml"), manifest).unwrap();
    let path = repo.root.join(".harness/experiment.yaml");
    let mut exp: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    exp["runner"] = json!({"kind": "local", "concurrency": 1, "agent_paths": [agent_dir.path()]});
    exp["trials"] = json!(1);
    std::fs::write(&path, serde_yaml::to_string(&exp).unwrap()).unwrap();
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-qm", "A shell agent from a host directory"]);
    let run = || {
        let out = repo.harness(&["run", "--tasks", "word-count", "--split", "held_in"]);
        assert_eq!(out.code, 0, "{out:#?}");
        out.stdout
    };
    assert!(run().contains("(1 trials executed, 0 from cache"));
    assert!(
        run().contains("(0 trials executed, 1 from cache"),
        "the same agent files hit the cache"
    );
    std::fs::write(&agent, "# counts words\nwc -w < input.txt > count.txt\n").unwrap();
    let after = run();
    assert!(
        after.contains("(1 trials executed, 0 from cache"),
        "an edited agent file must run the trial again: {after}"
    );
}

#[test]
fn a_bind_mount_bubblewrap_cannot_make_is_an_infrastructure_error_not_the_agents() {
    let test = "a_bind_mount_bubblewrap_cannot_make_is_an_infrastructure_error_not_the_agents";
    if !crate::support::sandbox::bwrap_or_skip(test) {
        return;
    }
    let gone = tempfile::tempdir().unwrap();
    let missing = gone.path().join("not-installed");
    let repo = Repo::demo();
    let manifest = "name: sh-agent\nprotocol: command\nagent:\n  command: wc -w < input.txt > count.txt\nsurfaces:\n  - path: prompts/system.md\n    kind: prompt\n";
    std::fs::write(repo.root.join("harness.yaml"), manifest).unwrap();
    let path = repo.root.join(".harness/experiment.yaml");
    let mut exp: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    exp["runner"] = json!({"kind": "local", "concurrency": 1, "agent_paths": [missing]});
    exp["trials"] = json!(1);
    std::fs::write(&path, serde_yaml::to_string(&exp).unwrap()).unwrap();
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-qm", "An agent path that is not there"]);
    let out = repo.harness(&["run", "--tasks", "word-count", "--split", "held_in"]);
    let refs = repo.git(&["for-each-ref", "--format=%(refname)", "refs/harness/runs/"]);
    let run_ref = refs.lines().next().unwrap_or_else(|| panic!("{out:#?}"));
    let row: Value = serde_json::from_str(
        repo.git(&["show", &format!("{run_ref}:results.jsonl")])
            .trim(),
    )
    .unwrap();
    // bubblewrap exits 1 before the agent starts: the sandbox's failure, not a failed agent.
    assert_eq!(row["outcome"], "infra-error", "{row:#} {out:#?}");
    assert_eq!(row["infra"], "sandbox", "{row:#}");
    assert!(
        row["error"].as_str().unwrap().contains("not-installed"),
        "{row:#}"
    );
    assert_eq!(out.code, 125, "{out:#?}");
}

/// The tunnel's binary goes into the trial's container streamed from disk: the run's peak
/// memory stays below two copies of the binary, which is what holding it and its tar in memory
/// took. (Resident pages of the running binary count too, but never reach a second copy.)
#[test]
fn a_docker_trial_streams_the_tunnel_binary_in_rather_than_holding_it_in_memory() {
    let test = "a_docker_trial_streams_the_tunnel_binary_in_rather_than_holding_it_in_memory";
    if !crate::support::sandbox::docker_engine_or_skip(test) {
        return;
    }
    let (base_url, reported) = serve();
    let runner = json!({"kind": "docker", "concurrency": 1});
    let repo = command_repo_with("stdlib_agent.py", "", "openai", &base_url, runner);
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    #[allow(
        clippy::zombie_processes,
        reason = "reaped by wait4(2), which also tells its peak memory"
    )]
    let child = repo
        .harness_cmd(&["run", "--tasks", "word-count", "--split", "held_in"])
        .env(crate::support::command::KEY_VAR, KEY)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4(2) to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4(2) on the child this test started and has not reaped.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let stdout = std::fs::read_to_string(&out).unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status}\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("1/1"), "{stdout}\n{stderr}");
    assert_eq!(reported.lock().unwrap().requests.len(), 2, "{stdout}");
    let binary = std::fs::metadata(crate::support::hermetic::bin())
        .unwrap()
        .len();
    let peak = usage.ru_maxrss as u64 * 1024;
    eprintln!(
        "peak memory {} MiB, binary {} MiB",
        peak >> 20,
        binary >> 20
    );
    assert!(
        peak < 2 * binary,
        "peak memory {} MiB with a binary of {} MiB",
        peak >> 20,
        binary >> 20
    );
}
