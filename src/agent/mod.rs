//! The agent loop that executes a harness: protocol, tools, middleware, completion checks, and
//! the trace it leaves.
//!
//! A harness is data: `prompts/*.md` (minijinja), `tools/*.yaml` (which built-in tools the
//! model sees and how they are described), `middleware/*.yaml` (trigger -> action rules, see
//! [`middleware`]) and `checks/*.yaml` (commands run when the agent submits, see [`checks`]).
//!
//! Messages the runtime itself adds carry fixed prefixes that models (and the sim) can rely on:
//! `[harness] ` (a middleware injection), `[blocked by harness] ` (the result of a blocked
//! call), `[check failed] ` (a rejected submit), `[budget] ` (a budget notice), `[format] `
//! (a reply without a usable action).

pub mod atif;
pub mod checks;
pub mod command;
pub mod middleware;
pub mod prompts;
pub mod protocol;
pub mod replay;
mod run;
mod runtime;
pub mod tools;
pub mod trace;

use tokio::sync::watch;

pub use run::run_episode;
pub use runtime::{Runtime, preflight, validate_surface};
pub use trace::{Ending, Trace};

use crate::experiment::{Budgets, DecodingConfig, Prices};
use crate::harness::Harness;
use crate::model::Usage;

pub const PREFIX_INJECT: &str = "[harness] ";
pub const PREFIX_BLOCKED: &str = "[blocked by harness] ";
pub const PREFIX_CHECK_FAILED: &str = "[check failed] ";
pub const PREFIX_BUDGET: &str = "[budget] ";
pub const PREFIX_FORMAT: &str = "[format] ";

/// Consecutive replies without a usable action before the episode gives up.
pub const MAX_FORMAT_ERRORS: u32 = 3;

/// A cancel flag: the episode ends with [`Ending::Cancelled`] once the value is `true`. Make
/// one with `tokio::sync::watch::channel(false)` and hand clones of the receiver to episodes.
pub type Cancel = watch::Receiver<bool>;

/// Everything one episode needs besides the sandbox and the model.
#[derive(Debug, Clone)]
pub struct EpisodeSpec<'a> {
    pub task_id: &'a str,
    pub trial: u32,
    /// Per-trial seed, sent to the model.
    pub seed: u64,
    pub instruction: &'a str,
    pub harness: &'a Harness,
    pub budgets: &'a Budgets,
    pub decoding: &'a DecodingConfig,
    pub prices: &'a Prices,
    pub cancel: Option<Cancel>,
}

/// What an episode left: the trace (already redacted), how it ended, tokens and cost.
#[derive(Debug, Clone)]
pub struct Episode {
    pub trace: Trace,
    pub ending: Ending,
    pub usage: Usage,
    pub cost_usd: f64,
}
