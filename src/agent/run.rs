//! The loop: ask the model, run its tool calls in the sandbox, apply middleware and checks,
//! until it submits or a budget runs out.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::checks::{self, CheckResult};
use super::middleware::{ActionKind, Facts, Middleware, On};
use super::prompts::{self, PromptVars, Rendered, ToolVar};
use super::protocol;
use super::runtime::Runtime;
use super::tools::{self, Builtin, ToolOutcome};
use super::trace::*;
use super::*;
use crate::error::Result;
use crate::harness::Protocol;
use crate::model::{ChatRequest, ChatResponse, Decoding, Message, Model, Role, ToolCall, ToolSpec};
use crate::sandbox::{ExecRequest, Sandbox};

/// How much of a tool result the trace keeps (the model may have seen more).
const TRACE_OUTPUT_CHARS: usize = 2000;

/// Run one episode of `spec.harness` with `model` in `sandbox`.
///
/// Returns `Err` only when the harness itself is invalid (a config error); a failing model or
/// sandbox ends the episode with [`Ending::ModelError`] / [`Ending::SandboxError`].
pub async fn run_episode(
    spec: &EpisodeSpec<'_>,
    sandbox: &dyn Sandbox,
    model: &dyn Model,
) -> Result<Episode> {
    let rt = Runtime::load(spec.harness)?;
    let vars = PromptVars {
        instruction: spec.instruction.to_string(),
        tools: rt
            .tools
            .iter()
            .map(|t| ToolVar {
                name: t.spec.name.clone(),
                description: t.spec.description.clone(),
            })
            .collect(),
        workdir: sandbox.workdir().to_string(),
        budgets: spec.budgets.clone(),
    };
    let rendered = prompts::render_all(spec.harness.files.iter(), &vars)?;
    let mut ep = Runner::new(spec, &rt, rendered, sandbox, model);
    let ending = ep.run().await;
    Ok(ep.finish(ending))
}

/// Control flow out of a step: go on, or end the episode.
type Flow<T = ()> = std::result::Result<T, Ending>;

struct Runner<'a> {
    spec: &'a EpisodeSpec<'a>,
    rt: &'a Runtime,
    prompts: Rendered,
    sandbox: &'a dyn Sandbox,
    model: &'a dyn Model,
    middleware: Middleware,
    tool_specs: Vec<ToolSpec>,
    start: Instant,
    started_at: chrono::DateTime<chrono::Utc>,
    /// When the wall-clock budget runs out if nothing is left uncharged.
    base_deadline: tokio::time::Instant,
    /// Time the model API spent failing, backing off or queued: the API's trouble, not the
    /// agent's, so it moves the deadline.
    uncharged: Duration,
    /// The logical conversation without the system message. Under the text protocol it is
    /// converted on the wire (tool calls become the JSON text, tool results user messages).
    history: Vec<Message>,
    /// Index into `history` of the first message not yet recorded in a request event.
    recorded_upto: usize,
    last_system: Option<String>,
    events: Vec<Event>,
    usage: Usage,
    turns: u32,
    tool_calls: u32,
    any_tool_call: bool,
    last_turn_failed: bool,
    format_errors: u32,
    consecutive_tool_errors: u32,
    turns_without_change: u32,
    last_call: Option<String>,
    repeated: u32,
    submits: u32,
    budget_level: u8,
    workdir_fingerprint: Option<String>,
}

impl<'a> Runner<'a> {
    fn new(
        spec: &'a EpisodeSpec<'a>,
        rt: &'a Runtime,
        prompts: Rendered,
        sandbox: &'a dyn Sandbox,
        model: &'a dyn Model,
    ) -> Self {
        let start = Instant::now();
        let base_deadline =
            tokio::time::Instant::now() + Duration::from_secs(spec.budgets.wall_clock_sec);
        Runner {
            spec,
            rt,
            prompts,
            sandbox,
            model,
            middleware: Middleware::new(rt.rules.clone()),
            tool_specs: rt.tools.iter().map(|t| t.spec.clone()).collect(),
            start,
            started_at: chrono::Utc::now(),
            base_deadline,
            uncharged: Duration::ZERO,
            history: Vec::new(),
            recorded_upto: 0,
            last_system: None,
            events: Vec::new(),
            usage: Usage::default(),
            turns: 0,
            tool_calls: 0,
            any_tool_call: false,
            last_turn_failed: false,
            format_errors: 0,
            consecutive_tool_errors: 0,
            turns_without_change: 0,
            last_call: None,
            repeated: 0,
            submits: 0,
            budget_level: 0,
            workdir_fingerprint: None,
        }
    }

