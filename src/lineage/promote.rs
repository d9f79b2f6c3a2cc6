//! Validation records and promotion: a two-parent merge built in memory and moved onto main
//! compare-and-swap, so two promotes racing on the same main never lose a merge.

use super::Store;
use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};

use super::checkout::leave_branch;
use super::checkout::{CheckedOut, checked_out as where_checked_out, ensure_can_leave};
use super::keys;
use super::notes::{ValidationRecord, read_note};
use super::proposal::{Proposal, ProposalState, mark_promoted, promoted_ref};
use super::trailers::CommitMessage;
use super::{cas_ref, create_ref, main_ref, short, signature};
use crate::error::{Error, GitContext, Result};
use crate::gate::Verdict;

#[derive(Debug, Clone)]
pub struct PromoteOutcome {
    pub merge: Oid,
    pub main_before: Oid,
    pub worktree_updated: bool,
    pub record: Option<ValidationRecord>,
    /// Why the proposal's branch was kept instead of moving to refs/harness/promoted/.
    pub kept_branch: Option<String>,
}

/// True when the checked-out worktree has no staged or unstaged changes to tracked files.
pub fn worktree_is_clean(repo: &Repository) -> Result<bool> {
    if repo.is_bare() {
        return Ok(true);
    }
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(false).include_ignored(false);
    let statuses = repo.statuses(Some(&mut opts)).git("read worktree status")?;
    Ok(statuses.iter().all(|s| s.status() == git2::Status::CURRENT))
}

/// Is `refname` the branch checked out in this (non-bare) repository?
fn is_checked_out(repo: &Repository, refname: &str) -> bool {
    !repo.is_bare()
        && repo
            .find_reference("HEAD")
            .ok()
            .and_then(|h| h.symbolic_target().ok().flatten().map(|t| t == refname))
            .unwrap_or(false)
}

/// After main moved from a clean checkout, bring index and files to the new tip.
pub fn update_checked_out_worktree(repo: &Repository) -> Result<bool> {
    if !is_checked_out(repo, &main_ref(repo)) {
        return Ok(false);
    }
    check_out_head(repo)?;
    Ok(true)
}

/// Bring the tracked files and the index to HEAD's tree, from whatever state an earlier,
/// interrupted checkout left them in.
///
/// libgit2 plans a checkout from HEAD's tree to the target, and HEAD already names the new main:
/// the plan is empty, and each file is judged on its own. A file that a killed checkout had
/// already written is taken as up to date, so its index entry of the old main was kept (`MM` in
/// `git status`). So the files are written first, then the index is rewritten from the tree:
/// the index is the last thing written, and then it says exactly HEAD's tree, which is how the
/// recovery tells a finished checkout from an unfinished one.
fn check_out_head(repo: &Repository) -> Result<()> {
    let tree = repo
        .head()
        .and_then(|h| h.peel_to_tree())
        .git("read the tree of HEAD")?;
    let mut co = git2::build::CheckoutBuilder::new();
    co.force();
    repo.checkout_tree(tree.as_object(), Some(&mut co))
        .git("update the worktree to the new main")?;
    // Entries whose id did not change keep their file stat data, so `git status` stays cheap.
    let mut index = repo.index().git("read the index")?;
    index
        .read_tree(&tree)
        .git("set the index to the new main")?;
    index.write().git("write the index")?;
    Ok(())
}

