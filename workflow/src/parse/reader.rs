//! The reading primitives every part of the parser shares: type checks with GitHub's messages,
//! unknown keys with did-you-mean, and scalars turned into templates with their expressions
//! checked against the key's allowed contexts.

use super::contexts::KeyContext;
use super::expressions;
use crate::diag::{did_you_mean, Diagnostic};
use crate::model::{
    Condition, DynamicKeys, MapEntry, MaybeExpr, Pairs, Param, Spanned, Template, TemplateMap,
    Tree, TreeKey,
};
use crate::yaml::{Node, NodeKind, Pos, Resolved};

const MAX_EXPRESSION_LENGTH: usize = 21_000;

/// GitHub's message for `${{ insert }}` anywhere but as a whole mapping key.
const INSERT_NOT_ALLOWED: &str = "The directive 'insert' is not allowed in this context. Directives are not supported for expressions that are embedded within a string. Directives are only supported when the entire value is an expression.";

/// Collects the diagnostics of one file while it is read.
pub struct Reader<'f> {
    pub file: &'f str,
    pub diags: Vec<Diagnostic>,
}

impl<'f> Reader<'f> {
    /// A reader that starts with the YAML problems of `document` (whole-file ones unpositioned).
    pub fn with_yaml_errors(file: &'f str, document: &crate::yaml::Document) -> Self {
        let diags = document
            .errors
            .iter()
            .map(|e| Diagnostic::error(file, e.pos, e.message.clone()))
            .collect();
        Reader { file, diags }
    }

    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.diags
            .push(Diagnostic::error(self.file, Some(pos), message));
    }

    pub fn warning(&mut self, pos: Pos, message: impl Into<String>) {
        self.diags
            .push(Diagnostic::warning(self.file, Some(pos), message));
    }

    pub fn error_with_hint(
        &mut self,
        pos: Pos,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.diags
            .push(Diagnostic::error(self.file, Some(pos), message).with_hint(hint));
    }

    /// GitHub's message for a node of the wrong shape.
    pub fn unexpected(&mut self, node: &Node) {
        let message = match &node.kind {
            NodeKind::Scalar { value, .. } if value.contains("${{") => {
                "A template expression is not allowed in this context".to_string()
            }
            NodeKind::Scalar { .. } => {
                format!("Unexpected value '{}'", node.as_str().unwrap_or_default())
            }
            NodeKind::Sequence(_) => "A sequence was not expected".to_string(),
            NodeKind::Mapping(_) => "A mapping was not expected".to_string(),
        };
        self.error(node.pos, message);
    }

    pub fn mapping<'n>(&mut self, node: &'n Node) -> Option<&'n [(Node, Node)]> {
        let pairs = node.as_mapping();
        if pairs.is_none() {
            self.unexpected(node);
        }
        pairs
    }

    /// A mapping, where an empty (null) value counts as an empty mapping.
    pub fn mapping_or_null<'n>(&mut self, node: &'n Node) -> Option<&'n [(Node, Node)]> {
        if node.is_null() {
            return Some(&[]);
        }
        self.mapping(node)
    }

    pub fn sequence<'n>(&mut self, node: &'n Node) -> Option<&'n [Node]> {
        let items = node.as_sequence();
        if items.is_none() {
            self.unexpected(node);
        }
        items
    }

    /// The pairs of a mapping with literal keys, reporting keys outside `allowed` (with the
    /// closest allowed key as a hint) and keys written as expressions.
    pub fn known_keys<'n>(
        &mut self,
        pairs: &'n [(Node, Node)],
        allowed: &[&'n str],
    ) -> Vec<(&'n str, &'n Node, &'n Node)> {
        self.keys_under(pairs, allowed, &super::contexts::NONE).0
    }

    /// [`Reader::known_keys`] for a mapping whose definition takes `context`: a key written
    /// as an expression (or `${{ insert }}`) is kept, with its value, for evaluation.
    pub fn keys_under<'n>(
        &mut self,
        pairs: &'n [(Node, Node)],
        allowed: &[&'n str],
        context: &KeyContext,
    ) -> (Vec<(&'n str, &'n Node, &'n Node)>, DynamicKeys) {
        let mut known = Vec::new();
        let mut dynamic = Vec::new();
        for (key, value) in pairs {
            let name = match self.map_key(key, context) {
                None => continue,
                Some(TreeKey::Literal(name)) => name,
                Some(computed) => {
                    if let Some(value) = self.tree(value, context) {
                        dynamic.push((computed, value));
                    }
                    continue;
                }
            };
            match allowed.iter().find(|a| a.eq_ignore_ascii_case(&name.value)) {
                Some(canonical) => known.push((*canonical, key, value)),
                None => self.unknown_key(key.pos, &name.value, allowed),
            }
        }
        (known, dynamic)
    }

    pub fn unknown_key(&mut self, pos: Pos, name: &str, allowed: &[&str]) {
        let message = format!("Unexpected value '{name}'");
        match did_you_mean(name, allowed.iter().copied()) {
            Some(suggestion) => {
                self.error_with_hint(pos, message, format!("did you mean `{suggestion}`?"))
            }
            None => self.error(pos, message),
        }
    }

    /// A mapping key as a string; expressions are not allowed in keys.
    pub fn key<'n>(&mut self, key: &'n Node) -> Option<&'n str> {
        let text = key.as_str()?;
        if text.contains("${{") {
            self.error(
                key.pos,
                "A template expression is not allowed in this context",
            );
            return None;
        }
        Some(text)
    }

    /// A scalar taken as a string with no expressions allowed.
    pub fn literal(&mut self, node: &Node) -> Option<Spanned<String>> {
        match node.as_str() {
            Some(text) if !text.contains("${{") => Some(Spanned::new(text.to_string(), node.pos)),
            _ => {
                self.unexpected(node);
                None
            }
        }
    }

    /// A non-empty literal string (GitHub's `non-empty-string`).
    pub fn non_empty_literal(&mut self, node: &Node) -> Option<Spanned<String>> {
        let text = self.literal(node)?;
        if text.value.is_empty() {
            self.unexpected(node);
            return None;
        }
        Some(text)
    }

    /// A literal boolean.
    pub fn literal_bool(&mut self, node: &Node) -> Option<bool> {
        match node.resolved() {
            Some(Resolved::Bool(b)) => Some(b),
            _ => {
                self.unexpected(node);
                None
            }
        }
    }

    /// A scalar that may contain expressions using the given contexts.
    pub fn template(&mut self, node: &Node, context: &KeyContext) -> Option<Template> {
        match &node.kind {
            NodeKind::Scalar {
                value,
                resolved: Resolved::String,
                ..
            } => {
                let template = self.template_text(value, node.pos, context)?;
                if template.single_expression() == Some("insert") {
                    // Only a key can be the insert directive.
                    self.error(node.pos, INSERT_NOT_ALLOWED);
                    return None;
                }
                Some(template)
            }
            // Null, booleans and numbers become strings as GitHub formats them (`1e3` -> `1000`).
            NodeKind::Scalar { .. } => Some(Template::literal(
                node.to_value().to_display_string(),
                node.pos,
            )),
            _ => {
                self.unexpected(node);
                None
            }
        }
    }

    /// Checks a raw string: splitting, directives, and each expression against `context`.
    pub fn template_text(&mut self, raw: &str, pos: Pos, context: &KeyContext) -> Option<Template> {
        if !context.allows_expressions() && raw.contains("${{") {
            self.error(pos, "A template expression is not allowed in this context");
            return None;
        }
        match expressions::split(raw) {
            Ok(segments) => {
                let problems = expressions::check_segments(&segments, context);
                let mut ok = problems.is_empty();
                for message in problems {
                    self.error(pos, message);
                }
                if segments.len() > 1 && raw.len() > MAX_EXPRESSION_LENGTH {
                    // Text around expressions becomes one format() expression, bounded like any other.
                    self.error(
                        pos,
                        format!("Exceeded max expression length {MAX_EXPRESSION_LENGTH}"),
                    );
                    ok = false;
                }
                ok.then(|| Template {
                    raw: raw.to_string(),
                    pos,
                    segments,
                })
            }
            Err(message) => {
                self.error(pos, message);
                None
            }
        }
    }

    /// A template that may not be empty (GitHub's `non-empty-string` with a context).
    pub fn non_empty_template(&mut self, node: &Node, context: &KeyContext) -> Option<Template> {
        if node.as_str() == Some("") {
            self.unexpected(node);
            return None;
        }
        self.template(node, context)
    }

    /// A string or a sequence of strings, each possibly with expressions.
    pub fn templates(&mut self, node: &Node, context: &KeyContext) -> Vec<Template> {
        match &node.kind {
            NodeKind::Sequence(items) => items
                .iter()
                .filter_map(|item| self.template(item, context))
                .collect(),
            _ => self.template(node, context).into_iter().collect(),
        }
    }

    /// A string or a sequence of literal strings (event filters, `needs`).
    pub fn literal_list(&mut self, node: &Node) -> Vec<Spanned<String>> {
        match &node.kind {
            NodeKind::Sequence(items) => {
                items.iter().filter_map(|item| self.literal(item)).collect()
            }
            NodeKind::Mapping(_) => {
                self.unexpected(node);
                Vec::new()
            }
            NodeKind::Scalar { .. } => self.literal(node).into_iter().collect(),
        }
    }

    /// A string-to-string mapping whose own definition takes no context (`outputs`, the
    /// `secrets` of a call): its keys are literal, and it cannot be one expression.
    pub fn string_pairs(&mut self, node: &Node, context: &KeyContext) -> Pairs<Template> {
        self.literal_pairs(node, |r, value| r.template(value, context))
    }

    /// A string-to-string mapping such as `env` (null, booleans and numbers are coerced)
    /// whose definition takes `context`: keys may be expressions, `${{ insert }}` merges a
    /// mapping, and the whole mapping may be one expression.
    pub fn env_map(&mut self, node: &Node, context: &KeyContext) -> TemplateMap<Template> {
        self.template_map(node, context, |r, value| r.template(value, context))
    }

    /// [`Reader::env_map`] for a mapping whose definition inherits `key_context` from its
    /// parent while its values take their own (a container's `env`).
    pub fn env_map_under(
        &mut self,
        node: &Node,
        key_context: &KeyContext,
        value_context: &KeyContext,
    ) -> TemplateMap<Template> {
        self.template_map(node, key_context, |r, value| {
            r.template(value, value_context)
        })
    }

    /// A mapping of inputs keeping YAML types (a step's `with:`), with keys as in
    /// [`Reader::env_map`].
    pub fn with_map(&mut self, node: &Node, context: &KeyContext) -> TemplateMap<Param> {
        self.template_map(node, context, |r, value| r.param(value, context))
    }

    fn template_map<V>(
        &mut self,
        node: &Node,
        context: &KeyContext,
        mut read: impl FnMut(&mut Self, &Node) -> Option<V>,
    ) -> TemplateMap<V> {
        let mut map = TemplateMap::default();
        if let Some(whole) = self.whole_expression(node, context) {
            map.entries
                .extend(whole.map(|template| MapEntry::Insert(Tree::Expr(template))));
            return map;
        }
        let Some(pairs) = self.mapping_or_null(node) else {
            return map;
        };
        for (key, value) in pairs {
            let entry = match self.map_key(key, context) {
                None => continue,
                Some(TreeKey::Literal(name)) => read(self, value).map(|v| MapEntry::Pair(name, v)),
                Some(TreeKey::Expr(name)) => {
                    read(self, value).map(|v| MapEntry::ComputedKey(name, v))
                }
                Some(TreeKey::Insert(_)) => self.tree(value, context).map(MapEntry::Insert),
            };
            map.entries.extend(entry);
        }
        map
    }

    /// A mapping key under a definition taking `context`: literal, or (where the context
    /// allows expressions, as GitHub's reader does) an expression or `${{ insert }}`.
    pub fn map_key(&mut self, key: &Node, context: &KeyContext) -> Option<TreeKey> {
        let text = key.as_str()?;
        if !text.contains("${{") {
            return Some(TreeKey::Literal(Spanned::new(text.to_string(), key.pos)));
        }
        if !context.allows_expressions() {
            self.error(
                key.pos,
                "A template expression is not allowed in this context",
            );
            return None;
        }
        let template = self.template_text(text, key.pos, context)?;
        if template.single_expression() == Some("insert") {
            return Some(TreeKey::Insert(key.pos));
        }
        if let Some(text) = template.literal_text() {
            // `${{ 'name' }}`: a lone string literal is its text.
            return Some(TreeKey::Literal(Spanned::new(text, key.pos)));
        }
        Some(TreeKey::Expr(template))
    }

    /// Data with expressions anywhere, also in keys (a matrix, an `${{ insert }}` value),
    /// checked against `context`.
    pub fn tree(&mut self, node: &Node, context: &KeyContext) -> Option<Tree> {
        match &node.kind {
            NodeKind::Scalar {
                value,
                resolved: Resolved::String,
                ..
            } if value.contains("${{") => self.template(node, context).map(Tree::Expr),
            NodeKind::Scalar { .. } => Some(Tree::Literal(node.to_value(), node.pos)),
            NodeKind::Sequence(items) => Some(Tree::Sequence(
                items
                    .iter()
                    .filter_map(|item| self.tree(item, context))
                    .collect(),
                node.pos,
            )),
            NodeKind::Mapping(pairs) => {
                let mut entries = Vec::with_capacity(pairs.len());
                for (key, value) in pairs {
                    let Some(key) = self.map_key(key, context) else {
                        continue;
                    };
                    if let Some(value) = self.tree(value, context) {
                        entries.push((key, value));
                    }
                }
                Some(Tree::Mapping(entries, node.pos))
            }
        }
    }

    /// A mapping of inputs keeping YAML types whose own definition takes no context (the
    /// `with:` of a reusable-workflow call): literal keys only.
    pub fn params(&mut self, node: &Node, context: &KeyContext) -> Pairs<Param> {
        self.literal_pairs(node, |r, value| r.param(value, context))
    }

    fn literal_pairs<V>(
        &mut self,
        node: &Node,
        mut read: impl FnMut(&mut Self, &Node) -> Option<V>,
    ) -> Pairs<V> {
        let Some(pairs) = self.mapping_or_null(node) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, value) in pairs {
            let Some(name) = self.key(key) else { continue };
            if let Some(value) = read(self, value) {
                out.push((Spanned::new(name.to_string(), key.pos), value));
            }
        }
        out
    }

    pub fn param(&mut self, node: &Node, context: &KeyContext) -> Option<Param> {
        match &node.kind {
            NodeKind::Scalar {
                resolved: Resolved::String,
                ..
            } => {
                let template = self.template(node, context)?;
                let value = node.to_value();
                Some(Param {
                    value,
                    template: template.has_expressions().then_some(template),
                    pos: node.pos,
                })
            }
            NodeKind::Scalar { .. } => Some(Param {
                value: node.to_value(),
                template: None,
                pos: node.pos,
            }),
            _ => {
                self.unexpected(node);
                None
            }
        }
    }

    /// `Some` when the whole node is one `${{ }}` expression: its checked template, or `None`
    /// inside when the expression has errors (already reported).
    pub fn whole_expression(
        &mut self,
        node: &Node,
        context: &KeyContext,
    ) -> Option<Option<Template>> {
        let raw = node.as_str()?;
        let segments = expressions::split(raw).ok()?;
        if !matches!(
            segments.as_slice(),
            [crate::model::Segment::Expression { .. }]
        ) {
            return None;
        }
        Some(self.template(node, context))
    }

    /// A boolean written literally or as an expression.
    pub fn bool_or_expr(&mut self, node: &Node, context: &KeyContext) -> Option<MaybeExpr<bool>> {
        if let Some(Resolved::Bool(b)) = node.resolved() {
            return Some(MaybeExpr::Literal(Spanned::new(b, node.pos)));
        }
        self.expr_only(node, context)
    }

    /// A number written literally or as an expression.
    pub fn number_or_expr(&mut self, node: &Node, context: &KeyContext) -> Option<MaybeExpr<f64>> {
        if let Some(Resolved::Number(n)) = node.resolved() {
            return Some(MaybeExpr::Literal(Spanned::new(n, node.pos)));
        }
        self.expr_only(node, context)
    }

    /// A value that must be a single whole expression because its literal form has another
    /// type; anything else is reported as an unexpected value.
    fn expr_only<T>(&mut self, node: &Node, context: &KeyContext) -> Option<MaybeExpr<T>> {
        let raw = node.as_str();
        if raw.is_some_and(|r| r.contains("${{")) {
            let template = self.template(node, context)?;
            if template.single_expression().is_some() {
                return Some(MaybeExpr::Expr(template));
            }
            // Text around the expression makes a string, never a boolean or number.
            self.unexpected(node);
            return None;
        }
        self.unexpected(node);
        None
    }

    /// An `if:` condition: bare expression or `${{ }}`, rewritten with the implicit `success()`.
    pub fn condition(
        &mut self,
        node: Option<&Node>,
        context: &KeyContext,
        default_pos: Pos,
    ) -> Condition {
        let Some(node) = node else {
            return Condition {
                raw: String::new(),
                expression: "success()".into(),
                pos: default_pos,
            };
        };
        let raw = match &node.kind {
            NodeKind::Scalar {
                resolved: Resolved::Bool(b),
                ..
            } => b.to_string(),
            NodeKind::Scalar { .. } => node.as_str().unwrap_or_default().to_string(),
            _ => {
                self.unexpected(node);
                return Condition {
                    raw: String::new(),
                    expression: "success()".into(),
                    pos: node.pos,
                };
            }
        };
        match expressions::condition(&raw, context) {
            Ok(expression) => Condition {
                raw,
                expression,
                pos: node.pos,
            },
            Err(message) => {
                self.error(node.pos, message);
                Condition {
                    raw,
                    expression: "success()".into(),
                    pos: node.pos,
                }
            }
        }
    }
}
