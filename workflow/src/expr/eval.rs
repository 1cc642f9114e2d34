//! Tree-walking evaluator. Recursion is bounded by the parser's depth limit. Two pieces of
//! state ride along with each value:
//! - whether it is a *filtered array* (the result of `.*` / `[*]`): further accessors apply to
//!   each element and flatten one level, and that survives parentheses, `&&`/`||` and `case`,
//!   exactly as on GitHub;
//! - the memory held by intermediate results, so one evaluation cannot allocate without bound.

use std::sync::Arc;

use super::functions::{self, string_cost, Budget, MEMORY_EXCEEDED, VALUE_OVERHEAD};
use super::parser::{Builtin, CompareOp, Function, IndexKey, Node};
use super::{EvalContext, ExprError, MAX_MEMORY};
use crate::value::Value;

pub(crate) fn evaluate(root: &Node, ctx: &dyn EvalContext) -> Result<Value, ExprError> {
    let mut evaluator = Evaluator { ctx, memory: 0 };
    Ok(evaluator.eval(root)?.value)
}

struct Evaluated {
    value: Value,
    filtered: bool,
}

impl Evaluated {
    fn plain(value: Value) -> Self {
        Evaluated {
            value,
            filtered: false,
        }
    }

    fn filtered(items: Arc<Vec<Value>>) -> Self {
        Evaluated {
            value: Value::Array(items),
            filtered: true,
        }
    }
}

struct Evaluator<'c> {
    ctx: &'c dyn EvalContext,
    /// Bytes held by intermediate results that are still live.
    memory: usize,
}