/// Merge `proposal` into main when a validation record for this candidate tree, main's tree and
/// `fingerprint` says accept — or when `force_reason` is given, recorded as `Harness-Override`.
pub fn promote(
    repo: &Repository,
    proposal: &Proposal,
    fingerprint: &str,
    gate_report: &str,
    force_reason: Option<&str>,
) -> Result<PromoteOutcome> {
    ensure_promotable_state(proposal, force_reason)?;
    let main_name = main_ref(repo);
    let main = repo
        .find_reference(&main_name)
        .and_then(|r| r.peel_to_commit())
        .git(format!("read {main_name}"))?;
    let candidate = repo
        .find_commit(proposal.commit)
        .git("read proposal commit")?;
    let record = accepting_record(
        repo,
        proposal,
        &main_name,
        &main,
        &candidate,
        fingerprint,
        force_reason,
    )?;

    let checked_out = is_checked_out(repo, &main_name);
    if checked_out {
        ensure_worktree_clean(repo, &main_name, main.id())?;
    }
    // The proposal's branch is retired below; refuse now rather than after main moved.
    if proposal.state == ProposalState::Open {
        ensure_can_leave(repo, &proposal.refname)?;
    }

    let tree_id = merge_tree(repo, proposal, &main, &candidate)?;
    let tree = repo.find_tree(tree_id).git("read merge tree")?;
    let msg = promotion_message(
        proposal,
        gate_report,
        main.id(),
        record.as_ref(),
        force_reason,
    );
    let sig = signature(repo)?;
    let merge = repo
        .store_commit(None, &sig, &sig, &msg, &tree, &[&main, &candidate])
        .git("write merge commit")?;
    let marker = move_main(repo, proposal, &main_name, main.id(), merge)?;

    // The proposal lives on as main's second parent; its branch moves to
    // refs/harness/promoted/ (a checkout of it switches to the new main first).
    // Main has moved: a branch that cannot be retired now stays where it is (nothing is lost)
    // and is reported, rather than failing a promotion that happened.
    let proposal_here = where_checked_out(repo, &proposal.refname) == CheckedOut::Here;
    let (retired, kept_branch) = match mark_promoted(repo, proposal) {
        Ok(r) => (r.is_some(), None),
        Err(e) => (false, Some(e.to_string())),
    };
    let worktree_updated = if checked_out {
        update_checked_out_worktree(repo)?
    } else {
        proposal_here && retired
    };
    let _ = std::fs::remove_file(&marker);
    Ok(PromoteOutcome {
        merge,
        main_before: main.id(),
        worktree_updated,
        record,
        kept_branch,
    })
}

/// A promoted proposal is never promoted again; a rejected one only with a reason.
fn ensure_promotable_state(proposal: &Proposal, force_reason: Option<&str>) -> Result<()> {
    if proposal.state == ProposalState::Promoted {
        return Err(Error::negative(
            format!(
                "proposal {} was promoted already ({})",
                proposal.name(),
                proposal.display_ref()
            ),
            Some(format!(
                "`git harness why {}` explains that promotion",
                proposal.name()
            )),
        ));
    }
    if proposal.state == ProposalState::Rejected && force_reason.is_none() {
        return Err(Error::negative(
            format!("proposal {} was rejected", proposal.name()),
            Some("a rejected proposal can only be promoted with --force --reason TEXT".into()),
        ));
    }
    Ok(())
}

/// The newest validation record of this candidate against main under `fingerprint`; without a
/// force reason it must exist and accept.
fn accepting_record(
    repo: &Repository,
    proposal: &Proposal,
    main_name: &str,
    main: &git2::Commit<'_>,
    candidate: &git2::Commit<'_>,
    fingerprint: &str,
    force_reason: Option<&str>,
) -> Result<Option<ValidationRecord>> {
    let note = read_note(repo, proposal.commit)?;
    let record = note
        .validations
        .iter()
        .rev()
        .find(|r| r.matches(candidate.tree_id(), main.tree_id(), fingerprint))
        .cloned();
    match (&record, force_reason) {
        (Some(r), None) if r.verdict == Verdict::Accept => {}
        (Some(r), None) => {
            return Err(Error::negative(
                format!(
                    "the validation of {} against main ({}) says {}: {}",
                    proposal.name(),
                    short(main.id()),
                    r.verdict,
                    r.reason
                ),
                Some(
                    "only accepted proposals are promoted; use --force --reason TEXT to override"
                        .into(),
                ),
            ));
        }
        (None, None) => {
            return Err(no_record(
                proposal,
                &note.validations,
                main_name,
                main.id(),
                candidate,
                fingerprint,
            ));
        }
        (_, Some(_)) => {}
    }
    Ok(record)
}

