//! `@actions/glob`'s pattern layer (`internal-pattern.ts`, `internal-pattern-helper.ts`,
//! `internal-path-helper.ts`): reading the pattern lines, rooting them at the workspace,
//! implicit descendants, search roots, and how several patterns combine on one path.
//! POSIX only: Windows drive roots, UNC paths and case folding are out of scope.

use super::glob::{self, Scratch, Segment};
use super::HashFilesError;
use std::collections::HashMap;

/// minimatch 3.1 refuses longer patterns ("pattern is too long"), in UTF-16 units.
const MAX_PATTERN_LENGTH: usize = 64 * 1024;

/// What a pattern says about a path; a bit set, as in `@actions/glob`.
pub(crate) type MatchKind = u8;
pub(crate) const MATCH_NONE: MatchKind = 0;
pub(crate) const MATCH_DIRECTORY: MatchKind = 1;
pub(crate) const MATCH_FILE: MatchKind = 2;
const MATCH_ALL: MatchKind = MATCH_DIRECTORY | MATCH_FILE;

#[derive(Debug)]
pub(crate) struct Pattern {
    negate: bool,
    is_implicit: bool,
    /// The pattern ended with `/`: it matches directories only.
    trailing_separator: bool,
    /// `@actions/glob` path segments of the rooted pattern (`/` first, glob escapes kept).
    segments: Vec<String>,
    /// The literal directory before the first glob segment.
    search_path: String,
    /// minimatch's `set[0]`.
    matcher: Vec<Segment>,
}

/// Where relative and `~` patterns are rooted.
pub(crate) struct Roots<'a> {
    /// The workspace as `process.cwd()` reports it (symlinks resolved).
    pub cwd: &'a str,
    /// `$HOME`, looked up only when a pattern starts with `~`.
    pub home: Option<&'a str>,
}

/// `DefaultGlobber.create` plus the implicit-descendant expansion of `globGenerator`: one
/// pattern per non-empty, non-comment line, each followed by `<pattern>/**` unless it
/// already ends in `**` (or it ends with a separator).
pub(crate) fn parse_patterns(
    lines: &str,
    roots: &Roots<'_>,
) -> Result<Vec<Pattern>, HashFilesError> {
    let mut patterns = Vec::new();
    for line in lines.split('\n').map(js_trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let pattern = Pattern::from_line(line, roots)?;
        let implicit = if pattern.trailing_separator
            || pattern.segments.last().map(String::as_str) != Some("**")
        {
            let mut segments = pattern.segments.clone();
            segments.push("**".to_string());
            Some(Pattern::rooted(
                pattern.negate,
                true,
                &join_segments(&segments),
                line,
            )?)
        } else {
            None
        };
        patterns.push(pattern);
        patterns.extend(implicit);
    }
    Ok(patterns)
}

impl Pattern {
    fn from_line(line: &str, roots: &Roots<'_>) -> Result<Pattern, HashFilesError> {
        let mut negate = false;
        let mut rest = js_trim(line);
        while let Some(stripped) = rest.strip_prefix('!') {
            negate = !negate;
            rest = js_trim(stripped);
        }
        let rooted = fixup_pattern(rest, roots).map_err(|reason| invalid(line, reason))?;
        Pattern::rooted(negate, false, &rooted, line)
    }

