//! Executing one trial: a fresh sandbox, the agent (the model under the harness, or a built-in
//! agent), the verifier, and always the teardown. Infrastructure errors are retried and then
//! reported as such, never as agent failures.

use std::sync::Arc;

use async_trait::async_trait;

use super::AgentKind;
use super::schedule::Executor;
use crate::error::Result;
use crate::harness::Harness;

/// Makes the executor of a run for a harness and an agent kind.
#[async_trait]
pub trait ExecutorFactory: Send + Sync {
    async fn executor(&self, harness: &Harness, agent: AgentKind) -> Result<Arc<dyn Executor>>;
    /// What the task's sandbox is built from beyond its files (see
    /// [`SandboxProvider::environment_id`]), for the cache key.
    async fn environment_id(&self, task: &crate::task::Task) -> Result<Option<String>> {
        let _ = task;
        Ok(None)
    }
    /// [`Executors::environment_id`] once the task's environment is there (see
    /// [`SandboxProvider::prepare`]); `notes` gets progress (image pulls).
    async fn prepare(
        &self,
        task: &crate::task::Task,
        notes: &mut Notes<'_>,
    ) -> Result<Option<String>> {
        let _ = notes;
        self.environment_id(task).await
    }
    /// After an abort, remove what the aborted trials' sandboxes may have left.
    async fn after_abort(&self) {}
    /// Verify `task` on a kept final workspace (a tar of its workdir) in a fresh sandbox, with
    /// no agent: what `regrade` does for each trial.
    async fn regrade(
        &self,
        task: &crate::task::Task,
        workspace: &[u8],
    ) -> Result<crate::task::VerifierOutcome> {
        let _ = (task, workspace);
        Err(Error::Internal(
            "this executor factory cannot regrade trials".into(),
        ))
    }
}

use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::schedule::{Executed, PlannedTrial, TrialEnd};
use super::{Durations, InfraClass, Outcome, TrialResult};
use crate::agent::gateway::{Gateway, Pin};
use crate::agent::{Episode, EpisodeSpec};
use crate::error::Error;
use crate::eval::builtin::BuiltinAgent;
use crate::eval::verify::{VerifyOptions, verify_trial};
use crate::experiment::Experiment;
use crate::model::Model;
use crate::sandbox::{CreateOptions, Notes, Sandbox, SandboxProvider};
use crate::task::VerifierOutcome;

/// The executor factory of a real run: a sandbox provider and (for the harness agent) a model.
pub struct Factory {
    pub provider: Arc<dyn SandboxProvider>,
    pub model: Option<Arc<dyn Model>>,
    pub experiment: Experiment,
    /// The model gateway of `protocol: command` harnesses, started on first use.
    pub gateway: tokio::sync::OnceCell<Arc<Gateway>>,
    /// [`crate::support::digest::stat_tree`] of `runner.agent_paths`, taken once per run.
    agent_paths_digest: std::sync::OnceLock<String>,
    /// Keep each trial's final workspace for `regrade` (`run --keep-workspace`).
    pub keep_workspace: bool,
}

impl Factory {
    pub fn new(
        provider: Arc<dyn SandboxProvider>,
        model: Option<Arc<dyn Model>>,
        experiment: Experiment,
    ) -> Self {
        Factory {
            provider,
            model,
            keep_workspace: experiment.runner.keep_workspace,
            experiment,
            gateway: tokio::sync::OnceCell::new(),
            agent_paths_digest: std::sync::OnceLock::new(),
        }
    }
}

#[async_trait]
impl ExecutorFactory for Factory {
    async fn after_abort(&self) {
        let _ = self.provider.sweep_own().await;
    }

