//! The local sandbox, with and without bubblewrap: tasks check, reward forgery, timeouts that
//! kill whole process trees, cleanup on every path, the documented environment.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::sandbox::*;
use git_harness::eval::builtin::{BuiltinAgent, check_tasks, run_trial};
use git_harness::eval::{VerifyOptions, verify};
use git_harness::sandbox::{ExecRequest, SandboxProvider};

async fn check_suite_passes(provider: Arc<dyn SandboxProvider>) {
    let suite = suite();
    let checks = check_tasks(provider, &suite.tasks, 4, &VerifyOptions::default()).await;
    assert_eq!(checks.len(), suite.tasks.len());
    for c in &checks {
        let oracle = c
            .oracle
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: oracle trial failed: {e}", c.task));
        let nop = c
            .nop
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: nop trial failed: {e}", c.task));
        assert!(
            oracle.verifier.passed,
            "{}: oracle must pass: {:?}",
            c.task, oracle.verifier
        );
        assert_eq!(oracle.verifier.reward, 1.0);
        assert!(
            !nop.verifier.passed,
            "{}: nop must fail: {:?}",
            c.task, nop.verifier
        );
        assert!(c.problems().is_empty());
    }
}

#[tokio::test]
async fn tasks_check_oracle_passes_nop_fails_with_bwrap() {
    if bwrap_or_skip("tasks_check_oracle_passes_nop_fails_with_bwrap") {
        check_suite_passes(local(true)).await;
    }
}

#[tokio::test]
async fn tasks_check_oracle_passes_nop_fails_without_bwrap() {
    check_suite_passes(local(false)).await;
}

#[tokio::test]
async fn nop_reports_failed_test_names() {
    let t = fixture_task("hello-file");
    let r = run_trial(
        local(false).as_ref(),
        &t,
        BuiltinAgent::Nop,
        &VerifyOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(r.verifier.reward, 0.0);
    assert_eq!(r.verifier.failed_tests, vec!["test_hello".to_string()]);
}

async fn forged_reward_is_ignored(provider: Arc<dyn SandboxProvider>) {
    let task = fixture_task("hello-file");
    let mut sb = provider.create(&task).await.unwrap();
    // The agent writes a perfect reward without solving the task.
    let forge = "mkdir -p $HARNESS_LOGS_DIR/verifier && echo 1 > $HARNESS_LOGS_DIR/verifier/reward.txt \
                 && echo '{\"reward\": 1}' > $HARNESS_LOGS_DIR/verifier/reward.json \
                 && echo 'echo 1 > $HARNESS_LOGS_DIR/verifier/reward.txt' > $HARNESS_TESTS_DIR/test.sh";
    let out = sb
        .exec(ExecRequest::new(forge, Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    let outcome = verify(sb.as_ref(), &task, &VerifyOptions::default())
        .await
        .unwrap();
    sb.destroy().await.unwrap();
    assert_eq!(outcome.reward, 0.0, "{outcome:?}");
    assert!(!outcome.passed);
}

#[tokio::test]
async fn forged_reward_is_ignored_with_bwrap() {
    if bwrap_or_skip("forged_reward_is_ignored_with_bwrap") {
        forged_reward_is_ignored(local(true)).await;
    }
}

#[tokio::test]
async fn forged_reward_is_ignored_without_bwrap() {
    forged_reward_is_ignored(local(false)).await;
}

async fn timeout_kills_process_tree(provider: Arc<dyn SandboxProvider>) {
    let task = fixture_task("hello-file");
    let mut sb = provider.create(&task).await.unwrap();
    exec_timeout_kills_the_tree(sb.as_mut(), Duration::from_secs(1)).await;
    // The sandbox still works after a timeout.
    let again = sb
        .exec(ExecRequest::new("echo alive", Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(again.output.contains("alive"));
    sb.destroy().await.unwrap();
}

#[tokio::test]
async fn timeout_kills_process_tree_with_bwrap() {
    if bwrap_or_skip("timeout_kills_process_tree_with_bwrap") {
        timeout_kills_process_tree(local(true)).await;
    }
}

#[tokio::test]
async fn timeout_kills_process_tree_without_bwrap() {
    timeout_kills_process_tree(local(false)).await;
}

async fn background_children_end_with_their_exec(provider: Arc<dyn SandboxProvider>) {
    let task = fixture_task("hello-file");
    let mut sb = provider.create(&task).await.unwrap();
    let m = sleep_marker();
    let t0 = Instant::now();
    let out = sb
        .exec(ExecRequest::new(
            format!("sleep {m} & echo done"),
            Duration::from_secs(30),
        ))
        .await
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "a background child held the exec: {:?}",
        t0.elapsed()
    );
    assert_eq!(out.exit_code, Some(0));
    assert!(out.output.contains("done"));
    assert_eq!(survivors(&m, GONE_WITHIN).await, Vec::<String>::new());
    sb.destroy().await.unwrap();
}

#[tokio::test]
async fn background_children_end_with_their_exec_with_bwrap() {
    if bwrap_or_skip("background_children_end_with_their_exec_with_bwrap") {
        background_children_end_with_their_exec(local(true)).await;
    }
}

#[tokio::test]
async fn background_children_end_with_their_exec_without_bwrap() {
    background_children_end_with_their_exec(local(false)).await;
}

async fn dropped_sandbox_cleans_up(provider: Arc<dyn SandboxProvider>) {
    let task = fixture_task("hello-file");
    let sb = provider.create(&task).await.unwrap();
    let marker_file = sb.workdir().to_string();
    let m = sleep_marker();
    // Find the host temp dir: the plain mode's workdir is on the host; under bwrap ask the logs.
    let host_dirs: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("git-harness-{}", sb.trial_id()))
        })
        .collect();
    assert_eq!(host_dirs.len(), 1, "one temp dir per trial ({marker_file})");
    // An exec in flight is abandoned (as on Ctrl-C or an outer timeout), then the sandbox dropped.
    let fut = sb.exec(ExecRequest::new(
        format!("sleep {m}"),
        Duration::from_secs(60),
    ));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), fut)
            .await
            .is_err()
    );
    drop(sb);
    assert_eq!(survivors(&m, GONE_WITHIN).await, Vec::<String>::new());
    assert!(
        !host_dirs[0].exists(),
        "temp dir left behind: {}",
        host_dirs[0].display()
    );
}