/// Why no record admits the promotion, with the step that would make one.
fn no_record(
    proposal: &Proposal,
    validations: &[ValidationRecord],
    main_name: &str,
    main: Oid,
    candidate: &git2::Commit<'_>,
    fingerprint: &str,
) -> Error {
    let candidate_tree = candidate.tree_id().to_string();
    let stale = validations
        .iter()
        .any(|r| r.candidate_tree == candidate_tree);
    // Validated under this experiment, but main has moved since (e.g. another promote).
    let moved_from = validations
        .iter()
        .rev()
        .find(|r| {
            r.candidate_tree == candidate_tree
                && r.fingerprint == fingerprint
                && r.parent != main.to_string()
        })
        .map(|r| r.parent.chars().take(10).collect::<String>());
    let on_main = candidate.parent_id(0).ok() == Some(main);
    let hint = if stale && !on_main {
        // Validation compares with the candidate's parent: re-validating the same commit
        // would compare with the old main again.
        format!(
            "main moved since it was validated; rebase it onto main (`git rebase {} {} && git checkout {}`) and run `git harness validate {}` again",
            main_name.trim_start_matches("refs/heads/"),
            proposal.display_ref(),
            main_name.trim_start_matches("refs/heads/"),
            proposal.name()
        )
    } else if stale {
        format!(
            "it was validated under another experiment; run `git harness validate {}` again",
            proposal.name()
        )
    } else {
        format!("run `git harness validate {}` first", proposal.name())
    };
    let message = match moved_from {
        Some(from) => format!(
            "no accepting validation record for {} against main ({}): main moved from {from} since it was validated",
            proposal.name(),
            short(main)
        ),
        None => format!(
            "no accepting validation record for {} against main ({}) under experiment {fingerprint}",
            proposal.name(),
            short(main)
        ),
    };
    Error::negative(message, Some(hint))
}

/// Promote updates the checked-out files of main, so they must hold no local changes.
fn ensure_worktree_clean(repo: &Repository, main_name: &str, main: Oid) -> Result<()> {
    if worktree_is_clean(repo)? {
        return Ok(());
    }
    // A concurrent promote that moved main and is updating the checkout looks like local
    // changes; report the race, not a dirty worktree.
    if let Ok(now) = repo.refname_to_id(main_name)
        && now != main
    {
        return Err(Error::RefMoved {
            refname: main_name.to_string(),
            expected: main.to_string(),
            actual: now.to_string(),
        });
    }
    Err(Error::usage_hint(
        format!(
            "the worktree has uncommitted changes on {}",
            main_name.trim_start_matches("refs/heads/")
        ),
        "commit or stash them; promote moves main and updates the checked-out files",
    ))
}

/// The promoted tree: the candidate's own when it sits on main, else the merge of both (a
/// conflict refuses the promotion).
fn merge_tree(
    repo: &Repository,
    proposal: &Proposal,
    main: &git2::Commit<'_>,
    candidate: &git2::Commit<'_>,
) -> Result<Oid> {
    if candidate.parent_id(0).ok() == Some(main.id()) {
        return Ok(candidate.tree_id());
    }
    let mut index = repo
        .merge_commits(main, candidate, None)
        .git("merge proposal into main")?;
    if index.has_conflicts() {
        let paths: Vec<String> = index
            .conflicts()
            .git("list conflicts")?
            .filter_map(|c| c.ok())
            .filter_map(|c| {
                c.our
                    .or(c.their)
                    .and_then(|e| String::from_utf8(e.path).ok())
            })
            .collect();
        return Err(Error::negative(
            format!(
                "{} conflicts with main in {}",
                proposal.name(),
                paths.join(", ")
            ),
            Some("propose again on the current main".into()),
        ));
    }
    index.write_tree_to(repo).git("write merge tree")
}

/// The merge commit's message: the gate report and the trailers that tie it to its evidence.
fn promotion_message(
    proposal: &Proposal,
    gate_report: &str,
    main: Oid,
    record: Option<&ValidationRecord>,
    force_reason: Option<&str>,
) -> String {
    let mut msg = CommitMessage::new(format!(
        "Promote {}: {}",
        proposal.name(),
        proposal.message.subject
    ))
    .body(gate_report.to_string())
    .trailer(keys::PROPOSAL, proposal.display_ref());
    for key in [keys::SURFACE, keys::CLUSTER, keys::ROUND] {
        if let Some(v) = proposal.message.get(key) {
            msg = msg.trailer(key, v);
        }
    }
    msg = msg.trailer(keys::PARENT, main.to_string());
    if let Some(r) = record {
        msg = msg
            .trailer(keys::VERDICT, r.verdict.to_string())
            .trailer(keys::GATE, &r.gate)
            .trailer(keys::HELD_IN, r.held_in.describe())
            .trailer(keys::VALIDATION, r.validation.describe());
    } else {
        msg = msg.trailer(keys::VERDICT, "none");
    }
    if let Some(reason) = force_reason {
        msg = msg.trailer(keys::OVERRIDE, reason);
    }
    msg.render()
}

