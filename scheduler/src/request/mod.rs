//! What to run: a [`RunRequest`] says which event, which workflows and jobs, with which
//! payload, inputs, secrets, vars and env. `kiln run` and `kiln submit` build it from their
//! flags (reading the dotenv files and the payload here, [`RunRequest::read`]); the local
//! driver and the scheduler's planner both turn it into engines' [`RunSpec`]s with
//! [`RunRequest::workflow_spec`], so a workflow gets the same contexts wherever it runs.

pub mod dotenv;
pub mod values;

use std::path::{Path, PathBuf};

use crate::discover::{require_loaded_calls, DiscoverError, WorkflowFile};
use crate::engine::RunSpec;
use crate::github::{github_context, GithubInputs, RepoState};
pub use values::{ConfigError, RunValues};

/// A request that cannot be started as given; the message says what to pass instead.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Values(#[from] ConfigError),
    #[error(transparent)]
    Discover(#[from] DiscoverError),
}

/// Which workflows a request is about: what discovery and selection need, known from the
/// flags alone (nothing read yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunTarget {
    /// The event to simulate; workflows that do not trigger on it are not run.
    pub event_name: String,
    /// `-W`: a workflow file or a directory of them, relative to the repository (or
    /// absolute); `None` for `.github/workflows`.
    pub workflows: Option<PathBuf>,
    /// `-j`: only this job (its needs are not run, as in act).
    pub job: Option<String>,
}

impl RunTarget {
    /// The file or directory the workflows are read from, in the repository at `root`.
    pub fn workflows_in(&self, root: &Path) -> PathBuf {
        root.join(
            self.workflows
                .as_deref()
                .unwrap_or(crate::discover::DEFAULT_WORKFLOW_DIR.as_ref()),
        )
    }
}

/// Where a request's payload and values come from, as the command line names them: flags
/// (`NAME=VALUE`, `-s NAME` reads the environment) and dotenv files, relative to the
/// repository. A file not named explicitly is read from its default name when it exists, as
/// act reads `.secrets`, `.vars`, `.input` and `.env`.
#[derive(Debug, Clone, Default)]
pub struct RequestSources {
    /// `-e FILE`: the event payload.
    pub event_path: Option<PathBuf>,
    /// `--matrix KEY:VALUE`.
    pub matrix: Vec<String>,
    pub secrets: Vec<String>,
    pub secret_file: Option<PathBuf>,
    pub vars: Vec<String>,
    pub var_file: Option<PathBuf>,
    pub inputs: Vec<String>,
    pub input_file: Option<PathBuf>,
    pub env_file: Option<PathBuf>,
}

/// Everything that says what to run, read and checked.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub target: RunTarget,
    /// The event payload (`github.event`); `None` for the minimal one kiln synthesizes.
    pub event: Option<serde_json::Value>,
    /// `--matrix`: only legs whose `matrix.KEY` loosely equals VALUE.
    pub matrix_filter: Vec<(String, String)>,
    pub values: RunValues,
}

impl RunRequest {
    /// Reads the payload, the dotenv files and the flags of `sources` (paths relative to
    /// `dir`, the repository): flags win over files; a `workflow_dispatch` or
    /// `workflow_call` request also takes the inputs of its payload (`{"inputs": {...}}`,
    /// as act users write it), below both.
    pub fn read(
        dir: &Path,
        target: RunTarget,
        sources: &RequestSources,
    ) -> Result<RunRequest, ConfigError> {
        let event = sources
            .event_path
            .as_deref()
            .map(|path| values::read_event(&dir.join(path)))
            .transpose()?;
        let values = read_values(dir, &target.event_name, sources, event.as_ref())?;
        let matrix_filter = values::parse_matrix_filters(&sources.matrix)?;
        Ok(RunRequest {
            target,
            event,
            matrix_filter,
            values,
        })
    }

    /// The `GITHUB_TOKEN` secret, when given: the run's `github.token`.
    pub fn token(&self) -> Option<&str> {
        values::github_token(&self.values.secrets)
    }

    /// The engine's spec for one workflow of the request, after the checks GitHub makes
    /// before it starts one (reusable workflows loaded, required inputs and secrets given):
    /// the `github` context from `repo` and the payload, typed inputs, vars and secrets.
    /// `kiln run` and the scheduler's planner build every run with it.
    pub fn workflow_spec(
        &self,
        file: &WorkflowFile,
        repo: &RepoState,
        run_id: u64,
    ) -> Result<RunSpec, RequestError> {
        let job = self.target.job.as_deref();
        require_loaded_calls(file, job)?;
        let name = file.name();
        let event_name = self.target.event_name.as_str();
        let github = github_context(
            repo,
            &GithubInputs {
                event_name,
                event: self.event.clone(),
                workflow_name: &name,
                workflow_path: &file.display_path,
                token: self.token(),
                run_id,
            },
        );
        let inputs = values::inputs_for(&file.workflow, &name, event_name, &self.values.inputs)?;
        values::check_call_secrets(&file.workflow, &name, event_name, &self.values.secrets)?;
        Ok(RunSpec {
            workflow: file.workflow.clone(),
            workflow_file: file.display_path.clone(),
            github,
            inputs,
            vars: values::object_of(&self.values.vars),
            secrets: values::object_of(&self.values.secrets),
            job_filter: self.target.job.clone(),
            matrix_filter: self.matrix_filter.clone(),
        })
    }
}

