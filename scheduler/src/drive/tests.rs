use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln_workflow::Object;
use tokio::sync::Notify;

use super::*;
use crate::engine::RunSpec;

/// Runs legs without running anything: a leg whose `matrix.n` is 1 fails at once; one whose
/// `matrix.n` is 2, and job `waits`, wait for their cancel token; job `stubborn` waits for
/// its kill token, job `forever` never ends; the others take 20 ms. Legs on `nowhere` are
/// not admitted.
#[derive(Default)]
struct Fake {
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    started: Arc<Notify>,
}

impl Executor for Fake {
    fn admit(&self, dispatch: &Dispatch) -> Result<(), String> {
        if dispatch.runs_on.iter().any(|l| l == "nowhere") {
            return Err("no platform for nowhere".to_owned());
        }
        Ok(())
    }

    fn run(
        &self,
        dispatch: Dispatch,
        events: EventSender,
        cancel: CancellationToken,
        kill: CancellationToken,
    ) -> LegFuture {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        self.started.notify_one();
        let n = dispatch
            .matrix
            .as_ref()
            .and_then(|m| m.get("n"))
            .map(|n| n.to_display_string());
        let running = self.running.clone();
        Box::pin(async move {
            events.send(LegEvent::Log {
                line: format!("{} runs", dispatch.name),
            });
            let conclusion = if n.as_deref() == Some("1") {
                Conclusion::Failure
            } else if n.as_deref() == Some("2") || dispatch.job_id == "waits" {
                cancel.cancelled().await;
                Conclusion::Cancelled
            } else if dispatch.job_id == "stubborn" {
                kill.cancelled().await;
                Conclusion::Cancelled
            } else if dispatch.job_id == "forever" {
                std::future::pending().await
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Conclusion::Success
            };
            running.fetch_sub(1, Ordering::SeqCst);
            JobCompletion::new(conclusion)
        })
    }
}

/// Interruptions that arrive once the first leg started, in order; then none.
struct Scripted {
    started: Arc<Notify>,
    waited: bool,
    script: VecDeque<Interrupt>,
}

impl Interrupts for Scripted {
    async fn next(&mut self) -> Interrupt {
        if !self.waited {
            self.started.notified().await;
            self.waited = true;
        }
        match self.script.pop_front() {
            Some(interrupt) => interrupt,
            None => std::future::pending().await,
        }
    }
}

/// What the observer was told, as text.
#[derive(Default)]
struct Log(Vec<String>);

impl Observer for Log {
    fn observe(&mut self, event: DriveEvent<'_>) {
        self.0.push(match event {
            DriveEvent::Engine { prefix, event } => format!("{prefix}: engine {event:?}"),
            DriveEvent::LegSkipped { job, reason } => format!("{job}: skipped: {reason}"),
            DriveEvent::LegStarted { job } => format!("{job}: started"),
            DriveEvent::Leg { job, event } => format!("{job}: {event:?}"),
            DriveEvent::LegPanicked { job, error } => format!("{job}: panicked {error}"),
            DriveEvent::LegFinished {
                job, conclusion, ..
            } => format!("{job}: finished {conclusion:?}"),
            DriveEvent::Interrupted(i) => format!("interrupted {}", i.count),
            DriveEvent::GraceOver => "grace over".to_owned(),
        });
    }
}

impl Log {
    fn has(&self, line: &str) -> bool {
        self.0.iter().any(|l| l == line)
    }
}

fn run(prefix: &str, yaml: &str) -> WorkflowRun {
    run_in(prefix, yaml, None)
}

