//! Reading task directories (Harbor / TB2 and TB1) and checksumming them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{EnvironmentSpec, Suite, Task, TaskFormat};
use crate::error::{Error, IoContext, Result};

/// Harbor's `[agent].timeout_sec` is optional (no timeout); we always bound a trial.
pub const DEFAULT_AGENT_TIMEOUT_SEC: f64 = 600.0;
/// Harbor's `[verifier].timeout_sec` default.
pub const DEFAULT_VERIFIER_TIMEOUT_SEC: f64 = 600.0;
/// TB1 `max_agent_timeout_sec` default.
pub const TB1_AGENT_TIMEOUT_SEC: f64 = 360.0;
/// TB1 `max_test_timeout_sec` default.
pub const TB1_TEST_TIMEOUT_SEC: f64 = 60.0;
/// The working directory when a task does not name one.
pub const DEFAULT_WORKDIR: &str = "/app";

/// One thing wrong with one task: which task, which file, which field, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskProblem {
    pub task: String,
    pub file: PathBuf,
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

impl fmt::Display for TaskProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task `{}`: {}", self.task, self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        write!(f, ": {}: {}", self.field, self.message)
    }
}

impl TaskProblem {
    fn into_error(self) -> Error {
        Error::Config {
            file: self.file,
            line: self.line,
            field: self.field,
            message: format!("task `{}`: {}", self.task, self.message),
            hint: None,
        }
    }
}

/// Load one task directory. Errors name the task, the file and the field.
pub fn load_task(dir: &Path) -> Result<Task> {
    load_task_problems(dir).map_err(|mut problems| {
        if problems.len() == 1 {
            problems.remove(0).into_error()
        } else {
            aggregate(dir, &problems)
        }
    })
}

/// Load every task directory under `dir` (sorted by name; hidden directories skipped). When some
/// tasks are malformed, the error lists all of them, not only the first. A directory that is
/// itself a task is a suite of one.
pub fn load_suite(dir: &Path) -> Result<Suite> {
    let (suite, problems) = load_suite_lenient(dir)?;
    if !problems.is_empty() {
        return Err(aggregate(dir, &problems));
    }
    if suite.tasks.is_empty() {
        return Err(Error::Config {
            file: dir.to_path_buf(),
            line: None,
            field: "tasks".into(),
            message: "no task directories found".into(),
            hint: Some(
                "a task directory has task.toml + instruction.md (Harbor) or task.yaml (TB1)"
                    .into(),
            ),
        });
    }
    Ok(suite)
}

