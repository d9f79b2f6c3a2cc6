//! Run records `refs/harness/runs/<id>` (a commit whose tree holds run.yaml, results and traces,
//! parented on the evaluated harness commit so a fetch of the ref brings that commit along) and
//! the test log `refs/harness/test-log` (one commit per opening of the test split).

use super::Store;
use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};

use super::{RUNS_PREFIX, TEST_LOG_REF, create_ref, signature};
use crate::error::{Error, GitContext, Result};

/// Write a run record. `files` are (path in the run tree, bytes). The ref must not exist.
pub fn write_run(
    repo: &Repository,
    id: &str,
    harness_commit: Option<Oid>,
    files: &[(String, Vec<u8>)],
    message: &str,
) -> Result<Oid> {
    let tree = build_tree(repo, files)?;
    let sig = signature(repo)?;
    let parent = match harness_commit {
        Some(c) => Some(repo.find_commit(c).git("read harness commit")?),
        None => None,
    };
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let tree = repo.find_tree(tree).git("read run tree")?;
    let commit = repo
        .store_commit(None, &sig, &sig, message, &tree, &parents)
        .git("write run commit")?;
    create_ref(
        repo,
        &format!("{RUNS_PREFIX}{id}"),
        commit,
        "git-harness: run",
    )?;
    Ok(commit)
}

/// Remove the lock on a run's ref left by the run's dead owner. Only the process that owns a
/// run's journal writes its ref, so once a resume has taken the journal over from a dead owner, a
/// lock on that ref can only be the dead owner's (killed between taking and releasing it).
pub fn clear_dead_owners_run_lock(git_dir: &std::path::Path, id: &str) {
    let lock = git_dir.join(format!("{RUNS_PREFIX}{id}.lock"));
    let _ = std::fs::remove_file(lock);
}

fn build_tree(repo: &Repository, files: &[(String, Vec<u8>)]) -> Result<Oid> {
    let empty = repo
        .treebuilder(None)
        .git("start tree")?
        .write()
        .git("write empty tree")?;
    let base = repo.find_tree(empty).git("read empty tree")?;
    let mut update = git2::build::TreeUpdateBuilder::new();
    for (path, bytes) in files {
        let blob = repo.store_blob(bytes).git("write run file")?;
        update.upsert(path.as_str(), blob, git2::FileMode::Blob);
    }
    update.create_updated(repo, &base).git("build run tree")
}

/// Every run id with its commit, newest first by commit time.
pub fn list_runs(repo: &Repository) -> Result<Vec<(String, Oid, i64)>> {
    let mut out = Vec::new();
    for r in repo
        .references_glob(&format!("{RUNS_PREFIX}*"))
        .git("list runs")?
    {
        let r = r.git("read run ref")?;
        let Ok(name) = r.name() else { continue };
        let id = name[RUNS_PREFIX.len()..].to_string();
        let c = r.peel_to_commit().git(format!("read {name}"))?;
        out.push((id, c.id(), c.time().seconds()));
    }
    out.sort_by(|a, b| b.2.cmp(&a.2).then(b.0.cmp(&a.0)));
    Ok(out)
}

/// A file of a run record, or `None` when the run or file does not exist.
pub fn read_run_file(repo: &Repository, id: &str, path: &str) -> Result<Option<Vec<u8>>> {
    let Ok(r) = repo.find_reference(&format!("{RUNS_PREFIX}{id}")) else {
        return Ok(None);
    };
    let tree = r.peel_to_tree().git("read run tree")?;
    let Ok(entry) = tree.get_path(std::path::Path::new(path)) else {
        return Ok(None);
    };
    let blob = repo.find_blob(entry.id()).git("read run file")?;
    Ok(Some(blob.content().to_vec()))
}

/// One opening of the test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestLogEntry {
    /// 1 for the first opening.
    pub opening: u32,
    pub harness: String,
    pub harness_tree: String,
    pub fingerprint: String,
    pub passes: u32,
    pub trials: u32,
    pub infra_errors: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<String>,
    /// Other harnesses evaluated in the same opening (e.g. the checklist baseline).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baselines: Vec<BaselineResult>,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineResult {
    pub name: String,
    pub passes: u32,
    pub trials: u32,
    pub infra_errors: u32,
}

