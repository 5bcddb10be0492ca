//! The layers import downward only: model ← tiers (ledger, hot) ← service ← HTTP.
//!
//! Reads every source file of the library (and the server's non-test code) and fails when a
//! module names a module of a higher layer, or the other tier, through `crate::…`, a
//! `crate::{…}` group or `super::…` paths that climb out of its layer. Comments are skipped
//! (intra-doc links may point anywhere). `cargo test` runs this, so CI does.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The top-level modules a file in `layer` may name.
fn allowed(layer: &str) -> &'static [&'static str] {
    match layer {
        "error" | "config" => &["error", "config"],
        "model" => &["model", "error"],
        "security" => &["security"],
        "ledger" => &["ledger", "model", "error", "config"],
        "hot" => &["hot", "model", "security", "error", "config"],
        "service" => &[
            "service", "ledger", "hot", "model", "security", "error", "config",
        ],
        other => panic!("no layer rule for top-level module {other:?}: add one to tests/layers.rs"),
    }
}

/// The module path of a source file under `src/` (`hot/redis/mod.rs` → `[hot, redis]`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap_or_default();
    let stem = file.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

/// Source text without comments (line comments, including doc comments).
fn code_only(src: &str) -> String {
    src.lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string literal (a URL, say) is rare in this code base and only
            // makes the check skip the rest of that line.
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The identifier starting at `s`.
fn ident(s: &str) -> &str {
    let end = s.find(|c: char| !is_ident(c)).unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules `code`, the text of the module at `module`, names.
fn named_modules(code: &str, module: &[String]) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let boundary = i == 0 || !is_ident(bytes[i - 1] as char) && bytes[i - 1] != b':';
        if boundary && rest.starts_with("crate::") {
            let after = &rest["crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                named.extend(group_heads(group));
            } else {
                let head = ident(after);
                if !head.is_empty() {
                    named.insert(head.to_string());
                }
            }
            i += "crate::".len();
            continue;
        }
        if boundary && rest.starts_with("super::") {
            // Count how far up the path climbs, then what it names there.
            let mut up = 0;
            let mut tail = rest;
            while let Some(t) = tail.strip_prefix("super::") {
                up += 1;
                tail = t;
            }
            if up >= module.len() {
                // Climbed to the crate root: the next segment is a top-level module.
                if let Some(group) = tail.strip_prefix('{') {
                    named.extend(group_heads(group));
                } else {
                    let head = ident(tail);
                    if !head.is_empty() {
                        named.insert(head.to_string());
                    }
                }
            } else {
                named.insert(module[0].clone());
            }
            i += rest.len() - tail.len();
            continue;
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    named
}

/// The first identifier of each comma-separated item of a `{…}` group (the text after `{`).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expecting = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expecting = true,
            c if expecting && depth == 0 && is_ident(c) => {
                heads.push(ident(&group[i..]).to_string());
                expecting = false;
            }
            _ => {}
        }
    }
    heads
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// What the crate root re-exports (`pub use model::{Flow, …}`): name → the module it comes from,
/// so that `crate::Flow` counts as naming `model`.
fn root_exports(lib: &str) -> HashMap<String, String> {
    let mut exports = HashMap::new();
    for statement in lib.split(';') {
        let Some(path) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module = ident(path).to_string();
        let rest = &path[module.len()..];
        let names = match rest.find('{') {
            Some(open) => group_heads(&rest[open + 1..]),
            None => vec![
                rest.rsplit("::")
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            ],
        };
        for name in names {
            exports.insert(name, module.clone());
        }
    }
    exports
}

/// Every import of a higher layer (or of the other tier) under `src`, as messages.
fn violations(src: &Path) -> Vec<String> {
    let lib = code_only(&std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs"));
    let exports = root_exports(&lib);
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let module = module_path(rel);
        let Some(layer) = module.first() else {
            continue; // lib.rs: the crate root re-exports every layer.
        };
        let code = code_only(&std::fs::read_to_string(&file).expect("readable source"));
        for named in named_modules(&code, &module) {
            let named = exports.get(&named).cloned().unwrap_or(named);
            if !allowed(layer).contains(&named.as_str()) {
                found.push(format!(
                    "{}: the {layer} layer must not import crate::{named}",
                    rel.display()
                ));
            }
        }
    }
    found
}

#[test]
fn lower_layers_never_import_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(found.is_empty(), "layer violations:\n{}", found.join("\n"));
}

#[test]
fn the_http_layer_uses_the_service_not_the_tiers() {
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("../flowstate-server/src");
    let mut files = Vec::new();
    rust_files(&server, &mut files);
    let found: Vec<String> = files
        .iter()
        .filter(|f| {
            let code = code_only(&std::fs::read_to_string(f).expect("readable source"));
            code.contains("flowstate::ledger") || code.contains("flowstate::hot")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        found.is_empty(),
        "HTTP code importing a tier directly:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_every_form_of_import() {
    let model = vec!["model".to_string(), "flows".to_string()];
    let code = code_only(
        "use crate::service::Flowstate;\n\
         use crate::{error::Result, hot::keys::Keys};\n\
         fn f() { let _ = super::super::ledger::open; }\n\
         // use crate::config; (a comment names nothing)\n\
         use super::documents::DocKind;",
    );
    let named: Vec<String> = named_modules(&code, &model).into_iter().collect();
    assert_eq!(named, ["error", "hot", "ledger", "model", "service"]);
    let bad: Vec<&String> = named
        .iter()
        .filter(|n| !allowed("model").contains(&n.as_str()))
        .collect();
    assert_eq!(bad, ["hot", "ledger", "service"]);
    let exports = root_exports("pub use service::{Flowstate, Health};\npub use config::Config;");
    assert_eq!(exports["Flowstate"], "service");
    assert_eq!(exports["Config"], "config");
}
