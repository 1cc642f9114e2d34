//! Docker actions (`docker://image` steps and actions with `runs.using: docker`): the image
//! (built from the action's Dockerfile through the Docker API when needed) runs as a
//! container of its own, prepared by the same backend, with the workspace and the runner's
//! temp folder mounted at the paths the job sees, so file commands work unchanged.

use std::collections::HashMap;

use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use indexmap::IndexMap;
use kiln_workflow::model::DockerRuns;
use kiln_workflow::value::Object;
use kiln_workflow::Conclusion;
use sha2::{Digest, Sha256};

use super::builtin::input;
use super::{input_variables, inputs_value, LoadedAction};
use crate::backend::{ContainerSpec, JobEnv, JobSpec, Mount};
use crate::executor::job::{Frame, JobRunner};
use crate::executor::status::ScopeStatus;
use crate::executor::step::{CompositeScope, Process, StepCtx};

/// What to start: the image and, when given, the entrypoint and arguments.
struct ContainerRun {
    image: String,
    entrypoint: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl JobRunner {
    pub(super) async fn run_docker_image(
        &mut self,
        _frame: &Frame,
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
        self.run_container(ctx, run).await
    }

    pub(super) async fn run_docker_action(
        &mut self,
        frame: &Frame,
        ctx: &StepCtx,
        loaded: &LoadedAction,
        runs: &DockerRuns,
        inputs: IndexMap<String, String>,
    ) -> (Conclusion, Vec<(String, String)>) {
        // `args` and `env` may use `${{ inputs.x }}`: evaluate them in the action's scope.
        let action_frame = Frame {
            steps: Object::new(),
            status: ScopeStatus::default(),
            composite: Some(CompositeScope {
                inputs: inputs_value(&inputs),
                github_keys: Self::action_github_keys(loaded),
                env: ctx.env.clone(),
            }),
            depth: frame.depth + 1,
        };
        let evaluated = {
            let parts = self.scope_parts(&action_frame, &ctx.env, ctx.github.clone());
            let scope = parts.scope(self);
            let args: Result<Vec<String>, String> =
                runs.args.iter().map(|a| scope.string(a)).collect();
            let env: Result<Vec<(String, String)>, String> = runs
                .env
                .iter()
                .map(|(k, v)| Ok((k.value.clone(), scope.string(v)?)))
                .collect();
            let entrypoint = runs
                .entrypoint
                .as_ref()
                .map(|e| scope.string(e))
                .transpose();
            (args, env, entrypoint)
        };
        let (args, env, entrypoint) = match evaluated {
            (Ok(a), Ok(e), Ok(p)) => (a, e, p),
            (Err(m), _, _) | (_, Err(m), _) | (_, _, Err(m)) => {
                return (self.fail(&ctx.name, &m), Vec::new())
            }
        };
        let image = match runs.image.value.strip_prefix("docker://") {
            Some(image) => image.to_owned(),
            None => match self
                .build_action_image(ctx, loaded, &runs.image.value)
                .await
            {
                Ok(tag) => tag,
                Err(m) => return (self.fail(&ctx.name, &m), Vec::new()),
            },
        };
        let mut all_env = input_variables(&inputs);
        all_env.extend(env);
        let run = ContainerRun {
            image,
            entrypoint,
            args,
            env: all_env,
        };
        self.run_container(ctx, run).await
    }

    async fn run_container(
        &mut self,
        ctx: &StepCtx,
        run: ContainerRun,
    ) -> (Conclusion, Vec<(String, String)>) {
        if self.backend.name() != "docker" {
            let message = format!(
                "`{}` is a Docker action: run the job with --executor docker",
                run.image
            );
            return (self.fail(&ctx.name, &message), Vec::new());
        }
        let argv = match command_line(&run).await {
            Ok(argv) => argv,
            Err(m) => return (self.fail(&ctx.name, &m), Vec::new()),
        };
        let sequence = self.next_sequence();
        let spec = JobSpec {
            job_key: format!("{}-action-{sequence}", self.key),
            container: Some(ContainerSpec {
                image: run.image.clone(),
                ..Default::default()
            }),
            services: Vec::new(),
            workspace: self.paths.workspace.clone(),
            workspace_job_path: None,
            extra_mounts: vec![Mount {
                host_path: self.paths.temp.clone(),
                job_path: self.paths.temp.to_string_lossy().into_owned(),
                read_only: false,
            }],
            labels: vec![("kiln.job".to_owned(), self.req.name.clone())],
        };
        let action_env = match self.backend.prepare(&spec, &self.cancel).await {
            Ok(env) => env,
            Err(e) => {
                let _ = self.backend.cleanup(&JobEnv::unprepared(&spec)).await;
                return (self.fail(&ctx.name, &e.to_string()), Vec::new());
            }
        };
        let job_env = self.job_env.replace(action_env.clone());
        let result = self
            .exec_process(
                ctx,
                Process {
                    argv,
                    workdir: String::new(),
                    extra_env: run.env,
                },
            )
            .await;
        self.job_env = job_env;
        if let Err(e) = self.backend.cleanup(&action_env).await {
            self.emitter.log(
                &self.log,
                &ctx.name,
                &format!("removing the action container failed: {e}"),
            );
        }
        (result.result, result.outputs)
    }

    /// Builds the action's Dockerfile through the Docker API; the tag is derived from the
    /// action folder so each action is built once per daemon.
    async fn build_action_image(
        &self,
        ctx: &StepCtx,
        loaded: &LoadedAction,
        dockerfile: &str,
    ) -> Result<String, String> {
        let docker = connect().await?;
        let digest = Sha256::digest(loaded.dir.to_string_lossy().as_bytes());
        let tag = format!(
            "kiln-action-{}:latest",
            digest[..6]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let dir = loaded.dir.clone();
        let context = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut builder = tar::Builder::new(Vec::new());
            builder.follow_symlinks(false);
            builder.append_dir_all(".", &dir)?;
            builder.into_inner()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot pack {}: {e}", loaded.dir.display()))?;
        let options = BuildImageOptionsBuilder::new()
            .dockerfile(dockerfile)
            .t(&tag)
            .rm(true)
            .build();
        let mut stream = docker.build_image(
            options,
            None::<HashMap<_, _>>,
            Some(bollard::body_full(context.into())),
        );
        while let Some(item) = stream.next().await {
            let info = item
                .map_err(|e| format!("building {dockerfile} in {}: {e}", loaded.dir.display()))?;
            if let Some(line) = info
                .stream
                .as_deref()
                .map(str::trim_end)
                .filter(|l| !l.is_empty())
            {
                self.emitter.log(&self.log, &ctx.name, line);
            }
            if let Some(error) = info.error_detail.and_then(|d| d.message) {
                return Err(format!(
                    "building {dockerfile} in {} failed: {error}",
                    loaded.dir.display()
                ));
            }
        }
        Ok(tag)
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
async fn command_line(run: &ContainerRun) -> Result<Vec<String>, String> {
    let docker = connect().await?;
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
