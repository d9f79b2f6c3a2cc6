//! `git harness validate`: gate candidates against their parent.

use git_harness::gate::Verdict;
use git_harness::lineage;
use git_harness::method::validate::{Validation, validate};
use git_harness::{Result, exit};

use super::Ui;
use super::args::{GateArg, ReportFormat};
use super::progress::Bar;
use super::session::Session;

/// Evaluate proposals and their parent on held_in and validation and apply the gate.
///
/// The same task ids and trial ids on both sides; the parent comes from the cache. A candidate
/// stops early once no outcome of its remaining trials can change the verdict. The verdict is
/// recorded on the proposal (what `promote` requires); rejected proposals move to
/// refs/harness/rejected/. Exit 0 accept, 1 reject, 3 indecisive, 125 could not test.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Proposals (`<round>/<slug>` or branch names).
    #[arg(required = true)]
    pub proposals: Vec<String>,
    /// Gate rule [default: the experiment's gate.rule].
    #[arg(long, value_enum)]
    pub gate: Option<GateArg>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let s = Session::open()?;
    let ws = &s.ws;
    let rule = args.gate.map(GateArg::rule);
    let proposals = args
        .proposals
        .iter()
        .map(|p| lineage::resolve_proposal(&ws.repo, p))
        .collect::<Result<Vec<_>>>()?;
    let results = s.block_on(async {
        let ctx = s.context(ui, &Session::interruptible()).await?;
        let mut out = Vec::new();
        for p in &proposals {
            let mut bar = Bar::new(ui.progress, p.name());
            let v = validate(ws, &ctx, p, rule, &mut bar).await;
            bar.finish();
            out.push(v?);
        }
        Ok::<_, git_harness::Error>(out)
    })?;
    let mut code = exit::SUCCESS;
    for v in &results {
        match args.format {
            ReportFormat::Text => print_text(ui, v),
            ReportFormat::Markdown => ui.out(git_harness::report::markdown::validation(v)),
            ReportFormat::Json => ui.out(serde_json::to_string_pretty(&v.record).expect("json")),
        }
        code = code.max(match v.decision.verdict {
            Verdict::Accept => exit::SUCCESS,
            Verdict::Reject => exit::NEGATIVE,
            Verdict::Indecisive => exit::INDECISIVE,
        });
    }
    Ok(code)
}

/// `passes/trials`, or a dash when no trial pair of the split ran (stopped early, or all dropped).
fn passes_of(passes: u32, trials: u32) -> String {
    if trials == 0 {
        "—".to_string()
    } else {
        format!("{passes}/{trials}")
    }
}

pub fn print_text(ui: &mut Ui, v: &Validation) {
    let d = &v.decision;
    let verdict = match d.verdict {
        Verdict::Accept => ui.paint("32", "ACCEPT"),
        Verdict::Reject => ui.paint("31", "REJECT"),
        Verdict::Indecisive => ui.paint("33", "INDECISIVE"),
    };
    ui.out(format!(
        "{}  {}  ({} gate vs parent {})",
        v.proposal.name(),
        verdict,
        v.record.gate,
        lineage::short(v.parent)
    ));
    ui.out(format!(
        "  {:<11} {:>9} {:>11} {:>5}  fixed / broke",
        "split", "parent", "candidate", "Δ"
    ));
    for s in [&d.held_in, &d.validation] {
        ui.out(format!(
            "  {:<11} {:>9} {:>11} {:>+5}  {} / {}",
            s.split.as_str(),
            passes_of(s.parent_passes, s.trials),
            passes_of(s.candidate_passes, s.trials),
            s.delta,
            s.fixed.len(),
            s.broke.len()
        ));
    }
    // Held-in task names may be shown; validation tasks are reported as counts only.
    if !d.held_in.fixed.is_empty() {
        ui.out(format!(
            "  fixed on held_in: {}",
            d.held_in.fixed.join(", ")
        ));
    }
    if !d.held_in.broke.is_empty() {
        ui.out(format!(
            "  broke on held_in: {}",
            d.held_in.broke.join(", ")
        ));
    }
    if !d.held_in.suspect.is_empty() {
        ui.out(format!(
            "  suspected (not significant) on held_in: {}",
            d.held_in.suspect.join(", ")
        ));
    }
    ui.out(format!(
        "  statistic: {}",
        v.record.statistic.clone().unwrap_or_default()
    ));
    if let Some(l) = d.look.filter(|l| l.of > 1) {
        ui.out(format!(
            "  look {} of {} ({} trials per task, alpha spent here {})",
            l.index,
            l.of,
            l.trials,
            git_harness::gate::stats::fmt_level(l.alpha)
        ));
    }
    ui.out(format!("  reason: {}", d.reason));
    if let Some(e) = &d.early_stopped {
        ui.out(format!(
            "  stopped early after {} of {} trials: {} (the table counts the trial pairs that ran)",
            e.trials_run, e.trials_total, e.reason
        ));
    }
    ui.out(format!(
        "  trials executed {} (of {} planned for parent and candidate; the rest cached or not needed)",
        v.trials_executed, v.trials_planned
    ));
    if let Some(r) = &v.rejected_ref {
        ui.out(format!("  moved to {r}"));
    }
}
