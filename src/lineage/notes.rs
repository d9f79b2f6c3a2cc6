//! Result notes under `refs/notes/harness`: one YAML document per harness commit, holding the
//! summaries of its evaluation runs and its validation records. Updated compare-and-swap, so
//! concurrent commands never lose each other's notes.

use super::Store;
use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};

use super::promote::ValidationRecord;
use super::{NOTES_REF, signature};
use crate::error::{Error, GitContext, Result};

/// Pass counts of one run of this commit on one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run: String,
    pub split: String,
    pub fingerprint: String,
    pub passes: u32,
    /// Trials that count (infra errors excluded).
    pub trials: u32,
    pub infra_errors: u32,
    #[serde(default)]
    pub tokens: u64,
    #[serde(default)]
    pub cost_usd: f64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

impl RunSummary {
    pub fn pass_rate(&self) -> f64 {
        if self.trials == 0 {
            0.0
        } else {
            self.passes as f64 / self.trials as f64
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HarnessNote {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunSummary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validations: Vec<ValidationRecord>,
}

impl HarnessNote {
    /// Add a run summary unless the note holds it already.
    pub fn add_run(&mut self, summary: RunSummary) {
        if !self.runs.contains(&summary) {
            self.runs.push(summary);
        }
    }

    /// Add a validation record unless the note holds the same one (only its time differs).
    pub fn add_validation(&mut self, record: ValidationRecord) {
        let same = |r: &ValidationRecord| {
            let mut r = r.clone();
            r.created_at.clone_from(&record.created_at);
            r == record
        };
        if !self.validations.iter().any(same) {
            self.validations.push(record);
        }
    }

    /// The most recent summary of `split` under `fingerprint`.
    pub fn latest(&self, split: &str, fingerprint: &str) -> Option<&RunSummary> {
        self.runs
            .iter()
            .rev()
            .find(|r| r.split == split && r.fingerprint == fingerprint && !r.partial)
    }
}

pub fn read_note(repo: &Repository, commit: Oid) -> Result<HarnessNote> {
    match repo.find_note(Some(NOTES_REF), commit) {
        Ok(note) => {
            let text = note.message().unwrap_or_default();
            serde_yaml::from_str(text).map_err(|e| {
                Error::Internal(format!(
                    "note on {commit} under {NOTES_REF} is not a harness note: {e}"
                ))
            })
        }
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(HarnessNote::default()),
        Err(e) => Err(e).git(format!("read note of {commit}")),
    }
}

/// Read-modify-write the note of `commit`, retrying when another writer won the race. When `f`
/// leaves the note as it was, nothing is written.
pub fn update_note(
    repo: &Repository,
    commit: Oid,
    mut f: impl FnMut(&mut HarnessNote),
) -> Result<()> {
    for _ in 0..50 {
        let current = repo.refname_to_id(NOTES_REF).ok();
        let mut note = read_note_at(repo, current, commit)?;
        let before = note.clone();
        f(&mut note);
        // Nothing to add (e.g. a look-up answered from results already recorded): write nothing.
        if note == before {
            return Ok(());
        }
        let text = crate::yaml::to_string(&note);
        let blob = repo.store_blob(text.as_bytes()).git("write note blob")?;
        let base_tree = match current {
            Some(c) => Some(
                repo.find_commit(c)
                    .git("read notes commit")?
                    .tree()
                    .git("read notes tree")?,
            ),
            None => None,
        };
        let mut tb = repo
            .treebuilder(base_tree.as_ref())
            .git("build notes tree")?;
        tb.insert(commit.to_string(), blob, 0o100644)
            .git("insert note")?;
        let tree = repo
            .find_tree(tb.write().git("write notes tree")?)
            .git("read notes tree")?;
        let sig = signature(repo)?;
        let parents: Vec<git2::Commit<'_>> = match current {
            Some(c) => vec![repo.find_commit(c).git("read notes commit")?],
            None => vec![],
        };
        let parent_refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
        let new = repo
            .store_commit(
                None,
                &sig,
                &sig,
                &format!("Notes for {commit}\n"),
                &tree,
                &parent_refs,
            )
            .git("write notes commit")?;
        let res = match current {
            Some(old) => repo.reference_matching(NOTES_REF, new, true, old, "git-harness: note"),
            None => super::create_ref_atomic(repo, NOTES_REF, new, "git-harness: note"),
        };
        match res {
            Ok(_) => return Ok(()),
            Err(e)
                if matches!(
                    e.code(),
                    git2::ErrorCode::Modified | git2::ErrorCode::Exists | git2::ErrorCode::Locked
                ) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5 + fastrand_ms()));
                continue;
            }
            Err(e) => return Err(e).git("update notes ref"),
        }
    }
    // A lock that never went away is a stale one (its writer was killed): name it.
    if repo.path().join(format!("{NOTES_REF}.lock")).exists() {
        return Err(super::locked(repo, NOTES_REF));
    }
    Err(Error::Infra {
        message: format!("could not update {NOTES_REF}: too many concurrent writers"),
        hint: Some("re-run the command".into()),
    })
}

/// The note as of a given notes commit (not the live ref), so the CAS base and the content agree.
fn read_note_at(repo: &Repository, notes_commit: Option<Oid>, commit: Oid) -> Result<HarnessNote> {
    let Some(nc) = notes_commit else {
        return Ok(HarnessNote::default());
    };
    let tree = repo
        .find_commit(nc)
        .git("read notes commit")?
        .tree()
        .git("read notes tree")?;
    let hex = commit.to_string();
    // Flat layout (ours) or git's fan-out layout (`ab/cdef...`).
    let entry = tree.get_name(&hex).map(|e| e.id()).or_else(|| {
        tree.get_path(std::path::Path::new(&format!(
            "{}/{}",
            &hex[..2],
            &hex[2..]
        )))
        .ok()
        .map(|e| e.id())
    });
    let Some(id) = entry else {
        return Ok(HarnessNote::default());
    };
    let blob = repo.find_blob(id).git("read note blob")?;
    serde_yaml::from_slice(blob.content()).map_err(|e| {
        Error::Internal(format!(
            "note on {commit} under {NOTES_REF} is not a harness note: {e}"
        ))
    })
}

/// A little jitter without pulling an RNG through: the clock's nanoseconds.
fn fastrand_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()) % 20)
        .unwrap_or(7)
}
