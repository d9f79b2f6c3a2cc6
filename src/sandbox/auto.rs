//! `runner.kind: auto`: Docker for the tasks that need an image, the local sandbox for the rest.
//!
//! The choice depends on the task alone (does its environment have steps only an image gives,
//! see [`crate::task::local_gaps`]), never on the machine: a task that needs an image on a
//! machine without a Docker engine is an infrastructure error that says so, not a local trial
//! that would look broken. Results therefore do not depend on where they were made.

use std::sync::Arc;

use async_trait::async_trait;

use super::{CreateOptions, InfraClass, Notes, Sandbox, SandboxProvider};
use crate::error::Result;
use crate::task::{Task, local_gaps, local_remedy};

pub struct AutoProvider {
    local: Arc<dyn SandboxProvider>,
    /// `None` when no Docker client could be made (the error, for the message).
    docker: std::result::Result<Arc<dyn SandboxProvider>, String>,
}

impl AutoProvider {
    pub fn new(
        local: Arc<dyn SandboxProvider>,
        docker: std::result::Result<Arc<dyn SandboxProvider>, String>,
    ) -> Self {
        AutoProvider { local, docker }
    }
}

#[async_trait]
impl SandboxProvider for AutoProvider {
    fn name(&self) -> &str {
        "auto (docker for tasks that need an image, local otherwise)"
    }

    async fn create(&self, task: &Task) -> Result<Box<dyn Sandbox>> {
        self.create_with(task, &CreateOptions::default()).await
    }

    async fn create_with(&self, task: &Task, opts: &CreateOptions) -> Result<Box<dyn Sandbox>> {
        let gaps = local_gaps(task);
        let Some(first) = gaps.first() else {
            return self.local.create_with(task, opts).await;
        };
        let needs = format!(
            "task `{}` needs an image ({first}{})",
            task.id,
            if gaps.len() > 1 { ", ..." } else { "" }
        );
        let docker = self.docker.as_ref().map_err(|e| {
            InfraClass::Sandbox.error_hint(
                format!("{needs}, and no Docker client could be made: {e}"),
                "start a Docker engine (or set DOCKER_HOST), or set runner.kind: local to run \
                 every task without an image",
            )
        })?;
        docker.create_with(task, opts).await
    }

    async fn environment_id(&self, task: &Task) -> Result<Option<String>> {
        if local_gaps(task).is_empty() {
            return self.local.environment_id(task).await;
        }
        match &self.docker {
            Ok(docker) => docker.environment_id(task).await,
            // The trial reports the missing engine; its result is not cached.
            Err(e) => Err(InfraClass::Sandbox.error(e)),
        }
    }

    async fn prepare(&self, task: &Task, notes: &mut Notes<'_>) -> Result<Option<String>> {
        if local_gaps(task).is_empty() {
            return self.local.prepare(task, notes).await;
        }
        match &self.docker {
            Ok(docker) => docker.prepare(task, notes).await,
            Err(e) => Err(InfraClass::Sandbox.error(e)),
        }
    }

    fn isolation_warning(&self) -> Option<String> {
        self.local.isolation_warning()
    }

    async fn sweep(&self) -> Result<usize> {
        let mut n = self.local.sweep().await?;
        if let Ok(d) = &self.docker {
            // An engine that does not answer has nothing of ours to sweep that we could reach.
            n += d.sweep().await.unwrap_or(0);
        }
        Ok(n)
    }

    async fn sweep_own(&self) -> Result<usize> {
        let mut n = self.local.sweep_own().await?;
        if let Ok(d) = &self.docker {
            n += d.sweep_own().await.unwrap_or(0);
        }
        Ok(n)
    }
}

/// The local runner refuses a task it cannot reproduce, naming the step and the remedy.
pub(crate) fn refuse_image_steps(task: &Task) -> Result<()> {
    let gaps = local_gaps(task);
    if gaps.is_empty() {
        return Ok(());
    }
    let list = gaps
        .iter()
        .map(|g| format!("  {}/{g}", task.id))
        .collect::<Vec<_>>()
        .join("\n");
    Err(InfraClass::Sandbox.error_hint(
        format!(
            "the local runner cannot reproduce the image of task `{}`; it would skip:\n{list}",
            task.id
        ),
        local_remedy(),
    ))
}
