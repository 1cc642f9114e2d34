//! Redaction of secrets in everything a job prints. Declared secrets and `::add-mask::`
//! values are replaced wherever they appear inside a line; multi-line values are also
//! registered line by line because programs print them one line at a time, and every value is
//! also registered in the forms programs re-encode it into (Base64, JSON and URI escapes...,
//! see [`encodings`]), as GitHub's runner does. Well-known credential shapes (AWS access key
//! ids, GitHub tokens, PEM private key blocks) are redacted even when nobody declared them,
//! since a leaked token is worse than an over-masked log.
//!
//! A line too long to hold whole arrives in pieces ([`LineMasker::mask_piece`]): the end of
//! each piece that a secret could still continue from is held back and masked with the next
//! one, so a secret straddling a cut is masked like any other.

mod encodings;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::OnceLock;

/// What a masked value is replaced with, as GitHub prints it.
pub const MASK: &str = "***";

/// The longest credential shape (`ghp_` and 251 characters) or PEM marker, in bytes: how much
/// of a cut line is held back at least.
const LONGEST_SHAPE: usize = 256;

/// The registered values of one job and the automaton that finds them.
#[derive(Default)]
pub struct Masker {
    /// Every value to hide: registered values, their lines and their encoded forms.
    patterns: Vec<String>,
    known: HashSet<String>,
    /// The longest pattern, in bytes.
    longest: usize,
    /// Built at the first use after a change, so registering many values in a row (a loop of
    /// `::add-mask::`) builds it once.
    finder: OnceLock<Option<Finder>>,
}

/// The automaton, and the filter that spares it most lines when it has many patterns.
struct Finder {
    automaton: AhoCorasick,
    filter: Option<GramFilter>,
}

/// Beyond this many patterns the automaton's own prefilter (which handles up to 64) stops
/// skipping text quickly, and every byte goes through the automaton: several times slower
/// per line than [`GramFilter`].
const FILTERED_ABOVE: usize = 64;

/// A set of the first four bytes of every pattern, hashed into a bitmap: a line none of whose
/// 4-byte windows is in it holds no pattern. 2^18 bits (32 KiB) keep false positives to about
/// one line in fifty with hundreds of patterns, and the table within the CPU's caches.
struct GramFilter {
    bits: Box<[u64]>,
}

const GRAM_BITS: u32 = 18;

impl GramFilter {
    /// `None` when a pattern is shorter than a gram: then every line must be searched.
    fn new(patterns: &[String]) -> Option<GramFilter> {
        let mut bits = vec![0u64; 1 << (GRAM_BITS - 6)].into_boxed_slice();
        for pattern in patterns {
            let gram = pattern.as_bytes().first_chunk::<4>()?;
            let slot = Self::slot(u32::from_le_bytes(*gram));
            bits[slot >> 6] |= 1 << (slot & 63);
        }
        Some(GramFilter { bits })
    }

    fn slot(gram: u32) -> usize {
        (gram.wrapping_mul(0x9E37_79B1) >> (32 - GRAM_BITS)) as usize
    }

    /// Whether a pattern may occur in `text`. Branch-free over the windows, which lets the
    /// CPU look several of them up at once.
    fn may_match(&self, text: &str) -> bool {
        let mut seen = 0u64;
        for window in text.as_bytes().windows(4) {
            let slot = Self::slot(u32::from_le_bytes([
                window[0], window[1], window[2], window[3],
            ]));
            seen |= self.bits[slot >> 6] >> (slot & 63);
        }
        seen & 1 != 0
    }
}

