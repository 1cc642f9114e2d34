use super::{
    Condition, DynamicKeys, EnvMap, MaybeExpr, Pairs, Param, Spanned, Template, TemplateMap, Tree,
    WithMap,
};
use crate::uses::RepositoryRef;
use crate::yaml::Pos;

#[derive(Debug, Clone)]
pub struct Workflow {
    pub name: Option<Spanned<String>>,
    pub run_name: Option<Template>,
    pub on: Vec<Trigger>,
    pub env: EnvMap,
    pub defaults: Option<RunDefaults>,
    pub concurrency: Option<Concurrency>,
    pub permissions: Option<Permissions>,
    pub jobs: Vec<Job>,
    pub pos: Pos,
    /// Where the file was read from when it is not one of the run's own files (a reusable
    /// workflow called as `owner/repo/path@ref`): what `$/` in it refers to. `None`: the run's
    /// repository at the commit being run.
    pub origin: Option<RepositoryRef>,
}

impl Workflow {
    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs
            .iter()
            .find(|j| j.id.value.eq_ignore_ascii_case(id))
    }

    /// The `on.workflow_call` trigger, when this workflow can be called.
    pub fn workflow_call(&self) -> Option<&Trigger> {
        self.on.iter().find(|t| t.event.value == "workflow_call")
    }
}

/// One event under `on:` with its filters and configuration.
#[derive(Debug, Clone, Default)]
pub struct Trigger {
    pub event: Spanned<String>,
    pub types: Vec<Spanned<String>>,
    pub branches: Option<Vec<Spanned<String>>>,
    pub branches_ignore: Option<Vec<Spanned<String>>>,
    pub tags: Option<Vec<Spanned<String>>>,
    pub tags_ignore: Option<Vec<Spanned<String>>>,
    pub paths: Option<Vec<Spanned<String>>>,
    pub paths_ignore: Option<Vec<Spanned<String>>>,
    /// `workflow_run.workflows`.
    pub workflows: Vec<Spanned<String>>,
    /// `image_version.names` and `image_version.versions`.
    pub names: Vec<Spanned<String>>,
    pub versions: Vec<Spanned<String>>,
    /// `schedule`: one cron per entry.
    pub crons: Vec<Spanned<String>>,
    /// `workflow_dispatch` and `workflow_call` inputs.
    pub inputs: Vec<InputDef>,
    /// `workflow_call` outputs.
    pub outputs: Vec<CallOutput>,
    /// `workflow_call` secrets.
    pub secrets: Vec<CallSecret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    String,
    Boolean,
    Number,
    Choice,
    Environment,
}

impl InputType {
    pub fn name(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Boolean => "boolean",
            InputType::Number => "number",
            InputType::Choice => "choice",
            InputType::Environment => "environment",
        }
    }
}

#[derive(Debug, Clone)]
pub struct InputDef {
    pub name: Spanned<String>,
    pub description: Option<String>,
    pub required: bool,
    pub input_type: InputType,
    pub default: Option<Param>,
    pub options: Vec<String>,
}

