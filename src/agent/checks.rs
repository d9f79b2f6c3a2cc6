//! Completion checks from `checks/*.yaml`, run in the sandbox when the agent submits. A failing
//! check turns the submit into `[check failed] MESSAGE` plus the tail of its output, and the
//! episode goes on.
//!
//! ```yaml
//! name: output-exists             # required; recorded in traces
//! run: test -s "$HARNESS_WORKDIR/out.txt"   # bash, in the task's working directory
//! message: out.txt is missing or empty; create it before submitting.
//! timeout_sec: 30                 # optional, default 60
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sandbox::{ExecRequest, Sandbox};

/// How much of a failing check's output the model sees.
pub const OUTPUT_TAIL_CHARS: usize = 1500;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub name: String,
    pub run: String,
    pub message: String,
    #[serde(default = "default_timeout")]
    pub timeout_sec: u64,
}

fn default_timeout() -> u64 {
    60
}

impl Check {
    pub fn parse(text: &str, file: &str) -> Result<Check> {
        let c: Check = crate::support::yaml::from_str(text, Path::new(file))?;
        let line = |k: &str| crate::support::yaml::line_of(text, k);
        for (field, v) in [("name", &c.name), ("run", &c.run), ("message", &c.message)] {
            if v.trim().is_empty() {
                return Err(Error::config(file, line(field), field, "must not be empty"));
            }
        }
        if c.timeout_sec == 0 {
            return Err(Error::config(
                file,
                line("timeout_sec"),
                "timeout_sec",
                "must be at least 1",
            ));
        }
        Ok(c)
    }
}

#[derive(Debug, Clone)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    pub exit_code: Option<i32>,
    pub message: String,
    pub output_tail: String,
    pub duration_ms: u64,
}

impl CheckResult {
    /// What the model sees for a failing check.
    pub fn feedback(&self) -> String {
        if self.output_tail.trim().is_empty() {
            format!("[check failed] {}", self.message.trim())
        } else {
            format!(
                "[check failed] {}\n{}",
                self.message.trim(),
                self.output_tail.trim_end()
            )
        }
    }
}

/// Run every check; `Err` only when the sandbox fails.
pub async fn run_all(checks: &[Check], sandbox: &dyn Sandbox) -> Result<Vec<CheckResult>> {
    let mut out = Vec::new();
    for c in checks {
        let start = Instant::now();
        let o = sandbox
            .exec(ExecRequest::new(
                c.run.clone(),
                Duration::from_secs(c.timeout_sec),
            ))
            .await?;
        let chars: Vec<char> = o.output.chars().collect();
        let tail: String = chars[chars.len().saturating_sub(OUTPUT_TAIL_CHARS)..]
            .iter()
            .collect();
        out.push(CheckResult {
            name: c.name.clone(),
            ok: o.success(),
            exit_code: o.exit_code,
            message: c.message.clone(),
            output_tail: tail,
            duration_ms: start.elapsed().as_millis() as u64,
        });
    }
    Ok(out)
}
