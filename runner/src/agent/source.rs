//! A job's repository, made on the runner from the run's source: the snapshot `kiln submit`
//! uploaded (a git bundle, downloaded once per digest and checked), or a git remote (fetched
//! into one cache per URL). Either way the job gets its own clone at the run's commit, which
//! is the executor's `source_repo`: the built-in checkout copies it and local actions resolve
//! in it.
//!
//! Everything lives under the runner's work directory: file names come from digests and
//! hashes, never from what the scheduler sent, so nothing is written outside it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::actions::git;

/// Where a job's workspace comes from, as the scheduler described it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// No repository: a job that checks out fails with the checkout's own message.
    None,
    Snapshot {
        sha: String,
        /// blake3 of the bundle, hex.
        digest: String,
        size: u64,
        url: String,
        token: String,
    },
    Git {
        sha: String,
        url: String,
    },
}

/// A URL as the job's log may show it: without the password of `user:password@host`.
fn redacted(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end + 3], &rest[at..])
        }
        None => url.to_owned(),
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::None => f.write_str("None"),
            Source::Snapshot { sha, digest, .. } => {
                write!(f, "Snapshot({digest} at {sha})")
            }
            Source::Git { sha, url } => write!(f, "Git({} at {sha})", redacted(url)),
        }
    }
}

/// The snapshot and git caches of one runner.
pub(crate) struct Sources {
    snapshots: PathBuf,
    remotes: PathBuf,
    /// Largest bundle the runner downloads.
    max_snapshot_bytes: u64,
    /// Total size of the kept bundles above which the least recently used are removed.
    snapshot_cache_bytes: u64,
    /// One lock per bundle digest or remote URL: concurrent jobs of one run fetch once.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// How long a download that failed for a passing reason is tried again (within a lease
    /// the job's renewals keep).
    retry_for: std::time::Duration,
}

impl Sources {
    pub(crate) fn new(work: &Path, max_snapshot_bytes: u64, snapshot_cache_bytes: u64) -> Sources {
        Sources {
            snapshots: work.join("snapshots"),
            remotes: work.join("git"),
            max_snapshot_bytes,
            snapshot_cache_bytes,
            locks: Mutex::default(),
            retry_for: std::time::Duration::from_secs(60),
        }
    }

