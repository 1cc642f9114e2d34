//! Workflow commands a step prints on stdout: `::name k=v,k2=v2::data` and the legacy
//! `##[name k=v;]data`, with the runner's escaping, annotation property rules,
//! `stop-commands` pausing and `add-mask` line splitting.

use indexmap::IndexMap;

/// The command names the runner knows. Any other name means the line is ordinary output.
pub const REGISTERED_COMMANDS: &[&str] = &[
    "add-mask",
    "add-matcher",
    "add-path",
    "debug",
    "echo",
    "endgroup",
    "error",
    "group",
    "internal-set-repo-path",
    "notice",
    "remove-matcher",
    "save-state",
    "set-env",
    "set-output",
    STOP_COMMANDS,
    "warning",
];

pub const STOP_COMMANDS: &str = "stop-commands";

/// A parsed workflow command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Lower-cased: command names are case-insensitive.
    pub name: String,
    /// Unescaped property values; keys as written (the first spelling of a key wins when it
    /// repeats in another case, the later value wins).
    pub properties: IndexMap<String, String>,
    /// Unescaped data after the command.
    pub data: String,
}

impl Command {
    /// Property lookup ignoring case, as the runner's property dictionary does.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn set_property(&mut self, key: &str, value: String) {
        match self
            .properties
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
        {
            Some((_, slot)) => *slot = value,
            None => {
                self.properties.insert(key.to_string(), value);
            }
        }
    }

    fn remove_property(&mut self, key: &str) {
        self.properties.retain(|k, _| !k.eq_ignore_ascii_case(key));
    }
}

/// Parses one stdout line against the runner's registered commands. `None` when the line is
/// not a command, including a well-formed command with an unknown name.
pub fn parse_command_line(line: &str) -> Option<Command> {
    parse_command_line_with(line, |name| {
        REGISTERED_COMMANDS
            .iter()
            .any(|known| known.eq_ignore_ascii_case(name))
    })
}

/// Like [`parse_command_line`], with the caller deciding which names are commands (the
/// `stop-commands` token becomes one while commands are paused).
pub fn parse_command_line_with(
    line: &str,
    is_registered: impl Fn(&str) -> bool,
) -> Option<Command> {
    parse_v2(line, &is_registered).or_else(|| parse_legacy(line, &is_registered))
}

/// `::name props::data`: only leading whitespace may come before the `::`.
fn parse_v2(line: &str, is_registered: &dyn Fn(&str) -> bool) -> Option<Command> {
    let rest = line.trim_start().strip_prefix("::")?;
    let end = rest.find("::")?;
    let (info, data) = (&rest[..end], &rest[end + 2..]);
    let mut command = named_command(info, is_registered)?;
    if let Some((_, properties)) = info.split_once(' ') {
        for item in properties.trim().split(',') {
            if let Some((key, value)) = property_pair(item) {
                command.set_property(key, unescape(value, PROPERTY_ESCAPES));
            }
        }
    }
    command.data = unescape(data, DATA_ESCAPES);
    Some(command)
}

/// `##[name props]data`: the legacy form may start anywhere in the line.
fn parse_legacy(line: &str, is_registered: &dyn Fn(&str) -> bool) -> Option<Command> {
    let start = line.find("##[")? + 3;
    let close = start + line[start..].find(']')?;
    let (info, data) = (&line[start..close], &line[close + 1..]);
    let mut command = named_command(info, is_registered)?;
    if let Some((_, properties)) = info.split_once(' ') {
        for item in properties.split(';') {
            if let Some((key, value)) = property_pair(item) {
                command.set_property(key, unescape(value, LEGACY_ESCAPES));
            }
        }
    }
    command.data = unescape(data, LEGACY_ESCAPES);
    Some(command)
}

fn named_command(info: &str, is_registered: &dyn Fn(&str) -> bool) -> Option<Command> {
    let name = info.split_once(' ').map_or(info, |(name, _)| name);
    if name.is_empty() || !is_registered(name) {
        return None;
    }
    Some(Command {
        name: name.to_lowercase(),
        properties: IndexMap::new(),
        data: String::new(),
    })
}

