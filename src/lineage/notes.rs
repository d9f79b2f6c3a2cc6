//! Result notes under `refs/notes/harness`: one YAML document per harness commit, holding the
//! summaries of its evaluation runs and its validation records. Updated compare-and-swap, so
//! concurrent commands never lose each other's notes.

use super::Store;
use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};

use super::{NOTES_REF, signature};
use crate::error::{Error, GitContext, Result};
use crate::gate::Verdict;
use crate::support::format;

/// Parent vs candidate on one split, as counted by the gate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitComparison {
    pub parent_passes: u32,
    pub parent_trials: u32,
    pub candidate_passes: u32,
    pub candidate_trials: u32,
}

impl SplitComparison {
    pub fn delta(&self) -> i64 {
        i64::from(self.candidate_passes) - i64::from(self.parent_passes)
    }

    /// `7/24 -> 11/24 (+4)`.
    pub fn describe(&self) -> String {
        format!(
            "{}/{} -> {}/{} ({:+})",
            self.parent_passes,
            self.parent_trials,
            self.candidate_passes,
            self.candidate_trials,
            self.delta()
        )
    }
}

/// What `validate` records and `promote` requires: the gate's verdict for exactly this candidate
/// tree against exactly this parent tree under exactly this experiment fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationRecord {
    /// The record's format version (docs/formats.md); absent in records written before: 1.
    #[serde(default = "crate::support::format::v1")]
    pub format: u32,
    pub candidate: String,
    pub candidate_tree: String,
    pub parent: String,
    pub parent_tree: String,
    pub fingerprint: String,
    /// `paper` or `strict`.
    pub gate: String,
    pub verdict: Verdict,
    pub reason: String,
    pub held_in: SplitComparison,
    pub validation: SplitComparison,
    /// The statistic behind the verdict, e.g. `sign-flip p=0.031 (m=6) <= 0.05`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<String>,
    /// Used to rank accepted candidates of one round.
    #[serde(default)]
    pub margin: f64,
    /// Run refs the comparison read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stop: Option<String>,
    pub created_at: String,
    /// The gate's full decision (per-task flips etc.), kept for reports and for reusing the
    /// validation. A decision of a shape this build does not know (written by an older build
    /// before the shape settled) reads as absent: the rest of the record still counts.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "decision_or_none"
    )]
    pub decision: Option<Box<crate::gate::Decision>>,
}

fn decision_or_none<'de, D>(d: D) -> Result<Option<Box<crate::gate::Decision>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let v = <serde_json::Value as Deserialize>::deserialize(d)?;
    Ok(serde_json::from_value(v).ok().map(Box::new))
}

/// A validation in a harness note.
impl format::Versioned for ValidationRecord {
    const RECORD: &'static str = "validation record";
    const FORMAT: u32 = 1;
    fn format(&self) -> u32 {
        self.format
    }
}

impl ValidationRecord {
    /// The gate report carried by a promotion's merge message.
    pub fn gate_report(&self) -> String {
        let r = self;
        let mut s = format!("Gate ({}): {} — {}\n\n", r.gate, r.verdict, r.reason);
        s.push_str(&format!("  held_in     {}\n", r.held_in.describe()));
        s.push_str(&format!("  validation  {}\n", r.validation.describe()));
        if let Some(st) = &r.statistic {
            s.push_str(&format!("  statistic   {st}\n"));
        }
        if let Some(e) = &r.early_stop {
            s.push_str(&format!("  early stop  {e}\n"));
        }
        if !r.runs.is_empty() {
            s.push_str(&format!("  runs        {}\n", r.runs.join(", ")));
        }
        s
    }

    pub fn matches(&self, candidate_tree: Oid, parent_tree: Oid, fingerprint: &str) -> bool {
        self.candidate_tree == candidate_tree.to_string()
            && self.parent_tree == parent_tree.to_string()
            && self.fingerprint == fingerprint
    }
}

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HarnessNote {
    /// The record's format version (docs/formats.md); absent in records written before: 1.
    #[serde(default = "crate::support::format::v1")]
    pub format: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunSummary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validations: Vec<ValidationRecord>,
    /// The null controls of the evolve rounds run on this commit as main.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub null_controls: Vec<NullControlRecord>,
    /// The tasks whose outcome flips across repeats of this commit's tree under one experiment
    /// fingerprint: measured from every cached trial of it whenever it is evaluated as a parent
    /// or by `noise`. Valid only for the tree and fingerprint it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flaky_tasks: Option<FlakyTasksRecord>,
}

/// One flaky task: its passes in the trials free of infrastructure errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlakyTask {
    pub passes: u32,
    pub trials: u32,
    /// passes / trials.
    pub rate: f64,
}

/// Flaky validation tasks, counted: their names stay out of notes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlakyCount {
    pub flaky: u32,
    /// Validation tasks with at least one trial.
    pub of: u32,
}