    fn t_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Wall-clock time charged to the agent.
    fn charged(&self) -> Duration {
        self.start.elapsed().saturating_sub(self.uncharged)
    }

    fn deadline(&self) -> tokio::time::Instant {
        self.base_deadline + self.uncharged
    }

    fn text_protocol(&self) -> bool {
        self.rt.protocol == Protocol::Text
    }

    fn cancelled(&self) -> bool {
        self.spec.cancel.as_ref().is_some_and(|c| *c.borrow())
    }

    async fn run(&mut self) -> Ending {
        // The task goes in the first user message unless the system prompt already states it.
        let first = if self.prompts.system.contains(self.spec.instruction.trim()) {
            "Start working on the task described above.".to_string()
        } else {
            self.spec.instruction.to_string()
        };
        self.history.push(Message::text(Role::User, first));
        if self
            .rt
            .rules
            .iter()
            .any(|r| r.rule.when.turns_without_file_change.is_some())
        {
            self.workdir_fingerprint = self.fingerprint().await.ok();
        }
        loop {
            match self.turn().await {
                Ok(None) => continue,
                Ok(Some(ending)) | Err(ending) => return ending,
            }
        }
    }

    /// One model turn; `Some` when the episode ends normally (submitted).
    async fn turn(&mut self) -> Flow<Option<Ending>> {
        let b = self.spec.budgets;
        if self.cancelled() {
            return Err(Ending::Cancelled);
        }
        if self.charged() >= Duration::from_secs(b.wall_clock_sec) {
            return Err(Ending::BudgetWallClock);
        }
        if self.turns >= b.max_turns {
            return Err(Ending::BudgetTurns);
        }
        if self.tool_calls >= b.max_tool_calls {
            return Err(Ending::BudgetToolCalls);
        }
        if self.usage.prompt_tokens + self.usage.completion_tokens >= b.max_tokens {
            return Err(Ending::BudgetTokens);
        }
        self.budget_notice();

        let mut injections = Vec::new();
        let facts = self.facts_base(self.turns + 1);
        self.apply_middleware(On::ModelTurn, &facts, &mut injections)
            .await?;
        self.inject(injections);

        self.turns += 1;
        let response = self.ask().await?;
        let calls = match self.read_calls(&response) {
            Ok(calls) => {
                self.format_errors = 0;
                calls
            }
            Err(err) => {
                self.format_errors += 1;
                let msg = protocol::format_feedback(&err, self.text_protocol());
                self.events.push(Event::FormatError {
                    turn: self.turns,
                    t_ms: self.t_ms(),
                    message: msg.clone(),
                });
                self.history.push(Message::text(Role::User, msg));
                self.turns_without_change += 1;
                if self.format_errors >= MAX_FORMAT_ERRORS {
                    return Err(Ending::FormatErrors);
                }
                return Ok(None);
            }
        };

        let mut injections = Vec::new();
        let mut failed = false;
        let mut changed = false;
        let mut submitted = false;
        for call in &calls {
            if self.tool_calls >= b.max_tool_calls {
                return Err(Ending::BudgetToolCalls);
            }
            self.tool_calls += 1;
            self.any_tool_call = true;
            let (outcome, is_submit_ok) = self.handle_call(call, &mut injections).await?;
            failed |= !outcome.ok;
            changed |= !outcome.files_changed.is_empty();
            changed |= outcome_changed_workdir(&self.events);
            let mut msg = Message::text(Role::Tool, outcome.text);
            msg.tool_call_id = Some(call.id.clone());
            self.history.push(msg);
            if is_submit_ok {
                submitted = true;
                break;
            }
        }
        if submitted {
            return Ok(Some(Ending::Submitted));
        }
        self.last_turn_failed = failed;
        self.turns_without_change = if changed {
            0
        } else {
            self.turns_without_change + 1
        };
        self.inject(injections);
        Ok(None)
    }

