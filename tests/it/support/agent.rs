//! Shared test support: a small local sandbox (temp dir + `bash -c`, process-group kill on
//! timeout), a trivial verifier, the fixture suite, and a scripted OpenAI/Anthropic-compatible
//! stand-in server on loopback that records what it received.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use git_harness::agent::{Episode, EpisodeSpec, run_episode};
use git_harness::error::{Error, Result};
use git_harness::experiment::{Budgets, DecodingConfig, Prices};
use git_harness::harness::Harness;
use git_harness::model::Model;
use git_harness::sandbox::{ExecOutput, ExecRequest, Sandbox};
use git_harness::task::{EnvironmentSpec, Suite, Task, TaskFormat};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent")
}

/// The fixture suite (local tasks: instruction.md, environment/workspace, tests/test.sh).
pub fn suite() -> Suite {
    let root = fixtures().join("suite");
    let mut tasks = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for dir in dirs {
        let id = dir.file_name().unwrap().to_string_lossy().into_owned();
        let instruction = std::fs::read_to_string(dir.join("instruction.md")).unwrap();
        tasks.push(Task {
            id,
            dir: dir.clone(),
            format: TaskFormat::Harbor,
            instruction,
            agent_timeout: Duration::from_secs(60),
            verifier_timeout: Duration::from_secs(30),
            environment: EnvironmentSpec {
                workdir: "/app".into(),
                ..Default::default()
            },
            checksum: String::new(),
            tests_dir: Some(dir.join("tests")),
            test_script: dir.join("tests/test.sh"),
            solution_script: None,
            environment_dir: Some(dir.join("environment")),
            dockerfile: None,
            workspace_dir: Some(dir.join("environment/workspace")),
            setup_script: None,
            verifier_environment: None,
            artifacts: Vec::new(),
        });
    }
    Suite { root, tasks }
}

/// A harness from a bundled template, with files replaced (`Some`) or removed (`None`).
pub fn harness(template: &str, changes: &[(&str, Option<&str>)]) -> Harness {
    let mut files: BTreeMap<String, String> =
        git_harness::support::assets::harness_template(template)
            .unwrap()
            .into_iter()
            .map(|(p, c)| (p, c.to_string()))
            .collect();
    for (path, content) in changes {
        match content {
            Some(c) => files.insert(path.to_string(), c.to_string()),
            None => files.remove(*path),
        };
    }
    Harness::from_files(files).unwrap()
}

/// A local sandbox for tests: a temp dir with work/, tests/, logs/; every command a fresh
/// `bash -c` in its own process group, killed as a group on timeout.
pub struct TestSandbox {
    _root: tempfile::TempDir,
    pub root: PathBuf,
    pub work: PathBuf,
    workdir: String,
}

impl TestSandbox {
    pub fn new() -> Self {
        let root_dir = tempfile::tempdir().unwrap();
        let root = root_dir.path().to_path_buf();
        for d in ["work", "tests", "logs"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let work = root.join("work");
        TestSandbox {
            workdir: work.to_string_lossy().into_owned(),
            _root: root_dir,
            root,
            work,
        }
    }

    /// A sandbox with the task's workspace copied in.
    pub fn for_task(task: &Task) -> Self {
        let sb = Self::new();
        let ws = task.dir.join("environment/workspace");
        if ws.exists() {
            copy_dir(&ws, &sb.work);
        }
        sb
    }

    fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.work.join(p)
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("HARNESS_WORKDIR".into(), self.workdir.clone()),
            (
                "HARNESS_TESTS_DIR".into(),
                self.root.join("tests").to_string_lossy().into_owned(),
            ),
            (
                "HARNESS_LOGS_DIR".into(),
                self.root.join("logs").to_string_lossy().into_owned(),
            ),
        ]
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

#[async_trait]
impl Sandbox for TestSandbox {
    fn workdir(&self) -> &str {
        &self.workdir
    }