/// Move main to `merge` compare-and-swap, under a pending marker whose path is returned (the
/// caller removes it once the checkout followed).
fn move_main(
    repo: &Repository,
    proposal: &Proposal,
    main_name: &str,
    main: Oid,
    merge: Oid,
) -> Result<std::path::PathBuf> {
    // Between moving main and updating the checkout, a kill would leave the index and files of
    // the old main under the new one (committing them would revert the promotion): say what is
    // under way, so the next command finishes it.
    let pending = Pending {
        owner: crate::support::owner::Owner::me().to_string(),
        refname: main_name.to_string(),
        from: main.to_string(),
        to: merge.to_string(),
        // The branch is retired after main moved (`mark_promoted`): a kill inside that ref
        // transaction leaves its locks, or one ref moved and not the other.
        retire: (proposal.state == ProposalState::Open).then(|| Retire {
            branch: proposal.refname.clone(),
            commit: proposal.commit.to_string(),
            target: promoted_ref(proposal),
        }),
    };
    let marker = pending.write(repo)?;
    if let Err(e) = cas_ref(
        repo,
        main_name,
        main,
        merge,
        &format!("git-harness: promote {}", proposal.name()),
    ) {
        let _ = std::fs::remove_file(&marker);
        return Err(e);
    }
    Ok(marker)
}

/// A promotion under way: main moves from `from` to `to`, then the checkout follows. Kept in
/// `.git/harness/promote-<owner>-<nonce>.pending` while it lasts (one per promotion: concurrent
/// promotes never remove each other's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    owner: String,
    refname: String,
    from: String,
    to: String,
    /// The proposal branch that moves to `refs/harness/promoted/` once main moved (absent in
    /// markers of older builds, and when the proposal was not an open branch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retire: Option<Retire>,
}

/// A retirement of a proposal branch: `branch` (at `commit`) becomes `target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Retire {
    branch: String,
    commit: String,
    target: String,
}

impl Pending {
    fn dir(repo: &Repository) -> std::path::PathBuf {
        repo.path().join("harness")
    }

    /// Written whole or not at all (a temp file renamed), so a kill never leaves half of it.
    /// Returns the marker's path, unique to this promotion (threads of one process too).
    fn write(&self, repo: &Repository) -> Result<std::path::PathBuf> {
        use crate::error::IoContext;
        let dir = Self::dir(repo);
        std::fs::create_dir_all(&dir).at(&dir)?;
        let nonce: u32 = rand::random();
        let stem = format!("promote-{}-{nonce:08x}.pending", self.owner);
        let path = dir.join(&stem);
        let tmp = dir.join(format!(".{stem}.tmp"));
        std::fs::write(&tmp, crate::support::yaml::to_string(self)).at(&tmp)?;
        std::fs::rename(&tmp, &path).at(&path)?;
        Ok(path)
    }

    /// Every marker and temp file, with the owner its name gives.
    fn files(repo: &Repository) -> Vec<(std::path::PathBuf, crate::support::owner::Owner, bool)> {
        let Ok(rd) = std::fs::read_dir(Self::dir(repo)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let (stem, tmp) = if let Some(o) = name
                .strip_prefix(".promote-")
                .and_then(|r| r.strip_suffix(".pending.tmp"))
            {
                (o.to_string(), true)
            } else if let Some(o) = name
                .strip_prefix("promote-")
                .and_then(|r| r.strip_suffix(".pending"))
            {
                (o.to_string(), false)
            } else {
                continue;
            };
            // `<owner>-<nonce>`
            let owner = stem.rsplit_once('-').map_or(stem.as_str(), |(o, _)| o);
            if let Some(o) = crate::support::owner::Owner::parse(owner) {
                out.push((e.path(), o, tmp));
            }
        }
        out
    }
}

