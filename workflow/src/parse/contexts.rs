//! Which named values and functions each workflow key may use in expressions. Written from
//! GitHub's documentation of contexts per key; `tests/parse_contexts.rs` cross-checks every
//! entry against the `context` arrays of GitHub's workflow schema at test time.

/// A function allowed in a key, with its arity bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Function {
    pub name: &'static str,
    pub min_args: usize,
    pub max_args: usize,
}

/// The named values and functions one key may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyContext {
    /// The schema definition this context corresponds to (for the cross-check).
    pub definition: &'static str,
    pub named_values: &'static [&'static str],
    pub functions: &'static [Function],
}

impl KeyContext {
    /// Keys without a context take no expressions at all.
    pub fn allows_expressions(&self) -> bool {
        !self.definition.is_empty()
    }
}

/// For keys where any `${{ }}` is an error.
pub const NONE: KeyContext = KeyContext {
    definition: "",
    named_values: &[],
    functions: &[],
};

const fn f(name: &'static str, min_args: usize, max_args: usize) -> Function {
    Function {
        name,
        min_args,
        max_args,
    }
}

const ANY: usize = usize::MAX;

const BASE: &[&str] = &["github", "inputs", "vars"];
const WITH_JOBS: &[&str] = &["github", "inputs", "vars", "jobs"];
const WITH_SECRETS: &[&str] = &["github", "inputs", "vars", "secrets"];
const WITH_NEEDS: &[&str] = &["github", "inputs", "vars", "needs"];
const WITH_MATRIX: &[&str] = &["github", "inputs", "vars", "needs", "strategy", "matrix"];
const WITH_MATRIX_SECRETS: &[&str] = &[
    "github", "inputs", "vars", "needs", "strategy", "matrix", "secrets",
];
const JOB_DEFAULTS: &[&str] = &[
    "github", "inputs", "vars", "strategy", "matrix", "needs", "env",
];
const CREDENTIALS: &[&str] = &["github", "inputs", "vars", "secrets", "env"];
const RUNNER: &[&str] = &[
    "github", "inputs", "vars", "needs", "strategy", "matrix", "secrets", "steps", "job", "runner",
    "env",
];
const RUNNER_NO_SECRETS: &[&str] = &[
    "github", "inputs", "vars", "needs", "strategy", "matrix", "steps", "job", "runner", "env",
];
const STEP_IF_RESULT: &[&str] = &[
    "github", "inputs", "vars", "strategy", "matrix", "steps", "job", "runner", "env",
];

const JOB_STATUS: &[Function] = &[
    f("always", 0, 0),
    f("failure", 0, ANY),
    f("cancelled", 0, 0),
    f("success", 0, ANY),
];
const HASH_FILES: &[Function] = &[f("hashFiles", 1, 255)];
const STEP_STATUS: &[Function] = &[
    f("always", 0, 0),
    f("failure", 0, 0),
    f("cancelled", 0, 0),
    f("success", 0, 0),
    f("hashFiles", 1, 255),
];

const fn ctx(
    definition: &'static str,
    named_values: &'static [&'static str],
    functions: &'static [Function],
) -> KeyContext {
    KeyContext {
        definition,
        named_values,
        functions,
    }
}

