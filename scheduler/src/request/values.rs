//! Turning the command's flags and files into the values a run needs: secrets, vars, inputs,
//! the env-file variables, `--matrix` filters and `--local-repository` mappings.

use std::path::{Path, PathBuf};

use kiln_workflow::model::{InputDef, InputType, Workflow};
use kiln_workflow::value::{parse_number, Object, Value};

use super::dotenv::{self, DotenvError};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    File(#[from] DotenvError),
    #[error("{flag} `{value}`: expected {expected}")]
    Malformed {
        flag: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("secret {0} is not set in the environment (use `-s {0}=VALUE` or export it)")]
    SecretNotInEnv(String),
    #[error("required input `{input}` of {workflow} has no value: pass `--input {input}=VALUE`")]
    MissingInput { workflow: String, input: String },
    #[error("secret `{secret}` of {workflow} is required, but not provided: pass `-s {secret}=VALUE` (or `-s {secret}` to take it from the environment)")]
    MissingSecret { workflow: String, secret: String },
    #[error("input `{input}` of {workflow} is `{value}`, but it takes {expected}: pass `--input {input}=VALUE` with such a value")]
    InputType {
        workflow: String,
        input: String,
        value: String,
        expected: String,
    },
    #[error("cannot read the event payload {path}: {detail}")]
    Event { path: String, detail: String },
    #[error("the event payload's {what}: workflow_dispatch inputs are strings, numbers or booleans (`{{\"inputs\": {{\"name\": \"value\"}}}}`)")]
    PayloadInput { what: String },
}

/// Values given on the command line or in files, later entries winning.
#[derive(Debug, Default, Clone)]
pub struct RunValues {
    pub secrets: Vec<(String, String)>,
    pub vars: Vec<(String, String)>,
    pub inputs: Vec<(String, String)>,
    /// `--env-file`: environment for every job, below the workflow's own `env`.
    pub env: Vec<(String, String)>,
}

/// Reads `explicit` (an error when missing) or the default file name in `dir` (skipped when
/// missing), as act treats `.secrets`, `.env`, `.vars` and `.input`.
pub fn read_pairs(
    dir: &Path,
    explicit: Option<&Path>,
    default_name: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let read = match explicit {
        Some(path) => dotenv::read_file(&dir.join(path), false)?,
        None => dotenv::read_file(&dir.join(default_name), true)?,
    };
    Ok(read.unwrap_or_default())
}

/// `NAME=VALUE` flags.
pub fn parse_assignments(
    flag: &'static str,
    values: &[String],
) -> Result<Vec<(String, String)>, ConfigError> {
    values
        .iter()
        .map(|value| match value.split_once('=') {
            Some((name, v)) if !name.trim().is_empty() => {
                Ok((name.trim().to_owned(), v.to_owned()))
            }
            _ => Err(ConfigError::Malformed {
                flag,
                value: value.clone(),
                expected: "NAME=VALUE",
            }),
        })
        .collect()
}

/// `-s NAME=VALUE` or `-s NAME` (value read from the environment, so it stays out of shell history).
pub fn parse_secrets(values: &[String]) -> Result<Vec<(String, String)>, ConfigError> {
    values
        .iter()
        .map(|value| match value.split_once('=') {
            Some((name, v)) if !name.trim().is_empty() => {
                Ok((name.trim().to_owned(), v.to_owned()))
            }
            Some(_) => Err(ConfigError::Malformed {
                flag: "-s",
                value: "(hidden)".to_owned(),
                expected: "NAME=VALUE or NAME",
            }),
            None => std::env::var(value.trim())
                .map(|v| (value.trim().to_owned(), v))
                .map_err(|_| ConfigError::SecretNotInEnv(value.trim().to_owned())),
        })
        .collect()
}

/// `--matrix key:value` filters.
pub fn parse_matrix_filters(values: &[String]) -> Result<Vec<(String, String)>, ConfigError> {
    values
        .iter()
        .map(|value| match value.split_once(':') {
            Some((key, v)) if !key.trim().is_empty() => {
                Ok((key.trim().to_owned(), v.trim().to_owned()))
            }
            _ => Err(ConfigError::Malformed {
                flag: "--matrix",
                value: value.clone(),
                expected: "KEY:VALUE",
            }),
        })
        .collect()
}