/// Finish the promotions whose process died: when main had moved and the checkout had not
/// followed, bring the index and files to the new main (dropping the index lock the dead
/// process held). Returns whether anything was repaired.
pub fn recover_promotion(repo: &Repository) -> Result<bool> {
    let mut repaired = false;
    for (path, owner, tmp) in Pending::files(repo) {
        if owner.is_alive() {
            continue;
        }
        let pending: Option<Pending> = (!tmp)
            .then(|| std::fs::read_to_string(&path).ok())
            .flatten()
            .and_then(|t| serde_yaml::from_str(&t).ok());
        if let Some(p) = pending {
            repaired |= finish_checkout(repo, &p)?;
            repaired |= finish_retire(repo, &p)?;
        }
        let _ = std::fs::remove_file(&path);
    }
    Ok(repaired)
}

/// Remove the lock of `refname` when what it holds says the dead promotion made it: libgit2
/// creates a lock empty and then writes the new id into it, so it is empty or a prefix of `id`.
fn drop_dead_lock(repo: &Repository, refname: &str, id: &str) {
    let lock = repo.path().join(format!("{refname}.lock"));
    if std::fs::read_to_string(&lock).is_ok_and(|t| id.starts_with(t.trim())) {
        let _ = std::fs::remove_file(&lock);
    }
}

/// Finish the retirement of the promoted proposal's branch that the dead process had begun or
/// not reached: once main holds the promotion, the branch at the proposal's commit goes and
/// `refs/harness/promoted/<round>/<slug>` names the commit, whichever of the two the kill left
/// undone, and the locks of its ref transaction go. A branch checked out with changes here, or
/// in another worktree, stays (as `promote` keeps it).
fn finish_retire(repo: &Repository, p: &Pending) -> Result<bool> {
    let Some(r) = &p.retire else {
        return Ok(false);
    };
    let (Ok(to), Ok(commit)) = (Oid::from_str(&p.to), Oid::from_str(&r.commit)) else {
        return Ok(false);
    };
    let Ok(main) = repo.refname_to_id(&p.refname) else {
        return Ok(false);
    };
    // Before main held the promotion nothing was retired; another promotion may have moved
    // main on since.
    if main != to && !repo.graph_descendant_of(main, to).unwrap_or(false) {
        return Ok(false);
    }
    // A lock of the branch being deleted stays empty; the target's receives the commit.
    drop_dead_lock(repo, &r.branch, "");
    drop_dead_lock(repo, &r.target, &r.commit);
    let branch_at = repo.refname_to_id(&r.branch).ok();
    let target_at = repo.refname_to_id(&r.target).ok();
    let branch_left = branch_at == Some(commit);
    if target_at.is_some() && !branch_left {
        return Ok(false);
    }
    // Kept where it cannot be left, as `promote` keeps it: then no promoted ref either.
    if branch_left && leave_branch(repo, &r.branch).is_err() {
        return Ok(false);
    }
    if target_at.is_none() {
        create_ref(repo, &r.target, commit, "git-harness: promoted")?;
    }
    if branch_left {
        let mut tx = repo.transaction().git("start ref transaction")?;
        tx.lock_ref(&r.branch).git(format!("lock {}", r.branch))?;
        if repo.refname_to_id(&r.branch).ok() == Some(commit) {
            tx.remove(&r.branch).git("delete proposal branch")?;
        }
        tx.commit().git("commit ref transaction")?;
    }
    Ok(true)
}

