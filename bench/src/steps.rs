//! Finding the cache steps of a workflow and evaluating their keys over a commit's tree:
//! `actions/cache`, `actions/cache/restore`, `actions/cache/save`, and the `cache:` input of
//! `actions/setup-node|python|go|java` (whose keys the actions build themselves, in the shapes
//! upstream uses, with the platform parts fixed to Linux/x64; they have no restore keys).

use crate::tree::CommitTree;
use kiln_workflow::eval::{evaluate_nested, evaluate_param, evaluate_to_string};
use kiln_workflow::expr::EvalContext;
use kiln_workflow::hashfiles::{self, FileSource, HashFilesOptions};
use kiln_workflow::model::{JobKind, Matrix, Pairs, Param, Step, StepAction, Template, Workflow};
use kiln_workflow::value::{Object, Value};
use std::cell::RefCell;

/// What a cache step does in a run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheKind {
    /// `actions/cache`: restore, then save at job end unless the primary key hit exactly.
    Cache,
    /// `actions/cache/restore`: restore only.
    Restore,
    /// `actions/cache/save`: save only.
    Save,
    /// `actions/setup-*` with caching: restore, then save at job end on a miss.
    Setup,
}

impl CacheKind {
    pub fn restores(&self) -> bool {
        !matches!(self, CacheKind::Save)
    }
    pub fn saves(&self) -> bool {
        !matches!(self, CacheKind::Restore)
    }
}

/// How the key is written.
#[derive(Clone, Debug)]
enum KeySource {
    /// `with: key:` and `restore-keys:`.
    Inputs {
        key: Param,
        restore_keys: Option<Param>,
        path: Option<Param>,
    },
    /// A setup action's own key: literal parts, an optional version input, and lock files.
    Setup {
        prefix: String,
        version: Option<Param>,
        dependency_path: Option<Param>,
        default_patterns: &'static str,
        path: &'static str,
    },
}

/// One cache step of one job (one matrix leg).
#[derive(Clone, Debug)]
pub struct CacheStepDef {
    pub workflow: String,
    pub job: String,
    /// The step's name, else its id, else its `uses:`.
    pub step: String,
    /// Position among the job's steps.
    pub index: usize,
    pub uses: String,
    pub kind: CacheKind,
    key: KeySource,
    env: Vec<Pairs<Template>>,
    matrix: Option<Object>,
}

/// A key evaluated for one commit.
#[derive(Clone, Debug, Default)]
pub struct EvaluatedKey {
    pub key: String,
    pub restore_keys: Vec<String>,
    pub paths: Vec<String>,
    /// Every file a `hashFiles()` call in the key hashed, with its blob id, in order.
    pub hashed: Vec<(String, String)>,
}

/// Facts about the run that the `github` context holds.
#[derive(Clone, Debug)]
pub struct RunFacts {
    pub repository: String,
    pub git_ref: String,
    pub sha: String,
    pub event_name: String,
    pub run_number: u64,
    pub base_ref: String,
}

/// Every cache step of a workflow, matrix legs expanded where the matrix is written out.
pub fn discover(file: &str, workflow: &Workflow) -> Vec<CacheStepDef> {
    let mut found = Vec::new();
    for job in &workflow.jobs {
        let JobKind::Steps(steps) = &job.kind else {
            continue;
        };
        let legs = matrix_legs(job.strategy.as_ref().and_then(|s| s.matrix.as_ref()));
        for leg in &legs {
            let job_label = match leg {
                Some((_, shown)) if !shown.is_empty() => {
                    format!("{} ({})", job.id.value, shown.join(", "))
                }
                _ => job.id.value.clone(),
            };
            for (index, step) in steps.iter().enumerate() {
                if let Some(def) = cache_step(file, &job_label, index, step) {
                    found.push(CacheStepDef {
                        env: vec![workflow.env.clone(), job.env.clone(), step.env.clone()],
                        matrix: leg.as_ref().map(|(m, _)| m.clone()),
                        ..def
                    });
                }
            }
        }
    }
    found
}