/// All openings, oldest first.
pub fn test_log_entries(repo: &Repository) -> Result<Vec<TestLogEntry>> {
    let Ok(tip) = repo.refname_to_id(TEST_LOG_REF) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut cur = Some(repo.find_commit(tip).git("read test log")?);
    while let Some(c) = cur {
        let tree = c.tree().git("read test log tree")?;
        if let Some(e) = tree.get_name("opening.yaml") {
            let blob = repo.find_blob(e.id()).git("read test log entry")?;
            let entry: TestLogEntry = serde_yaml::from_slice(blob.content()).map_err(|e| {
                Error::Internal(format!("test log entry {} is unreadable: {e}", c.id()))
            })?;
            out.push(entry);
        }
        cur = c.parent(0).ok();
    }
    out.reverse();
    Ok(out)
}

/// Append one opening, compare-and-swap on the log's tip; `entry.opening` is set here.
pub fn append_test_log(repo: &Repository, mut entry: TestLogEntry) -> Result<TestLogEntry> {
    append_commit(repo, TEST_LOG_REF, |_| {
        entry.opening = test_log_entries(repo)?.len() as u32 + 1;
        let file = (
            "opening.yaml".to_string(),
            crate::support::yaml::to_string(&entry).into_bytes(),
        );
        let tree = build_tree(repo, &[file])?;
        let msg = format!(
            "Test split opening #{}: {} passed {}/{}\n",
            entry.opening,
            &entry.harness[..entry.harness.len().min(10)],
            entry.passes,
            entry.trials
        );
        Ok((tree, msg))
    })?;
    Ok(entry)
}

/// Add files to an existing run record (e.g. the mined bundle), as a child commit of the run's
/// commit, moving the ref compare-and-swap. Existing files of the same path are replaced; when
/// nothing changes, nothing is written.
pub fn add_run_files(
    repo: &Repository,
    id: &str,
    files: &[(String, Vec<u8>)],
    message: &str,
) -> Result<Oid> {
    let name = format!("{RUNS_PREFIX}{id}");
    let old = repo.refname_to_id(&name).git(format!("read {name}"))?;
    let commit = repo.find_commit(old).git("read run commit")?;
    let base = commit.tree().git("read run tree")?;
    let mut update = git2::build::TreeUpdateBuilder::new();
    for (path, bytes) in files {
        let blob = repo.store_blob(bytes).git("write run file")?;
        update.upsert(path.as_str(), blob, git2::FileMode::Blob);
    }
    let tree_id = update.create_updated(repo, &base).git("build run tree")?;
    // The same files again (e.g. the same bundle mined twice): the record stays as it is.
    if tree_id == base.id() {
        return Ok(old);
    }
    let tree = repo.find_tree(tree_id).git("read tree")?;
    let sig = signature(repo)?;
    let new = repo
        .store_commit(None, &sig, &sig, message, &tree, &[&commit])
        .git("write run commit")?;
    super::cas_ref(repo, &name, old, new, "git-harness: run files")?;
    Ok(new)
}

/// Append files to a log ref (e.g. `refs/harness/proposer-log`): one commit per call, CAS.
pub fn append_log(
    repo: &Repository,
    refname: &str,
    files: &[(String, Vec<u8>)],
    message: &str,
) -> Result<Oid> {
    append_commit(repo, refname, |parent| {
        let base = match parent {
            Some(p) => p.tree().git("read log tree")?,
            None => {
                let empty = build_tree(repo, &[])?;
                repo.find_tree(empty).git("read tree")?
            }
        };
        let mut update = git2::build::TreeUpdateBuilder::new();
        for (path, bytes) in files {
            let blob = repo.store_blob(bytes).git("write log file")?;
            update.upsert(path.as_str(), blob, git2::FileMode::Blob);
        }
        let tree = update.create_updated(repo, &base).git("build log tree")?;
        Ok((tree, message.to_string()))
    })
}