fn finish_checkout(repo: &Repository, p: &Pending) -> Result<bool> {
    // A ref lock that holds this promotion's merge was taken by the dead process (nobody else
    // knows that commit): the move never happened, and the lock goes.
    // git creates the lock empty and then writes the id: a kill in between leaves it empty or
    // holding a prefix of this promotion's id, and that lock is the dead process's too.
    drop_dead_lock(repo, &p.refname, &p.to);
    let now = repo.refname_to_id(&p.refname).ok().map(|o| o.to_string());
    if now.as_deref() != Some(p.to.as_str()) || !is_checked_out(repo, &p.refname) {
        return Ok(false);
    }
    let head_tree = repo
        .find_commit(Oid::from_str(&p.to).git("read the promotion")?)
        .git("read the promotion")?
        .tree_id();
    // The index is the last thing a checkout writes (`check_out_head`): one that says the new
    // tree with no lock beside it is a finished checkout; anything else is finished now.
    let lock = repo.path().join("index.lock");
    let index_tree = repo.index().ok().and_then(|mut i| i.write_tree().ok());
    if !lock.exists() && index_tree == Some(head_tree) {
        return Ok(false);
    }
    let _ = std::fs::remove_file(&lock);
    update_checked_out_worktree(repo)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit_file(repo: &Repository, text: &str, parent: Option<Oid>) -> Oid {
        let blob = repo.blob(text.as_bytes()).unwrap();
        let mut tb = repo.treebuilder(None).unwrap();
        tb.insert("file.txt", blob, 0o100644).unwrap();
        let tree = repo.find_tree(tb.write().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let parents: Vec<git2::Commit<'_>> = parent
            .into_iter()
            .map(|p| repo.find_commit(p).unwrap())
            .collect();
        let refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
        repo.commit(None, &sig, &sig, "c", &tree, &refs).unwrap()
    }

    /// A promotion killed after moving main and before the checkout followed: the next
    /// recovery brings index and files to the new main and drops the dead process's lock.
    #[test]
    fn a_dead_promotion_whose_checkout_did_not_follow_is_finished() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init(tmp.path()).unwrap();
        let old = commit_file(&repo, "old\n", None);
        repo.reference("refs/heads/main", old, true, "t").unwrap();
        repo.set_head("refs/heads/main").unwrap();
        let mut co = git2::build::CheckoutBuilder::new();
        co.force();
        repo.checkout_head(Some(&mut co)).unwrap();
        let new = commit_file(&repo, "new\n", Some(old));
        let pending = Pending {
            // Above any pid the kernel hands out: a process that is gone.
            owner: "4194305.1".into(),
            refname: "refs/heads/main".into(),
            from: old.to_string(),
            to: new.to_string(),
            retire: None,
        };
        pending.write(&repo).unwrap();
        repo.reference("refs/heads/main", new, true, "t").unwrap();
        std::fs::write(repo.path().join("index.lock"), b"").unwrap();

        assert!(recover_promotion(&repo).unwrap());
        let index_tree = repo.index().unwrap().write_tree().unwrap();
        assert_eq!(index_tree, repo.find_commit(new).unwrap().tree_id());
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("file.txt")).unwrap(),
            "new\n"
        );
        assert!(!repo.path().join("index.lock").exists());
        assert!(Pending::files(&repo).is_empty());
        // Idempotent: nothing left to do.
        assert!(!recover_promotion(&repo).unwrap());
    }

    /// A ref lock the dead promotion had only created (empty) or half written goes; one that
    /// holds another commit is someone else's and stays.
    #[test]
    fn a_ref_lock_the_dead_promotion_left_empty_or_half_written_goes() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init(tmp.path()).unwrap();
        let old = commit_file(&repo, "old\n", None);
        repo.reference("refs/heads/main", old, true, "t").unwrap();
        let new = commit_file(&repo, "new\n", Some(old));
        let lock = repo.path().join("refs/heads/main.lock");
        for (content, removed) in [
            (String::new(), true),
            (new.to_string()[..7].to_string(), true),
            (format!("{new}\n"), true),
            (format!("{old}\n"), false),
        ] {
            let pending = Pending {
                owner: "4194305.1".into(),
                refname: "refs/heads/main".into(),
                from: old.to_string(),
                to: new.to_string(),
                retire: None,
            };
            pending.write(&repo).unwrap();
            std::fs::write(&lock, &content).unwrap();
            recover_promotion(&repo).unwrap();
            assert_eq!(!lock.exists(), removed, "lock holding {content:?}");
            let _ = std::fs::remove_file(&lock);
        }
    }

    /// A live owner's promotion is left alone.
    #[test]
    fn a_live_promotion_is_not_touched() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init(tmp.path()).unwrap();
        let old = commit_file(&repo, "old\n", None);
        let pending = Pending {
            owner: crate::support::owner::Owner::me().to_string(),
            refname: "refs/heads/main".into(),
            from: old.to_string(),
            to: old.to_string(),
            retire: None,
        };
        pending.write(&repo).unwrap();
        assert!(!recover_promotion(&repo).unwrap());
        assert_eq!(Pending::files(&repo).len(), 1);
    }
}
