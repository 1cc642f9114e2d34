//! The runner's identity on disk: what `kiln runner register` got from the scheduler and
//! `kiln runner start` needs to come back as the same runner. One directory is one runner;
//! the file holds a secret, so it is written with mode 0600 in a directory with mode 0700, and
//! a file others can read is refused.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The file name inside the runner's directory.
pub const CREDENTIALS_FILE: &str = "credentials.json";

/// Shortest interval the runner accepts from a scheduler: a zero or tiny value must not turn
/// the loop into a busy one.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The runner's identity and the scheduler's timings, as registration returned them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The scheduler's URL (`http://host:port`).
    pub url: String,
    pub runner_id: String,
    /// Sent as `Bearer` on every call; the scheduler keeps only its hash.
    pub runner_token: String,
    pub name: String,
    pub labels: Vec<String>,
    pub timings: Timings,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is the runner: it never goes to a log.
        f.debug_struct("Credentials")
            .field("url", &self.url)
            .field("runner_id", &self.runner_id)
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("timings", &self.timings)
            .finish_non_exhaustive()
    }
}

/// The intervals the scheduler dictates (`RegisterResponse`), in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    pub heartbeat_interval_ms: u32,
    pub lease_ttl_ms: u32,
    pub renew_interval_ms: u32,
    pub poll_timeout_ms: u32,
}

impl Timings {
    fn at_least(ms: u32) -> Duration {
        Duration::from_millis(u64::from(ms)).max(MIN_INTERVAL)
    }

    pub fn heartbeat(&self) -> Duration {
        Self::at_least(self.heartbeat_interval_ms)
    }

    pub fn lease_ttl(&self) -> Duration {
        Self::at_least(self.lease_ttl_ms)
    }

    /// How often each job's lease is renewed: the scheduler's interval, and never less often
    /// than three times per lease, whatever the scheduler said.
    pub fn renew(&self) -> Duration {
        Self::at_least(self.renew_interval_ms).min(self.lease_ttl() / 3)
    }

    pub fn poll_timeout(&self) -> Duration {
        Self::at_least(self.poll_timeout_ms)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("no runner is registered in {dir}: run `kiln runner register --url URL --token TOKEN --labels a,b --name NAME` first (or pass the --config DIR it used)")]
    Missing { dir: PathBuf },
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a kiln runner credentials file ({detail}): register the runner again")]
    Invalid { path: PathBuf, detail: String },
    #[error("{path} holds the runner's secret but other users may read it (mode {mode:o}): `chmod 600 {path}`, or register again")]
    Exposed { path: PathBuf, mode: u32 },
    #[error("cannot write the runner's credentials to {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no directory for the runner's credentials: set HOME or XDG_CONFIG_HOME, or pass --config DIR")]
    NoHome,
}

/// `$XDG_CONFIG_HOME/kiln/runner`, else `~/.config/kiln/runner`.
pub fn default_config_dir() -> Result<PathBuf, CredentialsError> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir).join("kiln/runner"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".config/kiln/runner")),
        None => Err(CredentialsError::NoHome),
    }
}

impl Credentials {
    /// Reads `DIR/credentials.json`, refusing a file other users can read.
    pub fn load(dir: &Path) -> Result<Credentials, CredentialsError> {
        let path = dir.join(CREDENTIALS_FILE);
        let unreadable = |source| CredentialsError::Unreadable {
            path: path.clone(),
            source,
        };
        let metadata = match std::fs::metadata(&path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CredentialsError::Missing {
                    dir: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(unreadable(e)),
        };
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CredentialsError::Exposed { path, mode });
        }
        let text = std::fs::read_to_string(&path).map_err(unreadable)?;
        let credentials: Credentials =
            serde_json::from_str(&text).map_err(|e| CredentialsError::Invalid {
                path: path.clone(),
                detail: e.to_string(),
            })?;
        if credentials.runner_token.is_empty() || credentials.url.is_empty() {
            return Err(CredentialsError::Invalid {
                path,
                detail: "the URL or the token is empty".to_owned(),
            });
        }
        Ok(credentials)
    }

    /// Writes `DIR/credentials.json` (mode 0600; DIR mode 0700), replacing an earlier file in
    /// one step so a reader never sees half of it. Returns the file's path.
    pub fn save(&self, dir: &Path) -> Result<PathBuf, CredentialsError> {
        let path = dir.join(CREDENTIALS_FILE);
        let failed = |source| CredentialsError::Write {
            path: path.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed)?;
        // An existing directory keeps its mode through `create`: tighten it.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(failed)?;
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| failed(std::io::Error::other(e.to_string())))?;
        let staging = dir.join(format!(".{CREDENTIALS_FILE}.{}", std::process::id()));
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&staging)?;
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::rename(&staging, &path)
        })();
        if let Err(error) = written {
            let _ = std::fs::remove_file(&staging);
            return Err(failed(error));
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Credentials {
        Credentials {
            url: "http://127.0.0.1:7000".to_owned(),
            runner_id: "r-1".to_owned(),
            runner_token: "secret-token".to_owned(),
            name: "builder".to_owned(),
            labels: vec!["linux".to_owned(), "x64".to_owned()],
            timings: Timings {
                heartbeat_interval_ms: 10_000,
                lease_ttl_ms: 30_000,
                renew_interval_ms: 10_000,
                poll_timeout_ms: 25_000,
            },
        }
    }

    #[test]
    fn saved_credentials_are_private_and_read_back() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("kiln/runner");
        let path = sample().save(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(Credentials::load(&dir).unwrap(), sample());
        assert!(!format!("{:?}", sample()).contains("secret-token"));
    }

    #[test]
    fn missing_exposed_and_damaged_files_are_refused_with_the_fix() {
        let root = tempfile::tempdir().unwrap();
        let missing = Credentials::load(root.path()).unwrap_err().to_string();
        assert!(missing.contains("kiln runner register"), "{missing}");
        let path = sample().save(root.path()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let exposed = Credentials::load(root.path()).unwrap_err().to_string();
        assert!(exposed.contains("chmod 600"), "{exposed}");
        std::fs::write(&path, "{not json").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let invalid = Credentials::load(root.path()).unwrap_err().to_string();
        assert!(invalid.contains("register the runner again"), "{invalid}");
    }

    #[test]
    fn timings_are_bounded_whatever_the_scheduler_says() {
        let timings = Timings {
            heartbeat_interval_ms: 0,
            lease_ttl_ms: 3_000,
            renew_interval_ms: 60_000,
            poll_timeout_ms: 1,
        };
        assert_eq!(timings.heartbeat(), MIN_INTERVAL);
        assert_eq!(timings.renew(), Duration::from_secs(1));
        assert_eq!(timings.poll_timeout(), MIN_INTERVAL);
    }
}