    fn inject(&mut self, messages: Vec<String>) {
        for m in messages {
            self.history
                .push(Message::text(Role::User, format!("{PREFIX_INJECT}{m}")));
        }
    }

    fn budget_notice(&mut self) {
        let b = self.spec.budgets;
        let turns_left = b.max_turns.saturating_sub(self.turns);
        let calls_left = b.max_tool_calls.saturating_sub(self.tool_calls);
        let secs_left = b.wall_clock_sec.saturating_sub(self.charged().as_secs());
        let tokens_left = b
            .max_tokens
            .saturating_sub(self.usage.prompt_tokens + self.usage.completion_tokens);
        let low = |left: u64, max: u64| left * 5 <= max;
        let last = turns_left <= 1 || calls_left <= 1;
        let level = if last {
            2
        } else if low(turns_left.into(), b.max_turns.into())
            || low(calls_left.into(), b.max_tool_calls.into())
            || low(secs_left, b.wall_clock_sec)
            || low(tokens_left, b.max_tokens)
        {
            1
        } else {
            0
        };
        if level <= self.budget_level {
            return;
        }
        self.budget_level = level;
        let left = format!(
            "{turns_left} model turn(s), {calls_left} tool call(s), {secs_left} s and {tokens_left} tokens remain"
        );
        let message = if level == 2 {
            format!(
                "{PREFIX_BUDGET}Last chance: {left}. Make sure the required outputs exist and call submit now."
            )
        } else {
            format!(
                "{PREFIX_BUDGET}Running low: {left}. Finish the required outputs, verify them, and submit."
            )
        };
        self.events.push(Event::BudgetNotice {
            turn: self.turns + 1,
            t_ms: self.t_ms(),
            message: message.clone(),
        });
        self.history.push(Message::text(Role::User, message));
    }

    fn system_message(&self) -> String {
        let mut parts = vec![self.prompts.system.clone()];
        if self.text_protocol() {
            parts.push(protocol::format_section(&self.tool_specs));
        }
        parts.extend(self.prompts.always.iter().cloned());
        if !self.any_tool_call
            && let Some(b) = &self.prompts.bootstrap
        {
            parts.push(b.clone());
        }
        if self.last_turn_failed
            && let Some(e) = &self.prompts.on_tool_error
        {
            parts.push(e.clone());
        }
        parts.join("\n\n")
    }

    /// The conversation as sent, per protocol.
    fn wire_messages(&self, system: &str) -> Vec<Message> {
        let mut out = vec![Message::text(Role::System, system)];
        for m in &self.history {
            if !self.text_protocol() {
                out.push(m.clone());
                continue;
            }
            match m.role {
                Role::Assistant => out.push(Message::text(
                    Role::Assistant,
                    m.content.clone().unwrap_or_default(),
                )),
                Role::Tool => out.push(Message::text(
                    Role::User,
                    m.content.clone().unwrap_or_default(),
                )),
                _ => out.push(m.clone()),
            }
        }
        out
    }

