//! The text protocol: the model writes one JSON action in its message, e.g.
//! `{"tool": "bash", "arguments": {"command": "ls"}}`, optionally in a ```json fence.

use serde_json::Value;

use crate::model::ToolSpec;

/// The tool name and argument JSON text of the action in `content`; the error is fed back.
pub fn parse_action(content: &str) -> Result<(String, String), String> {
    let mut candidates: Vec<&str> = fenced_blocks(content);
    if let (Some(a), Some(b)) = (content.find('{'), content.rfind('}'))
        && a < b
    {
        candidates.push(&content[a..=b]);
    }
    if candidates.is_empty() {
        return Err("no JSON action found in the reply".into());
    }
    let mut last_err = String::new();
    for c in candidates {
        match serde_json::from_str::<Value>(c.trim()) {
            Ok(Value::Object(o)) => {
                let Some(tool) = o
                    .get("tool")
                    .or_else(|| o.get("name"))
                    .and_then(Value::as_str)
                else {
                    last_err = "the JSON action has no \"tool\" field".into();
                    continue;
                };
                let args = match o.get("arguments") {
                    None | Some(Value::Null) => "{}".to_string(),
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                };
                return Ok((tool.to_string(), args));
            }
            Ok(_) => last_err = "the action must be a JSON object".into(),
            Err(e) => last_err = format!("the JSON action is invalid: {e}"),
        }
    }
    Err(last_err)
}

fn fenced_blocks(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        // Skip the info string (`json`) up to the end of the line.
        let body_start = after.find('\n').map(|i| i + 1).unwrap_or(after.len());
        let body = &after[body_start..];
        let Some(end) = body.find("```") else { break };
        out.push(&body[..end]);
        rest = &body[end + 3..];
    }
    out
}

/// The section appended to the system message under the text protocol: how to act, and the
/// tools with their parameters (there is no native tool list).
pub fn format_section(tools: &[ToolSpec]) -> String {
    let mut s = String::from(
        "Reply with exactly one action per message, as a JSON object in a ```json block:\n\
         {\"tool\": \"<tool name>\", \"arguments\": {...}}\n\nTools:",
    );
    for t in tools {
        s.push_str(&format!(
            "\n- {}: {} Parameters: {}",
            t.name, t.description, t.parameters
        ));
    }
    s
}

/// The feedback for a reply without a usable action.
pub fn format_feedback(error: &str, text_protocol: bool) -> String {
    if text_protocol {
        format!(
            "[format] {error}. Reply with one JSON action in a ```json block, e.g. \
             {{\"tool\": \"bash\", \"arguments\": {{\"command\": \"ls\"}}}}; call `submit` when the task is complete."
        )
    } else {
        format!(
            "[format] {error}. Use the tools to work on the task, and call `submit` when it is complete."
        )
    }
}