/// `--local-repository owner/repo@ref=PATH`, PATH relative to `dir`. The repository may also
/// be written as act users write it, as its URL: `https://github.com/owner/repo@ref=PATH`
/// (any host; a `.git` suffix is dropped). Keys are `owner/repo@ref`.
pub fn parse_local_repositories(
    dir: &Path,
    values: &[String],
) -> Result<Vec<(String, PathBuf)>, ConfigError> {
    values
        .iter()
        .map(|value| {
            let parsed = value
                .split_once('=')
                .filter(|(_, path)| !path.is_empty())
                .and_then(|(repository, path)| Some((repository_key(repository)?, path)));
            match parsed {
                Some((key, path)) => Ok((key, dir.join(path))),
                None => Err(ConfigError::Malformed {
                    flag: "--local-repository",
                    value: value.clone(),
                    expected: "OWNER/REPO@REF=PATH or https://github.com/OWNER/REPO@REF=PATH",
                }),
            }
        })
        .collect()
}

/// `owner/repo@ref` from `owner/repo@ref` or `SCHEME://HOST/owner/repo[.git]@ref`.
fn repository_key(text: &str) -> Option<String> {
    let (repository, git_ref) = text.trim().rsplit_once('@')?;
    let path = match repository.split_once("://") {
        Some((scheme, rest)) if !scheme.is_empty() => rest.split_once('/')?.1,
        Some(_) => return None,
        None => repository,
    };
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let mut segments = path.split('/');
    let (owner, name) = (segments.next()?, segments.next()?);
    let valid = |part: &str| !part.is_empty() && !part.contains(char::is_whitespace);
    (segments.next().is_none() && valid(owner) && valid(name) && valid(git_ref))
        .then(|| format!("{owner}/{name}@{git_ref}"))
}

/// The event payload from `-e FILE`.
pub fn read_event(path: &Path) -> Result<serde_json::Value, ConfigError> {
    let error = |detail: String| ConfigError::Event {
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| error(e.to_string()))?;
    if !value.is_object() {
        return Err(error("the payload must be a JSON object".to_owned()));
    }
    Ok(value)
}

/// The inputs of an event payload (`{"inputs": {"name": "value"}}`), as GitHub's
/// `workflow_dispatch` payload and act's `-e FILE` hold them. Numbers and booleans are taken
/// as their text (the declared type reads them back); `null` counts as not given.
pub fn payload_inputs(payload: &serde_json::Value) -> Result<Vec<(String, String)>, ConfigError> {
    let inputs = match payload.get("inputs") {
        None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
        Some(serde_json::Value::Object(inputs)) => inputs,
        Some(other) => {
            return Err(ConfigError::PayloadInput {
                what: format!("`inputs` is {}, not an object", json_kind(other)),
            })
        }
    };
    let mut pairs = Vec::new();
    for (name, value) in inputs {
        let text = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Bool(_) | serde_json::Value::Number(_) => value.to_string(),
            other => {
                return Err(ConfigError::PayloadInput {
                    what: format!("`inputs.{name}` is {}", json_kind(other)),
                })
            }
        };
        pairs.push((name.clone(), text));
    }
    Ok(pairs)
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Pairs into an expression object (case-insensitive names, later wins).
/// The `GITHUB_TOKEN` secret, when given (the last one wins): the `github.token` of a run.
pub fn github_token(secrets: &[(String, String)]) -> Option<&str> {
    secrets
        .iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case("GITHUB_TOKEN"))
        .map(|(_, v)| v.as_str())
}

pub fn object_of(pairs: &[(String, String)]) -> Object {
    let mut object = Object::new();
    for (name, value) in pairs {
        object.insert(name.clone(), Value::string(value.as_str()));
    }
    object
}

/// The `inputs` context for `event`. A run started by `workflow_dispatch`, or a
/// `workflow_call`-only file run directly, gets the declared inputs of that trigger as GitHub
/// gives them: a required input without value is an error, defaults fill the rest, values are
/// checked against the type (boolean, number, choice) and typed (booleans and numbers).
/// Given inputs the trigger does not declare are kept as strings, as are all inputs of other
/// events.
pub fn inputs_for(
    workflow: &Workflow,
    workflow_name: &str,
    event: &str,
    given: &[(String, String)],
) -> Result<Object, ConfigError> {
    let mut inputs = object_of(given);
    if !matches!(event, "workflow_dispatch" | "workflow_call") {
        return Ok(inputs);
    }
    let Some(trigger) = workflow.on.iter().find(|t| t.event.value == event) else {
        return Ok(inputs);
    };
    for def in &trigger.inputs {
        let name = &def.name.value;
        let given_value = given
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str());
        let value = match given_value {
            Some(text) => typed_input(def, text).map_err(|expected| ConfigError::InputType {
                workflow: workflow_name.to_owned(),
                input: name.clone(),
                value: text.to_owned(),
                expected,
            })?,
            None => match &def.default {
                Some(default) => typed_default(def, &default.value),
                None if def.required => {
                    return Err(ConfigError::MissingInput {
                        workflow: workflow_name.to_owned(),
                        input: name.clone(),
                    })
                }
                None => empty_input(def.input_type),
            },
        };
        inputs.insert(name.clone(), value);
    }
    Ok(inputs)
}

