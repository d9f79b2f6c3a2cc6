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
    let command_harness = harness.manifest.protocol == crate::harness::Protocol::Command;
    // The built-in runtime's layout means nothing to an agent program, which reads its own files.
    if !command_harness && let Some(why) = crate::harness::ignored_by_runtime(path) {
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
    if command_harness {
        if let Err(e) = crate::harness::validate_yaml(path, &candidate.content) {
            return Some(format!("does not parse: {e}"));
        }
    } else {
        if let Err(e) = crate::harness::validate_file(path, &candidate.content) {
            return Some(format!("does not parse: {e}"));
        }
        if let Err(e) = crate::agent::validate_surface(path, &candidate.content) {
            return Some(format!("does not parse: {e}"));
        }
    }
    if let Some(cmd) = &surface.check
        && let Err(why) = run_surface_check(cmd, path, &candidate.content)
    {
        return Some(format!("its check `{cmd}` failed: {why}"));
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

/// How long a surface's `check` may run.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Run a surface's `check` on a copy of the new content (same file name, in a fresh temp dir
/// that is also its working directory); `{}` in the command is that copy's path. The command is
/// the manifest author's, the content the proposer's: it runs confined (see
/// [`crate::sandbox::local::confined_check`]). The error is the check's output, for the refusal.
fn run_surface_check(cmd: &str, path: &str, content: &str) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("git-harness-check.")
        .tempdir()
        .map_err(|e| format!("cannot make a temp dir: {e}"))?;
    let name = path.rsplit('/').next().unwrap_or("surface");
    let file = dir.path().join(name);
    std::fs::write(&file, content).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    let quoted = format!("'{}'", file.to_string_lossy().replace('\'', "'\\''"));
    let script = cmd.replace("{}", &quoted);
    let out_path = dir.path().join(".check-output");
    let out = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut child = crate::sandbox::local::confined_check(dir.path(), &script)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if started.elapsed() < CHECK_TIMEOUT => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    let output = crate::model::clip_for_message(output.trim(), 2000);
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!(
            "exit {}:\n{output}",
            s.code()
                .map_or("by a signal".to_string(), |c| c.to_string())
        )),
        None => Err(format!(
            "gave up after {} s:\n{output}",
            CHECK_TIMEOUT.as_secs()
        )),
    }
}
