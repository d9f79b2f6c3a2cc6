//! `git harness revalidate`: drift watch over promotions.

use git_harness::lineage::{self, Drift};
use git_harness::method::revalidate::{self, Revalidation, Select};
use git_harness::{Error, Result, exit};

use super::Ui;
use super::args::Format;
use super::progress::Bar;
use super::session::Session;

/// Re-run promoted versions against their parents with fresh seeds and report gains that
/// vanished.
///
/// REV (default: the latest promotion on main; a promotion merge or the proposal it promoted)
/// is evaluated against its first parent on held_in and validation under a fresh seed
/// namespace (none of the original validation's trials is reused), through the experiment's
/// gate design with every look run in full. Per promotion: the original gain and verdict, the
/// fresh gain with its interval at 1 − 2·alpha, and `holds` (the interval lies above 0 and the
/// gain is at least the design's minimum detectable effect), `vanished` (the interval covers 0,
/// or the gain is below that effect) or `reversed` (the interval lies below 0). Nothing in the
/// history changes: each result is a new ref under refs/harness/revalidations/.
///
/// Exit 0 every promotion holds, 1 some vanished or reversed, 3 none did but some were
/// indecisive, 2 REV is not a promotion, 125 could not test.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The promotion [default: the latest on main].
    #[arg(conflicts_with = "all")]
    pub rev: Option<String>,
    /// Every promotion on main's first-parent history, newest first.
    #[arg(long)]
    pub all: bool,
    /// With --all: at most the N newest promotions.
    #[arg(long, value_name = "N", requires = "all")]
    pub last: Option<usize>,
    /// The seed namespace of the fresh trials [default: a new one]; a recorded revalidation's
    /// seed reruns its trials (from the cache).
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let s = Session::open()?;
    let ws = &s.ws;
    let select = match (args.rev, args.all) {
        (Some(rev), _) => Select::Rev(rev),
        (None, true) => Select::All { last: args.last },
        (None, false) => Select::Latest,
    };
    let promotions = revalidate::select(&ws.repo, &select)?;
    if promotions.is_empty() {
        return Err(Error::usage(format!(
            "{} has no promotion to revalidate",
            lineage::main_branch(&ws.repo)
        )));
    }
    let fixed = ws.fixed_on_main()?;
    let experiment_fingerprint = ws.fingerprint(&fixed)?;
    let seed = match args.seed {
        Some(seed) => seed,
        None => revalidate::fresh_seed(&ws.repo, fixed.experiment.seed)?,
    };
    if seed == fixed.experiment.seed {
        return Err(Error::usage_hint(
            format!("--seed {seed} is the experiment's own seed: the trials would not be fresh"),
            "omit --seed for a new namespace, or give the seed of an earlier revalidation",
        ));
    }
    let mut overrides = Session::interruptible();
    overrides.seed = Some(seed);
    let results = s.block_on(async {
        let ctx = s.context(ui, &overrides).await?;
        let mut out = Vec::new();
        for p in &promotions {
            let mut bar = Bar::new(ui.progress, revalidate::label(p));
            let r = revalidate::revalidate(ws, &ctx, &experiment_fingerprint, p, &mut bar).await;
            bar.finish();
            out.push(r?);
        }
        Ok::<_, Error>(out)
    })?;
    match args.format {
        Format::Text => {
            for r in &results {
                print_text(ui, r);
            }
        }
        Format::Json => {
            let records: Vec<_> = results.iter().map(|r| &r.record).collect();
            ui.out(serde_json::to_string_pretty(&records).expect("json"));
        }
    }
    let any = |d: Drift| results.iter().any(|r| r.record.verdict == d);
    Ok(if any(Drift::Vanished) || any(Drift::Reversed) {
        exit::NEGATIVE
    } else if any(Drift::Indecisive) {
        exit::INDECISIVE
    } else {
        exit::SUCCESS
    })
}

fn print_text(ui: &mut Ui, r: &Revalidation) {
    let rec = &r.record;
    let verdict = match rec.verdict {
        Drift::Holds => ui.paint("32", "HOLDS"),
        Drift::Vanished => ui.paint("33", "VANISHED"),
        Drift::Reversed => ui.paint("31", "REVERSED"),
        Drift::Indecisive => ui.paint("33", "INDECISIVE"),
    };
    ui.out(format!(
        "{}  {}  (promotion {} vs parent {}, {} gate)",
        revalidate::label(&r.promotion),
        verdict,
        lineage::short(r.promotion.commit),
        lineage::short(r.promotion.parent),
        rec.gate
    ));
    let o = &rec.original;
    ui.out(format!(
        "  original  {}{}{}",
        o.verdict.as_deref().unwrap_or("no validation record"),
        o.gain_points
            .map(|g| format!(", gain {g:+.1} points"))
            .unwrap_or_default(),
        o.p_value
            .map(|p| format!(" (p={p:.4})"))
            .unwrap_or_default(),
    ));
    if let Some(why) = &o.overridden {
        ui.out(format!("  forced    {why}"));
    }
    let f = &rec.fresh;
    ui.out(format!(
        "  fresh     gain {:+.1} points [{:+.1}, {:+.1}] at {:.0}%; gate {} (p={:.4}); {} trials per task",
        f.gain_points,
        f.low_points,
        f.high_points,
        100.0 * f.confidence,
        f.gate_verdict,
        f.p_value,
        f.trials
    ));
    ui.out(format!(
        "  minimum detectable effect {:.1} points",
        f.mde_points
    ));
    // Held-in task names may be shown; validation tasks only as counts.
    if !f.broke_held_in.is_empty() || f.broke_validation > 0 {
        ui.out(format!(
            "  broke: {}{}",
            f.broke_held_in.join(", "),
            if f.broke_validation > 0 {
                format!(" (+{} validation tasks)", f.broke_validation)
            } else {
                String::new()
            }
        ));
    }
    ui.out(format!("  reason: {}", rec.reason));
    ui.out(format!(
        "  seed {} ({} trials executed; rerun with --seed {})",
        rec.seed, rec.trials_executed, rec.seed
    ));
    ui.out(format!("  recorded in {}", r.refname));
}