/// A `workflow_call`-only file run directly must be given the secrets it declares as required,
/// as a caller must pass them (GitHub refuses the call otherwise).
pub fn check_call_secrets(
    workflow: &Workflow,
    workflow_name: &str,
    event: &str,
    given: &[(String, String)],
) -> Result<(), ConfigError> {
    if event != "workflow_call" {
        return Ok(());
    }
    let Some(trigger) = workflow.on.iter().find(|t| t.event.value == event) else {
        return Ok(());
    };
    let missing = trigger.secrets.iter().find(|def| {
        def.required
            && !given
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(&def.name.value))
    });
    match missing {
        Some(def) => Err(ConfigError::MissingSecret {
            workflow: workflow_name.to_owned(),
            secret: def.name.value.clone(),
        }),
        None => Ok(()),
    }
}

/// A value given on the command line, as the input's type reads it; `Err` says what the type
/// accepts.
fn typed_input(def: &InputDef, text: &str) -> Result<Value, String> {
    match def.input_type {
        InputType::Boolean => match text.trim() {
            t if t.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            t if t.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => Err("`true` or `false`".to_owned()),
        },
        InputType::Number => {
            let number = parse_number(text);
            if text.trim().is_empty() || number.is_nan() {
                Err("a number".to_owned())
            } else {
                Ok(Value::Number(number))
            }
        }
        InputType::Choice if !def.options.is_empty() && !def.options.iter().any(|o| o == text) => {
            Err(format!("one of its options ({})", def.options.join(", ")))
        }
        InputType::String | InputType::Choice | InputType::Environment => Ok(Value::string(text)),
    }
}

/// A declared default, typed as the input (the parser has already checked it).
fn typed_default(def: &InputDef, default: &Value) -> Value {
    match (def.input_type, default) {
        (InputType::Boolean, Value::String(s)) => {
            Value::Bool(s.trim().eq_ignore_ascii_case("true"))
        }
        (InputType::Number, Value::String(s)) => Value::Number(parse_number(s)),
        (InputType::Boolean | InputType::Number, _) => default.clone(),
        (_, other) => Value::string(other.to_display_string()),
    }
}

