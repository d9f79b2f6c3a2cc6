//! The built-in tools and their definitions from the harness's `tools/*.yaml`.
//!
//! A tool file (schema):
//!
//! ```yaml
//! name: bash                  # one of: bash, read_file, write_file, edit, submit
//! description: Run a command ...
//! parameters:                 # JSON schema of the arguments, shown to the model
//!   type: object
//!   properties:
//!     command: { type: string }
//!   required: [command]
//! max_output_chars: 10000     # optional: longer results keep head and tail
//! ```
//!
//! The description and parameter docs are harness text; what a tool does is fixed. The
//! parameters must still declare the argument names the runtime reads (e.g. `command`).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Kind, Result};
use crate::model::ToolSpec;
use crate::sandbox::{ExecRequest, Sandbox};

pub const DEFAULT_MAX_OUTPUT_CHARS: usize = 10_000;
/// The most `read_file` and `edit` read of a file: a huge file (or a link to one) costs the run
/// no more than this, and the model is told what was left out.
pub const MAX_READ_BYTES: u64 = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    Bash,
    ReadFile,
    WriteFile,
    Edit,
    Submit,
}

impl Builtin {
    pub const ALL: [Builtin; 5] = [
        Builtin::Bash,
        Builtin::ReadFile,
        Builtin::WriteFile,
        Builtin::Edit,
        Builtin::Submit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Bash => "bash",
            Builtin::ReadFile => "read_file",
            Builtin::WriteFile => "write_file",
            Builtin::Edit => "edit",
            Builtin::Submit => "submit",
        }
    }

    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The string arguments the runtime reads.
    pub fn required_args(self) -> &'static [&'static str] {
        match self {
            Builtin::Bash => &["command"],
            Builtin::ReadFile => &["path"],
            Builtin::WriteFile => &["path", "content"],
            Builtin::Edit => &["path", "old_text", "new_text"],
            Builtin::Submit => &[],
        }
    }
}

/// A `tools/*.yaml` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolFile {
    pub name: String,
    pub description: String,
    #[serde(default = "empty_object")]
    pub parameters: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_chars: Option<usize>,
}

fn empty_object() -> Value {
    serde_json::json!({"type": "object", "properties": {}})
}

/// A tool as the runtime uses it.
#[derive(Debug, Clone)]
pub struct ToolDef {
    pub builtin: Builtin,
    pub spec: ToolSpec,
    pub max_output_chars: usize,
}

impl ToolFile {
    pub fn parse(text: &str, file: &str) -> Result<ToolDef> {
        let f: ToolFile = crate::support::yaml::from_str(text, std::path::Path::new(file))?;
        let line = |k: &str| crate::support::yaml::line_of(text, k);
        let builtin = Builtin::from_name(&f.name).ok_or_else(|| {
            Error::config(
                file,
                line("name"),
                "name",
                format!(
                    "`{}` is not a built-in tool (one of: {})",
                    f.name,
                    Builtin::ALL.map(Builtin::name).join(", ")
                ),
            )
        })?;
        if f.description.trim().is_empty() {
            return Err(Error::config(
                file,
                line("description"),
                "description",
                "must not be empty",
            ));
        }
        let props = f.parameters.get("properties").and_then(Value::as_object);
        if f.parameters.get("type").and_then(Value::as_str) != Some("object") {
            return Err(Error::config(
                file,
                line("parameters"),
                "parameters.type",
                "must be `object`",
            ));
        }
        for arg in builtin.required_args() {
            if !props.is_some_and(|p| p.contains_key(*arg)) {
                return Err(Error::config(
                    file,
                    line("properties"),
                    format!("parameters.properties.{arg}"),
                    format!("`{}` reads the argument `{arg}`; declare it", f.name),
                ));
            }
        }
        if f.max_output_chars == Some(0) {
            return Err(Error::config(
                file,
                line("max_output_chars"),
                "max_output_chars",
                "must be at least 1",
            ));
        }
        Ok(ToolDef {
            builtin,
            spec: ToolSpec {
                name: f.name,
                description: f.description.trim().to_string(),
                parameters: f.parameters,
            },
            max_output_chars: f.max_output_chars.unwrap_or(DEFAULT_MAX_OUTPUT_CHARS),
        })
    }
}

