//! Everything git-harness writes to git: proposal branches, trailers, result notes, run records,
//! rejected refs, the test log, and compare-and-swap promotion merges. This is the only module
//! that writes to the repository.

pub mod bisect;
mod checkout;
mod commit;
pub mod history;
mod notes;
mod promote;
mod proposal;
mod revalidations;
mod runs;
pub mod trailers;

use git2::{Oid, Repository, Signature};

/// The gate's verdict, as validation records store it.
pub use crate::gate::Verdict;
pub use checkout::{CheckedOut, checked_out, ensure_can_leave};
pub use commit::{commit_on_main, commit_worktree_paths, init_or_open};
pub use notes::{
    FlakyCount, FlakyTask, FlakyTasksRecord, HarnessNote, NullControlRecord, RunSummary,
    SplitComparison, ValidationRecord, flaky_marks, read_note, update_note,
};
pub use promote::{
    PromoteOutcome, promote, recover_promotion, update_checked_out_worktree, worktree_is_clean,
};
pub use proposal::{
    MERGED_SLUG, NULL_CONTROL_SLUG, Proposal, ProposalState, create_merged_proposal,
    create_proposal, list_proposals, next_round, reject_proposal, resolve_proposal,
    retire_proposal, slugify as slugify_title,
};
pub use revalidations::{
    Drift, FreshGain, OriginalGain, REVALIDATION_FILE, RevalidationRecord, list_revalidations,
    write_revalidation,
};
pub use runs::{
    BaselineResult, TestLogEntry, add_run_files, append_log, append_test_log, baseline_commit,
    clear_dead_owners_run_lock, list_runs, log_files_named, read_run_file, test_log_entries,
    write_run,
};

use crate::error::{Error, GitContext, Result};

pub const DEFAULT_MAIN: &str = "main";
/// Fixed experiment state; never an editable surface, and left out of the tree that identifies
/// a harness.
pub const FIXED_DIR: &str = ".harness";
pub const PROPOSALS_PREFIX: &str = "refs/heads/harness/proposals/";
pub const REJECTED_PREFIX: &str = "refs/harness/rejected/";
pub const PROMOTED_PREFIX: &str = "refs/harness/promoted/";
pub const RUNS_PREFIX: &str = "refs/harness/runs/";
pub const REVALIDATIONS_PREFIX: &str = "refs/harness/revalidations/";
pub const TEST_LOG_REF: &str = "refs/harness/test-log";
pub const NOTES_REF: &str = "refs/notes/harness";
pub const PROPOSER_LOG_REF: &str = "refs/harness/proposer-log";

/// Trailer keys of proposals and promotions (docs/formats.md).
pub mod keys {
    pub const SURFACE: &str = "Harness-Surface";
    pub const CLUSTER: &str = "Harness-Cluster";
    pub const EVIDENCE: &str = "Harness-Evidence";
    pub const PARENT: &str = "Harness-Parent";
    pub const PROPOSER: &str = "Harness-Proposer";
    pub const ROUND: &str = "Harness-Round";
    pub const VERDICT: &str = "Harness-Verdict";
    pub const GATE: &str = "Harness-Gate";
    pub const HELD_IN: &str = "Harness-Held-In";
    pub const VALIDATION: &str = "Harness-Validation";
    pub const OVERRIDE: &str = "Harness-Override";
    pub const PROPOSAL: &str = "Harness-Proposal";
}

/// Open the repository the way git does (honours `GIT_DIR`, searches upwards).
/// The one way this module writes objects that hold text: blobs and commit messages pass
/// through [`crate::support::secrets::redact`], so no stored object ever holds a secret.
pub(crate) trait Store {
    fn store_blob(&self, bytes: &[u8]) -> std::result::Result<Oid, git2::Error>;
    #[allow(clippy::too_many_arguments)]
    fn store_commit(
        &self,
        update_ref: Option<&str>,
        author: &Signature<'_>,
        committer: &Signature<'_>,
        message: &str,
        tree: &git2::Tree<'_>,
        parents: &[&git2::Commit<'_>],
    ) -> std::result::Result<Oid, git2::Error>;
}

impl Store for Repository {
    fn store_blob(&self, bytes: &[u8]) -> std::result::Result<Oid, git2::Error> {
        self.blob(&crate::support::secrets::redact(bytes))
    }