/// An optional input nobody set: `false` for booleans, else the empty string.
fn empty_input(input_type: InputType) -> Value {
    match input_type {
        InputType::Boolean => Value::Bool(false),
        _ => Value::string(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_from_flags_and_environment() {
        std::env::set_var("KILN_TEST_SECRET_FROM_ENV", "from-env");
        let parsed =
            parse_secrets(&["A=1=2".into(), "KILN_TEST_SECRET_FROM_ENV".into()]).expect("valid");
        assert_eq!(parsed[0], ("A".into(), "1=2".into()));
        assert_eq!(parsed[1].1, "from-env");
        let missing = parse_secrets(&["KILN_TEST_SURELY_UNSET_NAME".into()]).expect_err("unset");
        assert!(missing.to_string().contains("KILN_TEST_SURELY_UNSET_NAME"));
    }

    #[test]
    fn malformed_flags_say_what_is_expected() {
        assert!(parse_assignments("--var", &["novalue".into()]).is_err());
        assert!(parse_matrix_filters(&["os".into()]).is_err());
        assert_eq!(
            parse_matrix_filters(&["os: linux".into()]).expect("valid"),
            vec![("os".into(), "linux".into())]
        );
        assert!(parse_local_repositories(Path::new("."), &["octo/x=dir".into()]).is_err());
    }

    #[test]
    fn local_repositories_are_named_by_owner_repo_and_ref_also_from_their_url() {
        let dir = Path::new("/work");
        let parsed = parse_local_repositories(
            dir,
            &[
                "octo/tools@v1=tools".into(),
                "https://github.com/octo/shared@main=../shared".into(),
                "http://ghe.example.com/Corp/Lib.git@release/2.x=/abs/lib".into(),
                "https://github.com/octo/trail/@v2=t".into(),
            ],
        )
        .expect("valid");
        assert_eq!(
            parsed,
            [
                ("octo/tools@v1".to_owned(), dir.join("tools")),
                ("octo/shared@main".to_owned(), dir.join("../shared")),
                ("Corp/Lib@release/2.x".to_owned(), PathBuf::from("/abs/lib")),
                ("octo/trail@v2".to_owned(), dir.join("t")),
            ]
        );
        for bad in [
            "octo/x=dir",
            "octo/x@=dir",
            "octo@v1=dir",
            "octo/x/y@v1=dir",
            "https://github.com@v1=dir",
            "https://github.com/octo@v1=dir",
            "://github.com/octo/x@v1=dir",
            "octo/x@v1=",
            "octo/x@v1",
        ] {
            let error = parse_local_repositories(dir, &[bad.into()]).expect_err(bad);
            assert!(
                error
                    .to_string()
                    .contains("https://github.com/OWNER/REPO@REF=PATH"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn payload_inputs_are_read_as_text_and_satisfy_required_inputs() {
        let payload = serde_json::json!({
            "ref": "refs/heads/main",
            "inputs": {"environment": "staging", "debug": true, "count": 3, "unset": null}
        });
        let pairs = payload_inputs(&payload).expect("valid");
        let expected: Vec<(String, String)> = [
            ("environment", "staging"),
            ("debug", "true"),
            ("count", "3"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        assert_eq!(pairs, expected);
        let yaml = "on:\n  workflow_dispatch:\n    inputs:\n      environment:\n        required: true\n      debug:\n        type: boolean\n      count:\n        type: number\n        default: 1\njobs:\n  j:\n    runs-on: x\n    steps:\n      - run: echo\n";
        let workflow = kiln_workflow::parse_workflow("w.yml", yaml)
            .value
            .expect("valid workflow");
        let inputs =
            inputs_for(&workflow, "w", "workflow_dispatch", &pairs).expect("required input given");
        assert_eq!(
            inputs
                .get("environment")
                .map(Value::to_display_string)
                .as_deref(),
            Some("staging")
        );
        assert!(matches!(inputs.get("debug"), Some(Value::Bool(true))));
        assert!(matches!(inputs.get("count"), Some(Value::Number(n)) if *n == 3.0));
        // Without the payload the required input is missing, as before.
        assert!(inputs_for(&workflow, "w", "workflow_dispatch", &[]).is_err());

        assert!(payload_inputs(&serde_json::json!({"ref": "x"}))
            .expect("no inputs")
            .is_empty());
        for (bad, says) in [
            (
                serde_json::json!({"inputs": ["a"]}),
                "`inputs` is an array, not an object",
            ),
            (
                serde_json::json!({"inputs": {"x": {"y": 1}}}),
                "`inputs.x` is an object",
            ),
        ] {
            let error = payload_inputs(&bad).expect_err("malformed");
            assert!(error.to_string().contains(says), "{error}");
        }
    }

    #[test]
    fn dispatch_inputs_get_defaults_and_types() {
        let yaml = "on:\n  workflow_dispatch:\n    inputs:\n      debug:\n        type: boolean\n        default: false\n      count:\n        type: number\n        default: 3\n      channel:\n        type: choice\n        options: [a, b]\n        default: a\njobs:\n  j:\n    runs-on: x\n    steps:\n      - run: echo\n";
        let parsed = kiln_workflow::parse_workflow("w.yml", yaml);
        let workflow = parsed.value.expect("valid workflow");
        let inputs = inputs_for(
            &workflow,
            "w",
            "workflow_dispatch",
            &[("debug".into(), "true".into())],
        )
        .expect("inputs");
        assert!(matches!(inputs.get("debug"), Some(Value::Bool(true))));
        assert!(matches!(inputs.get("count"), Some(Value::Number(n)) if *n == 3.0));
        assert_eq!(
            inputs
                .get("channel")
                .map(Value::to_display_string)
                .as_deref(),
            Some("a")
        );
        let wrong_choice = inputs_for(
            &workflow,
            "w",
            "workflow_dispatch",
            &[("channel".into(), "c".into())],
        )
        .expect_err("not an option");
        assert!(
            wrong_choice
                .to_string()
                .contains("one of its options (a, b)"),
            "{wrong_choice}"
        );
        let push = inputs_for(&workflow, "w", "push", &[]).expect("inputs");
        assert!(push.is_empty());
    }

    #[test]
    fn a_called_workflow_run_directly_needs_its_required_secrets() {
        let yaml = "on:\n  workflow_call:\n    secrets:\n      deploy_key:\n        required: true\n      optional_one:\n        required: false\njobs:\n  j:\n    runs-on: x\n    steps:\n      - run: echo\n";
        let parsed = kiln_workflow::parse_workflow("w.yml", yaml);
        let workflow = parsed.value.expect("valid workflow");
        let missing = check_call_secrets(&workflow, "w", "workflow_call", &[])
            .expect_err("deploy_key is required");
        assert!(
            missing.to_string().contains("`-s deploy_key=VALUE`"),
            "{missing}"
        );
        let given = [("DEPLOY_KEY".to_owned(), "k".to_owned())];
        assert!(check_call_secrets(&workflow, "w", "workflow_call", &given).is_ok());
        assert!(check_call_secrets(&workflow, "w", "push", &[]).is_ok());
    }
}
