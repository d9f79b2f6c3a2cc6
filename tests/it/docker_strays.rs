//! The agent's leftover processes and the Docker verifier, through `tasks check --runner
//! docker`. By default (`runner.strays: kill`) they are gone before the tests are unpacked: a
//! server the agent (here the oracle) started no longer answers, and a process rewriting the
//! tests or the reward cannot win the trial. Under `runner.strays: keep`, as under Harbor, the
//! server still answers the tests, and a leftover process that writes the verifier's results
//! does not win the trial.

use std::path::Path;

use crate::support::sandbox::{base_dockerfile, harbor_task};

/// A no-network task on the base image: its oracle leaves `solve.sh` running in the background
/// (a new session, so its exec's group kill misses it), and `test.sh` as given.
fn task(dir: &Path, solve: &str, test: &str) {
    harbor_task(
        dir,
        "Leave a process running.\n",
        Some(&base_dockerfile()),
        solve,
        test,
    );
}

/// The oracle of `forges` leaves a process writing a passing reward (both files, reward.json
/// first in precedence) over and over, before, during and after the tests, which fail.
fn forges(dir: &Path) {
    task(
        dir,
        "setsid sh -c 'while :; do mkdir -p /logs/verifier; echo 1 > /logs/verifier/reward.txt; \
         echo \"{\\\"reward\\\": 1}\" > /logs/verifier/reward.json; done' >/dev/null 2>&1 < /dev/null &\n\
         sleep 0.5; echo left a writer\n",
        "#!/bin/bash\nsleep 0.3\necho 0 > /logs/verifier/reward.txt\n",
    );
}

const FETCH: &str = "python3 -c \"import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8765/page.txt', timeout=5).read().strip() == b'served-ok' else 1)\"";

/// The oracle of `serves` starts an HTTP server in a new session; its test passes when the
/// server answers.
fn serves(dir: &Path) {
    task(
        dir,
        &format!(
            "mkdir -p /srv && echo served-ok > /srv/page.txt\n\
             setsid python3 -m http.server 8765 --bind 127.0.0.1 --directory /srv >/dev/null 2>&1 < /dev/null &\n\
             for i in $(seq 100); do {FETCH} 2>/dev/null && exit 0; sleep 0.1; done; exit 1\n"
        ),
        &format!(
            "#!/bin/bash\nif {FETCH}; then echo 1; else echo 0; fi > /logs/verifier/reward.txt\n"
        ),
    );
}

/// `.harness/experiment.yaml` under `root` with the Docker runner and `strays` under runner
/// (when given).
fn experiment(root: &Path, strays: Option<&str>) {
    std::fs::create_dir_all(root.join(".harness")).unwrap();
    let strays = strays
        .map(|s| format!("  strays: {s}\n"))
        .unwrap_or_default();
    std::fs::write(
        root.join(".harness/experiment.yaml"),
        format!(
            "model:\n  provider: sim\n  name: sim\n  scenario: builtin:demo\nsuite:\n  path: suite\nrunner:\n  kind: docker\n{strays}"
        ),
    )
    .unwrap();
}

/// `tasks check --runner docker SUITE`, run in `root` (where `.harness/experiment.yaml` is).
async fn check(root: tempfile::TempDir) -> String {
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = crate::support::sandbox::tasks_check_cmd(
            &["--runner", "docker"],
            &root.path().join("suite"),
        );
        cmd.current_dir(root.path());
        let out = crate::support::hermetic::output(&mut cmd);
        drop(root);
        out
    })
    .await
    .unwrap();
    format!("{}{}", out.stdout, out.stderr)
}