/// Splits `key=value` the way .NET's `Split('=', 2, RemoveEmptyEntries)` does: empty pieces
/// vanish, so leading `=` before the key and extra `=` right after it are skipped, and a
/// pair with an empty key or value is dropped.
fn property_pair(item: &str) -> Option<(&str, &str)> {
    let (key, value) = item.trim_start_matches('=').split_once('=')?;
    let value = value.trim_start_matches('=');
    (!key.is_empty() && !value.is_empty()).then_some((key, value))
}

type Escapes = &'static [(&'static str, char)];

/// `%25` is decoded last by the runner; decoding left to right gives the same result because
/// no other replacement produces a `%`.
const DATA_ESCAPES: Escapes = &[("%0D", '\r'), ("%0A", '\n'), ("%25", '%')];
const PROPERTY_ESCAPES: Escapes = &[
    ("%0D", '\r'),
    ("%0A", '\n'),
    ("%3A", ':'),
    ("%2C", ','),
    ("%25", '%'),
];
const LEGACY_ESCAPES: Escapes = &[
    ("%3B", ';'),
    ("%0D", '\r'),
    ("%0A", '\n'),
    ("%5D", ']'),
    ("%25", '%'),
];

fn unescape(text: &str, escapes: Escapes) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        match escapes.iter().find(|(code, _)| tail.starts_with(code)) {
            Some((code, decoded)) => {
                out.push(*decoded);
                rest = &tail[code.len()..];
            }
            None => {
                out.push('%');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn escape(text: &str, escapes: Escapes) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match escapes.iter().find(|(_, decoded)| *decoded == c) {
            Some((code, _)) => out.push_str(code),
            None => out.push(c),
        }
    }
    out
}

/// Escapes command data for emitting `::name::data`.
pub fn escape_data(s: &str) -> String {
    escape(s, DATA_ESCAPES)
}

/// Escapes a property value for emitting `::name key=value::`.
pub fn escape_property(s: &str) -> String {
    escape(s, PROPERTY_ESCAPES)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnotationLevel {
    Error,
    Warning,
    Notice,
}

/// An `error`/`warning`/`notice` command after the runner's position rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    pub level: AnnotationLevel,
    pub message: String,
    /// As written; making it relative to the workspace is the runner's job.
    pub file: Option<String>,
    pub line: Option<u32>,
    pub end_line: Option<u32>,
    pub col: Option<u32>,
    pub end_column: Option<u32>,
    pub title: Option<String>,
}

/// Builds the annotation for an `error`, `warning` or `notice` command; `None` for others.
///
/// Position rules, applied in order: an `endLine` without `line` becomes the `line`; an
/// `endColumn` without `col` becomes the `col`; columns need a line; columns are dropped
/// when `line` and `endLine` differ; `endLine < line` drops both lines; `endColumn < col`
/// drops both columns. Values that are not integers count as absent.
pub fn annotation_from(cmd: &Command) -> Option<Annotation> {
    let level = match cmd.name.as_str() {
        "error" => AnnotationLevel::Error,
        "warning" => AnnotationLevel::Warning,
        "notice" => AnnotationLevel::Notice,
        _ => return None,
    };
    let mut props = cmd.clone();
    normalise_positions(&mut props);
    let number = |key: &str| {
        props
            .property(key)
            .and_then(parse_int)
            .and_then(|n| u32::try_from(n).ok())
    };
    Some(Annotation {
        level,
        message: cmd.data.clone(),
        file: props.property("file").map(str::to_string),
        line: number("line"),
        end_line: number("endLine"),
        col: number("col"),
        end_column: number("endColumn"),
        title: props.property("title").map(str::to_string),
    })
}

/// .NET `int.TryParse`: surrounding whitespace and a sign allowed.
fn parse_int(text: &str) -> Option<i64> {
    text.trim().parse::<i32>().ok().map(i64::from)
}

