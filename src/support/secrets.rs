//! Secret values (API keys) are never stored. Whoever holds one registers it here; every byte
//! git-harness writes to git (blobs, commit messages, notes) or under `.git/harness/` passes
//! through [`redact`], so no path of stored text can forget it. Besides the literal value,
//! JSON-escaped spellings (`\u0073\u006b…`, also with an escaped backslash) are caught: a model
//! echoing a key inside a JSON string must not smuggle it past.

use std::borrow::Cow;
use std::sync::{LazyLock, RwLock};

use regex::bytes::Regex;

/// What replaces a secret wherever it would have been stored.
pub const REDACTED: &str = "[REDACTED]";

/// Values shorter than this are not treated as secrets: redacting them would shred the text,
/// and real keys are long.
const MIN_LEN: usize = 8;

static SECRETS: LazyLock<RwLock<Vec<(String, Regex)>>> = LazyLock::new(RwLock::default);

/// Remember `value` as a secret for the rest of the process.
pub fn register(value: &str) {
    let value = value.trim();
    if value.chars().count() < MIN_LEN {
        return;
    }
    let Ok(mut all) = SECRETS.write() else {
        return;
    };
    if all.iter().any(|(v, _)| v == value) {
        return;
    }
    if let Some(re) = pattern(value) {
        all.push((value.to_string(), re));
    }
}

/// Every spelling of `value` as it may occur in stored text: each character literal or as a
/// JSON `\uXXXX` escape (one or two backslashes), `/` also as `\/`.
fn pattern(value: &str) -> Option<Regex> {
    let mut re = String::new();
    for c in value.chars() {
        let code = c as u32;
        let mut alts = vec![regex::escape(&c.to_string())];
        if code <= 0xffff {
            alts.push(format!(r"\\{{1,2}}u(?i:{code:04x})"));
        }
        if c == '/' {
            alts.push(r"\\{1,2}/".to_string());
        }
        re.push_str(&format!("(?:{})", alts.join("|")));
    }
    Regex::new(&re).ok()
}

/// `bytes` with every registered secret replaced by [`REDACTED`].
pub fn redact(bytes: &[u8]) -> Cow<'_, [u8]> {
    let Ok(all) = SECRETS.read() else {
        return Cow::Borrowed(bytes);
    };
    let mut out = Cow::Borrowed(bytes);
    for (_, re) in all.iter() {
        if re.is_match(&out) {
            out = Cow::Owned(re.replace_all(&out, REDACTED.as_bytes()).into_owned());
        }
    }
    out
}

/// [`redact`] for text.
pub fn redact_str(text: &str) -> Cow<'_, str> {
    match redact(text.as_bytes()) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        // Replacing whole UTF-8 sequences by ASCII keeps the text UTF-8.
        Cow::Owned(b) => Cow::Owned(String::from_utf8_lossy(&b).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_and_json_escaped_forms_are_redacted() {
        register("sk-unit-test-0123456789");
        let plain = "key sk-unit-test-0123456789 here";
        assert_eq!(redact_str(plain), "key [REDACTED] here");
        let escaped: String = "sk-unit-test-0123456789"
            .chars()
            .map(|c| format!("\\u{:04X}", c as u32))
            .collect();
        let text = format!("{{\"a\": \"{escaped}\", \"b\": \"\\{escaped}\"}}");
        let out = redact_str(&text);
        assert!(!out.contains("u0073"), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 2, "{out}");
        assert_eq!(redact_str("short sk-unit"), "short sk-unit");
    }
}
