//! The keys `actions/setup-node|python|go|java` build when their `cache:` input is on, in the
//! shapes upstream writes them (read from each action's source): which files are hashed, which
//! platform parts the key holds, and whether there is a restore key. The parts a replay cannot
//! know exactly (the Python version the action resolved, the image's release) come from the
//! inputs as written and the job's `runs-on` label; the report's key families show them.

use kiln_workflow::model::{Param, WithMap};

/// A setup action's cache, as the workflow configures it.
#[derive(Clone, Debug)]
pub struct SetupCache {
    pub tool: &'static str,
    /// The package manager (`npm`, `pip`, `go`, `maven`...).
    pub manager: String,
    /// `<tool>-version`, when given.
    pub version: Option<Param>,
    /// `cache-dependency-path`, when given.
    pub dependency_path: Option<Param>,
    /// What is hashed without `cache-dependency-path`.
    pub lock_files: LockFiles,
    /// The directories the action caches (for the entry's version).
    pub paths: &'static str,
}

/// Which files a setup action hashes by default.
#[derive(Clone, Debug)]
pub enum LockFiles {
    /// The first of these names present at the workspace root (setup-node, setup-go).
    FirstAtRoot(&'static [&'static str]),
    /// hashFiles() of these patterns; `fallback` when they match nothing (setup-python's pip
    /// falls back to `**/pyproject.toml`).
    Patterns {
        patterns: &'static str,
        fallback: Option<&'static str>,
    },
}

/// The platform parts of a key, from the job's `runs-on`.
pub struct Platform<'a> {
    /// `RUNNER_OS`: `Linux`, `Windows`, `macOS`.
    pub os: &'a str,
    /// Node's `process.arch`: `x64`, `arm64`.
    pub node_arch: &'a str,
    /// `ImageOS`: `ubuntu24`, `win22`, `macos14`.
    pub image_os: &'a str,
    /// The release setup-python reads from the image: `Ubuntu-24.04`.
    pub release: &'a str,
}

fn with_param<'a>(with: &'a WithMap, name: &str) -> Option<&'a Param> {
    with.pairs()
        .find(|(k, _)| k.value.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// The cache a setup step configures, or None when it does not cache. `cache:` must be
/// written literally to be recognised (an expression there is read as written).
pub fn setup_cache(action: &str, major: Option<u32>, with: &WithMap) -> Option<SetupCache> {
    let literal = |name: &str| {
        with_param(with, name).map(|p| match &p.template {
            Some(t) => t.raw.clone(),
            None => p.value.to_display_string(),
        })
    };
    let cache = literal("cache").unwrap_or_default();
    let (tool, manager, lock_files, paths): (&'static str, String, LockFiles, &'static str) =
        match action {
            "actions/setup-node" => {
                let names: &'static [&'static str] = match cache.as_str() {
                    "npm" => &["package-lock.json", "npm-shrinkwrap.json", "yarn.lock"],
                    "yarn" => &["yarn.lock"],
                    "pnpm" => &["pnpm-lock.yaml"],
                    _ => return None,
                };
                let paths = match cache.as_str() {
                    "npm" => "~/.npm",
                    "yarn" => "~/.cache/yarn",
                    _ => "~/.local/share/pnpm/store",
                };
                ("node", cache.clone(), LockFiles::FirstAtRoot(names), paths)
            }
            "actions/setup-python" => {
                let (patterns, fallback, paths) = match cache.as_str() {
                    "pip" => (
                        "**/requirements.txt",
                        Some("**/pyproject.toml"),
                        "~/.cache/pip",
                    ),
                    "pipenv" => ("**/Pipfile.lock", None, "~/.local/share/virtualenvs"),
                    "poetry" => ("**/poetry.lock", None, "~/.cache/pypoetry/virtualenvs"),
                    _ => return None,
                };
                let files = LockFiles::Patterns { patterns, fallback };
                ("python", cache.clone(), files, paths)
            }
            "actions/setup-go" => {
                // On by default from v4; v6 hashes go.mod where earlier versions hash go.sum.
                let on = match cache.to_ascii_lowercase().as_str() {
                    "" => major.is_some_and(|m| m >= 4),
                    "false" => false,
                    _ => true,
                };
                if !on {
                    return None;
                }
                let names: &'static [&'static str] = if major.is_some_and(|m| m >= 6) {
                    &["go.mod"]
                } else {
                    &["go.sum"]
                };
                (
                    "go",
                    "go".into(),
                    LockFiles::FirstAtRoot(names),
                    "~/go/pkg/mod\n~/.cache/go-build",
                )
            }
            "actions/setup-java" => {
                let (patterns, paths) = match cache.as_str() {
                    "maven" => ("**/pom.xml", "~/.m2/repository"),
                    "gradle" => (
                        "**/*.gradle*\n**/gradle-wrapper.properties\nbuildSrc/**/Versions.kt\nbuildSrc/**/Dependencies.kt\ngradle/*.versions.toml\n**/versions.properties",
                        "~/.gradle/caches\n~/.gradle/wrapper",
                    ),
                    "sbt" => (
                        "**/*.sbt\n**/project/build.properties\n**/project/**.scala\n**/project/**.sbt",
                        "~/.ivy2/cache\n~/.sbt\n~/.cache/coursier",
                    ),
                    _ => return None,
                };
                let files = LockFiles::Patterns {
                    patterns,
                    fallback: None,
                };
                ("java", cache.clone(), files, paths)
            }
            _ => return None,
        };
    Some(SetupCache {
        tool,
        version: with_param(with, &format!("{tool}-version")).cloned(),
        dependency_path: with_param(with, "cache-dependency-path").cloned(),
        manager,
        lock_files,
        paths,
    })
}

impl SetupCache {
    /// The primary key (from the hash of the lock files) and the restore keys.
    pub fn keys(
        &self,
        platform: &Platform<'_>,
        version: &str,
        hash: &str,
    ) -> (String, Vec<String>) {
        let Platform {
            os,
            node_arch: arch,
            image_os,
            release,
        } = platform;
        let manager = &self.manager;
        let (prefix, restore) = match (self.tool, manager.as_str()) {
            ("node", _) => (format!("node-cache-{os}-{arch}-{manager}"), true),
            ("python", "pip") if *os == "Linux" => (
                format!("setup-python-{os}-{release}-python-{version}-pip"),
                true,
            ),
            ("python", "pip") => (format!("setup-python-{os}-python-{version}-pip"), true),
            ("python", "poetry") => (
                format!("setup-python-{os}-{arch}-python-{version}-poetry-v2"),
                false,
            ),
            ("python", _) => (
                format!("setup-python-{os}-{arch}-python-{version}-{manager}"),
                false,
            ),
            ("go", _) => {
                let image = if *os == "Linux" {
                    format!("{image_os}-")
                } else {
                    String::new()
                };
                (format!("setup-go-{os}-{arch}-{image}go-{version}"), false)
            }
            _ => (format!("setup-{}-{os}-{arch}-{manager}", self.tool), false),
        };
        let key = format!("{prefix}-{hash}");
        (key, if restore { vec![prefix] } else { Vec::new() })
    }
}
