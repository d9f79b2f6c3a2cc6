//! Anthropic Messages API with tool use: the system prompt is top-level, tool calls are
//! `tool_use` blocks and their results `tool_result` blocks in a user turn.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::retry::{RetryPolicy, clip, post_json};
use super::{ChatRequest, ChatResponse, Model, ModelError, Role, ToolCall, Usage};
use crate::error::Result;

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com/v1";
pub const API_VERSION: &str = "2023-06-01";

pub struct AnthropicModel {
    client: reqwest::Client,
    url: String,
    model: String,
    /// Held only to build the `x-api-key` header; never logged or serialized.
    api_key: Option<String>,
    policy: RetryPolicy,
}

impl AnthropicModel {
    /// `base_url` is the API root (`.../v1`); requests go to `{base_url}/messages`.
    pub fn new(
        base_url: &str,
        model: &str,
        api_key: Option<String>,
        policy: RetryPolicy,
    ) -> Result<Self> {
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| crate::InfraClass::Model.error(format!("build the HTTP client: {e}")))?;
        Ok(AnthropicModel {
            client,
            url: format!("{}/messages", base_url.trim_end_matches('/')),
            model: model.to_string(),
            api_key,
            policy,
        })
    }
}

/// The JSON body of a Messages request.
pub fn request_body(model: &str, req: &ChatRequest) -> Value {
    let system: Vec<&str> = req
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .filter_map(|m| m.content.as_deref())
        .collect();
    // The API wants alternating user/assistant turns; consecutive user-side messages (tool
    // results, then an injected note) are merged into one turn of several blocks.
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in &req.messages {
        let (role, blocks) = match m.role {
            Role::System => continue,
            Role::User => ("user", text_block(m.content.as_deref())),
            Role::Tool => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": m.tool_call_id.clone().unwrap_or_default(),
                    "content": m.content.clone().unwrap_or_default(),
                })],
            ),
            Role::Assistant => {
                let mut b = text_block(m.content.as_deref());
                for c in &m.tool_calls {
                    // `input` must be an object; a malformed call from history is kept as text.
                    let input = match serde_json::from_str::<Value>(&c.arguments) {
                        Ok(v @ Value::Object(_)) => v,
                        _ => json!({"_raw_arguments": c.arguments}),
                    };
                    b.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
                }
                ("assistant", b)
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(r, b)| json!({"role": r, "content": b}))
        .collect();
    let mut body = json!({
        "model": model,
        "max_tokens": req.decoding.max_tokens,
        "temperature": req.decoding.temperature,
        "messages": messages,
    });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
            .collect();
    }
    body
}

fn text_block(text: Option<&str>) -> Vec<Value> {
    match text {
        Some(t) if !t.is_empty() => vec![json!({"type": "text", "text": t})],
        _ => Vec::new(),
    }
}

/// Read a Messages answer: text blocks are joined, `tool_use` blocks become tool calls.
pub fn parse_response(v: &Value) -> Result<ChatResponse, ModelError> {
    let blocks = v.get("content").and_then(Value::as_array).ok_or_else(|| {
        ModelError::Protocol(format!(
            "no `content` array in {}",
            clip(&v.to_string(), 300)
        ))
    })?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default())
            }
            Some("tool_use") => {
                let arguments = match b.get("input") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => "{}".to_string(),
                };
                tool_calls.push(ToolCall {
                    id: b
                        .get("id")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("toolu_{i}")),
                    name: b
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    arguments,
                });
            }
            // Thinking and other blocks are not part of the conversation we keep.
            _ => {}
        }
    }
    let n = |k: &str| {
        v.get("usage")
            .and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let cached = n("cache_read_input_tokens");
    let usage = Usage {
        // Anthropic counts cached reads apart from input_tokens; ours includes them.
        prompt_tokens: n("input_tokens") + cached + n("cache_creation_input_tokens"),
        completion_tokens: n("output_tokens"),
        cached_tokens: cached,
    };
    Ok(ChatResponse {
        content: (!text.is_empty()).then_some(text),
        tool_calls,
        usage,
        finish_reason: v
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(str::to_string),
        waited_ms: 0,
    })
}

#[async_trait]
impl Model for AnthropicModel {
    fn name(&self) -> String {
        format!("anthropic/{}", self.model)
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let body = request_body(&self.model, req);
        let mut headers = vec![("anthropic-version", API_VERSION.to_string())];
        if let Some(key) = &self.api_key {
            headers.push(("x-api-key", key.clone()));
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
