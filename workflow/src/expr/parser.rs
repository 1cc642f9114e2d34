//! Recursive-descent parser with GitHub's precedence (`!` > comparisons > `==`/`!=` > `&&` >
//! `||`) and its depth rule. Every way the parser can recurse (grouping, call arguments,
//! index expressions, `!`, accessor and comparison chains) counts towards the depth limit
//! before it recurses, so the parser stack, the AST height and therefore the evaluator's
//! recursion are all bounded by [`MAX_DEPTH`] whatever the input.

use super::lexer::{tokenize, Token, TokenKind};
use super::{
    Allowed, ErrorKind, ExprError, BUILTIN_FUNCTIONS, MAX_DEPTH, MAX_LENGTH, STATUS_FUNCTIONS,
};
use crate::value::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompareOp {
    Equal,
    NotEqual,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    Contains,
    StartsWith,
    EndsWith,
    Format,
    Join,
    ToJson,
    FromJson,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Function {
    /// Functions that take their arguments evaluated.
    Builtin(Builtin),
    /// `case` evaluates its arguments lazily, so it is not an ordinary built-in.
    Case,
    /// Status functions, hashFiles and other context-provided functions, lower-cased.
    Extension(Box<str>),
}

#[derive(Debug, Clone)]
pub(crate) enum IndexKey {
    /// `.name` or a literal in brackets: no evaluation needed.
    Constant(Value),
    Dynamic(Box<Node>),
    /// `.*` or `[*]`.
    Star,
}

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Literal(Value),
    Named(Box<str>),
    Index {
        target: Box<Node>,
        key: IndexKey,
    },
    Not(Box<Node>),
    Compare {
        op: CompareOp,
        left: Box<Node>,
        right: Box<Node>,
    },
    And(Vec<Node>),
    Or(Vec<Node>),
    Call {
        function: Function,
        args: Vec<Node>,
        offset: usize,
    },
}

impl Node {
    /// True if the named value (context) `name` is read anywhere in the expression.
    pub(crate) fn reads_named_value(&self, name: &str) -> bool {
        match self {
            Node::Literal(_) => false,
            Node::Named(named) => named.eq_ignore_ascii_case(name),
            Node::Index { target, key } => {
                target.reads_named_value(name)
                    || matches!(key, IndexKey::Dynamic(k) if k.reads_named_value(name))
            }
            Node::Not(inner) => inner.reads_named_value(name),
            Node::Compare { left, right, .. } => {
                left.reads_named_value(name) || right.reads_named_value(name)
            }
            Node::And(args) | Node::Or(args) | Node::Call { args, .. } => {
                args.iter().any(|arg| arg.reads_named_value(name))
            }
        }
    }

    pub(crate) fn calls_status_function(&self) -> bool {
        match self {
            Node::Literal(_) | Node::Named(_) => false,
            Node::Index { target, key } => {
                target.calls_status_function()
                    || matches!(key, IndexKey::Dynamic(k) if k.calls_status_function())
            }
            Node::Not(inner) => inner.calls_status_function(),
            Node::Compare { left, right, .. } => {
                left.calls_status_function() || right.calls_status_function()
            }
            Node::And(args) | Node::Or(args) => args.iter().any(Node::calls_status_function),
            Node::Call { function, args, .. } => {
                matches!(function, Function::Extension(name) if STATUS_FUNCTIONS.contains(&&**name))
                    || args.iter().any(Node::calls_status_function)
            }
        }
    }
}

/// The function at position `i` of [`BUILTIN_FUNCTIONS`].
fn builtin_function(i: usize) -> Function {
    match i {
        0 => Function::Builtin(Builtin::Contains),
        1 => Function::Builtin(Builtin::StartsWith),
        2 => Function::Builtin(Builtin::EndsWith),
        3 => Function::Builtin(Builtin::Format),
        4 => Function::Builtin(Builtin::Join),
        5 => Function::Builtin(Builtin::ToJson),
        6 => Function::Builtin(Builtin::FromJson),
        _ => Function::Case,
    }
}

/// `Ok(None)` for an empty (or all-whitespace) expression, which GitHub evaluates to null.
pub(crate) fn parse(source: &str, allowed: &Allowed) -> Result<Option<Node>, ExprError> {
    if source.len() > MAX_LENGTH && source.chars().count() > MAX_LENGTH {
        return Err(ExprError {
            kind: ErrorKind::Parsing,
            message: format!("Exceeded max expression length {MAX_LENGTH}"),
            position: None,
        });
    }
    let tokens = tokenize(source)?;
    if tokens.is_empty() {
        return Ok(None);
    }
    let mut parser = Parser {
        source,
        allowed,
        tokens,
        next: 0,
        depth: 0,
    };
    let root = parser.expression()?;
    if parser.peek().is_some() {
        return Err(parser.unexpected());
    }
    Ok(Some(root))
}

