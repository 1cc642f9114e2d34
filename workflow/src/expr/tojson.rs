//! `toJSON`: GitHub's pretty JSON (two-space indent, `\n` newlines, `[]` and `{}` compact,
//! numbers in the runner's number format). Written with an explicit stack rather than
//! recursion, because context data can nest deeper than any stack we want to bet on, and with
//! a length limit so a huge context cannot make one call allocate without bound.

use std::fmt::Write as _;

use crate::value::{format_number, Value};

/// GitHub's `toJSON` text of `value`.
pub fn to_json_string(value: &Value) -> String {
    let mut out = String::new();
    // Without a limit the writer cannot fail.
    let _ = write_json(value, &mut out, usize::MAX);
    out
}

/// The output would have exceeded the byte limit; `out` holds a truncated prefix.
#[derive(Debug)]
pub(crate) struct TooLong;

enum Items<'v> {
    Array(std::slice::Iter<'v, Value>),
    Object(indexmap::map::Iter<'v, String, Value>),
}

struct Frame<'v> {
    items: Items<'v>,
    written_any: bool,
}

/// Appends the JSON of `value` to `out`, failing once `out` grows past `limit` bytes.
pub(crate) fn write_json(value: &Value, out: &mut String, limit: usize) -> Result<(), TooLong> {
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut pending = Some(value);
    loop {
        if let Some(v) = pending.take() {
            match v {
                Value::Array(items) if !items.is_empty() => {
                    out.push('[');
                    stack.push(Frame {
                        items: Items::Array(items.iter()),
                        written_any: false,
                    });
                }
                Value::Object(obj) if !obj.is_empty() => {
                    out.push('{');
                    stack.push(Frame {
                        items: Items::Object(obj.entries.iter()),
                        written_any: false,
                    });
                }
                Value::Array(_) => out.push_str("[]"),
                Value::Object(_) => out.push_str("{}"),
                Value::Null => out.push_str("null"),
                Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                Value::Number(n) => out.push_str(&format_number(*n)),
                Value::String(s) => write_string(s, out),
            }
            if out.len() > limit {
                return Err(TooLong);
            }
        }
        let depth = stack.len();
        let Some(frame) = stack.last_mut() else {
            return Ok(());
        };
        let next = match &mut frame.items {
            Items::Array(items) => items.next().map(|v| (None, v)),
            Items::Object(entries) => entries.next().map(|(k, v)| (Some(k), v)),
        };
        match next {
            Some((key, v)) => {
                if frame.written_any {
                    out.push(',');
                }
                frame.written_any = true;
                newline(out, depth);
                if let Some(k) = key {
                    write_string(k, out);
                    out.push_str(": ");
                }
                pending = Some(v);
            }
            None => {
                let close = if matches!(frame.items, Items::Array(_)) {
                    ']'
                } else {
                    '}'
                };
                stack.pop();
                newline(out, depth - 1);
                out.push(close);
            }
        }
    }
}

fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// Escapes as Newtonsoft.Json does by default: quotes, backslashes, control characters and the
/// line separators that break JavaScript string literals.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