fn normalise_positions(cmd: &mut Command) {
    let read = |cmd: &Command, key: &str| cmd.property(key).map(str::to_string);
    let mut line = read(cmd, "line");
    let end_line = read(cmd, "endLine");
    let mut col = read(cmd, "col");
    let end_column = read(cmd, "endColumn");
    let num = |v: &Option<String>| v.as_deref().and_then(parse_int);

    let mut has_line = num(&line).is_some();
    let has_end_line = num(&end_line).is_some();
    let mut has_col = num(&col).is_some();
    let has_end_col = num(&end_column).is_some();
    let has_column = has_col || has_end_col;

    if has_end_line && !has_line {
        line.clone_from(&end_line);
        if let Some(value) = &line {
            cmd.set_property("line", value.clone());
        }
        has_line = true;
    }
    if has_end_col && !has_col {
        col.clone_from(&end_column);
        if let Some(value) = &col {
            cmd.set_property("col", value.clone());
        }
        has_col = true;
    }
    if !has_line && has_column {
        cmd.remove_property("col");
        cmd.remove_property("endColumn");
    }
    if has_end_line && line != end_line && has_column {
        cmd.remove_property("col");
        cmd.remove_property("endColumn");
    }
    if has_line && has_end_line && num(&end_line) < num(&line) {
        cmd.remove_property("line");
        cmd.remove_property("endLine");
    }
    if has_col && has_end_col && num(&end_column) < num(&col) {
        cmd.remove_property("col");
        cmd.remove_property("endColumn");
    }
}

/// The values `add-mask` registers: the value itself and, for a multi-line value, each of
/// its non-empty lines, because output is masked line by line. Empty when the value is
/// blank: the runner warns and masks nothing.
pub fn mask_values(data: &str) -> Vec<String> {
    if data.trim().is_empty() {
        return Vec::new();
    }
    let mut values = vec![data.to_string()];
    for line in data.split(['\r', '\n']) {
        if !line.trim().is_empty() && !values.iter().any(|v| v == line) {
            values.push(line.to_string());
        }
    }
    values
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StopTokenError {
    #[error("The stop-commands token must not be empty, 'pause-logging' or the name of a workflow command; use a random token (set ACTIONS_ALLOW_UNSECURE_COMMANDS=true to allow it anyway)")]
    Unsafe,
}

/// What the step executor should do with a stdout line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    /// A command to execute.
    Command(Command),
    /// `stop-commands` accepted: commands are paused from the next line on.
    Paused,
    /// The token line: commands are processed again from the next line on.
    Resumed,
    /// Ordinary output (or a command while paused).
    Output,
}

/// The `::stop-commands::TOKEN` ... `::TOKEN::` state machine. While paused, the only
/// command recognised is the token itself, in any form the parser accepts (`::TOKEN::`,
/// `##[TOKEN]`), compared ignoring case.
#[derive(Debug, Clone, Default)]
pub struct StopCommands {
    token: Option<String>,
    /// `ACTIONS_ALLOW_UNSECURE_COMMANDS`: accept tokens that are otherwise refused.
    pub allow_unsafe_tokens: bool,
}

impl StopCommands {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_paused(&self) -> bool {
        self.token.is_some()
    }

