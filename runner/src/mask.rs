//! Redaction of secrets in everything a job prints. Declared secrets and `::add-mask::`
//! values are replaced wherever they appear inside a line; multi-line values are also
//! registered line by line because programs print them one line at a time. Well-known
//! credential shapes (AWS access key ids, GitHub tokens, PEM private key blocks) are redacted
//! even when nobody declared them, since a leaked token is worse than an over-masked log.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use std::borrow::Cow;

/// What a masked value is replaced with, as GitHub prints it.
pub const MASK: &str = "***";

/// The registered values of one job and the automaton that finds them.
#[derive(Default)]
pub struct Masker {
    values: Vec<String>,
    finder: Option<AhoCorasick>,
}

impl Masker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a value to mask: the whole value and, when it spans lines, each of its
    /// non-blank lines. Blank values are ignored: masking "" or " " would garble every line.
    pub fn add(&mut self, value: &str) {
        let mut added = false;
        let whole = value.trim_end_matches(['\r', '\n']);
        added |= self.push(whole);
        if whole.contains('\n') {
            for line in whole.split('\n') {
                added |= self.push(line.trim_end_matches('\r'));
            }
        }
        if added {
            self.rebuild();
        }
    }

    fn push(&mut self, candidate: &str) -> bool {
        if candidate.trim().is_empty() || self.values.iter().any(|v| v == candidate) {
            return false;
        }
        self.values.push(candidate.to_string());
        true
    }

    fn rebuild(&mut self) {
        // Leftmost-longest, so a secret that contains another is masked whole rather than
        // leaving its tail visible.
        self.finder = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&self.values)
            .ok();
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Masks registered values and credential shapes in one line (no PEM block state: use
    /// [`LineMasker`] for a stream of lines).
    pub fn mask<'a>(&self, line: &'a str) -> Cow<'a, str> {
        let declared = match &self.finder {
            Some(finder) if finder.is_match(line) => {
                Cow::Owned(finder.replace_all(line, &vec![MASK; self.values.len()]))
            }
            _ => Cow::Borrowed(line),
        };
        match mask_credential_shapes(&declared) {
            Some(masked) => Cow::Owned(masked),
            None => declared,
        }
    }
}

/// Masks a stream of lines, remembering whether it is inside a PEM private key block so every
/// line of the key is hidden, not only the BEGIN line.
#[derive(Default)]
pub struct LineMasker {
    in_private_key: bool,
}

impl LineMasker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn mask<'a>(&mut self, masker: &Masker, line: &'a str) -> Cow<'a, str> {
        if self.in_private_key {
            if let Some(end) = find_pem_end(line) {
                self.in_private_key = false;
                let rest = &line[end..];
                return Cow::Owned(format!("{MASK}{}", masker.mask(rest)));
            }
            return Cow::Borrowed(MASK);
        }
        if let Some(begin) = find_pem_begin(line) {
            let head = masker.mask(&line[..begin]).into_owned();
            let after_begin = &line[begin..];
            // A one-line block (BEGIN ... END on the same line) closes immediately.
            if let Some(end) = find_pem_end(&after_begin[1..]) {
                let rest = &after_begin[1 + end..];
                return Cow::Owned(format!("{head}{MASK}{}", masker.mask(rest)));
            }
            self.in_private_key = true;
            return Cow::Owned(format!("{head}{MASK}"));
        }
        masker.mask(line)
    }
}

const PEM_BEGIN: &str = "-----BEGIN ";
const PEM_END: &str = "-----END ";
const PRIVATE_KEY_TAIL: &str = "PRIVATE KEY-----";

fn find_pem_begin(line: &str) -> Option<usize> {
    find_pem_marker(line, PEM_BEGIN).map(|(start, _)| start)
}

/// Returns the byte offset just past the END marker.
fn find_pem_end(line: &str) -> Option<usize> {
    find_pem_marker(line, PEM_END).map(|(_, end)| end)
}

fn find_pem_marker(line: &str, marker: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(rel) = line[from..].find(marker) {
        let start = from + rel;
        let label_start = start + marker.len();
        // Labels are short ("RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY"): look a bounded
        // distance ahead so a pathological line stays linear.
        let window_end = (label_start + 64).min(line.len());
        let window = &line[label_start..floor_char_boundary(line, window_end)];
        if let Some(tail) = window.find(PRIVATE_KEY_TAIL) {
            let label = &window[..tail];
            if label.bytes().all(|b| b.is_ascii_uppercase() || b == b' ') {
                return Some((start, label_start + tail + PRIVATE_KEY_TAIL.len()));
            }
        }
        from = label_start;
    }
    None
}

