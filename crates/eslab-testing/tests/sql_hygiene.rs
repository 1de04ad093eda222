//! No SQL is built by string formatting: every value reaches the database as
//! a bound parameter. The only exception is an identifier (a schema or table
//! name) that cannot be bound; such a `format!` must carry a `sql-ident:`
//! comment on its line or the line above, naming where the identifier is
//! validated. This test reads every Rust source of the workspace and fails on
//! any other `format!` whose string starts with an SQL keyword.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};

const KEYWORDS: &[&str] = &[
    "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "TRUNCATE", "WITH", "LOCK", "COPY", "GRANT",
    "REVOKE", "SET", "DO", "MERGE", "UPSERT", "REPLACE", "VACUUM", "ANALYZE", "NOTIFY", "LISTEN",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != ".git" {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first word of the string literal that opens the `format!` call at `at`.
fn first_word(text: &str, at: usize) -> Option<String> {
    let rest = &text[at + "format!(".len()..];
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('r').map_or(rest, |r| r.trim_start_matches('#'));
    let rest = rest.strip_prefix('"')?;
    let rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '\\' || c == 'n');
    Some(rest.chars().take_while(char::is_ascii_alphabetic).collect())
}

/// Every `format!` that builds SQL without a `sql-ident:` justification.
fn offences(path: &Path, text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (at, _) in text.match_indices("format!(") {
        let Some(word) = first_word(text, at) else { continue };
        if !KEYWORDS.contains(&word.to_ascii_uppercase().as_str()) || word.is_empty() {
            continue;
        }
        // Only upper-case keywords read as SQL ("Drop the…" in a message does not).
        if word != word.to_ascii_uppercase() {
            continue;
        }
        let line = text[..at].matches('\n').count();
        let justified = [line.checked_sub(1), Some(line)]
            .into_iter()
            .flatten()
            .filter_map(|l| lines.get(l))
            .any(|l| l.contains("sql-ident:"));
        if !justified {
            found.push(format!("{}:{}: {}", path.display(), line + 1, lines.get(line).unwrap_or(&"").trim()));
        }
    }
    found
}

#[test]
fn no_sql_is_built_by_string_formatting() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for dir in ["crates", "apps", "fuzz"] {
        sources(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "the workspace's sources were not found under {}", root.display());
    let found: Vec<String> = files.iter().flat_map(|f| offences(f, &std::fs::read_to_string(f).unwrap())).collect();
    assert!(
        found.is_empty(),
        "SQL built with format! (bind values as parameters; for an identifier that cannot be bound, \
         validate it and add a `sql-ident: <where it is validated>` comment):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_catches_formatted_sql_and_accepts_justified_identifiers() {
    let bad = "let q = format!(\"SELECT * FROM t WHERE name = '{name}'\");\n";
    assert_eq!(offences(Path::new("x.rs"), bad).len(), 1);
    let multiline = "let q = format!(\n    r#\"INSERT INTO t VALUES ({v})\"#\n);\n";
    assert_eq!(offences(Path::new("x.rs"), multiline).len(), 1);
    let justified = "// sql-ident: validated by validate_schema\nlet q = format!(\"DROP SCHEMA \\\"{s}\\\"\");\n";
    assert!(offences(Path::new("x.rs"), justified).is_empty());
    let prose = "let m = format!(\"Select an account: {id}\");\n";
    assert!(offences(Path::new("x.rs"), prose).is_empty());
}