    fn lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key.to_owned()).or_default().clone()
    }

    /// Makes `dest` (which must not exist) a clone of the source at its commit. `note`
    /// receives lines for the job's log.
    pub(crate) async fn checkout(
        &self,
        source: &Source,
        dest: &Path,
        note: &(dyn Fn(String) + Send + Sync),
    ) -> Result<(), String> {
        match source {
            Source::None => {
                std::fs::create_dir_all(dest)
                    .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
                note("The run has no source repository: the job starts without one".to_owned());
                Ok(())
            }
            Source::Snapshot {
                sha,
                digest,
                size,
                url,
                token,
            } => {
                check_sha(sha)?;
                let bundle = self.snapshot(digest, *size, url, token, note).await?;
                let bundle_text = bundle.to_string_lossy().into_owned();
                clone_at(&bundle_text, dest, sha).await.map_err(|e| {
                    format!("the snapshot {digest} does not hold commit {sha}: {e}")
                })?;
                note(format!("Checked out snapshot {} at {sha}", short(digest)));
                Ok(())
            }
            Source::Git { sha, url } => {
                check_sha(sha)?;
                let shown = redacted(url);
                let cache = self
                    .remote(url, sha)
                    .await
                    .map_err(|e| e.replace(url.as_str(), &shown))?;
                clone_at(&cache.to_string_lossy(), dest, sha).await?;
                note(format!("Checked out {shown} at {sha}"));
                Ok(())
            }
        }
    }

    /// The bundle with `digest`, downloaded unless a checked copy is cached.
    async fn snapshot(
        &self,
        digest: &str,
        size: u64,
        url: &str,
        token: &str,
        note: &(dyn Fn(String) + Send + Sync),
    ) -> Result<PathBuf, String> {
        let valid = digest.len() == 64
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(format!(
                "the snapshot digest `{digest}` is not a blake3 digest (64 lowercase hex digits)"
            ));
        }
        if size > self.max_snapshot_bytes {
            return Err(format!(
                "the run's snapshot is {size} bytes, more than this runner accepts ({} bytes, --max-snapshot-size): make the repository smaller (untracked build output is included) or raise the limit",
                self.max_snapshot_bytes
            ));
        }
        let path = self.snapshots.join(format!("{digest}.bundle"));
        let lock = self.lock(digest);
        let _held = lock.lock().await;
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == size) {
            // Used again: the least recently used bundles are the ones evicted.
            let _ = std::fs::File::open(&path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            return Ok(path);
        }
        note(format!(
            "Downloading snapshot {} ({size} bytes)",
            short(digest)
        ));
        std::fs::create_dir_all(&self.snapshots)
            .map_err(|e| format!("cannot create {}: {e}", self.snapshots.display()))?;
        let (digest_owned, url, token, target) = (
            digest.to_owned(),
            url.to_owned(),
            token.to_owned(),
            path.clone(),
        );
        // A scheduler restarting or briefly away answers again soon: the job's lease is kept
        // by its renewals meanwhile, so the download is tried again for a while first.
        let started = std::time::Instant::now();
        let mut delay = SNAPSHOT_RETRY_FIRST;
        loop {
            let (digest, url, token, target) = (
                digest_owned.clone(),
                url.clone(),
                token.clone(),
                target.clone(),
            );
            let fetched =
                tokio::task::spawn_blocking(move || download(&url, &token, &digest, size, &target))
                    .await
                    .map_err(|e| format!("the snapshot download stopped: {e}"))?;
            match fetched {
                Ok(()) => break,
                Err(Fetch::Final(error)) => return Err(error),
                Err(Fetch::Transient(error)) if started.elapsed() + delay < self.retry_for => {
                    note(format!(
                        "{error}; trying again in {:.1} s",
                        delay.as_secs_f64()
                    ));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(SNAPSHOT_RETRY_MAX);
                }
                Err(Fetch::Transient(error)) => {
                    return Err(format!(
                        "{error} (gave up after {} s)",
                        started.elapsed().as_secs()
                    ))
                }
            }
        }
        self.evict(digest);
        Ok(path)
    }

    /// Removes the least recently used bundles while the cache is over its budget; `keep`
    /// and bundles another job is fetching stay.
    fn evict(&self, keep: &str) {
        let Ok(entries) = std::fs::read_dir(&self.snapshots) else {
            return;
        };
        let mut bundles: Vec<(std::time::SystemTime, u64, PathBuf, String)> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let digest = name.strip_suffix(".bundle")?.to_owned();
                let metadata = entry.metadata().ok()?;
                Some((
                    metadata.modified().ok()?,
                    metadata.len(),
                    entry.path(),
                    digest,
                ))
            })
            .collect();
        let mut total: u64 = bundles.iter().map(|b| b.1).sum();
        bundles.sort();
        let locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        for (_, size, path, digest) in bundles {
            if total <= self.snapshot_cache_bytes {
                break;
            }
            let busy = locks.get(&digest).is_some_and(|l| Arc::strong_count(l) > 1);
            if digest == keep || busy {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= size;
            }
        }
    }

    /// The cache of `url` (a bare repository), holding `sha` under `refs/kiln/<sha>`.
    async fn remote(&self, url: &str, sha: &str) -> Result<PathBuf, String> {
        if url.starts_with('-') || url.trim().is_empty() {
            return Err(format!("`{url}` is not a git URL"));
        }
        let name = blake3::hash(url.as_bytes()).to_hex()[..32].to_owned();
        let cache = self.remotes.join(format!("{name}.git"));
        let lock = self.lock(url);
        let _held = lock.lock().await;
        if !cache.join("HEAD").is_file() {
            std::fs::create_dir_all(&cache)
                .map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
            git(&cache, &["init", "-q", "--bare"]).await?;
        }
        let fetched = git(
            &cache,
            &[
                "fetch",
                "-q",
                "--prune",
                "--no-tags",
                "--",
                url,
                "+refs/heads/*:refs/heads/*",
                "+refs/tags/*:refs/tags/*",
            ],
        )
        .await;
        let wanted = format!("{sha}^{{commit}}");
        let present = git(&cache, &["cat-file", "-e", &wanted]).await.is_ok();
        if !present {
            // Not on a branch or tag (a pull request's merge commit): ask for it by name,
            // which servers like GitHub allow.
            git(&cache, &["fetch", "-q", "--no-tags", "--", url, sha])
                .await
                .map_err(|e| match &fetched {
                    Err(first) => format!("cannot fetch {url}: {first}"),
                    Ok(_) => format!("commit {sha} is not in {url}: {e}"),
                })?;
        }
        // A ref keeps the commit through the cache's garbage collection and makes it part of
        // every clone of the cache.
        git(&cache, &["update-ref", &format!("refs/kiln/{sha}"), sha]).await?;
        Ok(cache)
    }
}

