//! OpenAI Chat Completions (and every server that speaks it: vLLM, llama.cpp, the sim) with
//! native tool calling.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::retry::{RetryPolicy, clip, post_json};
use super::{ChatRequest, ChatResponse, Message, Model, ModelError, Role, ToolCall, Usage};
use crate::error::Result;

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

pub struct OpenAiModel {
    client: reqwest::Client,
    url: String,
    model: String,
    display_name: String,
    /// Held only to build the `Authorization` header; never logged or serialized.
    api_key: Option<String>,
    policy: RetryPolicy,
}

impl OpenAiModel {
    /// `base_url` is the API root (`.../v1`); requests go to `{base_url}/chat/completions`.
    pub fn new(
        base_url: &str,
        model: &str,
        api_key: Option<String>,
        policy: RetryPolicy,
    ) -> Result<Self> {
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| crate::InfraClass::Model.error(format!("build the HTTP client: {e}")))?;
        Ok(OpenAiModel {
            client,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            model: model.to_string(),
            display_name: format!("openai/{model}"),
            api_key,
            policy,
        })
    }

    /// The name reported in traces (the sim says `sim/<scenario>`).
    pub fn with_display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = name.into();
        self
    }

    /// The JSON body of a request; public so that tests and the sim agree on the wire format.
    pub fn request_body(&self, req: &ChatRequest) -> Value {
        request_body(&self.model, req)
    }
}

pub fn request_body(model: &str, req: &ChatRequest) -> Value {
    let messages: Vec<Value> = req.messages.iter().map(message_json).collect();
    let mut body = json!({
        "model": model,
        "messages": messages,
        "temperature": req.decoding.temperature,
        "max_tokens": req.decoding.max_tokens,
    });
    if let Some(seed) = req.seed {
        body["seed"] = json!(seed);
    }
    // Some servers reject an empty `tools` array; omit it when there are none.
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters}})
            })
            .collect();
    }
    body
}

fn message_json(m: &Message) -> Value {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut v = json!({"role": role, "content": m.content});
    if !m.tool_calls.is_empty() {
        v["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect();
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = json!(id);
    }
    v
}

/// Read a Chat Completions answer. Tolerant of what real servers do: `content: null`,
/// `arguments` as a JSON object instead of a string, a missing `usage`.
pub fn parse_response(v: &Value) -> Result<ChatResponse, ModelError> {
    let choice = v.get("choices").and_then(|c| c.get(0)).ok_or_else(|| {
        ModelError::Protocol(format!("no `choices[0]` in {}", clip(&v.to_string(), 300)))
    })?;
    let msg = choice
        .get("message")
        .ok_or_else(|| ModelError::Protocol("no `choices[0].message`".into()))?;
    let content = match msg.get("content") {
        Some(Value::String(s)) => Some(s.clone()),
        // Some servers send content parts; keep their text.
        Some(Value::Array(parts)) => {
            let text: String = parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            Some(text)
        }
        _ => None,
    };
    let mut tool_calls = Vec::new();
    if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
        for (i, c) in calls.iter().enumerate() {
            let f = c.get("function").unwrap_or(&Value::Null);
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let arguments = match f.get("arguments") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => "{}".to_string(),
                Some(other) => other.to_string(),
            };
            let id = c
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("call_{i}"));
            tool_calls.push(ToolCall {
                id,
                name,
                arguments,
            });
        }
    }
    let usage = v.get("usage").map(parse_usage).unwrap_or_default();
    let finish_reason = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(ChatResponse {
        content,
        tool_calls,
        usage,
        finish_reason,
        waited_ms: 0,
    })
}

fn parse_usage(u: &Value) -> Usage {
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    Usage {
        prompt_tokens: n(u.get("prompt_tokens")),
        completion_tokens: n(u.get("completion_tokens")),
        cached_tokens: n(u
            .get("prompt_tokens_details")
            .and_then(|d| d.get("cached_tokens"))),
    }
}

#[async_trait]
impl Model for OpenAiModel {
    fn name(&self) -> String {
        self.display_name.clone()
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let body = self.request_body(req);
        let mut headers = Vec::new();
        if let Some(key) = &self.api_key {
            headers.push(("authorization", format!("Bearer {key}")));
        }
        let (v, waited) = post_json(&self.client, &self.url, &headers, &body, &self.policy).await?;
        let mut r = parse_response(&v)?;
        r.waited_ms += waited.as_millis() as u64;
        Ok(r)
    }

    fn secrets(&self) -> Vec<String> {
        self.api_key.iter().cloned().collect()
    }
}
