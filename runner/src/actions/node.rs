//! JavaScript actions: `node` (on the host's PATH, or in the job container) runs `main`;
//! `pre` runs at job start for remote actions (see `stages`) and `post` is registered for the
//! end of the job, each behind its `pre-if`/`post-if` (default `always()`). Inputs arrive as
//! `INPUT_<NAME>`, saved state as `STATE_<name>`.

use indexmap::IndexMap;
use kiln_workflow::model::NodeRuns;
use kiln_workflow::Conclusion;

use super::stages::{PrePlan, StageKey};
use super::{input_variables, LoadedAction};
use crate::executor::job::{Frame, JobRunner, PostStep};
use crate::executor::scope::Scope;
use crate::executor::status::{condition_expression, Gate, StatusView};
use crate::executor::step::{PostRun, PostWork, Process, StepCtx};

impl JobRunner {
    pub(super) async fn run_node(
        &mut self,
        depth: usize,
        ctx: &StepCtx,
        loaded: &LoadedAction,
        node: &NodeRuns,
        inputs: IndexMap<String, String>,
    ) -> (Conclusion, Vec<(String, String)>) {
        if let Err(message) = self.check_node(loaded, node) {
            return (self.fail(&ctx.name, &message), Vec::new());
        }
        let mut ctx = ctx.clone();
        ctx.github =
            crate::executor::context::github_with(&ctx.github, &Self::action_github_keys(loaded));
        let key = self.stage_key(depth, &ctx.id);
        if let PrePlan::Inline = self.pre_plan(&key, depth, node.pre.is_some(), loaded, &ctx) {
            let condition = node.pre_if.as_deref().unwrap_or("always()");
            match self.raw_condition_gate(&ctx, condition) {
                Gate::Run => {
                    let result = self.node_pre(&ctx, &key, loaded, node, &inputs).await;
                    if result != Conclusion::Success {
                        return (result, Vec::new());
                    }
                }
                Gate::Skip => {}
                Gate::Fail(message) => return (self.fail(&ctx.name, &message), Vec::new()),
            }
        }
        let mut main_env = input_variables(&inputs);
        main_env.extend(self.stages.state_variables(&key));
        let process = Process {
            argv: vec!["node".to_owned(), script(loaded, &node.main.value)],
            workdir: String::new(),
            extra_env: main_env,
        };
        let result = self.exec_process(&ctx, process).await;
        self.stages.add_state(&key, result.state);
        self.register_node_post(&ctx, &key, loaded, node, &inputs);
        (result.result, result.outputs)
    }

    /// Runs the action's `pre` script (its condition already decided) and registers its post.
    pub(crate) async fn node_pre(
        &mut self,
        ctx: &StepCtx,
        key: &StageKey,
        loaded: &LoadedAction,
        node: &NodeRuns,
        inputs: &IndexMap<String, String>,
    ) -> Conclusion {
        let Some(pre) = &node.pre else {
            return Conclusion::Success;
        };
        if let Err(message) = self.check_node(loaded, node) {
            return self.fail(&ctx.name, &message);
        }
        let process = Process {
            argv: vec!["node".to_owned(), script(loaded, &pre.value)],
            workdir: String::new(),
            extra_env: input_variables(inputs),
        };
        let result = self.exec_process(ctx, process).await;
        self.stages.add_state(key, result.state);
        // GitHub registers the post stage as soon as the pre stage runs.
        self.register_node_post(ctx, key, loaded, node, inputs);
        result.result
    }

    fn register_node_post(
        &mut self,
        ctx: &StepCtx,
        key: &StageKey,
        loaded: &LoadedAction,
        node: &NodeRuns,
        inputs: &IndexMap<String, String>,
    ) {
        let Some(post) = &node.post else { return };
        if !self.stages.register_post(key) {
            return;
        }
        self.post_steps.push(PostStep {
            name: format!(
                "Post {}",
                ctx.name.strip_prefix("Pre ").unwrap_or(&ctx.name)
            ),
            condition: node
                .post_if
                .clone()
                .unwrap_or_else(|| "always()".to_owned()),
            state_key: Some(key.clone()),
            run: PostRun {
                ctx: ctx.clone(),
                work: PostWork::Process(Process {
                    argv: vec!["node".to_owned(), script(loaded, &post.value)],
                    workdir: String::new(),
                    extra_env: input_variables(inputs),
                }),
            },
        });
    }

    /// On the host, `node` must be installed; the base image has it.
    fn check_node(&self, loaded: &LoadedAction, node: &NodeRuns) -> Result<(), String> {
        if self.backend.name() == "docker" {
            return Ok(());
        }
        let path = self.lookup_path();
        if std::env::split_paths(&path).any(|dir| dir.join("node").is_file()) {
            return Ok(());
        }
        Err(format!(
            "the action at {} runs on {} but `node` is not on PATH: install Node.js or run the job with --executor docker",
            loaded.dir.display(),
            node.using.value
        ))
    }

    /// Evaluates a condition written as text (`pre-if`, `post-if`) at job level.
    pub(crate) fn raw_condition_gate(&self, ctx: &StepCtx, raw: &str) -> Gate {
        let expression = match condition_expression(raw) {
            Ok(expression) => expression,
            Err(error) => return Gate::Fail(error.message),
        };
        let condition = kiln_workflow::model::Condition {
            raw: raw.to_owned(),
            expression,
            pos: Default::default(),
        };
        let frame = Frame::job();
        let parts = self.scope_parts(&frame, &ctx.env, ctx.github.clone());
        Scope {
            status: StatusView::job(self.status.status()),
            ..parts.scope(self)
        }
        .gate(&condition)
    }
}

fn script(loaded: &LoadedAction, file: &str) -> String {
    loaded.dir.join(file).to_string_lossy().into_owned()
}
