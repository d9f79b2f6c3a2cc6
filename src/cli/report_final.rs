//! `git harness report --final`: the only command that opens the sealed test split.

use git_harness::eval::Totals;
use git_harness::eval::context::open_context;
use git_harness::method;
use git_harness::method::sealed::{FinalReport, open_test_split};
use git_harness::{Result, exit, lineage};

use super::Ui;
use super::progress::{Bar, runtime};

/// Evaluate REV (default main) on the sealed test split, log the opening, print the result and
/// how many times the test split was opened before.
pub fn run_final(ui: &mut Ui, rev: Option<String>, baselines: &[String]) -> Result<i32> {
    let ws = method::open_workspace()?;
    let rev = rev.unwrap_or_else(|| lineage::main_branch(&ws.repo));
    let rt = runtime();
    let out = rt.block_on(async {
        let ctx = open_context(&ws, &super::signal::overrides()).await?;
        for w in &ctx.warnings {
            ui.warn(w);
        }
        let mut bar = Bar::new(ui.progress, "test");
        let r = open_test_split(&ws, &ctx, &rev, baselines, &mut bar).await;
        bar.finish();
        r
    })?;
    print_final(ui, &rev, &out);
    Ok(exit::SUCCESS)
}

pub fn print_final(ui: &mut Ui, rev: &str, r: &FinalReport) {
    let e = &r.entry;
    ui.out(format!(
        "Test split opening #{} (opened {} time{} before); harness {} ({rev})",
        e.opening,
        r.previous_openings,
        if r.previous_openings == 1 { "" } else { "s" },
        &e.harness[..10]
    ));
    let line = |name: &str, t: &Totals| {
        format!(
            "  {:<22} {:>7}  {:>3}/{:<3}  infra {}",
            name,
            t.pass_rate_text(),
            t.passes,
            t.trials,
            t.infra_errors
        )
    };
    ui.out(line("lineage", &r.totals));
    for (name, t) in &r.baselines {
        ui.out(line(&format!("baseline {name}"), t));
    }
    ui.out(format!("  logged in {}", lineage::TEST_LOG_REF));
}