    async fn exec(&self, req: ExecRequest) -> Result<ExecOutput> {
        let start = Instant::now();
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg("-c")
            .arg(&req.command)
            .current_dir(
                req.workdir
                    .as_deref()
                    .map(|w| self.resolve(w))
                    .unwrap_or(self.work.clone()),
            )
            .envs(self.env())
            .envs(req.env.clone())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| Error::infra(format!("spawn bash: {e}")))?;
        let pid = child.id().unwrap_or(0) as i32;
        match tokio::time::timeout(req.timeout, child.wait_with_output()).await {
            Ok(Ok(o)) => {
                let mut output = String::from_utf8_lossy(&o.stdout).into_owned();
                output.push_str(&String::from_utf8_lossy(&o.stderr));
                Ok(ExecOutput {
                    exit_code: o.status.code(),
                    output,
                    truncated: false,
                    timed_out: false,
                    duration_ms: start.elapsed().as_millis() as u64,
                })
            }
            Ok(Err(e)) => Err(Error::infra(format!("wait for bash: {e}"))),
            Err(_) => {
                // SAFETY: kill(2) on the process group we created; no memory is touched.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
                Ok(ExecOutput {
                    exit_code: None,
                    output: String::new(),
                    truncated: false,
                    timed_out: true,
                    duration_ms: start.elapsed().as_millis() as u64,
                })
            }
        }
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let p = self.resolve(path);
        std::fs::read(&p).map_err(|e| Error::io(p, e))
    }

