//! Runs after the other sandbox test binaries (cargo runs them in name order): no container
//! made by the tests remains. CI also checks this with `.ci/docker.sh`'s leftover check.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::disallowed_methods,
    reason = "tests drive the binary and other processes, and panic on what they did not expect"
)]

#[path = "sandbox_support/mod.rs"]
mod support;

#[tokio::test]
async fn no_test_container_remains() {
    let Some(p) = support::docker_or_skip("no_test_container_remains").await else {
        return;
    };
    let left = p.list_ours(&[support::TEST_LABEL]).await.unwrap();
    assert!(
        left.is_empty(),
        "containers left behind by the tests: {left:?}"
    );
}
