//! Export a trace as an ATIF v1.7 trajectory (Harbor's `agent/trajectory.json`).
//!
//! Steps, numbered from 1: a `system` step whenever the system message changed, a `user` step
//! for each user-side message the model was sent (the task, injections, budget notices, format
//! feedback), and an `agent` step per model reply, with its tool calls and, as its
//! observation, the results of those calls.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::trace::{Event, Trace};

pub const SCHEMA_VERSION: &str = "ATIF-v1.7";

pub fn to_atif(trace: &Trace) -> Value {
    let start = chrono::DateTime::parse_from_rfc3339(&trace.started_at).ok();
    let stamp = |t_ms: u64| -> String {
        match start {
            Some(s) => (s + chrono::Duration::milliseconds(t_ms as i64))
                .to_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            None => trace.started_at.clone(),
        }
    };
    let mut steps: Vec<Value> = Vec::new();
    // tool call id -> index of the agent step that made it
    let mut owner: HashMap<String, usize> = HashMap::new();
    let push = |steps: &mut Vec<Value>, mut step: Value| {
        step["step_id"] = json!(steps.len() + 1);
        steps.push(step);
        steps.len() - 1
    };
    for e in &trace.events {
        match e {
            Event::ModelRequest(r) => {
                if let Some(system) = &r.system {
                    push(
                        &mut steps,
                        json!({"timestamp": stamp(r.t_ms), "source": "system", "message": system}),
                    );
                }
                for m in &r.messages {
                    let message = m.content.clone().unwrap_or_default();
                    push(
                        &mut steps,
                        json!({"timestamp": stamp(r.t_ms), "source": "user", "message": message}),
                    );
                }
            }
            Event::ModelResponse(r) => {
                let tool_calls: Vec<Value> = r
                    .tool_calls
                    .iter()
                    .map(|c| {
                        let arguments = match serde_json::from_str::<Value>(&c.arguments) {
                            Ok(v @ Value::Object(_)) => v,
                            _ => json!({"_raw_arguments": c.arguments}),
                        };
                        json!({"tool_call_id": c.id, "function_name": c.name, "arguments": arguments})
                    })
                    .collect();
                let mut step = json!({
                    "timestamp": stamp(r.t_ms),
                    "source": "agent",
                    "_turn": r.turn,
                    "model_name": trace.model,
                    "message": r.content.clone().unwrap_or_default(),
                    "metrics": {
                        "prompt_tokens": r.usage.prompt_tokens,
                        "completion_tokens": r.usage.completion_tokens,
                        "cached_tokens": r.usage.cached_tokens,
                    },
                });
                if !tool_calls.is_empty() {
                    step["tool_calls"] = json!(tool_calls);
                }
                let i = push(&mut steps, step);
                for c in &r.tool_calls {
                    owner.insert(c.id.clone(), i);
                }
            }
            Event::ToolCall(t) => {
                // Text-protocol calls get their ids from the runtime (`text-N`), not the reply.
                let Some(&i) = owner.get(&t.call_id) else {
                    continue;
                };
                let step = &mut steps[i];
                if step.get("observation").is_none() {
                    step["observation"] = json!({"results": []});
                }
                if let Some(results) = step["observation"]["results"].as_array_mut() {
                    results.push(json!({"source_call_id": t.call_id, "content": t.output}));
                }
            }
            Event::Middleware(_)
            | Event::Check(_)
            | Event::BudgetNotice { .. }
            | Event::FormatError { .. }
            | Event::Refused { .. } => {}
        }
    }
    // Text protocol: the reply carries no native call; attach the parsed call to its step.
    for e in &trace.events {
        if let Event::ToolCall(t) = e
            && !owner.contains_key(&t.call_id)
            && let Some(step) = steps.iter_mut().rev().find(|s| {
                s["source"] == "agent"
                    && s.get("tool_calls").is_none()
                    && turn_of(s) == Some(t.turn)
            })
        {
            step["tool_calls"] = json!([{"tool_call_id": t.call_id, "function_name": t.tool, "arguments": t.arguments}]);
            step["observation"] =
                json!({"results": [{"source_call_id": t.call_id, "content": t.output}]});
        }
    }
    for s in steps.iter_mut() {
        if let Some(o) = s.as_object_mut() {
            o.remove("_turn");
        }
    }
    let tool_definitions: Vec<Value> = trace
        .tools
        .iter()
        .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
        .collect();
    let session_id = format!("{}-trial{}-seed{}", trace.task, trace.trial, trace.seed);
    let total_steps = steps.len();
    json!({
        "schema_version": SCHEMA_VERSION,
        "session_id": session_id,
        "trajectory_id": format!("{session_id}-{}", trace.started_at),
        "agent": {
            "name": "git-harness",
            "version": crate::VERSION,
            "model_name": trace.model,
            "tool_definitions": tool_definitions,
        },
        "steps": steps,
        "notes": format!("harness `{}`; ended: {}", trace.harness, trace.ending.reason()),
        "final_metrics": {
            "total_prompt_tokens": trace.totals.usage.prompt_tokens,
            "total_completion_tokens": trace.totals.usage.completion_tokens,
            "total_cached_tokens": trace.totals.usage.cached_tokens,
            "total_cost_usd": trace.totals.cost_usd,
            "total_steps": total_steps,
        },
        "extra": {
            "task": trace.task,
            "trial": trace.trial,
            "ending": trace.ending,
            "middleware_firings": trace.middleware_firings().collect::<Vec<_>>(),
        },
    })
}

/// The model turn of an agent step (a temporary field, removed before output).
fn turn_of(s: &Value) -> Option<u32> {
    s.get("_turn").and_then(Value::as_u64).map(|t| t as u32)
}
