//! A harness made ready to run: its tools, middleware, checks and prompt sources, all read
//! from the harness's files. Everything a harness does is data.

use crate::error::{Error, Result};
use crate::harness::{Harness, Protocol};

use super::checks::Check;
use super::middleware::{CompiledRule, MiddlewareFile};
use super::prompts::{self, PromptVars};
use super::tools::{Builtin, ToolDef, ToolFile};

#[derive(Debug, Clone)]
pub struct Runtime {
    pub name: String,
    pub protocol: Protocol,
    pub tools: Vec<ToolDef>,
    pub rules: Vec<CompiledRule>,
    pub checks: Vec<Check>,
}

/// `dir/<name>.yaml` directly inside `dir` (not below).
fn yaml_in<'a>(path: &'a str, dir: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(dir)?.strip_prefix('/')?;
    (rest.ends_with(".yaml") && !rest.contains('/')).then_some(rest)
}

impl Runtime {
    pub fn load(h: &Harness) -> Result<Runtime> {
        let mut tools: Vec<ToolDef> = Vec::new();
        let mut rules = Vec::new();
        let mut checks = Vec::new();
        for (path, text) in &h.files {
            if yaml_in(path, "tools").is_some() {
                let t = ToolFile::parse(text, path)?;
                if tools.iter().any(|o| o.builtin == t.builtin) {
                    return Err(Error::config(
                        path,
                        crate::support::yaml::line_of(text, "name"),
                        "name",
                        format!("tool `{}` is defined twice", t.spec.name),
                    ));
                }
                tools.push(t);
            } else if yaml_in(path, "middleware").is_some() {
                rules.extend(MiddlewareFile::parse(text, path)?);
            } else if yaml_in(path, "checks").is_some() {
                checks.push(Check::parse(text, path)?);
            }
        }
        if !tools.iter().any(|t| t.builtin == Builtin::Submit) {
            return Err(Error::config(
                "tools/submit.yaml",
                None,
                "(file)",
                "the harness offers no `submit` tool, so no episode could end by submitting",
            ));
        }
        Ok(Runtime {
            name: h.manifest.name.clone(),
            protocol: h.manifest.protocol,
            tools,
            rules,
            checks,
        })
    }

    pub fn tool(&self, name: &str) -> Option<&ToolDef> {
        self.tools.iter().find(|t| t.spec.name == name)
    }
}

/// Load and check the whole harness as an episode would (tools, middleware, checks, every
/// prompt rendered), so that a broken file is a configuration error said once, before any
/// trial, rather than an infrastructure error in every trial.
pub fn preflight(h: &Harness, budgets: &crate::experiment::Budgets) -> Result<()> {
    if h.manifest.protocol == crate::harness::Protocol::Command {
        // The agent program reads its own files; the built-in runtime loads none of them.
        return Ok(());
    }
    let rt = Runtime::load(h)?;
    let mut vars = PromptVars::example();
    vars.tools = rt
        .tools
        .iter()
        .map(|t| prompts::ToolVar {
            name: t.spec.name.clone(),
            description: t.spec.description.clone(),
        })
        .collect();
    vars.budgets = budgets.clone();
    prompts::render_all(h.files.iter(), &vars)?;
    Ok(())
}

/// Check one harness file against its schema: tools, middleware and checks YAML; prompt
/// templates compile and render with stand-in values; the manifest. Other files pass.
pub fn validate_surface(path: &str, content: &str) -> Result<()> {
    if path == crate::harness::MANIFEST {
        crate::harness::Manifest::parse(content, std::path::Path::new(path))?;
    } else if yaml_in(path, "tools").is_some() {
        ToolFile::parse(content, path)?;
    } else if yaml_in(path, "middleware").is_some() {
        MiddlewareFile::parse(content, path)?;
    } else if yaml_in(path, "checks").is_some() {
        Check::parse(content, path)?;
    } else if path.starts_with("prompts/") && path.ends_with(".md") {
        prompts::render(path, content, &PromptVars::example())?;
    }
    Ok(())
}
