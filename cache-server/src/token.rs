//! Job tokens (HS256 JWTs in the shape GitHub's runtime tokens have, so go-actions-cache and
//! BuildKit can read their scopes) and signed capability URLs for downloads and blob uploads.

use crate::error::{CacheError, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const KEY_FILE: &str = "token.key";

/// Creates `dir` and its missing parents with mode 0700 (less the umask): the cache's data are
/// nobody else's to read.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| CacheError::io("create", dir, e))
}

/// Refuses a key other users may read or write (they may have minted tokens with it already),
/// and closes a data directory they could enter (it is the cache's own: nothing in it is
/// anyone else's to read).
fn check_private(data_dir: &Path, key: &Path) -> Result<()> {
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o7777)
            .map_err(|e| CacheError::io("inspect", p, e))
    };
    let key_mode = mode(key)?;
    if key_mode & 0o077 != 0 {
        return Err(CacheError::Exposed {
            detail: format!("{} is mode {key_mode:03o}", key.display()),
            fix: format!("chmod 600 {}", shell_quote(key)),
        });
    }
    let dir_mode = mode(data_dir)?;
    if dir_mode & 0o077 != 0 {
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(dir_mode & 0o700))
            .map_err(|e| CacheError::Exposed {
                detail: format!(
                    "{} is mode {dir_mode:03o} and cannot be closed to others ({e})",
                    data_dir.display()
                ),
                fix: format!("chmod 700 {}", shell_quote(data_dir)),
            })?;
    }
    Ok(())
}

fn shell_quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@%".contains(&b))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Permission bits in a token's `ac` claim (GitHub's encoding).
pub const PERMISSION_READ: u8 = 1;
pub const PERMISSION_WRITE: u8 = 2;

/// The secret that signs tokens and URLs. Kept in `<data>/token.key` so `kiln cache token` and
/// the server agree without configuration.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 16 {
            return Err(CacheError::BadToken(
                "signing secret must be at least 16 bytes".into(),
            ));
        }
        Ok(Secret(bytes.to_vec()))
    }

    /// Reads `<data_dir>/token.key`, creating it (and the directory, mode 0700) with 32 random
    /// bytes on first use. See [`Secret::load`] for the permissions it insists on.
    pub fn load_or_create(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(KEY_FILE);
        if !path.exists() {
            create_private_dir(data_dir)?;
            let mut raw = [0u8; 32];
            let urandom = Path::new("/dev/urandom");
            let mut f =
                std::fs::File::open(urandom).map_err(|e| CacheError::io("open", urandom, e))?;
            std::io::Read::read_exact(&mut f, &mut raw)
                .map_err(|e| CacheError::io("read", urandom, e))?;
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            // A name of this process's own: two servers starting at once each write theirs and
            // the first rename wins; the key is re-read below either way.
            let tmp = data_dir.join(format!("{KEY_FILE}.{}.tmp", std::process::id()));
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .and_then(|mut f| std::io::Write::write_all(&mut f, hex.as_bytes()));
            written.map_err(|e| CacheError::io("write", &tmp, e))?;
            // Never replace a key another process made meanwhile: tokens it minted must stay valid.
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(CacheError::io("create", &path, e));
                }
            }
            let _ = std::fs::remove_file(&tmp);
        }
        Secret::load(data_dir)
    }

    /// Reads `<data_dir>/token.key` of an existing cache. Whoever can read the key can mint a
    /// token for any repository, so a key or a data directory other users can read or write is
    /// refused, with the commands that fix it; so is a directory that holds no key (a mistyped
    /// `--data` would otherwise hand out tokens no server accepts).
    pub fn load(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(KEY_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CacheError::NoCache(data_dir.to_path_buf()));
            }
            Err(e) => return Err(CacheError::io("read", path, e)),
        };
        check_private(data_dir, &path)?;
        Secret::from_bytes(bytes.trim_ascii())
    }

    fn mac(&self, data: &[u8]) -> Vec<u8> {
        // new_from_slice only fails for fixed-size MACs; HMAC takes any key length.
        let mut mac = match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => return Vec::new(),
        };
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        match HmacSha256::new_from_slice(&self.0) {
            Ok(mut mac) => {
                mac.update(data);
                mac.verify_slice(tag).is_ok()
            }
            Err(_) => false,
        }
    }

    /// Signs a capability (`purpose:id:expiry`) for a URL query.
    pub fn sign_url(&self, purpose: &str, id: u64, expires: u64) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(format!("{purpose}:{id}:{expires}").as_bytes()))
    }

    pub fn check_url(&self, purpose: &str, id: u64, expires: u64, sig: &str) -> Result<()> {
        if unix_now() > expires {
            return Err(CacheError::Forbidden(
                "the signed URL has expired; look the entry up again".into(),
            ));
        }
        let tag = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| CacheError::Forbidden("the URL signature is not base64url".into()))?;
        if !self.verify(format!("{purpose}:{id}:{expires}").as_bytes(), &tag) {
            return Err(CacheError::Forbidden(
                "the URL signature does not match".into(),
            ));
        }
        Ok(())
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Serialize, Deserialize)]
struct ScopeGrant {
    #[serde(rename = "Scope")]
    scope: String,
    #[serde(rename = "Permission")]
    permission: u8,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    repository: String,
    /// JSON text (GitHub puts a string here, not an array).
    ac: String,
    exp: u64,
    nbf: u64,
    #[serde(default)]
    iat: u64,
    #[serde(default)]
    scp: String,
}

