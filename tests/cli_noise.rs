//! `git harness noise`: per-task flakiness of main and the gate's minimum detectable effect,
//! through the binary on a hermetic repository.

mod common_loop;

use common_loop::*;

#[test]
fn noise_prints_flakiness_per_held_in_task_and_the_minimum_detectable_effect() {
    let repo = Repo::init("minimal");
    repo.splits(
        &["number-lines", "count-errors"],
        &["top-ips", "sort-scores"],
        TEST,
    );
    repo.edit_experiment(|t| {
        t.replace("max_turns: 30", "max_turns: 16")
            .replace("max_tool_calls: 40", "max_tool_calls: 24")
            .replace("command_timeout_sec: 60", "command_timeout_sec: 20")
            .replace("early_stop: true", "early_stop: true\n  max_trials: 8")
    });
    repo.harness(&["noise", "--trials", "1"]).code(2);
    let out = repo.harness(&["noise", "--trials", "3"]).ok();
    let s = &out.stdout;
    assert!(s.contains("3 trials per task"), "{s}");
    for task in ["number-lines", "count-errors"] {
        let line = s
            .lines()
            .find(|l| l.trim_start().starts_with(task))
            .unwrap_or_else(|| panic!("{s}"));
        assert!(line.contains("/3"), "{line}");
    }
    // Validation tasks are counted, never named.
    assert!(!s.contains("top-ips") && !s.contains("sort-scores"), "{s}");
    assert!(s.contains("of 2 validation task(s) flip"), "{s}");
    assert!(s.contains("minimum detectable effect: +"), "{s}");
    assert!(s.contains("last of 3 looks at 8 trials"), "{s}");
    // The trials are cached: a second measurement runs nothing.
    let again = repo.harness(&["noise", "--trials", "3"]).ok();
    assert!(again.stdout.contains("(0 executed)"), "{}", again.stdout);
}
