//! `git harness check`: is a revision good? The `git bisect run` contract.

use git_harness::eval::Totals;
use git_harness::eval::run::{RunRequest, evaluate};
use git_harness::experiment::Split;
use git_harness::{Result, exit};

use super::Ui;
use super::args::SplitArg;
use super::progress::Bar;
use super::session::Session;

/// Tell whether a revision is good enough, for `git bisect run`.
///
/// Evaluates REV (cached when possible) and exits 0 when its pass rate reaches the threshold,
/// 1 when it does not, 125 when it cannot be tested; never 128 or more.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Revision [default: HEAD].
    pub rev: Option<String>,
    #[arg(long, value_enum, default_value = "held_in")]
    pub split: SplitArg,
    /// Only tasks whose id matches this glob.
    #[arg(long, value_name = "PATTERN")]
    pub tasks: Option<String>,
    /// Good when the pass rate is at least this (0..1).
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    // Any failure to evaluate is "cannot test" for bisect, never a verdict.
    match rate(
        ui,
        args.rev.as_deref().unwrap_or("HEAD"),
        args.split.split(),
        args.tasks.as_deref(),
    ) {
        Ok(Some(t)) => {
            let good = t.pass_rate() >= args.threshold;
            ui.out(format!(
                "{} pass rate {:.1}% ({}/{}) {} threshold {:.1}%",
                if good { "good:" } else { "bad: " },
                t.pass_rate() * 100.0,
                t.passes,
                t.trials,
                if good { ">=" } else { "<" },
                args.threshold * 100.0
            ));
            Ok(if good { exit::SUCCESS } else { exit::NEGATIVE })
        }
        Ok(None) => {
            ui.note("cannot test: every trial hit an infrastructure error");
            Ok(exit::CANNOT_TEST)
        }
        // An interrupt is the user's, not the revision's: 130 (bisect run stops on it).
        Err(e @ git_harness::Error::Interrupted { .. }) => Err(e),
        Err(e) => {
            ui.error(&e);
            Ok(exit::CANNOT_TEST)
        }
    }
}

/// Totals of REV on a split (cached trials reused); `None` when nothing countable ran.
#[allow(
    clippy::disallowed_methods,
    reason = "the panic fault injection is switched by the environment"
)]
pub fn rate(ui: &mut Ui, rev: &str, split: Split, tasks: Option<&str>) -> Result<Option<Totals>> {
    let s = Session::open()?;
    let ws = &s.ws;
    let t = s.block_on(async {
        let ctx = s.context(ui, &Session::interruptible()).await?;
        // Fault injection for the test of the panic exit code; absent from release builds.
        #[cfg(debug_assertions)]
        if std::env::var_os("GIT_HARNESS_DEBUG_PANIC").is_some() {
            panic!("GIT_HARNESS_DEBUG_PANIC is set");
        }
        let mut req = RunRequest::new(rev.to_string(), vec![split]);
        req.tasks = tasks.map(str::to_string);
        let mut bar = Bar::new(ui.progress, "check");
        let out = evaluate(ws, &ctx, &req, &mut bar, None, None).await;
        bar.finish();
        out.map(|o| Totals::of(&o.results))
    })?;
    Ok(if t.trials == 0 { None } else { Some(t) })
}