/// Secrets, vars, inputs and env from flags and dotenv files (flags win over files), the
/// payload's inputs below both for the events that have them.
fn read_values(
    dir: &Path,
    event_name: &str,
    sources: &RequestSources,
    event: Option<&serde_json::Value>,
) -> Result<RunValues, ConfigError> {
    let mut inputs = match event {
        Some(payload) if matches!(event_name, "workflow_dispatch" | "workflow_call") => {
            values::payload_inputs(payload)?
        }
        _ => Vec::new(),
    };
    inputs.extend(values::read_pairs(
        dir,
        sources.input_file.as_deref(),
        ".input",
    )?);
    let mut read = RunValues {
        secrets: values::read_pairs(dir, sources.secret_file.as_deref(), ".secrets")?,
        vars: values::read_pairs(dir, sources.var_file.as_deref(), ".vars")?,
        inputs,
        env: values::read_pairs(dir, sources.env_file.as_deref(), ".env")?,
    };
    read.secrets
        .extend(values::parse_secrets(&sources.secrets)?);
    read.vars
        .extend(values::parse_assignments("--var", &sources.vars)?);
    read.inputs
        .extend(values::parse_assignments("--input", &sources.inputs)?);
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value a workflow sees: the last one given for the name.
    fn input(values: &RunValues, name: &str) -> Option<String> {
        values
            .inputs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn target(event: &str) -> RunTarget {
        RunTarget {
            event_name: event.to_owned(),
            ..RunTarget::default()
        }
    }

    #[test]
    fn payload_inputs_come_below_the_input_file_and_the_flags() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(".input"), "from_file=file\nboth=file\n").expect("write");
        std::fs::write(
            dir.path().join("event.json"),
            r#"{"inputs": {"only_payload": "payload", "from_file": "payload", "both": "payload", "flag": "payload"}}"#,
        )
        .expect("write");
        let sources = RequestSources {
            event_path: Some("event.json".into()),
            inputs: vec!["flag=flag".into(), "both=flag".into()],
            ..RequestSources::default()
        };
        let read = |event: &str| {
            RunRequest::read(dir.path(), target(event), &sources)
                .expect("request")
                .values
        };
        let values = read("workflow_dispatch");
        assert_eq!(input(&values, "only_payload").as_deref(), Some("payload"));
        assert_eq!(input(&values, "from_file").as_deref(), Some("file"));
        assert_eq!(input(&values, "both").as_deref(), Some("flag"));
        assert_eq!(input(&values, "flag").as_deref(), Some("flag"));
        // Other events have no inputs context from their payload.
        assert_eq!(input(&read("push"), "only_payload"), None);
        assert_eq!(
            input(&read("workflow_call"), "only_payload").as_deref(),
            Some("payload")
        );
    }

    #[test]
    fn the_spec_of_a_workflow_has_the_requests_contexts_and_checks_its_inputs() {
        let yaml = "name: Deploy\non:\n  workflow_dispatch:\n    inputs:\n      target:\n        required: true\njobs:\n  j:\n    runs-on: x\n    steps:\n      - run: echo\n";
        let file = WorkflowFile {
            display_path: ".github/workflows/deploy.yml".to_owned(),
            workflow: std::sync::Arc::new(
                kiln_workflow::parse_workflow("deploy.yml", yaml)
                    .value
                    .expect("valid"),
            ),
            warnings: Vec::new(),
        };
        let repo = RepoState {
            root: PathBuf::from("/src/app"),
            sha: "b".repeat(40),
            head_ref: Some("refs/heads/main".to_owned()),
            repository: "octo/app".to_owned(),
            actor: "mona".to_owned(),
        };
        let mut request = RunRequest {
            target: target("workflow_dispatch"),
            matrix_filter: vec![("os".to_owned(), "linux".to_owned())],
            ..RunRequest::default()
        };
        let missing = request
            .workflow_spec(&file, &repo, 9)
            .expect_err("required");
        assert!(
            missing.to_string().contains("--input target=VALUE"),
            "{missing}"
        );
        request.values.inputs = vec![("target".to_owned(), "prod".to_owned())];
        request.values.secrets = vec![("GITHUB_TOKEN".to_owned(), "t0k".to_owned())];
        let spec = request.workflow_spec(&file, &repo, 9).expect("spec");
        let text = |object: &kiln_workflow::Object, key: &str| {
            object.get(key).map(kiln_workflow::Value::to_display_string)
        };
        assert_eq!(text(&spec.github, "workflow").as_deref(), Some("Deploy"));
        assert_eq!(text(&spec.github, "token").as_deref(), Some("t0k"));
        assert_eq!(text(&spec.github, "run_id").as_deref(), Some("9"));
        assert_eq!(text(&spec.inputs, "target").as_deref(), Some("prod"));
        assert_eq!(text(&spec.secrets, "GITHUB_TOKEN").as_deref(), Some("t0k"));
        assert_eq!(spec.matrix_filter, request.matrix_filter);
    }
}