impl Evaluator<'_> {
    fn eval(&mut self, node: &Node) -> Result<Evaluated, ExprError> {
        match node {
            Node::Literal(v) => Ok(Evaluated::plain(v.clone())),
            Node::Named(name) => Ok(Evaluated::plain(self.ctx.named_value(name))),
            Node::Not(inner) => Ok(Evaluated::plain(Value::Bool(
                !self.eval(inner)?.value.is_truthy(),
            ))),
            Node::Compare { op, left, right } => {
                let left = self.eval(left)?.value;
                let right = self.eval(right)?.value;
                Ok(Evaluated::plain(Value::Bool(compare(*op, &left, &right))))
            }
            Node::And(args) => self.logical(args, false),
            Node::Or(args) => self.logical(args, true),
            Node::Index { target, key } => self.index(target, key),
            Node::Call {
                function,
                args,
                offset,
            } => {
                let mark = self.memory;
                let result = self.call(function, args).map_err(|mut e| {
                    e.position = e.position.or(Some(*offset));
                    e
                })?;
                // The arguments are dropped; only the result stays live.
                self.memory = mark.saturating_add(cost(&result.value));
                Ok(result)
            }
        }
    }

    /// `&&` stops at the first falsy operand, `||` at the first truthy one, and both return
    /// that operand itself; operands after it are never evaluated, so they cannot fail.
    fn logical(&mut self, args: &[Node], stop_when: bool) -> Result<Evaluated, ExprError> {
        let mut last = Evaluated::plain(Value::Null);
        for arg in args {
            last = self.eval(arg)?;
            if last.value.is_truthy() == stop_when {
                break;
            }
        }
        Ok(last)
    }

    fn index(&mut self, target: &Node, key: &IndexKey) -> Result<Evaluated, ExprError> {
        let target = self.eval(target)?;
        let dynamic_key;
        let key = match key {
            IndexKey::Star => None,
            IndexKey::Constant(k) => Some(k),
            IndexKey::Dynamic(node) => {
                dynamic_key = self.eval(node)?.value;
                Some(&dynamic_key)
            }
        };
        if target.filtered {
            if let Value::Array(items) = &target.value {
                return self.filtered_access(items, key);
            }
        }
        match (&target.value, key) {
            // An array's elements are already the filtered array: share them.
            (Value::Array(items), None) => Ok(Evaluated::filtered(items.clone())),
            (Value::Object(obj), None) => {
                self.reserve(obj.len().saturating_mul(std::mem::size_of::<Value>()))?;
                Ok(Evaluated::filtered(Arc::new(
                    obj.iter().map(|(_, v)| v.clone()).collect(),
                )))
            }
            (_, None) => Ok(Evaluated::filtered(Arc::new(Vec::new()))),
            (value, Some(key)) => Ok(Evaluated::plain(value.index(key))),
        }
    }

    /// An accessor applied to a filtered array applies to each element; elements without the
    /// key drop out and `*` flattens one level.
    fn filtered_access(
        &mut self,
        items: &[Value],
        key: Option<&Value>,
    ) -> Result<Evaluated, ExprError> {
        let mut out = Vec::new();
        let array_index = key.and_then(array_position);
        let property = key.filter(|k| k.is_primitive()).map(functions::display);
        for item in items {
            match (item, key) {
                (Value::Object(obj), None) => out.extend(obj.iter().map(|(_, v)| v.clone())),
                (Value::Array(elements), None) => out.extend(elements.iter().cloned()),
                (Value::Object(obj), Some(_)) => {
                    if let Some(v) = property.as_deref().and_then(|p| obj.get(p)) {
                        out.push(v.clone());
                    }
                }
                (Value::Array(elements), Some(_)) => {
                    if let Some(v) = array_index.and_then(|i| elements.get(i)) {
                        out.push(v.clone());
                    }
                }
                _ => {}
            }
            self.check(out.len().saturating_mul(std::mem::size_of::<Value>()))?;
        }
        self.reserve(out.len().saturating_mul(std::mem::size_of::<Value>()))?;
        Ok(Evaluated::filtered(Arc::new(out)))
    }

    fn call(&mut self, function: &Function, args: &[Node]) -> Result<Evaluated, ExprError> {
        let value = match function {
            Function::Case => return self.case(args),
            Function::Builtin(builtin) => {
                self.with_args(args, |this, values| this.builtin(*builtin, values))?
            }
            Function::Extension(name) => self.with_args(args, |this, values| {
                this.ctx.call(name, values).map_err(ExprError::evaluation)
            })?,
        };
        Ok(Evaluated::plain(value))
    }

    /// Evaluates call arguments, on the stack for the usual one to three, so that a typical
    /// condition evaluates without touching the allocator.
    fn with_args<R>(
        &mut self,
        args: &[Node],
        then: impl FnOnce(&mut Self, &[Value]) -> Result<R, ExprError>,
    ) -> Result<R, ExprError> {
        if args.len() <= 3 {
            let mut values = [Value::Null, Value::Null, Value::Null];
            for (slot, arg) in values.iter_mut().zip(args) {
                *slot = self.eval(arg)?.value;
            }
            return then(self, &values[..args.len()]);
        }
        let values = args
            .iter()
            .map(|a| Ok(self.eval(a)?.value))
            .collect::<Result<Vec<_>, ExprError>>()?;
        then(self, &values)
    }

    /// Arity was checked at parse time, so the arguments are there.
    fn builtin(&mut self, builtin: Builtin, values: &[Value]) -> Result<Value, ExprError> {
        let budget = Budget {
            available: MAX_MEMORY.saturating_sub(self.memory),
        };
        let arg = |i: usize| values.get(i).unwrap_or(&Value::Null);
        Ok(match builtin {
            Builtin::Contains => Value::Bool(functions::contains(arg(0), arg(1))),
            Builtin::StartsWith => Value::Bool(functions::affix(arg(0), arg(1), true)),
            Builtin::EndsWith => Value::Bool(functions::affix(arg(0), arg(1), false)),
            Builtin::Format => functions::format(values, &budget)?,
            Builtin::Join => functions::join(values, &budget)?,
            Builtin::ToJson => functions::to_json(arg(0), &budget)?,
            Builtin::FromJson => {
                // The parsed structure is about as large as its text.
                self.check(string_cost(functions::display(arg(0)).len()))?;
                functions::from_json(arg(0))?
            }
        })
    }

    /// `case(pred1, v1, ..., default)`: predicates are evaluated in order and must be
    /// booleans; only the chosen value is evaluated.
    fn case(&mut self, args: &[Node]) -> Result<Evaluated, ExprError> {
        let (default, pairs) = args
            .split_last()
            .ok_or_else(|| ExprError::evaluation("case requires arguments"))?;
        for pair in pairs.chunks(2) {
            let [predicate, value] = pair else { break };
            match self.eval(predicate)?.value {
                Value::Bool(true) => return self.eval(value),
                Value::Bool(false) => {}
                _ => {
                    return Err(ExprError::evaluation(
                        "case predicate must evaluate to a boolean value",
                    ))
                }
            }
        }
        self.eval(default)
    }

    fn check(&self, bytes: usize) -> Result<(), ExprError> {
        if self.memory.saturating_add(bytes) > MAX_MEMORY {
            Err(ExprError::evaluation(MEMORY_EXCEEDED))
        } else {
            Ok(())
        }
    }

    fn reserve(&mut self, bytes: usize) -> Result<(), ExprError> {
        self.check(bytes)?;
        self.memory += bytes;
        Ok(())
    }
}

/// What a function result keeps alive: strings it built, or (for values it merely passes
/// through, such as `case`'s) nothing new.
fn cost(value: &Value) -> usize {
    match value {
        Value::String(s) => string_cost(s.len()),
        Value::Array(items) => {
            items.len().saturating_mul(std::mem::size_of::<Value>()) + VALUE_OVERHEAD
        }
        _ => VALUE_OVERHEAD,
    }
}

/// The element an index selects in an array: numbers are floored; negative, NaN and
/// infinite indexes select nothing.
fn array_position(key: &Value) -> Option<usize> {
    let n = key.to_number();
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let floored = n.floor();
    (floored < usize::MAX as f64).then_some(floored as usize)
}

fn compare(op: CompareOp, left: &Value, right: &Value) -> bool {
    use std::cmp::Ordering::{Greater, Less};
    match op {
        CompareOp::Equal => left.loose_eq(right),
        CompareOp::NotEqual => !left.loose_eq(right),
        CompareOp::Less => left.loose_cmp(right) == Some(Less),
        CompareOp::Greater => left.loose_cmp(right) == Some(Greater),
        CompareOp::LessEqual => left.loose_eq(right) || left.loose_cmp(right) == Some(Less),
        CompareOp::GreaterEqual => left.loose_eq(right) || left.loose_cmp(right) == Some(Greater),
    }
}
