//! What happens to every line a step prints: workflow commands are executed, everything else
//! is masked and sent on as a [`JobEvent::Log`].

use kiln_workflow::commands::{
    annotation_from, mask_values, Annotation, Command, LineKind, StopCommands,
};
use tokio::sync::mpsc::UnboundedSender;

use super::{AnnotationEvent, JobEvent};
use crate::backend::{LogSink, OutputStream};
use crate::mask::{LineMasker, Masker};

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
    /// A command that failed the step (a refused `set-env`, an unsafe stop token).
    pub failures: Vec<String>,
}

/// The [`LogSink`] of one step.
pub struct StepSink<'a> {
    pub log: &'a mut LogState,
    pub emitter: &'a Emitter,
    pub step: &'a str,
    pub effects: CommandEffects,
    /// `ACTIONS_ALLOW_UNSECURE_COMMANDS=true` in the step's environment.
    pub allow_unsecure: bool,
    /// `ACTIONS_STEP_DEBUG=true`: `::debug::` lines are shown.
    pub debug: bool,
    stop: StopCommands,
    echo: bool,
    maskers: [LineMasker; 2],
}

impl<'a> StepSink<'a> {
    pub fn new(
        log: &'a mut LogState,
        emitter: &'a Emitter,
        step: &'a str,
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
            allow_unsecure,
            debug,
            stop,
            echo: false,
            maskers: [LineMasker::new(), LineMasker::new()],
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
                _ => self.effects.failures.push(
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
                        self.effects.outputs.push((name, command.data));
                    }
                    _ => self
                        .effects
                        .failures
                        .push("Required field 'name' is missing in ##[set-output] command.".into()),
                }
            }
            "save-state" => {
                if !self.log.warned_save_state {
                    self.log.warned_save_state = true;
                    self.warn(SAVE_STATE_DEPRECATED);
                }
                if let Some(name) = command.property("name").filter(|n| !n.is_empty()) {
                    let name = name.to_owned();
                    self.effects.state.push((name, command.data));
                }
            }
            "set-env" | "add-path" if !self.allow_unsecure => {
                self.effects.failures.push(format!(
                    "The `{}` command is disabled. Please upgrade to using Environment Files or opt into unsecure command execution by setting the `ACTIONS_ALLOW_UNSECURE_COMMANDS` environment variable to `true`. For more information see: https://github.blog/changelog/2020-10-01-github-actions-deprecating-set-env-and-add-path-commands/",
                    command.name
                ));
            }
            "set-env" => match command.property("name").filter(|n| !n.is_empty()) {
                Some(name) => {
                    let name = name.to_owned();
                    self.effects.env.push((name, command.data));
                }
                None => self
                    .effects
                    .failures
                    .push("Required field 'name' is missing in ##[set-env] command.".into()),
            },
            "add-path" => self.effects.path.push(command.data),
            // Problem matchers and the internal repo-path command have no effect in kiln.
            _ => {}
        }
    }
}

impl LogSink for StepSink<'_> {
    fn line(&mut self, stream: OutputStream, line: &str) {
        match self.stop.process(line) {
            Ok(LineKind::Command(command)) => self.execute(stream, line, command),
            Ok(LineKind::Paused | LineKind::Resumed | LineKind::Output) => self.emit(stream, line),
            Err(error) => {
                self.emit(stream, line);
                self.effects.failures.push(error.to_string());
            }
        }
    }
}