/// Matrix legs: (context, display values) each; one leg without a matrix when there is none
/// or it is computed by an expression (its keys then see an empty `matrix`).
fn matrix_legs(matrix: Option<&Matrix>) -> Vec<Option<(Object, Vec<String>)>> {
    let Some(Matrix::Mapping { value, .. }) = matrix else {
        return vec![None];
    };
    let ctx = KeyContext::empty();
    let Ok(Value::Object(evaluated)) = evaluate_nested(value, &ctx) else {
        return vec![None];
    };
    match kiln_workflow::matrix::expand(&evaluated) {
        Ok(legs) if !legs.is_empty() => legs
            .into_iter()
            .map(|l| Some((l.context, l.display_segments)))
            .collect(),
        _ => vec![None],
    }
}

fn with_param<'a>(with: &'a Pairs<Param>, name: &str) -> Option<&'a Param> {
    with.iter()
        .find(|(k, _)| k.value.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// `owner/repo[/path]@ref` split into the lowercased action path and the major version, if any.
fn action_of(uses: &str) -> Option<(String, Option<u32>)> {
    let (path, version) = uses.split_once('@')?;
    let major = version
        .trim_start_matches(['v', 'V'])
        .split('.')
        .next()
        .and_then(|m| m.parse().ok());
    Some((path.to_ascii_lowercase(), major))
}

fn cache_step(file: &str, job: &str, index: usize, step: &Step) -> Option<CacheStepDef> {
    let StepAction::Uses { uses, with } = &step.action else {
        return None;
    };
    let (path, major) = action_of(&uses.value)?;
    let kind = match path.as_str() {
        "actions/cache" => CacheKind::Cache,
        "actions/cache/restore" => CacheKind::Restore,
        "actions/cache/save" => CacheKind::Save,
        p if p.starts_with("actions/setup-") => CacheKind::Setup,
        _ => return None,
    };
    let key = if kind == CacheKind::Setup {
        setup_key(&path, major, with)?
    } else {
        KeySource::Inputs {
            key: with_param(with, "key")?.clone(),
            restore_keys: with_param(with, "restore-keys").cloned(),
            path: with_param(with, "path").cloned(),
        }
    };
    let step_label = step
        .name
        .as_ref()
        .map(|n| n.raw.clone())
        .or_else(|| step.id.as_ref().map(|i| i.value.clone()))
        .unwrap_or_else(|| uses.value.clone());
    Some(CacheStepDef {
        workflow: file.to_string(),
        job: job.to_string(),
        step: step_label,
        index,
        uses: uses.value.clone(),
        kind,
        key,
        env: Vec::new(),
        matrix: None,
    })
}

/// The keys `actions/setup-*` build when caching is on.
fn setup_key(path: &str, major: Option<u32>, with: &Pairs<Param>) -> Option<KeySource> {
    let literal = |name: &str| {
        with_param(with, name).map(|p| match &p.template {
            Some(t) => t.raw.clone(),
            None => p.value.to_display_string(),
        })
    };
    let cache = literal("cache").unwrap_or_default();
    let tool = path.strip_prefix("actions/setup-")?;
    let (manager, patterns, cache_path): (String, &'static str, &'static str) = match tool {
        "node" => match cache.as_str() {
            "npm" => ("npm".into(), "package-lock.json\nnpm-shrinkwrap.json", "~/.npm"),
            "yarn" => ("yarn".into(), "yarn.lock", "~/.cache/yarn"),
            "pnpm" => ("pnpm".into(), "pnpm-lock.yaml", "~/.local/share/pnpm/store"),
            _ => return None,
        },
        "python" => match cache.as_str() {
            "pip" => ("pip".into(), "**/requirements.txt", "~/.cache/pip"),
            "pipenv" => ("pipenv".into(), "**/Pipfile.lock", "~/.local/share/virtualenvs"),
            "poetry" => ("poetry".into(), "**/poetry.lock", "~/.cache/pypoetry"),
            _ => return None,
        },
        // setup-go caches by default from v4 on.
        "go" => {
            let on = match cache.to_ascii_lowercase().as_str() {
                "" => major.is_some_and(|m| m >= 4),
                "false" => false,
                _ => true,
            };
            if !on {
                return None;
            }
            ("go".into(), "go.sum", "~/go/pkg/mod\n~/.cache/go-build")
        }
        "java" => match cache.as_str() {
            "maven" => ("maven".into(), "**/pom.xml", "~/.m2/repository"),
            "gradle" => (
                "gradle".into(),
                "**/*.gradle*\n**/gradle-wrapper.properties\nbuildSrc/**/Versions.kt\nbuildSrc/**/Dependencies.kt\ngradle/*.versions.toml\n**/versions.properties",
                "~/.gradle/caches\n~/.gradle/wrapper",
            ),
            "sbt" => (
                "sbt".into(),
                "**/*.sbt\n**/project/build.properties\n**/project/**.scala\n**/project/**.sbt",
                "~/.ivy2/cache\n~/.sbt\n~/.cache/coursier",
            ),
            _ => return None,
        },
        _ => return None,
    };
    Some(KeySource::Setup {
        prefix: format!("setup-{tool}-Linux-x64-{manager}"),
        version: with_param(with, &format!("{tool}-version")).cloned(),
        dependency_path: with_param(with, "cache-dependency-path").cloned(),
        default_patterns: patterns,
        path: cache_path,
    })
}

/// The contexts a cache step's key can read while replaying, and `hashFiles()` over the
/// commit's tree. `steps`, `needs`, `inputs`, `vars` and `secrets` are empty: a key built from
/// them evaluates as it would with those values empty.
pub struct KeyContext<'a> {
    contexts: Object,
    tree: Option<&'a CommitTree<'a>>,
    hashed: RefCell<Vec<(String, String)>>,
}

