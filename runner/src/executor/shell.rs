//! GitHub's shell templates for `run` steps (`ScriptHandlerHelpers.cs`): which program runs
//! the script, with which arguments, and what the script file looks like.

/// The error GitHub gives for a `shell:` that is neither a built-in nor a format string.
pub const INVALID_SHELL: &str = "Invalid shell option. Shell must be a valid built-in (bash, sh, cmd, powershell, pwsh) or a format string containing '{0}'";

/// A resolved shell: the command line with `{0}` standing for the script path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shell {
    pub argv: Vec<String>,
    /// Script file extension, with the dot (empty for custom programs we do not know).
    pub extension: &'static str,
    /// The script text as the shell needs it (PowerShell and cmd get fix-ups).
    kind: ScriptKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScriptKind {
    Plain,
    PowerShell,
    Cmd,
}

impl Shell {
    /// Resolves `shell:` (already evaluated; `None` when neither the step nor `defaults.run`
    /// set one). `bash_available` decides the default, as the runner checks PATH for bash.
    pub fn resolve(shell: Option<&str>, bash_available: bool) -> Result<Shell, String> {
        let Some(shell) = shell.map(str::trim).filter(|s| !s.is_empty()) else {
            let program = if bash_available { "bash" } else { "sh" };
            return Ok(Shell::plain(&[program, "-e", "{0}"], ".sh"));
        };
        let (program, args) = match shell.split_once(' ') {
            Some((program, args)) => (program, args.trim()),
            None => (shell, ""),
        };
        if args.is_empty() {
            return builtin(program).ok_or_else(|| INVALID_SHELL.to_owned());
        }
        if !args.contains("{0}") {
            return Err(INVALID_SHELL.to_owned());
        }
        let mut argv = vec![program.to_owned()];
        argv.extend(shell_words::split(args).map_err(|e| format!("{INVALID_SHELL} ({e})"))?);
        let (extension, kind) = by_program(program);
        Ok(Shell {
            argv,
            extension,
            kind,
        })
    }

    /// The default shell of a container job: `bash -e {0}` when the container has bash,
    /// else `sh -e {0}`. `sh` looks and then execs, so the step's process is the same bash
    /// (same pid, arguments and environment) as if it had been started directly.
    pub fn default_in_container() -> Shell {
        Shell::plain(
            &[
                "sh",
                "-c",
                r#"if command -v bash >/dev/null 2>&1; then exec bash -e "$0"; fi; exec sh -e "$0""#,
                "{0}",
            ],
            ".sh",
        )
    }

    fn plain(argv: &[&str], extension: &'static str) -> Shell {
        Shell {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            extension,
            kind: ScriptKind::Plain,
        }
    }

    /// The command line with the script path in place of `{0}`.
    pub fn command(&self, script: &str) -> Vec<String> {
        self.argv.iter().map(|a| a.replace("{0}", script)).collect()
    }

    /// The line the log shows, like the runner's `shell: /usr/bin/bash -e {0}`.
    pub fn display(&self) -> String {
        self.argv.join(" ")
    }

    /// The script file's content.
    pub fn script(&self, body: &str) -> String {
        match self.kind {
            ScriptKind::Plain => body.to_owned(),
            ScriptKind::PowerShell => format!(
                "$ErrorActionPreference = 'stop'\n{body}\nif ((Test-Path -LiteralPath variable:\\LASTEXITCODE)) {{ exit $LASTEXITCODE }}"
            ),
            ScriptKind::Cmd => format!("@echo off\n{body}"),
        }
    }
}

fn builtin(name: &str) -> Option<Shell> {
    let shell = match name {
        "bash" => Shell::plain(
            &["bash", "--noprofile", "--norc", "-eo", "pipefail", "{0}"],
            ".sh",
        ),
        "sh" => Shell::plain(&["sh", "-e", "{0}"], ".sh"),
        "python" => Shell::plain(&["python", "{0}"], ".py"),
        "pwsh" | "powershell" => Shell {
            argv: vec![name.to_owned(), "-command".to_owned(), ". '{0}'".to_owned()],
            extension: ".ps1",
            kind: ScriptKind::PowerShell,
        },
        "cmd" => Shell {
            argv: ["cmd", "/D", "/E:ON", "/V:OFF", "/S", "/C", "CALL \"{0}\""]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            extension: ".cmd",
            kind: ScriptKind::Cmd,
        },
        _ => return None,
    };
    Some(shell)
}

/// Custom command lines still get the extension and fix-ups of a program the runner knows.
fn by_program(program: &str) -> (&'static str, ScriptKind) {
    let name = program.rsplit('/').next().unwrap_or(program);
    match name {
        "bash" | "sh" => (".sh", ScriptKind::Plain),
        "python" | "python3" => (".py", ScriptKind::Plain),
        "pwsh" | "powershell" => (".ps1", ScriptKind::PowerShell),
        "cmd" => (".cmd", ScriptKind::Cmd),
        _ => ("", ScriptKind::Plain),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_bash_without_pipefail_or_sh() {
        assert_eq!(Shell::resolve(None, true).unwrap().display(), "bash -e {0}");
        assert_eq!(Shell::resolve(None, false).unwrap().display(), "sh -e {0}");
        assert_eq!(
            Shell::resolve(Some("bash"), true).unwrap().display(),
            "bash --noprofile --norc -eo pipefail {0}"
        );
    }

    #[test]
    fn custom_shells_need_the_placeholder() {
        let perl = Shell::resolve(Some("perl -w {0}"), true).unwrap();
        assert_eq!(perl.command("/t/s"), ["perl", "-w", "/t/s"]);
        assert_eq!(
            Shell::resolve(Some("perl"), true).unwrap_err(),
            INVALID_SHELL
        );
        assert_eq!(
            Shell::resolve(Some("perl -w"), true).unwrap_err(),
            INVALID_SHELL
        );
    }

    #[test]
    fn powershell_scripts_get_error_handling() {
        let pwsh = Shell::resolve(Some("pwsh"), true).unwrap();
        assert_eq!(pwsh.extension, ".ps1");
        assert!(pwsh
            .script("x")
            .starts_with("$ErrorActionPreference = 'stop'\nx\n"));
    }
}
