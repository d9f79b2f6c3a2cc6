//! Proposal branches `harness/proposals/<round>/<slug>`: one commit on its parent whose message
//! carries the evidence; rejected ones move to `refs/harness/rejected/<round>/<slug>`, promoted
//! ones (and those a promoted merge combined) to `refs/harness/promoted/<round>/<slug>`, so every
//! name the tool ever printed keeps resolving.

use super::Store;
use git2::{Oid, Repository};

use super::checkout::leave_branch;
use super::trailers::CommitMessage;
use super::{PROMOTED_PREFIX, PROPOSALS_PREFIX, REJECTED_PREFIX, create_ref, signature};
use crate::error::{Error, GitContext, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposalState {
    Open,
    Rejected,
    /// Merged into main, alone or inside a merged candidate.
    Promoted,
}

impl ProposalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalState::Open => "open",
            ProposalState::Rejected => "rejected",
            ProposalState::Promoted => "promoted",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Proposal {
    pub round: u32,
    pub slug: String,
    pub refname: String,
    pub commit: Oid,
    pub parent: Option<Oid>,
    pub state: ProposalState,
    pub message: CommitMessage,
}

impl Proposal {
    /// `<round>/<slug>`: how users name a proposal.
    pub fn name(&self) -> String {
        format!("{}/{}", self.round, self.slug)
    }

    /// The branch name for open proposals, the ref for rejected and promoted ones.
    pub fn display_ref(&self) -> String {
        self.refname
            .strip_prefix("refs/heads/")
            .unwrap_or(&self.refname)
            .to_string()
    }
}

/// A slug for branch names: lowercase ascii, digits and dashes.
pub fn slugify(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-');
    out.chars()
        .take(48)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

/// Create the proposal branch: one commit on `parent` changing `changes` (path -> new content,
/// `None` deletes), with `message`. Fails if the branch exists.
pub fn create_proposal(
    repo: &Repository,
    parent: &git2::Commit<'_>,
    round: u32,
    slug: &str,
    changes: &[(String, Option<String>)],
    message: &CommitMessage,
) -> Result<Proposal> {
    let slug = slugify(slug);
    if slug.is_empty() {
        return Err(Error::usage(
            "a proposal needs a slug with at least one letter or digit",
        ));
    }
    let refname = format!("{PROPOSALS_PREFIX}{round}/{slug}");
    let base = parent.tree().git("read parent tree")?;
    let mut update = git2::build::TreeUpdateBuilder::new();
    for (path, content) in changes {
        match content {
            Some(text) => {
                let blob = repo.store_blob(text.as_bytes()).git("write surface blob")?;
                update.upsert(path.as_str(), blob, git2::FileMode::Blob);
            }
            None => {
                update.remove(path.as_str());
            }
        }
    }
    let tree_id = update
        .create_updated(repo, &base)
        .git("build proposal tree")?;
    let tree = repo.find_tree(tree_id).git("read proposal tree")?;
    let sig = signature(repo)?;
    let commit = repo
        .store_commit(None, &sig, &sig, &message.render(), &tree, &[parent])
        .git("write proposal commit")?;
    create_ref(repo, &refname, commit, "git-harness: propose")?;
    Ok(Proposal {
        round,
        slug,
        refname,
        commit,
        parent: Some(parent.id()),
        state: ProposalState::Open,
        message: message.clone(),
    })
}

/// Every proposal, open, rejected and promoted, ordered by round then slug.
pub fn list_proposals(repo: &Repository) -> Result<Vec<Proposal>> {
    let mut out = Vec::new();
    for (prefix, state) in [
        (PROPOSALS_PREFIX, ProposalState::Open),
        (REJECTED_PREFIX, ProposalState::Rejected),
        (PROMOTED_PREFIX, ProposalState::Promoted),
    ] {
        let refs = repo
            .references_glob(&format!("{prefix}*"))
            .git("list proposal refs")?;
        for r in refs {
            let r = r.git("read proposal ref")?;
            let Ok(name) = r.name() else { continue };
            if let Some(p) = from_ref(repo, name, prefix, state)? {
                out.push(p);
            }
        }
    }
    out.sort_by(|a, b| (a.round, &a.slug, a.state as u8).cmp(&(b.round, &b.slug, b.state as u8)));
    Ok(out)
}

fn from_ref(
    repo: &Repository,
    refname: &str,
    prefix: &str,
    state: ProposalState,
) -> Result<Option<Proposal>> {
    let rest = &refname[prefix.len()..];
    let Some((round, slug)) = rest.split_once('/') else {
        return Ok(None);
    };
    let Ok(round) = round.parse::<u32>() else {
        return Ok(None);
    };
    let commit = repo
        .find_reference(refname)
        .and_then(|r| r.peel_to_commit())
        .git(format!("read {refname}"))?;
    let message = CommitMessage::parse(commit.message().unwrap_or_default())?;
    Ok(Some(Proposal {
        round,
        slug: slug.to_string(),
        refname: refname.to_string(),
        commit: commit.id(),
        parent: commit.parent_id(0).ok(),
        state,
        message,
    }))
}

/// Find a proposal by `<round>/<slug>`, its branch or ref name, or a unique slug.
pub fn resolve_proposal(repo: &Repository, name: &str) -> Result<Proposal> {
    let all = list_proposals(repo)?;
    let stripped = name
        .trim_start_matches("refs/heads/")
        .trim_start_matches("refs/")
        .trim_start_matches("harness/proposals/")
        .trim_start_matches("harness/rejected/")
        .trim_start_matches("harness/promoted/")
        .trim_start_matches("rejected/")
        .trim_start_matches("promoted/");
    let exact: Vec<_> = all
        .iter()
        .filter(|p| p.name() == stripped || p.refname == name)
        .collect();
    // An open proposal wins over a retired one of the same name (it cannot happen through us).
    if let Some(p) = exact
        .iter()
        .find(|p| p.state == ProposalState::Open)
        .or(exact.first())
    {
        return Ok((*p).clone());
    }
    let by_slug: Vec<_> = all.iter().filter(|p| p.slug == stripped).collect();
    match by_slug.len() {
        1 => Ok(by_slug[0].clone()),
        0 => Err(Error::usage_hint(
            format!("no proposal named `{name}`"),
            "list proposals with `git harness log --all`",
        )),
        _ => Err(Error::usage_hint(
            format!("`{name}` names several proposals"),
            format!(
                "say which: {}",
                by_slug
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The next round number: one more than any round that has proposals (open or rejected) or a
/// promotion on main (a promoted proposal's branch is gone; its merge keeps the round).
pub fn next_round(repo: &Repository) -> Result<u32> {
    let open = list_proposals(repo)?.iter().map(|p| p.round).max();
    Ok(open.max(promoted_round(repo)?).unwrap_or(0) + 1)
}

/// The highest round promoted into main, from the merges' `Harness-Round` or
/// `Harness-Proposal` trailers on main's first-parent history.
fn promoted_round(repo: &Repository) -> Result<Option<u32>> {
    let Ok(main) = super::main_commit(repo) else {
        return Ok(None);
    };
    let mut walk = repo.revwalk().git("walk main")?;
    walk.push(main.id()).git("walk main")?;
    walk.simplify_first_parent().git("walk main")?;
    let mut max = None;
    for oid in walk {
        let commit = repo.find_commit(oid.git("walk main")?).git("read commit")?;
        if commit.parent_count() < 2 {
            continue;
        }
        let Ok(msg) = CommitMessage::parse(commit.message().unwrap_or_default()) else {
            continue;
        };
        let round = msg
            .get(super::keys::ROUND)
            .and_then(|r| r.trim().parse::<u32>().ok())
            .or_else(|| {
                msg.get(super::keys::PROPOSAL)
                    .and_then(|p| p.trim().strip_prefix("harness/proposals/"))
                    .and_then(|p| p.split_once('/'))
                    .and_then(|(r, _)| r.parse::<u32>().ok())
            });
        max = max.max(round);
    }
    Ok(max)
}

/// Move an open proposal to `refs/harness/rejected/<round>/<slug>` atomically: both refs locked,
/// the branch must still point where we read it. A checkout of the branch is switched to main
/// first (or the move refused), so HEAD never points at a deleted branch.
pub fn reject_proposal(repo: &Repository, proposal: &Proposal, reason: &str) -> Result<String> {
    if proposal.state != ProposalState::Open {
        return Ok(proposal.refname.clone());
    }
    retire_to(
        repo,
        proposal,
        REJECTED_PREFIX,
        &format!("git-harness: reject: {reason}"),
    )
}

/// Move an open proposal branch to `<prefix><round>/<slug>`, compare-and-swap on the branch.
/// The ref a proposal's branch moves to when it is promoted.
pub(crate) fn promoted_ref(proposal: &Proposal) -> String {
    retired_ref(PROMOTED_PREFIX, proposal)
}

fn retired_ref(prefix: &str, proposal: &Proposal) -> String {
    format!("{prefix}{}/{}", proposal.round, proposal.slug)
}

fn retire_to(repo: &Repository, proposal: &Proposal, prefix: &str, msg: &str) -> Result<String> {
    let target = retired_ref(prefix, proposal);
    leave_branch(repo, &proposal.refname)?;
    let sig = signature(repo)?;
    let mut tx = repo.transaction().git("start ref transaction")?;
    tx.lock_ref(&proposal.refname)
        .git(format!("lock {}", proposal.refname))?;
    tx.lock_ref(&target).git(format!("lock {target}"))?;
    let current = repo.refname_to_id(&proposal.refname).ok();
    if current != Some(proposal.commit) {
        return Err(Error::RefMoved {
            refname: proposal.refname.clone(),
            expected: proposal.commit.to_string(),
            actual: current
                .map(|o| o.to_string())
                .unwrap_or_else(|| "(deleted)".into()),
        });
    }
    if repo.refname_to_id(&target).is_ok() {
        return Err(Error::usage(format!("{target} already exists")));
    }
    tx.set_target(&target, proposal.commit, Some(&sig), msg)
        .git(format!("set {target}"))?;
    tx.remove(&proposal.refname).git("delete proposal branch")?;
    tx.commit().git("commit ref transaction")?;
    Ok(target)
}

/// Move a promoted proposal's branch to `refs/harness/promoted/<round>/<slug>`: its commit is
/// in main's history, and the name keeps resolving in `show`, `why` and `log --all`.
pub(crate) fn mark_promoted(repo: &Repository, proposal: &Proposal) -> Result<Option<String>> {
    if proposal.state != ProposalState::Open
        || repo.refname_to_id(&proposal.refname).ok() != Some(proposal.commit)
    {
        return Ok(None);
    }
    retire_to(repo, proposal, PROMOTED_PREFIX, "git-harness: promoted").map(Some)
}

/// The slug of a round's null control (`harness/proposals/<round>/null-control`): validated,
/// never promoted.
pub const NULL_CONTROL_SLUG: &str = "null-control";

/// The slug of a round's merged candidate (`harness/proposals/<round>/merged`).
pub const MERGED_SLUG: &str = "merged";

/// A candidate combining several proposals of one round on `main`: their trees merged in
/// memory, one commit whose parents are main and every proposal (so promoting it keeps each
/// proposal in main's history). `Ok(None)` when the proposals conflict.
pub fn create_merged_proposal(
    repo: &Repository,
    main: &git2::Commit<'_>,
    round: u32,
    parts: &[Proposal],
    message: &CommitMessage,
) -> Result<Option<Proposal>> {
    let base = main.tree().git("read main tree")?;
    let mut tree = base.clone();
    for p in parts {
        let theirs = repo
            .find_commit(p.commit)
            .git("read proposal")?
            .tree()
            .git("read proposal tree")?;
        let mut index = repo
            .merge_trees(&base, &tree, &theirs, None)
            .git("merge proposal trees")?;
        if index.has_conflicts() {
            return Ok(None);
        }
        let id = index.write_tree_to(repo).git("write merged tree")?;
        tree = repo.find_tree(id).git("read merged tree")?;
    }
    let commits: Vec<git2::Commit<'_>> = parts
        .iter()
        .map(|p| repo.find_commit(p.commit))
        .collect::<std::result::Result<_, _>>()
        .git("read proposals")?;
    let mut parents: Vec<&git2::Commit<'_>> = vec![main];
    parents.extend(commits.iter());
    let sig = signature(repo)?;
    let commit = repo
        .store_commit(None, &sig, &sig, &message.render(), &tree, &parents)
        .git("write merged candidate")?;
    let slug = MERGED_SLUG.to_string();
    let refname = format!("{PROPOSALS_PREFIX}{round}/{slug}");
    create_ref(repo, &refname, commit, "git-harness: merged candidate")?;
    Ok(Some(Proposal {
        round,
        slug,
        refname,
        commit,
        parent: Some(main.id()),
        state: ProposalState::Open,
        message: message.clone(),
    }))
}

/// Retire an open proposal branch whose content reached main another way (inside a merged
/// candidate): it moves to `refs/harness/promoted/`. A checkout of it that cannot be switched
/// to main keeps the branch.
pub fn retire_proposal(repo: &Repository, proposal: &Proposal) -> Result<()> {
    if super::checkout::ensure_can_leave(repo, &proposal.refname).is_err() {
        return Ok(());
    }
    mark_promoted(repo, proposal).map(|_| ())
}