    /// The `Pattern` constructor once the pattern is absolute. `line` is the user's text,
    /// for error messages.
    fn rooted(
        negate: bool,
        is_implicit: bool,
        rooted: &str,
        line: &str,
    ) -> Result<Pattern, HashFilesError> {
        let segments: Vec<String> = path_segments(rooted)
            .into_iter()
            .map(str::to_string)
            .collect();
        let trailing_separator = normalize_separators(rooted).ends_with('/');
        let search_segments: Vec<String> = segments
            .iter()
            .map(|s| literal_of(s))
            .take_while(|literal| !literal.is_empty())
            .collect();
        let search_path = join_segments(&search_segments);

        // minimatch trims the pattern it is given and splits it on runs of `/`.
        let minimatch_source = safe_trim_trailing_separator(rooted);
        if minimatch_source.encode_utf16().count() > MAX_PATTERN_LENGTH {
            return Err(invalid(line, format!("it is longer than {MAX_PATTERN_LENGTH} characters once rooted at the workspace (minimatch's limit)")));
        }
        let matcher = js_trim(&minimatch_source)
            .split('/')
            .map(glob::compile_segment)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                invalid(
                    line,
                    "it has too many nested unclosed '[' to evaluate; escape them as '\\['"
                        .to_string(),
                )
            })?;
        Ok(Pattern {
            negate,
            is_implicit,
            trailing_separator,
            segments,
            search_path,
            matcher,
        })
    }

    /// `Pattern.match`: a pattern ending in `**` also matches the directory it starts from,
    /// through minimatch matching `dir/` (but not for the implicit `/**` sibling).
    fn match_kind(&self, path_segments: &[&str], scratch: &mut Scratch) -> MatchKind {
        let is_root = path_segments.len() == 2 && path_segments.iter().all(|s| s.is_empty());
        let hit = if self.segments.last().map(String::as_str) == Some("**")
            && !self.is_implicit
            && !is_root
        {
            let mut with_slash = Vec::with_capacity(path_segments.len() + 1);
            with_slash.extend_from_slice(path_segments);
            with_slash.push("");
            glob::match_one(&with_slash, &self.matcher, false, scratch)
        } else {
            glob::match_one(path_segments, &self.matcher, false, scratch)
        };
        match (hit, self.trailing_separator) {
            (false, _) => MATCH_NONE,
            (true, true) => MATCH_DIRECTORY,
            (true, false) => MATCH_ALL,
        }
    }

    /// `Pattern.partialMatch`: could some path below this one match? The file-system root
    /// always can, as every pattern here is rooted at `/`.
    fn partial_match(&self, path_segments: &[&str], scratch: &mut Scratch) -> bool {
        let is_root = path_segments.len() == 2 && path_segments.iter().all(|s| s.is_empty());
        is_root || glob::match_one(path_segments, &self.matcher, true, scratch)
    }
}

/// `patternHelper.match`: negated patterns only take away what earlier patterns matched.
pub(crate) fn match_all(
    patterns: &[Pattern],
    path_segments: &[&str],
    scratch: &mut Scratch,
) -> MatchKind {
    patterns.iter().fold(MATCH_NONE, |result, pattern| {
        let kind = pattern.match_kind(path_segments, scratch);
        if pattern.negate {
            result & !kind
        } else {
            result | kind
        }
    })
}

/// `patternHelper.partialMatch`: only positive patterns lead the walk into a directory.
pub(crate) fn partial_match_any(
    patterns: &[Pattern],
    path_segments: &[&str],
    scratch: &mut Scratch,
) -> bool {
    patterns
        .iter()
        .any(|p| !p.negate && p.partial_match(path_segments, scratch))
}

/// `patternHelper.getSearchPaths`: the positive patterns' search paths in first-appearance
/// order, without duplicates and without any that lies under another candidate.
pub(crate) fn search_paths(patterns: &[Pattern]) -> Vec<String> {
    let positive: Vec<&Pattern> = patterns.iter().filter(|p| !p.negate).collect();
    let mut included: HashMap<&str, bool> = positive
        .iter()
        .map(|p| (p.search_path.as_str(), false))
        .collect();
    let mut result = Vec::new();
    for pattern in positive {
        let key = pattern.search_path.as_str();
        if included.get(key) == Some(&true) {
            continue;
        }
        let mut current = key;
        let mut parent = dirname(current);
        let mut has_ancestor = false;
        while parent != current {
            if included.contains_key(parent) {
                has_ancestor = true;
                break;
            }
            current = parent;
            parent = dirname(current);
        }
        if !has_ancestor {
            result.push(key.to_string());
            included.insert(key, true);
        }
    }
    result
}

fn invalid(line: &str, reason: impl Into<String>) -> HashFilesError {
    HashFilesError::InvalidPattern {
        pattern: line.to_string(),
        reason: reason.into(),
    }
}

