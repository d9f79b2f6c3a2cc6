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
    /// Other surfaces for the same text, in order, for a harness that does not declare
    /// `surface` (a command harness names its prompt files its own way: mini-swe-agent's
    /// `prompts/system.md`, DeepAgents' `prompts/failure_recovery.md`). `append` remedies only.
    #[serde(default)]
    pub also: Vec<String>,
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
        if r.create.is_some() && !r.also.is_empty() {
            return Err(Error::config(
                format!("templates/remedies/{name}"),
                None,
                "also",
                "only an `append` remedy has other surfaces",
            ));
        }
        out.push(r);
    }
    Ok(out)
}

impl Remedy {
    /// The surface this remedy edits in `harness`: `surface`, else the first of `also` that the
    /// harness declares, else `surface` (which the candidate checks then refuse, saying why).
    pub fn target(&self, harness: &Harness) -> &str {
        std::iter::once(&self.surface)
            .chain(&self.also)
            .find(|p| harness.surface_for(p).is_some())
            .unwrap_or(&self.surface)
    }

    /// The edit this remedy makes to `harness`: the surface path and its new content.
    pub fn apply(&self, harness: &Harness) -> (String, String) {
        let surface = self.target(harness).to_string();
        let current = harness.file(&surface).unwrap_or_default();
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
        (surface, new)
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
