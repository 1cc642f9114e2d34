//! Diagnostics: every problem found in a file, each naming `file:line:col`, what is wrong and,
//! where we can tell, what was meant.

use std::fmt;

use serde::Serialize;

use crate::yaml::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One finding. `line`/`col` are 1-based; 0 means GitHub reports the problem for the whole
/// file (file size, depth, YAML tags) without a position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: u32,
    pub col: u32,
    pub severity: Severity,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(file: &str, pos: Option<Pos>, message: impl Into<String>) -> Diagnostic {
        let pos = pos.unwrap_or_default();
        Diagnostic {
            file: file.to_string(),
            line: pos.line,
            col: pos.col,
            severity: Severity::Error,
            message: message.into(),
            hint: None,
        }
    }

    pub fn warning(file: &str, pos: Option<Pos>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, pos, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    pub fn pos(&self) -> Option<Pos> {
        (self.line > 0).then_some(Pos {
            line: self.line,
            col: self.col,
        })
    }
}

/// `file:line:col: error: message`, and the hint on a following `  = help: ...` line.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}: {}",
                self.file, self.line, self.col, self.severity, self.message
            )?;
        } else {
            write!(f, "{}: {}: {}", self.file, self.severity, self.message)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  = help: {hint}")?;
        }
        Ok(())
    }
}

/// Levenshtein distance, bounded: inputs are short keys, but the caller may pass anything.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(256).flat_map(char::to_lowercase).collect();
    let b: Vec<char> = b.chars().take(256).flat_map(char::to_lowercase).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest allowed key to `found`, if it is close enough to be a plausible typo
/// (`runs_on` -> `runs-on`, `runn` -> `run`).
pub fn did_you_mean<'a>(
    found: &str,
    allowed: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let normalized = found.replace('_', "-");
    let limit = (found.chars().count() / 3).clamp(1, 3);
    allowed
        .into_iter()
        .map(|candidate| {
            (
                edit_distance(&normalized, candidate).min(edit_distance(found, candidate)),
                candidate,
            )
        })
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("runs_on", ["runs-on", "needs", "steps"]),
            Some("runs-on")
        );
        assert_eq!(did_you_mean("runn", ["run", "uses", "with"]), Some("run"));
        assert_eq!(did_you_mean("zzzzzz", ["run", "uses"]), None);
    }
}