    async fn ask(&mut self) -> Flow<ChatResponse> {
        let system = self.system_message();
        let req = ChatRequest {
            messages: self.wire_messages(&system),
            tools: if self.text_protocol() {
                Vec::new()
            } else {
                self.tool_specs.clone()
            },
            decoding: Decoding::from(self.spec.decoding),
            seed: Some(self.spec.seed),
        };
        let new_user: Vec<Message> = self.history[self.recorded_upto..]
            .iter()
            .filter(|m| m.role == Role::User)
            .cloned()
            .collect();
        self.recorded_upto = self.history.len();
        let changed = self.last_system.as_deref() != Some(system.as_str());
        self.events.push(Event::ModelRequest(RequestEvent {
            turn: self.turns,
            t_ms: self.t_ms(),
            system: changed.then(|| system.clone()),
            messages: new_user,
        }));
        self.last_system = Some(system);
        let sent = Instant::now();
        let model = self.model;
        let call = model.chat(&req);
        tokio::pin!(call);
        let mut overdue = false;
        let result = tokio::select! {
            r = &mut call => r,
            _ = tokio::time::sleep_until(self.deadline()) => {
                // The budget ran out during the call. Whose time it was, only the call's end
                // tells: a failing API is an infrastructure error, and time spent on failed
                // attempts is given back; only a slow answer is the agent's.
                overdue = true;
                tokio::select! {
                    r = &mut call => r,
                    _ = wait_cancel(self.spec.cancel.clone()) => return Err(Ending::Cancelled),
                }
            }
            _ = wait_cancel(self.spec.cancel.clone()) => return Err(Ending::Cancelled),
        };
        let response = result.map_err(|e| Ending::ModelError {
            message: e.to_string(),
        })?;
        self.uncharged += Duration::from_millis(response.waited_ms);
        self.usage += response.usage;
        self.events.push(Event::ModelResponse(ResponseEvent {
            turn: self.turns,
            t_ms: self.t_ms(),
            content: response.content.clone(),
            tool_calls: response.tool_calls.clone(),
            usage: response.usage,
            latency_ms: sent.elapsed().as_millis() as u64,
            finish_reason: response.finish_reason.clone(),
        }));
        if overdue && tokio::time::Instant::now() >= self.deadline() {
            return Err(Ending::BudgetWallClock);
        }
        Ok(response)
    }

    /// The tool calls of a reply, or why there is none usable (fed back as a format error).
    fn read_calls(&mut self, r: &ChatResponse) -> std::result::Result<Vec<ToolCall>, String> {
        if self.text_protocol() {
            let content = r.content.clone().unwrap_or_default();
            let parsed = protocol::parse_action(&content);
            let mut msg = Message::text(Role::Assistant, content);
            let out = parsed.map(|(name, arguments)| {
                let call = ToolCall {
                    id: format!("text-{}", self.turns),
                    name,
                    arguments,
                };
                msg.tool_calls = vec![call.clone()];
                vec![call]
            });
            self.history.push(msg);
            return out;
        }
        self.history.push(Message {
            role: Role::Assistant,
            content: r.content.clone(),
            tool_calls: r.tool_calls.clone(),
            tool_call_id: None,
        });
        if r.tool_calls.is_empty() {
            return Err("your reply called no tool".into());
        }
        Ok(r.tool_calls.clone())
    }

