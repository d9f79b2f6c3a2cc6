//! Running a task's verifier in a sandbox after the agent finished, Harbor's contract made safe:
//! the agent's leftover processes are killed or, where the runner keeps them beside the tests as
//! Harbor does (Docker), kept from writing the results after the tests (`Sandbox::run_verifier`),
//! `<logs>/verifier` is cleared first (an agent cannot forge `reward.txt` / `reward.json`),
//! `tests/` is copied in fresh, `test.sh` (TB1: `run-tests.sh`)
//! runs under the verifier timeout, and the reward is read from `reward.json`, then `reward.txt`.
//!
//! Infrastructure failures (verifier timed out or crashed without a reward, no reward file, an
//! unparseable reward) are `Error::Infra` of class `verifier`, never a task failure.

use regex::Regex;

use crate::error::{Error, Result};
use crate::sandbox::{
    CreateOptions, ExecRequest, InfraClass, Sandbox, SandboxProvider, VerifierRan, VerifierRun,
};
use crate::task::{Task, TaskFormat, VerifierOutcome};

/// Characters of the verifier's output kept in the outcome.
pub const OUTPUT_TAIL_CHARS: usize = 4000;

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// A trial passes when its reward is at least this.
    pub pass_threshold: f64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            pass_threshold: 1.0,
        }
    }
}

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Verify a trial: in the agent's sandbox (Harbor's `shared` mode), or, when the task says
/// `environment_mode = "separate"`, in a fresh sandbox made from the verifier's environment with
/// only the task's artifacts copied over, so nothing else the agent did reaches the verifier.
/// An artifact the agent did not make is simply missing there (the verifier fails the task).
/// The separate sandbox is always destroyed (its drop guard covers a dropped future).
pub async fn verify_trial(
    provider: &dyn SandboxProvider,
    agent_sb: &dyn Sandbox,
    task: &Task,
    opts: &VerifyOptions,
) -> Result<VerifierOutcome> {
    let Some(env) = &task.verifier_environment else {
        return verify(agent_sb, task, opts).await;
    };
    // No process of the agent may change the artifacts while they are taken.
    agent_sb.kill_strays().await?;
    let stash = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let mut taken = Vec::new();
    for (i, a) in task.artifacts.iter().enumerate() {
        let path = crate::sandbox::normalize(agent_sb.workdir(), a);
        if path == "/" {
            continue;
        }
        if let Some(local) = take_artifact(agent_sb, &path, stash.path(), i).await? {
            taken.push((path, local));
        }
    }
    let mut vtask = task.clone();
    vtask.environment = env.clone();
    let copts = CreateOptions {
        trial_id: Some(format!(
            "{}-verifier",
            match agent_sb.trial_id() {
                "" => crate::sandbox::new_trial_id(),
                id => id.to_string(),
            }
        )),
        ..CreateOptions::default()
    };
    let mut vsb = provider.create_with(&vtask, &copts).await?;
    let result = async {
        for (path, local) in &taken {
            put_artifact(vsb.as_ref(), path, local).await?;
        }
        verify(vsb.as_ref(), &vtask, opts).await
    }
    .await;
    let destroyed = vsb.destroy().await;
    let outcome = result?;
    destroyed?;
    Ok(outcome)
}

/// Copy one artifact (file or directory) out of the agent's sandbox into `stash/<i>/`, keeping
/// only regular files and directories: whatever the agent's `tar` wrote, nothing lands outside
/// the artifact's own path. `None` when the agent did not make it.
async fn take_artifact(
    sb: &dyn Sandbox,
    path: &str,
    stash: &std::path::Path,
    i: usize,
) -> Result<Option<std::path::PathBuf>> {
    let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
    let parent = if parent.is_empty() { "/" } else { parent };
    let archive = format!("/tmp/.harness-artifact-{i}-{}.tar", std::process::id());
    let mut req = ExecRequest::new(
        format!(
            "rm -f {a}; [ -e {p} ] || exit 3; tar -C {d} -cf {a} -- {n}",
            a = q(&archive),
            p = q(path),
            d = q(parent),
            n = q(name)
        ),
        std::time::Duration::from_secs(120),
    );
    if let Some(p) = sb.verifier_path() {
        req.env.push(("PATH".into(), p));
    }
    let out = sb.exec(req).await?;
    if !out.success() {
        return Ok(None);
    }
    let Ok(data) = sb.read_file(&archive).await else {
        return Ok(None);
    };
    let dir = stash.join(i.to_string());
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut ar = tar::Archive::new(std::io::Cursor::new(data));
    let Ok(entries) = ar.entries() else {
        return Ok(None);
    };
    for entry in entries {
        let Ok(mut entry) = entry else { break };
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        let Ok(p) = entry.path() else { continue };
        // Only the artifact itself and what is below it.
        if p.components().next().map(|c| c.as_os_str()) != Some(std::ffi::OsStr::new(name)) {
            continue;
        }
        // `unpack_in` refuses paths that leave `dir`.
        let _ = entry.unpack_in(&dir);
    }
    let local = dir.join(name);
    Ok(local.exists().then_some(local))
}

