//! How `kiln run` shows what its driver reports: the driver (kiln-scheduler's `drive`) tells
//! the [`Renderer`] what happened as values; the words and marks are chosen here.

use kiln_scheduler::drive::{DriveEvent, LegEvent, Observer, STOP_GRACE};
use kiln_scheduler::engine::EngineEvent;

use super::render::Renderer;
use super::signals::{describe, is_interrupt};

impl Observer for Renderer {
    fn observe(&mut self, event: DriveEvent<'_>) {
        match event {
            DriveEvent::Engine { prefix, event } => engine_event(self, prefix, event),
            DriveEvent::LegSkipped { job, reason } => {
                self.job_message(job, &format!("⊘ skipped: {reason}"))
            }
            DriveEvent::LegStarted { job } => self.job_started(job),
            DriveEvent::Leg { job, event } => match event {
                LegEvent::StepStarted { name } => self.step_started(job, &name),
                LegEvent::Log { line } => self.log(job, &line),
                LegEvent::StepFinished {
                    name,
                    conclusion,
                    duration,
                } => self.step_finished(job, &name, conclusion, duration),
                LegEvent::Message { text } => self.job_message(job, &text),
            },
            DriveEvent::LegPanicked { job, error } => {
                self.job_message(job, &format!("✘ internal error in kiln: {error}"))
            }
            DriveEvent::LegFinished {
                job,
                conclusion,
                duration,
            } => self.job_finished(job, conclusion, duration),
            DriveEvent::Interrupted(interrupt) => {
                let name = describe(interrupt.signal);
                match interrupt.count {
                    1 => {
                        let again = if is_interrupt(interrupt.signal) {
                            "Ctrl-C"
                        } else {
                            "send it"
                        };
                        self.notice(&format!(
                            "interrupted ({name}): cancelling the run; jobs still running in {}s are stopped ({again} again to stop them now)",
                            STOP_GRACE.as_secs()
                        ));
                    }
                    2 => self.notice(&format!("{name} again: stopping every job now; cleaning up (once more to exit without cleanup)")),
                    _ => self.notice("exiting without cleanup"),
                }
            }
            DriveEvent::GraceOver => self.notice(&format!(
                "jobs still running {}s after the interruption: stopping them now; cleaning up",
                STOP_GRACE.as_secs()
            )),
        }
    }

    fn flush(&mut self) {
        Renderer::flush(self);
    }

    fn tick(&mut self) {
        Renderer::tick(self);
    }
}

fn engine_event(renderer: &mut Renderer, prefix: &str, event: EngineEvent) {
    let (name, message) = match event {
        EngineEvent::JobSkipped { name, reason, .. } => (name, format!("⊘ skipped: {reason}")),
        EngineEvent::JobFailedToStart { name, error, .. } => {
            (name, format!("✘ failed to start: {error}"))
        }
        EngineEvent::JobDeferred { name, reason, .. } => (name, format!("⏸ deferred: {reason}")),
        EngineEvent::LegCancelled { name, reason, .. } => (name, format!("⊗ cancelled: {reason}")),
        EngineEvent::LegPending { name, group, .. } => {
            (name, format!("waiting for concurrency group `{group}`"))
        }
    };
    renderer.job_message(&format!("{prefix}/{name}"), &message);
}