/// `Pattern.fixupPattern`: validation, then rooting `.`, `~` and relative patterns.
fn fixup_pattern(pattern: &str, roots: &Roots<'_>) -> Result<String, String> {
    if pattern.is_empty() {
        return Err("the pattern is empty after its '!' negations".to_string());
    }
    let relative_pathing = path_segments(&normalize_separators(pattern))
        .iter()
        .map(|s| literal_of(s))
        .enumerate()
        .any(|(i, s)| (s == "." && i > 0) || s == "..");
    if relative_pathing {
        return Err("Relative pathing '.' and '..' is not allowed (hashFiles() only looks inside the workspace; name the files from the workspace root)".to_string());
    }
    let pattern = normalize_separators(pattern);
    let rooted = if pattern == "." || pattern.starts_with("./") {
        format!("{}{}", glob_escape(roots.cwd), &pattern[1..])
    } else if pattern == "~" || pattern.starts_with("~/") {
        let home = roots.home.ok_or("it starts with '~' but HOME is not set")?;
        if !home.starts_with('/') {
            return Err(format!(
                "it starts with '~' but HOME ('{home}') is not an absolute path"
            ));
        }
        format!("{}{}", glob_escape(home), &pattern[1..])
    } else if pattern.starts_with('/') {
        pattern
    } else {
        let cwd = glob_escape(roots.cwd);
        let separator = if cwd.ends_with('/') { "" } else { "/" };
        format!("{cwd}{separator}{pattern}")
    };
    Ok(normalize_separators(&rooted))
}

/// `Pattern.globEscape` on POSIX: the workspace path must match itself literally.
pub(crate) fn glob_escape(path: &str) -> String {
    let backslashes = path.replace('\\', "\\\\");
    let chars: Vec<char> = backslashes.chars().collect();
    let mut out = String::with_capacity(backslashes.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        match c {
            // `[` only needs escaping when a `]` follows it (after at least one character)
            // within the same segment.
            '[' if chars[i + 1..]
                .iter()
                .take_while(|&&n| n != '/')
                .skip(1)
                .any(|&n| n == ']') =>
            {
                out.push_str("[[]")
            }
            '?' => out.push_str("[?]"),
            '*' => out.push_str("[*]"),
            _ => out.push(c),
        }
    }
    out
}

/// `Pattern.getLiteral`: the segment as plain text, or "" when it holds a glob.
fn literal_of(segment: &str) -> String {
    let chars: Vec<char> = segment.chars().collect();
    let mut literal = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && i + 1 < chars.len() {
            literal.push(chars[i + 1]);
            i += 2;
            continue;
        }
        if c == '*' || c == '?' {
            return String::new();
        }
        if c == '[' && i + 1 < chars.len() {
            let mut set = String::new();
            let mut closed = None;
            let mut j = i + 1;
            while j < chars.len() {
                if chars[j] == '\\' && j + 1 < chars.len() {
                    set.push(chars[j + 1]);
                    j += 2;
                    continue;
                }
                if chars[j] == ']' {
                    closed = Some(j);
                    break;
                }
                set.push(chars[j]);
                j += 1;
            }
            if let Some(closed) = closed {
                // A set of more than one UTF-16 unit is a real glob.
                if set.encode_utf16().count() > 1 {
                    return String::new();
                }
                if !set.is_empty() {
                    literal.push_str(&set);
                    i = closed + 1;
                    continue;
                }
            }
        }
        literal.push(c);
        i += 1;
    }
    literal
}

/// The `Path` class's segments: `/` first for a rooted path, then the names.
fn path_segments(path: &str) -> Vec<&str> {
    let trimmed = safe_trim_trailing_separator_str(path);
    match trimmed.strip_prefix('/') {
        Some("") => vec!["/"],
        Some(rest) => std::iter::once("/").chain(rest.split('/')).collect(),
        None => trimmed.split('/').collect(),
    }
}

