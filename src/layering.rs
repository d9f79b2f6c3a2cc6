//! The module import graph has no cycle: neither between the top-level modules nor between the
//! files (or sub-directories) of one module. Read from the sources: `use` trees and inline paths
//! starting at the crate root, `super` or `self`. A module's `mod.rs` is its facade: it may name
//! its children, and a child naming its parent's own items adds no edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type ModPath = Vec<String>;

/// Every `.rs` file under `src/` with its module path (`src/eval/run.rs` → `eval::run`).
fn sources(root: &Path) -> Vec<(ModPath, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(root).expect("under src");
            let mut parts: ModPath = rel
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            let last = parts.last().cloned().unwrap_or_default();
            if last == "mod" || last == "lib" || last == "main" {
                parts.pop();
            }
            // The binary's root is not a module of the library.
            if rel == Path::new("main.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            out.push((parts, text));
        }
    }
    out
}

/// The text without line comments and without `#[cfg(test)] mod … { … }` blocks: test code may
/// reach anywhere.
fn code_of(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    let text = lines.join("\n");
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let brace = trimmed.find('{');
        let semi = trimmed.find(';');
        match (trimmed.starts_with("mod "), brace, semi) {
            (true, Some(b), s) if s.is_none_or(|s| b < s) => {
                rest = skip_block(&trimmed[b..]);
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// The text after the brace-balanced block that `text` starts with. Braces in string and char
/// literals do not count.
fn skip_block(text: &str) -> &str {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'\'' if i + 2 < bytes.len() && bytes[i + 2] == b'\'' => i += 2,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return &text[i + 1..];
                }
            }
            _ => {}
        }
        i += 1;
    }
    ""
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Sep,
    Open,
    Close,
    Comma,
    Other,
}

fn tokens(code: &str) -> Vec<Tok> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
            continue;
        }
        if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(Tok::Sep);
            i += 2;
            continue;
        }
        if !c.is_whitespace() {
            out.push(match c {
                '{' => Tok::Open,
                '}' => Tok::Close,
                ',' => Tok::Comma,
                _ => Tok::Other,
            });
        }
        i += 1;
    }
    out
}

/// Expands a `use` tree starting at `toks[*i]` into its paths.
fn use_tree(toks: &[Tok], i: &mut usize, prefix: &ModPath, out: &mut Vec<ModPath>) {
    let mut path = prefix.clone();
    loop {
        match toks.get(*i) {
            Some(Tok::Ident(name)) => {
                path.push(name.clone());
                *i += 1;
                if toks.get(*i) == Some(&Tok::Sep) {
                    *i += 1;
                    continue;
                }
                // `as name`
                if matches!(toks.get(*i), Some(Tok::Ident(a)) if a == "as") {
                    *i += 2;
                }
                out.push(path);
                return;
            }
            Some(Tok::Open) => {
                *i += 1;
                while !matches!(toks.get(*i), None | Some(Tok::Close)) {
                    use_tree(toks, i, &path, out);
                    if toks.get(*i) == Some(&Tok::Comma) {
                        *i += 1;
                    }
                }
                *i += 1;
                return;
            }
            _ => {
                // `*` or the end of the tree.
                if toks.get(*i) == Some(&Tok::Other) {
                    *i += 1;
                }
                out.push(path);
                return;
            }
        }
    }
}

/// Every path the code names that starts at `crate`, `super` or `self`, made absolute.
fn references(module: &ModPath, code: &str) -> Vec<ModPath> {
    let toks = tokens(code);
    let mut raw = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if toks[i] == Tok::Ident("use".into()) {
            i += 1;
            use_tree(&toks, &mut i, &Vec::new(), &mut raw);
            continue;
        }
        if let Tok::Ident(name) = &toks[i]
            && matches!(name.as_str(), "crate" | "super" | "self")
            && toks.get(i + 1) == Some(&Tok::Sep)
            && (i == 0 || toks[i - 1] != Tok::Sep)
        {
            let mut path = vec![name.clone()];
            let mut j = i + 1;
            while toks.get(j) == Some(&Tok::Sep) {
                match toks.get(j + 1) {
                    Some(Tok::Ident(n)) => {
                        path.push(n.clone());
                        j += 2;
                    }
                    _ => break,
                }
            }
            raw.push(path);
            i = j;
            continue;
        }
        i += 1;
    }
    // `super` of `a/b.rs` is `a`; of `a/b/mod.rs` too, since that file's module is `a::b`.
    raw.into_iter()
        .filter_map(|p| {
            let mut abs: ModPath = Vec::new();
            let mut rest = p.as_slice();
            match rest.first().map(String::as_str) {
                Some("crate") => rest = &rest[1..],
                Some("self") => {
                    abs = module.clone();
                    rest = &rest[1..];
                }
                Some("super") => {
                    abs = module.clone();
                    while rest.first().map(String::as_str) == Some("super") {
                        abs.pop();
                        rest = &rest[1..];
                    }
                }
                _ => return None,
            }
            abs.extend(rest.iter().filter(|s| *s != "self").cloned());
            Some(abs)
        })
        .collect()
}

