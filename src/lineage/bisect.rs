//! `git bisect`, the one use of the git binary: libgit2 has no bisect, and git's own keeps the
//! good/bad bookkeeping and the checkouts. It runs in the current directory's repository.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};

use git2::Oid;
use tokio::sync::watch;

use crate::error::{Error, Result};

/// The first commit between `good` and `bad` on the first-parent history for which `command`
/// (a `git bisect run` command line) exits non-zero. The checkout is reset afterwards. Each
/// increase of `interrupt` is passed on to the command as SIGINT; an interrupted bisect is
/// `Error::Interrupted`.
pub fn first_bad(
    good: Oid,
    bad: Oid,
    command: &[String],
    interrupt: watch::Receiver<u8>,
) -> Result<Oid> {
    let start = git(&[
        "bisect",
        "start",
        "--first-parent",
        &bad.to_string(),
        &good.to_string(),
    ])?;
    if !start.status.success() {
        return Err(Error::usage(format!(
            "git bisect start failed: {}",
            String::from_utf8_lossy(&start.stderr).trim()
        )));
    }
    let mut args: Vec<String> = vec!["bisect".into(), "run".into()];
    args.extend(command.iter().cloned());
    let run = run_in_group(&args, interrupt);
    let _ = git(&["bisect", "reset"]);
    let (text, interrupted) = run?;
    if interrupted {
        return Err(Error::Interrupted { run: None });
    }
    text.lines()
        .find(|l| l.contains("is the first bad commit"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|oid| Oid::from_str(oid).ok())
        .ok_or_else(|| {
            Error::infra(format!(
                "git bisect did not name a first bad commit:\n{text}"
            ))
        })
}

#[allow(
    clippy::disallowed_methods,
    reason = "git bisect is the one use of the git binary"
)]
fn git(args: &[&str]) -> Result<Output> {
    Command::new("git")
        .args(args)
        .output()
        .map_err(|e| Error::io("git", e))
}

/// `git ARGS` in its own process group, so that an interrupt reaches every command bisect runs
/// (each stops and cleans up as on Ctrl-C) and a signal sent to bisect alone is passed on.
/// Returns its stdout and whether it was interrupted.
#[allow(
    clippy::disallowed_methods,
    reason = "git bisect is the one use of the git binary"
)]
fn run_in_group(args: &[String], mut interrupt: watch::Receiver<u8>) -> Result<(String, bool)> {
    let mut child = Command::new("git")
        .args(args)
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("git", e))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::Internal("git bisect's stdout is not piped".into()))?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let pgid = child.id() as i32;
    let mut forwarded = 0u8;
    loop {
        if child.try_wait().map_err(|e| Error::io("git", e))?.is_some() {
            break;
        }
        let n = *interrupt.borrow_and_update();
        if n > forwarded {
            // SAFETY: kill(2) on the process group we created; no memory is involved.
            unsafe {
                libc::kill(-pgid, libc::SIGINT);
            }
            forwarded = n;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let text = reader.join().unwrap_or_default();
    Ok((text, forwarded > 0))
}
