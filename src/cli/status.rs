//! `git harness status`: where the harness stands.

use git_harness::eval::journal::Journal;
use git_harness::lineage::{self, ProposalState};
use git_harness::method;
use git_harness::{Result, exit};

use super::Ui;

/// Show the current harness commit, experiment fingerprint, split sizes, open proposals, main's
/// flaky tasks (with their pass rate over repeats), recent runs, the last revalidation and
/// unfinished (interrupted or killed) runs with their resume command.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(ui: &mut Ui, _args: Args) -> Result<i32> {
    let ws = method::open_workspace()?;
    let main = lineage::main_commit(&ws.repo)?;
    let fixed = ws.fixed_at(&main)?;
    ui.out(format!(
        "harness   {} {} ({})",
        lineage::main_branch(&ws.repo),
        lineage::short(main.id()),
        main.summary().ok().flatten().unwrap_or_default()
    ));
    let fingerprint = ws.fingerprint(&fixed).ok();
    match ws.fingerprint(&fixed) {
        Ok(fp) => ui.out(format!(
            "experiment {fp}  model {} ({})  suite {}",
            fixed.experiment.model.name,
            fixed.experiment.model.provider,
            fixed.experiment.suite.path
        )),
        Err(e) => ui.out(format!("experiment (fingerprint unavailable: {e})")),
    }
    let r = &fixed.experiment.runner;
    ui.out(format!(
        "runner    {}  network: agent {}, verifier {}  strays: {}",
        r.kind, r.agent_network, r.verifier_network, r.strays
    ));
    let s = &fixed.splits;
    if s.is_empty() {
        ui.out("splits    none yet: run `git harness split`");
    } else {
        ui.out(format!(
            "splits    {} held_in / {} validation / {} test (sealed)",
            s.held_in.len(),
            s.validation.len(),
            s.test.len()
        ));
    }
    let props = lineage::list_proposals(&ws.repo)?;
    let open: Vec<_> = props
        .iter()
        .filter(|p| p.state == ProposalState::Open)
        .collect();
    let count = |state| props.iter().filter(|p| p.state == state).count();
    let promoted = count(ProposalState::Promoted);
    ui.out(format!(
        "proposals {} open, {} rejected{}",
        open.len(),
        count(ProposalState::Rejected),
        if promoted > 0 {
            format!(", {promoted} promoted")
        } else {
            String::new()
        }
    ));
    for p in open {
        ui.out(format!("  {:<28} {}", p.name(), p.message.subject));
    }
    let marks = match fingerprint.as_deref() {
        Some(fp) => lineage::flaky_marks(&ws.repo, &main, fp)?,
        None => None,
    };
    match marks {
        Some(f) => {
            ui.out(format!(
                "flaky     {} of {} held_in, {} of {} validation task(s) flip across repeats (from {} trials)",
                f.tasks.len(),
                f.held_in_tasks,
                f.validation.flaky,
                f.validation.of,
                f.from_trials
            ));
            // Held-in task names may be shown; validation tasks only as counts.
            for (id, t) in &f.tasks {
                ui.out(format!(
                    "  {id:<28} {:>4.0}% {:>7}",
                    t.rate * 100.0,
                    format!("{}/{}", t.passes, t.trials)
                ));
            }
        }
        None => ui.out("flaky     not measured on this tree yet: run `git harness noise`"),
    }
    let runs = lineage::list_runs(&ws.repo)?;
    ui.out(format!("runs      {}", runs.len()));
    for (id, _, _) in runs.iter().take(5) {
        ui.out(format!("  {id}"));
    }
    if let Some((_, r)) = lineage::list_revalidations(&ws.repo)?.first() {
        ui.out(format!(
            "revalidated {}: {} (fresh gain {:+.1} points [{:+.1}, {:+.1}], {})",
            r.proposal
                .clone()
                .unwrap_or_else(|| r.promotion.chars().take(10).collect()),
            r.verdict,
            r.fresh.gain_points,
            r.fresh.low_points,
            r.fresh.high_points,
            r.created_at
        ));
    }
    let state = ws.state_dir();
    let unfinished = Journal::unfinished(&state);
    if !unfinished.is_empty() {
        ui.out(format!("unfinished runs {}", unfinished.len()));
        for id in &unfinished {
            let results = Journal::read_results(&state, id);
            let done = results.len();
            let hosts = per_host(&results);
            if Journal::abandoned(&state, id) {
                ui.out(format!(
                    "  {id}  {done} trial{} done{hosts}; resume: git harness run --resume {id}",
                    if done == 1 { "" } else { "s" }
                ));
            } else {
                ui.out(format!(
                    "  {id}  {done} trial{} done{hosts}; still running",
                    if done == 1 { "" } else { "s" }
                ));
            }
        }
    }
    let openings = lineage::test_log_entries(&ws.repo)?.len();
    ui.out(format!(
        "test split opened {openings} time{}",
        if openings == 1 { "" } else { "s" }
    ));
    Ok(exit::SUCCESS)
}

/// ` (on HOST n, HOST m)` for the trials of a run on a pool of Docker hosts, else empty.
fn per_host(results: &[git_harness::eval::TrialResult]) -> String {
    let mut hosts: Vec<(&str, usize)> = Vec::new();
    for h in results.iter().filter_map(|r| r.host.as_deref()) {
        match hosts.iter_mut().find(|(k, _)| *k == h) {
            Some((_, n)) => *n += 1,
            None => hosts.push((h, 1)),
        }
    }
    if hosts.is_empty() {
        return String::new();
    }
    let list: Vec<String> = hosts.iter().map(|(h, n)| format!("{h} {n}")).collect();
    format!(" (on {})", list.join(", "))
}