    fn store_commit(
        &self,
        update_ref: Option<&str>,
        author: &Signature<'_>,
        committer: &Signature<'_>,
        message: &str,
        tree: &git2::Tree<'_>,
        parents: &[&git2::Commit<'_>],
    ) -> std::result::Result<Oid, git2::Error> {
        let message = crate::support::secrets::redact_str(message);
        self.commit(update_ref, author, committer, &message, tree, parents)
    }
}

pub fn open_repo() -> Result<Repository> {
    Repository::open_from_env().map_err(|e| Error::Usage {
        message: format!("not in a git repository: {}", e.message()),
        hint: Some("run `git harness init` to create a harness repository, or cd into one".into()),
    })
}

/// The name of the branch that holds the current harness (`harness.mainBranch`, default `main`).
pub fn main_branch(repo: &Repository) -> String {
    repo.config()
        .and_then(|c| c.get_string("harness.mainBranch"))
        .unwrap_or_else(|_| DEFAULT_MAIN.to_string())
}

pub fn main_ref(repo: &Repository) -> String {
    format!("refs/heads/{}", main_branch(repo))
}

/// The commit at the tip of main.
pub fn main_commit(repo: &Repository) -> Result<git2::Commit<'_>> {
    let name = main_ref(repo);
    let r = repo.find_reference(&name).map_err(|_| Error::Usage {
        message: format!("branch `{}` does not exist", main_branch(repo)),
        hint: Some("run `git harness init` first, or set harness.mainBranch".into()),
    })?;
    r.peel_to_commit().git(format!("read {name}"))
}

/// What a name given on the command line stands for.
#[derive(Debug, Clone)]
pub enum Named {
    /// A proposal: open, rejected or promoted.
    Proposal(Proposal),
    /// `v<N>`: the N-th commit of main's first-parent history (v0 the root), as `log` numbers them.
    Version(usize),
    /// A run id: the harness commit the run evaluated.
    Run(String),
    /// Anything git resolves: a branch, a tag, a hash, `HEAD~2`.
    Revision,
}

/// Resolve any name the tool prints — a proposal (`<round>/<slug>`, its branch or ref), a
/// version (`v3`), a run id, or a git revision — to a commit and what the name was.
pub fn resolve_named<'r>(repo: &'r Repository, name: &str) -> Result<(git2::Commit<'r>, Named)> {
    if let Ok(p) = resolve_proposal(repo, name) {
        let c = repo.find_commit(p.commit).git("read proposal commit")?;
        return Ok((c, Named::Proposal(p)));
    }
    if let Ok(obj) = repo.revparse_single(name) {
        return Ok((
            obj.peel_to_commit()
                .git(format!("peel {name} to a commit"))?,
            Named::Revision,
        ));
    }
    if let Some(n) = name.strip_prefix('v').and_then(|n| n.parse::<usize>().ok()) {
        let chain = first_parent_chain(repo)?;
        return match chain.into_iter().nth(n) {
            Some(c) => Ok((c, Named::Version(n))),
            None => Err(Error::usage_hint(
                format!("there is no version {name} on {}", main_branch(repo)),
                "`git harness log` lists the versions",
            )),
        };
    }
    if let Some(commit) = run_harness_commit(repo, name)? {
        let c = repo.find_commit(commit).git("read evaluated commit")?;
        return Ok((c, Named::Run(name.to_string())));
    }
    Err(Error::usage_hint(
        format!("unknown revision `{name}`"),
        "give a commit, a branch, a version (`v3`), a run id, or a proposal (`<round>/<slug>` or its branch name)",
    ))
}

