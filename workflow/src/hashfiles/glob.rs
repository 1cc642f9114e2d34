//! The path-segment matcher of minimatch 3.x, configured as `@actions/glob` configures it:
//! `{dot: true, nobrace: true, nocase: false, nocomment: true, noext: true, nonegate: true}`.
//!
//! minimatch turns each magic segment into a JavaScript regular expression. Rather than
//! embed a regex engine, the translation produces the same small token language (literal
//! UTF-16 units, `?`, `*`, bracket classes and the `(?=.)` look-ahead minimatch prepends) and
//! runs it as an NFA. Everything works on UTF-16 code units because that is what a non-unicode
//! JavaScript regex sees: `?` matches half of an astral character, and class ranges compare
//! code units. Case-insensitive matching (Windows) is out of scope: kiln runs on Linux and macOS.
//!
//! The `patternStart` guard minimatch adds against `.` and `..` segments is left out: the paths
//! hashFiles() tests come from `readdir` and validated patterns and never contain such segments.

/// One `/`-separated piece of a minimatch pattern.
#[derive(Debug, Clone)]
pub(crate) enum Segment {
    /// `**` on its own: any number of path segments.
    Globstar,
    /// No magic: compared with `===` against the path segment.
    Literal(String),
    /// A magic segment, as the token program of minimatch's regular expression.
    Glob(Vec<Token>),
    /// A segment whose regular expression JavaScript rejects: minimatch replaces it with
    /// `/$./`, which matches nothing.
    Never,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Token {
    Unit(u16),
    /// `?`, i.e. `[^/]`.
    AnyUnit,
    /// `*`, i.e. `[^/]*?`.
    Star,
    Class(Class),
    /// `(?=.)`: some unit follows and it is not a JavaScript line terminator.
    NonEmptyAhead,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Class {
    negated: bool,
    ranges: Vec<(u16, u16)>,
}

impl Class {
    fn contains(&self, unit: u16) -> bool {
        let inside = self
            .ranges
            .iter()
            .any(|&(low, high)| low <= unit && unit <= high);
        inside != self.negated
    }
}

/// A bracket-expression member as minimatch emits it into the regex source: escaped units
/// (`\^`) are plain characters, raw ones keep their regex meaning (`^` first negates, `-`
/// between two members makes a range).
#[derive(Debug, Clone, Copy, PartialEq)]
enum ClassUnit {
    Raw(u16),
    Escaped(u16),
}

impl ClassUnit {
    fn unit(self) -> u16 {
        match self {
            ClassUnit::Raw(u) | ClassUnit::Escaped(u) => u,
        }
    }
}

/// minimatch re-parses the contents of an unclosed or invalid `[` class; each re-parse can
/// hit another. JavaScript recurses without limit (and in quadratic time); past this depth
/// we refuse the pattern instead.
const MAX_CLASS_REPARSE_DEPTH: usize = 32;

#[derive(Debug, PartialEq)]
pub(crate) struct TooManyUnclosedClasses;

const fn unit(c: char) -> u16 {
    c as u16
}

/// minimatch's `reSpecials`: characters it backslash-escapes when copying them to the regex.
fn is_regex_special(u: u16) -> bool {
    matches!(
        char::from_u32(u32::from(u)),
        Some('(' | ')' | '.' | '*' | '{' | '}' | '+' | '?' | '[' | ']' | '^' | '$' | '\\' | '!')
    )
}

fn is_line_terminator(u: u16) -> bool {
    matches!(u, 0x0a | 0x0d | 0x2028 | 0x2029)
}

/// Compiles one segment of a pattern already split on `/`.
pub(crate) fn compile_segment(segment: &str) -> Result<Segment, TooManyUnclosedClasses> {
    if segment == "**" {
        return Ok(Segment::Globstar);
    }
    if segment.is_empty() {
        return Ok(Segment::Literal(String::new()));
    }
    let units: Vec<u16> = segment.encode_utf16().collect();
    let parsed = parse(&units, 0)?;
    if !parsed.has_magic {
        return Ok(Segment::Literal(glob_unescape(segment)));
    }
    if parsed.invalid_regex {
        return Ok(Segment::Never);
    }
    Ok(Segment::Glob(parsed.tokens))
}

struct Parsed {
    tokens: Vec<Token>,
    has_magic: bool,
    invalid_regex: bool,
}

/// minimatch's `parse`, for a whole segment or (at `depth > 0`) for the re-parsed tail of a
/// class that turned out not to be one. With `noext` every `?*+@!` state character is
/// flushed at once, so no state character ever survives past its own iteration.
fn parse(pattern: &[u16], depth: usize) -> Result<Parsed, TooManyUnclosedClasses> {
    if depth > MAX_CLASS_REPARSE_DEPTH {
        return Err(TooManyUnclosedClasses);
    }
    let mut tokens = Vec::new();
    let mut has_magic = false;
    let mut invalid_regex = false;
    let mut escaping = false;
    let mut in_class = false;
    let mut class_start = 0usize;
    let mut class_units: Vec<ClassUnit> = Vec::new();

    for (i, &c) in pattern.iter().enumerate() {
        // The one character this iteration copies into the regex (or the class), if any.
        let emitted = if escaping && is_regex_special(c) {
            escaping = false;
            Some(ClassUnit::Escaped(c))
        } else {
            match char::from_u32(u32::from(c)) {
                Some('\\') => {
                    escaping = true;
                    None
                }
                // Quirk kept on purpose: this branch leaves `escaping` set, so in `\@*` the
                // `*` is still escaped.
                Some(sc @ ('?' | '*' | '+' | '@' | '!')) if !in_class => {
                    match sc {
                        '*' => tokens.push(Token::Star),
                        '?' => tokens.push(Token::AnyUnit),
                        _ => tokens.push(Token::Unit(c)),
                    }
                    has_magic |= matches!(sc, '*' | '?');
                    None
                }
                Some('!') if i == class_start + 1 => Some(ClassUnit::Raw(unit('^'))),
                Some('?' | '*' | '+' | '@' | '!' | '(') => Some(ClassUnit::Raw(c)),
                Some(')') => Some(ClassUnit::Escaped(c)),
                Some('|') => {
                    escaping = false;
                    Some(ClassUnit::Escaped(c))
                }
                // A `]` outside a class, or first in one, is a plain character.
                Some(']') if !in_class || i == class_start + 1 => Some(ClassUnit::Escaped(c)),
                Some('[') if !in_class => {
                    in_class = true;
                    class_start = i;
                    class_units.clear();
                    None
                }
                Some('[') => Some(ClassUnit::Escaped(c)),
                Some(']') => {
                    in_class = false;
                    let source = &pattern[class_start + 1..i];
                    if is_valid_js_class(source) {
                        has_magic = true;
                        match build_class(&class_units) {
                            Some(class) => tokens.push(Token::Class(class)),
                            None => invalid_regex = true,
                        }
                    } else {
                        // Not a class after all: a literal `[`, the contents as a glob, a `]`.
                        let inner = parse(source, depth + 1)?;
                        tokens.push(Token::Unit(unit('[')));
                        tokens.extend(inner.tokens);
                        tokens.push(Token::Unit(unit(']')));
                        has_magic |= inner.has_magic;
                        invalid_regex |= inner.invalid_regex;
                    }
                    None
                }
                _ => {
                    let plain = escaping || !is_regex_special(c) || c == unit('^');
                    escaping = false;
                    Some(if plain {
                        ClassUnit::Raw(c)
                    } else {
                        ClassUnit::Escaped(c)
                    })
                }
            }
        };
        match emitted {
            Some(member) if in_class => class_units.push(member),
            Some(member) => tokens.push(Token::Unit(member.unit())),
            None => {}
        }
    }

    if in_class {
        // An unclosed `[` is literal and whatever followed it is parsed again as a glob.
        let inner = parse(&pattern[class_start + 1..], depth + 1)?;
        tokens.push(Token::Unit(unit('[')));
        tokens.extend(inner.tokens);
        has_magic |= inner.has_magic;
        invalid_regex |= inner.invalid_regex;
    }
    if escaping {
        tokens.push(Token::Unit(unit('\\')));
    }
    if !tokens.is_empty() && has_magic {
        tokens.insert(0, Token::NonEmptyAhead);
    }
    Ok(Parsed {
        tokens,
        has_magic,
        invalid_regex,
    })
}

/// The bracket expression minimatch emits, as JavaScript reads it; `None` when JavaScript
/// rejects it (a range whose ends are out of order).
fn build_class(members: &[ClassUnit]) -> Option<Class> {
    let (negated, rest) = match members.split_first() {
        Some((ClassUnit::Raw(first), rest)) if *first == unit('^') => (true, rest),
        _ => (false, members),
    };
    let mut ranges = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        let low = rest[i].unit();
        if i + 2 < rest.len() && rest[i + 1] == ClassUnit::Raw(unit('-')) {
            let high = rest[i + 2].unit();
            if low > high {
                return None;
            }
            ranges.push((low, high));
            i += 3;
        } else {
            ranges.push((low, low));
            i += 1;
        }
    }
    Some(Class { negated, ranges })
}

/// minimatch checks a would-be class by compiling `'[' + source + ']'` where `source` is the
/// raw pattern text (not what it emits): this mirrors the only ways that can throw in a
/// non-unicode JavaScript regex, a trailing backslash and an out-of-order range.
fn is_valid_js_class(source: &[u16]) -> bool {
    enum Atom {
        Unit(u16),
        Set,
    }
    fn atom(source: &[u16], at: usize) -> Option<(Atom, usize)> {
        let first = source[at];
        if first != unit('\\') {
            return Some((Atom::Unit(first), at + 1));
        }
        let escaped = *source.get(at + 1)?;
        let hex = |len: usize| -> Option<u16> {
            let digits = source.get(at + 2..at + 2 + len)?;
            let text = String::from_utf16(digits).ok()?;
            if !text.chars().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            u16::from_str_radix(&text, 16).ok()
        };
        let decoded = match char::from_u32(u32::from(escaped)) {
            Some('d' | 'D' | 's' | 'S' | 'w' | 'W') => return Some((Atom::Set, at + 2)),
            Some('b') => 0x08,
            Some('t') => 0x09,
            Some('n') => 0x0a,
            Some('v') => 0x0b,
            Some('f') => 0x0c,
            Some('r') => 0x0d,
            Some('x') => match hex(2) {
                Some(value) => return Some((Atom::Unit(value), at + 4)),
                None => escaped,
            },
            Some('u') => match hex(4) {
                Some(value) => return Some((Atom::Unit(value), at + 6)),
                None => escaped,
            },
            Some('c') => match source
                .get(at + 2)
                .and_then(|&u| char::from_u32(u32::from(u)))
            {
                Some(letter) if letter.is_ascii_alphanumeric() || letter == '_' => {
                    return Some((Atom::Unit((letter as u16) % 32), at + 3));
                }
                // Annex B: a lone `\c` is a backslash followed by a `c`.
                _ => return Some((Atom::Unit(unit('\\')), at + 1)),
            },
            Some(d @ '0'..='7') => {
                // Legacy octal escape: up to three digits, at most \377.
                let mut value = u32::from(d) - u32::from('0');
                let mut end = at + 2;
                while end < source.len() && end < at + 4 {
                    match char::from_u32(u32::from(source[end])) {
                        Some(o @ '0'..='7')
                            if value * 8 + (u32::from(o) - u32::from('0')) <= 0o377 =>
                        {
                            value = value * 8 + (u32::from(o) - u32::from('0'));
                            end += 1;
                        }
                        _ => break,
                    }
                }
                return Some((Atom::Unit(value as u16), end));
            }
            _ => escaped,
        };
        Some((Atom::Unit(decoded), at + 2))
    }

    let mut i = usize::from(source.first() == Some(&unit('^')));
    while i < source.len() {
        let Some((low, next)) = atom(source, i) else {
            return false;
        };
        if next + 1 < source.len() && source[next] == unit('-') {
            let Some((high, after)) = atom(source, next + 1) else {
                return false;
            };
            if let (Atom::Unit(low), Atom::Unit(high)) = (&low, &high) {
                if low > high {
                    return false;
                }
            }
            i = after;
        } else {
            i = next;
        }
    }
    true
}

/// minimatch's `globUnescape`: `s.replace(/\\(.)/g, '$1')`, where `.` excludes line terminators.
fn glob_unescape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    let mut chars = segment.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&next) = chars.peek() {
                if u16::try_from(u32::from(next)).map_or(true, |u| !is_line_terminator(u)) {
                    out.push(next);
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

/// Runs a glob segment's token program against one path segment (as UTF-16 units), as a
/// set-of-states NFA: linear in the name, whatever the number of stars.
fn tokens_match(
    tokens: &[Token],
    name: &[u16],
    states: &mut Vec<bool>,
    next: &mut Vec<bool>,
) -> bool {
    let count = tokens.len();
    states.clear();
    states.resize(count + 1, false);
    states[0] = true;
    follow_empty_moves(tokens, name, 0, states);
    for (pos, &u) in name.iter().enumerate() {
        next.clear();
        next.resize(count + 1, false);
        let mut any = false;
        for (i, token) in tokens.iter().enumerate() {
            if !states[i] {
                continue;
            }
            let (stay, advance) = match token {
                Token::Unit(expected) => (false, *expected == u),
                Token::AnyUnit => (false, true),
                Token::Class(class) => (false, class.contains(u)),
                Token::Star => (true, false),
                Token::NonEmptyAhead => (false, false),
            };
            if stay {
                next[i] = true;
                any = true;
            }
            if advance {
                next[i + 1] = true;
                any = true;
            }
        }
        if !any {
            return false;
        }
        std::mem::swap(states, next);
        follow_empty_moves(tokens, name, pos + 1, states);
    }
    states[count]
}

/// Zero-width moves: a star matching nothing, a satisfied look-ahead. They only go forward,
/// so one ascending pass reaches the closure.
fn follow_empty_moves(tokens: &[Token], name: &[u16], pos: usize, states: &mut [bool]) {
    for (i, token) in tokens.iter().enumerate() {
        if !states[i] {
            continue;
        }
        let passes = match token {
            Token::Star => true,
            Token::NonEmptyAhead => name.get(pos).is_some_and(|&u| !is_line_terminator(u)),
            _ => false,
        };
        if passes {
            states[i + 1] = true;
        }
    }
}

/// Buffers reused across matches so the walk does not allocate per path.
#[derive(Default)]
pub(crate) struct Scratch {
    here: Vec<bool>,
    below: Vec<bool>,
    units: Vec<u16>,
    states: Vec<bool>,
    next_states: Vec<bool>,
}

fn segment_hits(segment: &Segment, name: &str, scratch: &mut Scratch) -> bool {
    match segment {
        Segment::Literal(text) => text == name,
        Segment::Glob(tokens) => {
            scratch.units.clear();
            scratch.units.extend(name.encode_utf16());
            tokens_match(
                tokens,
                &scratch.units,
                &mut scratch.states,
                &mut scratch.next_states,
            )
        }
        Segment::Never => false,
        Segment::Globstar => true,
    }
}

/// minimatch's `matchOne(file, pattern, partial)`, evaluated bottom-up over (file index,
/// pattern index) instead of by recursion, so several `**` cost O(files x patterns) rather
/// than exponential time. Cell (f, p) is `matchOne(file[f..], pattern[p..])`:
/// - `**` last swallows any non-empty rest; elsewhere it tries every split point that
///   leaves at least one file segment, and in partial mode succeeds anyway once it runs out;
/// - file exhausted first: only a partial match; pattern exhausted first: only when a
///   single empty segment (a trailing slash) is left.
pub(crate) fn match_one(
    file: &[&str],
    pattern: &[Segment],
    partial: bool,
    scratch: &mut Scratch,
) -> bool {
    let file_len = file.len();
    let mut below = std::mem::take(&mut scratch.below);
    let mut here = std::mem::take(&mut scratch.here);
    below.clear();
    below.resize(file_len + 1, false);
    // Column p = pattern.len(): the pattern is used up.
    for (f, cell) in below.iter_mut().enumerate() {
        *cell = f == file_len || (f + 1 == file_len && file[f].is_empty());
    }
    for p in (0..pattern.len()).rev() {
        here.clear();
        here.resize(file_len + 1, false);
        here[file_len] = partial;
        let is_last = p + 1 == pattern.len();
        match &pattern[p] {
            Segment::Globstar if is_last => here[..file_len].fill(true),
            Segment::Globstar => {
                let mut any_split = false;
                for f in (0..file_len).rev() {
                    any_split |= below[f];
                    here[f] = any_split || partial;
                }
            }
            segment => {
                for f in 0..file_len {
                    here[f] = below[f + 1] && segment_hits(segment, file[f], scratch);
                }
            }
        }
        std::mem::swap(&mut below, &mut here);
    }
    let result = below[0];
    scratch.below = below;
    scratch.here = here;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(segment: &str, name: &str) -> bool {
        let compiled = compile_segment(segment).expect("compiles");
        segment_hits(&compiled, name, &mut Scratch::default())
    }

    #[test]
    fn wildcards_and_classes() {
        assert!(hits("*.txt", ".hid.txt"));
        assert!(!hits("*", ""));
        assert!(hits("a?.txt", "a9.txt"));
        assert!(!hits("a?.txt", "a10.txt"));
        assert!(hits("[!a]b", "xb"));
        assert!(!hits("[!a]b", "ab"));
        assert!(hits("[^a]b", "xb"));
        assert!(hits("[a-c]", "b"));
        assert!(hits("[]a]", "]"));
        assert!(hits("x[-]y", "x-y"));
    }

    #[test]
    fn literal_fallbacks() {
        // Braces and extglob characters are plain text with nobrace/noext.
        assert!(
            matches!(compile_segment("{a,b}.txt"), Ok(Segment::Literal(s)) if s == "{a,b}.txt")
        );
        assert!(matches!(compile_segment("+(a)"), Ok(Segment::Literal(s)) if s == "+(a)"));
        // An unclosed class and an out-of-order range are literal text.
        assert!(matches!(compile_segment("[ab"), Ok(Segment::Literal(s)) if s == "[ab"));
        assert!(matches!(compile_segment("[z-a]"), Ok(Segment::Literal(s)) if s == "[z-a]"));
        assert!(matches!(compile_segment(r"a\*b"), Ok(Segment::Literal(s)) if s == "a*b"));
        // `[*` re-parses `*` after the `[`, with its own look-ahead: "[" alone does not match.
        assert!(hits("[*", "[x"));
        assert!(!hits("[*", "["));
        // `\@` leaves the escape pending, so the following `*` is literal.
        assert!(matches!(compile_segment(r"\@*"), Ok(Segment::Literal(s)) if s == "@*"));
    }

    #[test]
    fn class_valid_in_source_but_not_as_emitted_matches_nothing() {
        // Source `[\d-a]` is valid JavaScript, but minimatch emits `[d-a]`, which is not.
        assert!(matches!(compile_segment(r"x[\d-a]"), Ok(Segment::Never)));
    }

    #[test]
    fn runaway_unclosed_classes_are_refused() {
        let segment = "[".repeat(100) + "*";
        assert_eq!(
            compile_segment(&segment).err(),
            Some(TooManyUnclosedClasses)
        );
    }

    #[test]
    fn match_one_globstar_rules() {
        let pattern: Vec<Segment> = ["", "ws", "**"]
            .iter()
            .map(|s| compile_segment(s).expect("compiles"))
            .collect();
        let mut scratch = Scratch::default();
        assert!(!match_one(&["", "ws"], &pattern, false, &mut scratch));
        assert!(match_one(&["", "ws", ""], &pattern, false, &mut scratch));
        assert!(match_one(
            &["", "ws", "a", "b"],
            &pattern,
            false,
            &mut scratch
        ));
        let inner: Vec<Segment> = ["", "ws", "**", "x.json"]
            .iter()
            .map(|s| compile_segment(s).expect("compiles"))
            .collect();
        assert!(match_one(
            &["", "ws", "x.json"],
            &inner,
            false,
            &mut scratch
        ));
        assert!(match_one(
            &["", "ws", "a", "b", "x.json"],
            &inner,
            false,
            &mut scratch
        ));
        assert!(!match_one(&["", "ws", "a"], &inner, false, &mut scratch));
        assert!(match_one(&["", "ws", "a"], &inner, true, &mut scratch));
        assert!(!match_one(&["", "other"], &inner, true, &mut scratch));
    }
}
