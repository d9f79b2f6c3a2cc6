//! What the local runner cannot reproduce of a task's image.
//!
//! The local sandbox has no image: it runs on the host's read-only system, copies
//! `environment/workspace/` into the workdir and runs `environment/setup.sh` (docs/tasks.md). A
//! Dockerfile step beyond that (a `RUN` that installs or writes something, `ENV`, `USER`, `ADD`,
//! a `COPY` of other files) or a prebuilt `docker_image` would silently be skipped, and the task
//! would look broken. Such steps are listed here so the runner can say so with the remedy.

use std::path::Path;

use super::Task;

/// One thing of a task's environment the local runner cannot reproduce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalGap {
    /// Relative to the task directory, e.g. `environment/Dockerfile` or `task.toml`.
    pub file: String,
    pub line: Option<usize>,
    /// The step, e.g. "`RUN apt-get install -y jq`".
    pub what: String,
}

impl std::fmt::Display for LocalGap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file, self.what),
            None => write!(f, "{}: {}", self.file, self.what),
        }
    }
}

/// Longest step text shown in a message.
const SHOWN: usize = 80;

/// The steps of `task`'s environment that only an image can give.
pub fn local_gaps(task: &Task) -> Vec<LocalGap> {
    let mut gaps = Vec::new();
    if let Some(image) = &task.environment.docker_image {
        gaps.push(LocalGap {
            file: "task.toml".into(),
            line: None,
            what: format!("[environment] docker_image = \"{image}\""),
        });
    }
    if let Some(df) = &task.dockerfile
        && let Ok(text) = std::fs::read_to_string(df)
    {
        let file = df
            .strip_prefix(&task.dir)
            .unwrap_or(df)
            .to_string_lossy()
            .into_owned();
        for (line, step) in instructions(&text) {
            if !reproducible(&step) {
                gaps.push(LocalGap {
                    file: file.clone(),
                    line: Some(line),
                    what: format!("`{}`", shorten(&step)),
                });
            }
        }
    }
    gaps
}

/// The remedy for a task with gaps, for hints.
pub fn local_remedy() -> &'static str {
    "run it in Docker (`--runner docker`, or `runner.kind: auto` in .harness/experiment.yaml: Docker \
     for tasks that need an image, local for the rest), or move the step into \
     environment/setup.sh (see docs/tasks.md)"
}

/// Dockerfile instructions with the line each starts on: continuation lines joined, comments and
/// blank lines skipped.
fn instructions(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if current.is_none() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        let (start, mut acc) = current.take().unwrap_or((i + 1, String::new()));
        if line.starts_with('#') {
            current = Some((start, acc));
            continue;
        }
        let (body, continues) = match line.strip_suffix('\\') {
            Some(b) => (b.trim_end(), true),
            None => (line, false),
        };
        if !acc.is_empty() && !body.is_empty() {
            acc.push(' ');
        }
        acc.push_str(body);
        if continues {
            current = Some((start, acc));
        } else if !acc.is_empty() {
            out.push((start, acc));
        }
    }
    if let Some((start, acc)) = current
        && !acc.is_empty()
    {
        out.push((start, acc));
    }
    out
}

/// Whether the local runner gives the same result as this Dockerfile step.
fn reproducible(step: &str) -> bool {
    let (keyword, args) = step.split_once(char::is_whitespace).unwrap_or((step, ""));
    let args = args.trim();
    match keyword.to_ascii_uppercase().as_str() {
        // The host's system stands in for the base image; metadata changes nothing a command sees.
        "FROM" | "WORKDIR" | "LABEL" | "MAINTAINER" | "EXPOSE" | "CMD" | "ENTRYPOINT" | "ARG"
        | "STOPSIGNAL" | "HEALTHCHECK" | "SHELL" | "VOLUME" | "ONBUILD" => true,
        // environment/workspace/ and setup.sh are what the local runner copies and runs itself.
        "COPY" => copies_only_local_inputs(args),
        "RUN" => args.contains("setup.sh"),
        _ => false,
    }
}

/// `COPY [--chown=..] SRC... DEST` whose sources are the workspace or `setup.sh`.
fn copies_only_local_inputs(args: &str) -> bool {
    let words: Vec<&str> = args
        .split_whitespace()
        .filter(|w| !w.starts_with("--"))
        .collect();
    let Some((_, sources)) = words.split_last() else {
        return false;
    };
    !sources.is_empty()
        && sources.iter().all(|s| {
            let s = s
                .trim_start_matches("./")
                .trim_start_matches("environment/");
            let name = Path::new(s.trim_end_matches('/'));
            name == Path::new("workspace") || name == Path::new("setup.sh")
        })
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= SHOWN {
        return s.to_string();
    }
    let mut out: String = s.chars().take(SHOWN - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps(dockerfile: &str) -> Vec<(usize, String)> {
        instructions(dockerfile)
            .into_iter()
            .filter(|(_, s)| !reproducible(s))
            .collect()
    }

    #[test]
    fn the_local_conventions_are_reproducible() {
        let demo = "FROM git-harness/base:bookworm\nWORKDIR /app\nCOPY workspace/ /app/\n\
                    COPY setup.sh /tmp/setup.sh\nRUN bash /tmp/setup.sh && rm /tmp/setup.sh\n";
        assert!(gaps(demo).is_empty());
        assert!(gaps("FROM x\nCOPY environment/workspace/ /app/\n").is_empty());
    }

    #[test]
    fn image_steps_are_named_with_their_line() {
        let df = "FROM ubuntu:24.04\n# tools\nRUN apt-get update && \\\n    apt-get install -y jq\n\
                  ENV PYTHONPATH=/app\nCOPY data/ /data/\nWORKDIR /app\n";
        assert_eq!(
            gaps(df),
            vec![
                (3, "RUN apt-get update && apt-get install -y jq".to_string()),
                (5, "ENV PYTHONPATH=/app".to_string()),
                (6, "COPY data/ /data/".to_string()),
            ]
        );
    }

    #[test]
    fn comments_inside_a_continued_step_are_skipped() {
        let df = "RUN a \\\n# note\n  b\n";
        assert_eq!(gaps(df), vec![(1, "RUN a b".to_string())]);
    }
}
