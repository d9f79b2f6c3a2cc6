//! The trial cache: a result is reused when (surface tree, experiment fingerprint, task id, task
//! checksum, trial index, agent) match. The index is one small file per key under `.git/harness/cache/`,
//! so a look-up is one file read whatever the history's length; it is rebuilt from the run refs
//! whenever a run ref is not indexed yet (e.g. after a clone and fetch), and from the journals
//! of unfinished runs.

use std::path::{Path, PathBuf};

use git2::Repository;
use serde::{Deserialize, Serialize};

use super::journal::Journal;
use super::{AgentKind, TrialResult};
use crate::error::{Error, IoContext, Result};
use crate::lineage;
use crate::support::format;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    pub surface_tree: String,
    pub fingerprint: String,
    /// Two tasks may have byte-identical content: the id keeps their results apart.
    pub task_id: String,
    pub task_checksum: String,
    /// What the sandbox is built from beyond the task's files (Docker: image ids); empty when
    /// nothing.
    #[serde(default)]
    pub environment: String,
    pub trial: u32,
    pub agent: AgentKind,
}

impl CacheKey {
    pub fn digest(&self) -> String {
        let mut h = crate::support::digest::Hasher::new();
        h.update(b"git-harness cache key v2\0");
        for part in [
            self.surface_tree.as_str(),
            self.fingerprint.as_str(),
            self.task_id.as_str(),
            self.task_checksum.as_str(),
            &self.trial.to_string(),
            self.agent.as_str(),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        // Keys without an environment stay what they were, so existing caches still hit.
        if !self.environment.is_empty() {
            h.update(b"environment\0");
            h.update(self.environment.as_bytes());
            h.update([0]);
        }
        h.hex()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedTrial {
    /// The record's format version (docs/formats.md); absent in records written before: 1.
    #[serde(default = "crate::support::format::v1")]
    pub format: u32,
    /// The run (ref or journal) that executed the trial.
    pub run: String,
    pub result: TrialResult,
}

/// A file under `.git/harness/cache/`.
impl crate::support::format::Versioned for CachedTrial {
    const RECORD: &'static str = "cache entry";
    const FORMAT: u32 = 1;
    fn format(&self) -> u32 {
        self.format
    }
}

pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(state_dir: &Path) -> Self {
        Cache {
            dir: state_dir.join("cache"),
        }
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir
            .join(&digest[..2])
            .join(format!("{}.json", &digest[2..]))
    }

    /// The entry under `digest`, if any. An entry that does not read, or of a newer format, is
    /// an error naming the file: the cache is rebuilt from the run refs once it is removed.
    pub fn get(&self, digest: &str) -> Result<Option<CachedTrial>> {
        let path = self.path(digest);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let rebuild = || {
            format!(
                "remove {} (the cache is rebuilt from the run refs)",
                self.dir.display()
            )
        };
        let entry: CachedTrial = serde_json::from_slice(&bytes).map_err(|e| {
            Error::usage_hint(
                format!("cache entry {} does not read: {e}", path.display()),
                rebuild(),
            )
        })?;
        format::check(&entry, &path.display().to_string())?;
        Ok(Some(entry))
    }

    /// The cached result of trial `trial` of `task` under `digest`. An entry that holds
    /// another trial's result (stored under an older key that did not name the task, or a
    /// copied index) is a miss: a hit is never relabelled.
    pub fn lookup(&self, digest: &str, task: &str, trial: u32) -> Result<Option<CachedTrial>> {
        Ok(self
            .get(digest)?
            .filter(|c| c.result.task == task && c.result.trial == trial))
    }

    /// Store a result; infrastructure errors are never cached.
    pub fn put(&self, digest: &str, run: &str, result: &TrialResult) -> Result<()> {
        if result.is_infra() {
            return Ok(());
        }
        let path = self.path(digest);
        let parent = path.parent().expect("cache path has a parent");
        std::fs::create_dir_all(parent).at(parent)?;
        let entry = CachedTrial {
            format: <CachedTrial as crate::support::format::Versioned>::FORMAT,
            run: run.to_string(),
            result: result.clone(),
        };
        let bytes = serde_json::to_vec(&entry).expect("cache entry serializes");
        // Write then rename: a reader never sees half an entry.
        let tmp = parent.join(format!(".{}.tmp{}", &digest[2..], std::process::id()));
        std::fs::write(&tmp, crate::support::secrets::redact(&bytes)).at(&tmp)?;
        std::fs::rename(&tmp, &path).at(&path)?;
        Ok(())
    }

    /// Index the trials journaled by unfinished runs (killed, or still going) that are not
    /// indexed yet: a run killed between journaling a trial and caching it loses nothing.
    pub fn sync_from_journals(&self, state_dir: &Path) -> Result<usize> {
        let mut n = 0;
        for id in Journal::unfinished(state_dir) {
            for r in Journal::read_results(state_dir, &id) {
                if let Some(d) = &r.cache_key
                    && r.cached_from.is_none()
                    && !r.is_infra()
                    && self.get(d)?.is_none()
                {
                    self.put(d, &id, &r)?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Index every run ref that is not indexed yet. Returns how many runs were indexed.
    pub fn sync_from_refs(&self, repo: &Repository) -> Result<usize> {
        let marks = self.dir.join("runs");
        let mut n = 0;
        for (id, _, _) in lineage::list_runs(repo)? {
            let mark = marks.join(&id);
            if mark.exists() {
                continue;
            }
            if let Some(bytes) = lineage::read_run_file(repo, &id, super::RESULTS_FILE)? {
                let place = format!("{}{id}:{}", lineage::RUNS_PREFIX, super::RESULTS_FILE);
                for r in super::parse_results(&bytes, &place)? {
                    if r.cached_from.is_some() {
                        continue;
                    }
                    if let Some(d) = r.cache_key.clone()
                        && self.get(&d)?.is_none()
                    {
                        self.put(&d, &id, &r)?;
                    }
                }
            }
            std::fs::create_dir_all(&marks).at(&marks)?;
            std::fs::write(&mark, b"").at(&mark)?;
            n += 1;
        }
        Ok(n)
    }
}
