//! Optional model diagnosis (`mine.diagnose: model`): one model call per failed held-in trace
//! with `templates/prompts/diagnose.md`, answers constrained to the extractor's enumerations and
//! validated; an invalid answer keeps the deterministic signature.

use serde::Deserialize;

use super::signature::{CausalStatus, MECHANISMS, Signature, TERMINAL_CAUSES};
use super::{Bundle, FailedTrial, cluster};
use crate::error::{Error, Result};
use crate::model::{ChatRequest, Decoding, Message, Model, Role};

#[derive(Deserialize)]
struct Answer {
    terminal_cause: String,
    causal_status: String,
    agent_mechanism: String,
}

const STATUSES: &[&str] = &["root_cause", "contributor", "friction", "unknown"];

/// The prompt for one failed trial.
pub fn prompt(f: &FailedTrial) -> Result<String> {
    let template = crate::support::assets::prompt("diagnose.md")
        .ok_or_else(|| Error::Internal("templates/prompts/diagnose.md is not embedded".into()))?;
    let list = |v: Vec<&str>| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let env = minijinja::Environment::new();
    env.render_str(
        template,
        minijinja::context! {
            task => f.task.clone(),
            trial => f.trial,
            verifier => f.verifier_excerpt.clone(),
            trace => f.trace_excerpt.join("\n"),
            causes => list(TERMINAL_CAUSES.to_vec()),
            statuses => list(STATUSES.to_vec()),
            mechanisms => list(MECHANISMS.iter().map(|(k, _)| *k).collect()),
        },
    )
    .map_err(|e| Error::Internal(format!("diagnosis prompt: {e}")))
}

/// A validated signature from the model's answer, or `None` when it is not valid.
pub fn parse(answer: &str) -> Option<Signature> {
    let t = answer
        .trim()
        .trim_start_matches("```json")
        .trim_start_matches("```")
        .trim_end_matches("```")
        .trim();
    let a: Answer = serde_json::from_str(t).ok()?;
    if !TERMINAL_CAUSES.contains(&a.terminal_cause.as_str())
        || !MECHANISMS.iter().any(|(k, _)| *k == a.agent_mechanism)
    {
        return None;
    }
    Some(Signature {
        terminal_cause: a.terminal_cause,
        causal_status: CausalStatus::parse(&a.causal_status)?,
        agent_mechanism: a.agent_mechanism,
    })
}

/// Re-diagnose every failed trial of the bundle with the model and re-cluster. Returns how many
/// answers were valid; the others keep their deterministic signature. What the calls spent is
/// added to `bundle.diagnosis`.
pub async fn rediagnose(
    bundle: &mut Bundle,
    model: &dyn Model,
    decoding: Decoding,
    prices: &crate::experiment::Prices,
) -> Result<usize> {
    let mut valid = 0;
    for f in bundle.failed_trials.iter_mut() {
        let req = ChatRequest {
            messages: vec![Message::text(Role::User, prompt(f)?)],
            tools: vec![],
            decoding: decoding.clone(),
            seed: Some(0),
        };
        bundle.diagnosis.requests += 1;
        // A failing diagnosis call is not fatal: the deterministic signature stands.
        let Ok(resp) = model.chat(&req).await else {
            bundle.diagnosis.unanswered += 1;
            continue;
        };
        bundle.diagnosis.usage += resp.usage;
        bundle.diagnosis.cost_usd += prices.cost(&resp.usage);
        if let Some(sig) = resp.content.as_deref().and_then(parse) {
            f.signature = sig;
            f.diagnosed_by = "model".into();
            valid += 1;
        }
    }
    bundle.clusters = cluster(bundle.failed_trials.clone());
    Ok(valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_outside_the_enumerations_are_refused() {
        assert!(parse(r#"{"terminal_cause":"missing_artifact","causal_status":"root_cause","agent_mechanism":"no_artifact_before_budget"}"#).is_some());
        assert!(parse(r#"{"terminal_cause":"cosmic_rays","causal_status":"root_cause","agent_mechanism":"no_artifact_before_budget"}"#).is_none());
        assert!(parse(r#"{"terminal_cause":"missing_artifact","causal_status":"maybe","agent_mechanism":"no_artifact_before_budget"}"#).is_none());
        assert!(parse("not json").is_none());
    }
}
