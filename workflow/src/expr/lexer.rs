//! Tokens of the expression language. The rules mirror GitHub's lexer, including its quirks:
//! a `.` starts a number unless it follows something that can be dereferenced, `-`/`+` always
//! start a number (so `1 -1` is two numbers), and a bad symbol swallows everything up to the
//! next boundary character so the error names the whole offending word.

use super::{ErrorKind, ExprError};
use crate::value::parse_number;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokenKind {
    LeftParen,
    RightParen,
    LeftBracket,
    RightBracket,
    Comma,
    Dot,
    Bang,
    NotEqual,
    Equal,
    Greater,
    GreaterEqual,
    Less,
    LessEqual,
    And,
    Or,
    Star,
    Number(f64),
    String(String),
    Identifier,
    True,
    False,
    Null,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub kind: TokenKind,
    /// Byte range of the lexeme in the source.
    pub start: usize,
    pub end: usize,
}

impl Token {
    pub fn lexeme<'s>(&self, source: &'s str) -> &'s str {
        source.get(self.start..self.end).unwrap_or("")
    }
}

/// Characters that end a number or identifier lexeme.
fn is_boundary(c: char) -> bool {
    matches!(
        c,
        '(' | '[' | ')' | ']' | ',' | '.' | '!' | '>' | '<' | '=' | '&' | '|'
    ) || c.is_whitespace()
}

/// `[A-Za-z_][A-Za-z0-9_-]*`: hyphens are legal so `steps.my-step` works.
pub(crate) fn is_legal_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub(crate) fn tokenize(source: &str) -> Result<Vec<Token>, ExprError> {
    Lexer {
        source,
        pos: 0,
        tokens: Vec::new(),
    }
    .run()
}

struct Lexer<'s> {
    source: &'s str,
    pos: usize,
    tokens: Vec<Token>,
}

impl<'s> Lexer<'s> {
    fn run(mut self) -> Result<Vec<Token>, ExprError> {
        while let Some(c) = self.peek() {
            let start = self.pos;
            self.pos += c.len_utf8();
            match c {
                '(' => self.push(TokenKind::LeftParen, start),
                ')' => self.push(TokenKind::RightParen, start),
                '[' => self.push(TokenKind::LeftBracket, start),
                ']' => self.push(TokenKind::RightBracket, start),
                ',' => self.push(TokenKind::Comma, start),
                '*' => self.push(TokenKind::Star, start),
                '.' => {
                    let derefable = matches!(
                        self.tokens.last().map(|t| &t.kind),
                        Some(
                            TokenKind::Identifier
                                | TokenKind::RightBracket
                                | TokenKind::RightParen
                                | TokenKind::Star
                        )
                    );
                    if derefable {
                        self.push(TokenKind::Dot, start);
                    } else {
                        self.number(start)?;
                    }
                }
                '-' | '+' => self.number(start)?,
                '!' => self.maybe_equals(TokenKind::NotEqual, TokenKind::Bang, start),
                '<' => self.maybe_equals(TokenKind::LessEqual, TokenKind::Less, start),
                '>' => self.maybe_equals(TokenKind::GreaterEqual, TokenKind::Greater, start),
                '=' => self.doubled('=', TokenKind::Equal, start)?,
                '&' => self.doubled('&', TokenKind::And, start)?,
                '|' => self.doubled('|', TokenKind::Or, start)?,
                '\'' => self.string(start)?,
                c if c.is_whitespace() => {}
                c if c.is_ascii_digit() => self.number(start)?,
                _ => self.identifier(start)?,
            }
        }
        Ok(self.tokens)
    }

    fn peek(&self) -> Option<char> {
        self.source[self.pos..].chars().next()
    }

    fn eat(&mut self, expected: char) -> bool {
        if self.peek() == Some(expected) {
            self.pos += expected.len_utf8();
            true
        } else {
            false
        }
    }

    fn push(&mut self, kind: TokenKind, start: usize) {
        self.tokens.push(Token {
            kind,
            start,
            end: self.pos,
        });
    }

    fn error(&self, start: usize, end: usize) -> ExprError {
        let lexeme = &self.source[start..end];
        ExprError::located(
            ErrorKind::Lexing,
            format!("Unexpected symbol: '{lexeme}'"),
            start,
            self.source,
        )
    }

    /// `!=`/`!`, `<=`/`<`, `>=`/`>`.
    fn maybe_equals(&mut self, with_equals: TokenKind, alone: TokenKind, start: usize) {
        let kind = if self.eat('=') { with_equals } else { alone };
        self.push(kind, start);
    }

    /// `==`, `&&`, `||`: a single `=`, `&` or `|` is an error naming the word it starts.
    fn doubled(&mut self, c: char, kind: TokenKind, start: usize) -> Result<(), ExprError> {
        if self.eat(c) {
            self.push(kind, start);
            return Ok(());
        }
        self.skip_word();
        Err(self.error(start, self.pos))
    }

    fn skip_word(&mut self) {
        while let Some(c) = self.peek() {
            if is_boundary(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    fn number(&mut self, start: usize) -> Result<(), ExprError> {
        while let Some(c) = self.peek() {
            if is_boundary(c) && c != '.' {
                break;
            }
            self.pos += c.len_utf8();
        }
        let lexeme = &self.source[start..self.pos];
        let value = parse_number(lexeme);
        // `NaN` is only a keyword; a number-shaped word that parses to NaN is garbage.
        if value.is_nan() {
            return Err(self.error(start, self.pos));
        }
        self.push(TokenKind::Number(value), start);
        Ok(())
    }

    fn string(&mut self, start: usize) -> Result<(), ExprError> {
        let mut value = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error(start, self.source.len())),
                Some('\'') => {
                    self.pos += 1;
                    if self.peek() == Some('\'') {
                        self.pos += 1;
                        value.push('\'');
                    } else {
                        break;
                    }
                }
                Some(c) => {
                    self.pos += c.len_utf8();
                    value.push(c);
                }
            }
        }
        self.push(TokenKind::String(value), start);
        Ok(())
    }

    fn identifier(&mut self, start: usize) -> Result<(), ExprError> {
        self.skip_word();
        let lexeme = &self.source[start..self.pos];
        let after_dot = matches!(self.tokens.last().map(|t| &t.kind), Some(TokenKind::Dot));
        // Keywords are case-sensitive and are plain property names after a dot (`foo.true`).
        let kind = match lexeme {
            _ if after_dot => TokenKind::Identifier,
            "true" => TokenKind::True,
            "false" => TokenKind::False,
            "null" => TokenKind::Null,
            "NaN" => TokenKind::Number(f64::NAN),
            "Infinity" => TokenKind::Number(f64::INFINITY),
            _ => TokenKind::Identifier,
        };
        if !is_legal_identifier(lexeme) {
            return Err(self.error(start, self.pos));
        }
        self.push(kind, start);
        Ok(())
    }
}
