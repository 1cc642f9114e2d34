//! `actions/setup-node|python|go|java`: kiln downloads nothing, so the step succeeds only
//! when the requested version is the one installed where the job runs (host PATH or the
//! job container), and says so clearly otherwise.

use std::time::Duration;

use indexmap::IndexMap;

use super::{input, BuiltinResult};
use crate::backend::{ExecOutcome, ExecSpec, OutputStream};
use crate::executor::job::JobRunner;
use crate::executor::step::StepCtx;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Node,
    Python,
    Go,
    Java,
}

impl Tool {
    fn input(self) -> &'static str {
        match self {
            Tool::Node => "node-version",
            Tool::Python => "python-version",
            Tool::Go => "go-version",
            Tool::Java => "java-version",
        }
    }

    fn candidates(self) -> &'static [&'static [&'static str]] {
        match self {
            Tool::Node => &[&["node", "--version"]],
            Tool::Python => &[&["python3", "--version"], &["python", "--version"]],
            Tool::Go => &[&["go", "version"]],
            Tool::Java => &[&["java", "-version"]],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Tool::Node => "node",
            Tool::Python => "python",
            Tool::Go => "go",
            Tool::Java => "java",
        }
    }
}

impl JobRunner {
    pub(super) async fn setup_tool(
        &mut self,
        ctx: &StepCtx,
        tool: Tool,
        inputs: &IndexMap<String, String>,
    ) -> BuiltinResult {
        let wanted = input(inputs, tool.input()).map(str::to_owned);
        let mut installed = None;
        for argv in tool.candidates() {
            if let Some(text) = self.capture(argv).await {
                if let Some(version) = extract_version(&text) {
                    installed = Some(version);
                    break;
                }
            }
        }
        let Some(installed) = installed else {
            return Err(format!(
                "{} is not installed where this job runs, and kiln does not download tools: install it (or use a container image that has it)",
                tool.name()
            ));
        };
        if let Some(wanted) = &wanted {
            if !version_matches(wanted, &installed) {
                return Err(format!(
                    "{} {wanted} was requested but {installed} is installed, and kiln does not download tools: install {} {wanted} or change `{}`",
                    tool.name(),
                    tool.name(),
                    tool.input()
                ));
            }
        }
        self.emitter.log(
            &self.log,
            &ctx.name,
            &format!("Using the installed {} {installed}", tool.name()),
        );
        Ok(vec![(tool.input().to_owned(), installed)])
    }

    /// Both output streams of a short command in the job, when it exits 0.
    async fn capture(&self, argv: &[&str]) -> Option<String> {
        let job_env = self.job_env.as_ref()?;
        let mut env = self.base_env.clone();
        env.push(("PATH".to_owned(), self.lookup_path()));
        let spec = ExecSpec {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            env,
            workdir: String::new(),
            timeout: Some(Duration::from_secs(30)),
        };
        let mut lines: Vec<(OutputStream, String)> = Vec::new();
        match self
            .backend
            .exec(job_env, &spec, &mut lines, &self.cancel)
            .await
        {
            Ok(ExecOutcome::Exited(0)) => Some(
                lines
                    .into_iter()
                    .map(|(_, l)| l)
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            _ => None,
        }
    }
}

/// The first dotted version number in a tool's `--version` text (`v20.11.1`,
/// `Python 3.11.4`, `go1.22.1`, `openjdk version "17.0.2"`).
fn extract_version(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let start = bytes.iter().enumerate().position(|(i, b)| {
        b.is_ascii_digit()
            && bytes
                .get(i + 1)
                .is_some_and(|n| n.is_ascii_digit() || *n == b'.')
    })?;
    let version: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    Some(version.trim_end_matches('.').to_owned())
}

/// `20`, `20.x`, `3.11`, `1.22.1`, `*`, `latest`, `lts/*` against an installed version:
/// each given component must equal the installed one; `x`/`*` match anything.
fn version_matches(wanted: &str, installed: &str) -> bool {
    let wanted = wanted.trim().trim_start_matches(['v', '^', '~', '=']);
    if matches!(
        wanted,
        "" | "*" | "x" | "latest" | "node" | "stable" | "lts/*"
    ) {
        return true;
    }
    let have: Vec<&str> = installed.split('.').collect();
    for (index, part) in wanted.split('.').enumerate() {
        if part == "x" || part == "*" {
            return true;
        }
        if have.get(index) != Some(&part) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_found_and_compared() {
        assert_eq!(extract_version("v20.11.1").as_deref(), Some("20.11.1"));
        assert_eq!(extract_version("Python 3.11.4").as_deref(), Some("3.11.4"));
        assert_eq!(
            extract_version("go version go1.22.1 linux/amd64").as_deref(),
            Some("1.22.1")
        );
        assert_eq!(
            extract_version("openjdk version \"17.0.2\" 2022").as_deref(),
            Some("17.0.2")
        );
        assert!(version_matches("20", "20.11.1"));
        assert!(version_matches("20.x", "20.11.1"));
        assert!(version_matches("3.11", "3.11.4"));
        assert!(!version_matches("3.12", "3.11.4"));
        assert!(!version_matches("18", "20.11.1"));
    }
}
