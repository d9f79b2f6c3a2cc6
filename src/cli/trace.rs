//! `git harness trace`: one trial's trace, readably.

use git_harness::agent::trace::Event;
use git_harness::eval::record::{TrialRef, trial_trace};
use git_harness::method;
use git_harness::{Error, Result, exit};

use super::Ui;

/// Print a trial's trace: what the model was told and answered, each tool call with its
/// output, middleware firings, checks, the verifier's verdict and how the episode ended.
///
/// Name the trial as `mine` prints its evidence: `git harness trace <run> <task>#<n>` (or
/// `<run>:<task>#<n>`), `#<n>` the trial index.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run (`refs/harness/runs/<run>`; `git harness status` lists them), or
    /// `<run>:<task>#<n>`.
    pub run: String,
    /// The trial: `<task>#<n>` (`<task>` alone is trial 0).
    pub trial: Option<String>,
    /// Print at most this many characters of each tool output and message (0: all).
    #[arg(long, default_value_t = 2000)]
    pub clip: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    /// The stored trace as it is.
    Json,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let at = match &args.trial {
        Some(t) => {
            let (task, trial) = TrialRef::parse_task(t).ok_or_else(|| {
                Error::usage_hint(
                    format!("`{t}` does not name a trial"),
                    "give it as <task>#<n>, e.g. word-count#0",
                )
            })?;
            TrialRef {
                run: args.run.clone(),
                task,
                trial,
            }
        }
        None => TrialRef::parse(&args.run).ok_or_else(|| {
            Error::usage_hint(
                format!("`{}` does not name a trial", args.run),
                "give `git harness trace <run> <task>#<n>` or `<run>:<task>#<n>`",
            )
        })?,
    };
    let ws = method::open_workspace()?;
    let (result, trace) = trial_trace(&ws.repo, &ws.state_dir(), &at)?;
    if args.format == Format::Json {
        ui.out(trace.to_json());
        return Ok(exit::SUCCESS);
    }
    let clip = |s: &str| -> String {
        if args.clip == 0 || s.chars().count() <= args.clip {
            s.to_string()
        } else {
            let head: String = s.chars().take(args.clip).collect();
            format!(
                "{head}\n[... {} more characters]",
                s.chars().count() - args.clip
            )
        }
    };
    let indent = |ui: &mut Ui, s: &str| {
        for line in s.lines() {
            ui.out(format!("    {line}"));
        }
    };
    ui.out(ui.paint(
        "1",
        &format!(
            "{at}  {} on {} ({} split)",
            git_harness::support::yaml::name_of(&result.outcome),
            trace.model,
            result.split
        ),
    ));
    ui.out(format!(
        "  harness {}  seed {}  ended: {}  {} turns, {} tool calls, {} tokens, {:.1}s",
        trace.harness,
        trace.seed,
        trace.ending.reason(),
        trace.totals.turns,
        trace.totals.tool_calls,
        trace.totals.usage.prompt_tokens + trace.totals.usage.completion_tokens,
        trace.totals.duration_ms as f64 / 1000.0
    ));
    let mut turn = 0;
    for e in &trace.events {
        match e {
            Event::ModelRequest(r) => {
                if r.turn != turn {
                    turn = r.turn;
                    ui.out("");
                    ui.out(ui.paint("1", &format!("── turn {turn}")));
                }
                if let Some(s) = &r.system {
                    ui.out(ui.paint("36", "system:"));
                    indent(ui, &clip(s));
                }
                for m in &r.messages {
                    if let Some(c) = &m.content {
                        ui.out(ui.paint("36", &format!("{}:", role_name(&m.role))));
                        indent(ui, &clip(c));
                    }
                }
            }
            Event::ModelResponse(r) => {
                if let Some(c) = r.content.as_deref().filter(|c| !c.trim().is_empty()) {
                    ui.out(ui.paint("33", "model:"));
                    indent(ui, &clip(c));
                }
            }
            Event::ToolCall(t) => {
                let what = match (&t.command, &t.path) {
                    (Some(c), _) => format!("$ {c}"),
                    (None, Some(p)) => format!("{} {p}", t.tool),
                    (None, None) => format!("{} {}", t.tool, t.arguments),
                };
                let status = if t.blocked {
                    "blocked".to_string()
                } else if t.exit_code.is_none() && t.ok && !t.timed_out {
                    // Calls imported from ATIF have no exit code; they did not fail.
                    "ok".to_string()
                } else {
                    git_harness::exit::describe(t.exit_code, t.timed_out)
                };
                let colour = if t.ok { "32" } else { "31" };
                ui.out(format!(
                    "{} {}",
                    ui.paint(colour, &what),
                    ui.paint(colour, &format!("({status})"))
                ));
                if !t.output.trim().is_empty() {
                    indent(ui, &clip(&t.output));
                }
            }
            Event::Middleware(m) => ui.out(ui.paint(
                "35",
                &format!(
                    "middleware {} ({}) on {}: {}{}",
                    m.rule,
                    m.file,
                    m.event,
                    m.action,
                    m.message
                        .as_ref()
                        .map(|s| format!(" — {s}"))
                        .unwrap_or_default()
                ),
            )),
            Event::Check(c) => {
                ui.out(ui.paint(
                    if c.ok { "32" } else { "31" },
                    &format!("check {}: {}", c.name, if c.ok { "ok" } else { "failed" }),
                ));
                if !c.ok && !c.output.trim().is_empty() {
                    indent(ui, &clip(&c.output));
                }
            }
            Event::BudgetNotice { message, .. } => ui.out(format!("budget: {message}")),
            Event::FormatError { message, .. } => ui.out(format!("format error: {message}")),
            Event::Refused { message, .. } => ui.out(format!("refused by the gateway: {message}")),
        }
    }
    ui.out("");
    ui.out(ui.paint("1", "── verifier"));
    ui.out(format!(
        "  reward {}  {}{}",
        result.verifier.reward,
        if result.verifier.passed {
            "passed"
        } else {
            "failed"
        },
        if result.verifier.failed_tests.is_empty() {
            String::new()
        } else {
            format!(
                "  failed tests: {}",
                result.verifier.failed_tests.join(", ")
            )
        }
    ));
    if !result.verifier.output_tail.trim().is_empty() {
        indent(ui, &clip(&result.verifier.output_tail));
    }
    Ok(exit::SUCCESS)
}

fn role_name(role: &git_harness::model::Role) -> String {
    git_harness::support::yaml::name_of(role)
}
