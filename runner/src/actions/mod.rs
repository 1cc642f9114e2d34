//! `uses:` steps: finding the action (local path, action cache, `--local-repository`, a git
//! clone), reading its `action.yml`, and running it: composite, node, Docker, or one of the
//! actions kiln has built in.

mod builtin;
mod composite;
mod docker;
mod node;
mod resolve;
pub(crate) mod stages;

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use kiln_workflow::model::{Action, Runs, WithMap};
use kiln_workflow::value::{Object, Value};
use kiln_workflow::Conclusion;

use crate::executor::job::{Frame, JobRunner};
use crate::executor::step::StepCtx;

pub use builtin::{ArtifactServer, CacheSave};
pub use docker::{remove_action_images, ContainerRun, ACTION_IMAGE_LABEL};
pub(crate) use resolve::git;
pub use resolve::{parse_uses, ActionRef};
pub use stages::Stages;

/// An action found on disk.
pub struct LoadedAction {
    pub dir: PathBuf,
    pub action: Action,
    /// `owner/repo` and ref for remote actions (`github.action_repository`/`action_ref`).
    pub repository: String,
    pub git_ref: String,
}

/// Reads `action.yml` (or `action.yaml`) from `dir`.
pub fn load_action(dir: &Path, repository: &str, git_ref: &str) -> Result<LoadedAction, String> {
    let file = ["action.yml", "action.yaml"]
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            format!(
                "can't find 'action.yml' or 'action.yaml' under '{}'. Did you forget to run actions/checkout before running your local action?",
                dir.display()
            )
        })?;
    let content = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let parsed = kiln_workflow::parse_action(&file.to_string_lossy(), &content);
    let errors: Vec<String> = parsed.errors().map(|d| d.to_string()).collect();
    match parsed.value {
        Some(action) if errors.is_empty() => Ok(LoadedAction {
            dir: dir.to_path_buf(),
            action,
            repository: repository.to_owned(),
            git_ref: git_ref.to_owned(),
        }),
        _ => Err(format!(
            "{} is not a valid action: {}",
            file.display(),
            errors.join("; ")
        )),
    }
}

/// Inputs as the action receives them: `with:` values, then declared defaults, keyed by the
/// declared spelling; undeclared `with:` keys are passed on as well.
pub fn action_inputs(
    runner: &JobRunner,
    frame: &Frame,
    ctx: &StepCtx,
    action: Option<&Action>,
    with: &IndexMap<String, String>,
) -> Result<IndexMap<String, String>, String> {
    let mut inputs = IndexMap::new();
    let parts = runner.scope_parts(frame, &ctx.env, ctx.github.clone());
    let scope = parts.scope(runner);
    for input in action.map(|a| a.inputs.as_slice()).unwrap_or_default() {
        let name = &input.name.value;
        let given = with
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone());
        let value = match (given, &input.default) {
            (Some(value), _) => value,
            (None, Some(default)) => scope.string(default)?,
            (None, None) if input.required => {
                return Err(format!("Input required and not supplied: {name}"));
            }
            (None, None) => String::new(),
        };
        inputs.insert(name.clone(), value);
    }
    for (key, value) in with {
        if !inputs.keys().any(|k| k.eq_ignore_ascii_case(key)) {
            inputs.insert(key.clone(), value.clone());
        }
    }
    Ok(inputs)
}

/// The `inputs` context of a composite action.
pub fn inputs_value(inputs: &IndexMap<String, String>) -> Value {
    let mut object = Object::new();
    for (name, value) in inputs {
        object.insert(name.clone(), Value::string(value.as_str()));
    }
    Value::object(object)
}

/// `INPUT_<NAME>` as the toolkit reads it: upper case, spaces as underscores.
pub fn input_variables(inputs: &IndexMap<String, String>) -> Vec<(String, String)> {
    inputs
        .iter()
        .map(|(name, value)| {
            (
                format!("INPUT_{}", name.replace(' ', "_").to_ascii_uppercase()),
                value.clone(),
            )
        })
        .collect()
}

impl JobRunner {
    /// Runs a `uses:` step; returns its result and outputs.
    pub async fn run_action(
        &mut self,
        frame: &mut Frame,
        ctx: &StepCtx,
        uses: &str,
        with: &WithMap,
    ) -> (Conclusion, Vec<(String, String)>) {
        let with = {
            let parts = self.scope_parts(frame, &ctx.env, ctx.github.clone());
            match parts.scope(self).with(with) {
                Ok(values) => values,
                Err(message) => return (self.fail(&ctx.name, &message), Vec::new()),
            }
        };
        let reference = match parse_uses(uses, &self.frame_base(frame)) {
            Ok(reference) => reference,
            Err(message) => return (self.fail(&ctx.name, &message), Vec::new()),
        };
        let loaded = match &reference {
            ActionRef::Docker(image) => return self.run_docker_image(ctx, image, &with).await,
            ActionRef::Remote(remote) => {
                if let Some(builtin) =
                    builtin::Builtin::find(&remote.owner, &remote.repo, remote.path.as_deref())
                {
                    return self.run_builtin(builtin, frame, ctx, &with).await;
                }
                self.resolve_remote(remote)
                    .await
                    .and_then(|dir| load_action(&dir, &remote.repository(), &remote.git_ref))
            }
            ActionRef::Local(path) => load_action(&self.paths.workspace.join(path), "", ""),
        };
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(message) => return (self.fail(&ctx.name, &message), Vec::new()),
        };
        let inputs = match action_inputs(self, frame, ctx, Some(&loaded.action), &with) {
            Ok(inputs) => inputs,
            Err(message) => return (self.fail(&ctx.name, &message), Vec::new()),
        };
        match &loaded.action.runs {
            Runs::Composite { steps } => {
                let steps = steps.clone();
                self.run_composite(frame, ctx, &loaded, &steps, inputs)
                    .await
            }
            Runs::Node(node) => {
                let node = node.clone();
                self.run_node(frame.depth, ctx, &loaded, &node, inputs)
                    .await
            }
            Runs::Docker(docker) => {
                let docker = docker.clone();
                self.run_docker_action(frame, ctx, &loaded, &docker, inputs)
                    .await
            }
        }
    }

    /// `github.action_path`, `action_repository` and `action_ref` for an action's steps.
    pub fn action_github_keys(loaded: &LoadedAction) -> Vec<(&'static str, String)> {
        vec![
            ("action_path", loaded.dir.to_string_lossy().into_owned()),
            ("action_repository", loaded.repository.clone()),
            ("action_ref", loaded.git_ref.clone()),
        ]
    }
}
