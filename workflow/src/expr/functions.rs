//! The built-in functions that take already-evaluated arguments. Functions that build strings
//! check the evaluation's memory budget as they grow, so a `format` of a huge argument fails
//! with GitHub's memory error instead of allocating without bound.

use std::borrow::Cow;

use super::tojson::write_json;
use super::ExprError;
use crate::value::{format_number, upper_special, Value};

pub(crate) const MEMORY_EXCEEDED: &str = "The maximum allowed memory size was exceeded";

/// Strings cost two bytes a character, as .NET strings do (UTF-8 length is an upper bound on
/// UTF-16 units), plus a small fixed overhead per value.
pub(crate) fn string_cost(len: usize) -> usize {
    len.saturating_mul(2).saturating_add(VALUE_OVERHEAD)
}

pub(crate) const VALUE_OVERHEAD: usize = 32;

/// The string form of a value, borrowed when it already is a string.
pub(crate) fn display(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        Value::Bool(true) => Cow::Borrowed("true"),
        Value::Bool(false) => Cow::Borrowed("false"),
        Value::Number(n) => Cow::Owned(format_number(*n)),
        Value::Array(_) => Cow::Borrowed("Array"),
        Value::Object(_) => Cow::Borrowed("Object"),
    }
}

fn fold_case(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        Cow::Owned(s.to_ascii_uppercase())
    } else {
        Cow::Owned(upper_special(s))
    }
}

/// `contains`: substring test on primitives (case-insensitive), loose-equality membership on
/// arrays, false otherwise.
pub(crate) fn contains(search: &Value, item: &Value) -> bool {
    match search {
        Value::Array(items) => items.iter().any(|v| item.loose_eq(v)),
        Value::Object(_) => false,
        _ if !item.is_primitive() => false,
        _ => {
            let (hay, needle) = (display(search), display(item));
            if hay.is_ascii() && needle.is_ascii() {
                let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
                needle.is_empty()
                    || hay
                        .windows(needle.len())
                        .any(|w| w.eq_ignore_ascii_case(needle))
            } else {
                fold_case(&hay).contains(&*fold_case(&needle))
            }
        }
    }
}

/// `startsWith` / `endsWith`: both sides primitive, compared case-insensitively.
pub(crate) fn affix(subject: &Value, affix: &Value, at_start: bool) -> bool {
    if !subject.is_primitive() || !affix.is_primitive() {
        return false;
    }
    let (s, a) = (display(subject), display(affix));
    if s.is_ascii() && a.is_ascii() {
        let (s, a) = (s.as_bytes(), a.as_bytes());
        if a.len() > s.len() {
            return false;
        }
        let part = if at_start {
            &s[..a.len()]
        } else {
            &s[s.len() - a.len()..]
        };
        return part.eq_ignore_ascii_case(a);
    }
    let (s, a) = (fold_case(&s), fold_case(&a));
    if at_start {
        s.starts_with(&*a)
    } else {
        s.ends_with(&*a)
    }
}

/// Fails once a string being built would push the evaluation past its memory budget.
pub(crate) struct Budget {
    pub available: usize,
}

impl Budget {
    fn check(&self, out: &str) -> Result<(), ExprError> {
        if string_cost(out.len()) > self.available {
            Err(ExprError::evaluation(MEMORY_EXCEEDED))
        } else {
            Ok(())
        }
    }
}

/// `format('x{0}y', a)`: `{N}` is replaced by argument N, `{{` and `}}` are literal braces,
/// and anything else involving a brace is invalid.
pub(crate) fn format(args: &[Value], budget: &Budget) -> Result<Value, ExprError> {
    let Some((template, values)) = args.split_first() else {
        return Ok(Value::string(""));
    };
    let template = display(template);
    let invalid = || {
        ExprError::evaluation(format!(
            "The following format string is invalid: {template}"
        ))
    };
    let bytes = template.as_bytes();
    let mut out = String::with_capacity(template.len());
    let mut literal_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => {
                out.push_str(&template[literal_start..=i]);
                i += 2;
                literal_start = i;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => {
                out.push_str(&template[literal_start..=i]);
                i += 2;
                literal_start = i;
            }
            b'}' => return Err(invalid()),
            b'{' => {
                let digits_start = i + 1;
                let mut j = digits_start;
                while j < bytes.len() && bytes[j].is_ascii_digit() {
                    j += 1;
                }
                if j == digits_start || bytes.get(j) != Some(&b'}') {
                    return Err(invalid());
                }
                // Too many digits for usize is certainly past the end of the arguments.
                let index: usize = template[digits_start..j].parse().unwrap_or(usize::MAX);
                let Some(value) = values.get(index) else {
                    return Err(ExprError::evaluation(format!(
                        "The following format string references more arguments than were supplied: {template}"
                    )));
                };
                out.push_str(&template[literal_start..i]);
                out.push_str(&display(value));
                budget.check(&out)?;
                i = j + 1;
                literal_start = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&template[literal_start..]);
    budget.check(&out)?;
    Ok(Value::string(out))
}

/// `join(array, sep = ',')`: elements as strings; a primitive is its own string; an object
/// gives ''. A non-primitive separator falls back to ','.
pub(crate) fn join(args: &[Value], budget: &Budget) -> Result<Value, ExprError> {
    let separator = match args.get(1) {
        Some(sep) if sep.is_primitive() => display(sep),
        _ => Cow::Borrowed(","),
    };
    match args.first() {
        Some(Value::Array(items)) => {
            let mut out = String::new();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&separator);
                }
                out.push_str(&display(item));
                budget.check(&out)?;
            }
            Ok(Value::string(out))
        }
        Some(Value::Object(_)) | None => Ok(Value::string("")),
        Some(primitive) => Ok(Value::string(display(primitive).into_owned())),
    }
}

pub(crate) fn to_json(value: &Value, budget: &Budget) -> Result<Value, ExprError> {
    let mut out = String::new();
    let limit = budget.available.saturating_sub(VALUE_OVERHEAD) / 2;
    write_json(value, &mut out, limit).map_err(|_| ExprError::evaluation(MEMORY_EXCEEDED))?;
    Ok(Value::string(out))
}

pub(crate) fn from_json(value: &Value) -> Result<Value, ExprError> {
    let text = display(value);
    if text.trim().is_empty() {
        return Err(ExprError::evaluation(
            "Error parsing fromJson: the input is empty",
        ));
    }
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ExprError::evaluation(format!("Error parsing fromJson: {e}")))?;
    Ok(Value::from_json(&json))
}
