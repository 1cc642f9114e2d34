//! The file commands a step writes: `GITHUB_ENV`, `GITHUB_OUTPUT` and `GITHUB_STATE` share one
//! `NAME=VALUE` / `NAME<<DELIM` format, and `GITHUB_PATH` holds one directory per line. The
//! runner reads them after the step ends, so their effects reach later steps only.

/// `GITHUB_ENV` may not set these: they would let one step inject code into every later
/// node-based action (the runner refuses them with an error annotation and goes on).
pub const BLOCKED_ENV_NAMES: &[&str] = &["NODE_OPTIONS"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvFileError {
    #[error("Invalid format '{0}'")]
    InvalidFormat(String),
    #[error("Invalid format '{0}'. Name must not be empty")]
    EmptyName(String),
    #[error("Invalid format '{0}'. Name must not be empty and delimiter must not be empty")]
    EmptyHeredocPart(String),
    #[error("Invalid value. Matching delimiter not found '{0}'")]
    DelimiterNotFound(String),
    #[error("Invalid value. EOF marker missing new line.")]
    MissingFinalNewline,
    #[error("Can't store {0} output parameter using '$GITHUB_ENV' command.")]
    BlockedName(String),
}

/// Which line endings end a line. The runner splits on `\n` only, except on Windows where a
/// `\r\n` pair also ends a line; on Linux a `\r` stays part of the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEndings {
    Lf,
    CrLfOrLf,
}

impl LineEndings {
    /// The runner's behaviour on the platform kiln was built for.
    pub fn native() -> Self {
        if cfg!(windows) {
            LineEndings::CrLfOrLf
        } else {
            LineEndings::Lf
        }
    }
}

/// Parses a `GITHUB_ENV`/`GITHUB_OUTPUT`/`GITHUB_STATE` file with the native line endings.
/// Pairs come back in file order; a name set twice appears twice (the later one wins when
/// applied).
pub fn parse_env_file(content: &str) -> Result<Vec<(String, String)>, EnvFileError> {
    parse_env_file_with(content, LineEndings::native())
}

pub fn parse_env_file_with(
    content: &str,
    endings: LineEndings,
) -> Result<Vec<(String, String)>, EnvFileError> {
    let text = content.strip_prefix('\u{feff}').unwrap_or(content);
    let mut lines = Lines {
        text,
        pos: 0,
        endings,
    };
    let mut pairs = Vec::new();
    while let Some(line) = lines.next_line() {
        if line.text.is_empty() {
            continue;
        }
        let equals = line.text.find('=');
        let heredoc = line.text.find("<<");
        match (equals, heredoc) {
            (Some(eq), hd) if hd.is_none_or(|hd| eq < hd) => {
                let (name, value) = (&line.text[..eq], &line.text[eq + 1..]);
                if name.is_empty() {
                    return Err(EnvFileError::EmptyName(line.text.to_string()));
                }
                pairs.push((name.to_string(), value.to_string()));
            }
            (_, Some(hd)) => {
                let (name, delimiter) = (&line.text[..hd], &line.text[hd + 2..]);
                if name.is_empty() || delimiter.is_empty() {
                    return Err(EnvFileError::EmptyHeredocPart(line.text.to_string()));
                }
                let value = read_heredoc(&mut lines, delimiter)?;
                pairs.push((name.to_string(), value.to_string()));
            }
            _ => return Err(EnvFileError::InvalidFormat(line.text.to_string())),
        }
    }
    Ok(pairs)
}

/// The value runs from the line after the header to the first line exactly equal to the
/// delimiter; the newline just before the delimiter is not part of it.
fn read_heredoc<'a>(lines: &mut Lines<'a>, delimiter: &str) -> Result<&'a str, EnvFileError> {
    let start = lines.pos;
    loop {
        let Some(line) = lines.next_line() else {
            return Err(EnvFileError::DelimiterNotFound(delimiter.to_string()));
        };
        if line.text == delimiter {
            let end = line
                .start
                .saturating_sub(line_break_before(lines, line.start));
            return Ok(if end > start {
                &lines.text[start..end]
            } else {
                ""
            });
        }
        if !line.ended_by_newline {
            return Err(EnvFileError::MissingFinalNewline);
        }
    }
}

/// Length of the line break that ends just before `at` (0 when `at` starts the file).
fn line_break_before(lines: &Lines<'_>, at: usize) -> usize {
    let before = &lines.text[..at];
    if lines.endings == LineEndings::CrLfOrLf && before.ends_with("\r\n") {
        2
    } else if before.ends_with('\n') {
        1
    } else {
        0
    }
}

struct Line<'a> {
    text: &'a str,
    start: usize,
    ended_by_newline: bool,
}

struct Lines<'a> {
    text: &'a str,
    pos: usize,
    endings: LineEndings,
}