/// What a job may do: its repository, the scopes it reads (in lookup order) and the one it writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub repo: String,
    pub read_scopes: Vec<String>,
    pub write_scope: Option<String>,
}

impl Access {
    /// Adds the repository's default branch as the last readable scope (GitHub lets every ref
    /// read the default branch).
    pub fn with_default_branch(mut self, default_ref: &str) -> Self {
        if !self.read_scopes.iter().any(|s| s == default_ref) {
            self.read_scopes.push(default_ref.to_string());
        }
        self
    }

    /// The write scope, or a refusal that says why.
    pub fn require_write(&self) -> Result<&str> {
        self.write_scope.as_deref().ok_or_else(|| {
            CacheError::Forbidden("cache write denied: token has no writable scopes".into())
        })
    }
}

/// What `kiln cache token` asks for.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub repo: String,
    pub git_ref: String,
    pub base_ref: Option<String>,
    pub read_only: bool,
    pub ttl: Duration,
}

fn normalise_ref(r: &str) -> String {
    if r.starts_with("refs/") {
        r.to_string()
    } else {
        format!("refs/heads/{r}")
    }
}

/// Mints a token: write (unless read-only) and read on the job's own ref, read on the base ref.
pub fn mint(secret: &Secret, req: &TokenRequest) -> Result<String> {
    if req.repo.is_empty() || req.git_ref.is_empty() {
        return Err(CacheError::BadRequest(
            "a token needs a repository and a ref".into(),
        ));
    }
    let own = normalise_ref(&req.git_ref);
    let mut grants = vec![ScopeGrant {
        scope: own.clone(),
        permission: if req.read_only {
            PERMISSION_READ
        } else {
            PERMISSION_READ | PERMISSION_WRITE
        },
    }];
    if let Some(base) = &req.base_ref {
        let base = normalise_ref(base);
        if base != own {
            grants.push(ScopeGrant {
                scope: base,
                permission: PERMISSION_READ,
            });
        }
    }
    let now = unix_now();
    let claims = Claims {
        repository: req.repo.clone(),
        ac: serde_json::to_string(&grants).map_err(|e| CacheError::BadRequest(e.to_string()))?,
        exp: now.saturating_add(req.ttl.as_secs()),
        nbf: now.saturating_sub(60),
        iat: now,
        scp: "Actions.Results:kiln:kiln".into(),
    };
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims).map_err(|e| CacheError::BadRequest(e.to_string()))?);
    let signing_input = format!("{header}.{body}");
    let sig = URL_SAFE_NO_PAD.encode(secret.mac(signing_input.as_bytes()));
    Ok(format!("{signing_input}.{sig}"))
}

/// Longest token accepted; real ones are a few hundred bytes.
const MAX_TOKEN_LEN: usize = 8192;

