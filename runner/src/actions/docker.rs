//! Docker actions (`docker://image` steps and actions with `runs.using: docker`): the image
//! (built once per run from the action's Dockerfile through the Docker API when needed) runs
//! as a container of its own next to the job container: on the job's network, so it reaches
//! the job's services by name, with the workspace and the runner's temp folder mounted at the
//! paths the job sees (file commands work unchanged) and also at GitHub's `/github/*` paths.
//! The container is removed after the step. `pre-entrypoint` and `post-entrypoint` run in the
//! same way as the pre and post stages of the action (see `stages`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};

use bollard::models::NetworkConnectRequest;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use indexmap::IndexMap;
use kiln_workflow::model::DockerRuns;
use kiln_workflow::value::Object;
use kiln_workflow::Conclusion;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::builtin::input;
use super::stages::{PrePlan, StageKey};
use super::{input_variables, inputs_value, LoadedAction};
use crate::backend::{ContainerSpec, JobEnv, JobSpec, Mount};
use crate::executor::job::{Frame, JobRunner, PostStep};
use crate::executor::status::ScopeStatus;
use crate::executor::step::{CompositeScope, PostRun, PostWork, Process, ProcessResult, StepCtx};
use crate::executor::RunDirs;

/// Label on every image built from an action's Dockerfile; its value is the run's directory,
/// so the end of the run removes exactly its own images.
pub const ACTION_IMAGE_LABEL: &str = "dev.kiln.action-image-run";

/// Where GitHub's runner mounts the workspace for a Docker action; actions written for GitHub
/// often use these paths directly.
const GITHUB_WORKSPACE_MOUNT: &str = "/github/workspace";

