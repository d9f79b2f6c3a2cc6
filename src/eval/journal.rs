//! The journal of a run in progress: every finished trial is appended and flushed to disk
//! before it is reported, so `kill -9` loses only trials in flight.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TrialResult;
use crate::error::{Error, IoContext, Result};

/// What a run was asked to do, so `--resume <id>` can continue it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
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
}

pub struct Journal {
    dir: PathBuf,
    file: std::fs::File,
}

impl Journal {
    pub fn dir_for(state_dir: &Path, id: &str) -> PathBuf {
        state_dir.join("journal").join(id)
    }

    /// Start a new journal (fails if it exists) or reopen one to append.
    pub fn open(state_dir: &Path, meta: &RunMeta, resume: bool) -> Result<Self> {
        let dir = Self::dir_for(state_dir, &meta.id);
        if !resume && dir.exists() {
            return Err(Error::usage(format!(
                "a journal for run {} already exists",
                meta.id
            )));
        }
        std::fs::create_dir_all(dir.join("traces")).at(&dir)?;
        let meta_path = dir.join("meta.yaml");
        if !meta_path.exists() {
            std::fs::write(
                &meta_path,
                crate::secrets::redact_str(&crate::yaml::to_string(meta)).as_bytes(),
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
        crate::yaml::from_str(&text, &path)
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

    /// Write the trace first, then the result line, then fsync: a journaled result always has
    /// its trace.
    pub fn append(&mut self, result: &TrialResult, trace: Option<&[u8]>) -> Result<()> {
        if let (Some(bytes), Some(rel)) = (trace, result.trace.as_deref()) {
            let path = self.dir.join(rel);
            if let Some(p) = path.parent() {
                std::fs::create_dir_all(p).at(p)?;
            }
            std::fs::write(&path, crate::secrets::redact(bytes)).at(&path)?;
        }
        let mut line =
            crate::secrets::redact(&serde_json::to_vec(result).expect("result serializes"))
                .into_owned();
        line.push(b'\n');
        self.file.write_all(&line).at(&self.dir)?;
        self.file.sync_data().at(&self.dir)?;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Remove the journal once the run record is in git.
    pub fn remove(state_dir: &Path, id: &str) {
        let _ = std::fs::remove_dir_all(Self::dir_for(state_dir, id));
    }

    /// Ids of journals left behind by interrupted runs.
    pub fn unfinished(state_dir: &Path) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(state_dir.join("journal")) else {
            return Vec::new();
        };
        let mut v: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}
