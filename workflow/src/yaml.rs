//! YAML reading with positions, as GitHub reads workflow files: YAML 1.2 core schema, anchors
//! and aliases (GitHub accepts them since 2025-09-18; merge keys `<<` stay plain keys, as
//! there), no custom tags, duplicate keys rejected, bounded depth and size.
//!
//! We build our own tree from `saphyr-parser` events because every later diagnostic needs the
//! `line:col` GitHub would print, and because GitHub's rules (case-insensitive duplicate keys,
//! `yes`/`on` are strings, no merge keys) differ from what general YAML loaders do.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};
use serde::Serialize;

use crate::value::{Object, Value};

/// A 1-based position, as GitHub prints it: `(Line: L, Col: C)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// How a scalar was written; `Plain` scalars are the only ones the core schema resolves to
/// null, booleans and numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Literal,
    Folded,
}

/// What a scalar resolves to under the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resolved {
    Null,
    Bool(bool),
    Number(f64),
    String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Scalar {
        value: String,
        style: Style,
        resolved: Resolved,
    },
    Sequence(Vec<Node>),
    Mapping(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub pos: Pos,
}

impl Node {
    pub fn scalar(value: impl Into<String>, pos: Pos) -> Node {
        Node {
            kind: NodeKind::Scalar {
                value: value.into(),
                style: Style::Plain,
                resolved: Resolved::String,
            },
            pos,
        }
    }

    /// The scalar's text as GitHub converts it to a string: null becomes `""`, booleans and
    /// numbers keep their source spelling except canonical forms below.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar {
                resolved: Resolved::Null,
                ..
            } => Some(""),
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(
            self.kind,
            NodeKind::Scalar {
                resolved: Resolved::Null,
                ..
            }
        )
    }

    pub fn resolved(&self) -> Option<Resolved> {
        match &self.kind {
            NodeKind::Scalar { resolved, .. } => Some(*resolved),
            _ => None,
        }
    }

    pub fn as_mapping(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Mapping(pairs) => Some(pairs),
            _ => None,
        }
    }

    pub fn as_sequence(&self) -> Option<&[Node]> {
        match &self.kind {
            NodeKind::Sequence(items) => Some(items),
            _ => None,
        }
    }

    /// The value under `key` in a mapping (keys compare case-insensitively, as GitHub does).
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_mapping()?
            .iter()
            .find(|(k, _)| k.as_str().is_some_and(|s| s.eq_ignore_ascii_case(key)))
            .map(|(_, v)| v)
    }

    /// Converts to an expression value keeping YAML types; mappings keep key order.
    pub fn to_value(&self) -> Value {
        match &self.kind {
            NodeKind::Scalar {
                value, resolved, ..
            } => match resolved {
                Resolved::Null => Value::Null,
                Resolved::Bool(b) => Value::Bool(*b),
                Resolved::Number(n) => Value::Number(*n),
                Resolved::String => Value::string(value.as_str()),
            },
            NodeKind::Sequence(items) => Value::array(items.iter().map(Node::to_value).collect()),
            NodeKind::Mapping(pairs) => {
                let mut object = Object::new();
                for (k, v) in pairs {
                    object.insert(k.as_str().unwrap_or_default(), v.to_value());
                }
                Value::object(object)
            }
        }
    }
}

/// Limits GitHub applies while reading a file.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_depth: usize,
    pub max_file_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 50,
            max_file_size: 1024 * 1024,
        }
    }
}

/// A problem found while reading YAML; `pos` is `None` where GitHub reports without a position.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub message: String,
    pub pos: Option<Pos>,
}

/// The parsed document (None when it is unusable) and every problem found.
pub struct Document {
    pub root: Option<Node>,
    pub errors: Vec<YamlError>,
}

fn pos_of(span: &Span) -> Pos {
    let line = u32::try_from(span.start.line()).unwrap_or(u32::MAX);
    let col = u32::try_from(span.start.col().saturating_add(1)).unwrap_or(u32::MAX);
    Pos { line, col }
}

/// A collection being read, with the anchor id it carries (0 for none).
enum Frame {
    Sequence(Vec<Node>, Pos, usize),
    /// The pairs so far, the mapping's position, a key waiting for its value, and, once the
    /// mapping is large, the keys seen (lower-cased: GitHub compares keys case-insensitively).
    Mapping(
        Vec<(Node, Node)>,
        Pos,
        Option<Node>,
        Option<HashSet<String>>,
        usize,
    ),
}

/// An anchored node with its size and depth, so that each alias can be bounded before it is
/// copied: a few nested aliases can otherwise expand to billions of nodes.
struct Anchored {
    node: Node,
    nodes: usize,
    depth: usize,
}

