//! Process exit codes. They follow the `git bisect run` contract where it applies.

/// Success, or the gate accepted.
pub const SUCCESS: i32 = 0;
/// A negative answer: the gate rejected, `check` found the revision bad, a refusal to promote.
pub const NEGATIVE: i32 = 1;
/// Bad usage or configuration (unknown flag, malformed YAML, missing file).
pub const USAGE: i32 = 2;
/// The gate could not decide (too little coverage, statistic undefined).
pub const INDECISIVE: i32 = 3;
/// An internal error: a bug, or an unexpected condition of the environment (I/O, the git object
/// store). BSD's EX_SOFTWARE; apart from 125, so CI does not read a bug as flaky infrastructure.
/// `check` speaks `git bisect run`'s contract and turns it into 125 (cannot test) there.
pub const INTERNAL: i32 = 70;
/// Could not test: infrastructure failed (sandbox, model API, verifier).
pub const CANNOT_TEST: i32 = 125;
/// Interrupted by Ctrl-C.
pub const INTERRUPTED: i32 = 130;

/// The table printed by `--help` and the README.
pub const TABLE: &str = "\
Exit codes:
    0    success, or the gate accepted
    1    a negative answer (rejected; check: below --threshold, bisect's bad; refused promotion)
    2    usage or configuration error
    3    indecisive (the gate could not decide)
   70    internal error (a bug, or unexpected I/O or git object store trouble)
  125    could not test (infrastructure error)
  130    interrupted";

/// How a finished command ended, in words: `exit 1`, `timed out`, `killed by a signal`.
pub fn describe(code: Option<i32>, timed_out: bool) -> String {
    match (code, timed_out) {
        (_, true) => "timed out".to_string(),
        (Some(c), false) => format!("exit {c}"),
        (None, false) => "killed by a signal".to_string(),
    }
}
