//! The flags that say what to run, shared by `kiln run` (which runs it here) and `kiln
//! submit` (which sends it to a scheduler): one definition, so both read the same values the
//! same way.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kiln_scheduler::request::{RequestSources, RunRequest, RunTarget};

#[derive(Debug, clap::Args)]
pub struct RequestFlags {
    /// The event to simulate; workflows that do not trigger on it are not run.
    #[arg(default_value = "push")]
    pub event: String,

    /// A workflow file or a directory of them.
    #[arg(short = 'W', long = "workflows", value_name = "PATH")]
    pub workflows: Option<PathBuf>,

    /// Run only this job (its needs are not run, as in act).
    #[arg(short = 'j', long = "job", value_name = "JOB")]
    pub job: Option<String>,

    /// Run only matrix legs with this value (repeatable): `--matrix os:ubuntu-latest`.
    #[arg(long = "matrix", value_name = "KEY:VALUE")]
    pub matrix: Vec<String>,

    /// A secret: `NAME=VALUE`, or `NAME` to take the value from the environment (repeatable).
    #[arg(short = 's', long = "secret", value_name = "NAME[=VALUE]")]
    pub secrets: Vec<String>,

    /// Secrets in dotenv format (default: `.secrets` when it exists).
    #[arg(long = "secret-file", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,

    /// Environment variables for every job, in dotenv format (default: `.env` when it exists).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Option<PathBuf>,

    /// The event payload (JSON), the `github.event` context; its `inputs` object also gives
    /// workflow_dispatch and workflow_call inputs (below --input-file and --input).
    #[arg(short = 'e', long = "eventpath", value_name = "EVENT.json")]
    pub event_path: Option<PathBuf>,

    /// A configuration variable, the `vars` context (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,

    /// Variables in dotenv format (default: `.vars` when it exists).
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_file: Option<PathBuf>,

    /// A workflow input, the `inputs` context (repeatable).
    #[arg(long = "input", value_name = "NAME=VALUE")]
    pub inputs: Vec<String>,

    /// Inputs in dotenv format (default: `.input` when it exists).
    #[arg(long = "input-file", value_name = "FILE")]
    pub input_file: Option<PathBuf>,

    /// Run in this directory instead of the current one (the repository root).
    #[arg(short = 'C', long = "directory", value_name = "DIR")]
    pub directory: Option<PathBuf>,
}

impl RequestFlags {
    /// The repository root the command works in: `-C DIR`, else the current directory.
    pub fn dir(&self) -> anyhow::Result<PathBuf> {
        match &self.directory {
            Some(dir) => Ok(dir.clone()),
            None => std::env::current_dir().context("cannot determine the current directory"),
        }
    }

    /// Which workflows the flags are about; reads nothing.
    pub fn target(&self) -> RunTarget {
        RunTarget {
            event_name: self.event.clone(),
            workflows: self.workflows.clone(),
            job: self.job.clone(),
        }
    }

    /// The request the flags make: the payload, the dotenv files and the flags read, in the
    /// repository `dir`.
    pub fn read(&self, dir: &Path) -> anyhow::Result<RunRequest> {
        let sources = RequestSources {
            event_path: self.event_path.clone(),
            matrix: self.matrix.clone(),
            secrets: self.secrets.clone(),
            secret_file: self.secret_file.clone(),
            vars: self.vars.clone(),
            var_file: self.var_file.clone(),
            inputs: self.inputs.clone(),
            input_file: self.input_file.clone(),
            env_file: self.env_file.clone(),
        };
        Ok(RunRequest::read(dir, self.target(), &sources)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        request: RequestFlags,
    }

    fn pair(pairs: &[(String, String)], name: &str) -> Option<String> {
        pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn every_flag_reaches_the_request() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = [
            ("event.json", r#"{"inputs": {"from_payload": "p"}}"#),
            ("s.env", "FILE_SECRET=fs\n"),
            ("v.env", "FILE_VAR=fv\n"),
            ("i.env", "FILE_INPUT=fi\n"),
            ("e.env", "FILE_ENV=fe\n"),
        ];
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        let line = [
            "kiln",
            "workflow_dispatch",
            "-W",
            "flows/ci.yml",
            "-j",
            "build",
            "--matrix",
            "os:linux",
            "-s",
            "FLAG_SECRET=s",
            "--secret-file",
            "s.env",
            "--var",
            "FLAG_VAR=v",
            "--var-file",
            "v.env",
            "--input",
            "FLAG_INPUT=i",
            "--input-file",
            "i.env",
            "--env-file",
            "e.env",
            "-e",
            "event.json",
        ];
        let flags = Cli::parse_from(line).request;
        let request = flags.read(dir.path()).expect("request");
        assert_eq!(request.target.event_name, "workflow_dispatch");
        assert_eq!(
            request.target.workflows.as_deref(),
            Some(Path::new("flows/ci.yml"))
        );
        assert_eq!(request.target.job.as_deref(), Some("build"));
        assert_eq!(
            request.matrix_filter,
            [("os".to_owned(), "linux".to_owned())]
        );
        let values = &request.values;
        assert_eq!(pair(&values.secrets, "FLAG_SECRET").as_deref(), Some("s"));
        assert_eq!(pair(&values.secrets, "FILE_SECRET").as_deref(), Some("fs"));
        assert_eq!(pair(&values.vars, "FLAG_VAR").as_deref(), Some("v"));
        assert_eq!(pair(&values.vars, "FILE_VAR").as_deref(), Some("fv"));
        assert_eq!(pair(&values.inputs, "FLAG_INPUT").as_deref(), Some("i"));
        assert_eq!(pair(&values.inputs, "FILE_INPUT").as_deref(), Some("fi"));
        assert_eq!(pair(&values.inputs, "from_payload").as_deref(), Some("p"));
        assert_eq!(pair(&values.env, "FILE_ENV").as_deref(), Some("fe"));
        assert!(request.event.is_some());
    }
}