/// The flaky tasks of a harness tree under one fingerprint (`docs/formats.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlakyTasksRecord {
    /// The record's format version (docs/formats.md).
    pub format: u32,
    /// The commit tree the trials ran on: a commit with another tree has other marks.
    pub tree: String,
    pub fingerprint: String,
    /// Held-in task id → its repeats, for the tasks that flip.
    pub tasks: std::collections::BTreeMap<String, FlakyTask>,
    /// Held-in tasks with at least one trial.
    pub held_in_tasks: u32,
    pub validation: FlakyCount,
    /// Trials (free of infrastructure errors, both gated splits) the marks come from.
    pub from_trials: u32,
}

impl crate::support::format::Versioned for FlakyTasksRecord {
    const RECORD: &'static str = "flaky tasks";
    const FORMAT: u32 = 1;
    fn format(&self) -> u32 {
        self.format
    }
}

impl FlakyTasksRecord {
    /// The marks hold for `tree` under `fingerprint`.
    pub fn holds_for(&self, tree: Oid, fingerprint: &str) -> bool {
        self.tree == tree.to_string() && self.fingerprint == fingerprint
    }
}

/// An evolve round's null control: a byte-different, behaviour-identical copy of main validated
/// like any candidate (and never promoted). An accept is a false accept of the gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NullControlRecord {
    /// The record's format version (docs/formats.md).
    pub format: u32,
    pub round: u32,
    /// The control's commit (its branch is retired whatever the verdict).
    pub commit: String,
    pub fingerprint: String,
    pub verdict: crate::gate::Verdict,
    pub p_value: f64,
    /// The minimum detectable effect of the round's design (80% power, pass-rate points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mde_points: Option<f64>,
    /// Candidate trials the control's validation ran.
    pub trials: usize,
    pub created_at: String,
}

impl crate::support::format::Versioned for NullControlRecord {
    const RECORD: &'static str = "null control";
    const FORMAT: u32 = 1;
    fn format(&self) -> u32 {
        self.format
    }
}

/// The YAML note of a harness commit under `refs/notes/harness`.
impl crate::support::format::Versioned for HarnessNote {
    const RECORD: &'static str = "harness note";
    const FORMAT: u32 = 1;
    fn format(&self) -> u32 {
        self.format
    }
}

