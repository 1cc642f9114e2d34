//! Docker object names derived from job keys and service names.

use sha2::{Digest, Sha256};

/// Longest name we produce; Docker accepts more, but long names make `docker ps` unreadable.
const MAX_NAME_LEN: usize = 63;

/// Turns any string into a Docker-safe name part (`[A-Za-z0-9_.-]`, starting with an
/// alphanumeric). When that changed the input, or it had to be shortened, a short hash of
/// the original is appended, so two different keys never map to the same name.
pub fn sanitize_name(raw: &str) -> String {
    let mut clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let starts_ok = clean.starts_with(|c: char| c.is_ascii_alphanumeric());
    if clean == raw && starts_ok && clean.len() <= MAX_NAME_LEN {
        return clean;
    }
    let digest = Sha256::digest(raw.as_bytes());
    let suffix: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    clean.truncate(MAX_NAME_LEN - suffix.len() - 2);
    let body = clean.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if body.is_empty() {
        format!("x-{suffix}")
    } else {
        format!("{body}-{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names_are_kept_as_they_are() {
        assert_eq!(sanitize_name("run-12_build.3"), "run-12_build.3");
    }

    #[test]
    fn unsafe_characters_are_replaced_and_disambiguated() {
        let a = sanitize_name("ci/build (linux, 1)");
        let b = sanitize_name("ci_build (linux, 1)");
        assert!(a.starts_with("ci-build--linux--1-"), "{a}");
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)));
    }

    #[test]
    fn names_are_bounded_and_never_empty() {
        assert!(sanitize_name(&"k".repeat(500)).len() <= MAX_NAME_LEN);
        let odd = sanitize_name("//");
        assert!(odd.starts_with("x-"), "{odd}");
        assert!(!sanitize_name("").is_empty());
    }
}
