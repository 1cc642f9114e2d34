//! Self-repository references: a `uses:` value starting with `$/` names a path in the
//! repository of the file that contains it, at that file's commit (GitHub, 2026-07-30). In a
//! workflow of the run that is the run's own repository at the commit being run; inside an
//! action or reusable workflow fetched from `owner/repo@ref`, it is `owner/repo` at `ref`.
//! Like a remote reference, and unlike `./`, it needs no checkout.

/// The prefix of a self-repository reference.
pub const SELF_REPOSITORY_PREFIX: &str = "$/";

/// A repository at a ref: where a file was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryRef {
    /// `owner/repo`.
    pub repository: String,
    pub git_ref: String,
}

impl RepositoryRef {
    /// The repository of a remote `owner/repo[/path]@ref` reference.
    pub fn of_remote(uses: &str) -> Option<RepositoryRef> {
        let (target, git_ref) = uses.rsplit_once('@')?;
        let mut parts = target.splitn(3, '/');
        let (owner, repo) = (parts.next()?, parts.next()?);
        if owner.is_empty() || repo.is_empty() || git_ref.is_empty() || owner.starts_with('$') {
            return None;
        }
        Some(RepositoryRef {
            repository: format!("{owner}/{repo}"),
            git_ref: git_ref.to_string(),
        })
    }

    /// `owner/repo/path@ref`: the remote reference `$/path` stands for in a file of this
    /// repository.
    pub fn reference(&self, path: &str) -> String {
        format!("{}/{path}@{}", self.repository, self.git_ref)
    }
}

/// The path of a `$/path` reference (leading slashes dropped, as GitHub's runner does);
/// `Ok(None)` for any other reference, `Err` with GitHub's kind of message for a malformed
/// one.
pub fn self_repository_path(uses: &str) -> Result<Option<&str>, String> {
    let Some(rest) = uses.strip_prefix(SELF_REPOSITORY_PREFIX) else {
        return Ok(None);
    };
    let path = rest.trim_start_matches('/');
    if path.contains('@') {
        return Err(format!(
            "A version cannot be specified for self-references. Expected format $/{{path}}. Actual '{uses}'"
        ));
    }
    if path.is_empty() {
        return Err(format!(
            "A self-repository reference names a path in the repository. Expected format $/{{path}}. Actual '{uses}'"
        ));
    }
    if path.split(['/', '\\']).any(|segment| segment == "..") {
        return Err(format!(
            "A self-repository reference must stay inside the repository: '{uses}' goes up with '..'"
        ));
    }
    Ok(Some(path))
}

/// True for a `$/` reference, well formed or not.
pub fn is_self_repository(uses: &str) -> bool {
    uses.starts_with(SELF_REPOSITORY_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_references_are_parsed_as_github_parses_them() {
        assert_eq!(self_repository_path("$/a/b"), Ok(Some("a/b")));
        assert_eq!(self_repository_path("$//a"), Ok(Some("a")));
        assert_eq!(self_repository_path("./a"), Ok(None));
        assert_eq!(self_repository_path("o/r@v1"), Ok(None));
        for bad in ["$/", "$//", "$/a@v1", "$/../x", "$/a/../../x"] {
            assert!(self_repository_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_self_reference_in_a_remote_file_is_that_repository_at_its_ref() {
        let origin = RepositoryRef::of_remote("octo/tools/actions/build@v2").expect("remote");
        assert_eq!(origin.repository, "octo/tools");
        assert_eq!(
            origin.reference("actions/lint"),
            "octo/tools/actions/lint@v2"
        );
        assert!(RepositoryRef::of_remote("./local").is_none());
        assert!(RepositoryRef::of_remote("$/x").is_none());
    }
}