impl Default for HarnessNote {
    fn default() -> Self {
        HarnessNote {
            format: <Self as crate::support::format::Versioned>::FORMAT,
            runs: Vec::new(),
            validations: Vec::new(),
            null_controls: Vec::new(),
            flaky_tasks: None,
        }
    }
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

/// The flaky-task marks that hold for `commit` under `fingerprint`: its note's, or those of the
/// nearest first-parent ancestor with the same tree (a commit that changes no file carries
/// them; one that changes any starts without).
pub fn flaky_marks(
    repo: &Repository,
    commit: &git2::Commit<'_>,
    fingerprint: &str,
) -> Result<Option<FlakyTasksRecord>> {
    let tree = commit.tree_id();
    let mut cur = Some(commit.clone());
    while let Some(c) = cur.filter(|c| c.tree_id() == tree) {
        if let Some(f) = read_note(repo, c.id())?.flaky_tasks
            && f.holds_for(tree, fingerprint)
        {
            return Ok(Some(f));
        }
        cur = c.parent(0).ok();
    }
    Ok(None)
}

pub fn read_note(repo: &Repository, commit: Oid) -> Result<HarnessNote> {
    match repo.find_note(Some(NOTES_REF), commit) {
        Ok(note) => parse_note(note.message().unwrap_or_default().as_bytes(), commit),
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
        // Written in this build's format, whatever version it was read in.
        note.format = <HarnessNote as format::Versioned>::FORMAT;
        let text = crate::support::yaml::to_string(&note);
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
        let res = {
            let _mark = WriterMark::new(repo);
            match current {
                Some(old) => {
                    repo.reference_matching(NOTES_REF, new, true, old, "git-harness: note")
                }
                None => super::create_ref_atomic(repo, NOTES_REF, new, "git-harness: note"),
            }
        };
        match res {
            Ok(_) => return Ok(()),
            Err(e)
                if matches!(
                    e.code(),
                    git2::ErrorCode::Modified | git2::ErrorCode::Exists | git2::ErrorCode::Locked
                ) =>
            {
                if e.code() == git2::ErrorCode::Locked && clear_lock_of_dead_writer(repo) {
                    continue;
                }
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
        class: crate::InfraClass::Other,
        message: format!("could not update {NOTES_REF}: too many concurrent writers"),
        hint: Some("re-run the command".into()),
    })
}

/// Where writers of the notes ref mark themselves while they may hold its lock.
fn marks_dir(repo: &Repository) -> std::path::PathBuf {
    repo.path().join("harness/locks/notes")
}

/// This process's mark as a writer of the notes ref, made just before it takes the ref's lock and
/// removed when the update returns: a lock whose only mark belongs to a dead process was left by
/// a writer that was killed holding it (libgit2's lock file names no owner).
struct WriterMark(Option<std::path::PathBuf>);

impl WriterMark {
    fn new(repo: &Repository) -> WriterMark {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = marks_dir(repo);
        let path = dir.join(format!("{}-{n}", crate::support::owner::Owner::me()));
        let made = std::fs::create_dir_all(&dir).and_then(|_| std::fs::File::create(&path));
        WriterMark(made.ok().map(|_| path))
    }
}

impl Drop for WriterMark {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Remove the notes ref's lock when it was left by a killed writer of ours: no live writer is
/// marked, and a dead one's mark was made just before the lock (so the lock is not a live `git
/// notes` of the user's). Dead marks are removed either way. Returns whether the lock went.
fn clear_lock_of_dead_writer(repo: &Repository) -> bool {
    let lock = repo.path().join(format!("{NOTES_REF}.lock"));
    let Ok(locked_at) = std::fs::metadata(&lock).and_then(|m| m.modified()) else {
        return false;
    };
    let Ok(entries) = std::fs::read_dir(marks_dir(repo)) else {
        return false;
    };
    let me = crate::support::owner::Owner::me();
    let mut dead_holder = false;
    let mut dead = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(owner) = name
            .rsplit_once('-')
            .and_then(|(o, _)| crate::support::owner::Owner::parse(o))
        else {
            continue;
        };
        if owner.is_alive() {
            if owner != me {
                // A live writer may hold the lock right now.
                return false;
            }
            continue;
        }
        if let Ok(marked_at) = e.metadata().and_then(|m| m.modified())
            && locked_at
                .duration_since(marked_at)
                .is_ok_and(|d| d < std::time::Duration::from_secs(2))
        {
            dead_holder = true;
        }
        dead.push(e.path());
    }
    for p in dead {
        let _ = std::fs::remove_file(p);
    }
    dead_holder && std::fs::remove_file(&lock).is_ok()
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
    parse_note(blob.content(), commit)
}

/// A note's YAML, its version and the versions of its validation records checked.
fn parse_note(text: &[u8], commit: Oid) -> Result<HarnessNote> {
    let note: HarnessNote = serde_yaml::from_slice(text).map_err(|e| {
        Error::Internal(format!(
            "note on {commit} under {NOTES_REF} is not a harness note: {e}"
        ))
    })?;
    let place = format!("{NOTES_REF} on {commit}");
    format::check(&note, &place)?;
    for v in &note.validations {
        format::check(v, &place)?;
    }
    for c in &note.null_controls {
        format::check(c, &place)?;
    }
    if let Some(f) = &note.flaky_tasks {
        format::check(f, &place)?;
    }
    Ok(note)
}

/// A little jitter without pulling an RNG through: the clock's nanoseconds.
fn fastrand_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()) % 20)
        .unwrap_or(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_with_commit() -> (tempfile::TempDir, Repository, Oid) {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init(tmp.path()).unwrap();
        let c = {
            let tree = repo
                .find_tree(repo.treebuilder(None).unwrap().write().unwrap())
                .unwrap();
            let sig = git2::Signature::now("t", "t@example.com").unwrap();
            repo.commit(None, &sig, &sig, "c", &tree, &[]).unwrap()
        };
        (tmp, repo, c)
    }

    fn lock(repo: &Repository) {
        let lock = repo.path().join(format!("{NOTES_REF}.lock"));
        std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
        std::fs::write(lock, b"").unwrap();
    }

    fn note_one_run(repo: &Repository, c: Oid) -> Result<()> {
        update_note(repo, c, |n| {
            n.add_run(RunSummary {
                run: "r1".into(),
                split: "held_in".into(),
                fingerprint: "f".into(),
                passes: 1,
                trials: 2,
                infra_errors: 0,
                tokens: 0,
                cost_usd: 0.0,
                partial: false,
            })
        })
    }

    /// A writer killed while it held the notes ref's lock: the next write clears the lock.
    #[test]
    fn a_lock_left_by_a_dead_writer_is_cleared_by_the_next_write() {
        let (_tmp, repo, c) = repo_with_commit();
        std::fs::create_dir_all(marks_dir(&repo)).unwrap();
        // Above any pid the kernel hands out: a process that is gone. Its mark, then its lock.
        std::fs::write(marks_dir(&repo).join("4194305.1-0"), b"").unwrap();
        lock(&repo);
        note_one_run(&repo, c).unwrap();
        assert!(!repo.path().join(format!("{NOTES_REF}.lock")).exists());
        assert_eq!(std::fs::read_dir(marks_dir(&repo)).unwrap().count(), 0);
    }

    /// A lock no writer of ours marked (say a user's `git notes` that hangs) stays, named.
    #[test]
    fn a_lock_without_a_dead_writers_mark_stays_and_is_named() {
        let (_tmp, repo, c) = repo_with_commit();
        lock(&repo);
        let err = note_one_run(&repo, c).unwrap_err().to_string();
        assert!(err.contains("locked"), "{err}");
        assert!(repo.path().join(format!("{NOTES_REF}.lock")).exists());
    }
}
