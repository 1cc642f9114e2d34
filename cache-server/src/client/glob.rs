//! Path patterns for `actions/cache`'s `path:` input: `*`, `?`, `[...]`, `**`, `~`, and `!` for
//! exclusion (a later line wins, like the toolkit's ordered negation).

use crate::error::{CacheError, Result};
use std::path::{Path, PathBuf};

/// One `path:` line, resolved to an absolute pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    pub negated: bool,
    /// The literal directory (or file) before the first wildcard segment.
    pub root: PathBuf,
    segments: Vec<String>,
    /// The `path:` line as written; the cache version hashes these.
    pub original: String,
}

const MAX_SEGMENTS: usize = 256;

fn has_wildcard(seg: &str) -> bool {
    seg.contains(['*', '?', '['])
}

impl Pattern {
    /// Parses one line relative to `workspace`, expanding a leading `~` to `home`.
    pub fn parse(line: &str, workspace: &Path, home: Option<&Path>) -> Result<Self> {
        let bad = |reason: &str| CacheError::BadPattern {
            pattern: line.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = line.trim();
        let (negated, body) = match trimmed.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, trimmed),
        };
        if body.is_empty() {
            return Err(bad("the pattern is empty"));
        }
        let absolute: PathBuf = if body == "~" || body.starts_with("~/") {
            let home = home.ok_or_else(|| bad("`~` needs a home directory (set HOME)"))?;
            home.join(body.trim_start_matches('~').trim_start_matches('/'))
        } else if body.starts_with('/') {
            PathBuf::from(body)
        } else {
            workspace.join(body)
        };
        let text = absolute.to_string_lossy().into_owned();
        let mut segments = Vec::new();
        for seg in text.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    if segments.iter().any(|s: &String| has_wildcard(s)) {
                        return Err(bad("`..` after a wildcard is not supported"));
                    }
                    segments.pop();
                }
                s => segments.push(s.to_string()),
            }
        }
        if segments.len() > MAX_SEGMENTS {
            return Err(bad("the pattern has too many segments"));
        }
        let mut root = PathBuf::from("/");
        for s in segments.iter().take_while(|s| !has_wildcard(s)) {
            root.push(s);
        }
        Ok(Pattern {
            negated,
            root,
            segments,
            original: format!("{}{}", if negated { "!" } else { "" }, body),
        })
    }

    pub fn is_literal(&self) -> bool {
        !self.segments.iter().any(|s| has_wildcard(s))
    }

    /// True when `path` (absolute) matches the pattern or lies below something that matches it.
    pub fn matches_or_below(&self, path: &Path) -> bool {
        let text = path.to_string_lossy();
        let parts: Vec<&str> = text.split('/').filter(|s| !s.is_empty()).collect();
        (0..=parts.len()).any(|n| match_segments(&self.segments, &parts[..n]))
    }
}

/// Segment-wise matching with `**` spanning any number of segments (dynamic programming, so
/// patterns with many `**` stay linear in practice).
fn match_segments(pattern: &[String], path: &[&str]) -> bool {
    let (p, s) = (pattern.len(), path.len());
    let mut table = vec![vec![false; s + 1]; p + 1];
    table[p][s] = true;
    for i in (0..p).rev() {
        for j in (0..=s).rev() {
            table[i][j] = if pattern[i] == "**" {
                table[i + 1][j] || (j < s && table[i][j + 1])
            } else {
                j < s
                    && match_segment(pattern[i].as_bytes(), path[j].as_bytes())
                    && table[i + 1][j + 1]
            };
        }
    }
    table[0][0]
}

/// Wildcards inside one segment: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`. Iterative backtracking on
/// the last `*`, so it runs in O(len^2) at worst.
fn match_segment(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = match_class(pat, p, text[t]) {
                        if matched {
                            p = next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Evaluates a `[...]` class at `pat[start]`; `None` if it is not a well-formed class.
fn match_class(pat: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(pat.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pat.len() {
        if pat[i] == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < pat.len() && pat[i + 1] == b'-' && pat[i + 2] != b']' {
            if pat[i] <= c && c <= pat[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if pat[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

/// Parses every non-empty, non-comment line of a `path:` input.
pub fn parse_patterns(
    lines: &[String],
    workspace: &Path,
    home: Option<&Path>,
) -> Result<Vec<Pattern>> {
    let mut out = Vec::new();
    for line in lines.iter().flat_map(|l| l.lines()) {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        out.push(Pattern::parse(t, workspace, home)?);
    }
    if !out.iter().any(|p| !p.negated) {
        return Err(CacheError::BadPattern {
            pattern: lines.join("\n"),
            reason: "no path to cache (only exclusions or nothing)".into(),
        });
    }
    Ok(out)
}

/// Whether `path` is selected: the last pattern that matches it decides.
pub fn selected(patterns: &[Pattern], path: &Path) -> bool {
    let mut included = false;
    for p in patterns {
        if p.negated {
            if included && p.matches_or_below(path) {
                included = false;
            }
        } else if !included && p.matches_or_below(path) {
            included = true;
        }
    }
    included
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(lines: &[&str]) -> Vec<Pattern> {
        let lines: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        parse_patterns(&lines, Path::new("/ws"), Some(Path::new("/home/u"))).unwrap()
    }

    #[test]
    fn segments_and_wildcards() {
        assert!(match_segment(b"a*c", b"abbc"));
        assert!(match_segment(b"*.rs", b"lib.rs"));
        assert!(!match_segment(b"*.rs", b"lib.rsx"));
        assert!(match_segment(b"a?c", b"abc"));
        assert!(match_segment(b"[a-c]x", b"bx"));
        assert!(!match_segment(b"[!a-c]x", b"bx"));
        assert!(match_segment(b"[x", b"[x"));
        assert!(match_segment(&[b'*'; 40], b""));
    }

    #[test]
    fn roots_home_and_negation() {
        let p = pats(&["~/.npm", "target/**/*.rlib", "!target/debug/skip"]);
        assert_eq!(p[0].root, PathBuf::from("/home/u/.npm"));
        assert_eq!(p[1].root, PathBuf::from("/ws/target"));
        assert!(selected(&p, Path::new("/home/u/.npm/x/y")));
        assert!(selected(&p, Path::new("/ws/target/release/deps/a.rlib")));
        assert!(!selected(&p, Path::new("/ws/target/release/deps/a.rmeta")));
        assert!(!selected(&p, Path::new("/ws/target/debug/skip/a.rlib")));
        assert!(!selected(&p, Path::new("/ws/src/lib.rs")));
        let q = pats(&["a", "!a/b", "a/b/keep"]);
        assert!(!selected(&q, Path::new("/ws/a/b/x")));
        assert!(selected(&q, Path::new("/ws/a/b/keep")));
    }

    #[test]
    fn rejects_bad_patterns() {
        let ws = Path::new("/ws");
        assert!(Pattern::parse("!", ws, None).is_err());
        assert!(Pattern::parse("~/x", ws, None).is_err());
        assert!(Pattern::parse("*/../x", ws, None).is_err());
        assert!(parse_patterns(&["!a".into()], ws, None).is_err());
    }
}