impl<'a> Lines<'a> {
    fn next_line(&mut self) -> Option<Line<'a>> {
        if self.pos >= self.text.len() {
            return None;
        }
        let start = self.pos;
        let rest = &self.text[start..];
        let Some(lf) = rest.find('\n') else {
            self.pos = self.text.len();
            return Some(Line {
                text: rest,
                start,
                ended_by_newline: false,
            });
        };
        let mut end = lf;
        if self.endings == LineEndings::CrLfOrLf && rest[..lf].ends_with('\r') {
            end = lf - 1;
        }
        self.pos = start + lf + 1;
        Some(Line {
            text: &rest[..end],
            start,
            ended_by_newline: true,
        })
    }
}

/// Refuses the names `GITHUB_ENV` may not set. The runner compares them ignoring case, and
/// reports the refusal as an error annotation without failing the step.
pub fn check_env_name(name: &str) -> Result<(), EnvFileError> {
    match BLOCKED_ENV_NAMES
        .iter()
        .find(|blocked| blocked.eq_ignore_ascii_case(name))
    {
        Some(blocked) => Err(EnvFileError::BlockedName((*blocked).to_string())),
        None => Ok(()),
    }
}

/// The non-empty lines of a `GITHUB_PATH` file. The runner reads it with .NET's line reader,
/// which ends lines at `\n`, `\r\n` or a lone `\r` on every platform.
pub fn parse_path_file(content: &str) -> Vec<String> {
    let text = content.strip_prefix('\u{feff}').unwrap_or(content);
    text.split(['\r', '\n'])
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

/// Applies `GITHUB_PATH` entries to the runner's list of added directories (newest first):
/// each entry goes to the front, and an entry already present moves there instead of
/// appearing twice.
pub fn prepend_paths(existing: &mut Vec<String>, added: &[String]) {
    for entry in added {
        if entry.is_empty() {
            continue;
        }
        existing.retain(|present| present != entry);
        existing.insert(0, entry.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn strips_the_byte_order_mark() {
        assert_eq!(parse_env_file("\u{feff}A=1"), Ok(pairs(&[("A", "1")])));
    }

    #[test]
    fn crlf_ends_lines_only_in_windows_mode() {
        let text = "A=1\r\nB<<EOF\r\nx\r\ny\r\nEOF\r\n";
        assert_eq!(
            parse_env_file_with(text, LineEndings::CrLfOrLf),
            Ok(pairs(&[("A", "1"), ("B", "x\r\ny")]))
        );
        // On Linux the `\r` belongs to the text: the delimiter is `EOF\r`, found on `EOF\r`.
        assert_eq!(
            parse_env_file_with(text, LineEndings::Lf),
            Ok(pairs(&[("A", "1\r"), ("B", "x\r\ny\r")]))
        );
        assert_eq!(
            parse_env_file_with("B<<EOF\nx\r\nEOF\r\n", LineEndings::Lf),
            Err(EnvFileError::DelimiterNotFound("EOF".into()))
        );
        assert_eq!(
            parse_env_file_with("A=1\r\n", LineEndings::Lf),
            Ok(pairs(&[("A", "1\r")]))
        );
    }

    #[test]
    fn empty_names_and_delimiters_are_errors() {
        assert_eq!(
            parse_env_file("=abc"),
            Err(EnvFileError::EmptyName("=abc".into()))
        );
        assert_eq!(
            parse_env_file("<<EOF\nx\nEOF"),
            Err(EnvFileError::EmptyHeredocPart("<<EOF".into()))
        );
        assert_eq!(
            parse_env_file("A<<"),
            Err(EnvFileError::EmptyHeredocPart("A<<".into()))
        );
        assert_eq!(
            parse_env_file("JUSTTEXT"),
            Err(EnvFileError::InvalidFormat("JUSTTEXT".into()))
        );
    }

    #[test]
    fn heredoc_value_may_end_with_a_blank_line_before_the_delimiter() {
        assert_eq!(parse_env_file("A<<EOF\n\nEOF\n"), Ok(pairs(&[("A", "")])));
        assert_eq!(parse_env_file("A<<EOF\n\n\nEOF"), Ok(pairs(&[("A", "\n")])));
    }

    #[test]
    fn node_options_is_refused_whatever_its_case() {
        assert!(check_env_name("node_options").is_err());
        assert_eq!(
            check_env_name("NODE_OPTIONS").map_err(|e| e.to_string()),
            Err("Can't store NODE_OPTIONS output parameter using '$GITHUB_ENV' command.".into())
        );
        assert_eq!(check_env_name("NODE_ENV"), Ok(()));
    }

    #[test]
    fn path_entries_go_to_the_front_newest_first_without_duplicates() {
        let added = parse_path_file("\u{feff}/a\r\n\n/b\r/c\n");
        assert_eq!(added, vec!["/a", "/b", "/c"]);
        let mut path = vec!["/c".to_string(), "/old".to_string()];
        prepend_paths(&mut path, &added);
        assert_eq!(path, vec!["/c", "/b", "/a", "/old"]);
        prepend_paths(&mut path, &["/a".to_string()]);
        assert_eq!(path, vec!["/a", "/c", "/b", "/old"]);
    }
}