/// Images built in this process, per run directory and digest of the build context: each
/// action is built once per run, also when several jobs use it at the same time.
type BuildCell = Arc<OnceCell<Result<String, String>>>;
static BUILT: LazyLock<Mutex<HashMap<(PathBuf, String), BuildCell>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

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
            let env = runs
                .env
                .iter()
                .map(|(k, v)| Ok((k.value.clone(), scope.string(v)?)))
                .collect::<Result<Vec<_>, String>>()?;
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
        let argv = match command_line(&run).await {
            Ok(argv) => argv,
            Err(m) => return failed(self.fail(&ctx.name, &m)),
        };
        let mounts = match self.action_mounts() {
            Ok(mounts) => mounts,
            Err(m) => return failed(self.fail(&ctx.name, &m)),
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
            extra_mounts: mounts,
            labels: vec![("kiln.job".to_owned(), self.req.name.clone())],
        };
        let action_env = match self.backend.prepare(&spec, &self.cancel).await {
            Ok(env) => env,
            Err(e) => {
                let _ = self.backend.cleanup(&JobEnv::unprepared(&spec)).await;
                return failed(self.fail(&ctx.name, &e.to_string()));
            }
        };
        let result = match self.join_job_network(&action_env).await {
            Ok(()) => {
                let job_env = self.job_env.replace(action_env.clone());
                let process = Process {
                    argv,
                    workdir: GITHUB_WORKSPACE_MOUNT.to_owned(),
                    extra_env: run.env,
                };
                let result = self.exec_process(ctx, process).await;
                self.job_env = job_env;
                result
            }
            Err(m) => failed(self.fail(&ctx.name, &m)),
        };
        if let Err(e) = self.backend.cleanup(&action_env).await {
            self.emitter.log(
                &self.log,
                &ctx.name,
                &format!("removing the action container failed: {e}"),
            );
        }
        result
    }

    /// The job's folders as the action container sees them: at the job's own paths (so the
    /// file-command paths in its environment are valid) and at GitHub's `/github/*` paths.
    fn action_mounts(&self) -> Result<Vec<Mount>, String> {
        let home = self.paths.temp.join("_github_home");
        let workflow = self.paths.temp.join("_github_workflow");
        for dir in [&home, &workflow] {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mount = |host: &std::path::Path, job_path: &str| Mount {
            host_path: host.to_path_buf(),
            job_path: job_path.to_owned(),
            read_only: false,
        };
        Ok(vec![
            mount(&self.paths.temp, &self.paths.temp.to_string_lossy()),
            mount(&self.paths.workspace, GITHUB_WORKSPACE_MOUNT),
            mount(&self.paths.files, "/github/file_commands"),
            mount(&home, "/github/home"),
            mount(&workflow, "/github/workflow"),
        ])
    }

    /// Connects the action's container to the job's network (a job with services has one),
    /// so the action reaches the services by name as the job's own steps do.
    async fn join_job_network(&self, action_env: &JobEnv) -> Result<(), String> {
        let network = self.job_env.as_ref().and_then(|env| env.network.clone());
        let (Some(network), Some(container)) = (network, action_env.container_id.clone()) else {
            return Ok(());
        };
        let docker = connect().await?;
        docker
            .connect_network(
                &network,
                NetworkConnectRequest {
                    container,
                    endpoint_config: None,
                },
            )
            .await
            .map_err(|e| {
                format!("cannot connect the action container to the job network {network}: {e}")
            })
    }

    /// The image of the action's Dockerfile, built at its first use in the run: an action
    /// whose files are the same (checked out again by another job) is not built again.
    async fn action_image(
        &self,
        ctx: &StepCtx,
        loaded: &LoadedAction,
        dockerfile: &str,
    ) -> Result<String, String> {
        let dir = loaded.dir.clone();
        let context = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut builder = tar::Builder::new(Vec::new());
            builder.follow_symlinks(false);
            // No times or owners in the archive: equal files give an equal digest.
            builder.mode(tar::HeaderMode::Deterministic);
            builder.append_dir_all(".", &dir)?;
            builder.into_inner()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot pack {}: {e}", loaded.dir.display()))?;
        let mut hasher = Sha256::new();
        hasher.update(self.req.dirs.root.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(dockerfile.as_bytes());
        hasher.update([0]);
        hasher.update(&context);
        let digest: String = hasher.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let cell = {
            let mut built = BUILT
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            built
                .entry((self.req.dirs.root.clone(), digest.clone()))
                .or_default()
                .clone()
        };
        let tag = format!("kiln-action-{digest}:latest");
        cell.get_or_init(|| self.build_action_image(ctx, loaded, dockerfile, tag, context))
            .await
            .clone()
    }

    /// Builds the action's Dockerfile through the Docker API, labelled with the run so
    /// [`remove_action_images`] finds it.
    async fn build_action_image(
        &self,
        ctx: &StepCtx,
        loaded: &LoadedAction,
        dockerfile: &str,
        tag: String,
        context: Vec<u8>,
    ) -> Result<String, String> {
        let docker = connect().await?;
        let run_dir = self.req.dirs.root.to_string_lossy().into_owned();
        self.emitter.log(
            &self.log,
            &ctx.name,
            &format!(
                "Build container for action use: '{}'.",
                loaded.dir.join(dockerfile).display()
            ),
        );
        let labels = HashMap::from([(ACTION_IMAGE_LABEL, run_dir.as_str())]);
        let options = BuildImageOptionsBuilder::new()
            .dockerfile(dockerfile)
            .t(&tag)
            .rm(true)
            .labels(&labels)
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

/// Removes the images built from action Dockerfiles during the run in `dirs`. Returns what
/// could not be removed, as messages.
pub async fn remove_action_images(dirs: &RunDirs) -> Vec<String> {
    let run_dir = dirs.root.to_string_lossy().into_owned();
    {
        let mut built = BUILT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        built.retain(|(root, _), _| root != &dirs.root);
    }
    let docker = match connect().await {
        Ok(docker) => docker,
        Err(error) => return vec![error],
    };
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{ACTION_IMAGE_LABEL}={run_dir}")],
    )]);
    let images = match docker
        .list_images(Some(
            ListImagesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
    {
        Ok(images) => images,
        Err(e) => return vec![format!("cannot list the run's action images: {e}")],
    };
    let mut errors = Vec::new();
    for image in images {
        let options = RemoveImageOptionsBuilder::new().force(true).build();
        if let Err(e) = docker.remove_image(&image.id, Some(options), None).await {
            errors.push(format!("cannot remove the action image {}: {e}", image.id));
        }
    }
    errors
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
