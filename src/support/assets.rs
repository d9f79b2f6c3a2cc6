//! Files embedded in the binary, so an installed binary works from any directory: harness
//! templates, prompt templates, the remedy catalog, the bundled demo suite and sim scenarios.

use std::path::Path;

use include_dir::{Dir, include_dir};

use crate::error::{Error, IoContext, Result};

static HARNESS_TEMPLATES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/templates/harness");
static PROMPTS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/templates/prompts");
static REMEDIES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/templates/remedies");
static SUITES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/fixtures/suites");
static SIM: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/fixtures/sim");

/// Names of the bundled harness templates.
pub fn harness_templates() -> Vec<&'static str> {
    let mut v: Vec<_> = HARNESS_TEMPLATES
        .dirs()
        .filter_map(|d| d.path().file_name().and_then(|n| n.to_str()))
        .collect();
    v.sort();
    v
}

/// Every file of a harness template: (relative path, content).
pub fn harness_template(name: &str) -> Result<Vec<(String, &'static str)>> {
    let dir = HARNESS_TEMPLATES.get_dir(name).ok_or_else(|| {
        Error::usage_hint(
            format!("unknown template `{name}`"),
            format!("available templates: {}", harness_templates().join(", ")),
        )
    })?;
    let mut out = Vec::new();
    collect(dir, dir.path(), &mut out);
    out.sort();
    Ok(out)
}

fn collect(dir: &'static Dir<'static>, base: &Path, out: &mut Vec<(String, &'static str)>) {
    for f in dir.files() {
        if let Some(text) = f.contents_utf8() {
            let rel = f.path().strip_prefix(base).expect("file below its dir");
            out.push((rel.to_string_lossy().replace('\\', "/"), text));
        }
    }
    for d in dir.dirs() {
        collect(d, base, out);
    }
}

/// The default `.harness/experiment.yaml`, with `{{ suite }}` and `{{ model }}` to fill in.
pub const EXPERIMENT_TEMPLATE: &str = include_str!("../../templates/experiment.yaml");

/// The model of the bundled demo suite: the simulated model and its scenario.
pub const MODEL_SIM: &str = "\
  # openai | anthropic | sim | replay. `sim` is a SIMULATED model served on loopback (no network,
  # no API key) for the demo and tests; see docs/sim-scenarios.md.
  provider: sim
  name: sim-quirky-1
  scenario: builtin:demo
  # For a real model, e.g.:
  #   provider: openai
  #   name: qwen3.5-35b-a3b
  #   base_url: http://localhost:8000/v1
  #   api_key_env: OPENAI_API_KEY   # the NAME of the variable, never the key";

/// The model of a user's own suite: not chosen yet, so runs refuse until it is set.
pub const MODEL_UNSET: &str = "\
  # The model to evaluate: runs refuse until it is set. Commit the change before `split`.
  # openai (any OpenAI-compatible server: vLLM, SGLang, Ollama, llama.cpp, hosted APIs), e.g.:
  #   provider: openai
  #   name: qwen3.5-35b-a3b
  #   base_url: http://localhost:8000/v1
  #   api_key_env: OPENAI_API_KEY   # the NAME of the variable, never the key
  # anthropic, e.g.:
  #   provider: anthropic
  #   name: claude-sonnet-4-5
  #   api_key_env: ANTHROPIC_API_KEY
  # (`sim` is the simulated model of the demo suite; it knows nothing of these tasks.)
  provider: unset
  name: unset";
/// The initial `.harness/splits.yaml`.
pub const SPLITS_TEMPLATE: &str = include_str!("../../templates/splits.yaml");

/// A prompt template of the tool itself (`propose.md`, `diagnose.md`).
pub fn prompt(name: &str) -> Option<&'static str> {
    PROMPTS.get_file(name).and_then(|f| f.contents_utf8())
}

/// The remedy catalog: (file name, YAML text).
pub fn remedies() -> Vec<(String, &'static str)> {
    let mut v: Vec<_> = REMEDIES
        .files()
        .filter_map(|f| Some((f.path().to_string_lossy().into_owned(), f.contents_utf8()?)))
        .collect();
    v.sort();
    v
}

/// The YAML text of a bundled sim scenario (`builtin:demo` -> `demo.yaml`).
pub fn sim_scenario(name: &str) -> Option<&'static str> {
    SIM.get_file(format!("{name}.yaml"))
        .and_then(|f| f.contents_utf8())
}

/// Write a bundled suite to `dest` (created), keeping file modes executable for scripts.
pub fn extract_suite(name: &str, dest: &Path) -> Result<()> {
    let dir = SUITES.get_dir(name).ok_or_else(|| {
        Error::usage(format!(
            "no bundled suite `{name}` (bundled: {})",
            bundled_suites().join(", ")
        ))
    })?;
    extract(dir, dir.path(), dest)
}

/// A digest of a bundled suite's content, so an extracted copy is reused only while it matches.
pub fn suite_digest(name: &str) -> Option<String> {
    let dir = SUITES.get_dir(name)?;
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.sort_by_key(|f| f.path());
    let mut h = super::digest::Hasher::new();
    for f in files {
        h.update(f.path().to_string_lossy().as_bytes());
        h.update([0]);
        h.update(f.contents());
        h.update([0]);
    }
    Some(h.hex())
}

fn walk(dir: &'static Dir<'static>, out: &mut Vec<&'static include_dir::File<'static>>) {
    out.extend(dir.files());
    for d in dir.dirs() {
        walk(d, out);
    }
}

/// The task ids of a bundled suite (empty when there is no such suite).
pub fn bundled_task_ids(name: &str) -> Vec<&'static str> {
    SUITES
        .get_dir(name)
        .map(|d| {
            d.dirs()
                .filter_map(|t| t.path().file_name().and_then(|n| n.to_str()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn bundled_suites() -> Vec<&'static str> {
    SUITES
        .dirs()
        .filter_map(|d| d.path().file_name().and_then(|n| n.to_str()))
        .collect()
}

fn extract(dir: &'static Dir<'static>, base: &Path, dest: &Path) -> Result<()> {
    for f in dir.files() {
        let rel = f.path().strip_prefix(base).expect("file below its dir");
        let path = dest.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).at(parent)?;
        }
        std::fs::write(&path, f.contents()).at(&path)?;
        if path.extension().is_some_and(|e| e == "sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).at(&path)?;
        }
    }
    for d in dir.dirs() {
        extract(d, base, dest)?;
    }
    Ok(())
}