impl Masker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a value to mask: the whole value and, when it spans lines, each of its
    /// non-blank lines, each also in its encoded forms. Blank values are ignored: masking ""
    /// or " " would garble every line.
    pub fn add(&mut self, value: &str) {
        let whole = value.trim_end_matches(['\r', '\n']);
        let mut candidates = vec![whole];
        if whole.contains('\n') {
            candidates.extend(whole.split('\n').map(|line| line.trim_end_matches('\r')));
        }
        let mut added = false;
        for candidate in candidates {
            if candidate.trim().is_empty() {
                continue;
            }
            added |= self.push(candidate.to_owned());
            for form in encodings::derived_forms(candidate) {
                added |= self.push(form);
            }
        }
        if added {
            self.finder = OnceLock::new();
        }
    }

    fn push(&mut self, pattern: String) -> bool {
        if pattern.trim().is_empty() || self.known.contains(&pattern) {
            return false;
        }
        self.longest = self.longest.max(pattern.len());
        self.known.insert(pattern.clone());
        self.patterns.push(pattern);
        true
    }

    fn finder(&self) -> Option<&Finder> {
        self.finder
            .get_or_init(|| {
                // Leftmost-longest, so a secret that contains another is masked whole rather
                // than leaving its tail visible.
                let automaton = AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&self.patterns)
                    .ok()?;
                let filter = (self.patterns.len() > FILTERED_ABOVE)
                    .then(|| GramFilter::new(&self.patterns))
                    .flatten();
                Some(Finder { automaton, filter })
            })
            .as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Masks registered values and credential shapes in one line (no PEM block state: use
    /// [`LineMasker`] for a stream of lines).
    pub fn mask<'a>(&self, line: &'a str) -> Cow<'a, str> {
        let declared = match self.finder() {
            Some(finder)
                if finder.filter.as_ref().is_none_or(|f| f.may_match(line))
                    && finder.automaton.is_match(line) =>
            {
                Cow::Owned(
                    finder
                        .automaton
                        .replace_all(line, &vec![MASK; self.patterns.len()]),
                )
            }
            _ => Cow::Borrowed(line),
        };
        match mask_credential_shapes(&declared) {
            Some(masked) => Cow::Owned(masked),
            None => declared,
        }
    }

    /// Where `text`, the start of a line that goes on, can be cut so that no registered value,
    /// credential shape or PEM marker of the whole line can straddle the cut: the part before
    /// it can be masked and shown now, the rest must wait for more of the line.
    fn safe_cut(&self, text: &str) -> usize {
        let keep = self.longest.max(LONGEST_SHAPE);
        if text.len() <= keep {
            return 0;
        }
        // Anything starting before `cut` ends within `text`, so its match is final.
        let mut cut = floor_char_boundary(text, text.len() - keep);
        let mut spans: Vec<(usize, usize)> = credential_spans(text);
        if let Some(finder) = self.finder() {
            spans.extend(
                finder
                    .automaton
                    .find_iter(text)
                    .map(|m| (m.start(), m.end())),
            );
        }
        spans.extend(pem_marker_spans(text));
        // A span over the cut moves it to the span's end, which another span may straddle.
        while let Some(end) = spans
            .iter()
            .filter(|&&(start, end)| start < cut && end > cut)
            .map(|&(_, end)| end)
            .max()
        {
            cut = end;
        }
        cut
    }
}

/// Masks a stream of lines, remembering whether it is inside a PEM private key block so every
/// line of the key is hidden, not only the BEGIN line, and holding back the end of a line's
/// piece that a secret could continue from.
#[derive(Default)]
pub struct LineMasker {
    in_private_key: bool,
    /// The unmasked end of the previous piece of the current line.
    carry: String,
}

impl LineMasker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Masks a whole line, or the last piece of one.
    pub fn mask<'a>(&mut self, masker: &Masker, line: &'a str) -> Cow<'a, str> {
        if self.carry.is_empty() {
            return self.mask_text(masker, line);
        }
        let mut joined = std::mem::take(&mut self.carry);
        joined.push_str(line);
        Cow::Owned(self.mask_text(masker, &joined).into_owned())
    }

    /// Masks a piece of a line that goes on in the next call: returns what can be shown now,
    /// which may be empty, and keeps back the end a secret could continue from.
    pub fn mask_piece(&mut self, masker: &Masker, piece: &str) -> String {
        let mut text = std::mem::take(&mut self.carry);
        text.push_str(piece);
        let cut = masker.safe_cut(&text);
        self.carry = text[cut..].to_owned();
        text.truncate(cut);
        self.mask_text(masker, &text).into_owned()
    }

    fn mask_text<'a>(&mut self, masker: &Masker, line: &'a str) -> Cow<'a, str> {
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
    let spans = credential_spans(line);
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

