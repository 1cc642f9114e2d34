//! The pre and post stages of actions, as GitHub's runner sequences them: every `pre` (node)
//! or `pre-entrypoint` (Docker) of the job's remote actions runs when the job starts, in step
//! order, behind its `pre-if` (default `always()`, evaluated then); a local action's `pre`
//! cannot run (the repository is not checked out yet) and a warning says so. An action's post
//! stage is registered when its pre or its main stage runs, once, and post stages run at the
//! end of the job in reverse order of registration. State saved by any stage (`GITHUB_STATE`)
//! reaches the later stages as `STATE_*`.

use std::collections::{HashMap, HashSet};

use indexmap::IndexMap;
use kiln_workflow::commands::AnnotationLevel;
use kiln_workflow::model::{Runs, Step, StepAction};
use kiln_workflow::uses::RepositoryRef;
use kiln_workflow::Conclusion;
use std::time::Instant;

use super::resolve::{parse_uses, ActionRef, RemoteAction};
use super::{action_inputs, builtin, load_action, LoadedAction};
use crate::executor::job::{Frame, JobRunner};
use crate::executor::status::{Gate, StepOutcome};
use crate::executor::step::{PostWork, StepCtx};
use crate::executor::{JobEvent, StepRecord};

/// Names one run of an action: the step's id for a job step, a fresh key inside composites.
pub type StageKey = String;

/// What the stages of the job's actions have done so far.
#[derive(Default)]
pub struct Stages {
    /// Job steps whose pre stage was decided at job start (run, skipped or failed).
    pre_decided: HashSet<StageKey>,
    state: HashMap<StageKey, Vec<(String, String)>>,
    post_registered: HashSet<StageKey>,
}

impl Stages {
    pub fn add_state(&mut self, key: &StageKey, state: Vec<(String, String)>) {
        if !state.is_empty() {
            self.state.entry(key.clone()).or_default().extend(state);
        }
    }

    /// `STATE_<name>` for everything the action's stages saved so far.
    pub fn state_variables(&self, key: &StageKey) -> Vec<(String, String)> {
        self.state
            .get(key)
            .into_iter()
            .flatten()
            .map(|(name, value)| (format!("STATE_{name}"), value.clone()))
            .collect()
    }

    /// True the first time for `key`: the caller registers the post stage.
    pub fn register_post(&mut self, key: &StageKey) -> bool {
        self.post_registered.insert(key.clone())
    }

    /// Adds the saved state to a post stage's environment just before it runs, so state saved
    /// by the main stage (after the post stage was registered by the pre stage) is included.
    pub fn prepare_post(&self, key: &StageKey, work: &mut PostWork) {
        let variables = self.state_variables(key);
        match work {
            PostWork::Process(process) => process.extra_env.extend(variables),
            PostWork::Container(run) => run.env.extend(variables),
            PostWork::CacheSave(_) => {}
        }
    }
}

pub(crate) enum PrePlan {
    /// Nothing to run now.
    Skip,
    /// Run the pre stage right before the main stage (inside composite actions, or when the
    /// action could not be fetched at job start).
    Inline,
}

impl JobRunner {
    /// The key of one run of an action in the step `id` at composite depth `depth`.
    pub(crate) fn stage_key(&mut self, depth: usize, id: &str) -> StageKey {
        if depth == 0 {
            id.to_owned()
        } else {
            format!("{id}#{}", self.next_sequence())
        }
    }

    /// Decides what happens to an action's pre stage when its main stage is reached.
    pub(crate) fn pre_plan(
        &mut self,
        key: &StageKey,
        depth: usize,
        has_pre: bool,
        loaded: &LoadedAction,
        ctx: &StepCtx,
    ) -> PrePlan {
        if !has_pre {
            return PrePlan::Skip;
        }
        if depth > 0 {
            return PrePlan::Inline;
        }
        if self.stages.pre_decided.contains(key) {
            return PrePlan::Skip;
        }
        if loaded.repository.is_empty() {
            let path = loaded
                .dir
                .strip_prefix(&self.paths.workspace)
                .map(|p| format!("./{}", p.display()))
                .unwrap_or_else(|_| loaded.dir.display().to_string());
            self.emitter.annotate(
                &self.log,
                &ctx.name,
                AnnotationLevel::Warning,
                &format!("`pre` execution is not supported for local action from '{path}'"),
            );
            return PrePlan::Skip;
        }
        PrePlan::Inline
    }

    /// Fetches the remote action of every job step before the first step runs, as GitHub's
    /// "Set up job" does, also for steps whose `if:` will skip them: a missing action fails
    /// the job before any step has had effects. `Err` says which action and how to provide it.
    pub(crate) async fn resolve_actions_at_setup(&mut self, steps: &[Step]) -> Result<(), String> {
        for (_, remote) in fetched_actions(steps, &self.workflow_base()) {
            self.resolve_remote(&remote).await?;
        }
        Ok(())
    }

