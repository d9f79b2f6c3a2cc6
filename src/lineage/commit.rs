//! Plain commits on main: the initial harness commit and fixed-state updates (`split`).

use super::Store;
use std::path::Path;

use git2::{Oid, Repository};

use super::{
    cas_ref, main_branch, main_ref, signature, update_checked_out_worktree, worktree_is_clean,
};
use crate::error::{Error, GitContext, Result};

/// Open the repository at `dir`, or create one whose first branch is main.
pub fn init_or_open(dir: &Path) -> Result<(Repository, bool)> {
    match Repository::open(dir) {
        Ok(r) => Ok((r, false)),
        Err(_) => {
            let mut opts = git2::RepositoryInitOptions::new();
            opts.initial_head(super::DEFAULT_MAIN).mkpath(true);
            let r = Repository::init_opts(dir, &opts)
                .git(format!("create a repository in {}", dir.display()))?;
            Ok((r, true))
        }
    }
}

/// Stage `paths` (relative to the worktree) and commit them on main, creating main when the
/// repository has no commits yet. HEAD must be main (or unborn).
pub fn commit_worktree_paths(repo: &Repository, paths: &[String], message: &str) -> Result<Oid> {
    let main_name = main_ref(repo);
    let head = repo.find_reference("HEAD").git("read HEAD")?;
    let head_target = head.symbolic_target().ok().flatten().map(str::to_string);
    if head_target.as_deref() != Some(main_name.as_str()) {
        if repo.head().is_ok() {
            return Err(Error::usage_hint(
                format!("HEAD is not on {}", main_branch(repo)),
                format!(
                    "check out {} first (or set harness.mainBranch)",
                    main_branch(repo)
                ),
            ));
        }
        // An unborn HEAD on another name (e.g. `master`): start main instead.
        repo.set_head(&main_name).git("point HEAD at main")?;
    }
    let mut index = repo.index().git("open the index")?;
    for p in paths {
        index.add_path(Path::new(p)).git(format!("stage {p}"))?;
    }
    index.write().git("write the index")?;
    let tree_id = index.write_tree().git("write tree")?;
    let tree = repo.find_tree(tree_id).git("read tree")?;
    let sig = signature(repo)?;
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.store_commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .git("commit")
}

/// Commit `changes` (path -> content) on top of main without touching the index first, moving
/// main compare-and-swap and updating a clean checkout.
pub fn commit_on_main(
    repo: &Repository,
    changes: &[(String, String)],
    message: &str,
) -> Result<Oid> {
    let main_name = main_ref(repo);
    let main = super::main_commit(repo)?;
    let checked_out = !repo.is_bare()
        && repo
            .find_reference("HEAD")
            .ok()
            .and_then(|h| h.symbolic_target().ok().flatten().map(|t| t == main_name))
            .unwrap_or(false);
    if checked_out && !worktree_is_clean(repo)? {
        return Err(Error::usage_hint(
            "the worktree has uncommitted changes",
            "commit or stash them first; this command commits on main and updates the checkout",
        ));
    }
    let base = main.tree().git("read main tree")?;
    let mut update = git2::build::TreeUpdateBuilder::new();
    for (path, content) in changes {
        let blob = repo.store_blob(content.as_bytes()).git("write blob")?;
        update.upsert(path.as_str(), blob, git2::FileMode::Blob);
    }
    let tree_id = update.create_updated(repo, &base).git("build tree")?;
    let tree = repo.find_tree(tree_id).git("read tree")?;
    let sig = signature(repo)?;
    let commit = repo
        .store_commit(None, &sig, &sig, message, &tree, &[&main])
        .git("commit")?;
    cas_ref(repo, &main_name, main.id(), commit, "git-harness: commit")?;
    if checked_out {
        update_checked_out_worktree(repo)?;
    }
    Ok(commit)
}