/// A run whose concurrency groups are `groups` (as the `index`th run), or its own.
fn run_in(prefix: &str, yaml: &str, groups: Option<(&SharedGroups, usize)>) -> WorkflowRun {
    let workflow = Arc::new(
        kiln_workflow::parse_workflow("w.yml", yaml)
            .value
            .expect("valid workflow"),
    );
    let spec = RunSpec {
        workflow: workflow.clone(),
        workflow_file: "w.yml".to_owned(),
        github: Object::new(),
        inputs: Object::new(),
        vars: Object::new(),
        secrets: Object::new(),
        job_filter: None,
        matrix_filter: Vec::new(),
    };
    let engine = match groups {
        None => Engine::new(spec),
        Some((groups, index)) => Engine::with_concurrency(
            spec,
            EngineOptions::default(),
            Box::new(SharedConcurrency::new(index, groups.0.clone())),
        ),
    };
    WorkflowRun {
        engine: engine.expect("engine"),
        prefix: prefix.to_owned(),
        workflow,
        groups: groups.map(|(g, _)| g.clone()),
    }
}

async fn drive_with(
    runs: &mut [WorkflowRun],
    limit: usize,
    script: &[u32],
) -> (Ending, Log, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let mut interrupts = Scripted {
        started: fake.started.clone(),
        waited: false,
        script: script
            .iter()
            .map(|&count| Interrupt { signal: 2, count })
            .collect(),
    };
    let mut log = Log::default();
    let options = DriveOptions { limit, tick: None };
    let ending = tokio::time::timeout(
        Duration::from_secs(30),
        drive(runs, fake.clone(), &mut log, &mut interrupts, options),
    )
    .await
    .expect("the driver ends");
    (ending, log, fake)
}

const STEP: &str = "    steps:\n      - run: x\n";

#[tokio::test]
async fn fail_fast_cancels_running_legs_and_refused_legs_are_skipped_across_workflows() {
    let mut runs = [
        run(
            "ci",
            &format!("on: push\njobs:\n  m:\n    runs-on: linux\n    strategy:\n      matrix:\n        n: [1, 2]\n{STEP}  after:\n    needs: m\n    runs-on: linux\n{STEP}"),
        ),
        run(
            "other",
            &format!("on: push\njobs:\n  refused:\n    runs-on: nowhere\n{STEP}  ok:\n    runs-on: linux\n{STEP}"),
        ),
    ];
    let (ending, log, _) = drive_with(&mut runs, 8, &[]).await;
    assert_eq!(ending, Ending::Finished);
    assert_eq!(runs[0].engine.report().conclusion, Conclusion::Failure);
    assert_eq!(runs[1].engine.report().conclusion, Conclusion::Success);
    for line in [
        "ci/m (1): Log { line: \"m (1) runs\" }",
        "ci/m (1): finished Failure",
        // Only fail-fast's cancellation ends this leg.
        "ci/m (2): finished Cancelled",
        "other/refused: skipped: no platform for nowhere",
        "other/ok: finished Success",
    ] {
        assert!(log.has(line), "{line}: {:?}", log.0);
    }
    assert!(
        log.0.iter().any(|l| l.starts_with("ci: engine JobSkipped")),
        "`after` needs the failed job: {:?}",
        log.0
    );
}

#[tokio::test]
async fn no_more_legs_run_at_once_than_the_limit() {
    let yaml = format!(
        "on: push\njobs:\n  a:\n    runs-on: linux\n{STEP}  b:\n    runs-on: linux\n{STEP}  c:\n    runs-on: linux\n{STEP}"
    );
    let mut runs = [run("one", &yaml), run("two", &yaml)];
    let (ending, log, fake) = drive_with(&mut runs, 2, &[]).await;
    assert_eq!(ending, Ending::Finished);
    assert_eq!(fake.most.load(Ordering::SeqCst), 2, "{:?}", log.0);
    let finished = log.0.iter().filter(|l| l.ends_with("finished Success"));
    assert_eq!(finished.count(), 6);
}