impl<'a> KeyContext<'a> {
    fn empty() -> KeyContext<'static> {
        KeyContext {
            contexts: Object::new(),
            tree: None,
            hashed: RefCell::default(),
        }
    }

    fn hash(&self, args: &[Value]) -> Result<Value, String> {
        let tree = self
            .tree
            .ok_or("hashFiles() is not available while reading the matrix")?;
        let patterns: Vec<String> = args.iter().map(Value::to_display_string).collect();
        let options = HashFilesOptions {
            threads: 1,
            ..HashFilesOptions::default()
        };
        let files = hashfiles::matched_files_in(tree, tree.cwd(), &patterns, &options)
            .map_err(|e| e.to_string())?;
        let mut digests = Vec::with_capacity(files.len());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let mut hashed = self.hashed.borrow_mut();
        for file in files {
            digests.push(
                tree.sha256(&file, &mut [], deadline)
                    .map_err(|e| e.to_string())?,
            );
            let blob = tree.blob_of(&file).unwrap_or_default();
            let shown = file
                .strip_prefix(tree.cwd())
                .map(|p| p.trim_start_matches('/'))
                .unwrap_or(&file)
                .to_string();
            hashed.push((shown, blob));
        }
        Ok(Value::string(hashfiles::combine_digests(&digests)))
    }
}

impl EvalContext for KeyContext<'_> {
    fn named_value(&self, name: &str) -> Value {
        self.contexts.get(name).cloned().unwrap_or(Value::Null)
    }

    fn call(&self, name: &str, args: &[Value]) -> Result<Value, String> {
        match name {
            "success" | "always" => Ok(Value::Bool(true)),
            "failure" | "cancelled" => Ok(Value::Bool(false)),
            "hashfiles" => self.hash(args),
            other => Err(format!("the function '{other}' is not available here")),
        }
    }
}

fn object(pairs: &[(&str, Value)]) -> Value {
    let mut o = Object::new();
    for (k, v) in pairs {
        o.insert(*k, v.clone());
    }
    Value::object(o)
}

