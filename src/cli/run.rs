//! `git harness run`: evaluate a harness revision.

use git_harness::eval::context::Overrides;
use git_harness::eval::run::{RunOutcome, RunRequest, evaluate};
use git_harness::eval::{AgentKind, Totals};
use git_harness::{Error, Result, exit};

use super::Ui;
use super::args::{Format, RunnerArg, SplitsArg};
use super::progress::Bar;
use super::session::Session;

/// Evaluate the harness as committed at REV on a split, N trials per task.
///
/// Trials already evaluated for the same surface tree, experiment, task and trial index come
/// from the cache. The run is recorded as refs/harness/runs/<id> and summarised in a note on
/// the commit. The test split is sealed: only `git harness report --final` opens it.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Harness revision [default: HEAD].
    pub rev: Option<String>,
    #[arg(long, value_enum, default_value = "all")]
    pub split: SplitsArg,
    /// Trials per task [default: the experiment's].
    #[arg(long)]
    pub trials: Option<u32>,
    /// Only tasks whose id matches this glob.
    #[arg(long, value_name = "PATTERN")]
    pub tasks: Option<String>,
    /// Trials at once [default: the experiment's runner.concurrency, or the sum of runner.hosts' concurrency].
    #[arg(long, short = 'j')]
    pub concurrency: Option<usize>,
    /// Where trials run [default: the experiment's runner.kind]. Like a committed
    /// runner.kind, it is part of the fingerprint: results of one runner never stand for
    /// another's.
    #[arg(long, value_enum)]
    pub runner: Option<RunnerArg>,
    /// Docker image substitution, `FROM=TO` (repeatable; adds to runner.image_map and so to the
    /// fingerprint). FROM may end in `*` (`python:3.13*`, `ghcr.io/org/*`) or be `*` alone.
    #[arg(long = "image-map", value_name = "FROM=TO")]
    pub image_map: Vec<String>,
    /// Who plays: the model under the harness, the reference solution, or nothing.
    #[arg(long, value_enum, default_value = "harness")]
    pub agent: AgentKind,
    /// Evaluate the uncommitted worktree (never cached as a commit's results).
    #[arg(long)]
    pub worktree: bool,
    /// Execute every trial even when cached.
    #[arg(long)]
    pub no_cache: bool,
    /// Keep each executed trial's final workspace (a tar of the workdir) in the run record,
    /// so `git harness regrade` can re-run changed verifiers on it [default:
    /// runner.keep_workspace].
    #[arg(long)]
    pub keep_workspace: bool,
    /// Continue an interrupted run, with its revision, splits, tasks, trials and agent.
    #[arg(long, value_name = "ID")]
    pub resume: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let s = Session::open()?;
    let ws = &s.ws;
    let splits = args.split.splits();
    let mut req = RunRequest::new(args.rev.clone().unwrap_or_else(|| "HEAD".into()), splits);
    req.worktree = args.worktree;
    req.trials = args.trials;
    req.tasks = args.tasks.clone();
    req.concurrency = args.concurrency;
    req.agent = args.agent;
    req.no_cache = args.no_cache;
    req.resume = args.resume.clone();
    if args.worktree && args.rev.is_some() {
        return Err(Error::usage("give either REV or --worktree, not both"));
    }
    if args.resume.is_some()
        && (args.rev.is_some() || args.worktree || args.tasks.is_some() || args.trials.is_some())
    {
        return Err(Error::usage_hint(
            "--resume continues a run as it was started",
            "give no REV, --worktree, --tasks or --trials with it",
        ));
    }
    // A run of HEAD does not see uncommitted edits; say so rather than evaluate the old files.
    if !args.worktree && args.resume.is_none() {
        let rev = args.rev.as_deref().unwrap_or("HEAD");
        let head = ws.repo.head().ok().and_then(|h| h.target());
        let target = git_harness::lineage::resolve_commit(&ws.repo, rev)
            .ok()
            .map(|c| c.id());
        if let Some(head) = head
            && target == Some(head)
        {
            let edits = ws.uncommitted_surface_edits()?;
            if !edits.is_empty() {
                ui.warn(format!(
                    "the worktree has uncommitted changes to {}; this run evaluates {} as committed (commit them, or pass --worktree to evaluate the worktree)",
                    edits.join(", "),
                    git_harness::lineage::short(head)
                ));
            }
        }
    }
    let mut image_map = std::collections::BTreeMap::new();
    git_harness::sandbox::image_map::extend_from_args(&mut image_map, &args.image_map)?;
    let overrides = Overrides {
        image_map,
        runner: args.runner.map(RunnerArg::kind),
        // The reference solution and the empty agent need no model (also when it is unset).
        no_model: !git_harness::eval::context::needs_model(args.agent),
        keep_workspace: args.keep_workspace,
        ..Session::interruptible()
    };
    let outcome = s.block_on(async {
        let ctx = s.context(ui, &overrides).await?;
        let mut bar = Bar::new(ui.progress, "run");
        let out = evaluate(ws, &ctx, &req, &mut bar, None, None).await;
        bar.finish();
        out
    })?;
    print_outcome(ui, &outcome, args.format);
    // Results reused from the cache keep the workspace of the run that made them, if any.
    let unkept = outcome
        .results
        .iter()
        .filter(|r| !r.is_infra() && r.workspace.is_none())
        .count();
    if args.keep_workspace && unkept > 0 {
        ui.warn(format!(
            "{unkept} trial(s) came from the cache of runs that kept no workspace, so `regrade` cannot re-score them; re-run with --keep-workspace --no-cache to keep theirs"
        ));
    }
    let infra = outcome
        .record
        .totals
        .values()
        .map(|t| t.infra_errors)
        .sum::<u32>();
    let counted = outcome
        .record
        .totals
        .values()
        .map(|t| t.trials)
        .sum::<u32>();
    if counted == 0 && infra > 0 {
        return Ok(exit::CANNOT_TEST);
    }
    Ok(exit::SUCCESS)
}

