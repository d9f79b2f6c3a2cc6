//! The model gateway: the only route from a `protocol: command` agent to a model.
//!
//! An in-process HTTP server on loopback (TCP, and a Unix socket that sandboxes without a
//! network reach through a forwarder, see [`forward`]) that speaks OpenAI Chat Completions
//! (`POST /v1/chat/completions`) and Anthropic Messages (`POST /v1/messages`), streaming (SSE)
//! or not. Every request carries a per-trial token (never the real key) that names its
//! [`Session`]. The gateway forwards to the experiment's [`Model`] (so the sim, retries and
//! infrastructure classification apply), pins the model name and decoding (a request for another
//! model or another temperature is refused with a 400 and recorded), meters tokens and cost,
//! enforces the turn, token and wall-clock budgets (exhaustion ends the trial as the agent's
//! failure), and records every exchange as trace events: tool calls from the assistant's
//! answers, their observations from the request that follows.

pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

use crate::agent::trace::{Ending, Event, RequestEvent, ResponseEvent, ToolEvent};
use crate::error::{IoContext, Result};
use crate::experiment::{Budgets, DecodingConfig, Prices};
use crate::model::{ChatRequest, Decoding, Message, Model, Role, ToolCall, ToolSpec, Usage};
use wire::{Api, Parsed};

pub use crate::sandbox::tunnel::SOCKET_NAME;

/// The output of a tool call the agent never reported back.
pub const NO_OBSERVATION: &str = "[no observation: the agent ended after this call]";

/// Tool outputs are clipped to this many bytes in the trace.
const MAX_OUTPUT: usize = 8 * 1024;

/// What every request is held to.
#[derive(Debug, Clone)]
pub struct Pin {
    /// The model name agents send (`HARNESS_MODEL`); the provider-qualified name is accepted too.
    pub model: String,
    pub qualified: String,
    pub decoding: DecodingConfig,
    pub prices: Prices,
}

impl Pin {
    pub fn new(model: &dyn Model, decoding: &DecodingConfig, prices: &Prices) -> Self {
        let qualified = model.name();
        let short = qualified
            .split_once('/')
            .map(|(_, m)| m.to_string())
            .unwrap_or_else(|| qualified.clone());
        Pin {
            model: short,
            qualified,
            decoding: decoding.clone(),
            prices: prices.clone(),
        }
    }

    /// Why the request breaks the fixed-model invariant, if it does. An absent model or
    /// temperature takes the experiment's.
    fn refusal(&self, p: &Parsed) -> Option<String> {
        if !p.model.is_empty() && p.model != self.model && p.model != self.qualified {
            return Some(format!(
                "model `{}` refused: this experiment's model is `{}`",
                p.model, self.model
            ));
        }
        if let Some(t) = p.temperature
            && (t - self.decoding.temperature).abs() > 1e-9
        {
            return Some(format!(
                "temperature {t} refused: this experiment's temperature is {}",
                self.decoding.temperature
            ));
        }
        if let Some(t) = p.top_p
            && (t - 1.0).abs() > 1e-9
        {
            return Some(format!(
                "top_p {t} refused: this experiment samples with top_p 1 (it fixes no other)"
            ));
        }
        None
    }
}

/// One trial's budgets and seed.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub budgets: Budgets,
    pub seed: u64,
    /// After this, requests are refused as a wall-clock budget exhaustion.
    pub deadline: Option<Instant>,
}

/// What a session recorded, taken when the agent is done.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub events: Vec<Event>,
    /// The tools of the last request, as the model saw them.
    pub tools: Vec<ToolSpec>,
    pub turns: u32,
    pub tool_calls: u32,
    pub usage: Usage,
    pub cost_usd: f64,
    /// Milliseconds the model spent answering.
    pub model_ms: u64,
    /// The budget the agent exhausted, if it did.
    pub exhausted: Option<Ending>,
    /// The upstream failure (after retries), if one happened: an infrastructure error.
    pub infra: Option<String>,
    /// Requests refused for breaking the fixed-model invariant.
    pub refused: Vec<String>,
}

