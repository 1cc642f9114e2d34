//! The six kinds of value the expression language knows, and GitHub's coercion rules between
//! them. Matrix include/exclude matching, `if:` truthiness and string interpolation all go
//! through here, so there is one definition of "equal" and "truthy" in the whole project.

use indexmap::IndexMap;
use std::cmp::Ordering;
use std::fmt::Write as _;
use std::sync::Arc;

/// An expression value. Arrays and objects are shared (`Arc`) because GitHub compares them
/// by reference: two distinct `{}` are not equal, the same one is.
#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    String(Arc<str>),
    Array(Arc<Vec<Value>>),
    Object(Arc<Object>),
}

/// A mapping whose lookups ignore ASCII/Unicode case unless `case_sensitive` is set (the
/// `env` context on Linux and macOS is the one case-sensitive mapping).
#[derive(Debug, Clone, Default)]
pub struct Object {
    pub entries: IndexMap<String, Value>,
    pub case_sensitive: bool,
}

impl Object {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn case_sensitive() -> Self {
        Object {
            entries: IndexMap::new(),
            case_sensitive: true,
        }
    }

    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        self.entries.insert(key.into(), value);
    }

    /// Exact key first (the common case and the only one for case-sensitive objects), then
    /// a case-insensitive scan as GitHub's `OrdinalIgnoreCase` dictionaries do.
    pub fn get(&self, key: &str) -> Option<&Value> {
        if let Some(v) = self.entries.get(key) {
            return Some(v);
        }
        if self.case_sensitive {
            return None;
        }
        self.entries
            .iter()
            .find(|(k, _)| eq_ignore_case(k, key))
            .map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.entries.iter()
    }
}

/// The kind names used by GitHub's conformance data and by `kiln expr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Boolean,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Null => "Null",
            Kind::Boolean => "Boolean",
            Kind::Number => "Number",
            Kind::String => "String",
            Kind::Array => "Array",
            Kind::Object => "Object",
        }
    }
}

impl Value {
    pub fn string(s: impl Into<Arc<str>>) -> Value {
        Value::String(s.into())
    }

    pub fn array(items: Vec<Value>) -> Value {
        Value::Array(Arc::new(items))
    }

    pub fn object(object: Object) -> Value {
        Value::Object(Arc::new(object))
    }

    pub fn kind(&self) -> Kind {
        match self {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Boolean,
            Value::Number(_) => Kind::Number,
            Value::String(_) => Kind::String,
            Value::Array(_) => Kind::Array,
            Value::Object(_) => Kind::Object,
        }
    }

    pub fn is_primitive(&self) -> bool {
        !matches!(self, Value::Array(_) | Value::Object(_))
    }

    /// Falsy: null, false, 0, -0, NaN and ''. Everything else, `'false'` and `[]` included,
    /// is truthy.
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => !(*n == 0.0 || n.is_nan()),
            Value::String(s) => !s.is_empty(),
            Value::Array(_) | Value::Object(_) => true,
        }
    }

    /// GitHub's number conversion: null 0, booleans 0/1, strings parsed leniently
    /// (`ParseNumber`), arrays and objects NaN.
    pub fn to_number(&self) -> f64 {
        match self {
            Value::Null => 0.0,
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::Number(n) => *n,
            Value::String(s) => parse_number(s),
            Value::Array(_) | Value::Object(_) => f64::NAN,
        }
    }

    /// The string form used by `format`, `join`, interpolation and string comparison.
    pub fn to_display_string(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => format_number(*n),
            Value::String(s) => s.to_string(),
            Value::Array(_) => "Array".to_string(),
            Value::Object(_) => "Object".to_string(),
        }
    }

    /// Index or property access. Missing keys, out-of-range indexes and access on
    /// primitives all give null, never an error.
    pub fn index(&self, key: &Value) -> Value {
        match self {
            Value::Array(items) => {
                let n = key.to_number();
                if n.is_nan() || n < 0.0 {
                    return Value::Null;
                }
                let i = n.floor();
                if i >= items.len() as f64 {
                    return Value::Null;
                }
                items[i as usize].clone()
            }
            Value::Object(obj) => match key {
                Value::String(s) => obj.get(s).cloned().unwrap_or(Value::Null),
                other if other.is_primitive() => obj
                    .get(&other.to_display_string())
                    .cloned()
                    .unwrap_or(Value::Null),
                _ => Value::Null,
            },
            _ => Value::Null,
        }
    }

    /// Loose equality (`==`): JavaScript-like coercion, case-insensitive strings, arrays and
    /// objects by reference only.
    pub fn loose_eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Number(a), Value::Number(b)) => a == b,
            (Value::String(a), Value::String(b)) => eq_ignore_case(a, b),
            (Value::Array(a), Value::Array(b)) => Arc::ptr_eq(a, b),
            (Value::Object(a), Value::Object(b)) => Arc::ptr_eq(a, b),
            (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => {
                false
            }
            // Remaining mixed primitive pairs all coerce to numbers: null/bool become numbers
            // first, and number-vs-string parses the string.
            (a, b) => a.to_number() == b.to_number(),
        }
    }

    /// Ordering for `<`, `<=`, `>`, `>=` after GitHub's coercions; `None` when the pair does
    /// not compare (NaN, arrays, objects), which makes every ordering operator false.
    pub fn loose_cmp(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => {
                None
            }
            (Value::String(a), Value::String(b)) => Some(upper_special(a).cmp(&upper_special(b))),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (a, b) => a.to_number().partial_cmp(&b.to_number()),
        }
    }

    /// Converts from JSON (contexts files, `fromJSON`). Numbers become doubles.
    pub fn from_json(json: &serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => Value::string(s.as_str()),
            serde_json::Value::Array(items) => {
                Value::array(items.iter().map(Value::from_json).collect())
            }
            serde_json::Value::Object(map) => {
                let mut obj = Object::new();
                for (k, v) in map {
                    obj.insert(k.clone(), Value::from_json(v));
                }
                Value::object(obj)
            }
        }
    }

    /// Converts to JSON for machine-readable output. Non-finite numbers have no JSON form and
    /// are written as their string names, as GitHub's serializer does.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            // Whole numbers print without a trailing `.0`, like GitHub; `-0` prints as `0`.
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 => {
                serde_json::Value::from(*n as i64)
            }
            Value::Number(n) => serde_json::Number::from_f64(*n)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|| serde_json::Value::String(format_number(*n))),
            Value::String(s) => serde_json::Value::String(s.to_string()),
            Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(Value::to_json).collect())
            }
            Value::Object(obj) => serde_json::Value::Object(
                obj.iter().map(|(k, v)| (k.clone(), v.to_json())).collect(),
            ),
        }
    }
}

