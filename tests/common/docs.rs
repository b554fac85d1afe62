//! Reading the user docs (docs/*.md) the way the doc tests need them: sections, tables, code
//! spans and fenced blocks. Just enough Markdown for pages this project writes, so a check
//! compares what a user reads with what the real server does.

#![allow(dead_code)] // each doc test uses part of it

use std::path::Path;

/// The text of `docs/<name>`.
pub fn read(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `(heading, body)` for every `## ` heading; text before the first one is left out.
pub fn sections(md: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in md.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            out.push((h.trim().to_string(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// A fenced code block: its info string (`apache`, `text`, ...) and its lines.
#[derive(Clone, Debug)]
pub struct Fence {
    pub info: String,
    pub text: String,
}

/// The fenced (```) blocks of `md`, in order.
pub fn fences(md: &str) -> Vec<Fence> {
    let mut out = Vec::new();
    let mut open: Option<Fence> = None;
    for line in md.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (fence, open.take()) {
            (Some(info), None) => {
                open = Some(Fence {
                    info: info.trim().to_string(),
                    text: String::new(),
                })
            }
            (Some(_), Some(done)) => out.push(done),
            (None, Some(mut f)) => {
                f.text.push_str(line);
                f.text.push('\n');
                open = Some(f);
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a ``` block is not closed");
    out
}

/// The cells of one table row (`| a | b |`), trimmed, with `\|` read as `|`; None for a line
/// that is not a row, or the `|---|` separator.
pub fn row_cells(line: &str) -> Option<Vec<String>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    let cells: Vec<String> = cells.iter().map(|c| c.trim().to_string()).collect();
    let separator = cells
        .iter()
        .all(|c| !c.is_empty() && c.chars().all(|ch| ch == '-' || ch == ':'));
    (!separator).then_some(cells)
}

/// Every table in `md`: its header cells and its body rows.
pub fn tables(md: &str) -> Vec<(Vec<String>, Vec<Vec<String>>)> {
    let mut out: Vec<(Vec<String>, Vec<Vec<String>>)> = Vec::new();
    let mut in_table = false;
    for line in md.lines() {
        let is_row = line.trim_start().starts_with('|');
        if !is_row {
            in_table = false;
            continue;
        }
        let Some(cells) = row_cells(line) else {
            continue; // the separator
        };
        if in_table {
            out.last_mut().unwrap().1.push(cells);
        } else {
            out.push((cells, Vec::new()));
            in_table = true;
        }
    }
    out
}

/// The parts of `text` between pairs of `delim`.
fn between(text: &str, delim: char) -> Vec<String> {
    text.split(delim)
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The contents of the `code spans` in `text`.
pub fn code_spans(text: &str) -> Vec<String> {
    between(text, '`')
}

/// The contents of the "double-quoted" parts of `text`.
pub fn quoted(text: &str) -> Vec<String> {
    between(text, '"')
}

/// Per table column named `column` (exactly, in the header): every cell of it, in all tables.
pub fn column_cells(md: &str, column: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (header, rows) in tables(md) {
        let Some(i) = header.iter().position(|h| h == column) else {
            continue;
        };
        out.extend(rows.iter().filter_map(|r| r.get(i).cloned()));
    }
    out
}
