//! **A simulation, not a language model.** The `sim` provider plays scripted solutions of a
//! suite's tasks, spoiled by quirks that a harness can remove (`docs/sim-scenarios.md`). It is
//! served as an OpenAI-compatible Chat Completions endpoint on loopback, so everything that uses
//! it goes through the real `openai` client. Every response's `model` says `sim/<scenario>`.

mod engine;
mod scenario;

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub use scenario::{Action, Defaults, Draws, Neutraliser, Quirk, Scenario, SimEvent, TaskScript};

use crate::error::Result;
use crate::task::Suite;

/// A running sim server. Dropping it stops the server.
pub struct SimServer {
    /// `http://127.0.0.1:PORT/v1`, for the openai client.
    pub base_url: String,
    /// `sim/<scenario name>`.
    pub model_name: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl SimServer {
    /// Parse `scenario_yaml` and serve it for `suite` on 127.0.0.1 (a free port).
    pub async fn start(scenario_yaml: &str, suite: &Suite) -> Result<SimServer> {
        let scenario = Scenario::parse(scenario_yaml, Path::new("scenario"))?;
        Self::start_with(scenario, suite).await
    }

    pub async fn start_with(scenario: Scenario, suite: &Suite) -> Result<SimServer> {
        let engine = Arc::new(engine::Engine::new(scenario, suite));
        let model_name = engine.model_name();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| {
                crate::InfraClass::Model.error(format!("start the sim server on 127.0.0.1: {e}"))
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| crate::InfraClass::Model.error(format!("sim server address: {e}")))?;
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/chat/completions", post(chat))
            .with_state(engine);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = rx.await;
            });
            if let Err(e) = served.await {
                tracing::warn!(error = %e, "the sim server stopped");
            }
        });
        Ok(SimServer {
            base_url: format!("http://{addr}/v1"),
            model_name,
            shutdown: Some(tx),
        })
    }

    /// Stop serving (also done on drop).
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn chat(State(engine): State<Arc<engine::Engine>>, body: Bytes) -> Response {
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body is not JSON: {e}"),
            );
        }
    };
    let reply = match engine.reply(&req) {
        Ok(r) => r,
        Err(msg) => return error(StatusCode::BAD_REQUEST, &msg),
    };
    let n = req
        .get("messages")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
                .count()
        })
        .unwrap_or(0)
        + 1;
    let mut message = json!({"role": "assistant", "content": reply.content});
    let mut completion_chars = reply.content.len();
    let finish = match &reply.tool_call {
        Some((name, args)) => {
            let arguments = args.to_string();
            completion_chars += arguments.len();
            message["tool_calls"] = json!([{
                "id": format!("call_{n}"), "type": "function",
                "function": {"name": name, "arguments": arguments}}]);
            "tool_calls"
        }
        None => "stop",
    };
    // Token counts are a deterministic stand-in (4 characters a token) so budgets and costs
    // behave like they would with a real model.
    let prompt_tokens = (req
        .get("messages")
        .map(|m| m.to_string().len())
        .unwrap_or(0)
        / 4
        + 1) as u64;
    let completion_tokens = (completion_chars / 4 + 1) as u64;
    axum::Json(json!({
        "id": format!("simcmpl-{n}"),
        "object": "chat.completion",
        "created": 0,
        "model": engine.model_name(),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }))
    .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"message": message, "type": "invalid_request_error"}})),
    )
        .into_response()
}
