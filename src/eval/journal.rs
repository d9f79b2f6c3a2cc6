//! The journal of a run in progress: every finished trial is appended and flushed to disk
//! before it is reported, so `kill -9` loses only trials in flight. The scheduler writes through
//! a group writer on a thread of its own, so no trial waits for the disk to start.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TrialResult;
use crate::error::{Error, IoContext, Result};
use crate::support::owner::Owner;

/// Where a group writer hands back what it wrote, with how the write went.
pub type OnDisk<T> = tokio::sync::mpsc::UnboundedReceiver<(T, Result<()>)>;

/// One journal entry: a result, its trace and its kept workspace.
pub type Entry<'a> = (&'a TrialResult, Option<&'a [u8]>, Option<&'a [u8]>);

/// Write each entry's files, then its result line; then one fsync for them all.
fn write_batch<'a>(
    dir: &Path,
    file: &mut std::fs::File,
    entries: impl IntoIterator<Item = Entry<'a>>,
) -> Result<()> {
    let mut lines = Vec::new();
    for (result, trace, workspace) in entries {
        for (bytes, rel) in [
            (trace, result.trace.as_deref()),
            (workspace, result.workspace.as_deref()),
        ] {
            let (Some(bytes), Some(rel)) = (bytes, rel) else {
                continue;
            };
            let path = dir.join(rel);
            if let Some(p) = path.parent() {
                std::fs::create_dir_all(p).at(p)?;
            }
            std::fs::write(&path, crate::support::secrets::redact(bytes)).at(&path)?;
        }
        let line = crate::support::secrets::redact(
            &serde_json::to_vec(result).expect("result serializes"),
        )
        .into_owned();
        lines.extend_from_slice(&line);
        lines.push(b'\n');
    }
    file.write_all(&lines).at(dir)?;
    file.sync_data().at(dir)?;
    Ok(())
}

/// What a run was asked to do, so `--resume <id>` can continue it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// The record's format version (docs/formats.md); absent in records written before: 1.
    #[serde(default = "crate::support::format::v1")]
    pub format: u32,
    pub id: String,
    pub harness_commit: String,
    pub harness_tree: String,
    pub surface_tree: String,
    pub fingerprint: String,
    pub splits: Vec<String>,
    pub trials: u32,
    pub tasks: Vec<String>,
    pub agent: super::AgentKind,
    pub worktree: bool,
    pub model: String,
    pub runner: String,
    pub seed: u64,
    pub started_at: String,
    /// Started with `--no-cache`: a resume executes every missing trial too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_cache: bool,
    /// A run made by `regrade`: the run whose kept workspaces it verified again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regraded_from: Option<String>,
    /// The run's summary stays out of the harness commit's note (a run of `revalidate`, which
    /// changes no history).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_note: bool,
}

/// `run.yaml` of a run ref and `meta.yaml` of a journal.
impl crate::support::format::Versioned for RunMeta {
    const RECORD: &'static str = "run record";
    const FORMAT: u32 = 1;
    fn format(&self) -> u32 {
        self.format
    }
}

/// The file of a journal that names the process writing it (see [`crate::support::owner`]).
const OWNER_FILE: &str = "owner";
/// Present when the run was interrupted (rather than killed).
const INTERRUPTED_FILE: &str = "interrupted";
/// A journal being removed is first renamed to this prefix, so a half-removed journal is never
/// read as a run.
const REMOVING_PREFIX: &str = ".removing-";

pub struct Journal {
    dir: PathBuf,
    file: std::fs::File,
}

impl Journal {
    pub fn dir_for(state_dir: &Path, id: &str) -> PathBuf {
        state_dir.join("journal").join(id)
    }