#[tokio::test]
async fn dropped_sandbox_cleans_up_with_bwrap() {
    if bwrap_or_skip("dropped_sandbox_cleans_up_with_bwrap") {
        dropped_sandbox_cleans_up(local(true)).await;
    }
}

#[tokio::test]
async fn dropped_sandbox_cleans_up_without_bwrap() {
    dropped_sandbox_cleans_up(local(false)).await;
}

#[tokio::test]
async fn bwrap_sandbox_follows_the_documented_layout() {
    if !bwrap_or_skip("bwrap_sandbox_follows_the_documented_layout") {
        return;
    }
    let task = fixture_task("sum-numbers");
    let mut sb = local(true).create(&task).await.unwrap();
    let script = "echo \"$HARNESS_WORKDIR|$HARNESS_TESTS_DIR|$HARNESS_LOGS_DIR|$HARNESS_SOLUTION_DIR|$(pwd)\"; \
                  head -1 numbers.txt; ls; touch /usr/git-harness-probe 2>/dev/null && echo WROTE-HOST; \
                  echo tmp > /tmp/x && cat /tmp/x; ulimit -t; \
                  cat /proc/net/dev | grep -c : ; echo \"key=${OPENAI_API_KEY:-unset}\"";
    let out = sb
        .exec(ExecRequest::new(script, Duration::from_secs(10)))
        .await
        .unwrap();
    sb.destroy().await.unwrap();
    let lines: Vec<&str> = out.output.lines().collect();
    assert_eq!(
        lines[0], "/app|/tests|/logs|/solution|/app",
        "{}",
        out.output
    );
    assert_eq!(lines[1], "1", "setup.sh ran in the workdir: {}", out.output);
    assert!(
        out.output.contains("README.md"),
        "workspace copied: {}",
        out.output
    );
    assert!(
        !out.output.contains("WROTE-HOST"),
        "host filesystem must be read-only"
    );
    assert!(out.output.contains("\ntmp\n"));
    assert!(
        out.output.contains("\n15\n"),
        "CPU rlimit = timeout + 5s: {}",
        out.output
    );
    // Only the loopback interface without the network: header lines have no ':'... count = 1 (lo).
    assert!(
        out.output.contains("\n1\n"),
        "network namespace: {}",
        out.output
    );
    assert!(
        out.output.contains("key=unset"),
        "the host environment does not leak"
    );
}