/// Put a taken artifact at the same path in the verifier's sandbox.
async fn put_artifact(sb: &dyn Sandbox, path: &str, local: &std::path::Path) -> Result<()> {
    let target = if local.is_dir() {
        path
    } else {
        path.rsplit_once('/')
            .map_or("/", |(p, _)| if p.is_empty() { "/" } else { p })
    };
    let out = sb
        .exec(ExecRequest::new(
            format!("mkdir -p {}", q(target)),
            std::time::Duration::from_secs(60),
        ))
        .await?;
    if !out.success() {
        return Err(InfraClass::Sandbox.error(format!(
            "make {target} for an artifact: {}",
            out.output.trim()
        )));
    }
    if local.is_dir() {
        sb.copy_dir_in(local, path).await
    } else {
        let data = std::fs::read(local).map_err(|e| Error::io(local, e))?;
        sb.write_file(path, &data).await
    }
}

/// Verify the sandbox's final state.
pub async fn verify(
    sandbox: &dyn Sandbox,
    task: &Task,
    opts: &VerifyOptions,
) -> Result<VerifierOutcome> {
    let tests = sandbox.tests_dir().to_string();
    let logs = sandbox.logs_dir().to_string();
    let vdir = format!("{logs}/verifier");
    let tb1_script = match task.format {
        TaskFormat::Harbor => None,
        TaskFormat::Tb1 => {
            Some(std::fs::read(&task.test_script).map_err(|e| Error::io(&task.test_script, e))?)
        }
    };
    let (script, files) = match tb1_script {
        None => (format!("{tests}/test.sh"), Vec::new()),
        Some(data) => {
            let p = format!("{tests}/run-tests.sh");
            (p.clone(), vec![(p, data)])
        }
    };
    // A fixed interpreter and PATH: the image's, never one the agent put first.
    let mut req = ExecRequest::new(
        format!(
            "chmod +x {s} 2>/dev/null; if [ -x /bin/bash ]; then exec /bin/bash {s}; else exec bash {s}; fi",
            s = q(&script)
        ),
        task.verifier_timeout,
    );
    req.env.push(("TEST_DIR".into(), tests.clone()));
    if let Some(path) = sandbox.verifier_path() {
        req.env.push(("PATH".into(), path));
    }
    let plan = VerifierRun {
        reset: vec![vdir.clone(), tests.clone()],
        tests: task.tests_dir.clone(),
        tests_dir: tests.clone(),
        files,
        command: req,
    };
    let run = match sandbox.run_verifier(plan).await? {
        VerifierRan::Ran(out) => out,
        VerifierRan::Tampered { why, causes } => return Ok(broken(why, causes)),
        VerifierRan::CopyFailed(e) => return agent_or_infra(sandbox, e).await,
    };
    let output_tail = tail_chars(&run.output, OUTPUT_TAIL_CHARS);
    if run.timed_out {
        return Err(InfraClass::Verifier.error(format!(
            "the verifier of task `{}` timed out after {}s:\n{output_tail}",
            task.id,
            task.verifier_timeout.as_secs()
        )));
    }
    let files = match verifier_files(sandbox, &vdir).await {
        Ok(f) => f,
        Err(e) => return agent_or_infra(sandbox, e).await,
    };
    let reward = match read_reward(&files) {
        Err(e) => return agent_or_infra(sandbox, e).await,
        Ok(Some(r)) => r,
        Ok(None) if task.format == TaskFormat::Tb1 && run.exit_code.is_some() => {
            // TB1 tasks report through pytest's exit status, not a reward file.
            if run.exit_code == Some(0) { 1.0 } else { 0.0 }
        }
        Ok(None) => {
            let how = match run.exit_code {
                Some(c) => format!("exited with {c}"),
                None => "was killed".into(),
            };
            return agent_or_infra(
                sandbox,
                InfraClass::Verifier.error(format!(
                    "the verifier of task `{}` {how} and wrote no reward ({vdir}/reward.txt or reward.json):\n{output_tail}",
                    task.id
                )),
            )
            .await;
        }
    };
    let mut failed_tests = match &files.ctrf {
        Some(b) => ctrf_failed(b),
        None => Vec::new(),
    };
    if failed_tests.is_empty() {
        failed_tests = failed_from_output(&run.output);
    }
    Ok(VerifierOutcome {
        reward,
        passed: reward >= opts.pass_threshold,
        exit_code: run.exit_code,
        output_tail,
        failed_tests,
        timed_out: false,
        tampered: Vec::new(),
    })
}

