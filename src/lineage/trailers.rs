//! Git trailers, read and written with git's own rules (libgit2's `git_message_trailers`, the
//! same parser as `git interpret-trailers --parse`).

use crate::error::{GitContext, Result};

/// A commit message: subject, prose body, trailers (key, value) in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitMessage {
    pub subject: String,
    pub body: String,
    pub trailers: Vec<(String, String)>,
}

impl CommitMessage {
    pub fn new(subject: impl Into<String>) -> Self {
        CommitMessage {
            subject: one_line(&subject.into()),
            ..Default::default()
        }
    }

    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    pub fn trailer(mut self, key: &str, value: impl AsRef<str>) -> Self {
        self.trailers
            .push((key.to_string(), one_line(value.as_ref())));
        self
    }

    /// Render as git expects: subject, blank line, body, blank line, trailer block.
    pub fn render(&self) -> String {
        let mut s = self.subject.clone();
        s.push('\n');
        let body = self.body.trim_matches('\n');
        if !body.is_empty() {
            s.push('\n');
            s.push_str(body);
            s.push('\n');
        }
        if !self.trailers.is_empty() {
            s.push('\n');
            for (k, v) in &self.trailers {
                s.push_str(k);
                s.push_str(": ");
                s.push_str(v);
                s.push('\n');
            }
        }
        s
    }

    /// Split a full message back into subject, body and trailers.
    pub fn parse(message: &str) -> Result<Self> {
        let trailers = parse(message)?;
        let mut lines = message.lines();
        let subject = lines.next().unwrap_or_default().to_string();
        let rest: Vec<&str> = lines.collect();
        let mut body = rest.join("\n");
        // The trailer block is the last paragraph; drop it from the body when we found trailers.
        if !trailers.is_empty()
            && let Some(i) = body.trim_end().rfind("\n\n")
        {
            body.truncate(i);
        } else if !trailers.is_empty() {
            body.clear();
        }
        Ok(CommitMessage {
            subject,
            body: body.trim_matches('\n').to_string(),
            trailers,
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        get(&self.trailers, key)
    }
}

/// Trailers of a message, as git parses them.
pub fn parse(message: &str) -> Result<Vec<(String, String)>> {
    let t = git2::message_trailers_strs(message).git("parse trailers")?;
    Ok(t.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// The last value of `key` (git's "last one wins" for single-valued trailers).
pub fn get<'a>(trailers: &'a [(String, String)], key: &str) -> Option<&'a str> {
    trailers
        .iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// Trailer values are single lines; newlines would start a new trailer or end the block.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = CommitMessage::new("Add a loop guard")
            .body("Why:\n\nbecause.\n\nEvidence: none")
            .trailer("Harness-Surface", "middleware/runtime_control.yaml")
            .trailer("Harness-Round", "3");
        let text = m.render();
        let back = CommitMessage::parse(&text).unwrap();
        assert_eq!(back.subject, "Add a loop guard");
        assert_eq!(back.get("Harness-Round"), Some("3"));
        assert_eq!(back.trailers.len(), 2);
        assert!(back.body.contains("because."));
        assert!(!back.body.contains("Harness-Round"));
    }

    #[test]
    fn multi_line_values_are_folded() {
        let m = CommitMessage::new("s").trailer("Harness-Cluster", "a\nb");
        assert!(m.render().contains("Harness-Cluster: a b\n"));
    }
}