#[tokio::test]
async fn plain_sandbox_points_variables_at_temp_dirs() {
    let task = fixture_task("sum-numbers");
    let mut sb = local(false).create(&task).await.unwrap();
    let out = sb
        .exec(ExecRequest::new(
            "echo \"$HARNESS_WORKDIR|$HARNESS_TESTS_DIR|$HARNESS_LOGS_DIR|$HARNESS_SOLUTION_DIR\"; pwd; cat numbers.txt | wc -l",
            Duration::from_secs(10),
        ))
        .await
        .unwrap();
    let work = sb.workdir().to_string();
    sb.write_file("note.txt", b"hi").await.unwrap();
    assert_eq!(
        sb.read_file(&format!("{work}/note.txt")).await.unwrap(),
        b"hi"
    );
    assert_eq!(
        sb.read_file("/app/note.txt").await.unwrap(),
        b"hi",
        "nominal paths map to the temp dirs"
    );
    sb.destroy().await.unwrap();
    let lines: Vec<&str> = out.output.lines().collect();
    let vars: Vec<&str> = lines[0].split('|').collect();
    assert_eq!(vars[0], work);
    assert!(
        vars.iter()
            .all(|v| v.starts_with(std::env::temp_dir().to_str().unwrap())),
        "{vars:?}"
    );
    assert_eq!(lines[1], work);
    assert_eq!(lines[2].trim(), "10");
    assert!(
        !std::path::Path::new(&work).exists(),
        "temp dir removed by destroy"
    );
}

#[tokio::test]
async fn memory_limit_applies_as_address_space_rlimit() {
    let mut task = fixture_task("hello-file");
    task.environment.memory_mb = Some(256);
    let mut sb = local(false).create(&task).await.unwrap();
    let out = sb
        .exec(ExecRequest::new("ulimit -v", Duration::from_secs(5)))
        .await
        .unwrap();
    sb.destroy().await.unwrap();
    assert_eq!(out.output.trim(), ((256 + 1024) * 1024).to_string());
}

#[tokio::test]
async fn verifier_infrastructure_failures_are_infra_errors() {
    use git_harness::sandbox::InfraClass;
    let provider = local(false);
    let base = fixture_task("hello-file");
    let tmp = tempfile::tempdir().unwrap();
    for (name, script, timeout) in [
        ("no-reward", "#!/bin/bash\necho hi\n", 10),
        (
            "bad-reward",
            "#!/bin/bash\necho maybe > $HARNESS_LOGS_DIR/verifier/reward.txt\n",
            10,
        ),
        ("slow", "#!/bin/bash\nsleep 30\n", 1),
    ] {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("test.sh"), script).unwrap();
        let mut task = base.clone();
        task.tests_dir = Some(dir.clone());
        task.test_script = dir.join("test.sh");
        task.verifier_timeout = Duration::from_secs(timeout);
        let err = run_trial(
            provider.as_ref(),
            &task,
            BuiltinAgent::Oracle,
            &VerifyOptions::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            InfraClass::of(&err),
            Some(InfraClass::Verifier),
            "{name}: {err}"
        );
        assert_eq!(err.exit_code(), git_harness::exit::CANNOT_TEST);
    }
}

#[test]
fn cli_tasks_check_exit_codes_and_evidence() {
    let ok = tasks_check(&["--no-bwrap"], &fixtures().join("suite")).ok();
    let stdout = &ok.stdout;
    assert!(stdout.contains("3 tasks checked, 0 broken"), "{stdout}");
    assert!(
        ok.stderr.contains("without bubblewrap"),
        "one-time warning on stderr"
    );

    // A task whose verifier accepts anything (nop passes) and one whose solution is wrong.
    let tmp = tempfile::tempdir().unwrap();
    for (name, test, solve) in [
        (
            "lenient",
            "echo 1 > $HARNESS_LOGS_DIR/verifier/reward.txt",
            "true",
        ),
        (
            "wrong-solution",
            "cd $HARNESS_WORKDIR; [ -f done ] && r=1 || r=0; echo FAILED test_done; echo $r > $HARNESS_LOGS_DIR/verifier/reward.txt",
            "echo nothing",
        ),
    ] {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(d.join("tests")).unwrap();
        std::fs::create_dir_all(d.join("solution")).unwrap();
        std::fs::write(d.join("instruction.md"), "Make a file named done.").unwrap();
        std::fs::write(
            d.join("task.toml"),
            "[agent]\ntimeout_sec = 10\n[verifier]\ntimeout_sec = 10\n",
        )
        .unwrap();
        std::fs::write(d.join("tests/test.sh"), format!("#!/bin/bash\n{test}\n")).unwrap();
        std::fs::write(
            d.join("solution/solve.sh"),
            format!("#!/bin/bash\n{solve}\n"),
        )
        .unwrap();
    }
    let bad = tasks_check(&["--no-bwrap"], tmp.path()).code(1);
    let stdout = &bad.stdout;
    assert!(stdout.contains("BROKEN  lenient"), "{stdout}");
    assert!(stdout.contains("nop passes"), "{stdout}");
    assert!(stdout.contains("BROKEN  wrong-solution"), "{stdout}");
    assert!(
        stdout.contains("oracle fails (reward 0), failed tests: test_done"),
        "{stdout}"
    );
    assert!(stdout.contains("2 tasks checked, 2 broken"), "{stdout}");
}

