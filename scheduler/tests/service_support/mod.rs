//! A scheduler service over a real SQLite store in a temporary directory, with a planner that
//! serves workflow texts from memory and a clock the test moves.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_scheduler::service::*;
use kiln_scheduler::store::prelude::*;
use kiln_scheduler::store::*;
use kiln_workflow::Conclusion;

pub const T0: i64 = 1_700_000_000_000;
pub const TTL_MS: i64 = 3_000;
pub const REGISTRATION: &str = "registration-secret";

pub struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl TestClock {
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

/// Plans every submission as the runs of the workflows it was given, in order, with the
/// submission's secrets and a small github context.
#[derive(Default)]
pub struct MemoryPlanner {
    /// (path, text) of each workflow that runs.
    pub workflows: Mutex<Vec<(String, String)>>,
    pub callees: Mutex<BTreeMap<String, String>>,
    pub plans: Mutex<u32>,
    /// The names in each checkout the planner was given, sorted.
    pub checkouts: Mutex<Vec<Vec<String>>>,
}

impl RunPlanner for MemoryPlanner {
    fn plan(&self, request: &SubmitRequest, checkout: &Path) -> std::result::Result<Plan, String> {
        *self.plans.lock().unwrap() += 1;
        let mut names: Vec<String> = std::fs::read_dir(checkout)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".git")
            .collect();
        names.sort();
        self.checkouts.lock().unwrap().push(names);
        let workflows = self.workflows.lock().unwrap().clone();
        let callees = self.callees.lock().unwrap().clone();
        let runs = workflows
            .into_iter()
            .map(|(path, text)| PlannedRun {
                workflow_path: path,
                workflow_text: text,
                callees: callees.clone(),
                github: serde_json::json!({
                    "event_name": request.event_name,
                    "repository": request.repository,
                    "ref": request.git_ref,
                    "sha": "0123456789abcdef0123456789abcdef01234567",
                }),
                inputs: serde_json::Map::new(),
                vars: BTreeMap::new(),
                secrets: request.secrets.iter().cloned().collect(),
                env: request.env.clone(),
                job_filter: None,
                matrix_filter: Vec::new(),
            })
            .collect();
        Ok(Plan {
            runs,
            notices: Vec::new(),
        })
    }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub clock: Arc<TestClock>,
    pub planner: Arc<MemoryPlanner>,
    pub sched: Option<Arc<Scheduler>>,
    /// The runner each lease was given to (by lease id): job-scoped calls must name it.
    pub holders: Mutex<BTreeMap<String, RunnerRecord>>,
}

pub fn config() -> ServiceConfig {
    ServiceConfig {
        lease_ttl: Duration::from_millis(TTL_MS as u64),
        queue_timeout: Duration::from_secs(3600),
        public_url: "http://sched.test:9".to_owned(),
        ..ServiceConfig::default()
    }
}

impl Harness {
    pub fn new(workflows: &[(&str, &str)]) -> Harness {
        let planner = MemoryPlanner::default();
        *planner.workflows.lock().unwrap() = workflows
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        let mut harness = Harness {
            dir: tempfile::tempdir().unwrap(),
            clock: Arc::new(TestClock(AtomicI64::new(T0))),
            planner: Arc::new(planner),
            sched: None,
            holders: Mutex::default(),
        };
        harness.open();
        harness
    }

    /// Opens the scheduler over the data directory (again, after `crash`).
    pub fn open(&mut self) {
        let store = SqliteStore::open(self.dir.path(), self.clock.now_ms()).unwrap();
        store
            .write(|tx| tx.set_token(TokenKind::Registration, REGISTRATION, T0))
            .unwrap();
        let sched = Scheduler::open(
            Arc::new(store),
            self.planner.clone(),
            config(),
            self.clock.clone(),
        )
        .unwrap();
        self.sched = Some(Arc::new(sched));
    }

    /// Drops the scheduler without any shutdown, as SIGKILL would, and opens it again.
    pub fn restart(&mut self) {
        self.sched = None;
        self.open();
    }

    pub fn s(&self) -> &Scheduler {
        self.sched.as_ref().unwrap()
    }

    pub fn arc(&self) -> Arc<Scheduler> {
        self.sched.clone().unwrap()
    }

    pub fn submit(&self, secrets: &[(&str, &str)]) -> String {
        let request = request(secrets);
        let submission = self.s().submit(&request, "").unwrap();
        assert_eq!(submission.runs.len(), 1, "one workflow, one run");
        submission.runs[0].id.clone()
    }

    pub fn runner(&self, name: &str, labels: &[&str]) -> RunnerRecord {
        let registration = RunnerRegistration {
            name: name.to_owned(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            capacity: 1,
            version: "test".to_owned(),
        };
        self.s().register(REGISTRATION, &registration).unwrap().0
    }

    pub fn lease(&self, runner: &RunnerRecord) -> Option<LeasedJob> {
        let poll = format!("poll-{}", rand_id());
        let job = self.s().lease(runner, &poll).unwrap()?;
        self.holders
            .lock()
            .unwrap()
            .insert(job.job_ref.lease_id.clone(), runner.clone());
        Some(job)
    }

    /// The runner that leased `job_ref` through [`Harness::lease`].
    pub fn holder(&self, job_ref: &JobRef) -> RunnerRecord {
        self.holders
            .lock()
            .unwrap()
            .get(&job_ref.lease_id)
            .cloned()
            .expect("the job was leased through Harness::lease")
    }

    /// Leases the next job and checks its name.
    pub fn take(&self, runner: &RunnerRecord, name: &str) -> LeasedJob {
        let job = self
            .lease(runner)
            .unwrap_or_else(|| panic!("{} got no job, expected {name}", runner.name));
        assert_eq!(job.payload.name, name, "the job leased");
        job
    }

    pub fn finish(&self, job: &LeasedJob, conclusion: Conclusion) {
        self.s()
            .complete(
                &self.holder(&job.job_ref),
                &job.job_ref,
                &result(conclusion, &[]),
            )
            .unwrap();
    }

    pub fn run(&self, run_id: &str) -> RunRecord {
        self.s().store().get_run(run_id).unwrap().unwrap()
    }

    pub fn jobs(&self, run_id: &str) -> Vec<JobRecord> {
        self.s().store().jobs_of_run(run_id).unwrap()
    }

    /// `name=state[/conclusion]` of every job of the run.
    pub fn job_lines(&self, run_id: &str) -> Vec<String> {
        self.jobs(run_id)
            .iter()
            .map(|j| match j.conclusion {
                Some(c) => format!("{}={}", j.name, c.as_str()),
                None => format!("{}={:?}", j.name, j.state),
            })
            .collect()
    }
}

pub fn request(secrets: &[(&str, &str)]) -> SubmitRequest {
    SubmitRequest {
        event_name: "push".to_owned(),
        repository: "octo/app".to_owned(),
        git_ref: "refs/heads/main".to_owned(),
        secrets: secrets
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..SubmitRequest::default()
    }
}

pub fn result(conclusion: Conclusion, outputs: &[(&str, &str)]) -> JobResult {
    JobResult {
        conclusion,
        outputs: outputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        steps: Vec::new(),
        error: String::new(),
        summary: String::new(),
        started_ms: T0,
        finished_ms: T0,
        last_log_seq: 0,
    }
}

fn rand_id() -> u64 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::SeqCst)
}