    fn facts_base(&self, turns: u32) -> Facts<'static> {
        Facts {
            total_tool_calls: self.tool_calls,
            consecutive_tool_errors: self.consecutive_tool_errors,
            turns_without_file_change: self.turns_without_change,
            turns,
            elapsed_sec: self.charged().as_secs(),
            ..Facts::default()
        }
    }

    /// Fire the rules of `on`; inject and check feedback go to `injections`. Returns the block
    /// message if a rule blocks.
    async fn apply_middleware(
        &mut self,
        on: On,
        facts: &Facts<'_>,
        injections: &mut Vec<String>,
    ) -> Flow<Option<String>> {
        let mut blocked = None;
        for rule in self.middleware.fire(on, facts) {
            self.events.push(Event::Middleware(MiddlewareEvent {
                turn: self.turns.max(1),
                t_ms: self.t_ms(),
                rule: rule.name.clone(),
                file: self.middleware.file_of(&rule.name),
                event: on.as_str().to_string(),
                action: rule.action.as_str().to_string(),
                message: rule.message.clone(),
            }));
            let message = rule.message.clone().unwrap_or_default();
            match rule.action {
                ActionKind::Inject => injections.push(message),
                ActionKind::Block => {
                    blocked.get_or_insert(message);
                }
                ActionKind::Stop => return Err(Ending::Stopped { rule: rule.name }),
                ActionKind::RunChecks => {
                    for r in self.run_checks().await? {
                        if !r.ok {
                            injections.push(r.feedback());
                        }
                    }
                }
            }
        }
        Ok(blocked)
    }

    async fn run_checks(&mut self) -> Flow<Vec<CheckResult>> {
        let results = checks::run_all(&self.rt.checks, self.sandbox)
            .await
            .map_err(|e| Ending::SandboxError {
                message: e.to_string(),
            })?;
        for r in &results {
            self.events.push(Event::Check(CheckEvent {
                turn: self.turns,
                t_ms: self.t_ms(),
                name: r.name.clone(),
                ok: r.ok,
                exit_code: r.exit_code,
                output: r.output_tail.clone(),
                duration_ms: r.duration_ms,
            }));
        }
        Ok(results)
    }

    /// Handle one tool call. Returns its outcome and whether it was an accepted submit.
    async fn handle_call(
        &mut self,
        call: &ToolCall,
        injections: &mut Vec<String>,
    ) -> Flow<(ToolOutcome, bool)> {
        let started = Instant::now();
        let parsed = tools::parse_args(&call.arguments);
        // Identical = same tool and same arguments (compared as parsed JSON when possible).
        let key = match &parsed {
            Ok(m) => format!("{}\u{0}{}", call.name, Value::Object(m.clone())),
            Err(_) => format!("{}\u{0}{}", call.name, call.arguments.trim()),
        };
        self.repeated = if self.last_call.as_deref() == Some(key.as_str()) {
            self.repeated + 1
        } else {
            1
        };
        self.last_call = Some(key);
        let def = self.rt.tool(&call.name).cloned();
        let command = match (&parsed, def.as_ref().map(|d| d.builtin)) {
            (Ok(m), Some(Builtin::Bash)) => {
                m.get("command").and_then(Value::as_str).map(str::to_string)
            }
            _ => None,
        };
        let path = parsed
            .as_ref()
            .ok()
            .and_then(|m| m.get("path"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let is_submit = def.as_ref().is_some_and(|d| d.builtin == Builtin::Submit);

        let mut facts = self.facts_base(self.turns);
        facts.tool = Some(call.name.as_str());
        facts.command = command.as_deref();
        facts.repeated = self.repeated;
        facts.total_tool_calls = self.tool_calls;
        let on = if is_submit {
            self.submits += 1;
            facts.first_submit = self.submits == 1;
            On::Submit
        } else {
            On::ToolCall
        };
        let blocked = self.apply_middleware(on, &facts, injections).await?;

        let mut workdir_changed = None;
        let mut accepted = false;
        let outcome = if let Some(msg) = &blocked {
            ToolOutcome::error(format!("{PREFIX_BLOCKED}{msg}"))
        } else if let Err(e) = &parsed {
            ToolOutcome::error(format!("error: invalid arguments for `{}`: {e}", call.name))
        } else if let Some(def) = &def {
            if is_submit {
                let results = self.run_checks().await?;
                let failures: Vec<String> = results
                    .iter()
                    .filter(|r| !r.ok)
                    .map(CheckResult::feedback)
                    .collect();
                if failures.is_empty() {
                    accepted = true;
                    ToolOutcome {
                        text: "submitted".into(),
                        ok: true,
                        exit_code: Some(0),
                        ..Default::default()
                    }
                } else {
                    ToolOutcome::error(failures.join("\n\n"))
                }
            } else {
                let args = parsed.as_ref().cloned().unwrap_or_default();
                let timeout = Duration::from_secs(self.spec.budgets.command_timeout_sec).min(
                    self.deadline()
                        .saturating_duration_since(tokio::time::Instant::now())
                        + Duration::from_secs(1),
                );
                let run = tools::execute(def, &args, self.sandbox, timeout);
                let out = tokio::select! {
                    r = run => r.map_err(|e| Ending::SandboxError { message: e.to_string() })?,
                    _ = wait_cancel(self.spec.cancel.clone()) => return Err(Ending::Cancelled),
                };
                if def.builtin == Builtin::Bash && self.workdir_fingerprint.is_some() {
                    let now = self.fingerprint().await.ok();
                    workdir_changed = Some(now != self.workdir_fingerprint);
                    self.workdir_fingerprint = now;
                }
                out
            }
        } else {
            let names: Vec<&str> = self.tool_specs.iter().map(|t| t.name.as_str()).collect();
            ToolOutcome::error(format!(
                "error: unknown tool `{}`; available: {}",
                call.name,
                names.join(", ")
            ))
        };
        self.consecutive_tool_errors = if outcome.ok {
            0
        } else {
            self.consecutive_tool_errors + 1
        };
        let (trace_output, cut) = tools::head_tail(&outcome.text, TRACE_OUTPUT_CHARS);
        self.events.push(Event::ToolCall(ToolEvent {
            turn: self.turns,
            t_ms: self.t_ms(),
            call_id: call.id.clone(),
            tool: call.name.clone(),
            arguments: parsed
                .as_ref()
                .map(|m| Value::Object(m.clone()))
                .unwrap_or_else(|_| Value::String(call.arguments.clone())),
            command: command.clone(),
            path,
            exit_code: outcome.exit_code,
            ok: outcome.ok,
            blocked: blocked.is_some(),
            timed_out: outcome.timed_out,
            output: trace_output,
            truncated: cut || outcome.truncated,
            duration_ms: started.elapsed().as_millis() as u64,
            files_changed: outcome.files_changed.clone(),
            workdir_changed,
        }));

        if blocked.is_none() && !is_submit {
            let mut facts = self.facts_base(self.turns);
            facts.tool = Some(call.name.as_str());
            facts.command = command.as_deref();
            facts.repeated = self.repeated;
            facts.exit_code = outcome.exit_code;
            facts.failed = !outcome.ok;
            facts.result = Some(outcome.text.as_str());
            self.apply_middleware(On::ToolResult, &facts, injections)
                .await?;
        }
        Ok((outcome, accepted))
    }

    /// A cheap fingerprint of the working tree (paths, sizes, mtimes), to tell whether a bash
    /// call changed files. Only taken when a middleware rule needs it. Compared only with
    /// fingerprints of the same sandbox, so the two ways of taking it never meet.
    async fn fingerprint(&self) -> Result<String> {
        // Read from outside where the runtime can: no process to launch after every bash call.
        if let Some(f) = self.sandbox.workdir_fingerprint().await? {
            return Ok(f);
        }
        let cmd = "find . -xdev -maxdepth 6 \\( -name .git -o -name node_modules \\) -prune -o -type f \
                   -printf '%p %s %T@\\n' 2>/dev/null | sort | cksum";
        let o = self
            .sandbox
            .exec(ExecRequest::new(cmd, Duration::from_secs(30)))
            .await?;
        Ok(o.output)
    }

    fn finish(self, ending: Ending) -> Episode {
        let cost_usd = self.spec.prices.cost(&self.usage);
        let mut trace = Trace {
            format: TRACE_FORMAT,
            task: self.spec.task_id.to_string(),
            trial: self.spec.trial,
            seed: self.spec.seed,
            model: self.model.name(),
            harness: self.rt.name.clone(),
            protocol: self.rt.protocol,
            budgets: self.spec.budgets.clone(),
            started_at: self
                .started_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ended_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            tools: self.tool_specs.clone(),
            events: self.events,
            totals: Totals {
                turns: self.turns,
                tool_calls: self.tool_calls,
                usage: self.usage,
                cost_usd,
                duration_ms: self.start.elapsed().as_millis() as u64,
            },
            ending,
            command: None,
        };
        trace.redact(&self.model.secrets());
        Episode {
            ending: trace.ending.clone(),
            usage: self.usage,
            cost_usd,
            trace,
        }
    }
}

/// Whether the last recorded tool event says the working tree changed.
fn outcome_changed_workdir(events: &[Event]) -> bool {
    matches!(events.last(), Some(Event::ToolCall(t)) if t.workdir_changed == Some(true))
}

async fn wait_cancel(cancel: Option<Cancel>) {
    let Some(mut rx) = cancel else {
        return std::future::pending().await;
    };
    loop {
        if *rx.borrow() {
            return;
        }
        if rx.changed().await.is_err() {
            // The sender is gone: nobody can cancel any more.
            return std::future::pending().await;
        }
    }
}
