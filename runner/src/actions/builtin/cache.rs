//! `actions/cache` (restore now, save in the job's post phase), `actions/cache/restore` and
//! `actions/cache/save`, talking to the kiln cache server through its native client (only
//! missing chunks travel). Semantics follow `actions/cache`: `cache-hit` is true only for a
//! case-insensitive exact match of the primary key, a miss leaves `cache-hit` unset (as
//! actions/cache does, see its issue 1466), save and restore problems are warnings, and only
//! `fail-on-cache-miss` or invalid keys fail the step.

use indexmap::IndexMap;
use kiln_cache::client::{
    tree_version, CacheClient, PathContext, RestoreOutcome, RestoreRequest, SaveOutcome,
    SaveRequest,
};
use kiln_workflow::commands::AnnotationLevel;
use kiln_workflow::{CacheLookup, CacheSave as SaveResult, Conclusion, StepCache};

use super::{input, BuiltinResult};
use crate::executor::job::{JobRunner, PostStep};
use crate::executor::step::{PostRun, PostWork, StepCtx};

/// The cache service's own limits on keys, checked up front so the step fails the way
/// `actions/cache` fails on them instead of warning about a refused request.
const MAX_KEY_CHARS: usize = 512;
const MAX_KEYS: usize = 10;

/// `save-always` never did what its name says: actions/cache's post step runs on
/// `success() || github.event.inputs.save-always`, an input of the triggering event, not of the
/// step, and the input is deprecated upstream.
const SAVE_ALWAYS_DEPRECATED: &str = "Input 'save-always' is deprecated and does not work as intended: the post step saves only when the job has succeeded (or when a workflow_dispatch run has an input named save-always). To save whatever happens, use actions/cache/restore and actions/cache/save with `if: always()`.";

const NOT_CONFIGURED: &str =
    "cache server not configured: kiln run was started without a cache endpoint, so nothing is restored or saved";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStep {
    /// `actions/cache`: restore now, save at job end.
    RestoreThenSave,
    /// `actions/cache/restore`.
    Restore,
    /// `actions/cache/save`: save now.
    Save,
}

impl CacheStep {
    /// `path` is the part of `uses:` after `actions/cache/`.
    pub fn find(path: Option<&str>) -> Option<CacheStep> {
        match path.map(|p| p.trim_end_matches('/').to_ascii_lowercase()) {
            None => Some(CacheStep::RestoreThenSave),
            Some(p) if p == "restore" => Some(CacheStep::Restore),
            Some(p) if p == "save" => Some(CacheStep::Save),
            Some(_) => None,
        }
    }
}

/// What the post step of `actions/cache` saves, decided when the restore ran.
pub struct CacheSave {
    primary_key: String,
    paths: Vec<String>,
    /// The key the restore found, if any: an exact hit means there is nothing new to save.
    matched_key: Option<String>,
    /// The index of the step's record, whose cache report the save completes.
    record: usize,
}

/// A save's result and sizes, for the step's cache report.
struct Saved {
    result: SaveResult,
    bytes: u64,
    uploaded: u64,
}

/// A multi-line input as `actions/cache` reads it: one entry per line, `! x` written as `!x`,
/// trimmed, empty lines dropped.
fn input_lines(inputs: &IndexMap<String, String>, name: &str) -> Vec<String> {
    input(inputs, name)
        .unwrap_or("")
        .split('\n')
        .map(|line| {
            let line = line.trim();
            match line.strip_prefix('!') {
                Some(rest) => format!("!{}", rest.trim_start()),
                None => line.to_owned(),
            }
        })
        .filter(|line| !line.is_empty())
        .collect()
}

/// `core.getInput(name) === "true"`, case-insensitively as `getInputAsBool` compares.
fn input_flag(inputs: &IndexMap<String, String>, name: &str) -> bool {
    input(inputs, name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// `actions/cache`'s `isExactKeyMatch`: equal ignoring case.
fn is_exact_match(key: &str, matched: Option<&str>) -> bool {
    matched.is_some_and(|m| m.to_lowercase() == key.to_lowercase())
}

fn validate_keys(key: &str, restore_keys: &[String]) -> Result<(), String> {
    if restore_keys.len() + 1 > MAX_KEYS {
        return Err(format!(
            "Key Validation Error: Keys are limited to a maximum of {MAX_KEYS}."
        ));
    }
    for k in std::iter::once(key).chain(restore_keys.iter().map(String::as_str)) {
        if k.chars().count() > MAX_KEY_CHARS {
            return Err(format!(
                "Key Validation Error: {k} cannot be larger than {MAX_KEY_CHARS} characters."
            ));
        }
        if k.contains(',') {
            return Err(format!("Key Validation Error: {k} cannot contain commas."));
        }
    }
    Ok(())
}

fn required<'a>(inputs: &'a IndexMap<String, String>, name: &str) -> Result<&'a str, String> {
    input(inputs, name).ok_or_else(|| format!("Input required and not supplied: {name}"))
}

