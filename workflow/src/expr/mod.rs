//! GitHub Actions expressions: `github.ref == 'refs/heads/main' && success()`.
//!
//! [`parse`] checks an expression against what a place in a workflow allows (named values and
//! extra functions) and returns an [`Expr`], which is then evaluated any number of times
//! against an [`EvalContext`]. Errors carry GitHub's own wording so diagnostics match what
//! users see on github.com.

mod context;
mod eval;
mod functions;
mod lexer;
mod parser;
pub mod template;
mod tojson;

use std::borrow::Cow;

use crate::value::Value;

pub use context::{JobStatus, SimpleContext};
pub use tojson::to_json_string;

/// GitHub's limits (`ExpressionConstants`): nesting depth and source length in characters.
pub const MAX_DEPTH: usize = 50;
pub const MAX_LENGTH: usize = 21_000;
/// Memory one evaluation may hold in intermediate results, in bytes (strings count two bytes a
/// character, as in .NET). Beyond it evaluation fails instead of allocating without bound.
pub const MAX_MEMORY: usize = 1_048_576;

/// The three stages an expression can fail in; `name()` gives the conformance data's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Lexing,
    Parsing,
    Evaluation,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Lexing => "lexing",
            ErrorKind::Parsing => "parsing",
            ErrorKind::Evaluation => "evaluation",
        }
    }
}

/// An expression error. Lexing and parsing messages end with GitHub's
/// `. Located at position <n> within expression: <source>` (n is 1-based and counts UTF-16
/// units, as GitHub does); `position` is the 0-based byte offset of the offending token in the
/// source, for callers that map it back into a YAML scalar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    pub kind: ErrorKind,
    pub message: String,
    pub position: Option<usize>,
}

impl ExprError {
    pub(crate) fn located(kind: ErrorKind, what: String, offset: usize, source: &str) -> Self {
        let column = source
            .get(..offset)
            .map_or(offset, |s| s.encode_utf16().count())
            + 1;
        ExprError {
            kind,
            message: format!("{what}. Located at position {column} within expression: {source}"),
            position: Some(offset),
        }
    }

    pub(crate) fn evaluation(message: impl Into<String>) -> Self {
        ExprError {
            kind: ErrorKind::Evaluation,
            message: message.into(),
            position: None,
        }
    }
}

/// A function a place allows beyond the built-in ones, with its arity (`hashFiles(1,255)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSig {
    pub name: Cow<'static, str>,
    pub min_args: usize,
    pub max_args: usize,
}

impl FunctionSig {
    pub fn new(name: impl Into<Cow<'static, str>>, min_args: usize, max_args: usize) -> Self {
        FunctionSig {
            name: name.into(),
            min_args,
            max_args,
        }
    }

    /// Reads an entry of a schema `context` array such as `success(0,MAX)` or
    /// `hashFiles(1,255)`; `None` for entries that are named values rather than functions.
    pub fn from_schema_entry(entry: &str) -> Option<FunctionSig> {
        let (name, rest) = entry.split_once('(')?;
        let (min, max) = rest.strip_suffix(')')?.split_once(',')?;
        let bound = |s: &str| match s.trim() {
            "MAX" => Some(usize::MAX),
            n => n.parse().ok(),
        };
        Some(FunctionSig::new(
            name.trim().to_string(),
            bound(min)?,
            bound(max)?,
        ))
    }
}

/// The built-in functions every place allows, with GitHub's arities.
pub(crate) const BUILTIN_FUNCTIONS: [(&str, usize, usize); 8] = [
    ("contains", 2, 2),
    ("startsWith", 2, 2),
    ("endsWith", 2, 2),
    ("format", 1, 255),
    ("join", 1, 2),
    ("toJSON", 1, 1),
    ("fromJSON", 1, 1),
    ("case", 3, 255),
];