pub const RUN_NAME: KeyContext = ctx("run-name", BASE, &[]);
pub const CALL_INPUT_DEFAULT: KeyContext = ctx("workflow-call-input-default", BASE, &[]);
pub const WORKFLOW_CONCURRENCY: KeyContext = ctx("workflow-concurrency", BASE, &[]);
pub const CALL_OUTPUT_VALUE: KeyContext = ctx("workflow-output-context", WITH_JOBS, &[]);
pub const WORKFLOW_ENV: KeyContext = ctx("workflow-env", WITH_SECRETS, &[]);
pub const JOB_IF: KeyContext = ctx("job-if", WITH_NEEDS, JOB_STATUS);
pub const JOB_IF_RESULT: KeyContext = ctx("job-if-result", WITH_NEEDS, JOB_STATUS);
pub const STRATEGY: KeyContext = ctx("strategy", WITH_NEEDS, &[]);
pub const BOOLEAN_NEEDS: KeyContext = ctx("boolean-needs-context", WITH_NEEDS, &[]);
pub const NUMBER_NEEDS: KeyContext = ctx("number-needs-context", WITH_NEEDS, &[]);
pub const STRING_NEEDS: KeyContext = ctx("string-needs-context", WITH_NEEDS, &[]);
pub const SNAPSHOT_IF: KeyContext = ctx("snapshot-if", WITH_MATRIX, &[]);
pub const RUNS_ON: KeyContext = ctx("runs-on", WITH_MATRIX, &[]);
pub const JOB_CONCURRENCY: KeyContext = ctx("job-concurrency", WITH_MATRIX, &[]);
pub const JOB_ENVIRONMENT: KeyContext = ctx("job-environment", WITH_MATRIX, &[]);
pub const JOB_ENVIRONMENT_NAME: KeyContext = ctx("job-environment-name", WITH_MATRIX, &[]);
pub const CONTAINER: KeyContext = ctx("container", WITH_MATRIX, &[]);
pub const SERVICES: KeyContext = ctx("services", WITH_MATRIX, &[]);
pub const SERVICES_CONTAINER: KeyContext = ctx("services-container", WITH_MATRIX, &[]);
pub const SCALAR_NEEDS: KeyContext = ctx("scalar-needs-context", WITH_MATRIX, &[]);
pub const BOOLEAN_STRATEGY: KeyContext = ctx("boolean-strategy-context", WITH_MATRIX, &[]);
pub const NUMBER_STRATEGY: KeyContext = ctx("number-strategy-context", WITH_MATRIX, &[]);
pub const STRING_STRATEGY: KeyContext = ctx("string-strategy-context", WITH_MATRIX, &[]);
pub const JOB_ENV: KeyContext = ctx("job-env", WITH_MATRIX_SECRETS, &[]);
pub const JOB_DEFAULTS_RUN: KeyContext = ctx("job-defaults-run", JOB_DEFAULTS, &[]);
pub const STEP_CONTINUE_ON_ERROR: KeyContext = ctx("step-continue-on-error", RUNNER, HASH_FILES);
pub const STEP_ENV: KeyContext = ctx("step-env", RUNNER, HASH_FILES);
pub const STEP_NAME: KeyContext = ctx("step-name", RUNNER, HASH_FILES);
pub const STEP_TIMEOUT_MINUTES: KeyContext = ctx("step-timeout-minutes", RUNNER, HASH_FILES);
pub const STEP_WITH: KeyContext = ctx("step-with", RUNNER, HASH_FILES);
pub const BOOLEAN_STEPS: KeyContext = ctx("boolean-steps-context", RUNNER, HASH_FILES);
pub const NUMBER_STEPS: KeyContext = ctx("number-steps-context", RUNNER, HASH_FILES);
pub const STRING_STEPS: KeyContext = ctx("string-steps-context", RUNNER, HASH_FILES);
pub const STEP_IF: KeyContext = ctx("step-if", RUNNER_NO_SECRETS, STEP_STATUS);
pub const STEP_IF_RESULT_CTX: KeyContext = ctx("step-if-result", STEP_IF_RESULT, STEP_STATUS);
pub const CONTAINER_CREDENTIALS: KeyContext =
    ctx("container-registry-credentials", CREDENTIALS, &[]);
pub const SCALAR_NEEDS_SECRETS: KeyContext = ctx(
    "scalar-needs-context-with-secrets",
    &[
        "github", "inputs", "vars", "needs", "secrets", "strategy", "matrix",
    ],
    &[],
);
pub const STRING_RUNNER: KeyContext = ctx("string-runner-context", RUNNER, &[]);
pub const STRING_RUNNER_NO_SECRETS: KeyContext =
    ctx("string-runner-context-no-secrets", RUNNER_NO_SECRETS, &[]);