    /// Start a new journal (fails if it exists) or reopen one to append. The journal names
    /// this process as its owner; a journal whose owner is alive is not reopened.
    pub fn open(state_dir: &Path, meta: &RunMeta, resume: bool) -> Result<Self> {
        let dir = Self::dir_for(state_dir, &meta.id);
        if !resume && dir.exists() {
            return Err(Error::usage(format!(
                "a journal for run {} already exists",
                meta.id
            )));
        }
        if resume
            && let Some(o) = Self::owner(state_dir, &meta.id)
            && o != Owner::me()
            && o.is_alive()
        {
            return Err(Error::usage_hint(
                format!("run {} is still running (process {})", meta.id, o.pid),
                "wait for it to finish, or stop that process first",
            ));
        }
        std::fs::create_dir_all(dir.join("traces")).at(&dir)?;
        // The owner is written before anything else: a journal without one was left by a
        // process killed while it was being created.
        let owner_path = dir.join(OWNER_FILE);
        std::fs::write(&owner_path, Owner::me().to_string()).at(&owner_path)?;
        if resume && let Some(git_dir) = state_dir.parent() {
            crate::lineage::clear_dead_owners_run_lock(git_dir, &meta.id);
        }
        let meta_path = dir.join("meta.yaml");
        if !meta_path.exists() {
            std::fs::write(
                &meta_path,
                crate::support::secrets::redact_str(&crate::support::yaml::to_string(meta))
                    .as_bytes(),
            )
            .at(&meta_path)?;
        }
        let path = dir.join("journal.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .at(&path)?;
        Ok(Journal { dir, file })
    }

    pub fn read_meta(state_dir: &Path, id: &str) -> Result<RunMeta> {
        let path = Self::dir_for(state_dir, id).join("meta.yaml");
        let text = std::fs::read_to_string(&path).map_err(|_| {
            Error::usage_hint(
                format!("no unfinished run `{id}`"),
                "list runs with `git harness status`",
            )
        })?;
        let meta: RunMeta = crate::support::yaml::from_str(&text, &path)?;
        crate::support::format::check(&meta, &path.display().to_string())?;
        Ok(meta)
    }

    /// The results journaled so far (a torn last line from a crash is ignored).
    pub fn read_results(state_dir: &Path, id: &str) -> Vec<TrialResult> {
        let path = Self::dir_for(state_dir, id).join("journal.jsonl");
        let Ok(bytes) = std::fs::read(path) else {
            return Vec::new();
        };
        bytes
            .split(|b| *b == b'\n')
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect()
    }

    pub fn traces_dir(&self) -> PathBuf {
        self.dir.join("traces")
    }

    /// Write the trace (and the kept workspace) first, then the result line, then fsync: a
    /// journaled result always has its files.
    pub fn append(
        &mut self,
        result: &TrialResult,
        trace: Option<&[u8]>,
        workspace: Option<&[u8]>,
    ) -> Result<()> {
        write_batch(&self.dir, &mut self.file, [(result, trace, workspace)])
    }

    /// A writer on a thread of its own that commits in groups: every item sent is written (its
    /// files, then its result line), and whatever arrived while one fsync ran shares the next.
    /// Each item comes back on the receiver once it is on disk (with the error, if writing
    /// failed), so a caller reports a result only when a crash can no longer lose it, and a
    /// trial's slot need not wait for the disk. `parts` names an item's result and files.
    pub fn group_writer<T: Send + 'static>(
        &self,
        parts: fn(&T) -> Entry<'_>,
    ) -> Result<(std::sync::mpsc::Sender<T>, OnDisk<T>)> {
        let dir = self.dir.clone();
        let mut file = self.file.try_clone().at(&self.dir)?;
        let (tx, rx) = std::sync::mpsc::channel::<T>();
        let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let r = write_batch(&dir, &mut file, batch.iter().map(parts));
                    let msg = r.err().map(|e| e.to_string());
                    for item in batch {
                        let r = match &msg {
                            None => Ok(()),
                            Some(m) => Err(Error::io(&dir, std::io::Error::other(m.clone()))),
                        };
                        if done_tx.send((item, r)).is_err() {
                            return;
                        }
                    }
                }
            })
            .at(&self.dir)?;
        Ok((tx, done_rx))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Mark the journal of an interrupted run: it stays for `--resume` even with no result.
    pub fn mark_interrupted(state_dir: &Path, id: &str) {
        let _ = std::fs::write(Self::dir_for(state_dir, id).join(INTERRUPTED_FILE), b"");
    }

    pub fn was_interrupted(state_dir: &Path, id: &str) -> bool {
        Self::dir_for(state_dir, id).join(INTERRUPTED_FILE).exists()
    }

    /// The process that writes (or last wrote) the journal of run `id`.
    pub fn owner(state_dir: &Path, id: &str) -> Option<Owner> {
        let text = std::fs::read_to_string(Self::dir_for(state_dir, id).join(OWNER_FILE)).ok()?;
        Owner::parse(&text)
    }

    /// Whether the journal of `id` belongs to a process that is gone (or to none at all).
    pub fn abandoned(state_dir: &Path, id: &str) -> bool {
        Self::owner(state_dir, id).is_none_or(|o| !o.is_alive())
    }

    /// Remove the journal once the run record is in git. It is renamed first, so a kill in the
    /// middle never leaves a journal that has lost some of its traces.
    pub fn remove(state_dir: &Path, id: &str) {
        let dir = Self::dir_for(state_dir, id);
        let doomed = state_dir
            .join("journal")
            .join(format!("{REMOVING_PREFIX}{id}.{}", Owner::me()));
        if std::fs::rename(&dir, &doomed).is_ok() {
            let _ = std::fs::remove_dir_all(&doomed);
        }
    }

    /// Ids of journals left behind by interrupted runs.
    pub fn unfinished(state_dir: &Path) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(state_dir.join("journal")) else {
            return Vec::new();
        };
        let mut v: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(REMOVING_PREFIX))
            .collect();
        v.sort();
        v
    }

    /// Remove journals whose removal a killed process began.
    pub fn sweep_removed(state_dir: &Path) {
        let Ok(rd) = std::fs::read_dir(state_dir.join("journal")) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(REMOVING_PREFIX) else {
                continue;
            };
            // `<id>.<pid>.<start>`: the run id itself holds no dot.
            let owner = rest.split_once('.').and_then(|(_, o)| Owner::parse(o));
            if owner.is_none_or(|o| !o.is_alive()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