/// The line of `tasks check` about task `id`.
fn line(text: &str, id: &str) -> String {
    text.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(id))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn by_default_the_agents_processes_are_gone_before_the_tests() {
    let Some(_p) = crate::support::sandbox::docker_or_skip(
        "by_default_the_agents_processes_are_gone_before_the_tests",
    )
    .await
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    experiment(tmp.path(), None);
    let suite = tmp.path().join("suite");
    serves(&suite.join("serves"));
    // A stray that rewrites the tests in place into a passing one, over and over (bash reads a
    // script as it goes, so a rewrite also changes a `test.sh` that already runs): were it alive
    // once they are unpacked, `test.sh` would pass.
    task(
        &suite.join("rewrites"),
        "setsid sh -c 'while :; do [ -f /tests/test.sh ] && \
         printf \"#!/bin/bash\\nsleep 0.3\\necho 1 > /logs/verifier/reward.txt\\n\" > /tests/test.sh; done' \
         >/dev/null 2>&1 < /dev/null &\n\
         sleep 0.5; echo left a rewriter\n",
        "#!/bin/bash\nsleep 0.3\necho 0 > /logs/verifier/reward.txt\n",
    );
    // A stray that writes a passing reward over and over, also while the tests run.
    forges(&suite.join("forges"));
    let text = check(tmp).await;
    assert!(text.contains("3 tasks checked, 3 broken"), "{text}");
    for id in ["serves", "rewrites", "forges"] {
        assert!(line(&text, id).starts_with("BROKEN"), "{id}: {text}");
    }
    // Killed before the tests, the writer never wrote beside them: nothing to name.
    assert!(!text.contains("wrote /logs/verifier"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn runner_strays_maybe_is_refused_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    experiment(tmp.path(), Some("maybe"));
    serves(&tmp.path().join("suite/serves"));
    let mut cmd = crate::support::sandbox::tasks_check_cmd(
        &["--runner", "docker"],
        &tmp.path().join("suite"),
    );
    cmd.current_dir(tmp.path());
    let out = crate::support::hermetic::output(&mut cmd);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("experiment.yaml"), "{}", out.stderr);
    assert!(out.stderr.contains("runner.strays"), "{}", out.stderr);
    assert!(out.stderr.contains("maybe"), "{}", out.stderr);
    // `keep` on a runner that always kills is refused too, naming the field.
    experiment(tmp.path(), Some("keep"));
    let mut cmd =
        crate::support::sandbox::tasks_check_cmd(&["--runner", "local"], &tmp.path().join("suite"));
    cmd.current_dir(tmp.path());
    let out = crate::support::hermetic::output(&mut cmd);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("runner.strays"), "{}", out.stderr);
}

/// `status` names what becomes of the agent's leftover processes with the runner: the default,
/// and `keep` when the experiment says so.
#[test]
fn status_shows_runner_strays() {
    let repo = crate::support::repo::Repo::init("minimal");
    let out = repo.harness(&["status"]).ok();
    let runner = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("runner "))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        runner(&out.stdout).ends_with("strays: kill"),
        "{}",
        out.stdout
    );
    repo.edit_experiment(|t| {
        crate::support::repo::with_runner_kind(t, "  kind: docker\n  strays: keep\n")
    });
    let out = repo.harness(&["status"]).ok();
    let line = runner(&out.stdout);
    assert!(line.starts_with("runner    docker "), "{}", out.stdout);
    assert!(line.ends_with("strays: keep"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn kept_a_server_the_agent_started_answers_the_tests_and_a_stray_cannot_write_the_reward() {
    let Some(_p) = crate::support::sandbox::docker_or_skip(
        "kept_a_server_the_agent_started_answers_the_tests_and_a_stray_cannot_write_the_reward",
    )
    .await
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    experiment(tmp.path(), Some("keep"));
    let suite = tmp.path().join("suite");
    serves(&suite.join("serves"));
    forges(&suite.join("forges"));
    let text = check(tmp).await;
    // `serves` passes its oracle; `forges` is broken: its oracle did not pass, and says why.
    assert!(text.contains("2 tasks checked, 1 broken"), "{text}");
    assert!(line(&text, "serves").starts_with("ok"), "{text}");
    assert!(line(&text, "forges").starts_with("BROKEN"), "{text}");
    assert!(
        text.contains("wrote /logs/verifier/reward"),
        "the stray's writes are not named: {text}"
    );
}