    /// Runs the pre stage of every job step whose remote action has one, in step order.
    pub(crate) async fn run_pre_steps(&mut self, steps: &[Step]) {
        for (step, remote) in fetched_actions(steps, &self.workflow_base()) {
            let StepAction::Uses { uses, .. } = &step.action else {
                continue;
            };
            // An action that cannot be fetched or read fails its main step, which says why.
            let Ok(dir) = self.resolve_remote(&remote).await else {
                continue;
            };
            let Ok(loaded) = load_action(&dir, &remote.repository(), &remote.git_ref) else {
                continue;
            };
            let has_pre = match &loaded.action.runs {
                Runs::Node(node) => node.pre.is_some(),
                Runs::Docker(docker) => docker.pre_entrypoint.is_some(),
                Runs::Composite { .. } => false,
            };
            if has_pre {
                self.run_pre_step(step, &uses.value, &loaded).await;
            }
        }
    }

    async fn run_pre_step(&mut self, step: &Step, uses: &str, loaded: &LoadedAction) {
        let started = Instant::now();
        self.observe_cancellation();
        let frame = Frame::job();
        let key: StageKey = step.effective_id.clone();
        self.stages.pre_decided.insert(key.clone());
        let github = self.step_github(&frame, &step.effective_id);
        let (name, env, with) = {
            let parts = self.scope_parts(&frame, &[], github.clone());
            let scope = parts.scope(self);
            let name = match &step.name {
                Some(template) => scope
                    .string(template)
                    .unwrap_or_else(|_| template.raw.clone()),
                None => format!("Run {uses}"),
            };
            let env = scope.env(&step.env);
            let with = match &step.action {
                StepAction::Uses { with, .. } => scope.with(with),
                _ => Ok(IndexMap::new()),
            };
            (format!("Pre {name}"), env, with)
        };
        let id = format!("pre_{}", step.effective_id);
        let name = self.log.mask(&name);
        self.emitter.send(JobEvent::StepStarted {
            id: id.clone(),
            name: name.clone(),
        });
        let ctx = StepCtx {
            id: step.effective_id.clone(),
            name: name.clone(),
            env: Vec::new(),
            timeout: None,
            survives_cancel: false,
            github: crate::executor::context::github_with(
                &github,
                &Self::action_github_keys(loaded),
            ),
            timeout_minutes: 0.0,
        };
        let result = match (env, with) {
            (Ok(env), Ok(with)) => {
                let ctx = StepCtx { env, ..ctx };
                self.pre_stage(&ctx, &key, loaded, &with).await
            }
            (Err(message), _) | (_, Err(message)) => Some(self.fail(&name, &message)),
        };
        let outcome = match result {
            Some(conclusion) => StepOutcome::new(conclusion, false),
            None => StepOutcome::skipped(),
        };
        self.status.record(outcome.conclusion);
        self.records.push(StepRecord {
            id: id.clone(),
            name: name.clone(),
            outcome: outcome.outcome,
            conclusion: outcome.conclusion,
        });
        self.emitter.send(JobEvent::StepFinished {
            id,
            name,
            outcome: outcome.outcome,
            conclusion: outcome.conclusion,
            duration: started.elapsed(),
        });
    }

    /// The pre stage behind its `pre-if`; `None` when the condition skipped it.
    async fn pre_stage(
        &mut self,
        ctx: &StepCtx,
        key: &StageKey,
        loaded: &LoadedAction,
        with: &IndexMap<String, String>,
    ) -> Option<Conclusion> {
        let frame = Frame::job();
        let inputs = match action_inputs(self, &frame, ctx, Some(&loaded.action), with) {
            Ok(inputs) => inputs,
            Err(message) => return Some(self.fail(&ctx.name, &message)),
        };
        match &loaded.action.runs {
            Runs::Node(node) => {
                let condition = node.pre_if.as_deref().unwrap_or("always()");
                match self.raw_condition_gate(ctx, condition) {
                    Gate::Skip => None,
                    Gate::Fail(message) => Some(self.fail(&ctx.name, &message)),
                    Gate::Run => Some(self.node_pre(ctx, key, loaded, node, &inputs).await),
                }
            }
            Runs::Docker(runs) => {
                let condition = runs.pre_if.as_deref().unwrap_or("always()");
                if let Gate::Skip = self.raw_condition_gate(ctx, condition) {
                    return None;
                }
                let prepared = match self
                    .prepare_docker_action(ctx, 0, loaded, runs, &inputs)
                    .await
                {
                    Ok(prepared) => prepared,
                    Err(message) => return Some(self.fail(&ctx.name, &message)),
                };
                let failed = self
                    .docker_pre(ctx, key, &prepared, condition, runs.post_if.as_deref())
                    .await;
                Some(failed.unwrap_or(Conclusion::Success))
            }
            Runs::Composite { .. } => None,
        }
    }
}

/// The job steps whose `uses:` is a remote action kiln fetches (not a built-in one), `$/path`
/// of the workflow's repository (`base`) included, with it.
fn fetched_actions<'s>(steps: &'s [Step], base: &RepositoryRef) -> Vec<(&'s Step, RemoteAction)> {
    steps
        .iter()
        .filter_map(|step| {
            let StepAction::Uses { uses, .. } = &step.action else {
                return None;
            };
            let Ok(ActionRef::Remote(remote)) = parse_uses(&uses.value, base) else {
                return None;
            };
            let builtin =
                builtin::Builtin::find(&remote.owner, &remote.repo, remote.path.as_deref());
            builtin.is_none().then_some((step, remote))
        })
        .collect()
}
