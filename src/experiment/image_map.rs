//! `runner.image_map` lookup: exact names, prefix patterns (`python:3.13*`, `ghcr.io/org/*`)
//! and a default (`*`), so a real suite's many FROM names map with a few lines.
//!
//! Precedence: an exact key wins, then the longest matching prefix pattern, then `*`.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// The image `image` maps to, or `None` when no key matches it.
pub fn lookup<'a>(map: &'a BTreeMap<String, String>, image: &str) -> Option<&'a str> {
    if let Some(m) = map.get(image) {
        return Some(m);
    }
    map.iter()
        .filter_map(|(k, v)| {
            let prefix = k.strip_suffix('*')?;
            image.starts_with(prefix).then_some((prefix.len(), v))
        })
        // `*` is the empty prefix, so it loses to every other matching pattern.
        .max_by_key(|(len, _)| *len)
        .map(|(_, v)| v.as_str())
}

/// `image` after the map, unchanged when nothing matches.
pub fn apply(map: &BTreeMap<String, String>, image: &str) -> String {
    lookup(map, image).unwrap_or(image).to_string()
}

/// Why a map key is not usable, if it is not: `*` only at the end, no empty names.
pub fn key_problem(key: &str, value: &str) -> Option<String> {
    if key.is_empty() || value.is_empty() {
        return Some("image names must not be empty".into());
    }
    if key.trim_end_matches('*').contains('*') || key.ends_with("**") {
        return Some(format!(
            "`{key}`: `*` may only end a pattern (e.g. `python:3.13*`, `ghcr.io/org/*`, or `*` alone)"
        ));
    }
    if value.contains('*') {
        return Some(format!(
            "`{value}`: a target image is a name, not a pattern"
        ));
    }
    None
}

/// Parse `FROM=TO` command-line mappings (`--image-map`) into `map`.
pub fn extend_from_args(map: &mut BTreeMap<String, String>, args: &[String]) -> Result<()> {
    for m in args {
        let Some((from, to)) = m.split_once('=') else {
            return Err(Error::usage_hint(
                format!("bad --image-map `{m}`"),
                "write it as FROM=TO, e.g. `ubuntu:24.04=local/img`, `python:3.13*=local/py` or `*=local/img`",
            ));
        };
        if let Some(p) = key_problem(from, to) {
            return Err(Error::usage_hint(
                format!("bad --image-map `{m}`: {p}"),
                "write it as FROM=TO",
            ));
        }
        map.insert(from.to_string(), to.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn exact_beats_longer_prefix_beats_shorter_beats_default() {
        let m = map(&[
            ("*", "d"),
            ("python:*", "py"),
            ("python:3.13*", "py313"),
            ("python:3.13-slim-bookworm", "exact"),
        ]);
        assert_eq!(apply(&m, "python:3.13-slim-bookworm"), "exact");
        assert_eq!(apply(&m, "python:3.13-alpine"), "py313");
        assert_eq!(apply(&m, "python:3.12"), "py");
        assert_eq!(apply(&m, "ubuntu:24.04"), "d");
    }

    #[test]
    fn no_default_leaves_unmatched_names() {
        let m = map(&[("ghcr.io/org/*", "local/x")]);
        assert_eq!(apply(&m, "ghcr.io/org/a:1"), "local/x");
        assert_eq!(apply(&m, "ghcr.io/other/a:1"), "ghcr.io/other/a:1");
        assert_eq!(lookup(&m, "ubuntu"), None);
    }

    #[test]
    fn misplaced_stars_are_refused() {
        assert!(key_problem("py*thon", "x").is_some());
        assert!(key_problem("**", "x").is_some());
        assert!(key_problem("*", "x*").is_some());
        assert!(key_problem("*", "x").is_none());
        assert!(key_problem("python:3.13*", "x").is_none());
    }
}