/// The status functions: a condition that calls none of them gets an implicit `success() &&`.
pub const STATUS_FUNCTIONS: [&str; 4] = ["success", "failure", "cancelled", "always"];

/// What names a place in a workflow allows: named values (contexts, case-insensitive) and the
/// extra functions beyond the always-available ones (contains, startsWith, endsWith, format,
/// join, toJSON, fromJSON, case). Status functions and hashFiles are extras because the
/// workflow schema allows them only in some keys, with a given arity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    pub named_values: Vec<String>,
    pub functions: Vec<FunctionSig>,
}

impl Allowed {
    pub fn new(named_values: Vec<String>, functions: Vec<FunctionSig>) -> Self {
        Allowed {
            named_values,
            functions,
        }
    }

    /// The given named values plus every extra function: `success`/`failure` with any number
    /// of arguments, `always`/`cancelled` with none, `hashFiles` with 1 to 255.
    pub fn everything<I, S>(named_values: I) -> Allowed
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Allowed {
            named_values: named_values.into_iter().map(Into::into).collect(),
            functions: vec![
                FunctionSig::new("success", 0, usize::MAX),
                FunctionSig::new("failure", 0, usize::MAX),
                FunctionSig::new("cancelled", 0, 0),
                FunctionSig::new("always", 0, 0),
                FunctionSig::new("hashFiles", 1, 255),
            ],
        }
    }

    /// Builds the set from a schema definition's `context` array, whose entries are either
    /// named values (`github`) or function signatures (`hashFiles(1,255)`).
    pub fn from_schema_context<S: AsRef<str>>(entries: &[S]) -> Allowed {
        let mut allowed = Allowed::default();
        for entry in entries {
            let entry = entry.as_ref();
            match FunctionSig::from_schema_entry(entry) {
                Some(sig) => allowed.functions.push(sig),
                None => allowed.named_values.push(entry.to_string()),
            }
        }
        allowed
    }

    pub(crate) fn has_named_value(&self, name: &str) -> bool {
        self.named_values
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
    }

    pub(crate) fn function(&self, name: &str) -> Option<&FunctionSig> {
        self.functions
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }
}

/// What an expression is evaluated against.
pub trait EvalContext {
    /// A named value (context) as written in the expression; lookup is case-insensitive.
    /// Names the parse step allowed but the context lacks should give `Value::Null`.
    fn named_value(&self, name: &str) -> Value;
    /// Status functions, hashFiles and any other extra function, by lower-cased name.
    /// `Err(message)` becomes an evaluation error.
    fn call(&self, name: &str, args: &[Value]) -> Result<Value, String>;
}

/// A parsed expression, cheap to evaluate many times.
#[derive(Debug, Clone)]
pub struct Expr {
    source: String,
    root: Option<parser::Node>,
}

/// Parses `source` (the text inside `${{ }}`, without the braces), checking every named value
/// and function against `allowed`. An empty or blank source is valid and evaluates to null.
pub fn parse(source: &str, allowed: &Allowed) -> Result<Expr, ExprError> {
    let root = parser::parse(source, allowed)?;
    Ok(Expr {
        source: source.to_string(),
        root,
    })
}

impl Expr {
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn evaluate(&self, ctx: &dyn EvalContext) -> Result<Value, ExprError> {
        match &self.root {
            None => Ok(Value::Null),
            Some(root) => eval::evaluate(root, ctx),
        }
    }

    /// True if the context `name` is read anywhere in the expression (case-insensitive).
    pub fn reads_named_value(&self, name: &str) -> bool {
        self.root
            .as_ref()
            .is_some_and(|root| root.reads_named_value(name))
    }

    /// True if a status function is called anywhere, however deeply nested: such a condition
    /// does not get the implicit `success() &&`.
    pub fn calls_status_function(&self) -> bool {
        self.root
            .as_ref()
            .is_some_and(parser::Node::calls_status_function)
    }
}

#[cfg(test)]
mod tests;
