//! Values GitHub evaluates as a whole template rather than key by key: data with expressions
//! anywhere, also in mapping keys (`${{ matrix.k }}: v`), `${{ insert }}` keys that merge a
//! mapping into the enclosing one, and sequence items whose expression evaluates to a
//! sequence (spliced into the enclosing sequence). [`crate::eval::evaluate_tree`] applies
//! those rules; the parser keeps the data in this form wherever a key may be an expression.

use super::{Spanned, Template};
use crate::value::Value;
use crate::yaml::Pos;

/// YAML data as written, with its expressions parsed once.
#[derive(Debug, Clone)]
pub enum Tree {
    /// A null, boolean, number, or string without `${{`.
    Literal(Value, Pos),
    /// A string with `${{ }}`: one whole expression keeps its result's type, text around
    /// expressions makes a string.
    Expr(Template),
    Sequence(Vec<Tree>, Pos),
    Mapping(Vec<(TreeKey, Tree)>, Pos),
}

/// A mapping key as written.
#[derive(Debug, Clone)]
pub enum TreeKey {
    Literal(Spanned<String>),
    /// `${{ expr }}: value`: the key is the expression's result, as a string.
    Expr(Template),
    /// `${{ insert }}: mapping`: the mapping's pairs take this key's place.
    Insert(Pos),
}

impl Tree {
    pub fn pos(&self) -> Pos {
        match self {
            Tree::Literal(_, pos) | Tree::Sequence(_, pos) | Tree::Mapping(_, pos) => *pos,
            Tree::Expr(template) => template.pos,
        }
    }

    /// True when evaluation has anything to do: an expression in a value or a key.
    pub fn has_expressions(&self) -> bool {
        match self {
            Tree::Literal(..) => false,
            Tree::Expr(_) => true,
            Tree::Sequence(items, _) => items.iter().any(Tree::has_expressions),
            Tree::Mapping(pairs, _) => pairs
                .iter()
                .any(|(key, value)| !matches!(key, TreeKey::Literal(_)) || value.has_expressions()),
        }
    }

    /// The templates inside, keys included, in document order.
    pub fn templates(&self) -> Vec<&Template> {
        let mut found = Vec::new();
        self.collect_templates(&mut found);
        found
    }

    fn collect_templates<'a>(&'a self, found: &mut Vec<&'a Template>) {
        match self {
            Tree::Literal(..) => {}
            Tree::Expr(template) => found.push(template),
            Tree::Sequence(items, _) => items.iter().for_each(|item| item.collect_templates(found)),
            Tree::Mapping(pairs, _) => {
                for (key, value) in pairs {
                    if let TreeKey::Expr(template) = key {
                        found.push(template);
                    }
                    value.collect_templates(found);
                }
            }
        }
    }

    /// The data as written, for a tree without expressions (`None` otherwise).
    pub fn literal_value(&self) -> Option<Value> {
        match self {
            Tree::Literal(value, _) => Some(value.clone()),
            Tree::Expr(_) => None,
            Tree::Sequence(items, _) => items
                .iter()
                .map(Tree::literal_value)
                .collect::<Option<Vec<_>>>()
                .map(Value::array),
            Tree::Mapping(pairs, _) => {
                let mut object = crate::value::Object::new();
                for (key, value) in pairs {
                    let TreeKey::Literal(name) = key else {
                        return None;
                    };
                    object.insert(name.value.clone(), value.literal_value()?);
                }
                Some(Value::object(object))
            }
        }
    }
}

/// The entries of a mapping with well-known properties (`container`, `strategy`, ...) whose
/// keys are only known once evaluated: a key written as an expression, `${{ insert }}`, or
/// the whole mapping written as one expression (an insert of it). The evaluated keys are
/// read as the mapping's properties.
pub type DynamicKeys = Vec<(TreeKey, Tree)>;

/// A mapping of strings (`env:`) or of inputs (`with:`) as written: its literal pairs, and
/// what GitHub evaluates at run time (a key written as an expression, `${{ insert }}`, or the
/// whole mapping given as one expression).
#[derive(Debug, Clone)]
pub struct TemplateMap<V> {
    pub entries: Vec<MapEntry<V>>,
}

impl<V> Default for TemplateMap<V> {
    fn default() -> Self {
        TemplateMap {
            entries: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum MapEntry<V> {
    Pair(Spanned<String>, V),
    /// `${{ expr }}: value`.
    ComputedKey(Template, V),
    /// The value of an `${{ insert }}` key, or the whole mapping written as one expression:
    /// it must evaluate to a mapping, whose pairs are added.
    Insert(Tree),
}

impl<V> TemplateMap<V> {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The pairs whose keys are written literally (what is known before evaluation).
    pub fn pairs(&self) -> impl Iterator<Item = (&Spanned<String>, &V)> {
        self.entries.iter().filter_map(|entry| match entry {
            MapEntry::Pair(name, value) => Some((name, value)),
            _ => None,
        })
    }

    /// True when some key is only known once evaluated.
    pub fn has_computed_keys(&self) -> bool {
        self.entries
            .iter()
            .any(|entry| !matches!(entry, MapEntry::Pair(..)))
    }
}

/// `env:` maps: names to string templates.
pub type EnvMap = TemplateMap<Template>;
/// A step's `with:`: names to typed inputs.
pub type WithMap = TemplateMap<super::Param>;
