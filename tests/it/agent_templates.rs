//! `git harness init --template mini-swe-agent|deepagents`: the real third-party agents from
//! PyPI run demo tasks under bubblewrap on the simulated model, reaching it only through the
//! gateway. mini-swe-agent: the system-prompt surface reaches the model, the sim solves the task
//! and the trace holds the commands mini-swe-agent ran. DeepAgents: the paper's instructions
//! reach the model as its code wires them, and `run` → `mine` → `propose` → `validate` →
//! `promote` works on the template.

use std::path::PathBuf;

use crate::support::repo::Repo;
use serde_json::{Value, json};

/// Where an agent's packages are installed (`pip install --target`), prepared by `.ci/run`:
/// `$VAR`, else `target/DEFAULT`; `package` is a directory the install has. Outside CI a
/// missing directory skips the test loudly; in CI it fails.
fn agent_deps(test: &str, var: &str, default: &str, package: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(default)
    });
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !dir.join(package).is_dir() {
        assert!(
            !ci,
            "{test}: {package} is missing from {} (pip install --target it {package})",
            dir.display()
        );
        eprintln!(
            "\n!!!!! SKIPPING {test}: no {package} in {} (pip install --target {} {package}) !!!!!\n",
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

fn mini_swe_agent(test: &str) -> Option<PathBuf> {
    agent_deps(test, "GIT_HARNESS_MSWEA_DEPS", "pydeps-msa", "minisweagent")
}

fn deepagents(test: &str) -> Option<PathBuf> {
    agent_deps(
        test,
        "GIT_HARNESS_DEEPAGENTS_DEPS",
        "pydeps-da",
        "deepagents",
    )
}

/// `init --template TEMPLATE` with one trial per task, the agent's packages from `deps`.
fn template_repo(template: &str, deps: &std::path::Path) -> Repo {
    let repo = Repo::empty();
    let init = repo.harness_in(
        repo.tmp.path(),
        &["init", "repo", "--template", template, "--runner", "local"],
    );
    assert_eq!(init.code, 0, "{init:#?}");
    let path = repo.root.join(".harness/experiment.yaml");
    let mut exp: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    exp["runner"] = json!({"kind": "local", "concurrency": 2, "agent_paths": [deps]});
    exp["trials"] = json!(1);
    std::fs::write(&path, serde_yaml::to_string(&exp).unwrap()).unwrap();
    repo.git(&["commit", "-qam", "The agent from the host's package dir"]);
    repo
}

/// The latest run's result rows, each with its trial's trace.
fn trials(repo: &Repo) -> Vec<(Value, Value)> {
    let refs = repo.git(&["for-each-ref", "--format=%(refname)", "refs/harness/runs/"]);
    let run_ref = refs.lines().last().expect("a run ref").to_string();
    let rows = repo.git(&["show", &format!("{run_ref}:results.jsonl")]);
    rows.lines()
        .map(|l| {
            let row: Value = serde_json::from_str(l).unwrap();
            let path = format!(
                "traces/{}/{}.json",
                row["task"].as_str().unwrap(),
                row["trial"]
            );
            let text = repo.git(&["show", &format!("{run_ref}:{path}")]);
            (row, serde_json::from_str(&text).unwrap())
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

#[test]
fn mini_swe_agent_runs_a_demo_task_on_the_sim_through_the_gateway() {
    let test = "mini_swe_agent_runs_a_demo_task_on_the_sim_through_the_gateway";
    let Some(deps) = mini_swe_agent(test) else {
        return;
    };
    let repo = template_repo("mini-swe-agent", &deps);
    for f in ["harness.yaml", "mini.yaml", "prompts/system.md"] {
        assert!(repo.root.join(f).is_file(), "{f} missing");
    }
    std::fs::write(
        repo.root.join(".harness/splits.yaml"),
        "held_in:\n- word-count\nvalidation:\n- decode-message\ntest:\n- extract-emails\n",
    )
    .unwrap();
    repo.git(&["commit", "-qam", "Small splits"]);
    // The initial template stalls on the sim's late-artifact quirk (word-count's); the
    // catalog's remedy has no bootstrap prompt to go to here and lands on mini-swe-agent's
    // system template, its one prompt surface.
    let first = repo.harness(&["run", "--split", "held_in"]);
    assert_eq!(first.code, 0, "{first:#?}");
    assert_eq!(trials(&repo)[0].0["outcome"], "fail", "{first:#?}");
    assert_eq!(repo.harness(&["mine"]).code, 0);
    let propose = repo.harness(&["propose", "--proposer", "catalog", "-n", "1"]);
    assert!(
        propose
            .stdout
            .contains("harness/proposals/1/artifact-early")
            && propose.stdout.contains("[prompts/system.md]"),
        "{propose:#?}"
    );
    let validate = repo.harness(&["validate", "--gate", "paper", "1/artifact-early"]);
    assert!(
        validate.stdout.contains("1/artifact-early  ACCEPT"),
        "{validate:#?}"
    );
    assert_eq!(repo.harness(&["promote", "1/artifact-early"]).code, 0);

    // The promoted phrase reaches the model as mini-swe-agent's system template, and the sim
    // solves the task instead of stalling.
    let run = repo.harness(&[
        "run",
        "--split",
        "held_in",
        "--tasks",
        "word-count",
        "--no-cache",
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    let trials = trials(&repo);
    assert_eq!(trials.len(), 1, "{run:#?}");
    let (row, trace) = &trials[0];
    assert_eq!(row["outcome"], "pass", "{row:#} {trace:#}");
    assert_eq!(trace["protocol"], "command", "{trace:#}");
    let system_seen = trace["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "model_request")
        .and_then(|e| e["system"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        system_seen.contains("required output artifact"),
        "{system_seen}"
    );
    // mini-swe-agent ran the sim's commands as bash tool calls, in order, and submitted the
    // way its instructions say; it exited on the submit.
    let cmds = tool_commands(trace);
    assert_eq!(
        cmds.first().map(String::as_str),
        Some("ls -la"),
        "{trace:#}"
    );
    assert!(
        cmds.iter().any(|c| c == "wc -w < input.txt > count.txt"),
        "{cmds:?}"
    );
    assert_eq!(
        cmds.last().map(String::as_str),
        Some("echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"),
        "{cmds:?}"
    );
    assert_eq!(trace["ending"]["reason"], "exited", "{trace:#}");
    assert!(trace["totals"]["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
}

/// The model requests of a trace, each with the system message in force (the gateway records a
/// request's system message only when it changed).
fn systems(trace: &Value) -> Vec<String> {
    let mut current = String::new();
    trace["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "model_request")
        .map(|e| {
            if let Some(s) = e["system"].as_str() {
                current = s.to_string();
            }
            current.clone()
        })
        .collect()
}

#[test]
fn deepagents_template_runs_the_papers_harness_and_the_loop_promotes_an_edit() {
    let test = "deepagents_template_runs_the_papers_harness_and_the_loop_promotes_an_edit";
    let Some(deps) = deepagents(test) else {
        return;
    };
    let repo = template_repo("deepagents", &deps);
    for f in [
        "harness.py",
        "run.py",
        "runtime_control.json",
        "prompts/system.md",
        "prompts/bootstrap.md",
        "prompts/execution.md",
        "prompts/verification.md",
        "prompts/failure_recovery.md",
    ] {
        assert!(repo.root.join(f).is_file(), "{f} missing");
    }
    // Small splits: a late-artifact task and an exact-retry one held in, a late-artifact task
    // for validation; fewer turns, as the loop tests use.
    std::fs::write(
        repo.root.join(".harness/splits.yaml"),
        "held_in:\n- word-count\n- repair-build-script\nvalidation:\n- decode-message\ntest:\n- extract-emails\n",
    )
    .unwrap();
    let path = repo.root.join(".harness/experiment.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut exp: Value = serde_yaml::from_str(&text).unwrap();
    exp["budgets"]["max_turns"] = json!(12);
    std::fs::write(&path, serde_yaml::to_string(&exp).unwrap()).unwrap();
    repo.git(&["commit", "-qam", "Small splits"]);

    let run = repo.harness(&["run", "--split", "held_in"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let trials = trials(&repo);
    assert_eq!(trials.len(), 2, "{run:#?}");
    for (row, trace) in &trials {
        assert_eq!(trace["protocol"], "command", "{trace:#}");
        // The initial harness has the sim's quirks: both stall or retry until the turn budget.
        assert_eq!(row["outcome"], "fail", "{row:#}");
        assert_eq!(trace["ending"]["reason"], "budget_turns", "{trace:#}");
        // DeepAgents' own shell tool ran the sim's commands.
        assert!(
            trace["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["type"] == "tool_call" && e["tool"] == "execute"),
            "{trace:#}"
        );
        let systems = systems(trace);
        assert!(systems.len() > 2, "{systems:?}");
        // The system prompt and the always-on instructions on every call; bootstrap only
        // before the first tool call.
        for s in &systems {
            assert!(
                s.contains("Terminal Bench 2 Harbor task environment"),
                "{s}"
            );
            assert!(s.contains("Prefer concrete repo changes"), "{s}");
            assert!(s.contains("Before concluding, verify the result"), "{s}");
        }
        assert!(systems[0].contains("Start by inspecting the workspace"));
        assert!(
            systems[1..]
                .iter()
                .all(|s| !s.contains("Start by inspecting the workspace")),
            "{systems:?}"
        );
    }
    // Failure recovery only once a tool call failed: never on word-count (no command fails),
    // from the call after `bash build.sh` first failed on repair-build-script.
    let recovery = "If a tool call fails, inspect the error";
    let by_task = |id: &str| {
        trials
            .iter()
            .find(|(row, _)| row["task"] == id)
            .map(|(_, t)| t.clone())
            .unwrap()
    };
    let word_count = by_task("word-count");
    assert!(systems(&word_count).iter().all(|s| !s.contains(recovery)));
    let repair = by_task("repair-build-script");
    let failed_at = repair["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "tool_call" && e["ok"] == false)
        .and_then(|e| e["turn"].as_u64())
        .expect("a failed tool call") as usize;
    let repair_systems = systems(&repair);
    assert!(
        repair_systems[..failed_at]
            .iter()
            .all(|s| !s.contains(recovery)),
        "{repair_systems:?}"
    );
    assert!(
        repair_systems[failed_at..]
            .iter()
            .all(|s| s.contains(recovery)),
        "{repair_systems:?}"
    );

    // The loop: mine the failures, propose from the catalog, validate through the paper's
    // gate, promote.
    let mine = repo.harness(&["mine"]);
    assert_eq!(mine.code, 0, "{mine:#?}");
    assert!(
        mine.stdout.contains("no_artifact_before_budget"),
        "{}",
        mine.stdout
    );
    let propose = repo.harness(&["propose", "--proposer", "catalog", "-n", "2"]);
    assert_eq!(propose.code, 0, "{propose:#?}");
    assert!(
        propose
            .stdout
            .contains("harness/proposals/1/artifact-early")
            && propose.stdout.contains("[prompts/bootstrap.md]"),
        "{}",
        propose.stdout
    );
    let validate = repo.harness(&["validate", "--gate", "paper", "1/artifact-early"]);
    assert_eq!(validate.code, 0, "{validate:#?}");
    assert!(
        validate.stdout.contains("1/artifact-early  ACCEPT"),
        "{}",
        validate.stdout
    );
    let promote = repo.harness(&["promote", "1/artifact-early"]);
    assert_eq!(promote.code, 0, "{promote:#?}");
    let bootstrap = std::fs::read_to_string(repo.root.join("prompts/bootstrap.md")).unwrap();
    assert!(
        bootstrap.contains("create a first version of it early"),
        "{bootstrap}"
    );
}

/// mini-swe-agent's wheels (`pip download`), prepared by `.ci/run` beside its install.
fn mini_swe_agent_wheels(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("GIT_HARNESS_MSWEA_WHEELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pywheels-msa"));
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let has_wheels = std::fs::read_dir(&dir).is_ok_and(|d| {
        d.flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("mini_swe_agent-")
        })
    });
    if !has_wheels {
        assert!(!ci, "{test}: no mini-swe-agent wheels in {}", dir.display());
        eprintln!(
            "\n!!!!! SKIPPING {test}: no mini-swe-agent wheels in {} (pip download -d it mini-swe-agent) !!!!!\n",
            dir.display()
        );
        return None;
    }
    Some(dir)
}

#[test]
fn mini_swe_agent_runs_under_docker_and_installs_once_per_image() {
    let test = "mini_swe_agent_runs_under_docker_and_installs_once_per_image";
    let Some(wheels) = mini_swe_agent_wheels(test) else {
        return;
    };
    if !crate::support::sandbox::docker_engine_or_skip(test) {
        return;
    }
    let repo = template_repo("mini-swe-agent", &wheels);
    let path = repo.root.join(".harness/experiment.yaml");
    let mut exp: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    exp["runner"]["kind"] = json!("docker");
    // A few turns show mini-swe-agent at work; the sim's stall would go on to the budget.
    exp["budgets"]["max_turns"] = json!(3);
    std::fs::write(&path, serde_yaml::to_string(&exp).unwrap()).unwrap();
    // The task image has no pip: the install unpacks the wheels (what pip does for them) into
    // the image, and stamps it with an id of its own; the command reads the packages from
    // there and prints the stamp.
    let manifest = std::fs::read_to_string(repo.root.join("harness.yaml")).unwrap();
    let manifest = manifest
        .replace(
            "  api: openai\n",
            "  install: >-\n    for w in \"$HARNESS_AGENT_PATHS\"/*.whl; do python3 -m zipfile -e \"$w\" /opt/mswea || exit 1; done;\n    cat /proc/sys/kernel/random/uuid > /opt/mswea/install-id\n  api: openai\n",
        )
        .replace(
            "PYTHONPATH=\"$HARNESS_AGENT_PATHS${PYTHONPATH:+:$PYTHONPATH}\"",
            "trap 'echo \"install $(cat /opt/mswea/install-id)\"' EXIT; PYTHONPATH=/opt/mswea",
        );
    assert!(manifest.contains("install-id") && manifest.contains("PYTHONPATH=/opt/mswea"));
    std::fs::write(repo.root.join("harness.yaml"), manifest).unwrap();
    std::fs::write(
        repo.root.join(".harness/splits.yaml"),
        "held_in:\n- word-count\nvalidation:\n- decode-message\ntest:\n- extract-emails\n",
    )
    .unwrap();
    repo.git(&[
        "commit",
        "-qam",
        "mini-swe-agent installed into the task image",
    ]);

    let install_id = |repo: &Repo| {
        let trials = trials(repo);
        assert_eq!(trials.len(), 1);
        let (row, trace) = &trials[0];
        assert_eq!(trace["protocol"], "command", "{trace:#}");
        // mini-swe-agent ran in the container and talked to the sim through the tunnel.
        assert!(
            tool_commands(trace).iter().any(|c| c == "ls -la"),
            "{row:#} {trace:#}"
        );
        let output = trace["command"]["output"].as_str().unwrap().to_string();
        output
            .lines()
            .find_map(|l| l.strip_prefix("install "))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no install id in {output}"))
    };
    let first = repo.harness(&["run", "--split", "held_in"]);
    assert_eq!(first.code, 0, "{first:#?}");
    let id1 = install_id(&repo);
    assert_eq!(id1.len(), 36, "{id1}");
    let second = repo.harness(&["run", "--split", "held_in", "--no-cache"]);
    assert_eq!(second.code, 0, "{second:#?}");
    // The second trial ran on the image the first install made: the install did not run again.
    assert_eq!(install_id(&repo), id1);
}

#[test]
fn deepagents_template_runs_under_docker_through_the_tunnel() {
    let test = "deepagents_template_runs_under_docker_through_the_tunnel";
    let Some(deps) = deepagents(test) else {
        return;
    };
    if !crate::support::sandbox::docker_engine_or_skip(test) {
        return;
    }
    let repo = template_repo("deepagents", &deps);
    let path = repo.root.join(".harness/experiment.yaml");
    let mut exp: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    exp["runner"]["kind"] = json!("docker");
    exp["budgets"]["max_turns"] = json!(4);
    std::fs::write(&path, serde_yaml::to_string(&exp).unwrap()).unwrap();
    std::fs::write(
        repo.root.join(".harness/splits.yaml"),
        "held_in:\n- word-count\nvalidation:\n- decode-message\ntest:\n- extract-emails\n",
    )
    .unwrap();
    repo.git(&["commit", "-qam", "DeepAgents in a container"]);
    let run = repo.harness(&["run", "--split", "held_in"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let trials = trials(&repo);
    assert_eq!(trials.len(), 1, "{run:#?}");
    let (row, trace) = &trials[0];
    // DeepAgents ran in the container, reached the sim only through the exec tunnel, and its
    // shell tool ran the sim's commands there; the initial harness stalls to the budget.
    assert_eq!(trace["protocol"], "command", "{trace:#}");
    assert_eq!(
        trace["ending"]["reason"], "budget_turns",
        "{row:#} {trace:#}"
    );
    let ran: Vec<&str> = trace["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "tool_call" && e["tool"] == "execute")
        .filter_map(|e| e["command"].as_str())
        .collect();
    assert_eq!(ran.first(), Some(&"ls -la"), "{trace:#}");
    let systems = systems(trace);
    assert!(systems[0].contains("Start by inspecting the workspace"));
    assert!(!systems[1].contains("Start by inspecting the workspace"));
    assert_eq!(row["outcome"], "fail", "{row:#}");

    // The loop in containers too: mine, propose from the catalog, validate through the
    // paper's gate (the candidate's trials run DeepAgents under Docker), promote.
    let mine = repo.harness(&["mine"]);
    assert_eq!(mine.code, 0, "{mine:#?}");
    let propose = repo.harness(&["propose", "--proposer", "catalog", "-n", "1"]);
    assert_eq!(propose.code, 0, "{propose:#?}");
    assert!(
        propose.stdout.contains("[prompts/bootstrap.md]"),
        "{}",
        propose.stdout
    );
    let validate = repo.harness(&["validate", "--gate", "paper", "1/artifact-early"]);
    assert_eq!(validate.code, 0, "{validate:#?}");
    assert!(
        validate.stdout.contains("1/artifact-early  ACCEPT"),
        "{}",
        validate.stdout
    );
    let promote = repo.harness(&["promote", "1/artifact-early"]);
    assert_eq!(promote.code, 0, "{promote:#?}");
    let bootstrap = std::fs::read_to_string(repo.root.join("prompts/bootstrap.md")).unwrap();
    assert!(
        bootstrap.contains("create a first version of it early"),
        "{bootstrap}"
    );
}
