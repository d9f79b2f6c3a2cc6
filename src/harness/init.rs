//! Creating (or adopting) a harness repository from a bundled template.

use std::path::{Path, PathBuf};

use git2::Oid;

use super::{FIXED_DIR, MANIFEST, Manifest};
use crate::error::{Error, IoContext, Result};
use crate::experiment::{EXPERIMENT_FILE, Experiment, SPLITS_FILE, Splits};
use crate::lineage;
use crate::support::assets;

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub dir: PathBuf,
    pub template: String,
    /// `builtin:demo`, or a suite directory (recorded relative to the repo when inside it).
    pub suite: String,
    /// `runner.kind` for the new experiment.yaml (`auto`, `local`, `docker`, `kubernetes`) [default: the
    /// template's].
    pub runner: Option<String>,
    /// `runner.image_map` entries for the new experiment.yaml.
    pub image_map: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct InitOutcome {
    pub dir: PathBuf,
    pub commit: Oid,
    pub created_repo: bool,
    /// Files written from the template.
    pub written: Vec<String>,
    /// Files that existed and were adopted as they are.
    pub kept: Vec<String>,
}

/// Write the template's files where none exist, validate everything, and commit on main.
/// Nothing is committed when validation fails.
pub fn init(opts: &InitOptions) -> Result<InitOutcome> {
    let files = assets::harness_template(&opts.template)?;
    std::fs::create_dir_all(&opts.dir).at(&opts.dir)?;
    let (repo, created_repo) = lineage::init_or_open(&opts.dir)?;
    let root = repo
        .workdir()
        .ok_or_else(|| Error::usage("cannot init a harness in a bare repository"))?
        .to_path_buf();
    if let Ok(main) = lineage::main_commit(&repo)
        && main
            .tree()
            .ok()
            .and_then(|t| t.get_name(MANIFEST).map(|_| ()))
            .is_some()
    {
        return Err(Error::usage_hint(
            format!(
                "{} already holds a harness on {}",
                root.display(),
                lineage::main_branch(&repo)
            ),
            "use `git harness status` to see it",
        ));
    }

    let suite = suite_for_config(&opts.suite, &root)?;
    // The simulated model only knows the bundled demo suite; any other suite starts with the
    // model unset, so nothing runs on a stand-in by accident.
    let model = if suite == "builtin:demo" {
        assets::MODEL_SIM
    } else {
        assets::MODEL_UNSET
    };
    let experiment_text = runner_section(
        &assets::EXPERIMENT_TEMPLATE
            .replace("{{ suite }}", &suite)
            .replace("{{ model }}", model),
        opts.runner.as_deref(),
        &opts.image_map,
    );
    let mut planned: Vec<(String, String)> = files
        .iter()
        .map(|(p, c)| (p.clone(), c.to_string()))
        .collect();
    planned.push((EXPERIMENT_FILE.to_string(), experiment_text));
    planned.push((SPLITS_FILE.to_string(), assets::SPLITS_TEMPLATE.to_string()));

    // Validate what will be committed (existing files win over the template) before writing.
    let mut written = Vec::new();
    let mut kept = Vec::new();
    let mut to_write = Vec::new();
    for (path, content) in &planned {
        let full = root.join(path);
        if full.exists() {
            kept.push(path.clone());
        } else {
            to_write.push((full, content));
            written.push(path.clone());
        }
    }
    let effective = |path: &str| -> Result<String> {
        let full = root.join(path);
        if full.exists() {
            std::fs::read_to_string(&full).at(&full)
        } else {
            Ok(planned
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, c)| c.clone())
                .unwrap_or_default())
        }
    };
    if (opts.runner.is_some() || !opts.image_map.is_empty())
        && kept.iter().any(|p| p == EXPERIMENT_FILE)
    {
        return Err(Error::usage_hint(
            format!("{EXPERIMENT_FILE} exists; --runner and --image-map only shape a new one"),
            format!("set runner.kind / runner.image_map in {EXPERIMENT_FILE}"),
        ));
    }
    Manifest::parse(&effective(MANIFEST)?, Path::new(MANIFEST))?;
    Experiment::parse(&effective(EXPERIMENT_FILE)?, Path::new(EXPERIMENT_FILE))?;
    Splits::parse(&effective(SPLITS_FILE)?, Path::new(SPLITS_FILE))?;
    for (path, _) in &planned {
        if path.starts_with(FIXED_DIR) || path == MANIFEST {
            continue;
        }
        crate::harness::validate_file(path, &effective(path)?)?;
    }

    for (full, content) in &to_write {
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).at(parent)?;
        }
        std::fs::write(full, content).at(full)?;
    }
    let paths: Vec<String> = planned.iter().map(|(p, _)| p.clone()).collect();
    let message = format!(
        "Initialize the harness from the `{}` template\n\nSuite: {suite}\n",
        opts.template
    );
    let commit = lineage::commit_worktree_paths(&repo, &paths, &message)?;
    Ok(InitOutcome {
        dir: root,
        commit,
        created_repo,
        written,
        kept,
    })
}

/// The template's experiment text with the runner kind and image map the user chose, keeping
/// its comments (the template's `runner:` block has a `kind:` line and a `concurrency:` line).
fn runner_section(
    text: &str,
    kind: Option<&str>,
    image_map: &std::collections::BTreeMap<String, String>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_runner = false;
    for line in text.split_inclusive('\n') {
        if !line.starts_with(' ') && !line.starts_with('#') {
            in_runner = line.starts_with("runner:");
        }
        if in_runner && let (Some(k), true) = (kind, line.starts_with("  kind:")) {
            let comment = line.find('#').map(|i| &line[i..]).unwrap_or("\n");
            out.push_str(&format!("  kind: {k:<12} {comment}"));
            if !comment.ends_with('\n') {
                out.push('\n');
            }
            if k == "kubernetes" {
                // The runner needs a namespace; `default` until the user picks one.
                out.push_str(
                    "  kubernetes:\n    namespace: default   # kubeconfig, context, registry: see docs/formats.md\n",
                );
            }
            continue;
        }
        out.push_str(line);
        if in_runner && line.starts_with("  concurrency:") && !image_map.is_empty() {
            // Quoted: `*` starts a YAML alias when bare; JSON strings are YAML scalars.
            out.push_str("  image_map:\n");
            for (k, v) in image_map {
                out.push_str(&format!(
                    "    {}: {}\n",
                    serde_json::Value::from(k.as_str()),
                    serde_json::Value::from(v.as_str())
                ));
            }
        }
    }
    out
}

/// Record a suite path relative to the repository when it lies inside it.
fn suite_for_config(suite: &str, root: &Path) -> Result<String> {
    if suite.starts_with("builtin:") || suite.contains("://") {
        return Ok(suite.to_string());
    }
    let p = Path::new(suite);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().at(".")?.join(p)
    };
    if !abs.is_dir() {
        return Err(Error::usage_hint(
            format!("suite `{suite}` is not a directory"),
            "give a directory of task directories, or `builtin:demo`",
        ));
    }
    let abs = abs.canonicalize().at(&abs)?;
    let root = root.canonicalize().at(root)?;
    Ok(match abs.strip_prefix(&root) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => abs.to_string_lossy().into_owned(),
    })
}
