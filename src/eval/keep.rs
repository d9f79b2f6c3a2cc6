//! Kept final workspaces (`run --keep-workspace`): the task's workdir as the agent left it,
//! taken as a tar before the verifier runs and stored in the run record, so that `regrade` can
//! run a changed verifier on it later without the agent (or the model) running again.

use std::time::Duration;

use crate::error::Result;
use crate::sandbox::{ExecRequest, InfraClass, Sandbox};

/// Where a trial's kept workspace lives in its run record (and journal).
pub fn path(task: &str, trial: u32) -> String {
    format!("workspaces/{task}/{trial}.tar")
}

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn request(command: String, sb: &dyn Sandbox) -> ExecRequest {
    let mut req = ExecRequest::new(command, Duration::from_secs(300));
    // The image's tools, never ones the agent put first on PATH.
    if let Some(p) = sb.verifier_path() {
        req.env.push(("PATH".into(), p));
    }
    req
}

/// The sandbox's workdir as a tar (made inside the sandbox, so links and modes are kept as the
/// sandbox sees them). The agent's stray processes are killed first, so the state is final.
pub async fn capture(sb: &dyn Sandbox) -> Result<Vec<u8>> {
    sb.kill_strays().await?;
    let archive = format!("/tmp/.harness-keep-{}.tar", std::process::id());
    let out = sb
        .exec(request(
            format!(
                "rm -f {a} && tar -C {w} -cf {a} .",
                a = q(&archive),
                w = q(sb.workdir())
            ),
            sb,
        ))
        .await?;
    if !out.success() {
        return Err(InfraClass::Sandbox.error(format!(
            "keep the workspace: tar of {} failed: {}",
            sb.workdir(),
            out.output.trim()
        )));
    }
    let data = sb.read_file(&archive).await;
    let _ = sb.exec(request(format!("rm -f {}", q(&archive)), sb)).await;
    data
}

/// Replace a fresh sandbox's workdir with a kept one.
pub async fn restore(sb: &dyn Sandbox, tar: &[u8]) -> Result<()> {
    let archive = format!("/tmp/.harness-restore-{}.tar", std::process::id());
    sb.write_file(&archive, tar).await?;
    let out = sb
        .exec(request(
            format!(
                "mkdir -p {w} && find {w} -mindepth 1 -delete && tar -C {w} -xpf {a} && rm -f {a}",
                a = q(&archive),
                w = q(sb.workdir())
            ),
            sb,
        ))
        .await?;
    if !out.success() {
        return Err(InfraClass::Sandbox.error(format!(
            "restore the kept workspace into {}: {}",
            sb.workdir(),
            out.output.trim()
        )));
    }
    Ok(())
}
