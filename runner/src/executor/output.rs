//! What happens to every line a step prints: workflow commands are executed, everything else
//! is masked and sent on as a [`JobEvent::Log`].

use kiln_workflow::commands::{
    annotation_from, mask_values, parse_command_line, Annotation, Command, LineKind, StopCommands,
};
use tokio::sync::mpsc::UnboundedSender;

use super::files::{thousands, ValueBudget};
use super::{AnnotationEvent, JobEvent};
use crate::backend::{LogSink, OutputStream};
use crate::mask::{LineMasker, Masker};

/// A workflow command line is run whole, so one longer than the line splitter's pieces is
/// kept until its end, up to this size (an output of the largest size, escaped); a longer
/// one is not run and fails the step.
const MAX_COMMAND_LINE_BYTES: usize = 2 * 1024 * 1024;
/// A step's failures are reported up to this many; a step repeating a failing command
/// millions of times must not make the job keep millions of messages.
const MAX_FAILURES: usize = 10;

const SET_OUTPUT_DEPRECATED: &str = "The `set-output` command is deprecated and will be disabled soon. Please upgrade to using Environment Files. For more information see: https://github.blog/changelog/2022-10-11-github-actions-deprecating-save-state-and-set-output-commands/";
const SAVE_STATE_DEPRECATED: &str = "The `save-state` command is deprecated and will be disabled soon. Please upgrade to using Environment Files. For more information see: https://github.blog/changelog/2022-10-11-github-actions-deprecating-save-state-and-set-output-commands/";

/// Job-wide log state: the masker and the warnings given once per job.
#[derive(Default)]
pub struct LogState {
    pub masker: Masker,
    pub warned_set_output: bool,
    pub warned_save_state: bool,
}

impl LogState {
    /// Masks one line that does not come from a process stream (messages of our own).
    pub fn mask(&self, line: &str) -> String {
        LineMasker::new().mask(&self.masker, line).into_owned()
    }
}

/// Sends job events, masking text first. Cheap to clone into a step sink.
#[derive(Clone)]
pub struct Emitter {
    pub events: UnboundedSender<JobEvent>,
}

impl Emitter {
    pub fn send(&self, event: JobEvent) {
        // A closed receiver means nobody is listening any more; the job still runs to its end.
        let _ = self.events.send(event);
    }

    pub fn log(&self, log: &LogState, step: &str, line: &str) {
        self.send(JobEvent::Log {
            step: step.to_owned(),
            line: log.mask(line),
        });
    }

    pub fn annotate(
        &self,
        log: &LogState,
        step: &str,
        level: kiln_workflow::commands::AnnotationLevel,
        message: &str,
    ) {
        self.send(JobEvent::Annotation(AnnotationEvent {
            step: step.to_owned(),
            annotation: Annotation {
                level,
                message: log.mask(message),
                file: None,
                line: None,
                end_line: None,
                col: None,
                end_column: None,
                title: None,
            },
        }));
    }
}

/// What the commands of one step produced besides log lines.
#[derive(Default, Debug)]
pub struct CommandEffects {
    pub outputs: Vec<(String, String)>,
    pub state: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
    pub path: Vec<String>,
    /// A command that failed the step (a refused `set-env`, an unsafe stop token), at most
    /// [`MAX_FAILURES`] of them; `more_failures` counts the others.
    pub failures: Vec<String>,
    pub more_failures: usize,
}

impl CommandEffects {
    fn fail(&mut self, message: String) {
        if self.failures.len() < MAX_FAILURES {
            self.failures.push(message);
        } else {
            self.more_failures += 1;
        }
    }

    /// Every failure, with a last line counting those not kept.
    pub fn failure_messages(&self) -> Vec<String> {
        let mut messages = self.failures.clone();
        if self.more_failures > 0 {
            messages.push(format!(
                "{} more workflow commands failed in this step.",
                self.more_failures
            ));
        }
        messages
    }
}

/// A line of a stream that arrives in pieces (see [`LogSink::piece`]).
#[derive(Default)]
enum LongLine {
    #[default]
    None,
    /// It starts like a workflow command: kept to be run whole at its end.
    Command(String),
    /// Output: masked and shown piece by piece.
    Output,
    /// A command longer than [`MAX_COMMAND_LINE_BYTES`]: dropped up to its end.
    Dropped,
}