impl Saved {
    /// A save that stored nothing, and why.
    fn failed(result: SaveResult) -> Saved {
        Saved {
            result,
            bytes: 0,
            uploaded: 0,
        }
    }
}

impl JobRunner {
    pub(super) async fn cache_step(
        &mut self,
        ctx: &StepCtx,
        step: CacheStep,
        inputs: &IndexMap<String, String>,
    ) -> BuiltinResult {
        if step == CacheStep::Save {
            let key = required(inputs, "key")?.to_owned();
            let paths = input_lines(inputs, "path");
            if paths.is_empty() {
                return Err("Input required and not supplied: path".to_owned());
            }
            let saved = self.save_cache(ctx, &key, &paths).await;
            if saved.result != SaveResult::Saved {
                self.cache_warning(ctx, "Cache save failed.");
            }
            self.report_cache(StepCache {
                key,
                save: Some(saved.result),
                saved_bytes: saved.bytes,
                uploaded_bytes: saved.uploaded,
                ..StepCache::default()
            });
            return Ok(Vec::new());
        }
        let key = required(inputs, "key")?.to_owned();
        let paths = input_lines(inputs, "path");
        if paths.is_empty() {
            return Err("Input required and not supplied: path".to_owned());
        }
        let restore_keys = input_lines(inputs, "restore-keys");
        validate_keys(&key, &restore_keys)?;
        if step == CacheStep::RestoreThenSave && input(inputs, "save-always").is_some() {
            self.cache_warning(ctx, SAVE_ALWAYS_DEPRECATED);
        }
        let fail_on_miss = input_flag(inputs, "fail-on-cache-miss");
        let lookup_only = input_flag(inputs, "lookup-only");
        let mut outputs = vec![("cache-primary-key".to_owned(), key.clone())];
        let Some(client) = self.cache_client() else {
            // As actions/cache does when the cache service is unavailable: `cache-hit` is
            // false and the step succeeds, even with `fail-on-cache-miss`.
            self.cache_warning(ctx, NOT_CONFIGURED);
            outputs.push(("cache-hit".to_owned(), "false".to_owned()));
            self.report_cache(StepCache {
                key,
                lookup: Some(CacheLookup::Unavailable),
                ..StepCache::default()
            });
            return Ok(outputs);
        };
        let request = RestoreRequest {
            key: key.clone(),
            restore_keys: restore_keys.clone(),
            paths: paths.clone(),
            context: self.cache_paths(&paths)?,
            version: Some(tree_version(&paths)),
            lookup_only,
        };
        let restored = tokio::select! {
            joined = tokio::task::spawn_blocking(move || client.restore(&request)) => joined,
            _ = self.cancel.cancelled(), if !ctx.survives_cancel => {
                return Err("The operation was canceled.".to_owned());
            }
        };
        let mut lookup = CacheLookup::Miss;
        let mut restored_bytes = 0;
        let matched_key = match restored {
            Ok(Ok(RestoreOutcome::Hit {
                matched_key, stats, ..
            })) => {
                lookup = if is_exact_match(&key, Some(&matched_key)) {
                    CacheLookup::Exact
                } else {
                    CacheLookup::RestoreKey
                };
                restored_bytes = stats.bytes_written;
                let message = if lookup_only {
                    format!("Cache found and can be restored from key: {matched_key}")
                } else {
                    format!(
                        "Cache restored from key: {matched_key} ({} files written, {} already up to date, {} bytes)",
                        stats.files_written, stats.files_skipped, stats.bytes_written
                    )
                };
                self.emitter.log(&self.log, &ctx.name, &message);
                Some(matched_key)
            }
            Ok(Ok(RestoreOutcome::Miss)) => None,
            Ok(Ok(RestoreOutcome::Corrupt(message))) => {
                self.cache_warning(ctx, &format!("Failed to restore: {message}"));
                None
            }
            Ok(Err(error)) => {
                self.cache_warning(ctx, &format!("Failed to restore: {error}"));
                lookup = CacheLookup::Unavailable;
                None
            }
            Err(join) => {
                self.cache_warning(ctx, &format!("Failed to restore: {join}"));
                lookup = CacheLookup::Unavailable;
                None
            }
        };
        let record = self.report_cache(StepCache {
            key: key.clone(),
            lookup: Some(lookup),
            matched_key: matched_key.clone(),
            restored_bytes,
            ..StepCache::default()
        });
        match &matched_key {
            Some(matched) => {
                let exact = is_exact_match(&key, Some(matched));
                outputs.push(("cache-hit".to_owned(), exact.to_string()));
                outputs.push(("cache-matched-key".to_owned(), matched.clone()));
            }
            None if fail_on_miss => {
                return Err(format!(
                    "Failed to restore cache entry. Exiting as fail-on-cache-miss is set. Input key: {key}"
                ));
            }
            None => {
                let keys: Vec<&str> = std::iter::once(key.as_str())
                    .chain(restore_keys.iter().map(String::as_str))
                    .collect();
                self.emitter.log(
                    &self.log,
                    &ctx.name,
                    &format!("Cache not found for input keys: {}", keys.join(", ")),
                );
            }
        }
        if step == CacheStep::RestoreThenSave {
            self.post_steps.push(PostStep {
                name: format!("Post {}", ctx.name),
                // actions/cache's `post-if`, which is why `save-always` only ever mattered
                // to a workflow_dispatch run with an input of that name.
                condition: "success() || github.event.inputs.save-always".to_owned(),
                state_key: None,
                run: PostRun {
                    ctx: ctx.clone(),
                    work: PostWork::CacheSave(CacheSave {
                        primary_key: key,
                        paths,
                        matched_key,
                        record,
                    }),
                },
            });
        }
        Ok(outputs)
    }

