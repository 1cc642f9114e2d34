//! Docker actions (`docker://image` steps and actions with `runs.using: docker`). The image
//! (built once per run from the action's Dockerfile through the Docker API when needed, see
//! `image`) runs as a container of its own whose main process is the action's entrypoint, as
//! on GitHub (see `container`): on the job's network, so it reaches the job's services by
//! name, with the job's folders mounted at the paths the job sees and at GitHub's `/github/*`
//! paths. Its output goes through the same line handling as any step's. `pre-entrypoint` and
//! `post-entrypoint` run in the same way as the pre and post stages of the action (see
//! `stages`).

mod container;
mod image;

use bollard::Docker;
use indexmap::IndexMap;
use kiln_workflow::model::DockerRuns;
use kiln_workflow::value::Object;
use kiln_workflow::Conclusion;

use self::container::{ActionContainer, GithubDirs, GITHUB_WORKSPACE};
pub use self::image::{remove_action_images, ACTION_IMAGE_LABEL};
use super::builtin::input;
use super::stages::{PrePlan, StageKey};
use super::{input_variables, inputs_value, LoadedAction};
use crate::backend::{sanitize_name, Mount};
use crate::executor::job::{Frame, JobRunner, PostStep};
use crate::executor::status::ScopeStatus;
use crate::executor::step::{CompositeScope, PostRun, PostWork, Process, ProcessResult, StepCtx};

/// What to start: the image and, when given, the entrypoint and arguments.
#[derive(Clone)]
pub struct ContainerRun {
    image: String,
    entrypoint: Option<String>,
    args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
}

/// A Docker action with its `args`, `env` and entrypoints evaluated and its image ready.
pub(crate) struct PreparedDocker {
    base: ContainerRun,
    main: Option<String>,
    pub(crate) pre: Option<String>,
    post: Option<String>,
}

impl PreparedDocker {
    fn stage(&self, entrypoint: Option<String>) -> ContainerRun {
        ContainerRun {
            entrypoint,
            ..self.base.clone()
        }
    }
}

impl JobRunner {
    pub(super) async fn run_docker_image(
        &mut self,
        ctx: &StepCtx,
        image: &str,
        with: &IndexMap<String, String>,
    ) -> (Conclusion, Vec<(String, String)>) {
        let args = match input(with, "args").map(shell_words::split).transpose() {
            Ok(args) => args.unwrap_or_default(),
            Err(e) => return (self.fail(&ctx.name, &format!("`args`: {e}")), Vec::new()),
        };
        let run = ContainerRun {
            image: image.to_owned(),
            entrypoint: input(with, "entrypoint").map(str::to_owned),
            args,
            env: input_variables(with),
        };
        let result = self.run_container(ctx, run).await;
        (result.result, result.outputs)
    }

    pub(super) async fn run_docker_action(
        &mut self,
        frame: &Frame,
        ctx: &StepCtx,
        loaded: &LoadedAction,
        runs: &DockerRuns,
        inputs: IndexMap<String, String>,
    ) -> (Conclusion, Vec<(String, String)>) {
        let prepared = match self
            .prepare_docker_action(ctx, frame.depth, loaded, runs, &inputs)
            .await
        {
            Ok(prepared) => prepared,
            Err(message) => return (self.fail(&ctx.name, &message), Vec::new()),
        };
        let key = self.stage_key(frame.depth, &ctx.id);
        if let PrePlan::Inline =
            self.pre_plan(&key, frame.depth, prepared.pre.is_some(), loaded, ctx)
        {
            let condition = runs.pre_if.as_deref().unwrap_or("always()");
            if let Some(failed) = self
                .docker_pre(ctx, &key, &prepared, condition, runs.post_if.as_deref())
                .await
            {
                return (failed, Vec::new());
            }
        }
        let mut run = prepared.stage(prepared.main.clone());
        run.env.extend(self.stages.state_variables(&key));
        let result = self.run_container(ctx, run).await;
        self.stages.add_state(&key, result.state);
        self.register_docker_post(ctx, &key, &prepared, runs.post_if.as_deref());
        (result.result, result.outputs)
    }

    /// Runs `pre-entrypoint` behind `condition`; `Some(result)` when it did not succeed.
    pub(crate) async fn docker_pre(
        &mut self,
        ctx: &StepCtx,
        key: &StageKey,
        prepared: &PreparedDocker,
        condition: &str,
        post_if: Option<&str>,
    ) -> Option<Conclusion> {
        match self.raw_condition_gate(ctx, condition) {
            crate::executor::status::Gate::Run => {
                let result = self
                    .run_container(ctx, prepared.stage(prepared.pre.clone()))
                    .await;
                self.stages.add_state(key, result.state);
                // GitHub registers the post stage as soon as the pre stage runs.
                self.register_docker_post(ctx, key, prepared, post_if);
                (result.result != Conclusion::Success).then_some(result.result)
            }
            crate::executor::status::Gate::Skip => None,
            crate::executor::status::Gate::Fail(message) => Some(self.fail(&ctx.name, &message)),
        }
    }

    fn register_docker_post(
        &mut self,
        ctx: &StepCtx,
        key: &StageKey,
        prepared: &PreparedDocker,
        post_if: Option<&str>,
    ) {
        let Some(post) = &prepared.post else { return };
        if !self.stages.register_post(key) {
            return;
        }
        let name = format!(
            "Post {}",
            ctx.name.strip_prefix("Pre ").unwrap_or(&ctx.name)
        );
        self.post_steps.push(PostStep {
            name,
            condition: post_if.unwrap_or("always()").to_owned(),
            state_key: Some(key.clone()),
            run: PostRun {
                ctx: ctx.clone(),
                work: PostWork::Container(prepared.stage(Some(post.clone()))),
            },
        });
    }