/// Every table above, for the cross-check against the schema.
pub const ALL: &[KeyContext] = &[
    RUN_NAME,
    CALL_INPUT_DEFAULT,
    WORKFLOW_CONCURRENCY,
    CALL_OUTPUT_VALUE,
    WORKFLOW_ENV,
    JOB_IF,
    JOB_IF_RESULT,
    STRATEGY,
    BOOLEAN_NEEDS,
    NUMBER_NEEDS,
    STRING_NEEDS,
    SNAPSHOT_IF,
    RUNS_ON,
    JOB_CONCURRENCY,
    JOB_ENVIRONMENT,
    JOB_ENVIRONMENT_NAME,
    CONTAINER,
    SERVICES,
    SERVICES_CONTAINER,
    SCALAR_NEEDS,
    BOOLEAN_STRATEGY,
    NUMBER_STRATEGY,
    STRING_STRATEGY,
    JOB_ENV,
    JOB_DEFAULTS_RUN,
    STEP_CONTINUE_ON_ERROR,
    STEP_ENV,
    STEP_NAME,
    STEP_TIMEOUT_MINUTES,
    STEP_WITH,
    BOOLEAN_STEPS,
    NUMBER_STEPS,
    STRING_STEPS,
    STEP_IF,
    STEP_IF_RESULT_CTX,
    CONTAINER_CREDENTIALS,
    SCALAR_NEEDS_SECRETS,
    STRING_RUNNER,
    STRING_RUNNER_NO_SECRETS,
];

const ACTION_STEP_VALUES: &[&str] = &[
    "github", "inputs", "strategy", "matrix", "steps", "job", "runner", "env",
];
const ACTION_STATUS: &[Function] = &[
    f("always", 0, 0),
    f("success", 0, 0),
    f("failure", 0, 0),
    f("cancelled", 0, 0),
    f("hashFiles", 1, 255),
];

pub const ACTION_INPUT_DEFAULT: KeyContext = ctx(
    "input-default-context",
    &["github", "strategy", "matrix", "job", "runner"],
    HASH_FILES,
);
pub const ACTION_OUTPUT_VALUE: KeyContext = ctx("output-value", ACTION_STEP_VALUES, &[]);
pub const ACTION_RUNS_IF: KeyContext = ctx(
    "runs-if",
    &[
        "runner", "github", "job", "strategy", "matrix", "env", "inputs",
    ],
    ACTION_STATUS,
);
pub const ACTION_CONTAINER: KeyContext = ctx("container-runs-context", &["inputs"], &[]);
pub const ACTION_CONTAINER_ENV: KeyContext = ctx("container-runs-env", &["inputs"], &[]);
pub const ACTION_STEP_STRING: KeyContext =
    ctx("string-steps-context", ACTION_STEP_VALUES, HASH_FILES);
pub const ACTION_STEP_BOOLEAN: KeyContext =
    ctx("boolean-steps-context", ACTION_STEP_VALUES, HASH_FILES);
pub const ACTION_STEP_ENV: KeyContext = ctx("step-env", ACTION_STEP_VALUES, HASH_FILES);
pub const ACTION_STEP_WITH: KeyContext = ctx("step-with", ACTION_STEP_VALUES, HASH_FILES);
pub const ACTION_STEP_IF: KeyContext = ctx("step-if", ACTION_STEP_VALUES, STEP_STATUS);

/// Every action.yml table, for the cross-check against the action schema.
pub const ALL_ACTION: &[KeyContext] = &[
    ACTION_INPUT_DEFAULT,
    ACTION_OUTPUT_VALUE,
    ACTION_RUNS_IF,
    ACTION_CONTAINER,
    ACTION_CONTAINER_ENV,
    ACTION_STEP_STRING,
    ACTION_STEP_BOOLEAN,
    ACTION_STEP_ENV,
    ACTION_STEP_WITH,
    ACTION_STEP_IF,
];