struct SessionState {
    spec: SessionSpec,
    started: Instant,
    rec: Recording,
    last_system: Option<String>,
    /// Tool calls of the last answer, waiting for their observations.
    pending: Vec<ToolCall>,
    /// The last answer was text with a shell block (a text-protocol agent): its command.
    pending_text_command: Option<String>,
    /// Messages of the last request plus its answer: the prefix the next request repeats.
    seen: usize,
}

impl SessionState {
    fn t_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

type Sessions = Mutex<HashMap<String, Arc<Mutex<SessionState>>>>;

struct Shared {
    model: Arc<dyn Model>,
    pin: Pin,
    sessions: Sessions,
}

/// A running gateway. Dropping it stops the server and removes its socket.
pub struct Gateway {
    shared: Arc<Shared>,
    addr: SocketAddr,
    socket: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::watch::Sender<bool>>,
}

/// A trial's access to the gateway. Dropping it closes the session: later requests with its
/// token are refused.
pub struct Session {
    token: String,
    state: Arc<Mutex<SessionState>>,
    shared: Arc<Shared>,
}

impl Session {
    /// The per-trial token the agent sends as its API key.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Close the session and take what it recorded.
    pub fn finish(self) -> Recording {
        self.close();
        let mut st = lock(&self.state);
        // The last answer's calls had no request after them (the agent ended, e.g. on a
        // `submit`): recorded without an observation, so the trace still shows them.
        let pending = std::mem::take(&mut st.pending);
        let (turn, t_ms) = (st.rec.turns, st.t_ms());
        for c in pending {
            let mut ev = tool_event(turn, t_ms, &c.id, &c.name, &c.arguments, "", false);
            ev.output = NO_OBSERVATION.to_string();
            ev.exit_code = None;
            st.rec.tool_calls += 1;
            st.rec.events.push(Event::ToolCall(ev));
        }
        st.rec.clone()
    }

