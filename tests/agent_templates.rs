//! `git harness init --template mini-swe-agent`: the real mini-swe-agent from PyPI runs the
//! demo suite under bubblewrap on the simulated model, reaching it only through the gateway;
//! the trials the sim solves pass, the traces hold its commands, and the loop (mine, propose,
//! validate, promote) works on the result.

mod common;

use std::path::PathBuf;

use common::Repo;
use serde_json::{Value, json};

/// Where mini-swe-agent is installed (`pip install --target`), prepared by `.ci/run`. Outside CI
/// a missing directory skips the test loudly; in CI it fails.
fn mini_swe_agent(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("GIT_HARNESS_MSWEA_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pydeps-msa"));
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !dir.join("minisweagent").is_dir() {
        assert!(
            !ci,
            "{test}: mini-swe-agent is missing from {} (pip install --target it mini-swe-agent)",
            dir.display()
        );
        eprintln!(
            "\n!!!!! SKIPPING {test}: no mini-swe-agent in {} (pip install --target {} mini-swe-agent) !!!!!\n",
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

/// The traces of a run, by trial name (`task#n`), with the run's rows.
fn traces(repo: &Repo) -> Vec<(String, Value)> {
    let refs = repo.git(&["for-each-ref", "--format=%(refname)", "refs/harness/runs/"]);
    let run_ref = refs.lines().last().expect("a run ref").to_string();
    let files = repo.git(&["ls-tree", "-r", "--name-only", &run_ref]);
    files
        .lines()
        .filter(|f| f.starts_with("traces/") && f.ends_with(".json"))
        .map(|f| {
            let text = repo.git(&["show", &format!("{run_ref}:{f}")]);
            (f.to_string(), serde_json::from_str(&text).unwrap())
        })
        .collect()
}

fn tool_commands(trace: &Value) -> Vec<String> {
    trace["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "tool_call" && e["tool"] == "bash")
        .filter_map(|e| {
            let args = &e["arguments"];
            let args: Value = match args {
                Value::String(s) => serde_json::from_str(s).ok()?,
                v => v.clone(),
            };
            args["command"].as_str().map(str::to_string)
        })
        .collect()
}

/// The first state note of the sim (`(sim state: MODE STEP)`): `normal` plays the task's plain
/// script, which solves it.
fn first_sim_mode(trace: &Value) -> Option<String> {
    let re = regex::Regex::new(r"\(sim state: ([a-z-]+) \d+\)").unwrap();
    trace["events"]
        .as_array()?
        .iter()
        .filter(|e| e["type"] == "model_response")
        .find_map(|e| {
            let text = e.to_string();
            re.captures(&text).map(|c| c[1].to_string())
        })
}

#[test]
fn mini_swe_agent_runs_the_demo_suite_on_the_sim_through_the_gateway_and_the_loop_works() {
    let test =
        "mini_swe_agent_runs_the_demo_suite_on_the_sim_through_the_gateway_and_the_loop_works";
    let Some(deps) = mini_swe_agent(test) else {
        return;
    };
    let repo = Repo::empty();
    let init = repo.harness_in(
        repo.tmp.path(),
        &[
            "init",
            "repo",
            "--template",
            "mini-swe-agent",
            "--runner",
            "local",
        ],
    );
    assert_eq!(init.code, 0, "{init:#?}");
    for f in ["harness.yaml", "mini.yaml", "prompts/system.md"] {
        assert!(repo.root.join(f).is_file(), "{f} missing");
    }
    let path = repo.root.join(".harness/experiment.yaml");
    let mut exp: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    exp["runner"] = json!({"kind": "local", "concurrency": 2, "agent_paths": [deps]});
    exp["trials"] = json!(1);
    std::fs::write(&path, serde_yaml::to_string(&exp).unwrap()).unwrap();
    repo.git(&[
        "commit",
        "-qam",
        "mini-swe-agent from the host's package dir",
    ]);
    assert_eq!(repo.harness(&["split"]).code, 0);

    let run = repo.harness(&["run", "--split", "held_in", "--tasks", TASKS]);
    assert_eq!(run.code, 0, "{run:#?}");
    let traces = traces(&repo);
    assert!(traces.len() >= 2, "{traces:?}");
    let mut passed = 0;
    for (name, trace) in &traces {
        assert_eq!(trace["harness"]["protocol"], "command", "{name}: {trace:#}");
        let cmds = tool_commands(trace);
        // The sim's script opens with `ls -la`; mini-swe-agent ran it as a bash tool call.
        assert_eq!(
            cmds.first().map(String::as_str),
            Some("ls -la"),
            "{name}: {trace:#}"
        );
        let reward = trace["verifier"]["reward"].as_f64().unwrap_or(0.0);
        if first_sim_mode(trace).as_deref() == Some("normal") {
            assert_eq!(reward, 1.0, "{name}: the sim solved it: {trace:#}");
            // It submitted the way mini-swe-agent's instructions say, and mini-swe-agent
            // exited on it.
            assert_eq!(
                cmds.last().map(String::as_str),
                Some("echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"),
                "{name}: {trace:#}"
            );
            assert_eq!(trace["ending"]["reason"], "exited", "{name}: {trace:#}");
        }
        if reward == 1.0 {
            passed += 1;
        }
    }
    assert!(passed >= 1, "no trial passed: {run:#?}");
}

/// Held-in tasks of the demo suite (split seed 1) whose trials include plain solves.
const TASKS: &str = "w*";
