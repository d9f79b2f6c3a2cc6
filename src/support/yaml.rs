//! YAML parsing whose errors name the file, the line and the field.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Deserialize `text`; on error, report `file:line: field: message`.
pub fn from_str<T: DeserializeOwned>(text: &str, file: &Path) -> Result<T> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.location().map(|l| l.line());
        let message = clean_message(&inner.to_string(), &field);
        let field = if field == "." {
            "(document)".to_string()
        } else {
            field
        };
        Error::Config {
            file: file.to_path_buf(),
            line,
            field,
            message,
            hint: None,
        }
    })
}

/// serde_yaml prefixes the field path and appends " at line L column C"; both are already in
/// our prefix.
fn clean_message(msg: &str, field: &str) -> String {
    let msg = msg
        .strip_prefix(field)
        .and_then(|m| m.strip_prefix(": "))
        .unwrap_or(msg);
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// The 1-based line of the first `key:` in `text` (any indentation), for semantic errors.
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    let needle = format!("{key}:");
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&needle)
        })
        .map(|i| i + 1)
}

/// The 1-based line of the first line that contains `value`.
pub fn line_of_value(text: &str, value: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(value)).map(|i| i + 1)
}

/// Serialize to YAML; our types always serialize.
pub fn to_string<T: serde::Serialize>(value: &T) -> String {
    serde_yaml::to_string(value).expect("our config types serialize to YAML")
}

/// The name a unit enum variant is stored under (its serde name), for messages and records:
/// `sim`, never Rust's `Sim`.
pub fn name_of<T: serde::Serialize>(v: &T) -> String {
    match serde_yaml::to_value(v) {
        Ok(serde_yaml::Value::String(s)) => s,
        _ => "?".to_string(),
    }
}
