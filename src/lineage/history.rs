//! Reading the lineage: the first-parent history of main as harness versions.

use git2::{Oid, Repository};
use serde::Serialize;

use super::notes::{RunSummary, read_note};
use super::trailers::CommitMessage;
use super::{keys, main_commit};
use crate::error::{GitContext, Result};

/// One version of the harness: a commit on main's first-parent chain.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    pub commit: String,
    pub tree: String,
    pub subject: String,
    pub time: i64,
    /// Set for promotion merges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub surface: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overridden: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_in: Option<RunSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<RunSummary>,
    #[serde(skip)]
    pub oid: Oid,
    #[serde(skip)]
    pub message: CommitMessage,
}

/// Main's first-parent history, oldest first, with pass rates from notes under `fingerprint`.
pub fn versions(repo: &Repository, fingerprint: Option<&str>) -> Result<Vec<Version>> {
    versions_to(repo, main_commit(repo)?, fingerprint)
}

/// The first-parent history ending at `tip`, oldest first: main's lineage as of a version, or
/// the lineage a proposal was made on, ending with the proposal.
pub fn versions_to(
    repo: &Repository,
    tip: git2::Commit<'_>,
    fingerprint: Option<&str>,
) -> Result<Vec<Version>> {
    let mut out = Vec::new();
    let mut cur = Some(tip);
    while let Some(c) = cur {
        out.push(version_of(repo, &c, fingerprint)?);
        cur = c.parent(0).ok();
    }
    out.reverse();
    Ok(out)
}

pub fn version_of(
    repo: &Repository,
    c: &git2::Commit<'_>,
    fingerprint: Option<&str>,
) -> Result<Version> {
    let message = CommitMessage::parse(c.message().unwrap_or_default())?;
    let note = read_note(repo, c.id())?;
    let pick = |split: &str| fingerprint.and_then(|fp| note.latest(split, fp).cloned());
    let is_promotion = c.parent_count() == 2 && message.get(keys::PROPOSAL).is_some();
    Ok(Version {
        commit: c.id().to_string(),
        tree: c.tree_id().to_string(),
        subject: message.subject.clone(),
        time: c.time().seconds(),
        proposal: is_promotion.then(|| message.get(keys::PROPOSAL).unwrap_or_default().to_string()),
        surface: message.get(keys::SURFACE).map(str::to_string),
        cluster: message.get(keys::CLUSTER).map(str::to_string),
        verdict: message.get(keys::VERDICT).map(str::to_string),
        overridden: message.get(keys::OVERRIDE).map(str::to_string),
        held_in: pick("held_in"),
        validation: pick("validation"),
        oid: c.id(),
        message,
    })
}

/// The unified diff of the files that differ between two trees.
pub fn tree_diff(repo: &Repository, old: Option<Oid>, new: Oid) -> Result<Vec<FileDiff>> {
    let old_tree = match old {
        Some(o) => Some(repo.find_tree(o).git("read tree")?),
        None => None,
    };
    let new_tree = repo.find_tree(new).git("read tree")?;
    let diff = repo
        .diff_tree_to_tree(old_tree.as_ref(), Some(&new_tree), None)
        .git("diff trees")?;
    let mut out = Vec::new();
    for delta in diff.deltas() {
        let path = delta
            .new_file()
            .path()
            .or_else(|| delta.old_file().path())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let read = |id: Oid| -> String {
            if id.is_zero() {
                return String::new();
            }
            repo.find_blob(id)
                .map(|b| String::from_utf8_lossy(b.content()).into_owned())
                .unwrap_or_default()
        };
        out.push(FileDiff {
            path,
            old: read(delta.old_file().id()),
            new: read(delta.new_file().id()),
        });
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct FileDiff {
    pub path: String,
    pub old: String,
    pub new: String,
}

impl FileDiff {
    /// A unified diff (similar), three lines of context.
    pub fn unified(&self) -> String {
        similar::TextDiff::from_lines(&self.old, &self.new)
            .unified_diff()
            .context_radius(3)
            .header(&format!("a/{}", self.path), &format!("b/{}", self.path))
            .to_string()
    }

    /// (lines added, lines removed).
    pub fn counts(&self) -> (usize, usize) {
        let d = similar::TextDiff::from_lines(&self.old, &self.new);
        let mut added = 0;
        let mut removed = 0;
        for op in d.iter_all_changes() {
            match op.tag() {
                similar::ChangeTag::Insert => added += 1,
                similar::ChangeTag::Delete => removed += 1,
                similar::ChangeTag::Equal => {}
            }
        }
        (added, removed)
    }
}
