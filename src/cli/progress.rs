//! Progress of runs on stderr (indicatif), and what an interrupt waits for (see `signal`).

use std::time::Duration;

use git_harness::eval::schedule::Observer;
use git_harness::eval::{InfraClass, Outcome, TrialResult};
use git_harness::lineage;
use git_harness::method::evolve::{LoopEvent, LoopObserver};
use indicatif::{ProgressBar, ProgressStyle};

use super::signal::Busy;

pub struct Bar {
    bar: Option<ProgressBar>,
    pass: u32,
    fail: u32,
    infra: u32,
    cached: u32,
    tokens: u64,
    cost: f64,
    label: String,
    /// Infrastructure errors per class, in the order first seen.
    infra_seen: Vec<(InfraClass, u32)>,
    /// Trials run on each Docker host of a pool, in the order first seen.
    hosts: Vec<(String, u32)>,
    /// Held while a scheduler runs, so an abort waits for its sandboxes to be torn down.
    busy: Option<Busy>,
    /// Put before each line of the loop's events.
    indent: &'static str,
}

impl Bar {
    /// A bar only when stderr is a terminal and `CI` is unset.
    pub fn new(enabled: bool, label: impl Into<String>) -> Self {
        Bar {
            bar: enabled.then(ProgressBar::hidden),
            pass: 0,
            fail: 0,
            infra: 0,
            cached: 0,
            tokens: 0,
            cost: 0.0,
            label: label.into(),
            infra_seen: Vec::new(),
            hosts: Vec::new(),
            busy: None,
            indent: "",
        }
    }

    fn refresh(&self) {
        if let Some(b) = &self.bar {
            let hosts = match self.placement() {
                Some(p) => format!("  on {p}"),
                None => String::new(),
            };
            b.set_message(format!(
                "pass {} fail {} error {} (cached {})  {} tok  ${:.4}{hosts}",
                self.pass, self.fail, self.infra, self.cached, self.tokens, self.cost
            ));
        }
    }

    /// `host n, host m` of the trials run on a pool of hosts; `None` without one.
    fn placement(&self) -> Option<String> {
        if self.hosts.is_empty() {
            return None;
        }
        let list: Vec<String> = self.hosts.iter().map(|(h, n)| format!("{h} {n}")).collect();
        Some(list.join(", "))
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if let Some(p) = self.placement() {
            eprintln!("trials per host: {p}");
        }
        if !self.infra_seen.is_empty() {
            let counts: Vec<String> = self
                .infra_seen
                .iter()
                .map(|(k, n)| format!("{} {n}", k.as_str()))
                .collect();
            eprintln!("infrastructure errors: {}", counts.join(", "));
        }
    }

    /// Say at once why trials fail when an infrastructure class shows up for the first time:
    /// the error verbatim and the settings to check.
    fn first_infra(&mut self, r: &TrialResult) {
        let Some(kind) = r.infra.filter(|_| r.is_infra()) else {
            return;
        };
        if let Some((_, n)) = self.infra_seen.iter_mut().find(|(k, _)| *k == kind) {
            *n += 1;
            return;
        }
        self.infra_seen.push((kind, 1));
        let text = format!(
            "{} infrastructure error ({} trial {}): {}\nhint: {}",
            kind.as_str(),
            r.task,
            r.trial,
            r.error.as_deref().unwrap_or("(no message)"),
            kind.hint()
        );
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }
}

impl Bar {
    /// The loop's events are printed with `indent` before them.
    pub fn indented(mut self, indent: &'static str) -> Self {
        self.indent = indent;
        self
    }
}

impl LoopObserver for Bar {
    fn event(&mut self, event: &LoopEvent) {
        eprintln!("{}{}", self.indent, describe(event));
    }
}

impl Observer for Bar {
    fn planned(&mut self, total: usize, cached: usize) {
        self.busy = Some(Busy::new());
        if let Some(b) = &self.bar {
            b.set_length(total as u64);
            b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.set_prefix(self.label.clone());
            b.enable_steady_tick(Duration::from_millis(200));
            let _ = cached;
        }
        self.refresh();
    }

    fn finished(&mut self, r: &TrialResult) {
        match r.outcome {
            Outcome::Pass => self.pass += 1,
            Outcome::Fail => self.fail += 1,
            Outcome::InfraError => self.infra += 1,
        }
        self.first_infra(r);
        if r.cached_from.is_some() {
            self.cached += 1;
        } else {
            self.tokens += r.tokens();
            self.cost += r.cost_usd;
            if let Some(h) = &r.host {
                match self.hosts.iter_mut().find(|(k, _)| k == h) {
                    Some((_, n)) => *n += 1,
                    None => self.hosts.push((h.clone(), 1)),
                }
            }
        }
        if let Some(b) = &self.bar {
            b.inc(1);
        }
        self.refresh();
    }

    fn ended(&mut self) {
        self.busy = None;
    }

    fn note(&mut self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn interrupted(&mut self, running: &[String]) {
        // Said whether or not a bar is drawn: the user needs to know what the command waits for.
        let line = if running.is_empty() {
            "interrupted: no new trial will start (interrupt again to abort)".to_string()
        } else {
            format!(
                "interrupted: no new trial will start; waiting for {} running trial{} to finish: {} (interrupt again to abort)",
                running.len(),
                if running.len() == 1 { "" } else { "s" },
                running.join(", ")
            )
        };
        match &self.bar {
            Some(b) => b.println(line),
            None => {
                use std::io::Write;
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
        }
    }

    fn stopping(&mut self, reason: &str) {
        // Without a bar the callers report the outcome themselves.
        if let Some(b) = &self.bar {
            b.println(format!("stopping: {reason}"));
        }
    }
}

/// One line for an event of the loop.
pub fn describe(event: &LoopEvent) -> String {
    match event {
        LoopEvent::Resuming { round, open } => {
            format!("round {round}: resuming {open} open proposal(s) on main")
        }
        LoopEvent::Mining { round, main } => format!(
            "round {round}: evaluating main {} on held_in and mining",
            lineage::short(*main)
        ),
        LoopEvent::Refused { title, reason } => format!("  refused: {title} — {reason}"),
        LoopEvent::Proposed { round, count } => format!("round {round}: {count} proposal(s)"),
        LoopEvent::Validated { name, decision: d } => format!(
            "  {name} {}: held_in {:+}, validation {:+}, p={:.4}{}",
            d.verdict,
            d.held_in.delta,
            d.validation.delta,
            d.statistic.p_value,
            d.early_stopped
                .as_ref()
                .map(|e| format!(
                    " (stopped after {}/{} trials)",
                    e.trials_run, e.trials_total
                ))
                .unwrap_or_default()
        ),
        LoopEvent::GatingMerge { parts } => {
            format!("  gating the merge of {parts} accepted edits against main")
        }
        LoopEvent::MergeValidated { name, decision: d } => format!(
            "  {name} {}: held_in {:+}, validation {:+}",
            d.verdict, d.held_in.delta, d.validation.delta
        ),
        LoopEvent::MergeRejected => {
            "  the merge did not pass the gate; promoting the single best edit".into()
        }
        LoopEvent::MergeConflicts => {
            "  the accepted edits conflict; promoting the single best edit".into()
        }
        LoopEvent::Promoted { round, name, merge } => {
            format!(
                "round {round}: promoted {name} -> main {}",
                lineage::short(*merge)
            )
        }
        LoopEvent::NothingAccepted { round } => format!("round {round}: no edit accepted"),
    }
}
