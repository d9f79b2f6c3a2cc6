//! Building what runs need once per command: the suite, the fingerprint, the sandbox provider
//! and the connected model (for `sim`, the in-process server lives as long as the context).

use std::sync::Arc;

use tokio::sync::watch;

use super::AgentKind;
use super::run::EvalContext;
use super::trial::Factory;
use crate::error::Result;
use crate::experiment::RunnerKind;
use crate::model::{ConnectContext, Connected};
use crate::sandbox::{Bwrap, ProviderOptions};
use crate::workspace::Workspace;

/// Command-line choices that override the committed experiment for one command.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `run --runner`: where trials run. The runner kind is part of the experiment, so the
    /// fingerprint (and with it the cache and every comparison) sees the one actually used.
    pub runner: Option<RunnerKind>,
    pub bwrap: Bwrap,
    /// Do not connect the model (oracle/nop runs).
    pub no_model: bool,
    /// Interrupt requests (1: stop scheduling, 2: abort), handed to every run of the context.
    pub interrupt: Option<watch::Receiver<u8>>,
    /// `--image-map` additions to `runner.image_map`: like `runner`, they change what a trial
    /// runs on, so they enter the fingerprint.
    pub image_map: std::collections::BTreeMap<String, String>,
    /// Keep every trial's final workspace (`run --keep-workspace`), whatever
    /// `runner.keep_workspace` says.
    pub keep_workspace: bool,
    /// Read the tasks from this suite instead of the experiment's (`regrade --suite`): its task
    /// checksums enter the fingerprint.
    pub suite: Option<std::path::PathBuf>,
    /// A seed namespace for one command (`revalidate`): the per-trial seeds derive from it and,
    /// being part of the experiment, it enters the fingerprint, so no trial cached under the
    /// committed seed is reused.
    pub seed: Option<u64>,
}

/// An evaluation context plus what must stay alive while it is used.
pub struct Context {
    pub eval: EvalContext,
    _model: Option<Connected>,
}

impl std::ops::Deref for Context {
    type Target = EvalContext;
    fn deref(&self) -> &EvalContext {
        &self.eval
    }
}

impl Context {
    /// The connected model (absent for oracle/nop contexts).
    pub fn model(&self) -> Option<&dyn crate::model::Model> {
        self._model.as_ref().map(|c| c.model.as_ref())
    }
}

/// Open the context for main's experiment.
pub async fn open_context(ws: &Workspace, o: &Overrides) -> Result<Context> {
    let fixed = ws.fixed_on_main()?;
    let suite_dir = match &o.suite {
        Some(dir) => dir.clone(),
        None => ws.suite_dir(&fixed.experiment)?,
    };
    let suite = crate::task::load_suite(&suite_dir)?;
    // The committed experiment stays what commits are compared against; the fingerprint, the
    // provider and the run record see the runner as overridden on the command line, before the
    // fingerprint is taken (trials run elsewhere are other results).
    let mut effective = fixed.clone();
    let runner = &mut effective.experiment.runner;
    runner.image_map.extend(o.image_map.clone());
    if let Some(k) = o.runner {
        runner.kind = k;
    }
    if let Some(seed) = o.seed {
        effective.experiment.seed = seed;
    }
    let fingerprint = ws.fingerprint_of(&effective, &suite);
    let runner = effective.experiment.runner.with_hosts_under(&ws.root());
    let provider = crate::sandbox::provider(
        &runner,
        &ProviderOptions {
            bwrap: o.bwrap,
            hidden: vec![suite_dir.clone(), ws.root(), ws.git_dir()],
            ..Default::default()
        },
    )?;
    // What sandboxes of killed processes left (temp dirs, containers) goes before new ones
    // come. Best effort: an unreachable engine is reported by the first trial.
    let _ = provider.sweep().await;
    let mut warnings = Vec::new();
    if let Some(w) = provider.isolation_warning() {
        warnings.push(w);
    }
    if let Some(w) = sim_on_foreign_tasks(&fixed.experiment, &suite) {
        warnings.push(w);
    }
    let connected = if o.no_model {
        None
    } else {
        let root = ws.root();
        Some(
            crate::model::connect(
                &fixed.experiment.model,
                &ConnectContext {
                    replay: Some(crate::agent::replay::open),
                    ..ConnectContext::new(&root, Some(&suite))
                },
            )
            .await?,
        )
    };
    let mut factory = Factory::new(
        provider,
        connected.as_ref().map(|c| c.model.clone()),
        fixed.experiment.clone(),
    );
    factory.keep_workspace |= o.keep_workspace;
    Ok(Context {
        eval: EvalContext {
            fixed,
            suite,
            fingerprint,
            seed: effective.experiment.seed,
            runner: runner.kind,
            state_dir: ws.state_dir(),
            executors: Arc::new(factory),
            warnings,
            model: connected.as_ref().map(|c| c.model.clone()),
            interrupt: o.interrupt.clone(),
        },
        _model: connected,
    })
}

/// The simulated model scripts the bundled demo suite only; on any other task its pass rates say
/// nothing about a real model.
fn sim_on_foreign_tasks(
    experiment: &crate::experiment::Experiment,
    suite: &crate::task::Suite,
) -> Option<String> {
    if experiment.model.provider != crate::experiment::Provider::Sim {
        return None;
    }
    let demo = crate::support::assets::bundled_task_ids("demo");
    let foreign: Vec<&str> = suite
        .tasks
        .iter()
        .map(|t| t.id.as_str())
        .filter(|id| !demo.contains(id))
        .collect();
    if foreign.is_empty() {
        return None;
    }
    let shown: Vec<&str> = foreign.iter().take(3).copied().collect();
    Some(format!(
        "the model is `sim`, the SIMULATED model of the demo suite; it knows nothing of {} task(s) of this suite ({}{}), so its results say nothing about a real model — set model.provider in .harness/experiment.yaml",
        foreign.len(),
        shown.join(", "),
        if foreign.len() > shown.len() {
            ", ..."
        } else {
            ""
        }
    ))
}

/// Whether a run with this agent needs the model.
pub fn needs_model(agent: AgentKind) -> bool {
    agent == AgentKind::Harness
}
