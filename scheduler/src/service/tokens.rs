//! The job-scoped secrets the service hands to runners: the snapshot token (one job, one
//! digest), the artifacts token (one run) and the cache token (the run's repository and ref,
//! minted with kiln-cache's key so the embedded cache server accepts it). Snapshot and
//! artifact tokens are MACs keyed by a secret kept in the data directory, so checking one
//! needs no lookup and a restart keeps them valid; a forged or altered token fails the MAC.

use std::time::Duration;

use kiln_cache::token::{mint, Secret, TokenRequest};
use subtle::ConstantTimeEq as _;

use super::ServiceError;

pub struct Keys {
    key: [u8; 32],
    cache: Secret,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// `secret`: the service key's text (`DATA/service-key`); `cache`: the embedded cache's
    /// signing key.
    pub fn new(secret: &str, cache: Secret) -> Keys {
        Keys {
            key: blake3::derive_key("kiln scheduler job tokens v1", secret.as_bytes()),
            cache,
        }
    }

    fn mac(&self, purpose: &str, subject: &str) -> String {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(purpose.as_bytes());
        hasher.update(&[0]);
        hasher.update(subject.as_bytes());
        hasher.finalize().to_hex().to_string()
    }

    fn matches(&self, purpose: &str, subject: &str, mac: &str) -> bool {
        self.mac(purpose, subject)
            .as_bytes()
            .ct_eq(mac.as_bytes())
            .into()
    }

    /// Opens the artifacts of run `run_id` only.
    pub fn artifacts_token(&self, run_id: &str) -> String {
        format!("{run_id}.{}", self.mac("artifacts", run_id))
    }

    /// The run an artifacts token opens, or None for a token that is not one of ours.
    pub fn check_artifacts_token(&self, token: &str) -> Option<String> {
        let (run_id, mac) = token.split_once('.')?;
        self.matches("artifacts", run_id, mac)
            .then(|| run_id.to_owned())
    }

    /// Lets job `job_id` download snapshot `digest`.
    pub fn snapshot_token(&self, job_id: &str, digest: &str) -> String {
        format!(
            "{job_id}.{}",
            self.mac("snapshot", &format!("{job_id}/{digest}"))
        )
    }

    /// The job a snapshot token was minted for, when it opens `digest`.
    pub fn check_snapshot_token(&self, token: &str, digest: &str) -> Option<String> {
        let (job_id, mac) = token.rsplit_once('.')?;
        self.matches("snapshot", &format!("{job_id}/{digest}"), mac)
            .then(|| job_id.to_owned())
    }

    /// A cache token for the run's repository and ref (write on the ref, read on the default
    /// branch as GitHub allows), valid for `ttl`.
    pub fn cache_token(
        &self,
        repository: &str,
        git_ref: &str,
        ttl: Duration,
    ) -> Result<String, ServiceError> {
        let request = TokenRequest {
            repo: if repository.is_empty() {
                "local/repository".to_owned()
            } else {
                repository.to_owned()
            },
            git_ref: if git_ref.is_empty() {
                "refs/heads/main".to_owned()
            } else {
                git_ref.to_owned()
            },
            base_ref: None,
            read_only: false,
            ttl,
        };
        mint(&self.cache, &request)
            .map_err(|e| ServiceError::Invalid(format!("cannot mint the job's cache token: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> Keys {
        Keys::new(secret, Secret::from_bytes(&[7u8; 32]).unwrap())
    }

    #[test]
    fn tokens_open_only_what_they_were_minted_for() {
        let k = keys("one");
        let t = k.artifacts_token("12");
        assert_eq!(k.check_artifacts_token(&t).as_deref(), Some("12"));
        assert_eq!(k.check_artifacts_token(&t.replace("12.", "13.")), None);
        assert_eq!(keys("two").check_artifacts_token(&t), None, "another key");
        let s = k.snapshot_token("12.3", "ab");
        assert_eq!(k.check_snapshot_token(&s, "ab").as_deref(), Some("12.3"));
        assert_eq!(k.check_snapshot_token(&s, "ac"), None, "another digest");
        assert_eq!(k.check_snapshot_token("garbage", "ab"), None);
        assert_eq!(k.check_artifacts_token(&s), None, "not an artifacts token");
    }
}