pub fn print_outcome(ui: &mut Ui, o: &RunOutcome, format: Format) {
    if format == Format::Json {
        let v = serde_json::json!({
            "run": o.id,
            "harness": o.harness_commit.to_string(),
            "executed": o.executed,
            "wall_ms": o.wall_ms,
            "stopped": o.stopped,
            "totals": o.record.totals,
            "results": o.results,
        });
        ui.out(serde_json::to_string_pretty(&v).expect("json"));
        return;
    }
    ui.out(format!(
        "Run {} of {} ({} trials executed, {} from cache, {:.1}s wall time)",
        o.id,
        &o.harness_commit.to_string()[..10],
        o.executed,
        o.results.iter().filter(|r| r.cached_from.is_some()).count(),
        o.wall_ms as f64 / 1000.0
    ));
    print_table(ui, o.record.totals.iter().map(|(k, v)| (k.as_str(), v)));
    let kept: Vec<u64> = o
        .results
        .iter()
        .filter(|r| r.cached_from.is_none() && r.workspace.is_some())
        .map(|r| r.workspace_bytes)
        .collect();
    if !kept.is_empty() {
        ui.out(format!(
            "kept {} final workspace(s), {} in the run record (for `git harness regrade {}`)",
            kept.len(),
            human_bytes(kept.iter().sum()),
            o.id
        ));
    }
    if let Some(s) = &o.stopped {
        ui.out(format!("partial run: {s}"));
    }
}

pub fn print_table<'a>(ui: &mut Ui, rows: impl Iterator<Item = (&'a str, &'a Totals)>) {
    ui.out(format!(
        "  {:<11} {:>9} {:>10} {:>6} {:>10} {:>9} {:>10}",
        "split", "pass rate", "passes", "infra", "tokens", "cost", "trial time"
    ));
    for (split, t) in rows {
        ui.out(format!(
            "  {:<11} {:>9} {:>10} {:>6} {:>10} {:>9} {:>9.1}s",
            split,
            t.pass_rate_text(),
            format!("{}/{}", t.passes, t.trials),
            t.infra_errors,
            t.tokens,
            format!("${:.4}", t.cost_usd),
            t.wall_ms as f64 / 1000.0
        ));
    }
}

/// A size for people: `512 B`, `12.3 KiB`, `4.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let f = n as f64;
    if f < KIB {
        format!("{n} B")
    } else if f < KIB * KIB {
        format!("{:.1} KiB", f / KIB)
    } else {
        format!("{:.1} MiB", f / KIB / KIB)
    }
}
