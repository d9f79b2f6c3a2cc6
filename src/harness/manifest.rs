//! `harness.yaml`: the harness's name, protocol and declared editable surfaces.

use std::path::Path;

use globset::Glob;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Native function calling.
    #[default]
    Tools,
    /// A JSON action parsed from the message text.
    Text,
    /// The harness is an agent program (`agent.command`) that reaches the model only through
    /// the model gateway.
    Command,
}

/// The wire format a `protocol: command` agent speaks to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AgentApi {
    #[default]
    Openai,
    Anthropic,
}

/// The agent program of a `protocol: command` harness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Run with `bash -c` inside the sandbox, in the task's workdir; the instruction on stdin.
    pub command: String,
    #[serde(default)]
    pub api: AgentApi,
    /// Run once before the agent (e.g. `pip install -r $HARNESS_DIR/requirements.txt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SurfaceKind {
    Prompt,
    Tools,
    Middleware,
    Checks,
    /// Any file of a `protocol: command` agent (code, YAML/JSON/TOML config).
    File,
}

impl std::fmt::Display for SurfaceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SurfaceKind::Prompt => "prompt",
            SurfaceKind::Tools => "tools",
            SurfaceKind::Middleware => "middleware",
            SurfaceKind::Checks => "checks",
            SurfaceKind::File => "file",
        })
    }
}

/// How much one edit may change a surface file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    #[serde(default = "default_max_lines")]
    pub max_lines_added: usize,
    #[serde(default = "default_max_lines")]
    pub max_lines_removed: usize,
}

fn default_max_lines() -> usize {
    20
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_lines_added: default_max_lines(),
            max_lines_removed: default_max_lines(),
        }
    }
}

/// A declared editable surface: a path or glob of the harness and its kind and bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Surface {
    pub path: String,
    pub kind: SurfaceKind,
    #[serde(default)]
    pub bounds: Bounds,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A command that must pass on an edited file before the edit counts; `{}` is replaced by
    /// the path of a copy of the new content (e.g. `python3 -m py_compile {}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
}

impl Surface {
    pub fn matches(&self, path: &str) -> bool {
        if self.path == path {
            return true;
        }
        // `*` stays within one directory, as in a shell: `tools/*.yaml` is not `tools/a/b.yaml`.
        globset::GlobBuilder::new(&self.path)
            .literal_separator(true)
            .build()
            .map(|g| g.compile_matcher().is_match(path))
            .unwrap_or(false)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub protocol: Protocol,
    /// The agent program, for `protocol: command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentSpec>,
    pub surfaces: Vec<Surface>,
}

impl Manifest {
    pub fn parse(text: &str, file: &Path) -> Result<Self> {
        let m: Manifest = crate::support::yaml::from_str(text, file)?;
        m.validate(text, file)?;
        Ok(m)
    }

    fn validate(&self, text: &str, file: &Path) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(Error::config(
                file,
                crate::support::yaml::line_of(text, "name"),
                "name",
                "must not be empty",
            ));
        }
        match (&self.protocol, &self.agent) {
            (Protocol::Command, None) => {
                return Err(Error::config(
                    file,
                    crate::support::yaml::line_of(text, "protocol"),
                    "agent",
                    "`protocol: command` needs an `agent:` section with `command:` (and `api: openai|anthropic`)",
                ));
            }
            (Protocol::Command, Some(a)) if a.command.trim().is_empty() => {
                return Err(Error::config(
                    file,
                    crate::support::yaml::line_of(text, "command"),
                    "agent.command",
                    "must not be empty",
                ));
            }
            (Protocol::Tools | Protocol::Text, Some(_)) => {
                return Err(Error::config(
                    file,
                    crate::support::yaml::line_of(text, "agent"),
                    "agent",
                    "an `agent:` section belongs to `protocol: command` only",
                ));
            }
            _ => {}
        }
        if self.surfaces.is_empty() {
            return Err(Error::config(
                file,
                crate::support::yaml::line_of(text, "surfaces"),
                "surfaces",
                "declare at least one editable surface (path, kind: prompt|tools|middleware|checks)",
            ));
        }
        for (i, s) in self.surfaces.iter().enumerate() {
            let field = format!("surfaces[{i}].path");
            let line = crate::support::yaml::line_of_value(text, &s.path);
            if s.path.starts_with(super::FIXED_DIR)
                || s.path.starts_with('/')
                || s.path.contains("..")
            {
                return Err(Error::config(
                    file,
                    line,
                    field,
                    format!(
                        "`{}` cannot be a surface: surfaces are relative paths outside .harness/",
                        s.path
                    ),
                ));
            }
            if s.path == super::MANIFEST {
                return Err(Error::config(
                    file,
                    line,
                    field,
                    "harness.yaml itself cannot be a surface",
                ));
            }
            if let Err(e) = Glob::new(&s.path) {
                return Err(Error::config(
                    file,
                    line,
                    field,
                    format!("not a valid glob: {e}"),
                ));
            }
            if s.bounds.max_lines_added == 0 && s.bounds.max_lines_removed == 0 {
                return Err(Error::config(
                    file,
                    line,
                    format!("surfaces[{i}].bounds"),
                    "bounds allow no change at all; raise max_lines_added or max_lines_removed",
                ));
            }
        }
        Ok(())
    }

    pub fn surface_for(&self, path: &str) -> Option<&Surface> {
        self.surfaces.iter().find(|s| s.matches(path))
    }
}
