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
    /// No segment has a wildcard: the pattern is `root` itself.
    literal: bool,
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
            literal: !segments.iter().any(|s| has_wildcard(s)),
            segments,
            original: format!("{}{}", if negated { "!" } else { "" }, body),
        })
    }

    pub fn is_literal(&self) -> bool {
        self.literal
    }

    /// True when `path` (absolute) matches the pattern or lies below something that matches it.
    /// Called for every path a save walks, so it neither allocates per segment nor re-matches
    /// each prefix of the path.
    pub fn matches_or_below(&self, path: &Path) -> bool {
        if self.literal {
            return path.starts_with(&self.root);
        }
        // `live[i]`: the first i pattern segments match the path segments read so far. The
        // pattern matches a prefix of the path once all of them do.
        let n = self.segments.len();
        let mut live = vec![false; n + 1];
        let mut next = vec![false; n + 1];
        live[0] = true;
        self.skip_empty_globstars(&mut live);
        if live[n] {
            return true;
        }
        let text = path.as_os_str().as_encoded_bytes();
        for seg in text.split(|&b| b == b'/').filter(|s| !s.is_empty()) {
            next.fill(false);
            let mut any = false;
            for (i, pat) in self.segments.iter().enumerate() {
                if !live[i] {
                    continue;
                }
                if pat == "**" {
                    next[i] = true;
                    any = true;
                } else if match_segment(pat.as_bytes(), seg) {
                    next[i + 1] = true;
                    any = true;
                }
            }
            if !any {
                return false;
            }
            self.skip_empty_globstars(&mut next);
            if next[n] {
                return true;
            }
            std::mem::swap(&mut live, &mut next);
        }
        false
    }

    /// A `**` also matches no segment at all.
    fn skip_empty_globstars(&self, states: &mut [bool]) {
        for (i, pat) in self.segments.iter().enumerate() {
            if states[i] && pat == "**" {
                states[i + 1] = true;
            }
        }
    }
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

    /// The definition: the pattern matches the first n segments of the path, for some n.
    fn matches_some_prefix(pattern: &[String], path: &[&str]) -> bool {
        fn full(p: &[String], s: &[&str]) -> bool {
            match p.split_first() {
                None => s.is_empty(),
                Some((head, rest)) if head == "**" => {
                    full(rest, s) || (!s.is_empty() && full(p, &s[1..]))
                }
                Some((head, rest)) => {
                    !s.is_empty()
                        && match_segment(head.as_bytes(), s[0].as_bytes())
                        && full(rest, &s[1..])
                }
            }
        }
        (0..=path.len()).any(|n| full(pattern, &path[..n]))
    }

    #[test]
    fn matching_agrees_with_the_definition() {
        let patterns = [
            "a",
            "a/b",
            "**",
            "**/b",
            "a/**",
            "a/**/c",
            "**/**/c",
            "*/b",
            "a/*",
            "a/*/c/**",
            "?/b*",
            "a/**/b/**/c",
            "[ab]/**",
            "a/b/c/d/e",
        ];
        let paths = [
            "/ws",
            "/ws/a",
            "/ws/b",
            "/ws/a/b",
            "/ws/a/c",
            "/ws/a/b/c",
            "/ws/a/x/y/c",
            "/ws/ab/b",
            "/ws/a/b/c/d/e/f",
            "/ws/x/b/c",
            "/ws/a/c/b/c",
            "/other/a",
        ];
        for pat in patterns {
            let p = Pattern::parse(pat, Path::new("/ws"), None).unwrap();
            for path in paths {
                let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
                assert_eq!(
                    p.matches_or_below(Path::new(path)),
                    matches_some_prefix(&p.segments, &parts),
                    "{pat} against {path}"
                );
            }
        }
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
