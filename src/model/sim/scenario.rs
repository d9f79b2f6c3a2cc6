//! The scenario file of the simulated model (`docs/sim-scenarios.md`): quirks, what neutralises
//! them, and a scripted solution per task.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub defaults: Defaults,
    /// Quirk name -> what neutralises it.
    #[serde(default)]
    pub quirks: BTreeMap<Quirk, Neutraliser>,
    /// Task id -> its script.
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskScript>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Probability that a task's quirk is active in a trial.
    #[serde(default = "default_p")]
    pub p: f64,
    /// Probability of an unforced mistake in a trial.
    #[serde(default = "default_slip")]
    pub slip: f64,
    /// Where a trial's draws come from: `seeded` (hash of the request seed and the task: the
    /// same trial always draws alike) or `conversation` (fresh per conversation, independent of
    /// the seed, like a real model sampled at a temperature).
    #[serde(default, skip_serializing_if = "Draws::is_seeded")]
    pub draws: Draws,
}

/// See [`Defaults::draws`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Draws {
    #[default]
    Seeded,
    Conversation,
}

impl Draws {
    fn is_seeded(&self) -> bool {
        *self == Draws::Seeded
    }
}

fn default_p() -> f64 {
    0.9
}
fn default_slip() -> f64 {
    0.03
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            p: default_p(),
            slip: default_slip(),
            draws: Draws::Seeded,
        }
    }
}

/// The behavioural weaknesses the sim knows how to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Quirk {
    LateArtifact,
    ExactRetry,
    NoVerify,
    EnvLoss,
    Loop,
}

impl Quirk {
    pub fn as_str(self) -> &'static str {
        match self {
            Quirk::LateArtifact => "late-artifact",
            Quirk::ExactRetry => "exact-retry",
            Quirk::NoVerify => "no-verify",
            Quirk::EnvLoss => "env-loss",
            Quirk::Loop => "loop",
        }
    }
}

/// Runtime events the sim recognises by the agent runtime's fixed prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimEvent {
    /// A tool result starting with `[blocked by harness]`.
    Blocked,
    /// A user message after the first starting with `[harness]`.
    Injected,
    /// A submit result starting with `[check failed]` or `[blocked by harness]`.
    SubmitRejected,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Neutraliser {
    /// Case-insensitive phrases; any one seen in a system message or an injected message
    /// neutralises the quirk.
    #[serde(default)]
    pub phrases: Vec<String>,
    #[serde(default)]
    pub events: Vec<SimEvent>,
}

/// One scripted action: `{bash: CMD}`, `{write_file: {path, content}}`, `{read_file: PATH}`,
/// `{edit: {path, old_text, new_text}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Bash(String),
    WriteFile {
        path: String,
        content: String,
    },
    ReadFile(String),
    Edit {
        path: String,
        old_text: String,
        new_text: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskScript {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quirk: Option<Quirk>,
    /// Overrides `defaults.p`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<f64>,
    /// Bash commands run first.
    #[serde(default)]
    pub explore: Vec<String>,
    /// The correct actions, in order.
    #[serde(default, with = "serde_yaml::with::singleton_map_recursive")]
    pub solve: Vec<Action>,
    /// Commands that check the result.
    #[serde(default)]
    pub verify: Vec<String>,
    /// exact-retry: a command that fails and is retried verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<String>,
    /// no-verify: a subtly wrong first attempt.
    #[serde(default, with = "serde_yaml::with::singleton_map_recursive")]
    pub wrong: Vec<Action>,
    /// env-loss: the solve split across shell calls.
    #[serde(default, with = "serde_yaml::with::singleton_map_recursive")]
    pub split: Vec<Action>,
}

impl Scenario {
    /// Parse and check a scenario; errors name `file:line: field`.
    pub fn parse(text: &str, file: &Path) -> Result<Self> {
        let s: Scenario = crate::support::yaml::from_str(text, file)?;
        s.validate(text, file)?;
        Ok(s)
    }

    fn validate(&self, text: &str, file: &Path) -> Result<()> {
        let err = |key: &str, field: String, msg: String| {
            Err(Error::config(
                file,
                crate::support::yaml::line_of(text, key),
                field,
                msg,
            ))
        };
        if self.name.trim().is_empty() {
            return err("name", "name".into(), "must not be empty".into());
        }
        let prob = |p: f64| (0.0..=1.0).contains(&p);
        if !prob(self.defaults.p) {
            return err(
                "p",
                "defaults.p".into(),
                format!("{} is not a probability in [0, 1]", self.defaults.p),
            );
        }
        if !prob(self.defaults.slip) {
            return err(
                "slip",
                "defaults.slip".into(),
                format!("{} is not a probability in [0, 1]", self.defaults.slip),
            );
        }
        for (id, t) in &self.tasks {
            let at = |field: &str| format!("tasks.{id}.{field}");
            if let Some(p) = t.p
                && !prob(p)
            {
                return err(id, at("p"), format!("{p} is not a probability in [0, 1]"));
            }
            if t.solve.is_empty() {
                return err(
                    id,
                    at("solve"),
                    "give at least one action that solves the task".into(),
                );
            }
            let Some(q) = t.quirk else { continue };
            if !self.quirks.contains_key(&q) {
                return err(
                    id,
                    at("quirk"),
                    format!("quirk `{}` is not declared under `quirks:`", q.as_str()),
                );
            }
            let missing = match q {
                Quirk::ExactRetry if t.failing.is_none() => Some("failing"),
                Quirk::NoVerify if t.wrong.is_empty() => Some("wrong"),
                Quirk::EnvLoss if t.split.is_empty() => Some("split"),
                _ => None,
            };
            if let Some(f) = missing {
                return err(
                    id,
                    at(f),
                    format!("a task with quirk `{}` needs `{f}`", q.as_str()),
                );
            }
        }
        Ok(())
    }
}
