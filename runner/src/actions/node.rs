//! JavaScript actions: `node` (on the host's PATH, or in the job container) runs `main`,
//! with `pre` before it and `post` registered for the end of the job, each behind its
//! `pre-if`/`post-if` (default `always()`). Inputs arrive as `INPUT_<NAME>`, saved state as
//! `STATE_<name>`.

use indexmap::IndexMap;
use kiln_workflow::model::NodeRuns;
use kiln_workflow::Conclusion;

use super::{input_variables, LoadedAction};
use crate::executor::job::{Frame, JobRunner, PostStep};
use crate::executor::scope::Scope;
use crate::executor::status::{condition_expression, Gate, StatusView};
use crate::executor::step::{PostRun, Process, StepCtx};

impl JobRunner {
    pub(super) async fn run_node(
        &mut self,
        ctx: &StepCtx,
        loaded: &LoadedAction,
        node: &NodeRuns,
        inputs: IndexMap<String, String>,
    ) -> (Conclusion, Vec<(String, String)>) {
        if self.backend.name() != "docker" {
            let path = self.lookup_path();
            if !std::env::split_paths(&path).any(|dir| dir.join("node").is_file()) {
                let message = format!(
                    "the action at {} runs on {} but `node` is not on PATH: install Node.js or run the job with --executor docker",
                    loaded.dir.display(),
                    node.using.value
                );
                return (self.fail(&ctx.name, &message), Vec::new());
            }
        }
        let mut ctx = ctx.clone();
        ctx.github =
            crate::executor::context::github_with(&ctx.github, &Self::action_github_keys(loaded));
        let input_env = input_variables(&inputs);
        let script = |file: &str| loaded.dir.join(file).to_string_lossy().into_owned();
        let mut state: Vec<(String, String)> = Vec::new();
        if let Some(pre) = &node.pre {
            let condition = node.pre_if.clone().unwrap_or_else(|| "always()".to_owned());
            match self.raw_condition_gate(&ctx, &condition) {
                Gate::Run => {
                    let process = Process {
                        argv: vec!["node".to_owned(), script(&pre.value)],
                        workdir: String::new(),
                        extra_env: input_env.clone(),
                    };
                    let result = self.exec_process(&ctx, process).await;
                    if result.result != Conclusion::Success {
                        return (result.result, Vec::new());
                    }
                    state.extend(result.state);
                }
                Gate::Skip => {}
                Gate::Fail(message) => return (self.fail(&ctx.name, &message), Vec::new()),
            }
        }
        let mut main_env = input_env.clone();
        main_env.extend(state_variables(&state));
        let process = Process {
            argv: vec!["node".to_owned(), script(&node.main.value)],
            workdir: String::new(),
            extra_env: main_env,
        };
        let result = self.exec_process(&ctx, process).await;
        state.extend(result.state);
        if let Some(post) = &node.post {
            let mut post_env = input_env;
            post_env.extend(state_variables(&state));
            self.post_steps.push(PostStep {
                name: format!("Post {}", ctx.name),
                condition: node
                    .post_if
                    .clone()
                    .unwrap_or_else(|| "always()".to_owned()),
                run: PostRun {
                    ctx: ctx.clone(),
                    process: Process {
                        argv: vec!["node".to_owned(), script(&post.value)],
                        workdir: String::new(),
                        extra_env: post_env,
                    },
                },
            });
        }
        (result.result, result.outputs)
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

fn state_variables(state: &[(String, String)]) -> Vec<(String, String)> {
    state
        .iter()
        .map(|(name, value)| (format!("STATE_{name}"), value.clone()))
        .collect()
}
