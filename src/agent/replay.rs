//! Answers from the model responses recorded in a trace, for re-running a trial without a model.
//!
//! Stateless like the sim: the answer to a request is the recorded response number `k`, where
//! `k` is the number of assistant messages already in the request. So concurrent or repeated
//! runs of the same trial each get the recorded conversation in order.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::agent::trace::{Event, Trace};
use crate::error::Result;
use crate::model::{ChatRequest, ChatResponse, Model, ModelError, Role};

/// The replay provider's model for the trace at `path` (see [`crate::model::ConnectContext`]).
pub fn open(path: &Path) -> Result<Arc<dyn Model>> {
    Ok(Arc::new(ReplayModel::from_path(path)?))
}

pub struct ReplayModel {
    recorded_model: String,
    responses: Vec<ChatResponse>,
}

impl ReplayModel {
    pub fn from_trace(trace: &Trace) -> Self {
        let responses = trace
            .events
            .iter()
            .filter_map(|e| match e {
                Event::ModelResponse(r) => Some(ChatResponse {
                    content: r.content.clone(),
                    tool_calls: r.tool_calls.clone(),
                    usage: r.usage,
                    finish_reason: r.finish_reason.clone(),
                    waited_ms: 0,
                }),
                _ => None,
            })
            .collect();
        ReplayModel {
            recorded_model: trace.model.clone(),
            responses,
        }
    }

    pub fn from_path(path: &Path) -> Result<Self> {
        Ok(Self::from_trace(&Trace::read(path)?))
    }

    pub fn len(&self) -> usize {
        self.responses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.responses.is_empty()
    }
}

#[async_trait]
impl Model for ReplayModel {
    fn name(&self) -> String {
        format!("replay/{}", self.recorded_model)
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let k = req
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .count();
        self.responses.get(k).cloned().ok_or_else(|| {
            ModelError::Protocol(format!(
                "the recorded trace has {} responses; the conversation asks for number {}",
                self.responses.len(),
                k + 1
            ))
        })
    }
}
