//! Random ids and tokens, and how tokens are kept: only their sha256 is stored, and a
//! presented token is compared with it in constant time, so neither the database file nor
//! the comparison's timing gives a token away.

use super::error::{Result, StoreError};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `n` random bytes from the operating system, as lowercase hex.
pub(crate) fn random_hex(n: usize) -> Result<String> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(hex(&bytes))
}

/// A new secret: 32 random bytes, hex.
pub fn new_token() -> Result<String> {
    random_hex(32)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

pub(crate) fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `token` hashes to `stored`, without an early exit on the first differing byte.
pub(crate) fn token_matches(token: &str, stored: &[u8]) -> bool {
    let hash = hash_token(token);
    stored.len() == hash.len() && bool::from(hash.as_slice().ct_eq(stored))
}

/// A runner token names its runner (`<runner id>.<secret>`), so the runner's row is found by
/// id and its hash compared in constant time, instead of looking the secret's hash up.
pub(crate) fn runner_token(runner_id: &str) -> Result<String> {
    Ok(format!("{runner_id}.{}", new_token()?))
}

pub(crate) fn runner_id_of_token(token: &str) -> Option<&str> {
    token
        .split_once('.')
        .map(|(id, _)| id)
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_only_its_own_hash() {
        let token = new_token().unwrap();
        assert_eq!(token.len(), 64);
        let stored = hash_token(&token);
        assert!(token_matches(&token, &stored));
        assert!(!token_matches(&format!("{token}x"), &stored));
        assert!(!token_matches(&token, &stored[..31]));
        assert_ne!(new_token().unwrap(), token);
    }

    #[test]
    fn runner_tokens_carry_the_runner_id() {
        let token = runner_token("r1234").unwrap();
        assert_eq!(runner_id_of_token(&token), Some("r1234"));
        assert_eq!(runner_id_of_token("no-dot"), None);
        assert_eq!(runner_id_of_token(".secret"), None);
    }
}
