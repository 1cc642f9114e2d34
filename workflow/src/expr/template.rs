//! `${{ }}` templates inside YAML scalars, and the `if:` rewrite.
//!
//! A scalar is split into literal text and expressions the way GitHub's template reader does
//! it: the closing `}}` is searched for while toggling an in-string flag on every `'`, so
//! `${{ '}}' }}` is one expression.

use super::{parse, Allowed, ExprError};

const OPEN: &str = "${{";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// `source` is the expression text, trimmed; `offset` is the byte offset in the scalar
    /// where that trimmed text starts (for mapping expression errors back to a position).
    Expression {
        source: String,
        offset: usize,
    },
}

impl Segment {
    /// `${{ insert }}` is a directive (merge a mapping), not an expression.
    pub fn is_insert_directive(&self) -> bool {
        matches!(self, Segment::Expression { source, .. } if source == "insert")
    }
}

/// `offset` is the byte offset of the `${{` in the scalar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "The expression is not closed. An unescaped ${{{{ sequence was found, but the closing }}}} sequence was not found."
    )]
    NotClosed { offset: usize },
    #[error("An expression was expected")]
    Empty { offset: usize },
    #[error(
        "The directive 'insert' is not allowed in this context. Directives are not supported for expressions that are embedded within a string. Directives are only supported when the entire value is an expression."
    )]
    EmbeddedDirective { offset: usize },
    #[error("Exactly 0 parameter(s) were expected following the directive 'insert'. Actual parameter count: {count}")]
    DirectiveParameters { offset: usize, count: usize },
}

impl TemplateError {
    pub fn offset(&self) -> usize {
        match self {
            TemplateError::NotClosed { offset }
            | TemplateError::Empty { offset }
            | TemplateError::EmbeddedDirective { offset }
            | TemplateError::DirectiveParameters { offset, .. } => *offset,
        }
    }
}

/// Splits a scalar into literal text and `${{ }}` expressions; `Ok(vec![Literal])` when it has
/// no `${{`. A scalar that is exactly one expression consisting of a single string literal
/// (`${{ '{{ not an expression }}' }}`) becomes that literal, as on GitHub.
pub fn split(scalar: &str) -> Result<Vec<Segment>, TemplateError> {
    let Some(mut next_open) = scalar.find(OPEN) else {
        return Ok(vec![Segment::Literal(scalar.to_string())]);
    };
    let bytes = scalar.as_bytes();
    let mut segments: Vec<Segment> = Vec::new();
    let mut i = 0;
    loop {
        if i < next_open {
            push_literal(&mut segments, &scalar[i..next_open]);
        }
        let body_start = next_open + OPEN.len();
        let mut in_string = false;
        let mut close = None;
        let mut j = body_start;
        while j < bytes.len() {
            match bytes[j] {
                b'\'' => in_string = !in_string,
                b'}' if !in_string && j > body_start && bytes[j - 1] == b'}' => {
                    close = Some(j - 1);
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        let Some(close) = close else {
            return Err(TemplateError::NotClosed { offset: next_open });
        };
        let body = &scalar[body_start..close];
        let trimmed = body.trim();
        if trimmed.is_empty() {
            return Err(TemplateError::Empty { offset: next_open });
        }
        let leading = body.len() - body.trim_start().len();
        let whole_value = next_open == 0 && close + 2 == scalar.len();
        check_directive(trimmed, whole_value, next_open)?;
        segments.push(Segment::Expression {
            source: trimmed.to_string(),
            offset: body_start + leading,
        });
        i = close + 2;
        match scalar[i..].find(OPEN) {
            Some(rel) => next_open = i + rel,
            None => {
                if i < scalar.len() {
                    push_literal(&mut segments, &scalar[i..]);
                }
                break;
            }
        }
    }
    if let [Segment::Expression { source, .. }] = segments.as_slice() {
        if let Some(text) = string_literal_value(source) {
            return Ok(vec![Segment::Literal(text)]);
        }
    }
    Ok(segments)
}

/// `insert` must stand alone, both inside its braces and as the whole value.
fn check_directive(trimmed: &str, whole_value: bool, offset: usize) -> Result<(), TemplateError> {
    let Some(rest) = trimmed.strip_prefix("insert") else {
        return Ok(());
    };
    if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
        return Ok(());
    }
    let count = rest.split_whitespace().count();
    if count != 0 {
        return Err(TemplateError::DirectiveParameters { offset, count });
    }
    if !whole_value {
        return Err(TemplateError::EmbeddedDirective { offset });
    }
    Ok(())
}

fn push_literal(segments: &mut Vec<Segment>, text: &str) {
    if let Some(Segment::Literal(last)) = segments.last_mut() {
        last.push_str(text);
    } else {
        segments.push(Segment::Literal(text.to_string()));
    }
}

/// The value of an expression that is nothing but one string literal (`'it''s'` -> `it's`).
fn string_literal_value(source: &str) -> Option<String> {
    let inner = source.strip_prefix('\'')?.strip_suffix('\'')?;
    let mut value = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\'' {
            // Inside a literal a quote only appears doubled.
            if chars.next() != Some('\'') {
                return None;
            }
        }
        value.push(c);
    }
    Some(value)
}

/// One expression segment gives that expression; several give
/// `format('lit{0}lit', e0, ...)` with `'` -> `''`, `{` -> `{{`, `}` -> `}}` in the literal
/// parts. `None` when there is no expression at all.
pub fn to_expression_source(segments: &[Segment]) -> Option<String> {
    if let [Segment::Expression { source, .. }] = segments {
        return Some(source.clone());
    }
    if !segments
        .iter()
        .any(|s| matches!(s, Segment::Expression { .. }))
    {
        return None;
    }
    let mut template = String::new();
    let mut args = String::new();
    let mut count = 0;
    for segment in segments {
        match segment {
            Segment::Literal(text) => {
                for c in text.chars() {
                    match c {
                        '\'' => template.push_str("''"),
                        '{' => template.push_str("{{"),
                        '}' => template.push_str("}}"),
                        c => template.push(c),
                    }
                }
            }
            Segment::Expression { source, .. } => {
                template.push('{');
                template.push_str(&count.to_string());
                template.push('}');
                count += 1;
                args.push_str(", ");
                args.push_str(source);
            }
        }
    }
    Some(format!("format('{template}'{args})"))
}

/// The expression source of an `if:` scalar: its expression (or the `format(...)` of its
/// segments), or the scalar itself when it holds no `${{ }}`, since `if:` is an expression
/// even without the braces.
pub fn condition_source(scalar: &str) -> Result<String, TemplateError> {
    let segments = split(scalar)?;
    Ok(
        to_expression_source(&segments).unwrap_or_else(|| match segments.as_slice() {
            [Segment::Literal(text)] => text.clone(),
            _ => scalar.to_string(),
        }),
    )
}

/// GitHub's `if:` rewrite: empty -> `success()`; no status-function call anywhere ->
/// `success() && (<expr>)`; otherwise unchanged. The source is validated against `allowed`.
pub fn rewrite_condition(source: &str, allowed: &Allowed) -> Result<String, ExprError> {
    if source.trim().is_empty() {
        return Ok("success()".to_string());
    }
    let expr = parse(source, allowed)?;
    if expr.calls_status_function() {
        Ok(source.to_string())
    } else {
        Ok(format!("success() && ({source})"))
    }
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
