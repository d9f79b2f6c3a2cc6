//! The two wire formats the gateway speaks, OpenAI Chat Completions and Anthropic Messages:
//! requests into the [`Model`](crate::model::Model) trait's types, answers (whole or as SSE
//! events) back out.

use serde_json::{Value, json};

use crate::model::{ChatResponse, Message, Role, ToolCall, ToolSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Anthropic,
}

/// A request as the gateway needs it.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub model: String,
    pub temperature: Option<f64>,
    /// Nucleus sampling; the experiment samples the whole distribution (1), so any other
    /// value is another decoding and is refused like another temperature.
    pub top_p: Option<f64>,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    /// Ids of tool results the client marked as errors (Anthropic `is_error`).
    pub tool_errors: Vec<String>,
}

/// Text of a content value: a string, or the text parts of a list of blocks.
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<String> = parts
                .iter()
                .filter_map(|p| match p {
                    Value::String(s) => Some(s.clone()),
                    _ => match p.get("type").and_then(Value::as_str) {
                        Some("text") | None => {
                            p.get("text").and_then(Value::as_str).map(String::from)
                        }
                        Some("tool_result") => p.get("content").and_then(text_of),
                        Some(other) => Some(format!("[{other}]")),
                    },
                })
                .collect();
            Some(texts.join("\n"))
        }
        other => Some(other.to_string()),
    }
}

fn str_field(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn common(v: &Value) -> Result<Parsed, String> {
    if !v.is_object() {
        return Err("the request body must be a JSON object".into());
    }
    Ok(Parsed {
        model: str_field(v, "model"),
        temperature: v.get("temperature").and_then(Value::as_f64),
        top_p: v.get("top_p").and_then(Value::as_f64),
        stream: v.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: v
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        ..Parsed::default()
    })
}

/// An OpenAI Chat Completions request body.
pub fn openai_request(v: &Value) -> Result<Parsed, String> {
    let mut p = common(v)?;
    let msgs = v
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("the request has no `messages` list")?;
    for m in msgs {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("system") | Some("developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("tool") | Some("function") => Role::Tool,
            other => return Err(format!("unknown message role {other:?}")),
        };
        let tool_calls = m
            .get("tool_calls")
            .and_then(Value::as_array)
            .map(|calls| {
                calls
                    .iter()
                    .map(|c| ToolCall {
                        id: str_field(c, "id"),
                        name: c
                            .pointer("/function/name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        arguments: match c.pointer("/function/arguments") {
                            Some(Value::String(s)) => s.clone(),
                            Some(other) => other.to_string(),
                            None => "{}".into(),
                        },
                    })
                    .collect()
            })
            .unwrap_or_default();
        p.messages.push(Message {
            role,
            content: m.get("content").and_then(text_of),
            tool_calls,
            tool_call_id: m
                .get("tool_call_id")
                .and_then(Value::as_str)
                .map(String::from),
        });
    }
    for t in v
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = t.get("function").unwrap_or(t);
        p.tools.push(ToolSpec {
            name: str_field(f, "name"),
            description: str_field(f, "description"),
            parameters: f.get("parameters").cloned().unwrap_or_else(|| json!({})),
        });
    }
    Ok(p)
}

/// An Anthropic Messages request body.
pub fn anthropic_request(v: &Value) -> Result<Parsed, String> {
    let mut p = common(v)?;
    if let Some(s) = v.get("system").and_then(text_of) {
        p.messages.push(Message::text(Role::System, s));
    }
    let msgs = v
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("the request has no `messages` list")?;
    for m in msgs {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            other => return Err(format!("unknown message role {other:?}")),
        };
        let content = m.get("content").cloned().unwrap_or(Value::Null);
        let Value::Array(blocks) = content else {
            p.messages.push(Message {
                role,
                content: text_of(&content),
                tool_calls: Vec::new(),
                tool_call_id: None,
            });
            continue;
        };
        let mut texts = Vec::new();
        let mut calls = Vec::new();
        for b in &blocks {
            match b.get("type").and_then(Value::as_str) {
                Some("tool_use") => calls.push(ToolCall {
                    id: str_field(b, "id"),
                    name: str_field(b, "name"),
                    arguments: b
                        .get("input")
                        .cloned()
                        .unwrap_or_else(|| json!({}))
                        .to_string(),
                }),
                Some("tool_result") => {
                    let id = str_field(b, "tool_use_id");
                    if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                        p.tool_errors.push(id.clone());
                    }
                    p.messages.push(Message {
                        role: Role::Tool,
                        content: b.get("content").and_then(text_of).or(Some(String::new())),
                        tool_calls: Vec::new(),
                        tool_call_id: Some(id),
                    });
                }
                _ => {
                    if let Some(t) = text_of(&Value::Array(vec![b.clone()])) {
                        texts.push(t);
                    }
                }
            }
        }
        // An assistant turn is kept even when empty: the gateway counts the messages a client
        // repeats to find what is new.
        if !texts.is_empty() || !calls.is_empty() || role == Role::Assistant {
            p.messages.push(Message {
                role,
                content: (!texts.is_empty()).then(|| texts.join("\n")),
                tool_calls: calls,
                tool_call_id: None,
            });
        }
    }
    for t in v
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        p.tools.push(ToolSpec {
            name: str_field(t, "name"),
            description: str_field(t, "description"),
            parameters: t.get("input_schema").cloned().unwrap_or_else(|| json!({})),
        });
    }
    Ok(p)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn openai_finish(r: &ChatResponse) -> &str {
    if !r.tool_calls.is_empty() {
        return "tool_calls";
    }
    match r.finish_reason.as_deref() {
        Some("length") | Some("max_tokens") => "length",
        _ => "stop",
    }
}

