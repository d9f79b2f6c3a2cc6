//! Loading task suites: Harbor / TB2 and TB1 layouts, malformed tasks, checksums.

use std::path::{Path, PathBuf};
use std::time::Duration;

use git_harness::Error;
use git_harness::task::{TaskFormat, load_suite, load_task};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tasks")
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

#[test]
fn fixture_suite_loads_in_order() {
    let s = load_suite(&fixtures().join("suite")).unwrap();
    assert_eq!(s.ids(), vec!["hello-file", "sum-numbers", "tb1-count"]);
    let hello = s.get("hello-file").unwrap();
    assert_eq!(hello.format, TaskFormat::Harbor);
    assert_eq!(hello.agent_timeout, Duration::from_secs(60));
    assert_eq!(hello.environment.memory_mb, Some(512));
    assert_eq!(hello.environment.workdir, "/app");
    assert!(hello.dockerfile.is_some() && hello.workspace_dir.is_some());
    assert!(
        hello
            .solution_script
            .as_ref()
            .unwrap()
            .ends_with("solution/solve.sh")
    );
    let tb1 = s.get("tb1-count").unwrap();
    assert_eq!(tb1.format, TaskFormat::Tb1);
    assert_eq!(tb1.verifier_timeout, Duration::from_secs(30));
    assert!(tb1.instruction.contains("Count the lines"));
}

#[test]
fn tb2_shaped_task_loads() {
    let t = load_task(&fixtures().join("formats/tb2-shaped")).unwrap();
    assert_eq!(t.format, TaskFormat::Harbor);
    assert_eq!(
        t.environment.docker_image.as_deref(),
        Some("alexgshaw/tb2-shaped:20251031")
    );
    assert_eq!(t.environment.memory_mb, Some(2048));
    assert_eq!(t.environment.cpus, Some(1.0));
    assert_eq!(t.environment.build_timeout_sec, Some(600));
    assert_eq!(t.agent_timeout, Duration::from_secs(900));
    assert_eq!(t.verifier_timeout, Duration::from_secs(900));
    assert!(!t.environment.needs_network());
    assert_eq!(t.checksum.len(), 64);
}

#[test]
fn tb1_shaped_task_loads_with_defaults() {
    let t = load_task(&fixtures().join("formats/tb1-shaped")).unwrap();
    assert_eq!(t.format, TaskFormat::Tb1);
    assert_eq!(t.instruction, "Print hello.");
    assert_eq!(t.agent_timeout, Duration::from_secs(360));
    assert_eq!(t.verifier_timeout, Duration::from_secs(60));
    assert!(t.test_script.ends_with("run-tests.sh"));
    assert!(t.solution_script.as_ref().unwrap().ends_with("solution.sh"));
}

#[test]
fn malformed_tasks_name_task_file_and_field() {
    let m = fixtures().join("malformed");
    let cases = [
        ("bad-toml", "bad-toml/task.toml", "(toml)"),
        (
            "no-instruction",
            "no-instruction/instruction.md",
            "instruction",
        ),
        (
            "bad-timeout",
            "bad-timeout/task.toml",
            "verifier.timeout_sec",
        ),
    ];
    for (task, file, field) in cases {
        let err = load_task(&m.join(task)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Config { .. }), "{msg}");
        assert!(msg.contains(&format!("task `{task}`")), "{msg}");
        assert!(msg.contains(file), "{msg}");
        assert!(msg.contains(field), "{msg}");
    }
}

#[test]
fn malformed_suite_reports_every_bad_task_at_once() {
    let err = load_suite(&fixtures().join("malformed")).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.exit_code(), git_harness::exit::USAGE);
    assert!(msg.contains("3 malformed tasks"), "{msg}");
    for needle in [
        "task `bad-toml`",
        "task `no-instruction`",
        "task `bad-timeout`",
        "bad-timeout/task.toml:5: verifier.timeout_sec",
        "environment.memory",
        "no-instruction/instruction.md: instruction",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
    }
}

#[test]
fn good_tasks_beside_bad_ones_still_load_leniently() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(
        &fixtures().join("suite/hello-file"),
        &tmp.path().join("hello-file"),
    );
    copy_dir(
        &fixtures().join("malformed/bad-toml"),
        &tmp.path().join("bad-toml"),
    );
    let (suite, problems) = git_harness::task::load_suite_lenient(tmp.path()).unwrap();
    assert_eq!(suite.ids(), vec!["hello-file"]);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].task, "bad-toml");
    assert!(load_suite(tmp.path()).is_err());
}

#[test]
fn checksum_is_stable_and_covers_verifier_not_solution() {
    let src = fixtures().join("suite/hello-file");
    let original = load_task(&src).unwrap().checksum;
    // Pinned: the checksum depends on content only, so it is the same on every machine.
    assert_eq!(
        original,
        "08e469febd070ed36e38a68e8a7b063d46ba33a5f62d324482f16284a071a1de"
    );
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("hello-file");
    copy_dir(&src, &copy);
    assert_eq!(
        load_task(&copy).unwrap().checksum,
        original,
        "same content elsewhere, same checksum"
    );
    std::fs::write(
        copy.join("solution/solve.sh"),
        "#!/bin/bash\necho changed\n",
    )
    .unwrap();
    assert_eq!(
        load_task(&copy).unwrap().checksum,
        original,
        "solutions are not covered"
    );
    std::fs::write(
        copy.join("tests/test.sh"),
        "#!/bin/bash\necho 1 > $HARNESS_LOGS_DIR/verifier/reward.txt\n",
    )
    .unwrap();
    assert_ne!(
        load_task(&copy).unwrap().checksum,
        original,
        "a changed verifier changes the checksum"
    );
}

#[test]
fn memory_sizes_parse() {
    use git_harness::task::parse_memory_mb;
    assert_eq!(parse_memory_mb("2G"), Some(2048));
    assert_eq!(parse_memory_mb("512M"), Some(512));
    assert_eq!(parse_memory_mb("nope"), None);
}

#[test]
fn missing_suite_is_a_usage_error() {
    let err = load_suite(&fixtures().join("no-such-suite")).unwrap_err();
    assert_eq!(err.exit_code(), git_harness::exit::USAGE, "{err}");
}