struct Parser<'a> {
    source: &'a str,
    allowed: &'a Allowed,
    tokens: Vec<Token>,
    next: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn check(&self, kind: &TokenKind) -> bool {
        self.peek().is_some_and(|t| &t.kind == kind)
    }

    fn eat(&mut self, kind: &TokenKind) -> bool {
        let found = self.check(kind);
        if found {
            self.next += 1;
        }
        found
    }

    fn expect(&mut self, kind: &TokenKind) -> Result<(), ExprError> {
        if self.eat(kind) {
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn error_at(&self, what: &str, token: &Token) -> ExprError {
        let lexeme = token.lexeme(self.source);
        ExprError::located(
            ErrorKind::Parsing,
            format!("{what}: '{lexeme}'"),
            token.start,
            self.source,
        )
    }

    /// The next token is wrong; at the end of input GitHub names the last token instead.
    fn unexpected(&self) -> ExprError {
        match (self.peek(), self.tokens.last()) {
            (Some(token), _) => self.error_at("Unexpected symbol", token),
            (None, Some(last)) => self.error_at("Unexpected end of expression", last),
            (None, None) => ExprError {
                kind: ErrorKind::Parsing,
                message: "Unexpected end of expression".to_string(),
                position: None,
            },
        }
    }

    fn descend(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth <= MAX_DEPTH {
            return Ok(());
        }
        let at = self.peek().or(self.tokens.last()).map_or(0, |t| t.start);
        Err(ExprError::located(
            ErrorKind::Parsing,
            format!("Exceeded max expression depth {MAX_DEPTH}"),
            at,
            self.source,
        ))
    }

    fn expression(&mut self) -> Result<Node, ExprError> {
        self.descend()?;
        let node = self.or()?;
        self.depth -= 1;
        Ok(node)
    }

    fn or(&mut self) -> Result<Node, ExprError> {
        self.logical_chain(Self::and, TokenKind::Or, Node::Or)
    }

    fn and(&mut self) -> Result<Node, ExprError> {
        self.logical_chain(Self::equality, TokenKind::And, Node::And)
    }

    /// `a && b && c` is one n-ary node, one level deep however long the chain, as on GitHub
    /// (a 60-term `||` is fine; 50 nested ones are not).
    fn logical_chain(
        &mut self,
        operand: fn(&mut Self) -> Result<Node, ExprError>,
        operator: TokenKind,
        build: fn(Vec<Node>) -> Node,
    ) -> Result<Node, ExprError> {
        let first = operand(self)?;
        if !self.check(&operator) {
            return Ok(first);
        }
        self.descend()?;
        let mut args = vec![first];
        while self.eat(&operator) {
            args.push(operand(self)?);
        }
        self.depth -= 1;
        Ok(build(args))
    }

    fn equality(&mut self) -> Result<Node, ExprError> {
        self.binary_chain(Self::comparison, |kind| match kind {
            TokenKind::Equal => Some(CompareOp::Equal),
            TokenKind::NotEqual => Some(CompareOp::NotEqual),
            _ => None,
        })
    }

    fn comparison(&mut self) -> Result<Node, ExprError> {
        self.binary_chain(Self::unary, |kind| match kind {
            TokenKind::Less => Some(CompareOp::Less),
            TokenKind::LessEqual => Some(CompareOp::LessEqual),
            TokenKind::Greater => Some(CompareOp::Greater),
            TokenKind::GreaterEqual => Some(CompareOp::GreaterEqual),
            _ => None,
        })
    }

    /// A left-associative chain `a op b op c`. Each link deepens the tree, so each counts
    /// towards the depth limit (GitHub's TypeScript parser does not count them, which would
    /// let `1 == 1 == 1 ...` build an arbitrarily deep tree).
    fn binary_chain(
        &mut self,
        operand: fn(&mut Self) -> Result<Node, ExprError>,
        operator: fn(&TokenKind) -> Option<CompareOp>,
    ) -> Result<Node, ExprError> {
        let mut left = operand(self)?;
        let mut links = 0;
        while let Some(op) = self.peek().and_then(|t| operator(&t.kind)) {
            self.next += 1;
            self.descend()?;
            links += 1;
            let right = operand(self)?;
            left = Node::Compare {
                op,
                left: Box::new(left),
                right: Box::new(right),
            };
        }
        self.depth -= links;
        Ok(left)
    }

    fn unary(&mut self) -> Result<Node, ExprError> {
        if !self.eat(&TokenKind::Bang) {
            return self.postfix();
        }
        self.descend()?;
        let inner = self.unary()?;
        self.depth -= 1;
        Ok(Node::Not(Box::new(inner)))
    }

    /// Accessors apply only to named values, calls and parenthesised expressions (and to
    /// their results): `'abc'[0]` is a parse error, as on GitHub.
    fn postfix(&mut self) -> Result<Node, ExprError> {
        let (mut node, indexable) = self.call()?;
        if !indexable {
            return Ok(node);
        }
        let mut links = 0;
        loop {
            let key = if self.eat(&TokenKind::LeftBracket) {
                let key = if self.eat(&TokenKind::Star) {
                    IndexKey::Star
                } else {
                    match self.expression()? {
                        Node::Literal(value) => IndexKey::Constant(value),
                        other => IndexKey::Dynamic(Box::new(other)),
                    }
                };
                self.expect(&TokenKind::RightBracket)?;
                self.descend()?;
                key
            } else if self.eat(&TokenKind::Dot) {
                self.descend()?;
                let property = match self.peek() {
                    Some(t) if t.kind == TokenKind::Identifier => {
                        IndexKey::Constant(Value::string(t.lexeme(self.source)))
                    }
                    Some(t) if t.kind == TokenKind::Star => IndexKey::Star,
                    _ => return Err(self.unexpected()),
                };
                self.next += 1;
                property
            } else {
                break;
            };
            links += 1;
            node = Node::Index {
                target: Box::new(node),
                key,
            };
        }
        self.depth -= links;
        Ok(node)
    }

    fn call(&mut self) -> Result<(Node, bool), ExprError> {
        let Some(token) = self
            .peek()
            .filter(|t| t.kind == TokenKind::Identifier)
            .cloned()
        else {
            return self.primary();
        };
        self.next += 1;
        let name = token.lexeme(self.source);
        if !self.eat(&TokenKind::LeftParen) {
            if !self.allowed.has_named_value(name) {
                return Err(self.error_at("Unrecognized named-value", &token));
            }
            return Ok((Node::Named(name.into()), true));
        }
        let mut args = Vec::new();
        while !self.eat(&TokenKind::RightParen) {
            args.push(self.expression()?);
            if !self.check(&TokenKind::RightParen) {
                self.expect(&TokenKind::Comma)?;
            }
        }
        let function = self.resolve_function(&token, args.len())?;
        Ok((
            Node::Call {
                function,
                args,
                offset: token.start,
            },
            true,
        ))
    }

    fn resolve_function(&self, token: &Token, arg_count: usize) -> Result<Function, ExprError> {
        let name = token.lexeme(self.source);
        let (function, min, max) = if let Some(i) = BUILTIN_FUNCTIONS
            .iter()
            .position(|(n, _, _)| n.eq_ignore_ascii_case(name))
        {
            let (_, min, max) = BUILTIN_FUNCTIONS[i];
            (builtin_function(i), min, max)
        } else if let Some(sig) = self.allowed.function(name) {
            (
                Function::Extension(name.to_ascii_lowercase().into()),
                sig.min_args,
                sig.max_args,
            )
        } else {
            return Err(self.error_at("Unrecognized function", token));
        };
        if arg_count < min {
            return Err(self.error_at("Too few parameters supplied", token));
        }
        if arg_count > max {
            return Err(self.error_at("Too many parameters supplied", token));
        }
        if function == Function::Case && arg_count % 2 == 0 {
            return Err(self.error_at(
                "Even number of parameters supplied, requires an odd number of parameters",
                token,
            ));
        }
        Ok(function)
    }

    fn primary(&mut self) -> Result<(Node, bool), ExprError> {
        let Some(token) = self.peek() else {
            return Err(self.unexpected());
        };
        let literal = match &token.kind {
            TokenKind::False => Value::Bool(false),
            TokenKind::True => Value::Bool(true),
            TokenKind::Null => Value::Null,
            TokenKind::Number(n) => Value::Number(*n),
            TokenKind::String(s) => Value::string(s.as_str()),
            TokenKind::LeftParen => {
                self.next += 1;
                let inner = self.expression()?;
                self.expect(&TokenKind::RightParen)?;
                return Ok((inner, true));
            }
            _ => return Err(self.unexpected()),
        };
        self.next += 1;
        Ok((Node::Literal(literal), false))
    }
}