/// What a tool call produced.
#[derive(Debug, Clone, Default)]
pub struct ToolOutcome {
    /// The result text the model sees.
    pub text: String,
    pub ok: bool,
    /// bash: its exit code (`None` when killed); other tools: 0 or 1.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub truncated: bool,
    pub files_changed: Vec<String>,
    pub duration_ms: u64,
}

impl ToolOutcome {
    pub fn error(text: impl Into<String>) -> Self {
        ToolOutcome {
            text: text.into(),
            ok: false,
            exit_code: Some(1),
            ..Default::default()
        }
    }
    fn success(text: impl Into<String>) -> Self {
        ToolOutcome {
            text: text.into(),
            ok: true,
            exit_code: Some(0),
            ..Default::default()
        }
    }
}

/// Parse the raw argument text of a call into an object; the error goes back to the model.
pub fn parse_args(raw: &str) -> std::result::Result<Map<String, Value>, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(trimmed) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!(
            "arguments must be a JSON object, got {}",
            type_name(&other)
        )),
        Err(e) => Err(format!(
            "arguments are not valid JSON ({e}): {}",
            crate::model::clip_for_message(trimmed, 200)
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn arg<'a>(
    args: &'a Map<String, Value>,
    tool: &str,
    name: &str,
) -> std::result::Result<&'a str, String> {
    match args.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!(
            "`{tool}` needs `{name}` as a string, got {}",
            type_name(other)
        )),
        None => Err(format!("`{tool}` needs the argument `{name}`")),
    }
}

/// Keep at most `max` characters: head and tail, with a marker saying how much was cut.
pub fn head_tail(s: &str, max: usize) -> (String, bool) {
    let n = s.chars().count();
    if n <= max {
        return (s.to_string(), false);
    }
    let head: String = s.chars().take(max / 2).collect();
    let tail: String = s.chars().skip(n - (max - max / 2)).collect();
    (
        format!("{head}\n[... {} characters omitted ...]\n{tail}", n - max),
        true,
    )
}

/// Why a file operation failed, as the model should read it: the sandbox path it gave is
/// already in the message, so an I/O error shows only its cause.
fn reason(e: &Error) -> String {
    match e {
        Error::Io { source, .. } => source.to_string(),
        e => e.to_string(),
    }
}

/// A sandbox failure that is the sandbox's fault (infrastructure), as opposed to a file that
/// does not exist or cannot be written, which is the agent's business.
fn is_infra(e: &Error) -> bool {
    e.kind() == Kind::Infra
}

/// Run a (non-submit) tool. `Err` only for sandbox failures; everything else, including bad
/// arguments, is a failed outcome the model sees.
pub async fn execute(
    def: &ToolDef,
    args: &Map<String, Value>,
    sandbox: &dyn Sandbox,
    command_timeout: Duration,
) -> Result<ToolOutcome> {
    let start = Instant::now();
    let name = def.spec.name.as_str();
    let mut out = match def.builtin {
        Builtin::Bash => match arg(args, name, "command") {
            Err(e) => ToolOutcome::error(format!("error: {e}")),
            Ok(cmd) => {
                let o = sandbox.exec(ExecRequest::new(cmd, command_timeout)).await?;
                let head = match (o.timed_out, o.exit_code) {
                    (true, _) => format!(
                        "exit code: none (killed: timed out after {} s)",
                        command_timeout.as_secs()
                    ),
                    (false, Some(c)) => format!("exit code: {c}"),
                    (false, None) => "exit code: none (killed by a signal)".to_string(),
                };
                let (body, cut) = head_tail(&o.output, def.max_output_chars);
                ToolOutcome {
                    text: format!("{head}\n{body}"),
                    ok: o.success(),
                    exit_code: o.exit_code,
                    timed_out: o.timed_out,
                    truncated: cut || o.truncated,
                    ..Default::default()
                }
            }
        },
        Builtin::ReadFile => match arg(args, name, "path") {
            Err(e) => ToolOutcome::error(format!("error: {e}")),
            Ok(path) => match sandbox.read_file_capped(path, MAX_READ_BYTES).await {
                Ok((bytes, size)) => {
                    let text = String::from_utf8_lossy(&bytes);
                    let (mut body, cut) = head_tail(&text, def.max_output_chars);
                    let partial = size > bytes.len() as u64;
                    if partial {
                        body.push_str(&format!(
                            "\n[truncated: the file has {size} bytes; read_file reads the first {}; \
                             use bash (sed -n, tail) for the rest]",
                            bytes.len()
                        ));
                    }
                    ToolOutcome {
                        truncated: cut || partial,
                        ..ToolOutcome::success(body)
                    }
                }
                Err(e) if is_infra(&e) => return Err(e),
                Err(e) => ToolOutcome::error(format!("error: cannot read {path}: {}", reason(&e))),
            },
        },
        Builtin::WriteFile => match (arg(args, name, "path"), arg(args, name, "content")) {
            (Err(e), _) | (_, Err(e)) => ToolOutcome::error(format!("error: {e}")),
            (Ok(path), Ok(content)) => {
                match write(sandbox, path, content.as_bytes(), command_timeout).await? {
                    Ok(()) => ToolOutcome {
                        files_changed: vec![path.to_string()],
                        ..ToolOutcome::success(format!("wrote {} bytes to {path}", content.len()))
                    },
                    Err(e) => ToolOutcome::error(format!("error: cannot write {path}: {e}")),
                }
            }
        },
        Builtin::Edit => {
            let a = (
                arg(args, name, "path"),
                arg(args, name, "old_text"),
                arg(args, name, "new_text"),
            );
            match a {
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    ToolOutcome::error(format!("error: {e}"))
                }
                (Ok(path), Ok(old), Ok(new)) => {
                    edit(sandbox, path, old, new, command_timeout).await?
                }
            }
        }
        Builtin::Submit => ToolOutcome::success("submitted"),
    };
    out.duration_ms = start.elapsed().as_millis() as u64;
    Ok(out)
}

