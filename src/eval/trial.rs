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
}