/// `Path.toString`: segments joined with `/`, without doubling the root's.
fn join_segments(segments: &[String]) -> String {
    let mut out = String::new();
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 && !out.ends_with('/') {
            out.push('/');
        }
        out.push_str(segment);
    }
    out
}

fn normalize_separators(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

fn safe_trim_trailing_separator(path: &str) -> String {
    let normalized = normalize_separators(path);
    safe_trim_trailing_separator_str(&normalized).to_string()
}

/// The trimming half of `safeTrimTrailingSeparator`, for an already normalised path.
fn safe_trim_trailing_separator_str(path: &str) -> &str {
    if path.len() > 1 {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    }
}

/// Node's `path.posix.dirname` for a normalised absolute path.
pub(crate) fn dirname(path: &str) -> &str {
    let trimmed = safe_trim_trailing_separator_str(path);
    match trimmed.rfind('/') {
        Some(0) => "/",
        Some(index) => &trimmed[..index],
        None => ".",
    }
}

/// JavaScript's `String.prototype.trim`: its whitespace set differs from Rust's (it has
/// U+FEFF and lacks U+0085).
pub(crate) fn js_trim(text: &str) -> &str {
    fn is_js_whitespace(c: char) -> bool {
        matches!(
            c,
            '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
                ..='\u{200a}'
                    | '\u{2028}'
                    | '\u{2029}'
                    | '\u{202f}'
                    | '\u{205f}'
                    | '\u{3000}'
                    | '\u{feff}'
        )
    }
    text.trim_matches(is_js_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOTS: Roots<'static> = Roots {
        cwd: "/ws",
        home: Some("/home/me"),
    };

    fn parsed(lines: &str) -> Vec<Pattern> {
        parse_patterns(lines, &ROOTS).expect("valid patterns")
    }

    #[test]
    fn escapes_and_literals() {
        assert_eq!(glob_escape("/a[b]/c?*\\"), "/a[[]b]/c[?][*]\\\\");
        assert_eq!(glob_escape("/a[]/x["), "/a[]/x[");
        assert_eq!(literal_of("a[b]c"), "abc");
        assert_eq!(literal_of("a[bc]"), "");
        assert_eq!(literal_of(r"a\*"), "a*");
        assert_eq!(literal_of("[]"), "[]");
    }

    #[test]
    fn rooting_and_search_paths() {
        let patterns = parsed("src/**/*.json\n ! src/gen \n#comment\n\n./b/\n~/x");
        let searched: Vec<&str> = patterns.iter().map(|p| p.search_path.as_str()).collect();
        assert_eq!(
            searched,
            [
                "/ws/src",
                "/ws/src",
                "/ws/src/gen",
                "/ws/src/gen",
                "/ws/b",
                "/ws/b",
                "/home/me/x",
                "/home/me/x"
            ]
        );
        assert!(!patterns[0].negate && patterns[1].is_implicit);
        assert!(patterns[2].negate && patterns[3].negate && patterns[3].is_implicit);
        assert!(patterns[4].trailing_separator && !patterns[5].trailing_separator);
        assert_eq!(search_paths(&patterns), ["/ws/src", "/ws/b", "/home/me/x"]);
    }

    #[test]
    fn ancestors_win_over_descendant_roots() {
        assert_eq!(
            search_paths(&parsed("src/a/**\nsrc\nb/**")),
            ["/ws/src", "/ws/b"]
        );
    }

    #[test]
    fn relative_pathing_is_rejected() {
        for bad in ["../x", "a/./b", "a/..", "a/[.][.]/b", "!"] {
            assert!(parse_patterns(bad, &ROOTS).is_err(), "{bad}");
        }
        assert!(parse_patterns("./a", &ROOTS).is_ok());
    }

    #[test]
    fn trailing_whitespace_before_a_slash_is_trimmed_for_minimatch_only() {
        let patterns = parsed("a /");
        assert_eq!(patterns[0].search_path, "/ws/a ");
        assert!(matches!(patterns[0].matcher.last(), Some(Segment::Literal(s)) if s == "a"));
    }
}