/// The contents of every file named `name` (in any directory) at the tip of the log `refname`.
pub fn log_files_named(repo: &Repository, refname: &str, name: &str) -> Result<Vec<Vec<u8>>> {
    let Ok(tip) = repo.refname_to_id(refname) else {
        return Ok(Vec::new());
    };
    let tree = repo
        .find_commit(tip)
        .and_then(|c| c.tree())
        .git(format!("read {refname}"))?;
    let mut ids = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |_, e| {
        if e.name().ok() == Some(name) && e.kind() == Some(git2::ObjectType::Blob) {
            ids.push(e.id());
        }
        git2::TreeWalkResult::Ok
    })
    .git(format!("walk {refname}"))?;
    ids.into_iter()
        .map(|id| {
            repo.find_blob(id)
                .map(|b| b.content().to_vec())
                .git("read log file")
        })
        .collect()
}

/// Append one commit to the log at `refname`, compare-and-swap on its tip, retrying when another
/// writer won the race. `make` builds the new commit's tree and message on top of the tip it is
/// given, so a retry recomputes them.
fn append_commit(
    repo: &Repository,
    refname: &str,
    mut make: impl FnMut(Option<&git2::Commit<'_>>) -> Result<(Oid, String)>,
) -> Result<Oid> {
    for _ in 0..50 {
        let tip = repo.refname_to_id(refname).ok();
        let parent = match tip {
            Some(t) => Some(repo.find_commit(t).git(format!("read {refname}"))?),
            None => None,
        };
        let (tree, message) = make(parent.as_ref())?;
        let tree = repo.find_tree(tree).git("read log tree")?;
        let sig = signature(repo)?;
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let c = repo
            .store_commit(None, &sig, &sig, &message, &tree, &parents)
            .git(format!("write a commit of {refname}"))?;
        let res = match tip {
            Some(t) => repo.reference_matching(refname, c, true, t, "git-harness: log"),
            None => super::create_ref_atomic(repo, refname, c, "git-harness: log"),
        };
        match res {
            Ok(_) => return Ok(c),
            Err(e)
                if matches!(
                    e.code(),
                    git2::ErrorCode::Modified | git2::ErrorCode::Exists | git2::ErrorCode::Locked
                ) => {}
            Err(e) => return Err(e).git(format!("update {refname}")),
        }
    }
    Err(Error::infra(format!(
        "could not append to {refname}: too many concurrent writers"
    )))
}

/// The commit of a baseline harness (e.g. the `checklist` template) under the experiment of
/// `main`: a parentless commit with the template's files and main's `.harness/`, kept at
/// `refs/harness/baselines/<name>` and remade only when its tree would change.
pub fn baseline_commit(
    repo: &Repository,
    name: &str,
    files: &[(String, String)],
    main: &git2::Commit<'_>,
) -> Result<Oid> {
    let refname = format!("refs/harness/baselines/{name}");
    let main_tree = main.tree().git("read main tree")?;
    let fixed = main_tree
        .get_name(super::FIXED_DIR)
        .ok_or_else(|| Error::usage("main has no .harness/ directory"))?
        .id();
    let empty = repo
        .treebuilder(None)
        .git("start tree")?
        .write()
        .git("write tree")?;
    let base = repo.find_tree(empty).git("read tree")?;
    let mut update = git2::build::TreeUpdateBuilder::new();
    for (path, content) in files {
        let blob = repo
            .store_blob(content.as_bytes())
            .git("write baseline file")?;
        update.upsert(path.as_str(), blob, git2::FileMode::Blob);
    }
    let tree_id = update
        .create_updated(repo, &base)
        .git("build baseline tree")?;
    let mut tb = repo
        .treebuilder(Some(&repo.find_tree(tree_id).git("read tree")?))
        .git("build tree")?;
    tb.insert(super::FIXED_DIR, fixed, 0o040000)
        .git("add .harness")?;
    let tree_id = tb.write().git("write baseline tree")?;
    if let Ok(old) = repo.refname_to_id(&refname)
        && repo
            .find_commit(old)
            .map(|c| c.tree_id() == tree_id)
            .unwrap_or(false)
    {
        return Ok(old);
    }
    let tree = repo.find_tree(tree_id).git("read tree")?;
    let sig = signature(repo)?;
    let c = repo
        .store_commit(
            None,
            &sig,
            &sig,
            &format!("Baseline harness `{name}` under the current experiment\n"),
            &tree,
            &[],
        )
        .git("write baseline commit")?;
    repo.reference(&refname, c, true, "git-harness: baseline")
        .git(format!("update {refname}"))?;
    Ok(c)
}
