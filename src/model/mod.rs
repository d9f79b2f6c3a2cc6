//! Model providers behind one async trait: messages + tool definitions + decoding in; text
//! and/or tool calls and token usage out.
//!
//! Providers: [`openai`] (Chat Completions), [`anthropic`] (Messages), [`sim`] (a simulated
//! model served over the OpenAI-compatible API on loopback, so it exercises the real client) and
//! [`replay`] (answers recorded in a trace). [`connect`] builds the one an experiment names.

pub mod anthropic;
pub mod openai;
mod retry;
pub mod sim;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::experiment::{ModelConfig, Provider};
use crate::task::Suite;

pub use retry::RetryPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The raw JSON text of the arguments, as the model produced it (may be malformed).
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn text(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A tool as the model sees it: name, description, JSON-schema parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Decoding {
    pub temperature: f64,
    pub max_tokens: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub decoding: Decoding,
    /// Per-trial seed, passed to providers that accept one.
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
        self.cached_tokens += o.cached_tokens;
    }
}

/// Prices are configured with the experiment; what a usage costs is the model's arithmetic.
impl crate::experiment::Prices {
    pub fn cost(&self, usage: &Usage) -> f64 {
        let uncached = usage.prompt_tokens.saturating_sub(usage.cached_tokens) as f64;
        (uncached * self.input_per_mtok
            + usage.cached_tokens as f64 * self.cached_input_per_mtok
            + usage.completion_tokens as f64 * self.output_per_mtok)
            / 1e6
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    pub finish_reason: Option<String>,
    /// Milliseconds of the call spent not answering: failed attempts, backoff before retries,
    /// waiting for a free request slot. Not charged to the agent's wall-clock budget.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub waited_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why a model call failed after retries. Always an infrastructure error for the trial.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    #[error("model API returned HTTP {status}: {body}")]
    Http { status: u16, body: String },
    #[error("model API request timed out after {0} s")]
    Timeout(u64),
    #[error("could not reach the model API: {0}")]
    Connect(String),
    #[error("model API answered something unreadable: {0}")]
    Protocol(String),
    #[error("model configuration: {0}")]
    Config(String),
}

#[async_trait]
pub trait Model: Send + Sync {
    /// `provider/model`, for traces and reports.
    fn name(&self) -> String;
    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, ModelError>;
    /// Secret values this model holds (its API key), so that whoever records what the model
    /// saw or said can redact them. Never logged, never serialized.
    fn secrets(&self) -> Vec<String> {
        Vec::new()
    }
}

/// What [`connect`] needs besides the model config.
/// Opens a recorded trace as a model (see [`ConnectContext::replay`]).
pub type OpenReplay = fn(&Path) -> Result<Arc<dyn Model>>;

pub struct ConnectContext<'a> {
    /// The harness repository's root: a relative sim scenario path is resolved against it.
    pub repo_root: &'a Path,
    /// The loaded suite; the sim needs it to recognise tasks.
    pub suite: Option<&'a Suite>,
    /// Bundled scenarios for `builtin:<name>`; normally [`crate::support::assets::sim_scenario`].
    pub builtin_scenario: fn(&str) -> Option<&'static str>,
    /// Opens a recorded trace as a model for the replay provider. Replaying reads traces, which
    /// belong to the agent layer above this one, so the caller supplies it.
    pub replay: Option<OpenReplay>,
}

impl<'a> ConnectContext<'a> {
    pub fn new(repo_root: &'a Path, suite: Option<&'a Suite>) -> Self {
        ConnectContext {
            repo_root,
            suite,
            builtin_scenario: crate::support::assets::sim_scenario,
            replay: None,
        }
    }
}

/// A connected model. Keep it alive while the model is used: for `sim` it owns the server.
pub struct Connected {
    pub model: Arc<dyn Model>,
    /// The in-process sim server, when the provider is `sim`; dropping it stops the server.
    pub sim: Option<sim::SimServer>,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("model", &self.model.name())
            .field("sim", &self.sim.as_ref().map(|s| s.base_url.clone()))
            .finish()
    }
}

