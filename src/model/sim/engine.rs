//! The sim's decisions: a pure function of (scenario, suite, request). The sim keeps no state
//! between requests; it reads where it is from the conversation. Each of its replies ends with
//! a state note, `(sim state: MODE STEP)`, the way a model's own earlier reasoning stays in its
//! context: an instruction shown only once (bootstrap) still shapes later turns through it.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use regex::Regex;
use serde_json::{Value, json};

use super::scenario::{Action, Neutraliser, Quirk, Scenario, SimEvent, TaskScript};
use crate::task::Suite;

/// Prefixes of the agent runtime (see `crate::agent`), by which the sim recognises events.
const BLOCKED: &str = "[blocked by harness]";
const INJECTED: &str = "[harness]";
const CHECK_FAILED: &str = "[check failed]";

/// Listings a stalled sim cycles through besides its explore commands.
const LISTINGS: [&str; 2] = ["ls -la", "find . -maxdepth 2 -type f | head -n 50"];

pub(crate) struct Engine {
    scenario: Scenario,
    /// (task id, trimmed instruction), longest instruction first so the most specific wins.
    tasks: Vec<(String, String)>,
    state_re: Regex,
    submit_re: Regex,
}

/// Where in its script the sim is. `step` indexes the mode's action list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    Slip,
    Finish,
    Fix,
    Stall,
    Retry,
    NoVerify,
    Careful,
    EnvLoss,
    Loop,
}

const MODES: [(Mode, &str); 10] = [
    (Mode::Normal, "normal"),
    (Mode::Slip, "slip"),
    (Mode::Finish, "finish"),
    (Mode::Fix, "fix"),
    (Mode::Stall, "stall"),
    (Mode::Retry, "retry"),
    (Mode::NoVerify, "no-verify"),
    (Mode::Careful, "careful"),
    (Mode::EnvLoss, "env-loss"),
    (Mode::Loop, "loop"),
];