impl InputDef {
    /// An optional string input without description or default, as GitHub assumes.
    pub fn new(name: Spanned<String>) -> Self {
        InputDef {
            name,
            description: None,
            required: false,
            input_type: InputType::String,
            default: None,
            options: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CallOutput {
    pub name: Spanned<String>,
    pub description: Option<String>,
    pub value: Template,
}

#[derive(Debug, Clone)]
pub struct CallSecret {
    pub name: Spanned<String>,
    pub description: Option<String>,
    pub required: bool,
}

/// `defaults.run`.
#[derive(Debug, Clone, Default)]
pub struct RunDefaults {
    pub shell: Option<Template>,
    pub working_directory: Option<Template>,
    /// Keys only known once evaluated (job-level `defaults.run` takes contexts).
    pub dynamic: DynamicKeys,
}

#[derive(Debug, Clone)]
pub enum Concurrency {
    /// `concurrency: group-name` or a whole-value expression.
    Group(Template),
    Mapping {
        /// Empty when only an evaluated key gives it.
        group: Template,
        cancel_in_progress: Option<MaybeExpr<bool>>,
        dynamic: DynamicKeys,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PermissionLevel {
    None,
    Read,
    Write,
}

impl PermissionLevel {
    pub fn name(self) -> &'static str {
        match self {
            PermissionLevel::None => "none",
            PermissionLevel::Read => "read",
            PermissionLevel::Write => "write",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Permissions {
    ReadAll(Pos),
    WriteAll(Pos),
    /// Per-scope levels; scopes not listed are `none`. `{}` is an empty list.
    Scopes(Vec<(Spanned<String>, PermissionLevel)>, Pos),
}

impl Permissions {
    pub fn pos(&self) -> Pos {
        match self {
            Permissions::ReadAll(p) | Permissions::WriteAll(p) | Permissions::Scopes(_, p) => *p,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: Spanned<String>,
    /// `name:`; see [`Job::display_name`] for the default.
    pub name: Option<Template>,
    pub needs: Vec<Spanned<String>>,
    pub condition: Condition,
    pub runs_on: Option<RunsOn>,
    pub strategy: Option<Strategy>,
    pub env: EnvMap,
    pub defaults: Option<RunDefaults>,
    pub outputs: Pairs<Template>,
    pub timeout_minutes: Option<MaybeExpr<f64>>,
    pub cancel_timeout_minutes: Option<MaybeExpr<f64>>,
    pub continue_on_error: Option<MaybeExpr<bool>>,
    pub container: Option<Container>,
    /// Service names may be written as expressions, and services inserted.
    pub services: TemplateMap<Container>,
    pub environment: Option<Environment>,
    pub concurrency: Option<Concurrency>,
    pub permissions: Option<Permissions>,
    pub kind: JobKind,
    pub pos: Pos,
}

impl Job {
    /// The display name: `name:` when given and not empty, else the job id.
    pub fn display_name(&self) -> Template {
        match &self.name {
            Some(name) if !name.raw.is_empty() => name.clone(),
            _ => Template::literal(self.id.value.clone(), self.id.pos),
        }
    }
}

#[derive(Debug, Clone)]
pub enum JobKind {
    Steps(Vec<Step>),
    Call(ReusableCall),
}

/// A job that calls a reusable workflow.
#[derive(Debug, Clone)]
pub struct ReusableCall {
    pub uses: Spanned<String>,
    pub with: Pairs<Param>,
    pub secrets: CallSecrets,
    /// The called workflow, when a resolver loaded it.
    pub callee: Option<Box<Workflow>>,
}

#[derive(Debug, Clone)]
pub enum CallSecrets {
    None,
    Inherit(Pos),
    Map(Pairs<Template>),
}

#[derive(Debug, Clone)]
pub enum RunsOn {
    Labels(Vec<Template>),
    Group {
        group: Option<Template>,
        labels: Vec<Template>,
        dynamic: DynamicKeys,
    },
    Expr(Template),
}

#[derive(Debug, Clone)]
pub struct Strategy {
    pub matrix: Option<Matrix>,
    pub fail_fast: Option<MaybeExpr<bool>>,
    pub max_parallel: Option<MaybeExpr<f64>>,
    pub pos: Pos,
    /// Keys only known once evaluated, also the whole strategy written as one expression.
    pub dynamic: DynamicKeys,
}

/// `strategy.matrix`, kept as data: expressions inside (also in keys, `${{ insert }}`, and
/// vectors spliced from an expression) are evaluated at expansion time.
#[derive(Debug, Clone)]
pub enum Matrix {
    Expr(Template),
    Mapping(Tree),
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: Option<Template>,
    pub password: Option<Template>,
    pub dynamic: DynamicKeys,
}

#[derive(Debug, Clone)]
pub struct Container {
    pub image: Template,
    pub credentials: Option<Credentials>,
    pub env: EnvMap,
    pub ports: Vec<Template>,
    pub volumes: Vec<Template>,
    pub options: Option<Template>,
    pub pos: Pos,
    /// Keys only known once evaluated. A container written as one expression is `image`
    /// (whose value may also be a mapping of the container's keys).
    pub dynamic: DynamicKeys,
}

#[derive(Debug, Clone)]
pub struct Environment {
    pub name: Template,
    pub url: Option<Template>,
    /// `deployment:` (whether GitHub records a deployment); true when absent.
    pub deployment: Option<MaybeExpr<bool>>,
    /// Keys only known once evaluated. An environment written as one expression is `name`
    /// (whose value may also be a mapping of the environment's keys).
    pub dynamic: DynamicKeys,
}

#[derive(Debug, Clone)]
pub struct Step {
    /// `id:` as written.
    pub id: Option<Spanned<String>>,
    /// The id GitHub uses: the written one, or a generated `__run`, `__actions_checkout`, ...
    pub effective_id: String,
    pub name: Option<Template>,
    pub condition: Condition,
    pub action: StepAction,
    pub env: EnvMap,
    pub continue_on_error: Option<MaybeExpr<bool>>,
    pub timeout_minutes: Option<MaybeExpr<f64>>,
    /// `background: true` (experimental background steps).
    pub background: bool,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub enum StepAction {
    Run {
        run: Template,
        shell: Option<Template>,
        working_directory: Option<Template>,
    },
    Uses {
        uses: Spanned<String>,
        with: WithMap,
    },
    /// Waits for the named background steps.
    Wait(Vec<Spanned<String>>),
    WaitAll,
    Cancel(Spanned<String>),
    Parallel(Vec<Step>),
}