/// Build the model an experiment names, wrapped in its concurrency limit.
pub async fn connect(cfg: &ModelConfig, ctx: &ConnectContext<'_>) -> Result<Connected> {
    let policy = RetryPolicy::from_config(cfg);
    let (inner, sim): (Arc<dyn Model>, Option<sim::SimServer>) = match cfg.provider {
        Provider::Openai => {
            let key = api_key(cfg)?;
            let base = cfg
                .base_url
                .clone()
                .unwrap_or_else(|| openai::DEFAULT_BASE_URL.to_string());
            (
                Arc::new(openai::OpenAiModel::new(&base, &cfg.name, key, policy)?),
                None,
            )
        }
        Provider::Anthropic => {
            let key = api_key(cfg)?;
            let base = cfg
                .base_url
                .clone()
                .unwrap_or_else(|| anthropic::DEFAULT_BASE_URL.to_string());
            (
                Arc::new(anthropic::AnthropicModel::new(
                    &base, &cfg.name, key, policy,
                )?),
                None,
            )
        }
        Provider::Unset => {
            return Err(Error::usage_hint(
                "the experiment's model is not set (model.provider: unset in .harness/experiment.yaml)",
                "set model.provider (openai or anthropic), name, base_url and api_key_env in .harness/experiment.yaml (examples are in its comments), then `git commit -am \"Set the model\"`",
            ));
        }
        Provider::Sim => {
            let reference = cfg.scenario.as_deref().ok_or_else(|| {
                Error::usage_hint(
                    "the sim provider needs a scenario",
                    "set `model.scenario: builtin:demo` (or a path) in .harness/experiment.yaml",
                )
            })?;
            let suite = ctx.suite.ok_or_else(|| {
                Error::Internal("the sim provider was connected without a task suite".into())
            })?;
            let (text, label) = scenario_text(reference, ctx)?;
            let scenario = sim::Scenario::parse(&text, Path::new(&label))?;
            let server = sim::SimServer::start_with(scenario, suite).await?;
            let model =
                openai::OpenAiModel::new(&server.base_url, &server.model_name, None, policy)?
                    .with_display_name(server.model_name.clone());
            (Arc::new(model), Some(server))
        }
        Provider::Replay => {
            let reference = cfg.scenario.as_deref().ok_or_else(|| {
                Error::usage_hint(
                    "the replay provider needs a trace file",
                    "set `model.scenario: <path of a trace.json>` in .harness/experiment.yaml",
                )
            })?;
            let path = ctx.repo_root.join(reference);
            let open = ctx.replay.ok_or_else(|| {
                Error::Internal("the replay provider was connected without a trace reader".into())
            })?;
            (open(&path)?, None)
        }
    };
    let model: Arc<dyn Model> = Arc::new(Limited::new(inner, cfg.concurrency));
    Ok(Connected { model, sim })
}

/// The text of a sim scenario reference and a label naming it in errors.
fn scenario_text(reference: &str, ctx: &ConnectContext<'_>) -> Result<(String, String)> {
    if let Some(name) = reference.strip_prefix("builtin:") {
        let text = (ctx.builtin_scenario)(name).ok_or_else(|| {
            Error::usage_hint(
                format!("no bundled sim scenario `{name}`"),
                "use `builtin:demo` or a path to a scenario file",
            )
        })?;
        return Ok((text.to_string(), format!("builtin:{name}")));
    }
    let path = ctx.repo_root.join(reference);
    let text = std::fs::read_to_string(&path).at(&path)?;
    Ok((text, path.display().to_string()))
}

/// The API key from the environment variable the config names; `None` when it names none
/// (local OpenAI-compatible servers need no key).
fn api_key(cfg: &ModelConfig) -> Result<Option<String>> {
    let Some(var) = &cfg.api_key_env else {
        return Ok(None);
    };
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => {
            // From here on, nothing this process stores can hold the key.
            crate::support::secrets::register(&v);
            Ok(Some(v))
        }
        _ => Err(Error::usage_hint(
            format!("the API key variable {var} is not set"),
            format!(
                "export {var}=<your key> (model.api_key_env in .harness/experiment.yaml names it)"
            ),
        )),
    }
}

/// Every model is wrapped in a semaphore of `model.concurrency` permits: at most that many
/// requests are in flight to one provider, however many trials run.
pub struct Limited {
    inner: Arc<dyn Model>,
    permits: Arc<tokio::sync::Semaphore>,
}

impl Limited {
    pub fn new(inner: Arc<dyn Model>, concurrency: usize) -> Self {
        Limited {
            inner,
            permits: Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))),
        }
    }
}

#[async_trait]
impl Model for Limited {
    fn name(&self) -> String {
        self.inner.name()
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let queued = std::time::Instant::now();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ModelError::Config("the model's request limiter was closed".into()))?;
        let queued_for = queued.elapsed();
        let mut r = self.inner.chat(req).await?;
        r.waited_ms += queued_for.as_millis() as u64;
        Ok(r)
    }

    fn secrets(&self) -> Vec<String> {
        self.inner.secrets()
    }
}

/// At most `max` bytes of `s` (on a char boundary), for error messages.
pub fn clip_for_message(s: &str, max: usize) -> String {
    retry::clip(s, max)
}
