//! The forms a secret takes when a program re-encodes it before printing: GitHub's runner
//! registers such forms of every masked value (its `ValueEncoders`: Base64 at the three byte
//! alignments, JSON, URI, XML, command-line and expression escapes, the quote-trimmed and
//! PowerShell-split parts), and so does kiln, with a few more that common tools produce
//! (URL-safe and line-wrapped Base64, hex dumps, the JSON of Python and Go, shell quoting).
//!
//! Base64 and hex forms are cut down to the characters that depend on the secret alone: a
//! digit that also encodes a neighbouring byte changes with the text around the secret, so it
//! is left visible rather than making the form miss.

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use kiln_workflow::expr::to_json_string;
use kiln_workflow::value::Value;

/// Shorter Base64 or hex forms would match ordinary words; such a secret is short enough to
/// be guessed anyway.
const MIN_ENCODED_CHARS: usize = 4;
/// Line widths of `base64` (GNU coreutils), of `openssl base64` and PEM, and of `xxd -p`.
const BASE64_WRAP_WIDTHS: [usize; 2] = [76, 64];
const HEX_WRAP_WIDTH: usize = 60;

/// Values longer than this get no encoded forms (their lines still do): secrets are far
/// shorter, and a huge `::add-mask::` value would otherwise register megabytes of patterns.
const MAX_ENCODED_VALUE_BYTES: usize = 64 * 1024;

/// Every form of `value` other than itself, each at most once, in no particular order.
pub fn derived_forms(value: &str) -> Vec<String> {
    let mut forms = Vec::new();
    if value.len() > MAX_ENCODED_VALUE_BYTES {
        return forms;
    }
    base64_forms(value.as_bytes(), &mut forms);
    hex_forms(value.as_bytes(), &mut forms);
    json_forms(value, &mut forms);
    forms.push(uri_escape(value, |_| false, false));
    // JavaScript's encodeURIComponent, Python's quote() (which keeps `/`) and quote_plus().
    forms.push(uri_escape(value, |b| b"!'()*".contains(&b), false));
    forms.push(uri_escape(value, |b| b == b'/', false));
    forms.push(uri_escape(value, |_| false, true));
    forms.push(xml_escape(value));
    forms.push(html_escape(value));
    // GitHub's CommandLineArgumentEscape and ExpressionStringEscape.
    forms.push(value.replace('"', "\\\""));
    forms.push(value.replace('\'', "''"));
    // A single-quoted shell word, as `set -x` prints it.
    forms.push(value.replace('\'', "'\\''"));
    if value.len() > 8 && value.starts_with('"') && value.ends_with('"') {
        forms.push(value[1..value.len() - 1].to_owned());
    }
    powershell_ampersand_parts(value, &mut forms);
    forms.retain(|form| form != value && !form.trim().is_empty());
    forms.sort_unstable();
    forms.dedup();
    forms
}

/// The Base64 of the secret when it starts 0, 1 or 2 bytes into a 3-byte group of the encoded
/// text, standard and URL-safe, without the digits shared with neighbouring bytes. The
/// aligned form is also registered in the pieces `base64` and `openssl` wrap it into.
fn base64_forms(bytes: &[u8], forms: &mut Vec<String>) {
    for skip in 0..=2 {
        let Some(rest) = bytes.get(skip..).filter(|rest| !rest.is_empty()) else {
            break;
        };
        // Digits that hold only bits of `rest`: 6 bits each, the partial last one excluded.
        let determined = rest.len() * 8 / 6;
        if determined < MIN_ENCODED_CHARS {
            continue;
        }
        let mut standard = STANDARD_NO_PAD.encode(rest);
        standard.truncate(determined);
        let mut url_safe = URL_SAFE_NO_PAD.encode(rest);
        url_safe.truncate(determined);
        if skip == 0 {
            for width in BASE64_WRAP_WIDTHS {
                wrapped_pieces(&standard, width, forms);
            }
        }
        forms.push(standard);
        forms.push(url_safe);
    }
}

/// The lines a long encoding is wrapped into at `width`, when it starts a line.
fn wrapped_pieces(encoded: &str, width: usize, forms: &mut Vec<String>) {
    if encoded.len() <= width {
        return;
    }
    let mut rest = encoded;
    while !rest.is_empty() {
        let (piece, tail) = rest.split_at(width.min(rest.len()));
        if piece.len() >= MIN_ENCODED_CHARS {
            forms.push(piece.to_owned());
        }
        rest = tail;
    }
}

/// Lower- and upper-case hex (`xxd -p`, `od`, `hexdump`), and `xxd -p`'s wrapped lines.
fn hex_forms(bytes: &[u8], forms: &mut Vec<String>) {
    if bytes.len() * 2 < MIN_ENCODED_CHARS {
        return;
    }
    let lower: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    wrapped_pieces(&lower, HEX_WRAP_WIDTH, forms);
    forms.push(lower.to_ascii_uppercase());
    forms.push(lower);
}

