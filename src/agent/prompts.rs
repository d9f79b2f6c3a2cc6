//! Prompts: `prompts/system.md` and the conditional instructions appended to the system
//! message. Every prompt is a minijinja template seeing `instruction`, `tools` (a list of
//! `{name, description}`), `workdir` and `budgets`; an undefined variable is an error.
//!
//! * `bootstrap.md`: only while no tool call has happened yet;
//! * `on_tool_error.md`: only in the request right after a failed tool call (non-zero exit,
//!   tool error, blocked call, failed check);
//! * every other `prompts/*.md` (sorted by name): always.

use minijinja::{Environment, UndefinedBehavior, Value};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::experiment::Budgets;

pub const SYSTEM: &str = "prompts/system.md";
pub const BOOTSTRAP: &str = "prompts/bootstrap.md";
pub const ON_TOOL_ERROR: &str = "prompts/on_tool_error.md";

#[derive(Debug, Clone, Serialize)]
pub struct ToolVar {
    pub name: String,
    pub description: String,
}

/// The template variables.
#[derive(Debug, Clone, Serialize)]
pub struct PromptVars {
    pub instruction: String,
    pub tools: Vec<ToolVar>,
    pub workdir: String,
    pub budgets: Budgets,
}

impl PromptVars {
    /// The template context (built by hand: minijinja is used without its serde feature).
    fn to_value(&self) -> Value {
        let tools: Vec<Value> = self
            .tools
            .iter()
            .map(|t| {
                map([
                    ("name", Value::from(t.name.clone())),
                    ("description", Value::from(t.description.clone())),
                ])
            })
            .collect();
        let b = &self.budgets;
        let budgets = map([
            ("max_turns", Value::from(b.max_turns)),
            ("max_tool_calls", Value::from(b.max_tool_calls)),
            ("wall_clock_sec", Value::from(b.wall_clock_sec)),
            ("max_tokens", Value::from(b.max_tokens)),
            ("command_timeout_sec", Value::from(b.command_timeout_sec)),
        ]);
        map([
            ("instruction", Value::from(self.instruction.clone())),
            ("tools", Value::from(tools)),
            ("workdir", Value::from(self.workdir.clone())),
            ("budgets", budgets),
        ])
    }

    /// Stand-in values, to check that a template renders.
    pub fn example() -> Self {
        PromptVars {
            instruction: "Example instruction.".into(),
            tools: vec![ToolVar {
                name: "bash".into(),
                description: "Run a command.".into(),
            }],
            workdir: "/app".into(),
            budgets: Budgets::default(),
        }
    }
}

/// The rendered prompts of one episode.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    pub system: String,
    pub always: Vec<String>,
    pub bootstrap: Option<String>,
    pub on_tool_error: Option<String>,
}

fn env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

/// Render one prompt file; errors name the file and the template's line.
pub fn render(path: &str, source: &str, vars: &PromptVars) -> Result<String> {
    let env = env();
    env.render_str(source, vars.to_value()).map_err(|e| {
        Error::config(
            path,
            e.line(),
            "(template)",
            e.detail()
                .map(str::to_string)
                .unwrap_or_else(|| e.to_string()),
        )
    })
}

/// Render every prompt of a harness (its `prompts/*.md`).
pub fn render_all<'a>(
    files: impl Iterator<Item = (&'a String, &'a String)>,
    vars: &PromptVars,
) -> Result<Rendered> {
    let mut r = Rendered::default();
    let mut have_system = false;
    for (path, source) in files {
        let Some(name) = path.strip_prefix("prompts/") else {
            continue;
        };
        if !name.ends_with(".md") || name.contains('/') {
            continue;
        }
        let text = render(path, source, vars)?.trim().to_string();
        match path.as_str() {
            SYSTEM => {
                r.system = text;
                have_system = true;
            }
            BOOTSTRAP => r.bootstrap = Some(text).filter(|t| !t.is_empty()),
            ON_TOOL_ERROR => r.on_tool_error = Some(text).filter(|t| !t.is_empty()),
            _ if !text.is_empty() => r.always.push(text),
            _ => {}
        }
    }
    if !have_system {
        return Err(Error::config(
            SYSTEM,
            None,
            "(file)",
            "the harness has no system prompt",
        ));
    }
    Ok(r)
}

/// A template map value.
fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::from(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<std::collections::BTreeMap<String, Value>>(),
    )
}