/// The [`LogSink`] of one step.
pub struct StepSink<'a> {
    pub log: &'a mut LogState,
    pub emitter: &'a Emitter,
    pub step: &'a str,
    pub effects: CommandEffects,
    /// What the job's steps may still set (outputs, state, env, PATH).
    budget: &'a mut ValueBudget,
    /// `ACTIONS_ALLOW_UNSECURE_COMMANDS=true` in the step's environment.
    pub allow_unsecure: bool,
    /// `ACTIONS_STEP_DEBUG=true`: `::debug::` lines are shown.
    pub debug: bool,
    stop: StopCommands,
    echo: bool,
    maskers: [LineMasker; 2],
    long_lines: [LongLine; 2],
}

impl<'a> StepSink<'a> {
    pub fn new(
        log: &'a mut LogState,
        emitter: &'a Emitter,
        step: &'a str,
        budget: &'a mut ValueBudget,
        allow_unsecure: bool,
        debug: bool,
    ) -> Self {
        let mut stop = StopCommands::new();
        stop.allow_unsafe_tokens = allow_unsecure;
        StepSink {
            log,
            emitter,
            step,
            effects: CommandEffects::default(),
            budget,
            allow_unsecure,
            debug,
            stop,
            echo: false,
            maskers: [LineMasker::new(), LineMasker::new()],
            long_lines: [LongLine::None, LongLine::None],
        }
    }

    fn emit(&mut self, stream: OutputStream, line: &str) {
        let index = usize::from(stream == OutputStream::Stderr);
        let masked = self.maskers[index]
            .mask(&self.log.masker, line)
            .into_owned();
        self.emitter.send(JobEvent::Log {
            step: self.step.to_owned(),
            line: masked,
        });
    }

    /// Shows a piece of a long output line, less the end a secret could continue from.
    fn emit_piece(&mut self, stream: OutputStream, piece: &str) {
        let index = usize::from(stream == OutputStream::Stderr);
        let masked = self.maskers[index].mask_piece(&self.log.masker, piece);
        if !masked.is_empty() {
            self.emitter.send(JobEvent::Log {
                step: self.step.to_owned(),
                line: masked,
            });
        }
    }

    /// Takes in a value a command sets, or fails the step saying why it cannot.
    fn admit(&mut self, command: &str, name: &str, value: &str) -> bool {
        match self.budget.admit(name, value) {
            Ok(()) => true,
            Err(reason) => {
                self.effects.fail(format!(
                    "Unable to process command '::{command}' successfully. {reason}"
                ));
                false
            }
        }
    }

    fn whole_line(&mut self, stream: OutputStream, line: &str) {
        match self.stop.process(line) {
            Ok(LineKind::Command(command)) => self.execute(stream, line, command),
            Ok(LineKind::Paused | LineKind::Resumed | LineKind::Output) => self.emit(stream, line),
            Err(error) => {
                self.emit(stream, line);
                self.effects.fail(error.to_string());
            }
        }
    }

    fn warn(&mut self, message: &str) {
        self.emitter.annotate(
            self.log,
            self.step,
            kiln_workflow::commands::AnnotationLevel::Warning,
            message,
        );
    }