    async fn executor(&self, harness: &Harness, agent: AgentKind) -> Result<Arc<dyn Executor>> {
        if agent == AgentKind::Harness && self.model.is_none() {
            return Err(Error::Internal(
                "the harness agent needs a connected model".into(),
            ));
        }
        let gateway = match (&self.model, agent, harness.manifest.protocol) {
            (Some(model), AgentKind::Harness, crate::harness::Protocol::Command) => {
                let e = &self.experiment;
                let gw = self
                    .gateway
                    .get_or_try_init(|| async {
                        let pin = Pin::new(model.as_ref(), &e.decoding, &e.prices);
                        Gateway::start(model.clone(), pin).await.map(Arc::new)
                    })
                    .await?;
                Some(gw.clone())
            }
            _ => None,
        };
        let agent_install = match agent {
            AgentKind::Harness => {
                crate::agent::command::install_spec(harness, &self.experiment.runner.agent_paths)
            }
            _ => None,
        };
        Ok(Arc::new(TrialExecutor {
            provider: self.provider.clone(),
            agent_install,
            gateway,
            model: self.model.clone(),
            harness: Arc::new(harness.clone()),
            experiment: self.experiment.clone(),
            agent,
            keep_workspace: self.keep_workspace,
        }))
    }

    async fn regrade(
        &self,
        task: &crate::task::Task,
        workspace: &[u8],
    ) -> Result<crate::task::VerifierOutcome> {
        let opts = CreateOptions {
            trial_id: Some(crate::sandbox::new_trial_id()),
            ..CreateOptions::default()
        };
        let mut sb = self.provider.create_with(task, &opts).await?;
        let out = async {
            super::keep::restore(sb.as_ref(), workspace).await?;
            verify_trial(
                self.provider.as_ref(),
                sb.as_ref(),
                task,
                &VerifyOptions::default(),
            )
            .await
        }
        .await;
        let destroyed = sb.destroy().await;
        let out = out?;
        destroyed?;
        Ok(out)
    }

    async fn environment_id(&self, task: &crate::task::Task) -> Result<Option<String>> {
        Ok(self.with_agent_paths(self.provider.environment_id(task).await?))
    }

    async fn prepare(
        &self,
        task: &crate::task::Task,
        notes: &mut Notes<'_>,
    ) -> Result<Option<String>> {
        Ok(self.with_agent_paths(self.provider.prepare(task, notes).await?))
    }
}

impl Factory {
    /// The sandbox's environment and the agent's own files (`runner.agent_paths`, shown to
    /// command harnesses): an edit to an agent file is a new environment, so cached trials
    /// made with the old file do not hit.
    fn with_agent_paths(&self, env: Option<String>) -> Option<String> {
        let paths = &self.experiment.runner.agent_paths;
        if paths.is_empty() {
            return env;
        }
        let digest = self
            .agent_paths_digest
            .get_or_init(|| crate::support::digest::stat_tree(paths));
        Some(match env {
            Some(e) if !e.is_empty() => format!("{e}\0agent_paths {digest}"),
            _ => format!("agent_paths {digest}"),
        })
    }
}

struct TrialExecutor {
    provider: Arc<dyn SandboxProvider>,
    /// A command harness's `agent.install`, for runners that install once per image.
    agent_install: Option<crate::sandbox::AgentInstall>,
    gateway: Option<Arc<Gateway>>,
    model: Option<Arc<dyn Model>>,
    harness: Arc<Harness>,
    experiment: Experiment,
    agent: AgentKind,
    keep_workspace: bool,
}

/// What one attempt produced before classification.
struct Attempt {
    /// The engine the sandbox ran on (a pool of hosts).
    host: Option<String>,
    verifier: Option<VerifierOutcome>,
    /// The final workspace, kept for `regrade`.
    workspace: Option<Vec<u8>>,
    infra: Option<(InfraClass, String)>,
    episode: Option<Episode>,
    durations: Durations,
    cancelled: bool,
}