/// Lines of a multi-line input, trimmed, empty ones dropped (as `actions/cache` reads them).
fn lines(text: &str) -> Vec<String> {
    text.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

impl CacheStepDef {
    /// A label naming the step uniquely in a report.
    pub fn label(&self) -> String {
        format!("{}: {} / {}", self.workflow, self.job, self.step)
    }

    /// Replaces the primary key's expression (`--compare-key`).
    pub fn with_key(&self, key: Param) -> CacheStepDef {
        let mut def = self.clone();
        match &mut def.key {
            KeySource::Inputs { key: k, .. } => *k = key,
            source @ KeySource::Setup { .. } => {
                *source = KeySource::Inputs {
                    key,
                    restore_keys: None,
                    path: None,
                }
            }
        }
        def
    }

    /// Evaluates the key, restore keys and paths as the step would see them in this commit.
    /// An error (a failing expression or hashFiles()) is the message the run would fail with.
    pub fn evaluate(&self, tree: &CommitTree<'_>, run: &RunFacts) -> Result<EvaluatedKey, String> {
        let ref_name = run
            .git_ref
            .strip_prefix("refs/heads/")
            .or_else(|| run.git_ref.strip_prefix("refs/tags/"))
            .unwrap_or(&run.git_ref)
            .to_string();
        let mut contexts = Object::new();
        contexts.insert(
            "github",
            object(&[
                ("repository", Value::string(run.repository.as_str())),
                ("ref", Value::string(run.git_ref.as_str())),
                ("ref_name", Value::string(ref_name)),
                ("sha", Value::string(run.sha.as_str())),
                ("event_name", Value::string(run.event_name.as_str())),
                ("base_ref", Value::string(run.base_ref.as_str())),
                ("workflow", Value::string(self.workflow.as_str())),
                ("job", Value::string(self.job.as_str())),
                ("run_id", Value::string(run.run_number.to_string())),
                ("run_number", Value::string(run.run_number.to_string())),
                ("run_attempt", Value::string("1")),
                ("workspace", Value::string(tree.cwd())),
            ]),
        );
        contexts.insert(
            "runner",
            object(&[
                ("os", Value::string("Linux")),
                ("arch", Value::string("X64")),
                ("temp", Value::string("/home/runner/work/_temp")),
            ]),
        );
        contexts.insert(
            "matrix",
            self.matrix
                .clone()
                .map(Value::object)
                .unwrap_or(Value::object(Object::new())),
        );
        for name in [
            "inputs", "vars", "secrets", "steps", "needs", "job", "strategy",
        ] {
            contexts.insert(name, Value::object(Object::new()));
        }
        let mut ctx = KeyContext {
            contexts,
            tree: Some(tree),
            hashed: RefCell::default(),
        };
        // Workflow, job, then step env, each level seeing the ones before it.
        let mut env = Object::new();
        for level in &self.env {
            for (name, template) in level {
                let value = evaluate_to_string(template, &ctx).map_err(|e| e.to_string())?;
                env.insert(name.value.as_str(), Value::string(value));
                ctx.contexts.insert("env", Value::object(env.clone()));
            }
        }
        ctx.contexts.insert("env", Value::object(env));
        let text = |p: &Param, ctx: &KeyContext<'_>| -> Result<String, String> {
            evaluate_param(p, ctx)
                .map(|v| v.to_display_string())
                .map_err(|e| e.to_string())
        };
        let (key, restore_keys, paths) = match &self.key {
            KeySource::Inputs {
                key,
                restore_keys,
                path,
            } => (
                text(key, &ctx)?,
                match restore_keys {
                    Some(p) => lines(&text(p, &ctx)?),
                    None => Vec::new(),
                },
                match path {
                    Some(p) => lines(&text(p, &ctx)?),
                    None => Vec::new(),
                },
            ),
            KeySource::Setup {
                prefix,
                version,
                dependency_path,
                default_patterns,
                path,
            } => {
                let version = match version {
                    Some(p) => text(p, &ctx)?,
                    None => String::new(),
                };
                let patterns = match dependency_path {
                    Some(p) => lines(&text(p, &ctx)?),
                    None => lines(default_patterns),
                };
                let hash = ctx
                    .hash(
                        &patterns
                            .iter()
                            .map(|p| Value::string(p.as_str()))
                            .collect::<Vec<_>>(),
                    )?
                    .to_display_string();
                (
                    format!("{prefix}-{version}-{hash}"),
                    Vec::new(),
                    lines(path),
                )
            }
        };
        Ok(EvaluatedKey {
            key,
            restore_keys,
            paths,
            hashed: ctx.hashed.into_inner(),
        })
    }
}