fn floor_char_boundary(s: &str, mut index: usize) -> usize {
    while index > 0 && !s.is_char_boundary(index) {
        index -= 1;
    }
    index
}

const AWS_KEY_PREFIXES: [&str; 8] = [
    "AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA",
];
const GITHUB_TOKEN_PREFIXES: [&str; 5] = ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"];
const GITHUB_PAT_PREFIX: &str = "github_pat_";

/// Finds well-known credential shapes; returns the masked line, or None when there is none.
fn mask_credential_shapes(line: &str) -> Option<String> {
    let bytes = line.as_bytes();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let at_boundary = i == 0 || !is_token_byte(bytes[i - 1]);
        if at_boundary {
            if let Some(len) = credential_at(&bytes[i..]) {
                spans.push((i, i + len));
                i += len;
                continue;
            }
        }
        i += 1;
    }
    if spans.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(line.len());
    let mut last = 0;
    for (start, end) in spans {
        out.push_str(&line[last..start]);
        out.push_str(MASK);
        last = end;
    }
    out.push_str(&line[last..]);
    Some(out)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Length of the credential starting at the beginning of `rest`, if one does.
fn credential_at(rest: &[u8]) -> Option<usize> {
    let ends_cleanly = |len: usize| rest.get(len).is_none_or(|b| !is_token_byte(*b));
    if AWS_KEY_PREFIXES
        .iter()
        .any(|p| rest.starts_with(p.as_bytes()))
    {
        let body = &rest[4..];
        let n = body
            .iter()
            .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            .count();
        if n == 16 && ends_cleanly(20) {
            return Some(20);
        }
    }
    if GITHUB_TOKEN_PREFIXES
        .iter()
        .any(|p| rest.starts_with(p.as_bytes()))
    {
        let n = rest[4..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        if (36..=251).contains(&n) && ends_cleanly(4 + n) {
            return Some(4 + n);
        }
    }
    if rest.starts_with(GITHUB_PAT_PREFIX.as_bytes()) {
        let body = &rest[GITHUB_PAT_PREFIX.len()..];
        let n = body.iter().take_while(|b| is_token_byte(**b)).count();
        if n >= 22 {
            return Some(GITHUB_PAT_PREFIX.len() + n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_values_inside_other_text() {
        let mut m = Masker::new();
        m.add("s3cr3t");
        assert_eq!(m.mask("token=s3cr3t;next"), "token=***;next");
        assert_eq!(m.mask("nothing here"), "nothing here");
    }

    #[test]
    fn masks_each_line_of_a_multiline_secret() {
        let mut m = Masker::new();
        m.add("first-line\nsecond-line\n");
        assert_eq!(m.mask("> first-line"), "> ***");
        assert_eq!(m.mask("second-line <"), "*** <");
    }

    #[test]
    fn longest_secret_wins() {
        let mut m = Masker::new();
        m.add("abc");
        m.add("abcdef");
        assert_eq!(m.mask("xabcdefx"), "x***x");
    }

    #[test]
    fn blank_values_are_ignored() {
        let mut m = Masker::new();
        m.add("");
        m.add("   ");
        assert!(m.is_empty());
        assert_eq!(m.mask("a b"), "a b");
    }

    #[test]
    fn redacts_undeclared_credential_shapes() {
        let m = Masker::new();
        assert_eq!(m.mask("key AKIAIOSFODNN7EXAMPLE used"), "key *** used");
        let ghp = format!("ghp_{}", "a1B2".repeat(9));
        assert_eq!(m.mask(&format!("GH={ghp}")), "GH=***");
        let pat = format!("github_pat_{}", "x9_Y".repeat(10));
        assert_eq!(m.mask(&format!("{pat} end")), "*** end");
        // Near misses stay visible.
        assert_eq!(m.mask("AKIA123"), "AKIA123");
        assert_eq!(m.mask("ghp_short"), "ghp_short");
    }

    #[test]
    fn hides_every_line_of_a_private_key_block() {
        let m = Masker::new();
        let mut s = LineMasker::new();
        assert_eq!(
            s.mask(&m, "key: -----BEGIN RSA PRIVATE KEY-----"),
            "key: ***"
        );
        assert_eq!(s.mask(&m, "MIIEowIBAAKCAQEA"), "***");
        assert_eq!(s.mask(&m, "-----END RSA PRIVATE KEY----- done"), "*** done");
        assert_eq!(s.mask(&m, "visible again"), "visible again");
        assert_eq!(
            s.mask(&m, "-----BEGIN CERTIFICATE-----"),
            "-----BEGIN CERTIFICATE-----"
        );
    }
}