#[async_trait]
impl Executor for TrialExecutor {
    async fn execute(&self, p: &PlannedTrial, cancel: CancellationToken) -> Executed {
        let started = Instant::now();
        let mut attempt = self.attempt(p, &cancel).await;
        let mut retries = 0;
        while attempt.infra.is_some()
            && !attempt.cancelled
            && retries < self.experiment.infra_retries
        {
            retries += 1;
            attempt = self.attempt(p, &cancel).await;
        }
        let mut durations = attempt.durations;
        durations.total_ms = started.elapsed().as_millis() as u64;
        let (outcome, infra, error) = match (&attempt.infra, &attempt.verifier) {
            (Some((kind, msg)), _) => (Outcome::InfraError, Some(*kind), Some(msg.clone())),
            (None, Some(v)) if v.passed => (Outcome::Pass, None, None),
            _ => (Outcome::Fail, None, None),
        };
        let verifier = attempt.verifier.unwrap_or_default();
        let workspace = attempt.workspace.filter(|_| outcome != Outcome::InfraError);
        let trace_path = format!("traces/{}/{}.json", p.task.id, p.trial);
        let (requests, answered) = attempt.episode.as_ref().map_or((0, 0), |ep| {
            ep.trace
                .events
                .iter()
                .fold((0u32, 0u32), |(q, a), ev| match ev {
                    crate::agent::trace::Event::ModelRequest(_) => (q + 1, a),
                    crate::agent::trace::Event::ModelResponse(_) => (q, a + 1),
                    _ => (q, a),
                })
        });
        let (trace, ending, usage, cost, turns, tool_calls) = match &attempt.episode {
            Some(ep) => {
                let bytes = serde_json::to_vec(&ep.trace).expect("trace serializes");
                (
                    Some(bytes),
                    ep.ending.reason().to_string(),
                    ep.usage,
                    ep.cost_usd,
                    ep.trace.totals.turns,
                    ep.trace.totals.tool_calls,
                )
            }
            None => (
                None,
                self.agent.as_str().to_string(),
                Default::default(),
                0.0,
                0,
                0,
            ),
        };
        let ending = if attempt.cancelled {
            "cancelled".to_string()
        } else {
            ending
        };
        let result = TrialResult {
            format: <TrialResult as crate::support::format::Versioned>::FORMAT,
            task: p.task.id.clone(),
            split: p.split.to_string(),
            trial: p.trial,
            seed: p.seed,
            outcome,
            infra,
            error,
            reward: verifier.reward,
            verifier,
            usage,
            cost_usd: cost,
            durations,
            ending,
            turns,
            tool_calls,
            trace_bytes: trace.as_ref().map(|t| t.len() as u64).unwrap_or(0),
            trace: trace.as_ref().map(|_| trace_path),
            workspace: workspace
                .as_ref()
                .map(|_| super::keep::path(&p.task.id, p.trial)),
            workspace_bytes: workspace.as_ref().map_or(0, |w| w.len() as u64),
            cache_key: if outcome == Outcome::InfraError {
                None
            } else {
                p.cache_key.clone()
            },
            cached_from: None,
            host: attempt.host.clone(),
        };
        Executed {
            end: if attempt.cancelled {
                TrialEnd::Cancelled
            } else {
                TrialEnd::Finished
            },
            result,
            trace,
            workspace,
            requests,
            unanswered: requests.saturating_sub(answered),
        }
    }
}

impl TrialExecutor {
    async fn attempt(&self, p: &PlannedTrial, cancel: &CancellationToken) -> Attempt {
        let mut d = Durations::default();
        let t0 = Instant::now();
        let opts = CreateOptions {
            trial_id: Some(crate::sandbox::new_trial_id()),
            agent_install: self.agent_install.clone(),
        };
        let mut sandbox = match self.provider.create_with(&p.task, &opts).await {
            Ok(s) => s,
            Err(e) => {
                return Attempt {
                    host: None,
                    workspace: None,
                    verifier: None,
                    infra: Some((InfraClass::Sandbox, e.to_string())),
                    episode: None,
                    durations: d,
                    cancelled: false,
                };
            }
        };
        d.setup_ms = t0.elapsed().as_millis() as u64;
        let host = sandbox.placement().map(str::to_string);
        let out = self
            .play_and_verify(p, sandbox.as_ref(), cancel, &mut d)
            .await;
        // Teardown always runs; a failed teardown is an infrastructure error of this trial.
        let destroyed = sandbox.destroy().await;
        let mut out = out;
        if let Err(e) = destroyed
            && out.infra.is_none()
        {
            out.infra = Some((InfraClass::Sandbox, format!("teardown failed: {e}")));
        }
        out.durations = d;
        out.host = host;
        out
    }