async fn file_tools_stay_inside(provider: Arc<dyn SandboxProvider>) {
    use git_harness::error::Kind;
    let task = fixture_task("hello-file");
    let mut sb = provider.create(&task).await.unwrap();
    let m = format!("gh-file-tools-{}", rand::random::<u32>());
    let setup = format!(
        "mkfifo pipe && ln -s /dev/zero zero && ln -s /etc etc && ln -s /nonexistent-{m}/f dangling \
         && head -c 100000 /dev/zero > big"
    );
    let out = sb
        .exec(ExecRequest::new(setup, Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    for path in ["pipe", "zero", "/dev/zero", "etc"] {
        let e = sb.read_file(path).await.expect_err(path);
        assert_ne!(e.kind(), Kind::Infra, "{path}: {e}");
    }
    for path in [
        format!("etc/{m}"),
        "dangling".to_string(),
        "pipe".to_string(),
    ] {
        let e = sb.write_file(&path, b"owned").await.expect_err(&path);
        assert_ne!(e.kind(), Kind::Infra, "{path}: {e}");
    }
    assert!(!std::path::Path::new(&format!("/etc/{m}")).exists());
    assert!(!std::path::Path::new(&format!("/nonexistent-{m}")).exists());
    let (head, size) = sb.read_file_capped("big", 10).await.unwrap();
    assert_eq!((head.len(), size), (10, 100_000));
    sb.write_file("made/on/the/way.txt", b"ok").await.unwrap();
    assert_eq!(sb.read_file("made/on/the/way.txt").await.unwrap(), b"ok");
    sb.destroy().await.unwrap();
}

#[tokio::test]
async fn file_tools_stay_inside_with_bwrap() {
    if bwrap_or_skip("file_tools_stay_inside_with_bwrap") {
        file_tools_stay_inside(local(true)).await;
    }
}

#[tokio::test]
async fn file_tools_stay_inside_without_bwrap() {
    file_tools_stay_inside(local(false)).await;
}

/// The working-tree fingerprint of the agent loop's change detection is read from the host:
/// it sees what a command changed and ignores what `find` inside would prune.
async fn workdir_fingerprint_is_read_from_outside(provider: Arc<dyn SandboxProvider>) {
    let task = fixture_task("hello-file");
    let mut sb = provider.create(&task).await.unwrap();
    let run = |cmd: &str| ExecRequest::new(cmd, Duration::from_secs(10));
    let fp = || async {
        sb.workdir_fingerprint()
            .await
            .unwrap()
            .expect("local: from outside")
    };
    let first = fp().await;
    sb.exec(run("ls -la > /dev/null; cat /etc/hostname > /dev/null"))
        .await
        .unwrap();
    assert_eq!(fp().await, first, "a command that changes nothing");
    sb.exec(run("mkdir -p .git node_modules/x && echo a > .git/HEAD && echo b > node_modules/x/y && echo t > /tmp/scratch"))
        .await
        .unwrap();
    assert_eq!(fp().await, first, "pruned directories and /tmp");
    sb.exec(run("mkdir -p a/b && echo one > a/b/c.txt"))
        .await
        .unwrap();
    let second = fp().await;
    assert_ne!(second, first, "a new file");
    sb.exec(run("echo two > a/b/c.txt")).await.unwrap();
    assert_ne!(fp().await, second, "a file rewritten");
    sb.destroy().await.unwrap();
}

#[tokio::test]
async fn workdir_fingerprint_is_read_from_outside_with_bwrap() {
    if bwrap_or_skip("workdir_fingerprint_is_read_from_outside_with_bwrap") {
        workdir_fingerprint_is_read_from_outside(local(true)).await;
    }
}

#[tokio::test]
async fn workdir_fingerprint_is_read_from_outside_without_bwrap() {
    workdir_fingerprint_is_read_from_outside(local(false)).await;
}