    /// The current token, which the runner also masks in the log when longer than 6
    /// characters.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Classifies one stdout line, updating the pause state. An unsafe token is an error,
    /// which fails the command (and so the step) as the runner does.
    pub fn process(&mut self, line: &str) -> Result<LineKind, StopTokenError> {
        if let Some(token) = &self.token {
            let resumed =
                parse_command_line_with(line, |name| name.eq_ignore_ascii_case(token)).is_some();
            if resumed {
                self.token = None;
                return Ok(LineKind::Resumed);
            }
            return Ok(LineKind::Output);
        }
        let Some(command) = parse_command_line(line) else {
            return Ok(LineKind::Output);
        };
        if command.name != STOP_COMMANDS {
            return Ok(LineKind::Command(command));
        }
        let token = command.data;
        let unsafe_token = token.is_empty()
            || token.eq_ignore_ascii_case("pause-logging")
            || REGISTERED_COMMANDS
                .iter()
                .any(|known| known.eq_ignore_ascii_case(&token));
        if unsafe_token && !self.allow_unsafe_tokens {
            return Err(StopTokenError::Unsafe);
        }
        self.token = Some(token);
        Ok(LineKind::Paused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Command {
        parse_command_line(line).unwrap_or_else(|| panic!("`{line}` should parse"))
    }

    #[test]
    fn unregistered_names_are_output_and_names_ignore_case() {
        assert_eq!(parse_command_line("::do-something::x"), None);
        assert_eq!(parse_command_line("::::x"), None);
        assert_eq!(cmd("::WARNING::x").name, "warning");
        assert_eq!(cmd("  ##[Debug]hi").data, "hi");
    }

    #[test]
    fn escaping_round_trips() {
        let text = "50% done:\r\nnext, a,b";
        let line = format!(
            "::error title={}::{}",
            escape_property(text),
            escape_data(text)
        );
        let parsed = cmd(&line);
        assert_eq!(parsed.data, text);
        assert_eq!(parsed.property("TITLE"), Some(text));
    }

    #[test]
    fn property_pairs_follow_dotnet_split() {
        let parsed = cmd("::error a==b,=c=d,e=,=f,g=h=i::");
        let got: Vec<(&str, &str)> = parsed
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(got, vec![("a", "b"), ("c", "d"), ("g", "h=i")]);
    }

    fn annotation(line: &str) -> Annotation {
        annotation_from(&cmd(line)).unwrap_or_else(|| panic!("`{line}` is an annotation"))
    }

    #[test]
    fn annotation_positions_are_normalised() {
        let a = annotation("::warning file=a.rs,line=3,col=2,endColumn=5,title=T::msg");
        assert_eq!(
            (
                a.level,
                a.file.as_deref(),
                a.line,
                a.col,
                a.end_column,
                a.title.as_deref()
            ),
            (
                AnnotationLevel::Warning,
                Some("a.rs"),
                Some(3),
                Some(2),
                Some(5),
                Some("T")
            )
        );
        assert_eq!(a.message, "msg");

        // Columns need a line.
        let a = annotation("::error col=4::m");
        assert_eq!((a.line, a.col, a.end_column), (None, None, None));

        // Columns are dropped across several lines.
        let a = annotation("::error line=1,endLine=3,col=1,endColumn=2::m");
        assert_eq!(
            (a.line, a.end_line, a.col, a.end_column),
            (Some(1), Some(3), None, None)
        );

        // endLine before line drops both lines.
        let a = annotation("::notice line=5,endLine=2::m");
        assert_eq!(
            (a.level, a.line, a.end_line),
            (AnnotationLevel::Notice, None, None)
        );

        // endLine alone becomes the line; endColumn alone becomes the column.
        let a = annotation("::error endLine=7,endColumn=3::m");
        assert_eq!(
            (a.line, a.end_line, a.col, a.end_column),
            (Some(7), Some(7), Some(3), Some(3))
        );

        // endColumn before col drops both columns; non-numbers are absent.
        let a = annotation("::error line=2,col=9,endColumn=4::m");
        assert_eq!((a.line, a.col, a.end_column), (Some(2), None, None));
        let a = annotation("::error line=x,col=1::m");
        assert_eq!((a.line, a.col), (None, None));

        assert_eq!(annotation_from(&cmd("::debug::m")), None);
    }

    #[test]
    fn add_mask_masks_each_line_too() {
        assert_eq!(
            mask_values("a\nb\r\nc\n\nb"),
            vec!["a\nb\r\nc\n\nb", "a", "b", "c"]
        );
        assert_eq!(mask_values("single"), vec!["single"]);
        assert!(mask_values("  \n ").is_empty());
    }

    #[test]
    fn stop_commands_pause_until_the_token() {
        let mut state = StopCommands::new();
        assert_eq!(
            state.process("::stop-commands::s3cr3t-token"),
            Ok(LineKind::Paused)
        );
        assert!(state.is_paused());
        assert_eq!(
            state.process("::error::not a command now"),
            Ok(LineKind::Output)
        );
        assert_eq!(
            state.process("::stop-commands::other"),
            Ok(LineKind::Output)
        );
        assert_eq!(state.process("  ::S3CR3T-TOKEN::"), Ok(LineKind::Resumed));
        assert!(!state.is_paused());
        assert!(matches!(
            state.process("::error::now it is"),
            Ok(LineKind::Command(_))
        ));
        assert_eq!(state.process("plain output"), Ok(LineKind::Output));
    }

    #[test]
    fn unsafe_stop_tokens_are_refused_unless_allowed() {
        let mut state = StopCommands::new();
        for token in ["", "pause-logging", "warning", "Add-Mask"] {
            assert_eq!(
                state.process(&format!("::stop-commands::{token}")),
                Err(StopTokenError::Unsafe)
            );
            assert!(!state.is_paused());
        }
        let mut lenient = StopCommands {
            allow_unsafe_tokens: true,
            ..StopCommands::new()
        };
        assert_eq!(
            lenient.process("::stop-commands::warning"),
            Ok(LineKind::Paused)
        );
        assert_eq!(lenient.process("::warning::"), Ok(LineKind::Resumed));
    }
}
