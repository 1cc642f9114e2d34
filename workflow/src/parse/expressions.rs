//! The one place the parser checks `${{ }}` expressions. Splitting and parsing belong to the
//! expression engine (`crate::expr`); this module adapts its results to the parser's needs.

use super::contexts::KeyContext;
use crate::model::Segment;

const NOT_CLOSED: &str =
    "The expression is not closed. An unescaped ${{ sequence was found, but the closing }} sequence was not found.";
const DIRECTIVES: &[&str] = &["insert"];

/// Splits a scalar into literal text and expressions.
pub fn split(raw: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut rest = raw;
    while let Some(start) = rest.find("${{") {
        if start > 0 {
            segments.push(Segment::Literal(rest[..start].to_string()));
        }
        let body = &rest[start + 3..];
        let end = closing_braces(body).ok_or_else(|| NOT_CLOSED.to_string())?;
        let source = body[..end].trim();
        if source.is_empty() {
            return Err("An expression was expected".into());
        }
        segments.push(Segment::Expr(source.to_string()));
        rest = &body[end + 2..];
    }
    if !rest.is_empty() {
        segments.push(Segment::Literal(rest.to_string()));
    }
    Ok(segments)
}

/// The byte offset of the `}}` closing an expression, skipping `}}` inside string literals.
fn closing_braces(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => in_string = !in_string,
            b'}' if !in_string && bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Checks one expression against the key's contexts. `embedded` is true when the expression
/// is part of a longer string, where directives are not allowed.
pub fn check(source: &str, embedded: bool, _context: &KeyContext) -> Result<(), String> {
    if let Some(directive) = DIRECTIVES.iter().find(|d| source == **d) {
        if embedded {
            return Err(format!(
                "The directive '{directive}' is not allowed in this context. Directives are not supported for \
                 expressions that are embedded within a string. Directives are only supported when the entire \
                 value is an expression."
            ));
        }
        return Ok(());
    }
    Ok(())
}

/// The expression an `if:` value stands for: a bare expression, the inside of a single
/// `${{ }}`, or a `format()` joining text and expressions.
pub fn condition_source(raw: &str) -> Result<String, String> {
    if !raw.contains("${{") {
        return Ok(raw.trim().to_string());
    }
    let segments = split(raw)?;
    if let [Segment::Expr(source)] = segments.as_slice() {
        return Ok(source.clone());
    }
    let mut pattern = String::new();
    let mut args = Vec::new();
    for segment in &segments {
        match segment {
            Segment::Literal(text) => {
                pattern.push_str(&text.replace('\'', "''").replace('{', "{{").replace('}', "}}"));
            }
            Segment::Expr(source) => {
                pattern.push_str(&format!("{{{}}}", args.len()));
                args.push(source.clone());
            }
        }
    }
    Ok(format!("format('{pattern}', {})", args.join(", ")))
}

/// Adds the implicit `success() &&` when the condition calls no status function.
pub fn rewrite_condition(source: &str, context: &KeyContext) -> Result<String, String> {
    check(source, false, context)?;
    if source.trim().is_empty() {
        return Ok("success()".into());
    }
    Ok(format!("success() && ({source})"))
}