    /// The post phase of `actions/cache`: saves unless the restore was an exact hit. Never
    /// fails the job.
    pub(crate) async fn cache_post(&mut self, ctx: &StepCtx, save: CacheSave) -> Conclusion {
        let saved = if is_exact_match(&save.primary_key, save.matched_key.as_deref()) {
            let message = format!(
                "Cache hit occurred on the primary key {}, not saving cache.",
                save.primary_key
            );
            self.emitter.log(&self.log, &ctx.name, &message);
            Saved::failed(SaveResult::NotNeeded)
        } else {
            self.save_cache(ctx, &save.primary_key, &save.paths).await
        };
        if let Some(report) = self.caches.get_mut(&save.record) {
            report.save = Some(saved.result);
            report.saved_bytes = saved.bytes;
            report.uploaded_bytes = saved.uploaded;
        }
        Conclusion::Success
    }

    /// Records what a cache step did against the record its step will take (the enclosing
    /// step's, inside a composite action); returns that index.
    fn report_cache(&mut self, report: StepCache) -> usize {
        let record = self.records.len();
        self.caches.insert(record, report);
        record
    }

    /// Saves `paths` under `key`; problems become warnings.
    async fn save_cache(&mut self, ctx: &StepCtx, key: &str, paths: &[String]) -> Saved {
        let Some(client) = self.cache_client() else {
            self.cache_warning(ctx, NOT_CONFIGURED);
            return Saved::failed(SaveResult::Failed);
        };
        if let Err(message) = validate_keys(key, &[]) {
            self.cache_warning(ctx, &message);
            return Saved::failed(SaveResult::Failed);
        }
        let context = match self.cache_paths(paths) {
            Ok(context) => context,
            Err(message) => {
                self.cache_warning(ctx, &message);
                return Saved::failed(SaveResult::Failed);
            }
        };
        let request = SaveRequest {
            key: key.to_owned(),
            paths: paths.to_vec(),
            context,
            version: Some(tree_version(paths)),
        };
        let outcome = tokio::task::spawn_blocking(move || client.save(&request)).await;
        match outcome {
            Ok(Ok(SaveOutcome::Saved(stats))) => {
                let message = format!(
                    "Cache saved with key: {key} ({} files, {} bytes; {} of {} chunks uploaded, {} bytes sent)",
                    stats.files, stats.bytes, stats.chunks_uploaded, stats.chunks, stats.bytes_uploaded
                );
                self.emitter.log(&self.log, &ctx.name, &message);
                Saved {
                    result: SaveResult::Saved,
                    bytes: stats.bytes,
                    uploaded: stats.bytes_uploaded,
                }
            }
            Ok(Ok(SaveOutcome::AlreadyExists)) => {
                // actions/cache reports this at info level: another job got there first.
                let message = format!(
                    "Failed to save: Unable to reserve cache with key {key}, another job may be creating this cache."
                );
                self.emitter.log(&self.log, &ctx.name, &message);
                Saved::failed(SaveResult::Exists)
            }
            Ok(Ok(SaveOutcome::NothingToSave)) => {
                self.cache_warning(
                    ctx,
                    "Path Validation Error: Path(s) specified in the action for caching do(es) not exist, hence no cache is being saved.",
                );
                Saved::failed(SaveResult::NothingToSave)
            }
            Ok(Ok(SaveOutcome::Denied(message))) => {
                self.cache_warning(ctx, &format!("Failed to save: {message}"));
                Saved::failed(SaveResult::Failed)
            }
            Ok(Err(error)) => {
                self.cache_warning(ctx, &format!("Failed to save: {error}"));
                Saved::failed(SaveResult::Failed)
            }
            Err(join) => {
                self.cache_warning(ctx, &format!("Failed to save: {join}"));
                Saved::failed(SaveResult::Failed)
            }
        }
    }

