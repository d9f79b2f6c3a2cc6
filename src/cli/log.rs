//! `git harness log`: the lineage of main.

use git_harness::lineage::history::{Version, versions, versions_to};
use git_harness::lineage::{self, NOTES_REF, RunSummary};
use git_harness::method;
use git_harness::{Result, exit};
use serde::Serialize;

use super::Ui;

/// Show the lineage of main: each version, each promotion's surface and per-split pass rates.
///
/// With NAME, the lineage up to it: a version (`v3`), a proposal (`1/progress-nudge`, open,
/// rejected or promoted), a run id (the commit it evaluated) or any commit. Commits that are
/// not versions of main (a proposal) are labelled by their name instead of `vN`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the lineage ends [default: main].
    pub name: Option<String>,
    /// Also list every proposal: open, rejected, and promoted (also those a merged candidate
    /// combined).
    #[arg(long)]
    pub all: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Serialize)]
struct ProposalRow {
    name: String,
    state: &'static str,
    commit: String,
    subject: String,
    surface: Option<String>,
    cluster: Option<String>,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let ws = method::open_workspace()?;
    // Pass rates are only shown under the current experiment fingerprint.
    let fingerprint = ws.fixed_on_main().and_then(|f| ws.fingerprint(&f)).ok();
    let (versions, label) = match &args.name {
        None => (versions(&ws.repo, fingerprint.as_deref())?, None),
        Some(name) => {
            let (tip, _) = lineage::resolve_named(&ws.repo, name)?;
            let tip_id = tip.id();
            let on_main = lineage::first_parent_chain(&ws.repo)?
                .iter()
                .any(|c| c.id() == tip_id);
            let vs = versions_to(&ws.repo, tip, fingerprint.as_deref())?;
            (vs, (!on_main).then(|| name.clone()))
        }
    };
    let proposals: Vec<ProposalRow> = if args.all {
        lineage::list_proposals(&ws.repo)?
            .into_iter()
            .map(|p| ProposalRow {
                name: p.name(),
                state: p.state.as_str(),
                commit: p.commit.to_string(),
                subject: p.message.subject.clone(),
                surface: p.message.get(lineage::keys::SURFACE).map(str::to_string),
                cluster: p.message.get(lineage::keys::CLUSTER).map(str::to_string),
            })
            .collect()
    } else {
        Vec::new()
    };
    if args.format == Format::Json {
        let v = serde_json::json!({ "fingerprint": fingerprint, "versions": versions, "proposals": proposals });
        ui.out(serde_json::to_string_pretty(&v).expect("json"));
        return Ok(exit::SUCCESS);
    }
    let last = versions.len().saturating_sub(1);
    for (i, v) in versions.iter().enumerate() {
        // The tip of a lineage that left main (a proposal) is not a version of main.
        let name = match &label {
            Some(l) if i == last => l.clone(),
            _ => format!("v{i}"),
        };
        print_version(ui, &name, v);
    }
    if args.all {
        ui.out("");
        if proposals.is_empty() {
            ui.out("No proposals.");
        }
        for p in &proposals {
            let state = match p.state {
                "open" => ui.paint("33", "open    "),
                "promoted" => ui.paint("32", "promoted"),
                _ => ui.paint("31", "rejected"),
            };
            ui.out(format!("{state} {:<28} {}", p.name, p.subject));
            if let Some(s) = &p.surface {
                ui.out(format!(
                    "         surface {s}{}",
                    p.cluster
                        .as_ref()
                        .map(|c| format!("  cluster {c}"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    if fingerprint.is_none() {
        ui.note(format!(
            "note: pass rates need the experiment's suite; none shown (notes: {NOTES_REF})"
        ));
    }
    Ok(exit::SUCCESS)
}

fn rate(s: &Option<RunSummary>) -> String {
    match s {
        // Nothing countable (every trial an infrastructure error) is no data, never 0%.
        Some(r) if r.trials == 0 => "no data".into(),
        Some(r) => format!("{}/{} ({:.0}%)", r.passes, r.trials, r.pass_rate() * 100.0),
        None => "-".into(),
    }
}

fn print_version(ui: &mut Ui, name: &str, v: &Version) {
    let short = &v.commit[..10];
    let date = chrono::DateTime::from_timestamp(v.time, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    let head = ui.paint("33", short);
    ui.out(format!("{name:<4} {head} {date} {}", v.subject));
    let mut detail = Vec::new();
    if let Some(s) = &v.surface {
        detail.push(format!("surface {s}"));
    }
    if let Some(o) = &v.overridden {
        detail.push(format!("OVERRIDE: {o}"));
    }
    if v.held_in.is_some() || v.validation.is_some() {
        detail.push(format!(
            "held_in {}  validation {}",
            rate(&v.held_in),
            rate(&v.validation)
        ));
    }
    if !detail.is_empty() {
        ui.out(format!("                 {}", detail.join("  ")));
    }
}