/// Resolve a revision (`main`, `HEAD~2`, an oid, `v3`, a run id, a proposal name) to a commit.
pub fn resolve_commit<'r>(repo: &'r Repository, rev: &str) -> Result<git2::Commit<'r>> {
    resolve_named(repo, rev).map(|(c, _)| c)
}

/// Main's first-parent history, oldest first: `v0`, `v1`, ...
pub fn first_parent_chain(repo: &Repository) -> Result<Vec<git2::Commit<'_>>> {
    let mut chain = Vec::new();
    let mut cur = Some(main_commit(repo)?);
    while let Some(c) = cur {
        cur = c.parent(0).ok();
        chain.push(c);
    }
    chain.reverse();
    Ok(chain)
}

/// The harness commit a run evaluated, from its `run.yaml`; `None` when there is no such run.
pub fn run_harness_commit(repo: &Repository, id: &str) -> Result<Option<Oid>> {
    let Some(bytes) = read_run_file(repo, id, "run.yaml")? else {
        return Ok(None);
    };
    let v: serde_yaml::Value = serde_yaml::from_slice(&bytes)
        .map_err(|e| Error::Internal(format!("run {id}: unreadable run.yaml: {e}")))?;
    Ok(v.get("harness_commit")
        .and_then(|h| h.as_str())
        .and_then(|h| Oid::from_str(h).ok()))
}

/// The signature for commits we make: the repository's user, or a fixed identity of the tool.
/// Like git, `GIT_COMMITTER_NAME`/`GIT_COMMITTER_EMAIL` win over the configured user (libgit2
/// does not read them), and `GIT_COMMITTER_DATE` is honoured so tests can fix dates.
#[allow(
    clippy::disallowed_methods,
    reason = "commits honour git's own committer environment"
)]
pub fn signature(repo: &Repository) -> Result<Signature<'static>> {
    let base = repo
        .signature()
        .or_else(|_| Signature::now("git-harness", "git-harness@localhost"))
        .git("make a commit signature")?;
    let when = match std::env::var("GIT_COMMITTER_DATE")
        .ok()
        .and_then(|d| parse_git_date(&d))
    {
        Some(t) => t,
        None => base.when(),
    };
    let env = |key: &str| std::env::var(key).ok().filter(|v| !v.trim().is_empty());
    let name = env("GIT_COMMITTER_NAME")
        .unwrap_or_else(|| base.name().unwrap_or("git-harness").to_string());
    let email = env("GIT_COMMITTER_EMAIL")
        .unwrap_or_else(|| base.email().unwrap_or("git-harness@localhost").to_string());
    Signature::new(&name, &email, &when).git("make a commit signature")
}

/// Parses the formats tests use: `@<unix> <tz>`, `<unix> <tz>`, or RFC 3339.
fn parse_git_date(s: &str) -> Option<git2::Time> {
    let s = s.trim().trim_start_matches('@');
    let mut parts = s.split_whitespace();
    if let (Some(secs), tz) = (
        parts.next().and_then(|p| p.parse::<i64>().ok()),
        parts.next(),
    ) {
        let offset = tz.and_then(parse_tz).unwrap_or(0);
        return Some(git2::Time::new(secs, offset));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| git2::Time::new(d.timestamp(), d.offset().local_minus_utc() / 60))
}

fn parse_tz(tz: &str) -> Option<i32> {
    let (sign, digits) = match tz.as_bytes().first()? {
        b'+' => (1, &tz[1..]),
        b'-' => (-1, &tz[1..]),
        _ => (1, tz),
    };
    if digits.len() != 4 {
        return None;
    }
    let h: i32 = digits[..2].parse().ok()?;
    let m: i32 = digits[2..].parse().ok()?;
    Some(sign * (h * 60 + m))
}

/// Create `name` only if it does not exist, checked under the ref's lock. libgit2's
/// non-forcing create checks existence before taking the lock, so two concurrent creates can
/// both succeed and one silently overwrites the other; an expected old value of zero is
/// checked under the lock.
pub(crate) fn create_ref_atomic<'r>(
    repo: &'r Repository,
    name: &str,
    target: Oid,
    msg: &str,
) -> std::result::Result<git2::Reference<'r>, git2::Error> {
    repo.reference_matching(name, target, true, Oid::ZERO_SHA1, msg)
}