/// Where the credential shapes of `line` are, in order, without overlaps.
fn credential_spans(line: &str) -> Vec<(usize, usize)> {
    let bytes = line.as_bytes();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    // Every shape starts with `A` (AWS) or `g` (GitHub): only those positions are checked.
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'A' || b == b'g') {
        i += offset;
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
    spans
}

/// Where the PEM BEGIN and END private-key markers of `line` are.
fn pem_marker_spans(line: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    for marker in [PEM_BEGIN, PEM_END] {
        let mut from = 0;
        while let Some((start, end)) = find_pem_marker(&line[from..], marker) {
            spans.push((from + start, from + end));
            from += end;
        }
    }
    spans
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

    /// Feeds `line` in pieces of `size` bytes, as the line splitter cuts long lines, and
    /// returns what was shown.
    fn in_pieces(masker: &Masker, line: &str, size: usize) -> String {
        let mut stream = LineMasker::new();
        let mut shown = String::new();
        let mut rest = line;
        while rest.len() > size {
            let cut = floor_char_boundary(rest, size);
            shown.push_str(&stream.mask_piece(masker, &rest[..cut]));
            rest = &rest[cut..];
        }
        shown.push_str(&stream.mask(masker, rest));
        shown
    }

    #[test]
    fn a_secret_cut_between_pieces_of_a_long_line_is_masked() {
        let mut m = Masker::new();
        m.add("straddling-secret-value");
        let ghp = format!("ghp_{}", "a1B2".repeat(9));
        let line = format!(
            "{}straddling-secret-value{} {ghp} {}-----BEGIN RSA PRIVATE KEY-----",
            "x".repeat(990),
            "y".repeat(1000),
            "z".repeat(700)
        );
        let whole = LineMasker::new().mask(&m, &line).into_owned();
        for size in [1000, 1001, 1010, 1013, 2003, 2022, 2030, 2990, 4096] {
            let shown = in_pieces(&m, &line, size);
            assert_eq!(shown, whole, "pieces of {size}");
            assert!(!shown.contains("secret-value") && !shown.contains("a1B2a1B2"));
        }
        // The PEM block that began in the line goes on hiding the next line.
        let mut stream = LineMasker::new();
        let _ = stream.mask_piece(&m, &line[..1500]);
        let _ = stream.mask(&m, &line[1500..]);
        assert_eq!(stream.mask(&m, "MIIEowIBAAKCAQEA"), "***");
    }

    #[test]
    fn a_held_back_tail_is_shown_with_the_end_of_the_line() {
        let mut m = Masker::new();
        m.add("secret");
        let mut stream = LineMasker::new();
        let first = stream.mask_piece(&m, &"a".repeat(300));
        assert_eq!(first.len(), 300 - LONGEST_SHAPE);
        assert_eq!(
            stream.mask(&m, "b"),
            format!("{}b", "a".repeat(LONGEST_SHAPE))
        );
        assert_eq!(stream.mask(&m, "next line"), "next line");
    }

    #[test]
    fn encoded_forms_of_a_secret_are_masked() {
        let mut m = Masker::new();
        m.add("p@ss\"word\\x");
        // toJSON(secrets), base64 of `user:` and the secret, a URL query.
        assert_eq!(
            m.mask("{\"PW\": \"p@ss\\\"word\\\\x\"}"),
            "{\"PW\": \"***\"}"
        );
        let b64 = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "user:p@ss\"word\\x\n",
        );
        assert!(
            !m.mask(&b64).contains(&b64[8..16]),
            "{b64} -> {}",
            m.mask(&b64)
        );
        assert_eq!(m.mask("?pw=p%40ss%22word%5Cx&x=1"), "?pw=***&x=1");
    }

    #[test]
    fn many_patterns_are_found_through_the_filter() {
        let mut m = Masker::new();
        for i in 0..40 {
            m.add(&format!("secret-number-{i:03}-value"));
        }
        assert!(m.patterns.len() > FILTERED_ABOVE);
        assert!(m.finder().is_some_and(|f| f.filter.is_some()));
        assert_eq!(m.mask("a secret-number-017-value b"), "a *** b");
        assert_eq!(m.mask("nothing to see here"), "nothing to see here");
        m.add("ab");
        assert!(m.finder().is_some_and(|f| f.filter.is_none()));
        assert_eq!(m.mask("xaby"), "x***y");
    }
}