    async fn play_and_verify(
        &self,
        p: &PlannedTrial,
        sb: &dyn Sandbox,
        cancel: &CancellationToken,
        d: &mut Durations,
    ) -> Attempt {
        let t1 = Instant::now();
        let mut episode = None;
        let mut cancelled = false;
        match self.agent {
            AgentKind::Harness => {
                let model = self.model.as_ref().expect("checked by the factory");
                let (tx, rx) = tokio::sync::watch::channel(false);
                let token = cancel.clone();
                let bridge = tokio::spawn(async move {
                    token.cancelled().await;
                    let _ = tx.send(true);
                });
                let e = &self.experiment;
                let spec = EpisodeSpec {
                    task_id: &p.task.id,
                    trial: p.trial,
                    seed: p.seed,
                    instruction: &p.task.instruction,
                    harness: &self.harness,
                    budgets: &e.budgets,
                    decoding: &e.decoding,
                    prices: &e.prices,
                    cancel: Some(rx),
                };
                let res = match &self.gateway {
                    Some(gw) => {
                        crate::agent::command::run_command_episode(
                            &spec,
                            sb,
                            gw,
                            model.as_ref(),
                            &e.runner.agent_paths,
                        )
                        .await
                    }
                    None => crate::agent::run_episode(&spec, sb, model.as_ref()).await,
                };
                bridge.abort();
                match res {
                    Ok(ep) => {
                        d.model_ms = ep
                            .trace
                            .events
                            .iter()
                            .filter_map(|ev| match ev {
                                crate::agent::trace::Event::ModelResponse(r) => Some(r.latency_ms),
                                _ => None,
                            })
                            .sum();
                        d.sandbox_ms += ep.trace.tool_calls().map(|t| t.duration_ms).sum::<u64>();
                        cancelled = matches!(ep.ending, crate::agent::trace::Ending::Cancelled);
                        let infra = match &ep.ending {
                            crate::agent::trace::Ending::ModelError { message } => {
                                Some((InfraClass::Model, message.clone()))
                            }
                            crate::agent::trace::Ending::SandboxError { message } => {
                                Some((InfraClass::Sandbox, message.clone()))
                            }
                            _ => None,
                        };
                        if infra.is_some() || cancelled {
                            d.agent_ms = t1.elapsed().as_millis() as u64;
                            return Attempt {
                                host: None,
                                workspace: None,
                                verifier: None,
                                infra,
                                episode: Some(ep),
                                durations: *d,
                                cancelled,
                            };
                        }
                        episode = Some(ep);
                    }
                    Err(e) => {
                        return Attempt {
                            host: None,
                            workspace: None,
                            verifier: None,
                            infra: Some((classify(&e), e.to_string())),
                            episode: None,
                            durations: *d,
                            cancelled: false,
                        };
                    }
                }
            }
            AgentKind::Oracle | AgentKind::Nop => {
                let b = if self.agent == AgentKind::Oracle {
                    BuiltinAgent::Oracle
                } else {
                    BuiltinAgent::Nop
                };
                if let Err(e) = b.run(sb, &p.task).await {
                    return Attempt {
                        host: None,
                        workspace: None,
                        verifier: None,
                        infra: Some((classify(&e), e.to_string())),
                        episode: None,
                        durations: *d,
                        cancelled: false,
                    };
                }
            }
        }
        d.agent_ms = t1.elapsed().as_millis() as u64;
        // The state the verifier is about to judge, for `regrade`. Not keeping it costs the
        // trial nothing: regrade reports the trial as having no kept state.
        let workspace = if self.keep_workspace {
            match super::keep::capture(sb).await {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!("trial {}#{}: {e}", p.task.id, p.trial);
                    None
                }
            }
        } else {
            None
        };
        let t2 = Instant::now();
        let v = verify_trial(
            self.provider.as_ref(),
            sb,
            &p.task,
            &VerifyOptions::default(),
        )
        .await;
        d.verify_ms = t2.elapsed().as_millis() as u64;
        d.sandbox_ms += d.verify_ms + d.setup_ms;
        match v {
            Ok(v) => Attempt {
                host: None,
                workspace,
                verifier: Some(v),
                infra: None,
                episode,
                durations: *d,
                cancelled,
            },
            Err(e) => Attempt {
                host: None,
                workspace: None,
                verifier: None,
                infra: Some((classify(&e), e.to_string())),
                episode,
                durations: *d,
                cancelled,
            },
        }
    }
}

fn classify(e: &Error) -> InfraClass {
    match InfraClass::of(e) {
        Some(InfraClass::Verifier) => InfraClass::Verifier,
        _ => InfraClass::Sandbox,
    }
}
