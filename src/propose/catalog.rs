//! The offline remedy catalog (`templates/remedies/*.yaml`): deterministic edits for known agent
//! mechanisms. It needs no model, is what the demo uses, and doubles as a generic-checklist
//! comparison.

use std::path::Path;

use serde::Deserialize;

use super::Candidate;
use crate::error::{Error, Result};
use crate::harness::Harness;
use crate::mine::Cluster;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remedy {
    pub id: String,
    pub mechanism: String,
    pub title: String,
    pub surface: String,
    /// Text appended to the surface file (created when missing).
    #[serde(default)]
    pub append: Option<String>,
    /// The whole content of a new surface file.
    #[serde(default)]
    pub create: Option<String>,
    pub rationale: String,
    pub expected_effect: String,
    pub regression_risk: String,
}

/// Every remedy of the bundled catalog, in file order (preferred first).
pub fn load() -> Result<Vec<Remedy>> {
    let mut out = Vec::new();
    for (name, text) in crate::support::assets::remedies() {
        let r: Remedy =
            crate::support::yaml::from_str(text, Path::new(&format!("templates/remedies/{name}")))?;
        if r.append.is_some() == r.create.is_some() {
            return Err(Error::config(
                format!("templates/remedies/{name}"),
                None,
                "append/create",
                "a remedy gives exactly one of `append` or `create`",
            ));
        }
        out.push(r);
    }
    Ok(out)
}

impl Remedy {
    /// The edit this remedy makes to `harness`: the surface path and its new content.
    pub fn apply(&self, harness: &Harness) -> (String, String) {
        let current = harness.file(&self.surface).unwrap_or_default();
        let new = match (&self.append, &self.create) {
            (Some(text), _) => {
                let mut s = current.to_string();
                if !s.is_empty() && !s.ends_with('\n') {
                    s.push('\n');
                }
                s.push_str(text);
                s
            }
            (None, Some(content)) => content.clone(),
            (None, None) => current.to_string(),
        };
        (self.surface.clone(), new)
    }

    pub fn candidate(&self, harness: &Harness, cluster: &Cluster) -> Candidate {
        let (surface, content) = self.apply(harness);
        Candidate {
            title: self.title.clone(),
            slug: self.id.clone(),
            cluster: cluster.id.clone(),
            surface,
            content,
            rationale: self.rationale.clone(),
            expected_effect: self.expected_effect.clone(),
            regression_risk: self.regression_risk.clone(),
            why_distinct: format!("targets the `{}` mechanism", self.mechanism),
            proposer: "catalog".into(),
        }
    }
}