/// Create a ref that must not exist yet. While another writer holds the ref's lock, wait for it
/// to finish; then the ref usually exists.
pub(crate) fn create_ref(repo: &Repository, name: &str, target: Oid, msg: &str) -> Result<()> {
    let mut attempt = 0;
    let res = loop {
        match create_ref_atomic(repo, name, target, msg) {
            Err(e) if e.code() == git2::ErrorCode::Locked && attempt < 100 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => break other,
        }
    };
    res.map(|_| ()).map_err(|e| {
        if matches!(
            e.code(),
            git2::ErrorCode::Exists | git2::ErrorCode::Modified
        ) {
            Error::usage(format!("{name} already exists"))
        } else {
            Error::Git {
                context: format!("create {name}"),
                source: e,
            }
        }
    })
}

/// Compare-and-swap: move `name` from `expected` to `new`, failing if someone moved it.
pub(crate) fn cas_ref(
    repo: &Repository,
    name: &str,
    expected: Oid,
    new: Oid,
    msg: &str,
) -> Result<()> {
    // A live writer holds the ref's lock for milliseconds: wait for it, then compare again (the
    // ref has usually moved by then). A lock that stays is named, stale or not.
    for attempt in 0..100 {
        match repo.reference_matching(name, new, true, expected, msg) {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == git2::ErrorCode::Locked => {
                if attempt == 0 && lock_age(repo, name).is_some_and(|a| a >= STALE_LOCK) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) if e.code() == git2::ErrorCode::Modified => {
                let actual = repo
                    .refname_to_id(name)
                    .map(|o| o.to_string())
                    .unwrap_or_else(|_| "(deleted)".into());
                return Err(Error::RefMoved {
                    refname: name.into(),
                    expected: expected.to_string(),
                    actual,
                });
            }
            Err(e) => {
                return Err(Error::Git {
                    context: format!("update {name}"),
                    source: e,
                });
            }
        }
    }
    Err(locked(repo, name))
}

fn lock_age(repo: &Repository, name: &str) -> Option<std::time::Duration> {
    std::fs::metadata(repo.path().join(format!("{name}.lock")))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
}

/// Locks older than this were left by a process that was killed: git holds them for
/// milliseconds.
const STALE_LOCK: std::time::Duration = std::time::Duration::from_secs(10);

/// The error for a ref whose lock file is held: by a live writer, or left by a killed one.
pub(crate) fn locked(repo: &Repository, name: &str) -> Error {
    let lock = repo.path().join(format!("{name}.lock"));
    match lock_age(repo, name) {
        Some(age) if age >= STALE_LOCK => Error::usage_hint(
            format!(
                "{name} is locked by a stale lock file {} ({}s old), left by a git process that was killed",
                lock.display(),
                age.as_secs()
            ),
            format!(
                "if no git command is running on this repository, remove it (`rm {}`) and re-run",
                lock.display()
            ),
        ),
        _ => Error::usage_hint(
            format!(
                "{name} is locked by {}: another command is updating it",
                lock.display()
            ),
            "re-run when it is done",
        ),
    }
}

/// Short oid for display.
pub fn short(oid: Oid) -> String {
    oid.to_string()[..10].to_string()
}

/// The id of a commit's tree without `.harness/`: the harness's surfaces alone. Results are
/// cached by it, so a reworded or rebased commit with the same surfaces reuses them.
pub fn surface_tree(repo: &Repository, commit: &git2::Commit<'_>) -> Result<Oid> {
    let tree = commit.tree().git("read tree")?;
    let mut tb = repo.treebuilder(Some(&tree)).git("build surface tree")?;
    if tb.get(FIXED_DIR).git("read tree entry")?.is_some() {
        tb.remove(FIXED_DIR).git("drop .harness")?;
    }
    tb.write().git("write surface tree")
}