    fn execute(&mut self, stream: OutputStream, line: &str, command: Command) {
        if self.echo {
            self.emit(stream, line);
        }
        match command.name.as_str() {
            "add-mask" => {
                let values = mask_values(&command.data);
                if values.is_empty() {
                    self.warn("Can't add secret mask for empty string in ##[add-mask] command.");
                }
                for value in values {
                    self.log.masker.add(&value);
                }
            }
            "group" => self.emit(stream, &format!("##[group]{}", command.data)),
            "endgroup" => self.emit(stream, "##[endgroup]"),
            "debug" if self.debug => self.emit(stream, &format!("##[debug]{}", command.data)),
            "debug" => {}
            "error" | "warning" | "notice" => {
                if let Some(mut annotation) = annotation_from(&command) {
                    annotation.message = self.log.mask(&annotation.message);
                    annotation.title = annotation.title.as_deref().map(|t| self.log.mask(t));
                    self.emitter.send(JobEvent::Annotation(AnnotationEvent {
                        step: self.step.to_owned(),
                        annotation,
                    }));
                }
            }
            "echo" => match command.data.trim().to_ascii_lowercase().as_str() {
                "on" => self.echo = true,
                "off" => self.echo = false,
                _ => self.effects.fail(
                    "Invalid echo command value. Possible values can be: 'on', 'off'.".into(),
                ),
            },
            "set-output" => {
                if !self.log.warned_set_output {
                    self.log.warned_set_output = true;
                    self.warn(SET_OUTPUT_DEPRECATED);
                }
                match command.property("name") {
                    Some(name) if !name.is_empty() => {
                        let name = name.to_owned();
                        if self.admit("set-output", &name, &command.data) {
                            self.effects.outputs.push((name, command.data));
                        }
                    }
                    _ => self
                        .effects
                        .fail("Required field 'name' is missing in ##[set-output] command.".into()),
                }
            }
            "save-state" => {
                if !self.log.warned_save_state {
                    self.log.warned_save_state = true;
                    self.warn(SAVE_STATE_DEPRECATED);
                }
                if let Some(name) = command.property("name").filter(|n| !n.is_empty()) {
                    let name = name.to_owned();
                    if self.admit("save-state", &name, &command.data) {
                        self.effects.state.push((name, command.data));
                    }
                }
            }
            "set-env" | "add-path" if !self.allow_unsecure => {
                self.effects.fail(format!(
                    "The `{}` command is disabled. Please upgrade to using Environment Files or opt into unsecure command execution by setting the `ACTIONS_ALLOW_UNSECURE_COMMANDS` environment variable to `true`. For more information see: https://github.blog/changelog/2020-10-01-github-actions-deprecating-set-env-and-add-path-commands/",
                    command.name
                ));
            }
            "set-env" => match command.property("name").filter(|n| !n.is_empty()) {
                Some(name) => {
                    let name = name.to_owned();
                    if self.admit("set-env", &name, &command.data) {
                        self.effects.env.push((name, command.data));
                    }
                }
                None => self
                    .effects
                    .fail("Required field 'name' is missing in ##[set-env] command.".into()),
            },
            "add-path" if self.admit("add-path", "PATH", &command.data) => {
                self.effects.path.push(command.data)
            }
            "add-path" => {}
            // Problem matchers and the internal repo-path command have no effect in kiln.
            _ => {}
        }
    }
}

impl LogSink for StepSink<'_> {
    fn line(&mut self, stream: OutputStream, line: &str) {
        let index = usize::from(stream == OutputStream::Stderr);
        match std::mem::take(&mut self.long_lines[index]) {
            LongLine::None => self.whole_line(stream, line),
            LongLine::Command(mut text) => {
                text.push_str(line);
                self.whole_line(stream, &text);
            }
            LongLine::Output => self.emit(stream, line),
            LongLine::Dropped => {}
        }
    }

    fn piece(&mut self, stream: OutputStream, piece: &str) {
        let index = usize::from(stream == OutputStream::Stderr);
        match &mut self.long_lines[index] {
            LongLine::None => {
                let command = !self.stop.is_paused() && parse_command_line(piece).is_some();
                if command {
                    self.long_lines[index] = LongLine::Command(piece.to_owned());
                } else {
                    self.long_lines[index] = LongLine::Output;
                    self.emit_piece(stream, piece);
                }
            }
            LongLine::Command(text) if text.len() + piece.len() > MAX_COMMAND_LINE_BYTES => {
                self.long_lines[index] = LongLine::Dropped;
                self.effects.fail(format!(
                    "A workflow command line longer than {} bytes (2 MiB) was not run.",
                    thousands(MAX_COMMAND_LINE_BYTES)
                ));
            }
            LongLine::Command(text) => text.push_str(piece),
            LongLine::Output => self.emit_piece(stream, piece),
            LongLine::Dropped => {}
        }
    }
}