fn openai_usage(r: &ChatResponse) -> Value {
    let u = r.usage;
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

fn openai_calls(r: &ChatResponse) -> Vec<Value> {
    r.tool_calls
        .iter()
        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
        .collect()
}

/// The whole OpenAI answer.
pub fn openai_response(id: &str, model: &str, r: &ChatResponse) -> Value {
    let mut message = json!({"role": "assistant", "content": r.content});
    if !r.tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(openai_calls(r));
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": openai_finish(r), "logprobs": null}],
        "usage": openai_usage(r),
    })
}

/// The OpenAI answer as the `data:` payloads of a stream, `[DONE]` last.
pub fn openai_stream(id: &str, model: &str, r: &ChatResponse, include_usage: bool) -> Vec<String> {
    let created = now_secs();
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
        .to_string()
    };
    let mut out = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    if let Some(c) = r.content.as_deref().filter(|c| !c.is_empty()) {
        out.push(chunk(json!({"content": c}), Value::Null));
    }
    for (i, c) in r.tool_calls.iter().enumerate() {
        out.push(chunk(
            json!({"tool_calls": [{"index": i, "id": c.id, "type": "function",
                   "function": {"name": c.name, "arguments": ""}}]}),
            Value::Null,
        ));
        out.push(chunk(
            json!({"tool_calls": [{"index": i, "function": {"arguments": c.arguments}}]}),
            Value::Null,
        ));
    }
    out.push(chunk(json!({}), json!(openai_finish(r))));
    if include_usage {
        out.push(
            json!({"id": id, "object": "chat.completion.chunk", "created": created,
                   "model": model, "choices": [], "usage": openai_usage(r)})
            .to_string(),
        );
    }
    out.push("[DONE]".into());
    out
}

fn anthropic_stop(r: &ChatResponse) -> &str {
    if !r.tool_calls.is_empty() {
        return "tool_use";
    }
    match r.finish_reason.as_deref() {
        Some("length") | Some("max_tokens") => "max_tokens",
        _ => "end_turn",
    }
}

fn anthropic_blocks(r: &ChatResponse) -> Vec<Value> {
    let mut blocks = Vec::new();
    if let Some(c) = r.content.as_deref().filter(|c| !c.is_empty()) {
        blocks.push(json!({"type": "text", "text": c}));
    }
    for c in &r.tool_calls {
        let input: Value = serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
        blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
    }
    blocks
}

/// The whole Anthropic answer.
pub fn anthropic_response(id: &str, model: &str, r: &ChatResponse) -> Value {
    json!({
        "id": id, "type": "message", "role": "assistant", "model": model,
        "content": anthropic_blocks(r),
        "stop_reason": anthropic_stop(r), "stop_sequence": null,
        "usage": {"input_tokens": r.usage.prompt_tokens, "output_tokens": r.usage.completion_tokens,
                  "cache_read_input_tokens": r.usage.cached_tokens},
    })
}

/// The Anthropic answer as `(event, data)` pairs of a stream.
pub fn anthropic_stream(id: &str, model: &str, r: &ChatResponse) -> Vec<(&'static str, String)> {
    let mut out = vec![(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": r.usage.prompt_tokens, "output_tokens": 0}}})
        .to_string(),
    )];
    for (i, b) in anthropic_blocks(r).into_iter().enumerate() {
        let (start, delta) = if b["type"] == "text" {
            (
                json!({"type": "text", "text": ""}),
                json!({"type": "text_delta", "text": b["text"]}),
            )
        } else {
            (
                json!({"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}),
                json!({"type": "input_json_delta", "partial_json": b["input"].to_string()}),
            )
        };
        out.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": i, "content_block": start}).to_string(),
        ));
        out.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": i, "delta": delta}).to_string(),
        ));
        out.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}).to_string(),
        ));
    }
    out.push((
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": anthropic_stop(r), "stop_sequence": null},
               "usage": {"output_tokens": r.usage.completion_tokens}})
        .to_string(),
    ));
    out.push(("message_stop", json!({"type": "message_stop"}).to_string()));
    out
}

/// An error body in the API's own shape, so SDKs raise their usual exceptions.
pub fn error_body(api: Api, kind: &str, message: &str) -> Value {
    match api {
        Api::OpenAi => json!({"error": {"message": message, "type": kind, "code": kind}}),
        Api::Anthropic => {
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
    }
}
