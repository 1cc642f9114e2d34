//! `-n`: the engine decides every job exactly as in a real run (conditions, needs, matrices,
//! platforms), but every step is reported as succeeding without running anything.

use std::time::{Duration, SystemTime};

use indexmap::IndexMap;
use kiln_scheduler::engine::{Dispatch, JobCompletion, StepRecord};
use kiln_workflow::model::{JobKind, Step, StepAction};
use kiln_workflow::Conclusion;
use tokio_util::sync::CancellationToken;

use super::platform::{Platform, PlatformMap};
use kiln_scheduler::drive::{EventSender, Executor, LegEvent, LegFuture};

/// The platform a leg runs on, or why it is skipped.
pub fn platform_for(platforms: &PlatformMap, dispatch: &Dispatch) -> Result<Platform, String> {
    platforms.resolve_or_explain(&dispatch.runs_on)
}

/// How a step is named in logs before evaluation: its `name:` as written, else GitHub's
/// `Run <first line>` / `Run <action>`.
pub fn step_label(step: &Step) -> String {
    if let Some(name) = &step.name {
        return name.raw.clone();
    }
    match &step.action {
        StepAction::Run { run, .. } => {
            let first = run
                .raw
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            format!("Run {first}")
        }
        StepAction::Uses { uses, .. } => format!("Run {}", uses.value),
        _ => step.effective_id.clone(),
    }
}

pub struct DryRun {
    pub platforms: PlatformMap,
}

impl Executor for DryRun {
    fn admit(&self, dispatch: &Dispatch) -> Result<(), String> {
        platform_for(&self.platforms, dispatch).map(|_| ())
    }

    fn run(
        &self,
        dispatch: Dispatch,
        events: EventSender,
        _cancel: CancellationToken,
        _kill: CancellationToken,
    ) -> LegFuture {
        Box::pin(async move {
            let started_at = SystemTime::now();
            let mut steps = Vec::new();
            if let JobKind::Steps(list) = &dispatch.job.kind {
                for step in list {
                    let name = step_label(step);
                    events.send(LegEvent::StepStarted { name: name.clone() });
                    events.send(LegEvent::StepFinished {
                        name: name.clone(),
                        conclusion: Conclusion::Success,
                        duration: Duration::ZERO,
                    });
                    steps.push(StepRecord {
                        id: step.effective_id.clone(),
                        name,
                        outcome: Conclusion::Success,
                        conclusion: Conclusion::Success,
                        cache: None,
                    });
                }
            }
            JobCompletion {
                conclusion: Conclusion::Success,
                outputs: IndexMap::new(),
                started_at,
                finished_at: SystemTime::now(),
                steps,
                summary: String::new(),
            }
        })
    }
}
