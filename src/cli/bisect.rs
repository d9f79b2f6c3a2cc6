//! `git harness bisect`: find the first bad promotion on main with `git bisect run`.

use git_harness::error::GitContext;
use git_harness::lineage;
use git_harness::method;
use git_harness::{Error, Result, exit};

use super::Ui;
use super::args::SplitArg;
use super::check::rate;

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
    let mut command: Vec<String> = vec![
        exe.to_string_lossy().into_owned(),
        "check".into(),
        "--split".into(),
        split.as_str().into(),
        "--threshold".into(),
        format!("{threshold}"),
    ];
    if let Some(t) = &args.task {
        command.push("--tasks".into());
        command.push(t.clone());
    }
    let interrupt = super::signal::interrupts();
    let _busy = super::signal::Busy::new();
    let oid = lineage::bisect::first_bad(good, bad, &command, interrupt)?;
    let commit = ws.repo.find_commit(oid).git("read the first bad commit")?;
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