/// `git clone` of `origin` into `dest`, detached at `sha`.
async fn clone_at(origin: &str, dest: &Path, sha: &str) -> Result<(), String> {
    let parent = dest
        .parent()
        .ok_or_else(|| format!("{} has no parent folder", dest.display()))?;
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let dest_text = dest.to_string_lossy();
    git(
        parent,
        &["clone", "-q", "--no-checkout", "--", origin, &dest_text],
    )
    .await?;
    git(dest, &["checkout", "-q", "--detach", sha]).await?;
    Ok(())
}

/// A commit id as git prints it: 40 (SHA-1) or 64 (SHA-256) hex digits.
fn check_sha(sha: &str) -> Result<(), String> {
    let hex = sha.bytes().all(|b| b.is_ascii_hexdigit());
    if hex && (sha.len() == 40 || sha.len() == 64) {
        Ok(())
    } else {
        Err(format!("the run's commit `{sha}` is not a full commit id"))
    }
}

fn short(digest: &str) -> &str {
    &digest[..12.min(digest.len())]
}

/// The first wait before a snapshot download is tried again, and the longest.
const SNAPSHOT_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(250);
const SNAPSHOT_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a download failed: worth asking again (no connection, the scheduler busy or failing
/// for now), or not (refused, gone, damaged).
enum Fetch {
    Transient(String),
    Final(String),
}

/// Downloads the bundle to `target`, which it gets once its size and digest are checked.
fn download(url: &str, token: &str, digest: &str, size: u64, target: &Path) -> Result<(), Fetch> {
    let response = crate::transfer::http_agent()
        .get(url)
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .map_err(|e| Fetch::Transient(format!("cannot download the snapshot from {url}: {e}")))?;
    let status = response.status().as_u16();
    if matches!(status, 408 | 429 | 500..=599) {
        return Err(Fetch::Transient(format!(
            "downloading the snapshot from {url} failed: HTTP {status}"
        )));
    }
    if status != 200 {
        let hint = match status {
            401 | 403 => ": the scheduler refused the job's token",
            404 => ": the scheduler no longer has it",
            _ => "",
        };
        return Err(Fetch::Final(format!(
            "downloading the snapshot from {url} failed: HTTP {status}{hint}"
        )));
    }
    crate::transfer::receive_verified(response.into_body().into_reader(), target, size, digest)
        .map_err(|e| Fetch::Final(format!("the snapshot from {url}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;

    fn run(dir: &Path, args: &[&str]) -> String {
        let output = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .expect("git");
        assert!(output.status.success(), "git {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// A repository with one commit holding `file`; returns its sha.
    fn repo(dir: &Path, file: &str) -> String {
        std::fs::create_dir_all(dir).unwrap();
        run(dir, &["init", "-q"]);
        std::fs::write(dir.join(file), file).unwrap();
        run(dir, &["add", "-A"]);
        run(dir, &["commit", "-qm", file]);
        run(dir, &["rev-parse", "HEAD"])
    }

    /// Serves `body` at /snap for the token `good`, counting requests.
    async fn serve(body: Vec<u8>) -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().route(
            "/snap",
            get(move |headers: HeaderMap| {
                let body = body.clone();
                counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                    if auth != Some("Bearer good") {
                        return StatusCode::UNAUTHORIZED.into_response();
                    }
                    body.into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{address}/snap"), hits)
    }

    fn snapshot(sha: &str, bytes: &[u8], url: &str, token: &str) -> Source {
        with_digest(sha, &blake3::hash(bytes).to_hex(), bytes, url, token)
    }

    fn with_digest(sha: &str, digest: &str, bytes: &[u8], url: &str, token: &str) -> Source {
        Source::Snapshot {
            sha: sha.to_owned(),
            digest: digest.to_owned(),
            size: bytes.len() as u64,
            url: url.to_owned(),
            token: token.to_owned(),
        }
    }

    fn quiet(_: String) {}

    /// A repository with one commit under `root/origin`, its sha and a bundle of it.
    fn bundled_repo(root: &Path) -> (String, Vec<u8>) {
        let origin = root.join("origin");
        let sha = repo(&origin, "a.txt");
        let bundle = root.join("b.bundle");
        run(
            &origin,
            &["bundle", "create", "-q", bundle.to_str().unwrap(), "HEAD"],
        );
        (sha, std::fs::read(&bundle).unwrap())
    }

    #[tokio::test]
    async fn a_snapshot_is_downloaded_once_checked_and_cloned_at_its_commit() {
        let root = tempfile::tempdir().unwrap();
        let (sha, bytes) = bundled_repo(root.path());
        let (url, hits) = serve(bytes.clone()).await;
        let sources = Sources::new(&root.path().join("work"), 1 << 30, 1 << 30);
        let source = snapshot(&sha, &bytes, &url, "good");
        for job in ["job1", "job2"] {
            let dest = root.path().join(job).join("source");
            sources.checkout(&source, &dest, &quiet).await.unwrap();
            assert_eq!(run(&dest, &["rev-parse", "HEAD"]), sha);
            assert!(dest.join("a.txt").is_file());
        }
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "the bundle was downloaded twice"
        );

        // Damaged in transit, refused token, too large, unknown commit, odd digest.
        let other = blake3::hash(b"other").to_hex();
        let damaged = with_digest(&sha, &other, &bytes, &url, "good");
        let error = sources
            .checkout(&damaged, &root.path().join("x1"), &quiet)
            .await
            .unwrap_err();
        assert!(error.contains("arrived damaged"), "{error}");
        let fresh = Sources::new(&root.path().join("work2"), 1 << 30, 1 << 30);
        let error = fresh
            .checkout(
                &snapshot(&sha, &bytes, &url, "bad"),
                &root.path().join("x2"),
                &quiet,
            )
            .await
            .unwrap_err();
        assert!(error.contains("HTTP 401"), "{error}");
        let small = Sources::new(&root.path().join("work3"), 10, 1 << 30);
        let error = small
            .checkout(&source, &root.path().join("x3"), &quiet)
            .await
            .unwrap_err();
        assert!(error.contains("--max-snapshot-size"), "{error}");
        let missing = snapshot(&"1".repeat(40), &bytes, &url, "good");
        let error = sources
            .checkout(&missing, &root.path().join("x4"), &quiet)
            .await
            .unwrap_err();
        assert!(error.contains("does not hold commit"), "{error}");
        let escaping = with_digest(&sha, "../../etc", &bytes, &url, "good");
        let error = sources
            .checkout(&escaping, &root.path().join("x5"), &quiet)
            .await
            .unwrap_err();
        assert!(error.contains("not a blake3 digest"), "{error}");
        // Every temporary download was removed; only the good bundle is kept.
        let kept: Vec<_> = std::fs::read_dir(root.path().join("work/snapshots"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(kept, [format!("{}.bundle", blake3::hash(&bytes).to_hex())]);
    }

    #[tokio::test]
    async fn a_scheduler_briefly_away_is_asked_again_and_a_refusal_is_not() {
        let root = tempfile::tempdir().unwrap();
        let (sha, bytes) = bundled_repo(root.path());
        // The first two requests find the scheduler failing (it restarts), the third works.
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let body = bytes.clone();
        let app = axum::Router::new().route(
            "/snap",
            get(move || {
                let body = body.clone();
                let hit = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    if hit < 2 {
                        StatusCode::SERVICE_UNAVAILABLE.into_response()
                    } else {
                        body.into_response()
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/snap", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let notes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let noted = notes.clone();
        let note = move |line: String| noted.lock().unwrap().push(line);
        let sources = Sources::new(&root.path().join("work"), 1 << 30, 1 << 30);
        let dest = root.path().join("job").join("source");
        sources
            .checkout(&snapshot(&sha, &bytes, &url, "any"), &dest, &note)
            .await
            .unwrap();
        assert_eq!(run(&dest, &["rev-parse", "HEAD"]), sha);
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        let retries = notes
            .lock()
            .unwrap()
            .iter()
            .filter(|n| n.contains("HTTP 503") && n.contains("trying again"))
            .count();
        assert_eq!(retries, 2, "{:?}", notes.lock().unwrap());

        // A refusal is final at once; nothing listening is asked again until the window ends.
        let (refusing, refused_hits) = serve(bytes.clone()).await;
        let mut quick = Sources::new(&root.path().join("work2"), 1 << 30, 1 << 30);
        quick.retry_for = Duration::from_millis(600);
        let error = quick
            .checkout(
                &snapshot(&sha, &bytes, &refusing, "bad"),
                &root.path().join("x1"),
                &quiet,
            )
            .await
            .unwrap_err();
        assert!(error.contains("HTTP 401"), "{error}");
        assert_eq!(refused_hits.load(Ordering::SeqCst), 1);
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/snap", listener.local_addr().unwrap())
        };
        let error = quick
            .checkout(
                &snapshot(&sha, &bytes, &closed, "any"),
                &root.path().join("x2"),
                &quiet,
            )
            .await
            .unwrap_err();
        assert!(error.contains("gave up after"), "{error}");
    }

    #[test]
    fn passwords_in_git_urls_are_not_shown() {
        assert_eq!(
            redacted("https://bot:s3cret@git.example/o/r.git"),
            "https://bot:***@git.example/o/r.git"
        );
        assert_eq!(
            redacted("https://git.example/o/r"),
            "https://git.example/o/r"
        );
        assert_eq!(redacted("/srv/git/r"), "/srv/git/r");
    }

    #[tokio::test]
    async fn the_least_recently_used_bundles_go_when_the_cache_is_over_budget() {
        let root = tempfile::tempdir().unwrap();
        let sources = Sources::new(root.path(), 1 << 30, 25);
        std::fs::create_dir_all(root.path().join("snapshots")).unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(100);
        for (index, name) in ["a", "b", "c"].iter().enumerate() {
            let path = root.path().join(format!("snapshots/{name}.bundle"));
            std::fs::write(&path, [0u8; 10]).unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(old + Duration::from_secs(index as u64))
                .unwrap();
        }
        sources.evict("a");
        let mut left: Vec<_> = std::fs::read_dir(root.path().join("snapshots"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        // `a` is the oldest but the one just used; `b` is the next oldest.
        assert_eq!(left, ["a.bundle", "c.bundle"]);
    }

    #[tokio::test]
    async fn a_git_remote_is_cached_and_fetched_again_for_new_commits() {
        let root = tempfile::tempdir().unwrap();
        let origin = root.path().join("origin");
        let first = repo(&origin, "one.txt");
        let sources = Sources::new(&root.path().join("work"), 1 << 30, 1 << 30);
        let url = origin.to_string_lossy().into_owned();
        let dest = root.path().join("job1");
        let source = Source::Git {
            sha: first.clone(),
            url: url.clone(),
        };
        sources.checkout(&source, &dest, &quiet).await.unwrap();
        assert_eq!(run(&dest, &["rev-parse", "HEAD"]), first);

        std::fs::write(origin.join("two.txt"), "two").unwrap();
        run(&origin, &["add", "-A"]);
        run(&origin, &["commit", "-qm", "two"]);
        let second = run(&origin, &["rev-parse", "HEAD"]);
        let dest = root.path().join("job2");
        let source = Source::Git {
            sha: second.clone(),
            url: url.clone(),
        };
        sources.checkout(&source, &dest, &quiet).await.unwrap();
        assert_eq!(run(&dest, &["rev-parse", "HEAD"]), second);
        assert!(dest.join("two.txt").is_file());
        let caches = std::fs::read_dir(root.path().join("work/git"))
            .unwrap()
            .count();
        assert_eq!(caches, 1);

        let bad = Source::Git {
            sha: "not-a-sha".to_owned(),
            url,
        };
        let error = sources
            .checkout(&bad, &root.path().join("job3"), &quiet)
            .await
            .unwrap_err();
        assert!(error.contains("not a full commit id"), "{error}");
        let option = Source::Git {
            sha: second,
            url: "--upload-pack=touch /tmp/x".to_owned(),
        };
        let error = sources
            .checkout(&option, &root.path().join("job4"), &quiet)
            .await
            .unwrap_err();
        assert!(error.contains("is not a git URL"), "{error}");
    }
}
