//! `git harness bisect`: find the first bad promotion on main with `git bisect run`.

use std::process::Command;

use git_harness::lineage;
use git_harness::method;
use git_harness::{Error, Result, exit};

use super::Ui;
use super::check::{SplitArg, rate};

/// Find the first promotion on main's first-parent history that made REV worse.
///
/// Evaluates --good and --bad (from cache when possible), takes the midpoint of their pass
/// rates as the threshold and drives `git bisect run git-harness check` over the first-parent
/// history between them. Prints the first bad promotion with its evidence and gate record.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub good: String,
    #[arg(long)]
    pub bad: String,
    /// Only tasks whose id matches this glob.
    #[arg(long, value_name = "PATTERN")]
    pub task: Option<String>,
    #[arg(long, value_enum, default_value = "held_in")]
    pub split: SplitArg,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let ws = method::open_workspace()?;
    if !lineage::worktree_is_clean(&ws.repo)? {
        return Err(Error::usage_hint(
            "the worktree has uncommitted changes",
            "bisect checks out revisions; commit or stash first",
        ));
    }
    let good = lineage::resolve_commit(&ws.repo, &args.good)?.id();
    let bad = lineage::resolve_commit(&ws.repo, &args.bad)?.id();
    let split = args.split.split();
    let g = rate(ui, &good.to_string(), split, args.task.as_deref())?
        .ok_or_else(|| Error::infra("the good revision cannot be tested"))?;
    let b = rate(ui, &bad.to_string(), split, args.task.as_deref())?
        .ok_or_else(|| Error::infra("the bad revision cannot be tested"))?;
    if g.pass_rate() <= b.pass_rate() {
        return Err(Error::usage(format!(
            "the good revision ({:.1}%) does not pass more than the bad one ({:.1}%) on these tasks",
            g.pass_rate() * 100.0,
            b.pass_rate() * 100.0
        )));
    }
    let threshold = (g.pass_rate() + b.pass_rate()) / 2.0;
    ui.note(format!(
        "good {:.1}%, bad {:.1}%: bisecting with threshold {:.1}%",
        g.pass_rate() * 100.0,
        b.pass_rate() * 100.0,
        threshold * 100.0
    ));
    let exe = std::env::current_exe().map_err(|e| Error::io("current executable", e))?;
    let git = |args: &[&str]| -> Result<std::process::Output> {
        Command::new("git")
            .args(args)
            .output()
            .map_err(|e| Error::io("git", e))
    };
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
    let mut run_args: Vec<String> = vec![
        "bisect".into(),
        "run".into(),
        exe.to_string_lossy().into_owned(),
        "check".into(),
        "--split".into(),
        split.as_str().into(),
        "--threshold".into(),
        format!("{threshold}"),
    ];
    if let Some(t) = &args.task {
        run_args.push("--tasks".into());
        run_args.push(t.clone());
    }
    let (text, interrupted) = bisect_run(&run_args)?;
    let _ = git(&["bisect", "reset"]);
    if interrupted {
        return Err(Error::Interrupted { run: None });
    }
    let first_bad = text
        .lines()
        .find(|l| l.contains("is the first bad commit"))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string);
    let Some(oid) = first_bad else {
        return Err(Error::infra(format!(
            "git bisect did not name a first bad commit:\n{text}"
        )));
    };
    let commit = lineage::resolve_commit(&ws.repo, &oid)?;
    ui.out(format!(
        "First bad promotion: {} {}",
        lineage::short(commit.id()),
        commit.summary().ok().flatten().unwrap_or_default()
    ));
    super::show::run(
        ui,
        super::show::Args {
            proposal: commit.id().to_string(),
        },
    )?;
    Ok(exit::SUCCESS)
}

/// `git bisect run ...` in its own process group, so that an interrupt reaches every `check` it
/// runs (each stops and cleans up as on Ctrl-C) and a signal sent to bisect alone is passed on.
/// Returns its stdout and whether it was interrupted.
fn bisect_run(args: &[String]) -> Result<(String, bool)> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let mut interrupt = super::signal::interrupts();
    let _busy = super::signal::Busy::new();
    let mut child = Command::new("git")
        .args(args)
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("git", e))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
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