#[tokio::test]
async fn an_interruption_cancels_the_run_and_a_second_stops_every_leg() {
    let waits = format!("on: push\njobs:\n  waits:\n    runs-on: linux\n{STEP}  later:\n    needs: waits\n    runs-on: linux\n{STEP}");
    let mut runs = [run("w", &waits)];
    let (ending, log, _) = drive_with(&mut runs, 8, &[1]).await;
    assert_eq!(ending, Ending::Interrupted);
    assert!(log.has("interrupted 1"), "{:?}", log.0);
    assert!(log.has("w/waits: finished Cancelled"), "{:?}", log.0);
    assert!(!log.has("w/later: started"), "{:?}", log.0);
    assert_eq!(runs[0].engine.report().conclusion, Conclusion::Cancelled);

    let stubborn = format!("on: push\njobs:\n  stubborn:\n    runs-on: linux\n{STEP}");
    let mut runs = [run("s", &stubborn)];
    let (ending, log, _) = drive_with(&mut runs, 8, &[1, 2]).await;
    assert_eq!(ending, Ending::Interrupted);
    assert!(log.has("interrupted 2"), "{:?}", log.0);
    assert!(log.has("s/stubborn: finished Cancelled"), "{:?}", log.0);
}

#[tokio::test]
async fn a_third_interruption_gives_up_at_once() {
    let forever = format!("on: push\njobs:\n  forever:\n    runs-on: linux\n{STEP}");
    let mut runs = [run("f", &forever)];
    let (ending, log, _) = drive_with(&mut runs, 8, &[1, 2, 3]).await;
    assert_eq!(ending, Ending::Abandoned);
    assert!(log.has("interrupted 3"), "{:?}", log.0);
}

#[tokio::test(start_paused = true)]
async fn legs_still_running_after_the_grace_are_stopped() {
    let stubborn = format!("on: push\njobs:\n  stubborn:\n    runs-on: linux\n{STEP}");
    let mut runs = [run("s", &stubborn)];
    let (ending, log, _) = drive_with(&mut runs, 8, &[1]).await;
    assert_eq!(ending, Ending::Interrupted);
    let grace = log.0.iter().position(|l| l == "grace over");
    let finished = log
        .0
        .iter()
        .position(|l| l == "s/stubborn: finished Cancelled");
    assert!(grace.is_some() && grace < finished, "{:?}", log.0);
}

/// Two workflows of one run in one concurrency group take turns (the second waits for the
/// first), as on GitHub where groups are repository-wide; with `cancel-in-progress` the
/// second cancels the first's running job instead.
#[tokio::test]
async fn workflows_of_one_run_share_their_concurrency_groups() {
    let groups = SharedGroups::default();
    let workflow = |cancel: bool, job: &str| {
        format!(
            "on: push\nconcurrency:\n  group: deploy\n  cancel-in-progress: {cancel}\njobs:\n  {job}:\n    runs-on: linux\n{STEP}"
        )
    };
    let mut runs = [
        run_in("first", &workflow(false, "ship"), Some((&groups, 0))),
        run_in("second", &workflow(false, "ship"), Some((&groups, 1))),
    ];
    let (ending, log, fake) = drive_with(&mut runs, 8, &[]).await;
    assert_eq!(ending, Ending::Finished);
    assert_eq!(fake.most.load(Ordering::SeqCst), 1, "{:?}", log.0);
    for run in &runs {
        assert_eq!(run.engine.report().conclusion, Conclusion::Success);
    }

    let groups = SharedGroups::default();
    let mut runs = [
        run_in("first", &workflow(false, "waits"), Some((&groups, 0))),
        run_in("second", &workflow(true, "ship"), Some((&groups, 1))),
    ];
    let (ending, log, _) = drive_with(&mut runs, 8, &[]).await;
    assert_eq!(ending, Ending::Finished);
    assert_eq!(
        runs[0].engine.report().conclusion,
        Conclusion::Cancelled,
        "{:?}",
        log.0
    );
    assert_eq!(runs[1].engine.report().conclusion, Conclusion::Success);
}