/// A failed verification that the agent caused: reward 0, with the causes recorded.
fn broken(why: &str, causes: Vec<String>) -> VerifierOutcome {
    VerifierOutcome {
        reward: 0.0,
        passed: false,
        exit_code: None,
        output_tail: format!("{why}:\n{}", causes.join("\n")),
        failed_tests: Vec::new(),
        timed_out: false,
        tampered: causes,
    }
}

/// The verifier could not do its work: an infrastructure error, unless the agent filled a
/// filesystem the verifier needs, which is the agent's failure.
async fn agent_or_infra(sandbox: &dyn Sandbox, err: Error) -> Result<VerifierOutcome> {
    // Only the filesystems the verifier writes to: others may be full or read-only by design.
    let paths = [
        "/tmp",
        "/dev/shm",
        sandbox.workdir(),
        sandbox.logs_dir(),
        sandbox.tests_dir(),
    ];
    let list: Vec<String> = paths.iter().map(|p| q(p)).collect();
    let df = sandbox
        .exec(ExecRequest::new(
            format!("df -Pk {} 2>/dev/null", list.join(" ")),
            std::time::Duration::from_secs(30),
        ))
        .await;
    let full = df.map(|o| full_filesystems(&o.output)).unwrap_or_default();
    if full.is_empty() {
        return Err(err);
    }
    Ok(broken(
        &format!("the verifier could not run ({err}): the agent filled the disk"),
        full,
    ))
}

/// Filesystems with less than 1 MiB free in `df -Pk` output, as `disk full: MOUNT (N KiB free)`.
pub fn full_filesystems(df: &str) -> Vec<String> {
    let mut full = Vec::new();
    for line in df.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 6 {
            continue;
        }
        let (Ok(size), Ok(avail)) = (cols[1].parse::<u64>(), cols[3].parse::<u64>()) else {
            continue;
        };
        if size > 0 && avail < 1024 {
            let entry = format!("disk full: {} ({avail} KiB free)", cols[5..].join(" "));
            if !full.contains(&entry) {
                full.push(entry);
            }
        }
    }
    full
}

/// `reward.json` first (a flat map of numbers; its `reward` key, else its only value, else the
/// mean), then `reward.txt` (one number). `None` when neither exists.
fn read_reward(files: &VerifierFiles) -> Result<Option<f64>> {
    let vdir = &files.dir;
    if let Some(b) = &files.reward_json {
        return parse_reward_json(b)
            .map(Some)
            .map_err(|m| InfraClass::Verifier.error(format!("{vdir}/reward.json: {m}")));
    }
    if let Some(b) = &files.reward_txt {
        return parse_reward_txt(b)
            .map(Some)
            .map_err(|m| InfraClass::Verifier.error(format!("{vdir}/reward.txt: {m}")));
    }
    Ok(None)
}

/// What the verifier wrote to its log dir, read in one go.
struct VerifierFiles {
    dir: String,
    reward_json: Option<Vec<u8>>,
    reward_txt: Option<Vec<u8>>,
    ctrf: Option<Vec<u8>>,
}

async fn verifier_files(sandbox: &dyn Sandbox, vdir: &str) -> Result<VerifierFiles> {
    let mut got = sandbox
        .read_dir_files(vdir, &["reward.json", "reward.txt", "ctrf.json"])
        .await?
        .into_iter();
    Ok(VerifierFiles {
        dir: vdir.to_string(),
        reward_json: got.next().flatten(),
        reward_txt: got.next().flatten(),
        ctrf: got.next().flatten(),
    })
}