    fn close(&self) {
        lock(&self.shared.sessions).remove(&self.token);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicked handler leaves the data as it was; recording goes on.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Gateway {
    /// Start serving `model` under `pin` on a free loopback port and a fresh Unix socket.
    pub async fn start(model: Arc<dyn Model>, pin: Pin) -> Result<Gateway> {
        let shared = Arc::new(Shared {
            model,
            pin,
            sessions: Mutex::new(HashMap::new()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .route("/messages", post(anthropic))
            .with_state(shared.clone());
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| {
                crate::error::InfraClass::Sandbox
                    .error(format!("cannot start the model gateway: {e}"))
            })?;
        let addr = tcp.local_addr().map_err(|e| {
            crate::error::InfraClass::Sandbox
                .error(format!("the model gateway has no address: {e}"))
        })?;
        let dir = tempfile::Builder::new()
            .prefix("git-harness-gateway.")
            .tempdir()
            .at(std::env::temp_dir())?;
        let socket = dir.path().join(SOCKET_NAME);
        let unix = tokio::net::UnixListener::bind(&socket).at(&socket)?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        tokio::spawn(
            axum::serve(tcp, app.clone())
                .with_graceful_shutdown(until(stopped.clone()))
                .into_future(),
        );
        tokio::spawn(
            axum::serve(unix, app)
                .with_graceful_shutdown(until(stopped))
                .into_future(),
        );
        Ok(Gateway {
            shared,
            addr,
            socket,
            _dir: dir,
            stop: Some(stop),
        })
    }

    /// The loopback address, for agents that share the host's network.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Unix socket, for sandboxes without a network.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn pin(&self) -> &Pin {
        &self.shared.pin
    }

    /// Open a trial's session.
    pub fn open(&self, spec: SessionSpec) -> Session {
        let token = format!("ghs-{:032x}", rand::random::<u128>());
        let state = Arc::new(Mutex::new(SessionState {
            spec,
            started: Instant::now(),
            rec: Recording::default(),
            last_system: None,
            pending: Vec::new(),
            pending_text_command: None,
            seen: 0,
        }));
        lock(&self.shared.sessions).insert(token.clone(), state.clone());
        Session {
            token,
            state,
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
    }
}

async fn openai(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(s, Api::OpenAi, headers, body).await
}

async fn anthropic(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(s, Api::Anthropic, headers, body).await
}

fn error(api: Api, status: StatusCode, kind: &str, message: &str) -> Response {
    (status, axum::Json(wire::error_body(api, kind, message))).into_response()
}

fn token_of(headers: &HeaderMap) -> Option<String> {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    h("authorization")
        .and_then(|v| v.strip_prefix("Bearer ").or(v.strip_prefix("bearer ")))
        .or_else(|| h("x-api-key"))
        .map(|t| t.trim().to_string())
}

async fn handle(s: Arc<Shared>, api: Api, headers: HeaderMap, body: Bytes) -> Response {
    let Some(state) = token_of(&headers).and_then(|t| lock(&s.sessions).get(&t).cloned()) else {
        return error(
            api,
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "unknown or expired gateway token",
        );
    };
    let parsed = serde_json::from_slice::<Value>(&body)
        .map_err(|e| format!("the request body is not JSON: {e}"))
        .and_then(|v| match api {
            Api::OpenAi => wire::openai_request(&v),
            Api::Anthropic => wire::anthropic_request(&v),
        });
    let parsed = match parsed {
        Ok(p) => p,
        Err(m) => return error(api, StatusCode::BAD_REQUEST, "invalid_request_error", &m),
    };
    let (turn, seed) = {
        let mut st = lock(&state);
        if let Some(why) = s.pin.refusal(&parsed) {
            let t_ms = st.t_ms();
            let turn = st.rec.turns;
            st.rec.events.push(Event::Refused {
                turn,
                t_ms,
                message: why.clone(),
            });
            st.rec.refused.push(why.clone());
            return error(api, StatusCode::BAD_REQUEST, "invalid_request_error", &why);
        }
        if let Some(m) = &st.rec.infra {
            let m = format!("the model is unavailable: {m}");
            return error(api, StatusCode::BAD_GATEWAY, "api_error", &m);
        }
        if let Some(why) = exhausted(&mut st) {
            // What the agent observed of its last actions still belongs to the trace.
            let turn = st.rec.turns;
            record_observations(&mut st, turn + 1, &parsed);
            return error(api, StatusCode::BAD_REQUEST, "budget_exhausted", &why);
        }
        st.rec.turns += 1;
        let turn = st.rec.turns;
        record_request(&mut st, turn, &parsed);
        (turn, st.spec.seed)
    };
    let req = ChatRequest {
        messages: parsed.messages.clone(),
        tools: parsed.tools.clone(),
        decoding: Decoding {
            temperature: s.pin.decoding.temperature,
            max_tokens: s.pin.decoding.max_tokens,
        },
        seed: Some(seed),
    };
    let t0 = Instant::now();
    let answer = s.model.chat(&req).await;
    let latency_ms = (t0.elapsed().as_millis() as u64).saturating_sub(match &answer {
        Ok(r) => r.waited_ms,
        Err(_) => 0,
    });
    let r = {
        let mut st = lock(&state);
        match answer {
            Err(e) => {
                let m = e.to_string();
                st.rec.infra = Some(m.clone());
                return error(api, StatusCode::BAD_GATEWAY, "api_error", &m);
            }
            Ok(r) => {
                st.rec.usage += r.usage;
                st.rec.cost_usd += s.pin.prices.cost(&r.usage);
                st.rec.model_ms += latency_ms;
                let t_ms = st.t_ms();
                st.rec.events.push(Event::ModelResponse(ResponseEvent {
                    turn,
                    t_ms,
                    content: r.content.clone(),
                    tool_calls: r.tool_calls.clone(),
                    usage: r.usage,
                    latency_ms,
                    finish_reason: r.finish_reason.clone(),
                }));
                st.pending = r.tool_calls.clone();
                st.pending_text_command = if r.tool_calls.is_empty() {
                    r.content.as_deref().and_then(shell_block)
                } else {
                    None
                };
                st.seen = parsed.messages.len() + 1;
                r
            }
        }
    };
    let id = format!("gh-{turn}-{:08x}", rand::random::<u32>());
    let model = &s.pin.model;
    match (api, parsed.stream) {
        (Api::OpenAi, false) => axum::Json(wire::openai_response(&id, model, &r)).into_response(),
        (Api::Anthropic, false) => {
            axum::Json(wire::anthropic_response(&id, model, &r)).into_response()
        }
        (Api::OpenAi, true) => {
            let events = wire::openai_stream(&id, model, &r, parsed.include_usage)
                .into_iter()
                .map(|d| Ok::<_, std::convert::Infallible>(SseEvent::default().data(d)));
            Sse::new(futures_util::stream::iter(events)).into_response()
        }
        (Api::Anthropic, true) => {
            let events = wire::anthropic_stream(&id, model, &r)
                .into_iter()
                .map(|(e, d)| {
                    Ok::<_, std::convert::Infallible>(SseEvent::default().event(e).data(d))
                });
            Sse::new(futures_util::stream::iter(events)).into_response()
        }
    }
}

/// The budget this request would exceed, recorded once as the session's ending.
fn exhausted(st: &mut SessionState) -> Option<String> {
    let b = &st.spec.budgets;
    let used = st.rec.usage.prompt_tokens + st.rec.usage.completion_tokens;
    let (ending, why) = if st.rec.turns >= b.max_turns {
        (
            Ending::BudgetTurns,
            format!("the turn budget ({}) is used up", b.max_turns),
        )
    } else if used >= b.max_tokens {
        (
            Ending::BudgetTokens,
            format!("the token budget ({}) is used up", b.max_tokens),
        )
    } else if st.spec.deadline.is_some_and(|d| Instant::now() >= d) {
        (
            Ending::BudgetWallClock,
            format!("the wall-clock budget ({} s) is used up", b.wall_clock_sec),
        )
    } else {
        return None;
    };
    if st.rec.exhausted.is_none() {
        let t_ms = st.t_ms();
        let turn = st.rec.turns;
        st.rec.events.push(Event::BudgetNotice {
            turn,
            t_ms,
            message: why.clone(),
        });
        st.rec.exhausted = Some(ending);
    }
    Some(why)
}

/// Record a request: the observations of the last answer's tool calls as tool events, the
/// system message when it changed, and the other new messages.
fn record_request(st: &mut SessionState, turn: u32, p: &Parsed) {
    let (system, fresh) = record_observations(st, turn, p);
    let t_ms = st.t_ms();
    let changed = system.is_some() && system != st.last_system;
    if changed {
        st.last_system = system.clone();
    }
    st.rec.tools = p.tools.clone();
    st.rec.events.push(Event::ModelRequest(RequestEvent {
        turn,
        t_ms,
        system: if changed { system } else { None },
        messages: fresh,
    }));
}

/// Record the observations of the last answer's tool calls as tool events; returns the
/// request's system message and its other new messages.
fn record_observations(
    st: &mut SessionState,
    turn: u32,
    p: &Parsed,
) -> (Option<String>, Vec<Message>) {
    let system: Option<String> = {
        let parts: Vec<&str> = p
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .filter_map(|m| m.content.as_deref())
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    };
    // What the client repeats of the last exchange is not new; a client that rewrote its
    // history (summarised, trimmed) is read from after its last assistant message.
    let start = if st.seen > 0 && p.messages.len() >= st.seen {
        st.seen
    } else {
        p.messages
            .iter()
            .rposition(|m| m.role == Role::Assistant)
            .map(|i| i + 1)
            .unwrap_or(0)
    };
    let mut fresh: Vec<Message> = Vec::new();
    let pending = std::mem::take(&mut st.pending);
    let mut text_command = st.pending_text_command.take();
    let t_ms = st.t_ms();
    for m in p.messages.iter().skip(start) {
        match m.role {
            Role::System => {}
            Role::Tool => {
                let id = m.tool_call_id.clone().unwrap_or_default();
                let call = pending.iter().find(|c| c.id == id);
                let output = m.content.clone().unwrap_or_default();
                let error = p.tool_errors.contains(&id);
                let ev = tool_event(
                    turn.saturating_sub(1),
                    t_ms,
                    &id,
                    call.map(|c| c.name.as_str()).unwrap_or("tool"),
                    call.map(|c| c.arguments.as_str()).unwrap_or("{}"),
                    &output,
                    error,
                );
                st.rec.tool_calls += 1;
                st.rec.events.push(Event::ToolCall(ev));
            }
            Role::User if text_command.is_some() => {
                // A text-protocol agent: the user message after a shell block is its output.
                let cmd = text_command.take().unwrap_or_default();
                let args = serde_json::json!({ "command": cmd }).to_string();
                let output = m.content.clone().unwrap_or_default();
                let ev = tool_event(
                    turn.saturating_sub(1),
                    t_ms,
                    &format!("text-{turn}"),
                    "bash",
                    &args,
                    &output,
                    false,
                );
                st.rec.tool_calls += 1;
                st.rec.events.push(Event::ToolCall(ev));
            }
            _ => fresh.push(m.clone()),
        }
    }
    (system, fresh)
}

fn tool_event(
    turn: u32,
    t_ms: u64,
    id: &str,
    name: &str,
    arguments: &str,
    output: &str,
    marked_error: bool,
) -> ToolEvent {
    let args: Value =
        serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_string()));
    let field = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| args.get(*k).and_then(Value::as_str))
            .map(String::from)
    };
    let exit_code = exit_code_in(output);
    let failed = marked_error
        || exit_code.is_some_and(|c| c != 0)
        || (exit_code.is_none() && output.to_ascii_lowercase().contains("error"));
    let (clipped, truncated) = clip(output);
    ToolEvent {
        turn,
        t_ms,
        call_id: id.to_string(),
        tool: name.to_string(),
        command: field(&["command", "cmd"]),
        path: field(&["path", "file_path", "filename"]),
        arguments: args,
        exit_code: exit_code.or(Some(if failed { 1 } else { 0 })),
        ok: !failed,
        blocked: false,
        timed_out: false,
        output: clipped,
        truncated,
        duration_ms: 0,
        files_changed: Vec::new(),
        workdir_changed: None,
    }
}

/// The exit code an observation reports, in the forms agents commonly write it.
fn exit_code_in(output: &str) -> Option<i32> {
    static RE: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let re = RE
        .get_or_init(|| {
            regex::Regex::new(
                r"(?i)<returncode>\s*(-?\d+)\s*</returncode>|\bexit(?:\s+code|\s+status|_code)?[:=\s]+(-?\d+)",
            )
            .ok()
        })
        .as_ref()?;
    let c = re.captures(output)?;
    c.get(1).or(c.get(2))?.as_str().parse().ok()
}

/// The command of the last fenced shell block of a text answer.
fn shell_block(content: &str) -> Option<String> {
    let mut found = None;
    let mut rest = content;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let nl = after.find('\n')?;
        let info = after[..nl].trim().to_ascii_lowercase();
        let body = &after[nl + 1..];
        let end = body.find("```")?;
        if info.contains("bash") || info == "sh" || info.contains("shell") {
            found = Some(body[..end].trim().to_string());
        }
        rest = &body[end + 3..];
    }
    found
}

fn clip(s: &str) -> (String, bool) {
    if s.len() <= MAX_OUTPUT {
        return (s.to_string(), false);
    }
    let mut head = MAX_OUTPUT / 2;
    while !s.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = s.len() - MAX_OUTPUT / 2;
    while !s.is_char_boundary(tail) {
        tail += 1;
    }
    (format!("{}\n[...]\n{}", &s[..head], &s[tail..]), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_in_observations() {
        assert_eq!(exit_code_in("<returncode>2</returncode>\nout"), Some(2));
        assert_eq!(exit_code_in("exit code: 0"), Some(0));
        assert_eq!(exit_code_in("plain output"), None);
    }

    #[test]
    fn shell_blocks_of_text_answers() {
        let c = "THOUGHT\n```bash\nls -la\n```\n";
        assert_eq!(shell_block(c).as_deref(), Some("ls -la"));
        assert_eq!(shell_block("```python\nx\n```"), None);
    }
}