/// The edges of one level: `parent` → (from child → to children).
type Levels = BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>>;

fn graph(root: &Path) -> Levels {
    let files = sources(root);
    let modules: BTreeSet<ModPath> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut levels: Levels = BTreeMap::new();
    for (module, text) in &files {
        for target in references(module, &code_of(text)) {
            // The longest prefix that is a module: the rest names items.
            let mut target = target;
            while !target.is_empty() && !modules.contains(&target) {
                target.pop();
            }
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common >= module.len() || common >= target.len() {
                continue;
            }
            levels
                .entry(module[..common].to_vec())
                .or_default()
                .entry(module[common].clone())
                .or_default()
                .insert(target[common].clone());
        }
    }
    levels
}

/// The cycles of a graph, one per strongly connected component with more than one node, each as
/// a path that returns to its start.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges
        .keys()
        .chain(edges.values().flat_map(|s| s.iter()))
        .collect();
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for next in edges.get(&n).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for &n in &nodes {
        if done.contains(n) || !reach(n).contains(n) {
            continue;
        }
        // A shortest path back to `n` names the cycle.
        let mut prev: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([n.clone()]);
        let mut end = None;
        while let Some(cur) = queue.pop_front() {
            for next in edges.get(&cur).into_iter().flatten() {
                if next == n {
                    end = Some(cur.clone());
                    queue.clear();
                    break;
                }
                if !prev.contains_key(next) {
                    prev.insert(next.clone(), cur.clone());
                    queue.push_back(next.clone());
                }
            }
        }
        let mut back = Vec::new();
        let mut cur = end.expect("a cycle through n");
        while &cur != n {
            back.push(cur.clone());
            cur = prev[&cur].clone();
        }
        back.reverse();
        let path: Vec<String> = std::iter::once(n.clone())
            .chain(back)
            .chain(std::iter::once(n.clone()))
            .collect();
        let component: BTreeSet<String> = reach(n)
            .into_iter()
            .filter(|m| reach(m).contains(n))
            .collect();
        done.extend(component);
        out.push(path);
    }
    out
}

fn all_cycles(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for (parent, edges) in graph(root) {
        for cycle in cycles(&edges) {
            let prefix = if parent.is_empty() {
                String::new()
            } else {
                format!("{}::", parent.join("::"))
            };
            found.push(
                cycle
                    .iter()
                    .map(|n| format!("{prefix}{n}"))
                    .collect::<Vec<_>>()
                    .join(" -> "),
            );
        }
    }
    found
}

#[test]
fn no_import_cycle_between_modules_or_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = all_cycles(&root);
    assert!(
        found.is_empty(),
        "import cycles (move the item to the module that owns it):\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn a_planted_cycle_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).expect("mkdir");
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\n").expect("write");
    std::fs::write(src.join("a/mod.rs"), "mod x;\nmod y;\npub use x::X;\n").expect("write");
    std::fs::write(
        src.join("a/x.rs"),
        "use super::y::Y;\npub struct X;\n#[cfg(test)]\nmod tests { use crate::c::C; }\n",
    )
    .expect("write");
    std::fs::write(
        src.join("a/y.rs"),
        "use crate::{b, a::x::{self, X}};\npub struct Y;\n",
    )
    .expect("write");
    std::fs::write(src.join("b.rs"), "pub fn f() { crate::a::X; }\n").expect("write");
    // Only the test module of `a::x` names `c`; `c` naming `a` makes no cycle.
    std::fs::write(src.join("c.rs"), "// crate::b::f\nuse crate::a::X;\n").expect("write");
    let found = all_cycles(src);
    assert_eq!(found, vec!["a -> b -> a", "a::x -> a::y -> a::x"]);
}
