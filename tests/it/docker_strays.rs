//! The agent's leftover processes and the Docker verifier, through `tasks check --runner
//! docker`: as under Harbor, a server the agent (here the oracle) started still answers the
//! tests; a leftover process that writes the verifier's results does not win the trial.

use std::path::Path;

/// A no-network task on the base image: its oracle leaves `solve.sh` running in the background
/// (a new session, so its exec's group kill misses it), and `test.sh` as given.
fn task(dir: &Path, solve: &str, test: &str) {
    for sub in ["environment", "tests", "solution"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("instruction.md"), "Leave a process running.\n").unwrap();
    std::fs::write(
        dir.join("task.toml"),
        "[environment]\nworkdir = \"/app\"\nnetwork_mode = \"no-network\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("environment/Dockerfile"),
        format!(
            "FROM {}\nWORKDIR /app\n",
            git_harness::sandbox::image::BASE_IMAGE
        ),
    )
    .unwrap();
    std::fs::write(dir.join("solution/solve.sh"), solve).unwrap();
    std::fs::write(dir.join("tests/test.sh"), test).unwrap();
}

const FETCH: &str = "python3 -c \"import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8765/page.txt', timeout=5).read().strip() == b'served-ok' else 1)\"";

#[tokio::test(flavor = "multi_thread")]
async fn a_server_the_agent_started_answers_the_tests_and_a_stray_cannot_write_the_reward() {
    let Some(_p) = crate::support::sandbox::docker_or_skip(
        "a_server_the_agent_started_answers_the_tests_and_a_stray_cannot_write_the_reward",
    )
    .await
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("suite");
    task(
        &suite.join("serves"),
        &format!(
            "mkdir -p /srv && echo served-ok > /srv/page.txt\n\
             setsid python3 -m http.server 8765 --bind 127.0.0.1 --directory /srv >/dev/null 2>&1 < /dev/null &\n\
             for i in $(seq 100); do {FETCH} 2>/dev/null && exit 0; sleep 0.1; done; exit 1\n"
        ),
        &format!(
            "#!/bin/bash\nif {FETCH}; then echo 1; else echo 0; fi > /logs/verifier/reward.txt\n"
        ),
    );
    // The stray writes a passing reward (both files, reward.json first in precedence) over and
    // over, before, during and after the tests, which fail.
    task(
        &suite.join("forges"),
        "setsid sh -c 'while :; do mkdir -p /logs/verifier; echo 1 > /logs/verifier/reward.txt; \
         echo \"{\\\"reward\\\": 1}\" > /logs/verifier/reward.json; done' >/dev/null 2>&1 < /dev/null &\n\
         sleep 0.5; echo left a writer\n",
        "#!/bin/bash\nsleep 0.3\necho 0 > /logs/verifier/reward.txt\n",
    );
    let out = tokio::task::spawn_blocking(move || {
        let out = crate::support::sandbox::tasks_check(&["--runner", "docker"], &suite);
        drop(tmp);
        out
    })
    .await
    .unwrap();
    let text = format!("{}{}", out.stdout, out.stderr);
    // `serves` passes its oracle; `forges` is broken: its oracle did not pass, and says why.
    assert!(text.contains("2 tasks checked, 1 broken"), "{text}");
    let line = |id: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(id))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("serves").starts_with("ok"), "{text}");
    assert!(line("forges").starts_with("BROKEN"), "{text}");
    assert!(
        text.contains("wrote /logs/verifier/reward"),
        "the stray's writes are not named: {text}"
    );
}
