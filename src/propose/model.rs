//! The model proposer: the experiment's own model, prompted with exactly the method's four
//! inputs (surfaces, failure patterns, passing behaviour, earlier attempts), slot by slot.
//! Every prompt and answer is recorded under `refs/harness/proposer-log` for audit.

use serde::Deserialize;

use super::{Candidate, Refusal};
use crate::error::{Error, Result};
use crate::harness::Harness;
use crate::mine::Bundle;
use crate::model::{ChatRequest, Decoding, Message, Model, Role};

/// One slot's exchange, kept for the audit log.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub slot: usize,
    pub prompt: String,
    pub answer: String,
}

pub enum SlotAnswer {
    Candidate(Candidate),
    Decline(String),
    Malformed(Refusal),
}

#[derive(Debug, Deserialize)]
struct Answer {
    decision: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    target_cluster: Option<String>,
    #[serde(default)]
    surface: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    rationale: Option<String>,
    #[serde(default)]
    expected_effect: Option<String>,
    #[serde(default)]
    regression_risk: Option<String>,
    #[serde(default)]
    why_distinct: Option<String>,
}

/// The proposer prompt for one slot. Built from the bundle (held-in only) and the harness.
pub fn prompt(
    harness: &Harness,
    bundle: &Bundle,
    k: usize,
    slot: usize,
    earlier: &[Candidate],
) -> Result<String> {
    let template = crate::support::assets::prompt("propose.md")
        .ok_or_else(|| Error::Internal("templates/prompts/propose.md is not embedded".into()))?;
    let surfaces: Vec<serde_json::Value> = harness
        .manifest
        .surfaces
        .iter()
        .flat_map(|s| {
            let files: Vec<(&String, &String)> = harness.files.iter().filter(|(p, _)| s.matches(p)).collect();
            let files = if files.is_empty() { vec![] } else { files };
            files.into_iter().map(move |(p, c)| {
                serde_json::json!({
                    "path": p, "kind": s.kind.to_string(), "max_added": s.bounds.max_lines_added,
                    "max_removed": s.bounds.max_lines_removed, "description": s.description, "content": c,
                })
            })
        })
        .collect();
    let env = minijinja::Environment::new();
    let ctx = minijinja::context! {
        surfaces => minijinja::Value::from(minijinja::value::Serde(&surfaces)),
        clusters => minijinja::Value::from(minijinja::value::Serde(&bundle.clusters)),
        passing => minijinja::Value::from(minijinja::value::Serde(&bundle.passing_tasks)),
        attempts => minijinja::Value::from(minijinja::value::Serde(&bundle.attempts)),
        k => k,
        slot => slot,
        earlier => minijinja::Value::from(minijinja::value::Serde(earlier)),
    };
    env.render_str(template, ctx)
        .map_err(|e| Error::Internal(format!("proposer prompt: {e}")))
}

/// Ask the model for one slot.
/// Ask the proposer model; returns its answer and what the call used.
pub async fn ask(
    model: &dyn Model,
    prompt: &str,
    decoding: Decoding,
) -> Result<(String, crate::model::Usage)> {
    let req = ChatRequest {
        messages: vec![Message::text(Role::User, prompt)],
        tools: vec![],
        decoding,
        seed: Some(0),
    };
    let resp = model.chat(&req).await.map_err(|e| Error::Infra {
        class: crate::InfraClass::Model,
        message: format!("the proposer model failed: {e}"),
        hint: Some("check the model endpoint, or use --proposer catalog offline".into()),
    })?;
    Ok((resp.content.unwrap_or_default(), resp.usage))
}

/// Parse a slot's answer; malformed answers become refusals, never crashes.
pub fn parse(answer: &str, model_name: &str) -> SlotAnswer {
    let json = strip_fences(answer);
    let a: Answer = match serde_json::from_str(json) {
        Ok(a) => a,
        Err(e) => {
            return SlotAnswer::Malformed(Refusal {
                title: "(unreadable answer)".into(),
                surface: None,
                reason: format!("malformed proposal JSON: {e}"),
            });
        }
    };
    if a.decision.eq_ignore_ascii_case("decline") {
        return SlotAnswer::Decline(a.reason.unwrap_or_else(|| "no reason given".into()));
    }
    let missing: Vec<&str> = [
        ("title", a.title.is_none()),
        ("target_cluster", a.target_cluster.is_none()),
        ("surface", a.surface.is_none()),
        ("content", a.content.is_none()),
    ]
    .into_iter()
    .filter_map(|(k, m)| m.then_some(k))
    .collect();
    if !missing.is_empty() || !a.decision.eq_ignore_ascii_case("propose") {
        return SlotAnswer::Malformed(Refusal {
            title: a.title.clone().unwrap_or_else(|| "(untitled)".into()),
            surface: a.surface.clone(),
            reason: if missing.is_empty() {
                format!("unknown decision `{}`", a.decision)
            } else {
                format!("malformed proposal: missing {}", missing.join(", "))
            },
        });
    }
    let title = a.title.unwrap_or_default();
    SlotAnswer::Candidate(Candidate {
        slug: crate::lineage::slugify_title(&title),
        title,
        cluster: a.target_cluster.unwrap_or_default(),
        surface: a.surface.unwrap_or_default(),
        content: a.content.unwrap_or_default(),
        rationale: a.rationale.unwrap_or_default(),
        expected_effect: a.expected_effect.unwrap_or_default(),
        regression_risk: a.regression_risk.unwrap_or_default(),
        why_distinct: a.why_distinct.unwrap_or_default(),
        proposer: format!("model:{model_name}"),
    })
}

fn strip_fences(s: &str) -> &str {
    let t = s.trim();
    if let Some(rest) = t.strip_prefix("```") {
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_alphabetic());
        return rest.trim_end().trim_end_matches("```").trim();
    }
    t
}