    fn cache_client(&self) -> Option<CacheClient> {
        self.req
            .cache
            .as_ref()
            .map(|endpoint| CacheClient::new(&endpoint.url, &endpoint.token))
    }

    /// Where the client resolves `path:` lines. The client runs on the host: in a container
    /// job only the workspace is at the same path on both sides, so `~` and absolute paths
    /// (which name the container's files) are refused there rather than read from the host.
    fn cache_paths(&self, paths: &[String]) -> Result<PathContext, String> {
        let workspace = self.paths.workspace.clone();
        if self.backend.name() == "docker" {
            let outside = paths.iter().find(|line| {
                let body = line.trim_start_matches('!').trim();
                body.starts_with('~') || body.starts_with('/')
            });
            if let Some(line) = outside {
                return Err(format!(
                    "path `{line}`: in a container job kiln caches only paths inside the workspace ({}); use a relative path",
                    workspace.display()
                ));
            }
            return Ok(PathContext {
                workspace,
                home: None,
                confine: true,
            });
        }
        let home = self
            .env
            .get("HOME")
            .cloned()
            .or_else(|| {
                self.base_env
                    .iter()
                    .find(|(k, _)| k == "HOME")
                    .map(|(_, v)| v.clone())
            })
            .filter(|h| !h.is_empty())
            .map(std::path::PathBuf::from);
        Ok(PathContext {
            workspace,
            home,
            // The job runs as this user on this machine: nothing to keep it from.
            confine: false,
        })
    }

    fn cache_warning(&self, ctx: &StepCtx, message: &str) {
        self.emitter
            .annotate(&self.log, &ctx.name, AnnotationLevel::Warning, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(pairs: &[(&str, &str)]) -> IndexMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn multi_line_inputs_are_split_like_actions_cache() {
        let given = inputs(&[("Path", "a\n\n  ! b/c  \n~/.npm\n")]);
        assert_eq!(input_lines(&given, "path"), vec!["a", "!b/c", "~/.npm"]);
        assert!(input_lines(&given, "restore-keys").is_empty());
    }

    #[test]
    fn flags_are_true_only_for_true() {
        let given = inputs(&[("lookup-only", "TRUE"), ("fail-on-cache-miss", "yes")]);
        assert!(input_flag(&given, "lookup-only"));
        assert!(!input_flag(&given, "fail-on-cache-miss"));
    }

    #[test]
    fn exact_match_ignores_case_only() {
        assert!(is_exact_match("Deps-Linux", Some("deps-linux")));
        assert!(!is_exact_match("deps-linux", Some("deps-linux-2")));
        assert!(!is_exact_match("deps", None));
    }

    #[test]
    fn keys_are_validated() {
        assert!(validate_keys("a", &["b".to_owned()]).is_ok());
        assert!(validate_keys("a,b", &[]).is_err());
        assert!(validate_keys(&"k".repeat(513), &[]).is_err());
        let many: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        assert!(validate_keys("a", &many).is_err());
    }

    #[test]
    fn cache_actions_are_recognised() {
        assert_eq!(CacheStep::find(None), Some(CacheStep::RestoreThenSave));
        assert_eq!(CacheStep::find(Some("Restore")), Some(CacheStep::Restore));
        assert_eq!(CacheStep::find(Some("save/")), Some(CacheStep::Save));
        assert_eq!(CacheStep::find(Some("other")), None);
    }

    #[test]
    fn endpoint_variables_suit_v1_and_v2_clients() {
        let endpoint = crate::executor::CacheEndpoint {
            url: "http://10.0.0.1:8473/prefix".to_owned(),
            token: "t".to_owned(),
        };
        let vars: IndexMap<String, String> = endpoint.variables().into_iter().collect();
        assert_eq!(vars["ACTIONS_CACHE_URL"], "http://10.0.0.1:8473/prefix/");
        assert_eq!(vars["ACTIONS_RESULTS_URL"], "http://10.0.0.1:8473/");
        assert_eq!(vars["ACTIONS_RUNTIME_TOKEN"], "t");
        assert_eq!(vars["ACTIONS_CACHE_SERVICE_V2"], "true");
    }
}