    async fn write_file(&self, path: &str, data: &[u8]) -> Result<()> {
        let p = self.resolve(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::write(&p, data).map_err(|e| Error::io(p, e))
    }

    async fn copy_dir_in(&self, host_dir: &Path, dest: &str) -> Result<()> {
        copy_dir(host_dir, &self.resolve(dest));
        Ok(())
    }

    async fn destroy(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Run the task's tests/test.sh against the sandbox's final state; true when reward is 1.
pub async fn verify(task: &Task, sb: &TestSandbox) -> bool {
    let tests = sb.root.join("tests");
    copy_dir(&task.dir.join("tests"), &tests);
    let _ = std::fs::remove_dir_all(sb.root.join("logs/verifier"));
    let script = tests.join("test.sh");
    let out = sb
        .exec(ExecRequest::new(
            format!("bash '{}'", script.display()),
            Duration::from_secs(30),
        ))
        .await
        .unwrap();
    let reward =
        std::fs::read_to_string(sb.root.join("logs/verifier/reward.txt")).unwrap_or_default();
    let ok = reward.trim().parse::<f64>().unwrap_or(0.0) >= 1.0;
    if !ok {
        eprintln!("verifier of {} failed: {}", task.id, out.output);
    }
    ok
}

pub struct Run<'a> {
    pub harness: &'a Harness,
    pub budgets: Budgets,
    pub seed: u64,
    pub cancel: Option<git_harness::agent::Cancel>,
}

impl<'a> Run<'a> {
    pub fn new(harness: &'a Harness) -> Self {
        Run {
            harness,
            budgets: small_budgets(),
            seed: 7,
            cancel: None,
        }
    }

    pub async fn episode(
        &self,
        task_id: &str,
        instruction: &str,
        sb: &dyn Sandbox,
        model: &dyn Model,
    ) -> Episode {
        let decoding = DecodingConfig::default();
        let prices = Prices {
            input_per_mtok: 1.0,
            output_per_mtok: 2.0,
            cached_input_per_mtok: 0.5,
        };
        let spec = EpisodeSpec {
            task_id,
            trial: 0,
            seed: self.seed,
            instruction,
            harness: self.harness,
            budgets: &self.budgets,
            decoding: &decoding,
            prices: &prices,
            cancel: self.cancel.clone(),
        };
        run_episode(&spec, sb, model).await.unwrap()
    }
}

pub fn small_budgets() -> Budgets {
    Budgets {
        max_turns: 20,
        max_tool_calls: 30,
        wall_clock_sec: 60,
        max_tokens: 1_000_000,
        command_timeout_sec: 10,
    }
}

// ---------------------------------------------------------------------------------------------
// The stand-in model server.

/// One scripted answer of the stand-in server.
#[derive(Clone)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
    pub delay: Duration,
}

impl Scripted {
    pub fn ok(body: Value) -> Self {
        Scripted {
            status: 200,
            headers: Vec::new(),
            body,
            delay: Duration::ZERO,
        }
    }
    pub fn status(status: u16, body: Value) -> Self {
        Scripted {
            status,
            headers: Vec::new(),
            body,
            delay: Duration::ZERO,
        }
    }
    pub fn header(mut self, k: &'static str, v: &str) -> Self {
        self.headers.push((k, v.to_string()));
        self
    }
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

/// What the stand-in received: the JSON body and the headers of each request.
#[derive(Clone, Debug)]
pub struct Received {
    pub body: Value,
    pub headers: Vec<(String, String)>,
    pub at: Instant,
}

#[derive(Clone, Default)]
struct StandInState {
    script: Arc<Mutex<VecDeque<Scripted>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

pub struct StandIn {
    pub base_url: String,
    state: StandInState,
    _server: super::serve::Server,
}

impl StandIn {
    /// Serve `script` in order on 127.0.0.1 (OpenAI and Anthropic paths); when the script is
    /// used up, answer 500.
    pub async fn start(script: Vec<Scripted>) -> StandIn {
        let state = StandInState {
            script: Arc::new(Mutex::new(script.into())),
            ..Default::default()
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(handle))
            .route("/v1/messages", post(handle))
            .with_state(state.clone());
        let server = super::serve::start(app);
        StandIn {
            base_url: server.base_url(),
            state,
            _server: server,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }
}

async fn handle(State(state): State<StandInState>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.received.lock().unwrap().push(Received {
        body,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        at: Instant::now(),
    });
    let next = state.script.lock().unwrap().pop_front();
    let Some(s) = next else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "script exhausted").into_response();
    };
    if !s.delay.is_zero() {
        tokio::time::sleep(s.delay).await;
    }
    let mut resp = (StatusCode::from_u16(s.status).unwrap(), axum::Json(s.body)).into_response();
    for (k, v) in s.headers {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

/// An OpenAI reply with one tool call whose arguments are the raw text `args`.
pub fn openai_call(id: &str, name: &str, args: &str) -> Scripted {
    Scripted::ok(json!({
        "id": "x", "object": "chat.completion", "model": "stand-in",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null,
            "tool_calls": [{"id": id, "type": "function", "function": {"name": name, "arguments": args}}]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10}
    }))
}

pub fn openai_bash(id: &str, cmd: &str) -> Scripted {
    openai_call(id, "bash", &json!({"command": cmd}).to_string())
}

pub fn openai_submit(id: &str) -> Scripted {
    openai_call(id, "submit", r#"{"summary":"done"}"#)
}

/// An Anthropic reply with one tool_use block.
pub fn anthropic_call(id: &str, name: &str, input: Value) -> Scripted {
    Scripted::ok(json!({
        "id": "msg", "type": "message", "role": "assistant", "model": "stand-in",
        "content": [{"type": "text", "text": "ok"}, {"type": "tool_use", "id": id, "name": name, "input": input}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 50, "output_tokens": 5}
    }))
}

/// The system message of a received OpenAI request.
pub fn system_of(r: &Received) -> String {
    r.body["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Every message of a received OpenAI request with the given role.
pub fn messages_of(r: &Received, role: &str) -> Vec<Value> {
    r.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == role)
        .cloned()
        .collect()
}

/// The content of the last tool message of a received OpenAI request.
pub fn last_tool_result(r: &Received) -> String {
    messages_of(r, "tool")
        .last()
        .and_then(|m| m["content"].as_str().map(str::to_string))
        .unwrap_or_default()
}

pub fn openai_model(base_url: &str, key: Option<&str>) -> git_harness::model::openai::OpenAiModel {
    let policy = git_harness::model::RetryPolicy {
        max_retries: 2,
        timeout: Duration::from_secs(5),
        ..Default::default()
    };
    git_harness::model::openai::OpenAiModel::new(
        base_url,
        "stand-in",
        key.map(str::to_string),
        policy,
    )
    .unwrap()
}