/// Case-insensitive comparison with GitHub's upper-casing rules.
pub fn eq_ignore_case(a: &str, b: &str) -> bool {
    if a.len() == b.len() && a.eq_ignore_ascii_case(b) {
        return true;
    }
    if a.is_ascii() && b.is_ascii() {
        return false;
    }
    upper_special(a) == upper_special(b)
}

/// Upper-cases with invariant rules, except the dotless `ı`, which GitHub leaves alone
/// (`toUpperSpecial` in the reference implementation).
pub fn upper_special(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_uppercase();
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == 'ı' {
            out.push(c);
        } else {
            out.extend(c.to_uppercase());
        }
    }
    out
}

/// `ParseNumber`: trimmed; empty is 0; decimal with sign, point and exponent; `0x` hex and
/// `0o` octal; `Infinity`/`-Infinity`; anything else NaN.
pub fn parse_number(s: &str) -> f64 {
    let t = s.trim();
    if t.is_empty() {
        return 0.0;
    }
    if let Some(n) = parse_decimal(t) {
        return n;
    }
    if let Some(hex) = t.strip_prefix("0x") {
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return i32::from_str_radix(hex, 16)
                .map(f64::from)
                .unwrap_or(f64::NAN);
        }
    }
    if let Some(oct) = t.strip_prefix("0o") {
        if !oct.is_empty() && oct.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return i32::from_str_radix(oct, 8)
                .map(f64::from)
                .unwrap_or(f64::NAN);
        }
    }
    match t {
        "Infinity" | "+Infinity" => f64::INFINITY,
        "-Infinity" => f64::NEG_INFINITY,
        _ => f64::NAN,
    }
}

/// Strict invariant decimal: `[+-]digits[.digits][(e|E)[+-]digits]`, where either the
/// integer or the fraction part may be empty but not both. Rust's own `parse::<f64>` also
/// accepts `inf` and `nan`, which GitHub does not.
pub fn parse_decimal(t: &str) -> Option<f64> {
    let b = t.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    t.parse::<f64>().ok()
}

/// Number to string as the runner does (.NET `G15`): 15 significant digits, trailing zeros
/// dropped, scientific notation `1.5E+20` / `1E-07` outside `1e-5 <= |x| < 1e15`,
/// `-0` printed as `0`.
pub fn format_number(n: f64) -> String {
    if n.is_nan() {
        return "NaN".into();
    }
    if n.is_infinite() {
        return if n > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if n == 0.0 {
        return "0".into();
    }
    // `{:.14e}` gives exactly 15 significant digits, correctly rounded.
    let sci = format!("{:.14e}", n);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if !(-5..15).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "E{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_like_the_runner() {
        assert_eq!(format_number(1.0), "1");
        assert_eq!(format_number(-0.0), "0");
        assert_eq!(format_number(1.5), "1.5");
        assert_eq!(format_number(123.456), "123.456");
        assert_eq!(format_number(0.1), "0.1");
        assert_eq!(format_number(0.00001), "0.00001");
        assert_eq!(format_number(0.000001), "1E-06");
        assert_eq!(
            format_number(12345678901234567890.0),
            "1.23456789012346E+19"
        );
        assert_eq!(format_number(100000000000000.0), "100000000000000");
        assert_eq!(format_number(1e15), "1E+15");
        assert_eq!(format_number(-2.5), "-2.5");
    }

    #[test]
    fn loose_equality_coerces_like_github() {
        assert!(Value::Null.loose_eq(&Value::Number(0.0)));
        assert!(Value::string("").loose_eq(&Value::Number(0.0)));
        assert!(Value::Bool(false).loose_eq(&Value::string("  ")));
        assert!(Value::Bool(true).loose_eq(&Value::string(" 1.0 ")));
        assert!(Value::Null.loose_eq(&Value::string("")));
        assert!(Value::string("TEST").loose_eq(&Value::string("test")));
        let a = Value::object(Object::new());
        assert!(a.loose_eq(&a.clone()));
        assert!(!a.loose_eq(&Value::object(Object::new())));
        assert!(!Value::Number(f64::NAN).loose_eq(&Value::Number(f64::NAN)));
    }

    #[test]
    fn parses_numbers_leniently() {
        assert_eq!(parse_number(" 0x1F "), 31.0);
        assert_eq!(parse_number("0o17"), 15.0);
        assert_eq!(parse_number(""), 0.0);
        assert!(parse_number("inf").is_nan());
        assert_eq!(parse_number("-Infinity"), f64::NEG_INFINITY);
        assert_eq!(parse_number(".5"), 0.5);
        assert!(parse_number("1,000").is_nan());
    }
}
