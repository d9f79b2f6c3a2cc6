//! The code-review recipe: CI files that validate a pull request's head as a proposal against its
//! base and keep one comment with the gate report (`templates/ci/`).

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

const SCRIPT: &str = include_str!("../../templates/ci/validate-pr.sh");
const GITHUB: &str = include_str!("../../templates/ci/github-actions.yml");
const GITLAB: &str = include_str!("../../templates/ci/gitlab-ci.yml");

/// Which hosted CI the recipe is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiKind {
    Github,
    Gitlab,
}

/// The recipe's files: (path relative to the repository root, content, executable).
pub fn recipe(kind: CiKind) -> Vec<(&'static str, &'static str, bool)> {
    match kind {
        CiKind::Github => vec![
            (".github/workflows/git-harness.yml", GITHUB, false),
            (".github/git-harness/validate-pr.sh", SCRIPT, true),
        ],
        CiKind::Gitlab => vec![
            (".gitlab/git-harness.yml", GITLAB, false),
            (".gitlab/git-harness/validate-pr.sh", SCRIPT, true),
        ],
    }
}

/// Write the recipe under `root`. An existing file with other content is refused unless `force`;
/// returns the paths written (unchanged files are not rewritten).
pub fn write_recipe(root: &Path, kind: CiKind, force: bool) -> Result<Vec<PathBuf>> {
    let files = recipe(kind);
    if !force {
        for (rel, text, _) in &files {
            let path = root.join(rel);
            if let Ok(old) = std::fs::read_to_string(&path)
                && old != *text
            {
                return Err(Error::usage_hint(
                    format!("{rel} exists with other content"),
                    "pass --force to overwrite it, or merge the new recipe by hand",
                ));
            }
        }
    }
    let mut written = Vec::new();
    for (rel, text, executable) in files {
        let path = root.join(rel);
        if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).at(parent)?;
        }
        std::fs::write(&path, text).at(&path)?;
        if executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).at(&path)?;
        }
        written.push(path);
    }
    Ok(written)
}
