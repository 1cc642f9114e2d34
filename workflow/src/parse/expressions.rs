//! The one place the parser checks `${{ }}` expressions, adapting the expression engine
//! (`crate::expr`) to the parser: contexts per key, GitHub's messages, directives.

use std::cell::RefCell;
use std::rc::Rc;

use super::contexts::KeyContext;
use crate::expr::template::{self, Segment};
use crate::expr::{self, Allowed, FunctionSig};

fn build_allowed(context: &KeyContext) -> Allowed {
    Allowed::new(
        context
            .named_values
            .iter()
            .map(|n| (*n).to_string())
            .collect(),
        context
            .functions
            .iter()
            .map(|f| FunctionSig::new(f.name, f.min_args, f.max_args))
            .collect(),
    )
}

thread_local! {
    /// The expression engine's form of each key context, built once per thread: every
    /// template with an expression needs one.
    static ALLOWED: RefCell<Vec<(KeyContext, Rc<Allowed>)>> = const { RefCell::new(Vec::new()) };
}

fn allowed(context: &KeyContext) -> Rc<Allowed> {
    ALLOWED.with(|cache| {
        let mut cache = cache.borrow_mut();
        // Tables are constants, so the same table is the same slices; the name tells apart
        // the few that share them.
        let same = |known: &KeyContext| {
            known.definition == context.definition
                && std::ptr::eq(known.named_values, context.named_values)
                && std::ptr::eq(known.functions, context.functions)
        };
        if let Some((_, allowed)) = cache.iter().find(|(known, _)| same(known)) {
            return Rc::clone(allowed);
        }
        let allowed = Rc::new(build_allowed(context));
        cache.push((*context, Rc::clone(&allowed)));
        allowed
    })
}

/// Splits a scalar into literal text and expressions, with GitHub's messages on failure.
pub fn split(raw: &str) -> Result<Vec<Segment>, String> {
    template::split(raw).map_err(|e| e.to_string())
}

/// Checks the expressions of a split scalar against the key's contexts; one message per
/// problem. Directives (`${{ insert }}`) are only allowed as the whole value.
pub fn check_segments(segments: &[Segment], context: &KeyContext) -> Vec<String> {
    let embedded = segments.len() > 1;
    let mut allowed_set = None;
    let mut problems = Vec::new();
    for segment in segments {
        let Segment::Expression { source, .. } = segment else {
            continue;
        };
        if segment.is_insert_directive() {
            if embedded {
                problems.push(
                    "The directive 'insert' is not allowed in this context. Directives are not supported for \
                     expressions that are embedded within a string. Directives are only supported when the entire \
                     value is an expression."
                        .to_string(),
                );
            }
            continue;
        }
        let allowed_set = allowed_set.get_or_insert_with(|| allowed(context));
        if let Err(error) = expr::parse(source, allowed_set) {
            problems.push(error.to_string());
        }
    }
    problems
}

/// The expression an `if:` value stands for, rewritten with the implicit `success() &&`.
pub fn condition(raw: &str, context: &KeyContext) -> Result<String, String> {
    let source = template::condition_source(raw).map_err(|e| e.to_string())?;
    template::rewrite_condition(&source, &allowed(context)).map_err(|e| e.to_string())
}