impl Anchored {
    fn new(node: &Node) -> Anchored {
        let (nodes, depth) = measure(node);
        Anchored {
            node: node.clone(),
            nodes,
            depth,
        }
    }
}

/// Node count and depth (a scalar is depth 0) of a tree.
fn measure(node: &Node) -> (usize, usize) {
    match &node.kind {
        NodeKind::Scalar { .. } => (1, 0),
        NodeKind::Sequence(items) => items.iter().fold((1, 1), |(n, d), item| {
            let (in_n, in_d) = measure(item);
            (n.saturating_add(in_n), d.max(in_d + 1))
        }),
        NodeKind::Mapping(pairs) => pairs.iter().fold((1, 1), |(n, d), (k, v)| {
            let (kn, kd) = measure(k);
            let (vn, vd) = measure(v);
            (
                n.saturating_add(kn).saturating_add(vn),
                d.max(kd + 1).max(vd + 1),
            )
        }),
    }
}

const CORE: &str = "tag:yaml.org,2002:";

/// Reads the first document of `source`.
pub fn parse(source: &str, limits: Limits) -> Document {
    let mut document = parse_once(source, limits);
    // Two spellings GitHub's YAML reader accepts and `saphyr-parser` rejects are read by
    // patching the text with spaces and reading again: `]#` or `}#` as the start of a
    // comment, and a flow collection closed on a line indented less than the parser wants
    // (`matrix: [` ... `]` with the `]` under the key, common in real workflows). Inserting
    // a space changes no value, and only the patched token's column moves.
    let mut patched = source.to_string();
    for _ in 0..MAX_TEXT_FIXES {
        let Some(at) =
            glued_comment(&document, &patched).or_else(|| dedented_flow_end(&document, &patched))
        else {
            break;
        };
        patched.insert(at, ' ');
        let retry = parse_once(&patched, limits);
        if retry.root.is_none() && retry.errors == document.errors {
            break;
        }
        document = retry;
    }
    document
}

const MAX_TEXT_FIXES: usize = 32;
const GLUED_COMMENT: &str =
    "YAML syntax error: comments must be separated from other tokens by whitespace";
const INVALID_INDENTATION: &str = "YAML syntax error: invalid indentation";

/// The first error's line: its text and the byte offset where it starts.
fn error_line<'s>(
    document: &Document,
    source: &'s str,
    message: &str,
) -> Option<(&'s str, usize, Pos)> {
    let error = document.errors.first().filter(|e| e.message == message)?;
    let pos = error.pos?;
    let index = usize::try_from(pos.line).ok()?.checked_sub(1)?;
    let line = source.split('\n').nth(index)?;
    let line_start = source
        .split('\n')
        .take(index)
        .map(|l| l.len() + 1)
        .sum::<usize>();
    Some((line, line_start, pos))
}

/// The byte offset of a `#` glued to a flow indicator that made reading fail, if that is why.
fn glued_comment(document: &Document, source: &str) -> Option<usize> {
    let (line, line_start, _) = error_line(document, source, GLUED_COMMENT)?;
    let hash = line
        .char_indices()
        .find(|(i, c)| *c == '#' && *i > 0 && matches!(line.as_bytes()[i - 1], b']' | b'}'))?;
    Some(line_start + hash.0)
}

/// The byte offset of a `]` or `}` that starts its line and was rejected as under-indented.
fn dedented_flow_end(document: &Document, source: &str) -> Option<usize> {
    let (line, line_start, _) = error_line(document, source, INVALID_INDENTATION)?;
    let indent = line.len() - line.trim_start_matches(' ').len();
    matches!(line.as_bytes().get(indent), Some(b']' | b'}')).then_some(line_start + indent)
}

