//! Every candidate is checked before it becomes a branch: exactly one declared surface, within
//! its bounds, parses, not a no-op, not an earlier attempt, and no task id or name in it.

use std::collections::HashSet;

use git2::{Oid, Repository};
use regex::Regex;

use super::Candidate;
use crate::harness::{FIXED_DIR, Harness, MANIFEST};
use crate::lineage::history::FileDiff;

/// Why a candidate was refused; `None` means it may become a branch.
pub fn check(
    harness: &Harness,
    candidate: &Candidate,
    earlier: &HashSet<(String, Oid)>,
    task_names: &[String],
) -> Option<String> {
    let path = candidate.surface.as_str();
    if let Some(why) = crate::harness::path_problem(path) {
        return Some(why);
    }
    if path.split('/').next() == Some(FIXED_DIR) || path == MANIFEST {
        return Some(format!(
            "`{path}` is fixed experiment state, never an editable surface"
        ));
    }
    if let Some(why) = crate::harness::ignored_by_runtime(path) {
        return Some(why);
    }
    let Some(surface) = harness.surface_for(path) else {
        let declared: Vec<&str> = harness
            .manifest
            .surfaces
            .iter()
            .map(|s| s.path.as_str())
            .collect();
        return Some(format!(
            "`{path}` is not a declared surface (declared: {})",
            declared.join(", ")
        ));
    };
    let old = harness.file(path).unwrap_or_default();
    if old == candidate.content {
        return Some(format!("no-op: `{path}` is unchanged"));
    }
    let diff = FileDiff {
        path: path.to_string(),
        old: old.to_string(),
        new: candidate.content.clone(),
    };
    let (added, removed) = diff.counts();
    if added > surface.bounds.max_lines_added || removed > surface.bounds.max_lines_removed {
        return Some(format!(
            "over the bounds of `{}`: +{added}/-{removed} lines, allowed +{}/-{}",
            surface.path, surface.bounds.max_lines_added, surface.bounds.max_lines_removed
        ));
    }
    if let Err(e) = crate::harness::validate_file(path, &candidate.content) {
        return Some(format!("does not parse: {e}"));
    }
    if let Err(e) = crate::agent::validate_surface(path, &candidate.content) {
        return Some(format!("does not parse: {e}"));
    }
    let blob = Oid::hash_object(git2::ObjectType::Blob, candidate.content.as_bytes()).ok()?;
    if earlier.contains(&(path.to_string(), blob)) {
        return Some(format!("identical to an earlier attempt on `{path}`"));
    }
    if let Some(name) = mentions_task(&candidate.content, task_names) {
        return Some(format!(
            "mentions task `{name}` (anti-overfit: edits must be task-independent)"
        ));
    }
    None
}

/// The first task id (or its words with spaces) that occurs in `text`.
pub fn mentions_task<'a>(text: &str, task_names: &'a [String]) -> Option<&'a str> {
    let lower = text.to_lowercase();
    task_names.iter().map(String::as_str).find(|name| {
        let forms = [
            name.to_lowercase(),
            name.to_lowercase().replace(['-', '_'], " "),
        ];
        forms.iter().any(|f| {
            Regex::new(&format!(r"(^|[^a-z0-9]){}($|[^a-z0-9])", regex::escape(f)))
                .map(|re| re.is_match(&lower))
                .unwrap_or(false)
        })
    })
}

/// (path, blob) of every surface file any earlier proposal or main version had, so an identical
/// re-proposal is refused.
pub fn earlier_contents(repo: &Repository) -> crate::error::Result<HashSet<(String, Oid)>> {
    let mut out = HashSet::new();
    let mut commits: Vec<Oid> = crate::lineage::list_proposals(repo)?
        .iter()
        .map(|p| p.commit)
        .collect();
    if let Ok(main) = crate::lineage::main_commit(repo) {
        let mut walk = repo.revwalk().map_err(|e| crate::Error::Git {
            context: "walk main".into(),
            source: e,
        })?;
        walk.push(main.id()).map_err(|e| crate::Error::Git {
            context: "walk main".into(),
            source: e,
        })?;
        commits.extend(walk.filter_map(|c| c.ok()));
    }
    for c in commits {
        let Ok(commit) = repo.find_commit(c) else {
            continue;
        };
        let Ok(tree) = commit.tree() else { continue };
        let _ = tree.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
            if dir.is_empty() && e.name().ok() == Some(FIXED_DIR) {
                return git2::TreeWalkResult::Skip;
            }
            if e.kind() == Some(git2::ObjectType::Blob) {
                out.insert((format!("{dir}{}", e.name().unwrap_or_default()), e.id()));
            }
            git2::TreeWalkResult::Ok
        });
    }
    Ok(out)
}
