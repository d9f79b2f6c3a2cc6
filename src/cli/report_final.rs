//! `git harness report --final`: the only command that opens the sealed test split.

use git_harness::eval::Totals;
use git_harness::method::sealed::{FinalReport, open_test_split};
use git_harness::{Result, exit, lineage};

use super::Ui;
use super::progress::Bar;
use super::session::Session;

/// Evaluate REV (default main) on the sealed test split, log the opening, print the result and
/// how many times the test split was opened before.
pub fn run_final(ui: &mut Ui, rev: Option<String>, baselines: &[String]) -> Result<i32> {
    let s = Session::open()?;
    let ws = &s.ws;
    let rev = rev.unwrap_or_else(|| lineage::main_branch(&ws.repo));
    let out = s.block_on(async {
        let ctx = s.context(ui, &Session::interruptible()).await?;
        let mut bar = Bar::new(ui.progress, "test");
        let r = open_test_split(ws, &ctx, &rev, baselines, &mut bar).await;
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