/// Verifies a token's signature and time window and returns what it grants.
pub fn verify(secret: &Secret, token: &str) -> Result<Access> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(CacheError::BadToken("token is too long".into()));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(body), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(CacheError::BadToken(
            "not a JWT (expected three dot-separated parts)".into(),
        ));
    };
    let tag = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| CacheError::BadToken("signature is not base64url".into()))?;
    if !secret.verify(format!("{header}.{body}").as_bytes(), &tag) {
        return Err(CacheError::BadToken(
            "signature does not match this server's key".into(),
        ));
    }
    let header: serde_json::Value = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or_else(|| CacheError::BadToken("header is not base64url JSON".into()))?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(CacheError::BadToken(
            "only HS256 tokens are accepted".into(),
        ));
    }
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(body)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            CacheError::BadToken(
                "claims are not base64url JSON with repository, ac, exp, nbf".into(),
            )
        })?;
    let now = unix_now();
    if now >= claims.exp {
        return Err(CacheError::BadToken("token has expired".into()));
    }
    if now < claims.nbf {
        return Err(CacheError::BadToken("token is not valid yet".into()));
    }
    let grants: Vec<ScopeGrant> = serde_json::from_str(&claims.ac)
        .map_err(|_| CacheError::BadToken("the ac claim is not a JSON list of scopes".into()))?;
    let mut access = Access {
        repo: claims.repository,
        read_scopes: Vec::new(),
        write_scope: None,
    };
    for g in grants {
        if g.permission & PERMISSION_WRITE != 0 && access.write_scope.is_none() {
            access.write_scope = Some(g.scope.clone());
        }
        if g.permission & (PERMISSION_READ | PERMISSION_WRITE) != 0
            && !access.read_scopes.contains(&g.scope)
        {
            access.read_scopes.push(g.scope);
        }
    }
    Ok(access)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap()
    }

    #[test]
    fn pull_request_token_reads_base_writes_own() {
        let t = mint(
            &secret(),
            &TokenRequest {
                repo: "o/r".into(),
                git_ref: "refs/pull/5/merge".into(),
                base_ref: Some("dev".into()),
                read_only: false,
                ttl: Duration::from_secs(60),
            },
        )
        .unwrap();
        let a = verify(&secret(), &t)
            .unwrap()
            .with_default_branch("refs/heads/main");
        assert_eq!(a.repo, "o/r");
        assert_eq!(a.write_scope.as_deref(), Some("refs/pull/5/merge"));
        assert_eq!(
            a.read_scopes,
            vec!["refs/pull/5/merge", "refs/heads/dev", "refs/heads/main"]
        );
    }

    #[test]
    fn read_only_and_tampered_and_expired_tokens() {
        let req = TokenRequest {
            repo: "o/r".into(),
            git_ref: "main".into(),
            base_ref: None,
            read_only: true,
            ttl: Duration::from_secs(60),
        };
        let t = mint(&secret(), &req).unwrap();
        let a = verify(&secret(), &t).unwrap();
        assert!(a.require_write().is_err());
        let other = Secret::from_bytes(b"another secret of enough length").unwrap();
        assert!(verify(&other, &t).is_err());
        let mut forged = t.clone();
        forged.insert(forged.len() / 2, 'x');
        assert!(verify(&secret(), &forged).is_err());
        assert!(verify(&secret(), "a.b").is_err());
        assert!(verify(&secret(), "").is_err());
        let expired = mint(
            &secret(),
            &TokenRequest {
                ttl: Duration::ZERO,
                ..req
            },
        )
        .unwrap();
        assert!(matches!(
            verify(&secret(), &expired),
            Err(CacheError::BadToken(_))
        ));
    }

    #[test]
    fn url_signatures() {
        let s = secret();
        let exp = unix_now() + 60;
        let sig = s.sign_url("dl", 7, exp);
        assert!(s.check_url("dl", 7, exp, &sig).is_ok());
        assert!(s.check_url("dl", 8, exp, &sig).is_err());
        assert!(s.check_url("ul", 7, exp, &sig).is_err());
        assert!(s
            .check_url(
                "dl",
                7,
                unix_now() - 1,
                &s.sign_url("dl", 7, unix_now() - 1)
            )
            .is_err());
    }
}
