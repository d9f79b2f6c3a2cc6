//! `git harness demo`: the whole method offline, in one command.

use std::path::PathBuf;

use git_harness::experiment::{EXPERIMENT_FILE, ProposerKind, SPLITS_FILE, Splits};
use git_harness::harness::init::{InitOptions, init};
use git_harness::method::evolve::{EvolveOptions, evolve};
use git_harness::method::sealed::open_test_split;
use git_harness::model::Decoding;
use git_harness::{Error, Result, exit, lineage};

use super::Ui;
use super::progress::Bar;
use super::session::Session;

/// Run the method end to end on the bundled demo suite, offline.
///
/// Creates a harness repository from the `minimal` template with the bundled 40-task demo suite,
/// the SIMULATED model (a seeded program with scripted weaknesses, served on loopback; not a
/// real LLM) and the local sandbox; splits it; runs `evolve` for 3 rounds with the catalog
/// proposer and the strict gate; then `report --final --baseline checklist`. No network, no API
/// key, no Docker. Inspect the result with `git harness log`, `show`, `bisect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to create the demo repository.
    #[arg(default_value = "git-harness-demo")]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
}

const DEMO_SPLIT_SEED: u64 = 10;

/// The demo's experiment: the template's, with budgets sized to the demo tasks so it finishes
/// in minutes on two cores.
fn demo_experiment(text: &str) -> String {
    text.replace("max_turns: 30", "max_turns: 16")
        .replace("max_tool_calls: 40", "max_tool_calls: 24")
        .replace("command_timeout_sec: 60", "command_timeout_sec: 20")
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    if args.dir.exists()
        && std::fs::read_dir(&args.dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(Error::usage_hint(
            format!("{} exists and is not empty", args.dir.display()),
            "give a new directory: `git harness demo DIR`",
        ));
    }
    let started = std::time::Instant::now();
    ui.out("git harness demo — the model is SIMULATED (scripted weaknesses on loopback), not a real LLM.");
    let out = init(&InitOptions {
        dir: args.dir.clone(),
        template: "minimal".into(),
        suite: "builtin:demo".into(),
        runner: None,
        image_map: Default::default(),
    })?;
    std::env::set_current_dir(&out.dir).map_err(|e| Error::io(&out.dir, e))?;
    let s = Session::open()?;
    let ws = &s.ws;
    let main = lineage::main_commit(&ws.repo)?;
    let fixed = ws.fixed_at(&main)?;
    let exp_text = std::fs::read_to_string(out.dir.join(EXPERIMENT_FILE))
        .map_err(|e| Error::io(EXPERIMENT_FILE, e))?;
    let ids = ws.suite_task_ids(&fixed)?;
    // Seed 10 spreads each weakness of the simulated model over held_in and validation.
    let splits = Splits::compute(&ids, DEMO_SPLIT_SEED, [0.45, 0.35, 0.2])?;
    let splits_text = format!(
        "# Task ids of each split, fixed before the first run.\n{}",
        git_harness::support::yaml::to_string(&splits)
    );
    lineage::commit_on_main(
        &ws.repo,
        &[
            (EXPERIMENT_FILE.into(), demo_experiment(&exp_text)),
            (SPLITS_FILE.into(), splits_text),
        ],
        &format!(
            "Fix the demo experiment and split {} tasks into {} held_in / {} validation / {} test\n",
            ids.len(),
            splits.held_in.len(),
            splits.validation.len(),
            splits.test.len()
        ),
    )?;
    ui.out(format!(
        "1. created {} (template minimal, demo suite: {} held_in / {} validation / {} sealed test tasks)",
        out.dir.display(),
        splits.held_in.len(),
        splits.validation.len(),
        splits.test.len()
    ));
    let result = s.block_on(async {
        let ctx = s.context(ui, &Session::interruptible()).await?;
        ui.out(format!(
            "2. evolving for {} rounds (catalog proposer, strict gate)",
            args.rounds
        ));
        let e = &ctx.fixed.experiment;
        let opts = EvolveOptions {
            rounds: args.rounds,
            k: e.proposer.k,
            proposer: ProposerKind::Catalog,
            rule: None,
            budget_trials: None,
            budget_usd: None,
            patience: 2,
            model: None,
            decoding: Decoding::from(&e.decoding),
        };
        let mut bar = Bar::new(ui.progress, "evolve").indented("   ");
        let evo = evolve(ws, &ctx, &opts, &mut bar).await?;
        bar.finish();
        ui.out("3. opening the sealed test split once (lineage and the checklist baseline)");
        let mut bar = Bar::new(ui.progress, "test");
        let main_name = lineage::main_branch(&ws.repo);
        let fin =
            open_test_split(ws, &ctx, &main_name, &["checklist".to_string()], &mut bar).await?;
        bar.finish();
        Ok::<_, Error>((evo, fin))
    })?;
    let (evo, fin) = result;
    super::evolve::print_lineage(ui, ws, &evo)?;
    super::report_final::print_final(ui, "main", &fin);
    ui.out(format!(
        "Done in {:.0} s. Look around:",
        started.elapsed().as_secs_f64()
    ));
    ui.out(format!("  cd {}", out.dir.display()));
    ui.out("  git harness log --all      # the lineage, promotions and rejected proposals");
    ui.out("  git harness show <round>/<slug>   # a proposal's evidence, diff and gate record");
    ui.out("  git log --format='%h %s%n%(trailers)' --first-parent main");
    Ok(exit::SUCCESS)
}