pub fn parse_reward_txt(b: &[u8]) -> std::result::Result<f64, String> {
    let s = String::from_utf8_lossy(b);
    let t = s.trim();
    if t.is_empty() {
        return Err("is empty".into());
    }
    match t.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(format!(
            "is not a number: `{}`",
            t.chars().take(80).collect::<String>()
        )),
    }
}

pub fn parse_reward_json(b: &[u8]) -> std::result::Result<f64, String> {
    if String::from_utf8_lossy(b).trim().is_empty() {
        return Err("is empty".into());
    }
    let v: serde_json::Value =
        serde_json::from_slice(b).map_err(|e| format!("is not JSON: {e}"))?;
    if let Some(x) = v.as_f64() {
        return Ok(x);
    }
    let obj = v.as_object().ok_or("must be an object of numbers")?;
    if let Some(r) = obj.get("reward") {
        return r
            .as_f64()
            .ok_or_else(|| "`reward` is not a number".to_string());
    }
    let nums: Vec<f64> = obj.values().filter_map(|x| x.as_f64()).collect();
    if nums.is_empty() || nums.len() != obj.len() {
        return Err("must be an object of numbers".into());
    }
    Ok(nums.iter().sum::<f64>() / nums.len() as f64)
}

/// Failed test names from a CTRF report (`results.tests[]` with `status: failed`).
pub fn ctrf_failed(b: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(b) else {
        return Vec::new();
    };
    let Some(tests) = v.pointer("/results/tests").and_then(|t| t.as_array()) else {
        return Vec::new();
    };
    tests
        .iter()
        .filter(|t| t.get("status").and_then(|s| s.as_str()) == Some("failed"))
        .filter_map(|t| t.get("name").and_then(|n| n.as_str()))
        .map(short_name)
        .collect()
}

/// Failed test names from pytest `-rA` summary lines (`FAILED tests/x.py::test_name - msg`) and
/// plain `FAILED name` lines.
pub fn failed_from_output(output: &str) -> Vec<String> {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"^FAILED:?\s+(\S+)").expect("static regex"));
    let mut out: Vec<String> = Vec::new();
    for line in output.lines() {
        if let Some(c) = re.captures(line.trim_end()) {
            let name = short_name(&c[1]);
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

/// `tests/x.py::TestC::test_name` → `TestC::test_name`; other names unchanged.
fn short_name(s: &str) -> String {
    match s.split_once("::") {
        Some((file, rest)) if file.ends_with(".py") => rest.to_string(),
        _ => s.to_string(),
    }
}

fn tail_chars(s: &str, n: usize) -> String {
    let count = s.chars().count();
    if count <= n {
        return s.to_string();
    }
    s.chars().skip(count - n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewards() {
        assert_eq!(parse_reward_txt(b"1\n"), Ok(1.0));
        assert!(parse_reward_txt(b"").is_err());
        assert!(parse_reward_txt(b"yes").is_err());
        assert_eq!(parse_reward_json(br#"{"reward": 0.5, "x": 1}"#), Ok(0.5));
        assert_eq!(parse_reward_json(br#"{"a": 1, "b": 0}"#), Ok(0.5));
        assert!(parse_reward_json(b"{").is_err());
    }

    #[test]
    fn full_filesystems_from_df() {
        let df = "Filesystem 1024-blocks Used Available Capacity Mounted on\n\
                  overlay 100000000 5000 99995000 1% /\n\
                  shm 65536 65536 0 100% /dev/shm\n\
                  proc 0 0 0 - /proc\n";
        assert_eq!(
            full_filesystems(df),
            vec!["disk full: /dev/shm (0 KiB free)".to_string()]
        );
    }

    #[test]
    fn failed_names() {
        let out = "PASSED tests/t.py::test_ok\nFAILED tests/test_outputs.py::test_file - AssertionError: x\nFAILED plain_name\n";
        assert_eq!(
            failed_from_output(out),
            vec!["test_file".to_string(), "plain_name".to_string()]
        );
        let ctrf = br#"{"results":{"tests":[{"name":"tests/t.py::test_a","status":"failed"},{"name":"b","status":"passed"}]}}"#;
        assert_eq!(ctrf_failed(ctrf), vec!["test_a".to_string()]);
    }
}