fn parse_once(source: &str, limits: Limits) -> Document {
    let total_chars = source.chars().count();
    let mut errors = Vec::new();
    if source.chars().count() > limits.max_file_size {
        errors.push(YamlError {
            message: format!(
                "The maximum file size of {} characters has been exceeded",
                limits.max_file_size
            ),
            pos: None,
        });
        return Document { root: None, errors };
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut root = None;
    let mut anchors: HashMap<usize, Anchored> = HashMap::new();
    // Nodes added by aliases so far; bounded by the file size limit, so that an alias-heavy
    // file never yields a bigger tree than the largest file GitHub would read.
    let mut aliased_nodes = 0usize;
    for event in Parser::new_from_str(source) {
        let (event, span) = match event {
            Ok(pair) => pair,
            Err(e) => {
                let marker = e.marker();
                let pos = Pos {
                    line: u32::try_from(marker.line()).unwrap_or(u32::MAX),
                    col: u32::try_from(marker.col().saturating_add(1)).unwrap_or(u32::MAX),
                };
                errors.push(YamlError {
                    message: format!("YAML syntax error: {}", e.info()),
                    pos: Some(pos),
                });
                return Document { root: None, errors };
            }
        };
        let pos = pos_of(&span);
        let node = match event {
            Event::StreamStart | Event::DocumentStart(_) | Event::Nothing => continue,
            // Only the first document counts, as for GitHub.
            Event::DocumentEnd | Event::StreamEnd => break,
            Event::Alias(id) => {
                let Some(anchored) = anchors.get(&id) else {
                    errors.push(YamlError {
                        message: "YAML syntax error: an alias names no anchor defined before it"
                            .into(),
                        pos: Some(pos),
                    });
                    return Document { root: None, errors };
                };
                if stack.len() + anchored.depth >= limits.max_depth {
                    errors.push(YamlError {
                        message: "Maximum object depth exceeded".into(),
                        pos: None,
                    });
                    return Document { root: None, errors };
                }
                aliased_nodes = aliased_nodes.saturating_add(anchored.nodes);
                if aliased_nodes > limits.max_file_size {
                    errors.push(YamlError {
                        message: format!(
                            "YAML aliases expand to more than {} nodes; repeat less through aliases",
                            limits.max_file_size
                        ),
                        pos: Some(pos),
                    });
                    return Document { root: None, errors };
                }
                anchored.node.clone()
            }
            Event::Scalar(mut value, style, anchor, tag) => {
                let block = matches!(style, ScalarStyle::Literal | ScalarStyle::Folded);
                // A block scalar that runs to the end of a file without a final newline has
                // no line break to keep; the parser adds one anyway, GitHub does not.
                if block
                    && !source.ends_with('\n')
                    && value.ends_with('\n')
                    && span.end.index() >= total_chars
                {
                    value.to_mut().pop();
                }
                let pos = if block {
                    block_indicator(source, pos).unwrap_or(pos)
                } else {
                    pos
                };
                let node = scalar_node(value, style, tag.as_deref(), pos, &mut errors);
                if anchor != 0 {
                    anchors.insert(anchor, Anchored::new(&node));
                }
                node
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                if let Some(tag) = tag.as_deref() {
                    let name = tag_name(tag);
                    if name != format!("{CORE}seq") && name != format!("{CORE}map") {
                        errors.push(YamlError {
                            message: format!("Unexpected tag '{name}'"),
                            pos: None,
                        });
                    }
                }
                if stack.len() >= limits.max_depth {
                    errors.push(YamlError {
                        message: "Maximum object depth exceeded".into(),
                        pos: None,
                    });
                    return Document { root: None, errors };
                }
                let is_seq = matches!(event, Event::SequenceStart(..));
                stack.push(if is_seq {
                    Frame::Sequence(Vec::new(), pos, anchor)
                } else {
                    Frame::Mapping(Vec::new(), pos, None, None, anchor)
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match stack.pop() {
                    Some(Frame::Sequence(items, start, anchor)) => (
                        Node {
                            kind: NodeKind::Sequence(items),
                            pos: start,
                        },
                        anchor,
                    ),
                    Some(Frame::Mapping(pairs, start, _, _, anchor)) => (
                        Node {
                            kind: NodeKind::Mapping(pairs),
                            pos: start,
                        },
                        anchor,
                    ),
                    None => break,
                };
                if anchor != 0 {
                    anchors.insert(anchor, Anchored::new(&node));
                }
                node
            }
        };
        match stack.last_mut() {
            None => {
                root = Some(node);
            }
            Some(Frame::Sequence(items, _, _)) => items.push(node),
            Some(Frame::Mapping(pairs, _, pending, seen, _)) => match pending.take() {
                None => {
                    if !matches!(node.kind, NodeKind::Scalar { .. }) {
                        errors.push(YamlError {
                            message: "A mapping key must be a scalar".into(),
                            pos: Some(node.pos),
                        });
                    }
                    *pending = Some(node);
                }
                Some(key) => {
                    let name = key.as_str().unwrap_or_default();
                    if is_duplicate_key(pairs, seen, name) {
                        errors.push(YamlError {
                            message: format!("'{name}' is already defined"),
                            pos: Some(key.pos),
                        });
                    } else {
                        pairs.push((key, node));
                    }
                }
            },
        }
    }
    Document { root, errors }
}

/// Small mappings are searched directly; large ones get an index so that a mapping with
/// many keys stays linear.
fn is_duplicate_key(
    pairs: &[(Node, Node)],
    index: &mut Option<HashSet<String>>,
    name: &str,
) -> bool {
    const INDEX_FROM: usize = 16;
    if index.is_none() && pairs.len() >= INDEX_FROM {
        *index = Some(
            pairs
                .iter()
                .filter_map(|(k, _)| k.as_str())
                .map(str::to_ascii_lowercase)
                .collect(),
        );
    }
    match index {
        Some(seen) => !seen.insert(name.to_ascii_lowercase()),
        None => pairs
            .iter()
            .any(|(k, _)| k.as_str().is_some_and(|s| s.eq_ignore_ascii_case(name))),
    }
}

/// GitHub places a block scalar at its `|` or `>` indicator, while the parser reports where its
/// content starts: the indicator ends the last non-blank line above the content.
fn block_indicator(source: &str, content: Pos) -> Option<Pos> {
    let content_line = usize::try_from(content.line).ok()?;
    let lines: Vec<&str> = source.lines().take(content_line).collect();
    let (index, line) = lines
        .iter()
        .enumerate()
        .take(content_line.saturating_sub(1))
        .rev()
        .find(|(_, l)| !l.trim().is_empty())?;
    let without_comment = match line.find(" #") {
        Some(at) => &line[..at],
        None => line,
    };
    let indicator = without_comment
        .trim_end()
        .trim_end_matches(|c: char| c == '-' || c == '+' || c.is_ascii_digit());
    if !(indicator.ends_with('|') || indicator.ends_with('>')) {
        return None;
    }
    let col = indicator.chars().count();
    Some(Pos {
        line: u32::try_from(index + 1).ok()?,
        col: u32::try_from(col).ok()?,
    })
}

fn tag_name(tag: &Tag) -> String {
    if tag.handle == "!!" {
        format!("{CORE}{}", tag.suffix)
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

fn style_of(style: ScalarStyle) -> Style {
    match style {
        ScalarStyle::Plain => Style::Plain,
        ScalarStyle::SingleQuoted => Style::SingleQuoted,
        ScalarStyle::DoubleQuoted => Style::DoubleQuoted,
        ScalarStyle::Literal => Style::Literal,
        ScalarStyle::Folded => Style::Folded,
    }
}

fn style_name(style: Style) -> &'static str {
    match style {
        Style::Plain => "Plain",
        Style::SingleQuoted => "SingleQuoted",
        Style::DoubleQuoted => "DoubleQuoted",
        Style::Literal => "Literal",
        Style::Folded => "Folded",
    }
}

fn scalar_node(
    value: Cow<'_, str>,
    style: ScalarStyle,
    tag: Option<&Tag>,
    pos: Pos,
    errors: &mut Vec<YamlError>,
) -> Node {
    let style = style_of(style);
    // An empty plain scalar (`key:` with nothing after) sits just after the colon for GitHub.
    let pos = if style == Style::Plain && value.is_empty() {
        Pos {
            col: pos.col.saturating_add(1),
            ..pos
        }
    } else {
        pos
    };
    let resolved = match tag {
        None if style == Style::Plain => resolve_plain(&value),
        None => Resolved::String,
        Some(tag) => resolve_tagged(&value, style, &tag_name(tag), pos, errors),
    };
    Node {
        kind: NodeKind::Scalar {
            value: value.into_owned(),
            style,
            resolved,
        },
        pos,
    }
}

fn resolve_tagged(
    value: &str,
    style: Style,
    name: &str,
    pos: Pos,
    errors: &mut Vec<YamlError>,
) -> Resolved {
    let Some(short) = name.strip_prefix(CORE) else {
        errors.push(YamlError {
            message: format!("Unexpected tag '{name}'"),
            pos: None,
        });
        return Resolved::String;
    };
    if short == "str" {
        return Resolved::String;
    }
    if !matches!(short, "null" | "bool" | "int" | "float") {
        errors.push(YamlError {
            message: format!("Unexpected tag '{name}'"),
            pos: None,
        });
        return Resolved::String;
    }
    if style != Style::Plain {
        errors.push(YamlError {
            message: format!(
                "The scalar style '{}' on line {} and column {} is not valid with the tag '{name}'",
                style_name(style),
                pos.line,
                pos.col
            ),
            pos: None,
        });
        return Resolved::String;
    }
    let resolved = resolve_plain(value);
    let fits = matches!(
        (short, resolved),
        ("null", Resolved::Null) | ("bool", Resolved::Bool(_)) | ("float", Resolved::Number(_))
    ) || (short == "int"
        && matches!(resolved, Resolved::Number(_))
        && parse_int(value).is_some());
    if !fits {
        errors.push(YamlError {
            message: format!(
                "The value '{value}' on line {} and column {} is invalid for the type '{name}'",
                pos.line, pos.col
            ),
            pos: None,
        });
        return Resolved::String;
    }
    resolved
}

/// The core schema resolution of a plain scalar (YAML 1.2 §10.3.2).
pub fn resolve_plain(value: &str) -> Resolved {
    match value {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        _ => {}
    }
    if let Some(n) = parse_int(value) {
        return Resolved::Number(n);
    }
    if let Some(n) = parse_float(value) {
        return Resolved::Number(n);
    }
    Resolved::String
}

fn parse_int(value: &str) -> Option<f64> {
    let digits_to_f64 = |digits: &str, radix: u32| -> Option<f64> {
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        Some(
            digits
                .chars()
                .filter_map(|c| c.to_digit(radix))
                .fold(0.0, |acc, d| acc * f64::from(radix) + f64::from(d)),
        )
    };
    if let Some(hex) = value.strip_prefix("0x") {
        return digits_to_f64(hex, 16);
    }
    if let Some(oct) = value.strip_prefix("0o") {
        return digits_to_f64(oct, 8);
    }
    let (negative, digits) = match value.as_bytes().first() {
        Some(b'-') => (true, &value[1..]),
        Some(b'+') => (false, &value[1..]),
        _ => (false, value),
    };
    let n = digits_to_f64(digits, 10)?;
    // Decimal parsing through the float parser keeps precision for large values.
    let n = digits.parse::<f64>().unwrap_or(n);
    Some(if negative { -n } else { n })
}

fn parse_float(value: &str) -> Option<f64> {
    let (negative, body) = match value.as_bytes().first() {
        Some(b'-') => (true, &value[1..]),
        Some(b'+') => (false, &value[1..]),
        _ => (false, value),
    };
    if matches!(body, ".inf" | ".Inf" | ".INF") {
        return Some(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if matches!(value, ".nan" | ".NaN" | ".NAN") {
        return Some(f64::NAN);
    }
    // [0-9]*(\.[0-9]*)?([eE][-+]?[0-9]+)? with at least one digit before the exponent
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((a, b)) => (a, b),
        None => (mantissa, ""),
    };
    let all_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if int_part.is_empty() && frac_part.is_empty()
        || !all_digits(int_part)
        || !all_digits(frac_part)
    {
        return None;
    }
    if let Some(exp) = exponent {
        let exp_digits = exp.strip_prefix(['-', '+']).unwrap_or(exp);
        if exp_digits.is_empty() || !all_digits(exp_digits) {
            return None;
        }
    }
    body.parse::<f64>()
        .ok()
        .map(|n| if negative { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_schema() {
        assert_eq!(resolve_plain("yes"), Resolved::String);
        assert_eq!(resolve_plain("on"), Resolved::String);
        assert_eq!(resolve_plain("0x1F"), Resolved::Number(31.0));
        assert_eq!(resolve_plain("0o17"), Resolved::Number(15.0));
        assert_eq!(resolve_plain("-.inf"), Resolved::Number(f64::NEG_INFINITY));
        assert_eq!(resolve_plain("1e3"), Resolved::Number(1000.0));
        assert_eq!(resolve_plain("~"), Resolved::Null);
        assert_eq!(resolve_plain("2001-12-14"), Resolved::String);
        assert_eq!(resolve_plain("1.2.3"), Resolved::String);
    }

    #[test]
    fn block_scalar_at_end_of_file() {
        let root = |text: &str| parse(text, Limits::default()).root.expect("root");
        let value = |node: Node| node.get("run").and_then(|n| n.as_str().map(str::to_string));
        assert_eq!(value(root("run: |\n  a\n  b")).as_deref(), Some("a\nb"));
        assert_eq!(value(root("run: |\n  a\n  b\n")).as_deref(), Some("a\nb\n"));
        assert_eq!(value(root("run: |\n  a\nx: 1")).as_deref(), Some("a\n"));
    }

    #[test]
    fn positions_and_duplicates() {
        let doc = parse("a: 1\nb:\n  c: x\na: 2\n", Limits::default());
        assert_eq!(doc.errors.len(), 1);
        assert_eq!(doc.errors[0].message, "'a' is already defined");
        assert_eq!(doc.errors[0].pos, Some(Pos { line: 4, col: 1 }));
        let root = doc.root.expect("root");
        assert_eq!(
            root.get("b").and_then(|b| b.get("c")).map(|c| c.pos),
            Some(Pos { line: 3, col: 6 })
        );
    }
}
