//! The dotenv format act reads for `--secret-file`, `--env-file`, `--var-file` and
//! `--input-file`: `KEY=VALUE` lines, `export KEY=VALUE`, `#` comments, single quotes (taken
//! literally), double quotes (with `\n`, `\t`, `\"`, `\\` escapes, and spanning lines).
//! Variable expansion (`${OTHER}`) is not performed: values are taken as written, so a secret
//! containing `$` arrives intact.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum DotenvError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: String,
        line: usize,
        message: String,
    },
}

/// Reads `path`; `Ok(None)` when it does not exist and `optional` is set (act's default file
/// names are read only when present).
pub fn read_file(
    path: &Path,
    optional: bool,
) -> Result<Option<Vec<(String, String)>>, DotenvError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if optional && error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DotenvError::Read {
                path: path.display().to_string(),
                source,
            })
        }
    };
    parse(&text)
        .map(Some)
        .map_err(|(line, message)| DotenvError::Syntax {
            path: path.display().to_string(),
            line,
            message,
        })
}

/// Parses dotenv text into pairs in file order (a later duplicate wins when collected into a
/// map). Errors carry the 1-based line number.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut pairs = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut index = 0;
    while index < lines.len() {
        let line_number = index + 1;
        let line = lines[index].trim_start_matches('\u{feff}').trim();
        index += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let Some(separator) = line.find(['=', ':']) else {
            return Err((line_number, format!("expected KEY=VALUE, found `{line}`")));
        };
        let key = line[..separator].trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err((line_number, format!("`{key}` is not a valid name")));
        }
        let rest = line[separator + 1..].trim_start();
        let value = match rest.chars().next() {
            Some('\'') => match rest[1..].find('\'') {
                Some(end) => rest[1..1 + end].to_owned(),
                None => return Err((line_number, "unterminated single quote".to_owned())),
            },
            Some('"') => {
                // A double-quoted value may continue on the following lines.
                let mut raw = rest[1..].to_owned();
                loop {
                    if let Some(end) = closing_quote(&raw) {
                        raw.truncate(end);
                        break unescape(&raw);
                    }
                    match lines.get(index) {
                        Some(next) => {
                            raw.push('\n');
                            raw.push_str(next);
                            index += 1;
                        }
                        None => return Err((line_number, "unterminated double quote".to_owned())),
                    }
                }
            }
            _ => strip_inline_comment(rest).trim_end().to_owned(),
        };
        pairs.push((key.to_owned(), value));
    }
    Ok(pairs)
}

/// The byte index of the first `"` not preceded by an escaping backslash.
fn closing_quote(raw: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in raw.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// An unquoted value ends at ` #` (a `#` glued to text, as in `a#b`, is part of the value).
fn strip_inline_comment(value: &str) -> &str {
    match value.find(" #").or_else(|| value.find("\t#")) {
        Some(end) => &value[..end],
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text).expect("valid dotenv")
    }

    #[test]
    fn plain_exported_commented_and_quoted_values() {
        let text = "# comment\nA=1\nexport B = two words # trailing\nC='lit $X \\n'\nD=\"a\\nb \\\"q\\\"\"\nE=x#y\n\nF=\n";
        assert_eq!(
            pairs(text),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "lit $X \\n".into()),
                ("D".into(), "a\nb \"q\"".into()),
                ("E".into(), "x#y".into()),
                ("F".into(), "".into()),
            ]
        );
    }

    #[test]
    fn double_quotes_span_lines() {
        assert_eq!(
            pairs("K=\"line1\nline2\"\nN=2"),
            vec![
                ("K".into(), "line1\nline2".into()),
                ("N".into(), "2".into())
            ]
        );
    }

    #[test]
    fn yaml_style_separator_is_accepted() {
        assert_eq!(pairs("KEY: value"), vec![("KEY".into(), "value".into())]);
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse("A=1\njunk").unwrap_err().0, 2);
        assert_eq!(parse("A='open").unwrap_err().0, 1);
        assert_eq!(parse("A=\"open\nstill").unwrap_err().0, 1);
        assert_eq!(parse("=x").unwrap_err().0, 1);
    }
}