/// The inside of a JSON string holding `value`: as GitHub's `toJSON` writes it (and
/// Newtonsoft, serde_json and JavaScript, which differ only in U+0085/U+2028/U+2029), with
/// every non-ASCII character escaped (Python's default), and with `<`, `>`, `&` escaped too
/// (Go's encoding/json).
fn json_forms(value: &str, forms: &mut Vec<String>) {
    let quoted = to_json_string(&Value::string(value));
    let github = quoted[1..quoted.len() - 1].to_owned();
    if let Ok(plain) = serde_json::to_string(value) {
        forms.push(plain[1..plain.len() - 1].to_owned());
    }
    let mut ascii = String::with_capacity(github.len());
    let mut go = String::with_capacity(github.len());
    for c in github.chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                ascii.push_str(&format!("\\u{unit:04x}"));
            }
        }
        match c {
            '<' => go.push_str("\\u003c"),
            '>' => go.push_str("\\u003e"),
            '&' => go.push_str("\\u0026"),
            c => go.push(c),
        }
    }
    forms.extend([github, ascii, go]);
}

/// Percent-encoding of the UTF-8 bytes, leaving RFC 3986's unreserved characters (and those
/// `keep` names) as they are; `plus` writes a space as `+` (HTML forms).
fn uri_escape(value: &str, keep: impl Fn(u8) -> bool, plus: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || keep(b) {
            out.push(char::from(b));
        } else if plus && b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// .NET's `SecurityElement.Escape`, which GitHub uses.
fn xml_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// HTML escaping as Python's `html.escape` and most templates write it: XML's, with `'` as a
/// character reference (an `&apos;` of the value itself was escaped to `&amp;apos;`).
fn html_escape(value: &str) -> String {
    xml_escape(value).replace("&apos;", "&#x27;")
}

/// PowerShell may print a secret holding `&` in two parts when it reports an error about it:
/// the text up to the last `&` (or up to and including the first `&+`), and what follows
/// (after `&+`, without the character that got coloured). GitHub masks both parts when they
/// have at least 6 characters.
fn powershell_ampersand_parts(value: &str, forms: &mut Vec<String>) {
    let (before, after) = if let Some(at) = value.find("&+") {
        let after_start = at + 2;
        let after = value[after_start..]
            .char_indices()
            .nth(1)
            .map_or("", |(i, _)| &value[after_start + i..]);
        (&value[..after_start], after)
    } else if let Some(at) = value.rfind('&') {
        (&value[..=at], &value[at + 1..])
    } else {
        return;
    };
    for part in [before, after] {
        if part.chars().count() >= 6 {
            forms.push(part.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(forms: &[String], form: &str) -> bool {
        forms.iter().any(|f| f == form)
    }

    #[test]
    fn base64_forms_match_the_secret_at_any_alignment_and_any_neighbour() {
        let secret = "hunter2-long";
        let forms = derived_forms(secret);
        for prefix in ["", "u", "u:", "us:", "user:"] {
            for suffix in ["", "\n", " and more", "Z"] {
                let text = format!("{prefix}{secret}{suffix}");
                for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
                    let encoded = engine.encode(text.as_bytes());
                    assert!(
                        forms
                            .iter()
                            .any(|f| f.len() >= 12 && encoded.contains(f.as_str())),
                        "no form of {secret:?} in base64({text:?}) = {encoded}"
                    );
                }
            }
        }
    }

    #[test]
    fn wrapped_base64_lines_are_registered() {
        let secret = "x".repeat(120);
        let encoded = STANDARD_NO_PAD.encode(format!("{secret}\n"));
        let forms = derived_forms(&secret);
        for line in encoded.as_bytes().chunks(76).take(2) {
            let line = std::str::from_utf8(line).unwrap();
            assert!(
                forms
                    .iter()
                    .any(|f| line.contains(f.as_str()) && f.len() > 40),
                "{line}"
            );
        }
    }

    #[test]
    fn json_uri_xml_and_quoting_forms() {
        let forms = derived_forms("pa\"ss\\wörd<&>'x y/z");
        for form in [
            "pa\\\"ss\\\\wörd<&>'x y/z",
            "pa\\\"ss\\\\w\\u00f6rd<&>'x y/z",
            "pa\\\"ss\\\\wörd\\u003c\\u0026\\u003e'x y/z",
            "pa%22ss%5Cw%C3%B6rd%3C%26%3E%27x%20y%2Fz",
            "pa%22ss%5Cw%C3%B6rd%3C%26%3E'x%20y%2Fz",
            "pa%22ss%5Cw%C3%B6rd%3C%26%3E%27x+y%2Fz",
            "pa&quot;ss\\wörd&lt;&amp;&gt;&apos;x y/z",
            "pa\\\"ss\\wörd<&>'x y/z",
            "pa\"ss\\wörd<&>''x y/z",
            "pa\"ss\\wörd<&>'\\''x y/z",
        ] {
            assert!(has(&forms, form), "{form} not in {forms:#?}");
        }
        let multiline = derived_forms("line one\nline\ttwo");
        assert!(has(&multiline, "line one\\nline\\ttwo"), "{multiline:#?}");
    }

    #[test]
    fn githubs_quote_trim_and_powershell_parts() {
        let forms = derived_forms("\"quoted-secret\"");
        assert!(has(&forms, "quoted-secret"));
        let forms = derived_forms("secretpart1&secretpart2&secretpart3");
        assert!(has(&forms, "secretpart1&secretpart2&"));
        assert!(has(&forms, "secretpart3"));
        let forms = derived_forms("secretpart1&+secretpart2");
        assert!(has(&forms, "secretpart1&+"));
        assert!(has(&forms, "ecretpart2"));
    }

    #[test]
    fn short_values_get_no_short_encodings() {
        let forms = derived_forms("ab");
        assert!(forms.iter().all(|f| f.len() >= 4), "{forms:?}");
        assert!(derived_forms("plainword").iter().all(|f| f != "plainword"));
    }
}