/// Load what loads and return the problems of the rest. Fails only when `dir` cannot be read.
pub fn load_suite_lenient(dir: &Path) -> Result<(Suite, Vec<TaskProblem>)> {
    let root = dir.to_path_buf();
    if !dir.is_dir() {
        return Err(Error::usage_hint(
            format!("no suite directory at {}", dir.display()),
            "pass a directory of task directories (or one task directory)",
        ));
    }
    if is_task_dir(dir) {
        return Ok(match load_task_problems(dir) {
            Ok(t) => (
                Suite {
                    root,
                    tasks: vec![t],
                },
                Vec::new(),
            ),
            Err(p) => (
                Suite {
                    root,
                    tasks: Vec::new(),
                },
                p,
            ),
        });
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .at(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    entries.sort();
    let mut tasks = Vec::new();
    let mut problems = Vec::new();
    for e in entries {
        match load_task_problems(&e) {
            Ok(t) => tasks.push(t),
            Err(p) => problems.extend(p),
        }
    }
    Ok((Suite { root, tasks }, problems))
}

fn aggregate(dir: &Path, problems: &[TaskProblem]) -> Error {
    let mut tasks: Vec<&str> = problems.iter().map(|p| p.task.as_str()).collect();
    tasks.dedup();
    let mut message = format!(
        "{} malformed task{} ({} problem{}):",
        tasks.len(),
        if tasks.len() == 1 { "" } else { "s" },
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        message.push_str(&format!("\n  {p}"));
    }
    Error::Config {
        file: dir.to_path_buf(),
        line: None,
        field: "tasks".into(),
        message,
        hint: Some("fix these task directories or move them out of the suite".into()),
    }
}

fn is_task_dir(dir: &Path) -> bool {
    dir.join("task.toml").is_file()
        || dir.join("instruction.md").is_file()
        || dir.join("task.yaml").is_file()
}

fn task_id(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

struct Problems {
    task: String,
    list: Vec<TaskProblem>,
}

impl Problems {
    fn add(&mut self, file: &Path, line: Option<usize>, field: &str, message: impl Into<String>) {
        self.list.push(TaskProblem {
            task: self.task.clone(),
            file: file.to_path_buf(),
            line,
            field: field.into(),
            message: message.into(),
        });
    }
}

fn load_task_problems(dir: &Path) -> std::result::Result<Task, Vec<TaskProblem>> {
    let id = task_id(dir);
    let mut pr = Problems {
        task: id.clone(),
        list: Vec::new(),
    };
    let task = if dir.join("task.yaml").is_file() && !dir.join("task.toml").is_file() {
        load_tb1(dir, &id, &mut pr)
    } else if is_task_dir(dir) {
        load_harbor(dir, &id, &mut pr)
    } else {
        pr.add(
            dir,
            None,
            "(layout)",
            "not a task directory: no task.toml, instruction.md or task.yaml",
        );
        None
    };
    match task {
        Some(t) if pr.list.is_empty() => Ok(t),
        _ => Err(pr.list),
    }
}

fn read_text(path: &Path, field: &str, pr: &mut Problems) -> Option<String> {
    match std::fs::read(path) {
        Ok(b) => match String::from_utf8(b) {
            Ok(s) => Some(s),
            Err(_) => {
                pr.add(path, None, field, "is not UTF-8 text");
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            pr.add(path, None, field, "file is missing");
            None
        }
        Err(e) => {
            pr.add(path, None, field, format!("cannot be read: {e}"));
            None
        }
    }
}

/// The 1-based line of byte offset `at` in `text`.
fn line_at(text: &str, at: usize) -> usize {
    text[..at.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// The line of `key =` inside `[table]` (or anywhere when not found there).
/// The line of `key` in `[table]` of a task's `task.toml`, for errors that name it after the
/// task was loaded; `None` when the file or the key is not there.
pub fn toml_field_line(task_toml: &Path, table: &str, key: &str) -> Option<usize> {
    toml_line(&std::fs::read_to_string(task_toml).ok()?, table, key)
}

fn toml_line(text: &str, table: &str, key: &str) -> Option<usize> {
    let mut in_table = table.is_empty();
    let mut fallback = None;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            in_table = t.trim_matches(|c| c == '[' || c == ']').trim() == table;
            if in_table && key.is_empty() {
                return Some(i + 1);
            }
            continue;
        }
        let is_key = t
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if is_key {
            if in_table {
                return Some(i + 1);
            }
            fallback.get_or_insert(i + 1);
        }
    }
    fallback
}

fn positive_secs(v: &toml::Value) -> std::result::Result<f64, String> {
    let x = match v {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        other => {
            return Err(format!(
                "must be a number of seconds, found {}",
                other.type_str()
            ));
        }
    };
    if !x.is_finite() || x <= 0.0 {
        return Err(format!("must be a positive number of seconds, found {x}"));
    }
    Ok(x)
}

/// `"2G"`, `"512M"`, `"1.5g"`, `"2Gi"`, `"2048"` (MB) to megabytes.
pub fn parse_memory_mb(s: &str) -> Option<u64> {
    let t = s.trim();
    let t = t.strip_suffix(['b', 'B']).unwrap_or(t);
    let t = t.strip_suffix(['i', 'I']).unwrap_or(t);
    let (num, mult) = match t.chars().last()? {
        'k' | 'K' => (&t[..t.len() - 1], 1.0 / 1024.0),
        'm' | 'M' => (&t[..t.len() - 1], 1.0),
        'g' | 'G' => (&t[..t.len() - 1], 1024.0),
        't' | 'T' => (&t[..t.len() - 1], 1024.0 * 1024.0),
        _ => (t, 1.0),
    };
    let n: f64 = num.trim().parse().ok()?;
    if !n.is_finite() || n <= 0.0 {
        return None;
    }
    let mb = (n * mult).ceil();
    (mb >= 1.0).then_some(mb as u64)
}

fn load_harbor(dir: &Path, id: &str, pr: &mut Problems) -> Option<Task> {
    let instruction_path = dir.join("instruction.md");
    let instruction = read_text(&instruction_path, "instruction", pr);
    if let Some(i) = &instruction
        && i.trim().is_empty()
    {
        pr.add(&instruction_path, None, "instruction", "is empty");
    }
    // task.toml is optional: without it every setting takes its default.
    let toml_path = dir.join("task.toml");
    let config_text = if toml_path.exists() {
        read_text(&toml_path, "task.toml", pr)
    } else {
        Some(String::new())
    };
    let mut agent_timeout = DEFAULT_AGENT_TIMEOUT_SEC;
    let mut verifier_timeout = DEFAULT_VERIFIER_TIMEOUT_SEC;
    let mut env = EnvironmentSpec {
        workdir: DEFAULT_WORKDIR.into(),
        ..Default::default()
    };
    let mut artifacts = Vec::new();
    let mut verifier_environment = None;
    if let Some(text) = &config_text {
        match toml::from_str::<toml::Table>(text) {
            Err(e) => {
                let line = e.span().map(|s| line_at(text, s.start));
                pr.add(&toml_path, line, "(toml)", e.message().trim().to_string());
            }
            Ok(table) => {
                let mut table_of = |name: &str| -> Option<toml::Table> {
                    match table.get(name) {
                        None => None,
                        Some(toml::Value::Table(t)) => Some(t.clone()),
                        Some(other) => {
                            pr.add(
                                &toml_path,
                                toml_line(text, "", name),
                                name,
                                format!("must be a table, found {}", other.type_str()),
                            );
                            None
                        }
                    }
                };
                let agent = table_of("agent");
                let verifier = table_of("verifier");
                let environment = table_of("environment");
                let mut secs = |t: &Option<toml::Table>, tname: &str, key: &str, out: &mut f64| {
                    if let Some(v) = t.as_ref().and_then(|t| t.get(key)) {
                        match positive_secs(v) {
                            Ok(x) => *out = x,
                            Err(m) => pr.add(
                                &toml_path,
                                toml_line(text, tname, key),
                                &format!("{tname}.{key}"),
                                m,
                            ),
                        }
                    }
                };
                secs(&agent, "agent", "timeout_sec", &mut agent_timeout);
                secs(&verifier, "verifier", "timeout_sec", &mut verifier_timeout);
                if let Some(e) = &environment {
                    parse_environment(e, text, &toml_path, pr, &mut env);
                }
                artifacts = parse_artifacts(&table, text, &toml_path, pr);
                verifier_environment = parse_verifier_mode(&verifier, &env, text, &toml_path, pr);
                // `[agent]` / `[verifier]` `network_mode`: that phase's own mode.
                let (m, hosts) = parse_network(&agent, "agent", text, &toml_path, pr);
                env.agent_network_mode = m;
                env.allowed_hosts.extend(hosts);
                let (m, hosts) = parse_network(&verifier, "verifier", text, &toml_path, pr);
                env.verifier_network_mode = m;
                env.allowed_hosts.extend(hosts);
                env.allowed_hosts.sort();
                env.allowed_hosts.dedup();
                if let Some(v) = verifier_environment.as_mut() {
                    v.agent_network_mode = env.agent_network_mode.clone();
                    v.verifier_network_mode = env.verifier_network_mode.clone();
                    v.allowed_hosts = env.allowed_hosts.clone();
                }
            }
        }
    }
    let tests_dir = dir.join("tests");
    let test_script = tests_dir.join("test.sh");
    if !test_script.is_file() {
        pr.add(
            &test_script,
            None,
            "tests/test.sh",
            "file is missing (the verifier's entry point)",
        );
    }
    let env_dir = dir.join("environment");
    let dockerfile = env_dir.join("Dockerfile");
    let solution = dir.join("solution").join("solve.sh");
    let workspace = env_dir.join("workspace");
    let setup = env_dir.join("setup.sh");
    if !pr.list.is_empty() {
        return None;
    }
    let instruction = instruction?;
    let mut task = Task {
        id: id.to_string(),
        dir: dir.to_path_buf(),
        format: TaskFormat::Harbor,
        instruction,
        agent_timeout: Duration::from_secs_f64(agent_timeout),
        verifier_timeout: Duration::from_secs_f64(verifier_timeout),
        environment: env,
        checksum: String::new(),
        tests_dir: Some(tests_dir),
        test_script,
        solution_script: solution.is_file().then_some(solution),
        environment_dir: env_dir.is_dir().then_some(env_dir),
        dockerfile: dockerfile.is_file().then_some(dockerfile),
        workspace_dir: workspace.is_dir().then_some(workspace),
        setup_script: setup.is_file().then_some(setup),
        verifier_environment,
        artifacts,
    };
    match checksum(&task, config_text.as_deref().unwrap_or("")) {
        Ok(c) => task.checksum = c,
        Err(e) => {
            pr.add(dir, None, "(checksum)", e.to_string());
            return None;
        }
    }
    Some(task)
}

/// Top-level `artifacts = ["path", ...]`.
fn parse_artifacts(table: &toml::Table, text: &str, file: &Path, pr: &mut Problems) -> Vec<String> {
    let mut out = Vec::new();
    let Some(v) = table.get("artifacts") else {
        return out;
    };
    let line = toml_line(text, "", "artifacts");
    let Some(list) = v.as_array() else {
        pr.add(file, line, "artifacts", "must be a list of paths");
        return out;
    };
    for a in list {
        match a.as_str() {
            Some(s) if !s.trim().is_empty() => out.push(s.to_string()),
            _ => pr.add(
                file,
                line,
                "artifacts",
                format!("must be a path, found {a}"),
            ),
        }
    }
    out
}

/// `[verifier] environment_mode` and `[verifier.environment]`: the verifier's own environment
/// when it runs separately (`separate` is the default when `[verifier.environment]` is given).
fn parse_verifier_mode(
    verifier: &Option<toml::Table>,
    task_env: &EnvironmentSpec,
    text: &str,
    file: &Path,
    pr: &mut Problems,
) -> Option<EnvironmentSpec> {
    let v = verifier.as_ref()?;
    let own = match v.get("environment") {
        None => None,
        Some(toml::Value::Table(t)) => Some(t),
        Some(o) => {
            pr.add(
                file,
                toml_line(text, "verifier", "environment"),
                "verifier.environment",
                format!("must be a table, found {}", o.type_str()),
            );
            None
        }
    };
    let separate = match v.get("environment_mode") {
        None => own.is_some(),
        Some(toml::Value::String(m)) if m == "shared" => false,
        Some(toml::Value::String(m)) if m == "separate" => true,
        Some(o) => {
            pr.add(
                file,
                toml_line(text, "verifier", "environment_mode"),
                "verifier.environment_mode",
                format!("must be \"shared\" or \"separate\", found {o}"),
            );
            false
        }
    };
    if !separate {
        return None;
    }
    let mut env = task_env.clone();
    if let Some(t) = own {
        parse_environment(t, text, file, pr, &mut env);
    }
    Some(env)
}

/// `network_mode` and `allowed_hosts` of one table (`[environment]`, `[agent]`, `[verifier]`),
/// checked against Harbor's values (and the older aliases the loader reads).
fn parse_network(
    t: &Option<toml::Table>,
    tname: &str,
    text: &str,
    file: &Path,
    pr: &mut Problems,
) -> (Option<String>, Vec<String>) {
    let Some(t) = t else {
        return (None, Vec::new());
    };
    let mode = match t.get("network_mode") {
        None => None,
        Some(toml::Value::String(m)) if crate::task::NETWORK_MODES.contains(&m.as_str()) => {
            Some(m.clone())
        }
        Some(o) => {
            pr.add(
                file,
                toml_line(text, tname, "network_mode"),
                &format!("{tname}.network_mode"),
                format!("unknown mode {o} (expected \"public\", \"no-network\" or \"allowlist\")"),
            );
            None
        }
    };
    let mut hosts = Vec::new();
    match t.get("allowed_hosts") {
        None => {}
        Some(toml::Value::Array(list)) => {
            for h in list {
                match h.as_str() {
                    Some(s) if !s.trim().is_empty() => hosts.push(s.trim().to_string()),
                    _ => pr.add(
                        file,
                        toml_line(text, tname, "allowed_hosts"),
                        &format!("{tname}.allowed_hosts"),
                        format!("must be a list of host names, found {h}"),
                    ),
                }
            }
        }
        Some(o) => pr.add(
            file,
            toml_line(text, tname, "allowed_hosts"),
            &format!("{tname}.allowed_hosts"),
            format!("must be a list of host names, found {}", o.type_str()),
        ),
    }
    (mode, hosts)
}

fn parse_environment(
    e: &toml::Table,
    text: &str,
    file: &Path,
    pr: &mut Problems,
    env: &mut EnvironmentSpec,
) {
    let line = |k: &str| toml_line(text, "environment", k);
    let field = |k: &str| format!("environment.{k}");
    let string = |k: &str, pr: &mut Problems| -> Option<String> {
        match e.get(k) {
            None => None,
            Some(toml::Value::String(s)) => Some(s.clone()),
            Some(o) => {
                pr.add(
                    file,
                    line(k),
                    &field(k),
                    format!("must be a string, found {}", o.type_str()),
                );
                None
            }
        }
    };
    // Only what is given: a verifier's environment falls back to the task's field by field.
    if let Some(i) = string("docker_image", pr) {
        env.docker_image = Some(i);
    }
    if let Some(w) = string("workdir", pr) {
        if w.starts_with('/') && !w.contains("..") {
            env.workdir = w;
        } else {
            pr.add(
                file,
                line("workdir"),
                &field("workdir"),
                "must be an absolute path",
            );
        }
    }
    let (m, hosts) = parse_network(&Some(e.clone()), "environment", text, file, pr);
    if m.is_some() {
        env.network_mode = m;
    }
    env.allowed_hosts.extend(hosts);
    match e.get("allow_internet") {
        None => {}
        Some(toml::Value::Boolean(b)) => env.allow_internet = Some(*b),
        Some(o) => pr.add(
            file,
            line("allow_internet"),
            &field("allow_internet"),
            format!("must be true or false, found {}", o.type_str()),
        ),
    }
    match e.get("cpus") {
        None => {}
        Some(v) => match v {
            toml::Value::Integer(i) if *i > 0 => env.cpus = Some(*i as f64),
            toml::Value::Float(f) if f.is_finite() && *f > 0.0 => env.cpus = Some(*f),
            o => pr.add(
                file,
                line("cpus"),
                &field("cpus"),
                format!("must be a positive number, found {o}"),
            ),
        },
    }
    match (e.get("memory_mb"), e.get("memory")) {
        (Some(v), _) => match v {
            toml::Value::Integer(i) if *i > 0 => env.memory_mb = Some(*i as u64),
            toml::Value::Float(f) if f.is_finite() && *f >= 1.0 => {
                env.memory_mb = Some(f.ceil() as u64)
            }
            o => pr.add(
                file,
                line("memory_mb"),
                &field("memory_mb"),
                format!("must be a positive number of megabytes, found {o}"),
            ),
        },
        (None, Some(v)) => {
            let parsed = match v {
                toml::Value::String(s) => parse_memory_mb(s),
                toml::Value::Integer(i) if *i > 0 => Some(*i as u64),
                _ => None,
            };
            match parsed {
                Some(mb) => env.memory_mb = Some(mb),
                None => pr.add(
                    file,
                    line("memory"),
                    &field("memory"),
                    format!("must be a size such as \"2G\" or \"512M\", found {v}"),
                ),
            }
        }
        (None, None) => {}
    }
    if let Some(v) = e.get("build_timeout_sec") {
        match positive_secs(v) {
            Ok(x) => env.build_timeout_sec = Some(x.ceil() as u64),
            Err(m) => pr.add(
                file,
                line("build_timeout_sec"),
                &field("build_timeout_sec"),
                m,
            ),
        }
    }
}

fn load_tb1(dir: &Path, id: &str, pr: &mut Problems) -> Option<Task> {
    let yaml_path = dir.join("task.yaml");
    let text = read_text(&yaml_path, "task.yaml", pr)?;
    let value: serde_yaml::Value = match serde_yaml::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            let line = e.location().map(|l| l.line());
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            pr.add(&yaml_path, line, "(yaml)", msg);
            return None;
        }
    };
    let Some(map) = value.as_mapping() else {
        pr.add(&yaml_path, Some(1), "(document)", "must be a mapping");
        return None;
    };
    let get = |k: &str| map.get(serde_yaml::Value::String(k.into()));
    let line = |k: &str| crate::support::yaml::line_of(&text, k);
    let instruction = match get("instruction") {
        Some(serde_yaml::Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(serde_yaml::Value::String(_)) => {
            pr.add(&yaml_path, line("instruction"), "instruction", "is empty");
            None
        }
        None => {
            pr.add(&yaml_path, None, "instruction", "is missing");
            None
        }
        Some(_) => {
            pr.add(
                &yaml_path,
                line("instruction"),
                "instruction",
                "must be a string",
            );
            None
        }
    };
    let secs = |k: &str, default: f64, pr: &mut Problems| -> f64 {
        match get(k) {
            None => default,
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x > 0.0 => x,
                _ => {
                    pr.add(
                        &yaml_path,
                        line(k),
                        k,
                        "must be a positive number of seconds",
                    );
                    default
                }
            },
        }
    };
    let agent_timeout = secs("max_agent_timeout_sec", TB1_AGENT_TIMEOUT_SEC, pr);
    let test_timeout = secs("max_test_timeout_sec", TB1_TEST_TIMEOUT_SEC, pr);
    let test_script = dir.join("run-tests.sh");
    if !test_script.is_file() {
        pr.add(
            &test_script,
            None,
            "run-tests.sh",
            "file is missing (the verifier's entry point)",
        );
    }
    let tests_dir = dir.join("tests");
    let dockerfile = dir.join("Dockerfile");
    let solution = dir.join("solution.sh");
    let workspace = dir.join("environment").join("workspace");
    let setup = dir.join("environment").join("setup.sh");
    if !pr.list.is_empty() {
        return None;
    }
    let mut task = Task {
        id: id.to_string(),
        dir: dir.to_path_buf(),
        format: TaskFormat::Tb1,
        instruction: instruction?,
        agent_timeout: Duration::from_secs_f64(agent_timeout),
        verifier_timeout: Duration::from_secs_f64(test_timeout),
        environment: EnvironmentSpec {
            workdir: DEFAULT_WORKDIR.into(),
            ..Default::default()
        },
        checksum: String::new(),
        tests_dir: tests_dir.is_dir().then_some(tests_dir),
        test_script,
        solution_script: solution.is_file().then_some(solution),
        environment_dir: Some(dir.to_path_buf()),
        dockerfile: dockerfile.is_file().then_some(dockerfile),
        workspace_dir: workspace.is_dir().then_some(workspace),
        setup_script: setup.is_file().then_some(setup),
        verifier_environment: None,
        artifacts: Vec::new(),
    };
    match checksum(&task, &text) {
        Ok(c) => task.checksum = c,
        Err(e) => {
            pr.add(dir, None, "(checksum)", e.to_string());
            return None;
        }
    }
    Some(task)
}

/// sha256 over the instruction, the task's config file, the environment files and the verifier
/// files: sorted `/`-separated logical paths and contents, so the same task gives the same
/// checksum on every machine. Solutions are not covered: they do not change what is measured.
fn checksum(task: &Task, config: &str) -> Result<String> {
    let mut entries: Vec<(String, Vec<u8>)> = vec![
        ("instruction".into(), task.instruction.as_bytes().to_vec()),
        ("config".into(), config.as_bytes().to_vec()),
    ];
    match task.format {
        TaskFormat::Harbor => {
            if let Some(d) = &task.environment_dir {
                collect(d, "environment", &mut entries)?;
            }
            if let Some(d) = &task.tests_dir {
                collect(d, "tests", &mut entries)?;
            }
        }
        TaskFormat::Tb1 => {
            for f in [
                "Dockerfile",
                "docker-compose.yaml",
                "docker-compose.yml",
                "run-tests.sh",
            ] {
                let p = task.dir.join(f);
                if p.is_file() {
                    entries.push((format!("environment/{f}"), std::fs::read(&p).at(&p)?));
                }
            }
            let env_dir = task.dir.join("environment");
            if env_dir.is_dir() {
                collect(&env_dir, "environment/environment", &mut entries)?;
            }
            if let Some(d) = &task.tests_dir {
                collect(d, "tests", &mut entries)?;
            }
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = crate::support::digest::Hasher::new();
    h.update(b"git-harness task v1\n");
    for (path, data) in &entries {
        h.update(path.as_bytes());
        h.update([0u8]);
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    Ok(h.hex())
}

/// Files under `dir` as (`prefix/relative/path`, content); symlinks as their target text.
/// Caches that tools leave behind (`__pycache__`, `.pytest_cache`, `.DS_Store`) are skipped.
pub(crate) fn collect(dir: &Path, prefix: &str, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .at(dir)?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if matches!(
            name.as_str(),
            "__pycache__" | ".pytest_cache" | ".DS_Store" | ".git"
        ) {
            continue;
        }
        let path = e.path();
        let logical = format!("{prefix}/{name}");
        let ft = std::fs::symlink_metadata(&path).at(&path)?.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(&path).at(&path)?;
            out.push((
                format!("{logical}@"),
                target.to_string_lossy().as_bytes().to_vec(),
            ));
        } else if ft.is_dir() {
            collect(&path, &logical, out)?;
        } else if ft.is_file() {
            out.push((logical, std::fs::read(&path).at(&path)?));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_mb("2G"), Some(2048));
        assert_eq!(parse_memory_mb("512M"), Some(512));
        assert_eq!(parse_memory_mb("2Gi"), Some(2048));
        assert_eq!(parse_memory_mb("1.5g"), Some(1536));
        assert_eq!(parse_memory_mb("1024"), Some(1024));
        assert_eq!(parse_memory_mb("lots"), None);
        assert_eq!(parse_memory_mb("-1G"), None);
    }

    #[test]
    fn toml_lines() {
        let t = "[agent]\ntimeout_sec = 1\n[verifier]\ntimeout_sec = \"x\"\n";
        assert_eq!(toml_line(t, "verifier", "timeout_sec"), Some(4));
        assert_eq!(toml_line(t, "agent", "timeout_sec"), Some(2));
    }
}