    /// `args`, `env` and the entrypoints may use `${{ inputs.x }}`: they are evaluated in the
    /// action's scope. The image is `docker://` or built from the action's Dockerfile.
    pub(crate) async fn prepare_docker_action(
        &mut self,
        ctx: &StepCtx,
        depth: usize,
        loaded: &LoadedAction,
        runs: &DockerRuns,
        inputs: &IndexMap<String, String>,
    ) -> Result<PreparedDocker, String> {
        let action_frame = Frame {
            steps: Object::new(),
            status: ScopeStatus::default(),
            composite: Some(CompositeScope {
                inputs: inputs_value(inputs),
                github_keys: Self::action_github_keys(loaded),
                env: ctx.env.clone(),
                // A Docker action has no steps to resolve `$/` in.
                base: self.workflow_base(),
            }),
            depth: depth + 1,
        };
        let (args, env, main, pre, post) = {
            let parts = self.scope_parts(&action_frame, &ctx.env, ctx.github.clone());
            let scope = parts.scope(self);
            let optional = |template: &Option<kiln_workflow::model::Template>| {
                template.as_ref().map(|t| scope.string(t)).transpose()
            };
            let args = runs
                .args
                .iter()
                .map(|a| scope.string(a))
                .collect::<Result<Vec<_>, _>>()?;
            let env = scope.env(&runs.env)?;
            (
                args,
                env,
                optional(&runs.entrypoint)?,
                optional(&runs.pre_entrypoint)?,
                optional(&runs.post_entrypoint)?,
            )
        };
        let image = match runs.image.value.strip_prefix("docker://") {
            Some(image) => image.to_owned(),
            None => self.action_image(ctx, loaded, &runs.image.value).await?,
        };
        let mut all_env = input_variables(inputs);
        all_env.extend(env);
        Ok(PreparedDocker {
            base: ContainerRun {
                image,
                entrypoint: None,
                args,
                env: all_env,
            },
            main,
            pre,
            post,
        })
    }

    /// Runs one stage of a Docker action as its own container, through the executor's
    /// process handling (file commands, workflow commands, masking, result).
    pub(crate) async fn run_container(
        &mut self,
        ctx: &StepCtx,
        run: ContainerRun,
    ) -> ProcessResult {
        let failed = |result| ProcessResult {
            result,
            outputs: Vec::new(),
            state: Vec::new(),
        };
        if self.backend.name() != "docker" {
            let message = format!(
                "`{}` is a Docker action: run the job with --executor docker",
                run.image
            );
            return failed(self.fail(&ctx.name, &message));
        }
        let container = match self.action_container(&run).await {
            Ok(container) => container,
            Err(m) => return failed(self.fail(&ctx.name, &m)),
        };
        let process = Process {
            argv: container.argv.clone(),
            workdir: GITHUB_WORKSPACE.to_owned(),
            extra_env: run.env,
        };
        self.exec_process_with(ctx, process, Some(&container)).await
    }

    async fn action_container(&mut self, run: &ContainerRun) -> Result<ActionContainer, String> {
        let docker = connect().await?;
        let argv = command_line(&docker, run).await?;
        let sequence = self.next_sequence();
        let job_env = self
            .job_env
            .as_ref()
            .ok_or("the job environment is not prepared")?;
        let github = GithubDirs {
            workspace: self.paths.workspace.clone(),
            file_commands: self.paths.files.clone(),
            home: self.paths.temp.join("_github_home"),
            workflow: self.paths.temp.join("_github_workflow"),
        };
        for dir in [&github.home, &github.workflow] {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut job_mounts = vec![Mount {
            host_path: self.paths.workspace.clone(),
            job_path: job_env.workspace_path.clone(),
            read_only: false,
        }];
        job_mounts.extend(job_env.mounts.iter().cloned());
        // The job's labels (its key, and a registered runner's identity) mark the container,
        // so the job's cleanup, or the runner's guard, also removes it should this process
        // be stopped before the step removes it.
        let mut labels = job_env.labels();
        labels.insert("kiln.job".to_owned(), self.req.name.clone());
        Ok(ActionContainer {
            docker,
            name: format!(
                "kiln-{}",
                sanitize_name(&format!("{}-action-{sequence}", job_env.job_key))
            ),
            image: run.image.clone(),
            argv,
            job_mounts,
            github,
            network: job_env.network.clone(),
            labels,
            docker_socket: job_env.docker_socket().map(std::path::Path::to_path_buf),
        })
    }
}

async fn connect() -> Result<Docker, String> {
    let docker =
        Docker::connect_with_defaults().map_err(|e| format!("cannot reach Docker: {e}"))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| format!("cannot reach Docker: {e}"))
}

/// The image's own entrypoint and command apply unless the action overrides them, as with
/// `docker run IMAGE ARGS`.
async fn command_line(docker: &Docker, run: &ContainerRun) -> Result<Vec<String>, String> {
    let inspect = docker.inspect_image(&run.image).await.map_err(|e| {
        format!(
            "image `{}` is not available locally and kiln does not pull images: build or load it first ({e})",
            run.image
        )
    })?;
    let config = inspect.config.unwrap_or_default();
    let mut argv = match &run.entrypoint {
        Some(entrypoint) => vec![entrypoint.clone()],
        None => config.entrypoint.clone().unwrap_or_default(),
    };
    if run.args.is_empty() && run.entrypoint.is_none() {
        argv.extend(config.cmd.unwrap_or_default());
    } else {
        argv.extend(run.args.iter().cloned());
    }
    if argv.is_empty() {
        return Err(format!(
            "image `{}` has no entrypoint or command, and the step gives none",
            run.image
        ));
    }
    Ok(argv)
}
