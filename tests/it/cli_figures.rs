//! The figures `estimate` and `validate` print, checked against what the repository records:
//! trials planned and executed, tokens and cost.

use serde_json::Value;

use crate::support::loops::*;

/// Trials a run record's results executed itself (not from the cache).
fn executed_in(repo: &Repo, run: &str) -> usize {
    repo.results(run)
        .iter()
        .filter(|r| r.get("cached_from").is_none_or(Value::is_null))
        .count()
}

/// The loop tests' small repository cut to `held_in` + `validation` tasks of its splits, one
/// trial per task: the figures are the same on fewer trials.
fn fewer(held_in: usize, validation: usize) -> Repo {
    let repo = Repo::small("minimal");
    repo.splits(&HELD_IN[..held_in], &VALIDATION[..validation], TEST);
    repo.set_experiment("trials", "1");
    repo
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn estimate_prices_what_is_not_cached_at_the_recorded_averages() {
    let repo = fewer(3, 2);
    // Prices are not part of the experiment's fingerprint; they make the sim's trials cost.
    repo.edit_experiment(|t| {
        t.replace("input_per_mtok: 0.0", "input_per_mtok: 3.0")
            .replace("output_per_mtok: 0.0", "output_per_mtok: 15.0")
    });
    let n = 5;
    let estimate = |args: &[&str]| -> Value {
        let mut all = vec!["estimate"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--format", "json"]);
        let out = repo.harness(&all).ok();
        serde_json::from_str(&out.stdout).unwrap()
    };
    let num = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k}: {v:#}"));

    // Nothing recorded yet: every planned trial is to execute, none priced by its own task.
    let before = estimate(&["run"]);
    assert_eq!(before["trials"], n, "{before:#}");
    assert_eq!(before["cached"], 0, "{before:#}");
    assert_eq!(before["to_execute"], n, "{before:#}");
    assert_eq!(before["unseen_tasks"], n, "{before:#}");
    assert_eq!(num(&before, "cost_usd"), 0.0, "{before:#}");

    // One trial of every held_in and validation task.
    let run: Value =
        serde_json::from_str(&repo.harness(&["run", "--format", "json"]).ok().stdout).unwrap();
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len() as u64, n, "{run:#}");
    let counted: Vec<&Value> = results
        .iter()
        .filter(|r| r["outcome"] != "infra-error")
        .collect();
    assert_eq!(
        counted.len() as u64,
        n,
        "the sim's trials all count: {run:#}"
    );
    let tokens: f64 = counted
        .iter()
        .map(|r| {
            (r["usage"]["prompt_tokens"].as_u64().unwrap()
                + r["usage"]["completion_tokens"].as_u64().unwrap()) as f64
        })
        .sum();
    let cost: f64 = counted
        .iter()
        .map(|r| r["cost_usd"].as_f64().unwrap())
        .sum();
    assert!(cost > 0.0 && tokens > 0.0, "{run:#}");

    // The same run again comes from the cache: nothing to pay.
    let same = estimate(&["run"]);
    assert_eq!(same["trials"], n, "{same:#}");
    assert_eq!(same["cached"], n, "{same:#}");
    assert_eq!(same["to_execute"], 0, "{same:#}");
    assert_eq!(num(&same, "cost_usd"), 0.0, "{same:#}");
    assert_eq!(
        same["basis"],
        format!("averages over {n} recorded trials"),
        "{same:#}"
    );

    // Three trials per task: trial 0 is cached, trials 1 and 2 cost what each task cost once.
    let three = estimate(&["run", "--trials", "3"]);
    assert_eq!(three["trials"], 3 * n, "{three:#}");
    assert_eq!(three["cached"], n, "{three:#}");
    assert_eq!(three["to_execute"], 2 * n, "{three:#}");
    assert_eq!(three["unseen_tasks"], 0, "{three:#}");
    assert!(
        close(num(&three, "tokens"), 2.0 * tokens),
        "{three:#} vs {tokens}"
    );
    assert!(
        close(num(&three, "cost_usd"), 2.0 * cost),
        "{three:#} vs {cost}"
    );

    // Evolve's upper bound: every round evaluates k candidates and the merged one on both
    // splits, nothing cached.
    let evolve = estimate(&["evolve", "--rounds", "2", "-k", "1"]);
    assert_eq!(evolve["trials"], 2 * 2 * n, "{evolve:#}");
    assert_eq!(evolve["to_execute"], 2 * 2 * n, "{evolve:#}");
    assert!(
        close(num(&evolve, "cost_usd"), 4.0 * cost),
        "{evolve:#} vs {cost}"
    );
}

/// `trials executed N (of M planned ...)` from validate's text, and the runs it recorded.
fn validate(repo: &Repo, proposal: &str) -> (usize, usize, Vec<String>) {
    let commit = repo.rev(&format!("harness/proposals/{proposal}"));
    let out = repo.harness(&["validate", proposal]);
    assert!([0, 1, 3].contains(&out.code), "{out:?}");
    let re = regex::Regex::new(r"trials executed (\d+) \(of (\d+) planned").unwrap();
    let c = re
        .captures(&out.stdout)
        .unwrap_or_else(|| panic!("{}", out.stdout));
    let note = repo.note(&commit);
    let runs = note["validations"]
        .as_array()
        .and_then(|v| v.last())
        .and_then(|v| v["runs"].as_array())
        .unwrap_or_else(|| panic!("{note:#}"))
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    (c[1].parse().unwrap(), c[2].parse().unwrap(), runs)
}

#[test]
fn validate_counts_the_trials_it_ran_among_those_it_planned() {
    // Seven tasks: more than the strict gate's five changed tasks, so no candidate is settled
    // before its first trial.
    let repo = fewer(4, 3);
    let n = 7;
    let with_line = |path: &str, line: &str| format!("{}{line}\n", repo.read(path));
    let first = repo.proposal(
        1,
        "verify",
        "main",
        &[(
            "prompts/system.md",
            &with_line("prompts/system.md", "Check your work before you submit."),
        )],
    );
    let second = repo.proposal(
        1,
        "plan",
        "main",
        &[(
            "prompts/execution.md",
            &with_line(
                "prompts/execution.md",
                "Plan the steps before the first command.",
            ),
        )],
    );

    // Nothing of the parent is cached: its trials run, and count, with the candidate's.
    let (executed, planned, runs) = validate(&repo, &first);
    assert_eq!(
        planned,
        2 * n,
        "parent and candidate, one trial per task each"
    );
    let ran: Vec<usize> = runs.iter().map(|r| executed_in(&repo, r)).collect();
    assert_eq!(ran[0], n, "the parent ran every trial: {runs:?}");
    assert_eq!(executed, ran.iter().sum::<usize>(), "{runs:?} {ran:?}");
    assert!(executed <= planned);

    // The same parent again: all of its trials come from the cache and none counts.
    let (executed, planned, runs) = validate(&repo, &second);
    assert_eq!(planned, 2 * n);
    let ran: Vec<usize> = runs.iter().map(|r| executed_in(&repo, r)).collect();
    assert_eq!(ran[0], 0, "the parent came from the cache: {runs:?}");
    assert!(ran[1..].iter().sum::<usize>() > 0, "{ran:?}");
    assert_eq!(executed, ran.iter().sum::<usize>(), "{runs:?} {ran:?}");
}
