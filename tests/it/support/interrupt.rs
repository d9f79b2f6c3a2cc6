//! Stopping a command of the binary as a user at a terminal does: Ctrl-C, then again, from
//! async tests whose stand-in servers run on the test's runtime (waits never block it).

use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a condition may take on a loaded machine.
const LIMIT: Duration = Duration::from_secs(120);

/// Wait until `f` holds, polling; panics after a generous limit naming `what`, with
/// `context()` (what the test's stand-ins saw).
pub async fn until(what: &str, f: &dyn Fn() -> bool, context: &dyn Fn() -> String) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < LIMIT,
            "timed out waiting for {what}: {}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Start `cmd` (a command of the binary; its stdout is dropped, its stderr read here), and once
/// `ready` (what, whether it is) holds, send SIGINT; once the command says it was interrupted,
/// SIGTERM, the second signal that aborts what still runs. Its exit status.
pub async fn interrupt_twice(
    mut cmd: Command,
    ready: (&str, &dyn Fn() -> bool),
    context: &dyn Fn() -> String,
) -> ExitStatus {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let signal = |sig| {
        // SAFETY: kill(2) on the child this function started and has not reaped.
        unsafe {
            libc::kill(pid, sig);
        }
    };
    until(ready.0, ready.1, context).await;
    signal(libc::SIGINT);
    let acknowledged = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("interrupted")
    };
    until("the acknowledgement", &acknowledged, context).await;
    signal(libc::SIGTERM);
    tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap()
}
