//! Git's rule for branches that a worktree has checked out: they are never deleted or moved
//! under it. Before a proposal branch is retired (promoted or rejected), a clean checkout of it
//! is switched to main; a dirty one, or one in another worktree, makes the command refuse.

use std::path::PathBuf;

use git2::Repository;

use super::{main_branch, main_ref};
use crate::error::{Error, GitContext, Result};

/// Where a branch is checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckedOut {
    /// Not checked out anywhere.
    No,
    /// In this repository's worktree.
    Here,
    /// In another worktree of the same repository.
    Elsewhere(PathBuf),
}

fn head_is(repo: &Repository, refname: &str) -> bool {
    !repo.is_bare()
        && repo
            .find_reference("HEAD")
            .ok()
            .and_then(|h| h.symbolic_target().ok().flatten().map(|t| t == refname))
            .unwrap_or(false)
}

/// Is `refname` checked out in this worktree or another worktree of the repository?
pub fn checked_out(repo: &Repository, refname: &str) -> CheckedOut {
    if head_is(repo, refname) {
        return CheckedOut::Here;
    }
    let here = repo.workdir().and_then(|p| p.canonicalize().ok());
    let mut others: Vec<Repository> = Vec::new();
    // A linked worktree's main worktree lives at the common dir.
    if repo.is_worktree()
        && let Ok(main) = Repository::open(repo.commondir())
    {
        others.push(main);
    }
    if let Ok(names) = repo.worktrees() {
        for name in names.iter().flatten().flatten() {
            if let Ok(wt) = repo.find_worktree(name)
                && let Ok(r) = Repository::open_from_worktree(&wt)
            {
                others.push(r);
            }
        }
    }
    for r in others {
        let dir = r.workdir().and_then(|p| p.canonicalize().ok());
        if dir.is_some() && dir == here {
            continue;
        }
        if head_is(&r, refname) {
            return CheckedOut::Elsewhere(
                r.workdir()
                    .map(|p| p.to_path_buf())
                    .unwrap_or_else(|| r.path().to_path_buf()),
            );
        }
    }
    CheckedOut::No
}

fn short_name(refname: &str) -> &str {
    refname.strip_prefix("refs/heads/").unwrap_or(refname)
}

/// Refuse, before any work is done, when `refname` is checked out where it cannot be left:
/// in another worktree, or here with uncommitted changes. A clean checkout here is fine: it is
/// switched to main when the branch goes.
pub fn ensure_can_leave(repo: &Repository, refname: &str) -> Result<()> {
    match checked_out(repo, refname) {
        CheckedOut::No => Ok(()),
        CheckedOut::Elsewhere(path) => Err(Error::usage_hint(
            format!(
                "branch {} is checked out at {}",
                short_name(refname),
                path.display()
            ),
            format!(
                "switch that worktree to another branch first (`git -C {} switch {}`)",
                path.display(),
                main_branch(repo)
            ),
        )),
        CheckedOut::Here => {
            if super::worktree_is_clean(repo)? {
                Ok(())
            } else {
                Err(Error::usage_hint(
                    format!(
                        "branch {} is checked out and has uncommitted changes",
                        short_name(refname)
                    ),
                    format!(
                        "commit or stash them, or `git switch {}` first; the branch is retired when its proposal is promoted or rejected",
                        main_branch(repo)
                    ),
                ))
            }
        }
    }
}

/// Before `refname` is deleted or moved: if this worktree has it checked out, switch the
/// worktree to main (a safe checkout: it refuses rather than overwrite anything) so HEAD never
/// points at a branch that no longer exists. Returns whether the worktree was switched.
pub(crate) fn leave_branch(repo: &Repository, refname: &str) -> Result<bool> {
    ensure_can_leave(repo, refname)?;
    if checked_out(repo, refname) != CheckedOut::Here {
        return Ok(false);
    }
    let main_name = main_ref(repo);
    let main = repo
        .find_reference(&main_name)
        .and_then(|r| r.peel_to_commit())
        .git(format!("read {main_name}"))?;
    let mut co = git2::build::CheckoutBuilder::new();
    co.safe();
    repo.checkout_tree(main.as_object(), Some(&mut co))
        .map_err(|e| {
            Error::usage_hint(
                format!(
                    "cannot switch the worktree from {} to {}: {}",
                    short_name(refname),
                    main_branch(repo),
                    e.message()
                ),
                format!(
                    "move the files in the way, then `git switch {}`",
                    main_branch(repo)
                ),
            )
        })?;
    repo.set_head(&main_name)
        .git(format!("switch HEAD to {main_name}"))?;
    Ok(true)
}