impl Mode {
    fn name(self) -> &'static str {
        MODES
            .iter()
            .find(|(m, _)| *m == self)
            .map(|(_, n)| *n)
            .unwrap_or("normal")
    }
    fn parse(s: &str) -> Option<Mode> {
        MODES.iter().find(|(_, n)| *n == s).map(|(m, _)| *m)
    }
    /// Modes in which a quirk is playing and can still be neutralised.
    fn quirky(self) -> bool {
        matches!(
            self,
            Mode::Stall | Mode::Retry | Mode::NoVerify | Mode::EnvLoss | Mode::Loop
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Act {
    Do(Action),
    Submit,
}

/// One earlier assistant turn and the results that followed it.
struct Turn {
    state: Option<(Mode, usize)>,
    results: Vec<String>,
}

/// What the conversation shows at the moment of the decision.
struct Seen<'a> {
    system: Vec<&'a str>,
    first_user: Option<&'a str>,
    injected: Vec<&'a str>,
    turns: Vec<Turn>,
}

pub(crate) struct Reply {
    pub content: String,
    /// (tool name, arguments) in tools mode; `None` in text mode (the action is in `content`).
    pub tool_call: Option<(String, Value)>,
}

impl Engine {
    pub fn new(scenario: Scenario, suite: &Suite) -> Self {
        let mut tasks: Vec<(String, String)> = suite
            .tasks
            .iter()
            .map(|t| (t.id.clone(), t.instruction.trim().to_string()))
            .filter(|(_, i)| !i.is_empty())
            .collect();
        tasks.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        let state_re =
            Regex::new(r"\(sim state: ([a-z-]+) (\d+)\)").expect("a valid literal regex");
        // How instructions name a submit command (mini-swe-agent's
        // `echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT`).
        let submit_re = Regex::new(r"`(echo [A-Z][A-Z0-9_]*)`").expect("a valid literal regex");
        Engine {
            scenario,
            tasks,
            state_re,
            submit_re,
        }
    }

    pub fn model_name(&self) -> String {
        format!("sim/{}", self.scenario.name)
    }

    /// Decide the next reply to a Chat Completions request body.
    pub fn reply(&self, body: &Value) -> Result<Reply, String> {
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .ok_or("the request has no `messages`")?;
        // Each offered tool with its parameter names: the sim speaks the harness's own tools
        // (a shell tool named `execute`, file tools keyed by `file_path`, ...).
        let offered: Vec<(&str, Vec<&str>)> = body
            .get("tools")
            .and_then(Value::as_array)
            .map(|ts| {
                ts.iter()
                    .filter_map(|t| {
                        let name = t.pointer("/function/name").and_then(Value::as_str)?;
                        let params = t
                            .pointer("/function/parameters/properties")
                            .and_then(Value::as_object)
                            .map(|o| o.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        Some((name, params))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let text_mode = offered.is_empty();
        let seen = self.read(messages, text_mode);
        let task_id = self
            .identify(&seen)
            .ok_or("sim: no task of the suite matches this conversation")?;
        let empty = TaskScript::default();
        let script = self.scenario.tasks.get(task_id).unwrap_or(&empty);
        let seed = body.get("seed").and_then(Value::as_u64).unwrap_or(0);

        // The trial's draws, in the documented order: quirk activity, then slip.
        let mut rng = trial_rng(seed, task_id);
        let p = script.p.unwrap_or(self.scenario.defaults.p);
        let active = rng.random::<f64>() < p && script.quirk.is_some();
        let slip = rng.random::<f64>() < self.scenario.defaults.slip;

        let neutraliser = script.quirk.and_then(|q| self.scenario.quirks.get(&q));
        let neutralised = neutraliser.is_some_and(|n| self.neutralised(n, &seen, script));

        let state = match seen.turns.last().and_then(|t| t.state) {
            None => {
                let mode = if slip {
                    Mode::Slip
                } else if !active {
                    Mode::Normal
                } else {
                    match script.quirk {
                        Some(Quirk::LateArtifact) => Mode::Stall,
                        Some(Quirk::ExactRetry) => Mode::Retry,
                        Some(Quirk::NoVerify) => Mode::NoVerify,
                        Some(Quirk::EnvLoss) => Mode::EnvLoss,
                        Some(Quirk::Loop) => Mode::Loop,
                        None => Mode::Normal,
                    }
                };
                (mode, 0)
            }
            Some((mode, step)) => {
                let last = seen.turns.last().expect("a last turn exists here");
                let was_submit = act_at(script, mode, step) == Act::Submit;
                if was_submit && last.results.first().is_some_and(|r| rejected(r)) {
                    (Mode::Fix, 0)
                } else {
                    (mode, step + 1)
                }
            }
        };
        let (mode, step) = if state.0.quirky() && neutralised {
            neutralise(script, state)
        } else {
            state
        };
        let act = act_at(script, mode, step);
        let submit = self.submit_command(&seen);
        Ok(render(act, mode, step, &offered, text_mode, submit))
    }

    fn read<'a>(&self, messages: &'a [Value], text_mode: bool) -> Seen<'a> {
        let mut seen = Seen {
            system: Vec::new(),
            first_user: None,
            injected: Vec::new(),
            turns: Vec::new(),
        };
        for m in messages {
            let content = m.get("content").and_then(Value::as_str);
            match m.get("role").and_then(Value::as_str) {
                Some("system") => seen.system.extend(content),
                Some("user") => {
                    let c = content.unwrap_or_default();
                    if seen.first_user.is_none() {
                        seen.first_user = Some(c);
                    } else if c.starts_with(INJECTED) {
                        seen.injected.push(c);
                    } else if text_mode
                        && !c.starts_with("[budget]")
                        && !c.starts_with("[format]")
                        && let Some(t) = seen.turns.last_mut()
                    {
                        // The text protocol returns tool results as user messages.
                        t.results.push(c.to_string());
                    }
                }
                Some("assistant") => {
                    let state = content.and_then(|c| {
                        let caps = self.state_re.captures_iter(c).last()?;
                        Some((Mode::parse(&caps[1])?, caps[2].parse().ok()?))
                    });
                    seen.turns.push(Turn {
                        state,
                        results: Vec::new(),
                    });
                }
                Some("tool") => {
                    if let Some(t) = seen.turns.last_mut() {
                        t.results.push(content.unwrap_or_default().to_string());
                    }
                }
                _ => {}
            }
        }
        seen
    }

    /// The submit command the instructions name, for a harness that offers no `submit` tool.
    fn submit_command<'a>(&self, seen: &Seen<'a>) -> Option<&'a str> {
        seen.system
            .iter()
            .copied()
            .chain(seen.first_user)
            .find_map(|t| self.submit_re.captures(t))
            .and_then(|c| c.get(1))
            .map(|m| m.as_str())
    }

    /// The task whose instruction occurs in the first user or the first system message.
    fn identify(&self, seen: &Seen<'_>) -> Option<&str> {
        let places: Vec<&str> = seen
            .first_user
            .into_iter()
            .chain(seen.system.first().copied())
            .collect();
        self.tasks
            .iter()
            .find(|(_, instr)| places.iter().any(|p| p.contains(instr.as_str())))
            .map(|(id, _)| id.as_str())
    }

    fn neutralised(&self, n: &Neutraliser, seen: &Seen<'_>, script: &TaskScript) -> bool {
        let said: String = seen
            .system
            .iter()
            .chain(seen.injected.iter())
            .map(|s| s.to_lowercase())
            .collect::<Vec<_>>()
            .join("\n");
        if n.phrases
            .iter()
            .any(|p| !p.trim().is_empty() && said.contains(&p.to_lowercase()))
        {
            return true;
        }
        n.events.iter().any(|e| match e {
            SimEvent::Blocked => seen
                .turns
                .iter()
                .any(|t| t.results.iter().any(|r| r.starts_with(BLOCKED))),
            SimEvent::Injected => !seen.injected.is_empty(),
            SimEvent::SubmitRejected => seen.turns.iter().any(|t| {
                t.state
                    .is_some_and(|(m, s)| act_at(script, m, s) == Act::Submit)
                    && t.results.first().is_some_and(|r| rejected(r))
            }),
        })
    }
}

fn rejected(result: &str) -> bool {
    result.starts_with(CHECK_FAILED) || result.starts_with(BLOCKED)
}

/// ChaCha seeded by sha256(seed, task id): the same trial of the same task always draws alike.
fn trial_rng(seed: u64, task: &str) -> ChaCha8Rng {
    let mut h = crate::support::digest::Hasher::new();
    h.update(seed.to_le_bytes());
    h.update(b"\0");
    h.update(task.as_bytes());
    ChaCha8Rng::from_seed(h.finish())
}

/// A quirk neutralised at `step`: before the quirk's own actions began, the plain script from
/// there; after, solve-verify-submit. no-verify instead adds the verification it skipped.
fn neutralise(script: &TaskScript, (mode, step): (Mode, usize)) -> (Mode, usize) {
    if mode == Mode::NoVerify {
        return (Mode::Careful, step);
    }
    if step <= script.explore.len() {
        (Mode::Normal, step)
    } else {
        (Mode::Finish, 0)
    }
}

fn bash(cmd: &str) -> Act {
    Act::Do(Action::Bash(cmd.to_string()))
}

/// The action of `mode` at `step`. Finite scripts end in a submit (and submit again if asked
/// after that); the quirky loops go on until something neutralises them.
fn act_at(s: &TaskScript, mode: Mode, step: usize) -> Act {
    let explore: Vec<Act> = s.explore.iter().map(|c| bash(c)).collect();
    let verify: Vec<Act> = s.verify.iter().map(|c| bash(c)).collect();
    let acts = |v: &[Action]| v.iter().cloned().map(Act::Do).collect::<Vec<_>>();
    let n = explore.len();
    let finite: Vec<Act> = match mode {
        Mode::Normal => [explore, acts(&s.solve), verify].concat(),
        Mode::Slip => explore,
        Mode::Finish => [acts(&s.solve), verify].concat(),
        Mode::Fix => [verify.clone(), acts(&s.solve), verify].concat(),
        Mode::NoVerify => [explore, acts(&s.wrong)].concat(),
        Mode::Careful => [
            explore,
            acts(&s.wrong),
            verify.clone(),
            acts(&s.solve),
            verify,
        ]
        .concat(),
        Mode::EnvLoss => [explore, acts(&s.split)].concat(),
        Mode::Stall => {
            if step < n {
                return explore[step].clone();
            }
            let cycle: Vec<&str> = s
                .explore
                .iter()
                .map(String::as_str)
                .chain(LISTINGS)
                .collect();
            return bash(cycle[(step - n) % cycle.len()]);
        }
        Mode::Retry => {
            if step < n {
                return explore[step].clone();
            }
            return bash(s.failing.as_deref().unwrap_or("false"));
        }
        Mode::Loop => {
            if step < n {
                return explore[step].clone();
            }
            return bash(s.explore.last().map(String::as_str).unwrap_or(LISTINGS[0]));
        }
    };
    finite.get(step).cloned().unwrap_or(Act::Submit)
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The tool call for an action, falling back to `bash` when the harness lacks the tool (a
/// submit without a `submit` tool runs the submit command the instructions name, if any).
fn tool_call(
    act: &Act,
    offered: &[(&str, Vec<&str>)],
    text_mode: bool,
    submit: Option<&str>,
) -> Option<(String, Value)> {
    let has = |t: &str| text_mode || offered.iter().any(|(n, _)| *n == t);
    // A file tool is used only when it takes the sim's argument names; else the shell does it.
    let takes = |t: &str, params: &[&str]| {
        text_mode
            || offered
                .iter()
                .any(|(n, ps)| *n == t && params.iter().all(|p| ps.contains(p)))
    };
    // The shell tool: `bash` (the built-in loop, mini-swe-agent's text protocol) unless the
    // harness offers only `execute` (DeepAgents).
    let shell = if !has("bash") && has("execute") {
        "execute"
    } else {
        "bash"
    };
    let sh = |c: String| Some((shell.to_string(), json!({ "command": c })));
    match act {
        Act::Submit => match submit {
            Some(cmd) if !has("submit") => sh(cmd.to_string()),
            // A native tool-calling loop without a submit tool ends on an answer with no call.
            None if !has("submit") => None,
            _ => Some(("submit".into(), json!({"summary": "done"}))),
        },
        Act::Do(Action::Bash(c)) => sh(c.clone()),
        Act::Do(Action::WriteFile { path, content })
            if takes("write_file", &["path", "content"]) =>
        {
            Some((
                "write_file".into(),
                json!({"path": path, "content": content}),
            ))
        }
        Act::Do(Action::WriteFile { path, content }) => sh(format!(
            "mkdir -p \"$(dirname {p})\" && printf '%s' {c} > {p}",
            p = quote(path),
            c = quote(content)
        )),
        Act::Do(Action::ReadFile(path)) if takes("read_file", &["path"]) => {
            Some(("read_file".into(), json!({"path": path})))
        }
        Act::Do(Action::ReadFile(path)) => sh(format!("cat -- {}", quote(path))),
        Act::Do(Action::Edit {
            path,
            old_text,
            new_text,
        }) if takes("edit", &["path", "old_text", "new_text"]) => Some((
            "edit".into(),
            json!({"path": path, "old_text": old_text, "new_text": new_text}),
        )),
        Act::Do(Action::Edit {
            path,
            old_text,
            new_text,
        }) => sh(format!(
            "python3 -c 'import sys; p=sys.argv[1]; s=open(p).read(); open(p,\"w\").write(s.replace(sys.argv[2], sys.argv[3], 1))' {} {} {}",
            quote(path),
            quote(old_text),
            quote(new_text)
        )),
    }
}

fn render(
    act: Act,
    mode: Mode,
    step: usize,
    offered: &[(&str, Vec<&str>)],
    text_mode: bool,
    submit: Option<&str>,
) -> Reply {
    let state = format!("(sim state: {} {step})", mode.name());
    let Some((name, args)) = tool_call(&act, offered, text_mode, submit) else {
        return Reply {
            content: format!("The task is done. {state}"),
            tool_call: None,
        };
    };
    let what = match (&act, mode) {
        (Act::Submit, _) => "The task is done; submitting.".to_string(),
        (_, Mode::Finish | Mode::Fix | Mode::Careful) => format!("Next: {name}."),
        _ => format!("Running {name}."),
    };
    if text_mode {
        let action = json!({"tool": name, "arguments": args});
        Reply {
            content: format!("{what}\n```json\n{action}\n```\n{state}"),
            tool_call: None,
        }
    } else {
        Reply {
            content: format!("{what} {state}"),
            tool_call: Some((name, args)),
        }
    }
}
