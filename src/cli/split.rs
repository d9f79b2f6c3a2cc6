//! `git harness split`: fix the task splits.

use git_harness::experiment::{GateConfig, SPLITS_FILE, Splits};
use git_harness::method;
use git_harness::{Error, Result, exit, lineage};

use super::Ui;

/// Write .harness/splits.yaml deterministically from the suite's task ids and commit it.
///
/// The same seed always gives the same split. Re-splitting after results exist would make
/// earlier results incomparable, so it is refused unless --force, which the commit records.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seed of the shuffle [default: the experiment's seed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Ratios held_in,validation,test.
    #[arg(long, default_value = "0.5,0.3,0.2", value_name = "H,V,T")]
    pub ratios: String,
    /// Re-split even though results exist (recorded in the commit message).
    #[arg(long)]
    pub force: bool,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let ws = method::open_workspace()?;
    let fixed = ws.fixed_on_main()?;
    let ratios = parse_ratios(&args.ratios)?;
    let has_results = !lineage::list_runs(&ws.repo)?.is_empty();
    if !fixed.splits.is_empty() && has_results && !args.force {
        return Err(Error::usage_hint(
            "results exist for the current splits; re-splitting would make them incomparable",
            "pass --force to re-split anyway (the commit records it)",
        ));
    }
    let seed = args.seed.unwrap_or(fixed.experiment.seed);
    let ids = ws.suite_task_ids(&fixed)?;
    if ids.is_empty() {
        return Err(Error::usage(format!(
            "the suite `{}` has no tasks",
            fixed.experiment.suite.path
        )));
    }
    let splits = Splits::compute(&ids, seed, ratios)?;
    if splits == fixed.splits {
        ui.out("Splits unchanged");
        print_sizes(ui, &splits);
        warn_small(ui, &splits, &fixed.experiment.gate);
        return Ok(exit::SUCCESS);
    }
    let text = format!(
        "# Task ids of each split, fixed before the first run. Written by `git harness split`.\n{}",
        git_harness::support::yaml::to_string(&splits)
    );
    let mut msg = lineage::trailers::CommitMessage::new(format!(
        "Split {} tasks into {} held_in / {} validation / {} test",
        ids.len(),
        splits.held_in.len(),
        splits.validation.len(),
        splits.test.len()
    ))
    .body(format!("Seed {seed}, ratios {}.", args.ratios));
    if args.force && has_results {
        msg = msg.trailer(
            "Harness-Resplit",
            "forced; results of earlier splits are not comparable",
        );
    }
    let commit =
        lineage::commit_on_main(&ws.repo, &[(SPLITS_FILE.to_string(), text)], &msg.render())?;
    ui.out(format!(
        "Wrote {SPLITS_FILE} (seed {seed}) in commit {}",
        lineage::short(commit)
    ));
    print_sizes(ui, &splits);
    warn_small(ui, &splits, &fixed.experiment.gate);
    Ok(exit::SUCCESS)
}

/// Splits that leave a step of the method with nothing to work on, and a gate that can never
/// accept on this many tasks, said before the first run.
fn warn_small(ui: &mut Ui, s: &Splits, gate: &GateConfig) {
    for w in s.empty_warnings() {
        ui.warn(format!("{w} — add tasks to the suite or change --ratios"));
    }
    if let Some(w) =
        git_harness::gate::strict_infeasible(s.held_in.len() + s.validation.len(), gate)
    {
        ui.warn(w);
    }
}

fn print_sizes(ui: &mut Ui, s: &Splits) {
    ui.out(format!("  held_in     {:>3} tasks", s.held_in.len()));
    ui.out(format!("  validation  {:>3} tasks", s.validation.len()));
    ui.out(format!(
        "  test        {:>3} tasks (sealed: only `git harness report --final` opens it)",
        s.test.len()
    ));
}

fn parse_ratios(s: &str) -> Result<[f64; 3]> {
    let parts: Vec<_> = s.split(',').map(|p| p.trim().parse::<f64>()).collect();
    match parts.as_slice() {
        [Ok(a), Ok(b), Ok(c)] => Ok([*a, *b, *c]),
        _ => Err(Error::usage_hint(
            format!("invalid --ratios `{s}`"),
            "give three numbers held_in,validation,test, e.g. 0.5,0.3,0.2",
        )),
    }
}
