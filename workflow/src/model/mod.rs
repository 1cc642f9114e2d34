//! The typed model of workflows and actions. Every node keeps the position it was read from,
//! so later stages (evaluation, the CLI) can still point at the source.

mod action;
mod tree;
mod workflow;

pub use action::*;
pub use tree::*;
pub use workflow::*;

pub use crate::expr::template::Segment;
use crate::value::Value;
use crate::yaml::Pos;

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Spanned<T> {
    pub value: T,
    pub pos: Pos,
}

impl<T> Spanned<T> {
    pub fn new(value: T, pos: Pos) -> Self {
        Spanned { value, pos }
    }
}

/// A string value that may hold expressions: the raw text, where it was, and its segments,
/// so evaluation does not have to split it again.
#[derive(Debug, Clone)]
pub struct Template {
    pub raw: String,
    pub pos: Pos,
    pub segments: Vec<Segment>,
}

impl Template {
    /// A template with no expressions (defaults we fill in, like a job's display name).
    pub fn literal(text: impl Into<String>, pos: Pos) -> Template {
        let raw = text.into();
        let segments = vec![Segment::Literal(raw.clone())];
        Template { raw, pos, segments }
    }

    pub fn has_expressions(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Expression { .. }))
    }

    /// The text of a template without expressions (`${{ 'text' }}` included: a lone string
    /// literal is its text); `None` when it has expressions.
    pub fn literal_text(&self) -> Option<String> {
        let mut text = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(part) => text.push_str(part),
                Segment::Expression { .. } => return None,
            }
        }
        Some(text)
    }

    /// The expression when the whole value is one `${{ }}` (its result keeps its type).
    pub fn single_expression(&self) -> Option<&str> {
        match self.segments.as_slice() {
            [Segment::Expression { source, .. }] => Some(source),
            _ => None,
        }
    }
}

/// A value that is either written literally with its YAML type, or computed by an expression.
#[derive(Debug, Clone)]
pub enum MaybeExpr<T> {
    Literal(Spanned<T>),
    Expr(Template),
}

/// An `if:` condition, stored as GitHub evaluates it: a condition without a status function
/// is wrapped as `success() && (...)`.
#[derive(Debug, Clone)]
pub struct Condition {
    /// The text as written (empty when absent).
    pub raw: String,
    /// The expression to evaluate.
    pub expression: String,
    pub pos: Pos,
}

/// A value kept with its YAML types (for `with:`, inputs, matrices), plus its template when it
/// is a string containing expressions.
#[derive(Debug, Clone)]
pub struct Param {
    pub value: Value,
    pub template: Option<Template>,
    pub pos: Pos,
}

/// A `key: value` list in source order (env, outputs, with).
pub type Pairs<T> = Vec<(Spanned<String>, T)>;
