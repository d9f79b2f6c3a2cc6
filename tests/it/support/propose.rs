//! Shared support of the mining and proposal tests: hermetic temp harness repositories driven
//! through the binary, the demo suite's quirk map, and a stand-in OpenAI-compatible server on
//! loopback that plays a do-nothing agent and a scripted proposer.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

/// Held-in tasks of the small demo split: two per sim quirk.
pub const HELD_IN: &[&str] = &[
    "word-count",
    "log-time-window",
    "repair-build-script",
    "sales-total",
    "count-errors",
    "number-lines",
    "sort-names-subdir",
    "render-production-config",
    "reverse-lines",
    "expense-totals",
];
pub const VALIDATION: &[&str] = &[
    "decode-message",
    "fix-slugify",
    "top-ips",
    "package-with-env",
    "crlf-script",
];
pub const TEST: &[&str] = &[
    "extract-emails",
    "fix-json-config",
    "clean-emails",
    "normalize-whitespace",
    "checksum-manifest",
];

/// Which sim quirk a demo task carries (fixtures/sim/demo.yaml).
pub fn demo_quirks() -> BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sim/demo.yaml");
    let v: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = BTreeMap::new();
    for (k, t) in v["tasks"].as_mapping().unwrap() {
        if let Some(q) = t.get("quirk").and_then(|q| q.as_str()) {
            out.insert(k.as_str().unwrap().to_string(), q.to_string());
        }
    }
    out
}

pub use super::hermetic::{Out, hermetic, output};
pub use super::repo::Repo;

/// What the mining and proposal tests add to the one repository helper.
impl Repo {
    /// Write and commit the mining tests' small splits (`HELD_IN`, `VALIDATION`, `TEST`).
    pub fn small_splits(&self) {
        self.splits(HELD_IN, VALIDATION, TEST);
    }

    /// Point the experiment's model at an OpenAI-compatible server.
    pub fn use_openai_model(&self, base_url: &str) {
        let text = self.read(".harness/experiment.yaml");
        let start = text.find("model:\n").expect("a model block");
        let end = text.find("\ndecoding:").expect("a decoding block");
        let new = format!(
            "{}model:\n  provider: openai\n  name: stub\n  base_url: {base_url}\n  timeout_sec: 30\n  max_retries: 0\n  concurrency: 8\n{}",
            &text[..start],
            &text[end + 1..]
        );
        self.write(".harness/experiment.yaml", &new);
        self.commit_all("Use the stand-in model");
    }

    /// Every branch under `harness/proposals/`.
    pub fn proposal_branches(&self) -> Vec<String> {
        self.git(&[
            "for-each-ref",
            "--format=%(refname:short)",
            "refs/heads/harness/proposals/",
        ])
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// Every file of the tree of `refname`'s tip, with its text.
    pub fn files_at(&self, refname: &str) -> Vec<(String, String)> {
        self.git(&["ls-tree", "-r", "--name-only", refname])
            .lines()
            .map(|p| {
                let text = self.git(&["show", &format!("{refname}:{p}")]);
                (p.to_string(), text)
            })
            .collect()
    }
}

/// Task ids (and their spaced form) that occur in `text` as whole words.
pub fn mentioned<'a>(text: &str, ids: &[&'a str]) -> Vec<&'a str> {
    let lower = text.to_lowercase();
    ids.iter()
        .copied()
        .filter(|id| {
            [id.to_string(), id.replace('-', " ")].iter().any(|form| {
                let re = regex::Regex::new(&format!(
                    r"(^|[^a-z0-9-]){}($|[^a-z0-9-])",
                    regex::escape(form)
                ))
                .unwrap();
                re.is_match(&lower)
            })
        })
        .collect()
}

/// A stand-in OpenAI-compatible Chat Completions server on loopback, in its own thread.
/// Requests that carry `tools` are the agent's: answered with an immediate `submit`. Requests
/// without tools are the proposer's: answered with the scripted answers in order, where
/// `{CLUSTER}` is replaced with the first cluster id of the prompt.
pub struct StandIn {
    pub base_url: String,
    state: Shared,
    _server: super::serve::Server,
}

#[derive(Clone, Default)]
struct Shared {
    answers: Arc<Mutex<VecDeque<String>>>,
    prompts: Arc<Mutex<Vec<String>>>,
    agent_requests: Arc<Mutex<usize>>,
}

impl StandIn {
    pub fn start(answers: Vec<String>) -> StandIn {
        let state = Shared {
            answers: Arc::new(Mutex::new(answers.into())),
            ..Default::default()
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(handle))
            .with_state(state.clone());
        let server = super::serve::start(app);
        StandIn {
            base_url: server.base_url(),
            state,
            _server: server,
        }
    }

    /// Queue more proposer answers.
    pub fn script(&self, answers: Vec<String>) {
        self.state.answers.lock().unwrap().extend(answers);
    }

    /// The proposer prompts received so far.
    pub fn prompts(&self) -> Vec<String> {
        self.state.prompts.lock().unwrap().clone()
    }

    pub fn agent_requests(&self) -> usize {
        *self.state.agent_requests.lock().unwrap()
    }
}

async fn handle(State(state): State<Shared>, body: axum::body::Bytes) -> axum::Json<Value> {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let has_tools = body
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    if has_tools {
        *state.agent_requests.lock().unwrap() += 1;
        return axum::Json(json!({
            "id": "x", "object": "chat.completion", "model": "stub",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "call-1", "type": "function",
                    "function": {"name": "submit", "arguments": "{\"summary\":\"done\"}"}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1}
        }));
    }
    let prompt = body["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    state.prompts.lock().unwrap().push(prompt.clone());
    let cluster = regex::Regex::new(r"cluster `([^`]+)`")
        .unwrap()
        .captures(&prompt)
        .map(|c| c[1].to_string())
        .unwrap_or_default();
    let answer = state
        .answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| r#"{"decision": "decline", "reason": "script exhausted"}"#.into())
        .replace("{CLUSTER}", &cluster);
    axum::Json(json!({
        "id": "x", "object": "chat.completion", "model": "stub",
        "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": answer}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1}
    }))
}

/// A proposer answer proposing `content` for `surface`, targeting the prompt's first cluster.
pub fn proposal(title: &str, surface: &str, content: &str) -> String {
    json!({
        "decision": "propose",
        "title": title,
        "target_cluster": "{CLUSTER}",
        "surface": surface,
        "content": content,
        "rationale": "Failed trials submitted at once without doing the work.",
        "expected_effect": "The agent does the work before it submits.",
        "regression_risk": "Low.",
        "why_distinct": "a different surface",
    })
    .to_string()
}
