//! `git harness init`: create (or adopt) a harness repository.

use std::path::PathBuf;

use git_harness::harness::init::{InitOptions, init};
use git_harness::{Result, exit, lineage};

use super::Ui;

/// Create a harness repository from a template and commit it on main.
///
/// Writes harness.yaml, prompts/, tools/, middleware/, checks/ and the fixed experiment files
/// .harness/experiment.yaml and .harness/splits.yaml. Existing files are adopted as they are.
/// Nothing is committed when any of them is invalid.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to create or adopt [default: the current directory].
    pub dir: Option<PathBuf>,
    /// Harness template: `minimal` (the Self-Harness initial harness), `checklist` (a generic
    /// human-written checklist, the cheap baseline), `mini-swe-agent` (PyPI mini-swe-agent as a
    /// command harness) or `deepagents` (the paper's initial harness as a LangChain DeepAgents
    /// harness file, PyPI deepagents, Python >= 3.11). For the last two, set
    /// `runner.agent_paths` to where the agent is installed.
    #[arg(long, short, default_value = "minimal")]
    pub template: String,
    /// Task suite: a directory of task directories, or `builtin:demo` (the bundled demo suite).
    #[arg(long, default_value = "builtin:demo")]
    pub suite: String,
    /// Runner for the new experiment: `auto`, `local` or `docker` [default: auto].
    #[arg(long, value_enum)]
    pub runner: Option<super::args::RunnerArg>,
    /// Docker image substitution, `FROM=TO` (repeatable; written to runner.image_map). FROM may
    /// end in `*` (`python:3.13*`, `ghcr.io/org/*`) or be `*` alone.
    #[arg(long = "image-map", value_name = "FROM=TO")]
    pub image_map: Vec<String>,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("."));
    let mut image_map = std::collections::BTreeMap::new();
    git_harness::sandbox::image_map::extend_from_args(&mut image_map, &args.image_map)?;
    let runner = args.runner.map(|r| {
        match r {
            super::args::RunnerArg::Local => "local",
            super::args::RunnerArg::Docker => "docker",
            super::args::RunnerArg::Auto => "auto",
            super::args::RunnerArg::Kubernetes => "kubernetes",
        }
        .to_string()
    });
    let out = init(&InitOptions {
        dir,
        template: args.template.clone(),
        suite: args.suite.clone(),
        runner,
        image_map,
    })?;
    let verb = if out.created_repo {
        "Created"
    } else {
        "Adopted"
    };
    ui.out(format!(
        "{verb} harness repository {} from template `{}`",
        out.dir.display(),
        args.template
    ));
    ui.out(format!(
        "  commit {}  {} files written, {} kept",
        lineage::short(out.commit),
        out.written.len(),
        out.kept.len()
    ));
    if args.suite == "builtin:demo" {
        ui.note("next: `git harness split` to fix the held_in / validation / test splits");
    } else {
        ui.note(
            "next: set the model in .harness/experiment.yaml (it is unset; examples are in its comments), commit it, then `git harness split`",
        );
    }
    Ok(exit::SUCCESS)
}
