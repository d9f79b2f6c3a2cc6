//! `git harness ci`: write the code-review recipe for a hosted CI.

use git_harness::Result;
use git_harness::harness::ci::{CiKind, write_recipe};
use git_harness::method;

use super::Ui;

/// Write CI files that validate every pull request as a proposal.
///
/// The job merges the pull request onto its base as one proposal commit, runs
/// `git harness validate --format markdown` against the base, and keeps one comment on the pull
/// request (GitHub) or merge request (GitLab) with the gate report, updated on every push. The
/// job's status is the verdict: success on accept; failure on reject (1), indecisive (3), could
/// not test (125). Files are written to the worktree, not committed: review, then commit them
/// (this changes the harness tree, so the next run of main is evaluated afresh).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The hosted CI.
    #[arg(value_enum)]
    pub kind: Kind,
    /// Overwrite files that exist with other content.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Github,
    Gitlab,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let ws = method::open_workspace()?;
    let kind = match args.kind {
        Kind::Github => CiKind::Github,
        Kind::Gitlab => CiKind::Gitlab,
    };
    let root = ws.root();
    let written = write_recipe(&root, kind, args.force)?;
    if written.is_empty() {
        ui.out("the recipe is up to date");
    }
    for p in &written {
        let rel = p.strip_prefix(&root).unwrap_or(p);
        ui.out(format!("wrote {}", rel.display()));
    }
    match kind {
        CiKind::Github => ui.out(
            "next: set the secret your experiment's model.api_key_env names and the variable \
             GIT_HARNESS_INSTALL, then commit the files",
        ),
        CiKind::Gitlab => ui.out(
            "next: include .gitlab/git-harness.yml from .gitlab-ci.yml, set GITLAB_TOKEN, the \
             model key and GIT_HARNESS_INSTALL, then commit the files",
        ),
    }
    Ok(git_harness::exit::SUCCESS)
}
