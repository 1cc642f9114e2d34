//! Composite actions: their steps run in a scope of their own (`inputs`, `steps`,
//! `success()` of the action's steps, `github.action_path`) and their outputs are evaluated
//! from that scope afterwards.

use indexmap::IndexMap;
use kiln_workflow::model::Step;
use kiln_workflow::uses::RepositoryRef;
use kiln_workflow::value::Object;
use kiln_workflow::Conclusion;

use super::{inputs_value, LoadedAction};
use crate::executor::job::{Frame, JobRunner, MAX_ACTION_DEPTH};
use crate::executor::status::ScopeStatus;
use crate::executor::step::{CompositeScope, StepCtx};

impl JobRunner {
    pub(super) async fn run_composite(
        &mut self,
        frame: &Frame,
        ctx: &StepCtx,
        loaded: &LoadedAction,
        steps: &[Step],
        inputs: IndexMap<String, String>,
    ) -> (Conclusion, Vec<(String, String)>) {
        if frame.depth + 1 > MAX_ACTION_DEPTH {
            let message = format!(
                "composite actions are nested more than {MAX_ACTION_DEPTH} deep at {}",
                loaded.dir.display()
            );
            return (self.fail(&ctx.name, &message), Vec::new());
        }
        let mut inner = Frame {
            steps: Object::new(),
            status: ScopeStatus::default(),
            composite: Some(CompositeScope {
                inputs: inputs_value(&inputs),
                github_keys: Self::action_github_keys(loaded),
                env: ctx.env.clone(),
                // `$/` in an action fetched from a repository means that repository at that
                // ref; a local (`./`) action is a file of the workflow's repository.
                base: if loaded.repository.is_empty() {
                    self.frame_base(frame)
                } else {
                    RepositoryRef {
                        repository: loaded.repository.clone(),
                        git_ref: loaded.git_ref.clone(),
                    }
                },
            }),
            depth: frame.depth + 1,
        };
        let all_steps = async {
            for step in steps {
                self.run_step(&mut inner, step).await;
            }
        };
        let timed_out = match ctx.timeout {
            // The `uses:` step's timeout bounds the whole action; dropping the running
            // step ends its process.
            Some(limit) => tokio::time::timeout(limit, all_steps).await.is_err(),
            None => {
                all_steps.await;
                false
            }
        };
        if timed_out {
            let message = format!(
                "The action '{}' has timed out after {} minutes.",
                ctx.name, ctx.timeout_minutes
            );
            return (self.fail(&ctx.name, &message), Vec::new());
        }
        let github = self.step_github(&inner, &ctx.id);
        let parts = self.scope_parts(&inner, &ctx.env, github);
        let scope = parts.scope(self);
        let mut outputs = Vec::new();
        let mut errors = Vec::new();
        for output in &loaded.action.outputs {
            let Some(template) = &output.value else {
                continue;
            };
            match scope.string(template) {
                Ok(value) => outputs.push((output.name.value.clone(), value)),
                Err(error) => errors.push(format!("output `{}`: {error}", output.name.value)),
            }
        }
        let mut result = inner.status.conclusion();
        for error in errors {
            result = self.fail(&ctx.name, &error);
        }
        (result, outputs)
    }
}