/// Write a file; on a non-infrastructure failure, create the parent directory and try once
/// more (sandboxes differ in whether `write_file` creates parents).
async fn write(
    sandbox: &dyn Sandbox,
    path: &str,
    data: &[u8],
    timeout: Duration,
) -> Result<std::result::Result<(), String>> {
    match sandbox.write_file(path, data).await {
        Ok(()) => return Ok(Ok(())),
        Err(e) if is_infra(&e) => return Err(e),
        Err(_) => {}
    }
    if let Some((parent, _)) = path.rsplit_once('/')
        && !parent.is_empty()
    {
        let quoted = format!("'{}'", parent.replace('\'', r"'\''"));
        sandbox
            .exec(ExecRequest::new(format!("mkdir -p -- {quoted}"), timeout))
            .await?;
    }
    match sandbox.write_file(path, data).await {
        Ok(()) => Ok(Ok(())),
        Err(e) if is_infra(&e) => Err(e),
        Err(e) => Ok(Err(reason(&e))),
    }
}

async fn edit(
    sandbox: &dyn Sandbox,
    path: &str,
    old: &str,
    new: &str,
    timeout: Duration,
) -> Result<ToolOutcome> {
    if old.is_empty() {
        return Ok(ToolOutcome::error("error: `old_text` must not be empty"));
    }
    let bytes = match sandbox.read_file_capped(path, MAX_READ_BYTES).await {
        Ok((b, size)) if size > b.len() as u64 => {
            return Ok(ToolOutcome::error(format!(
                "error: {path} has {size} bytes, more than edit reads ({MAX_READ_BYTES}); use bash to change it"
            )));
        }
        Ok((b, _)) => b,
        Err(e) if is_infra(&e) => return Err(e),
        Err(e) => {
            return Ok(ToolOutcome::error(format!(
                "error: cannot read {path}: {}",
                reason(&e)
            )));
        }
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return Ok(ToolOutcome::error(format!(
            "error: {path} is not UTF-8 text; use bash to change it"
        )));
    };
    let count = text.matches(old).count();
    if count != 1 {
        let why = if count == 0 {
            "`old_text` does not occur in the file".to_string()
        } else {
            format!(
                "`old_text` occurs {count} times; include more context so it occurs exactly once"
            )
        };
        return Ok(ToolOutcome::error(format!(
            "error: no change to {path}: {why}"
        )));
    }
    let updated = text.replacen(old, new, 1);
    Ok(
        match write(sandbox, path, updated.as_bytes(), timeout).await? {
            Ok(()) => ToolOutcome {
                files_changed: vec![path.to_string()],
                ..ToolOutcome::success(format!("replaced 1 occurrence in {path}"))
            },
            Err(e) => ToolOutcome::error(format!("error: cannot write {path}: {e}")),
        },
    )
}
