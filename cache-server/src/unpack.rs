//! Safe extraction: archive entries and tree listings may only create things inside the target
//! directory. Absolute paths, `..`, paths through symlinks, symlinks pointing outside, hard links
//! to outside, and device files are refused with a clear error before anything is written there.

use crate::error::{CacheError, Result};
use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Most entries one archive may hold; bounds the bookkeeping below.
const MAX_ENTRIES: usize = 10_000_000;

fn refuse(entry: &str, reason: impl Into<String>) -> CacheError {
    CacheError::UnsafeArchiveEntry {
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

/// Checks a relative entry path and returns it normalised (no `.` components, no trailing
/// slash). The empty path means the target itself.
pub fn safe_relative(entry: &str) -> Result<PathBuf> {
    if entry.contains('\0') {
        return Err(refuse(entry, "the path contains a NUL byte"));
    }
    let path = Path::new(entry);
    let mut out = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err(refuse(entry, "the path contains `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse(entry, "the path is absolute"))
            }
        }
    }
    Ok(out)
}

/// Checks that a symlink at `link` (relative to the target) with `target` stays inside.
pub fn check_symlink_target(entry: &str, link: &Path, target: &Path) -> Result<()> {
    if target.is_absolute() {
        return Err(refuse(
            entry,
            format!(
                "the symlink points to the absolute path {}",
                target.display()
            ),
        ));
    }
    let mut depth: i64 = link.components().count() as i64 - 1;
    for comp in target.components() {
        match comp {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse(entry, "the symlink target is absolute"))
            }
        }
        if depth < 0 {
            return Err(refuse(
                entry,
                format!(
                    "the symlink points outside the target ({})",
                    target.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Tracks symlinks created so far, so later entries cannot be written through them.
#[derive(Default)]
pub struct LinkGuard {
    links: HashSet<PathBuf>,
}

impl LinkGuard {
    /// Refuses `rel` when any proper ancestor of it is a symlink this extraction created.
    pub fn check(&self, entry: &str, rel: &Path) -> Result<()> {
        if self.links.is_empty() {
            return Ok(());
        }
        let mut ancestor = rel.parent();
        while let Some(a) = ancestor {
            if a.as_os_str().is_empty() {
                break;
            }
            if self.links.contains(a) {
                return Err(refuse(
                    entry,
                    format!("the path goes through the symlink {}", a.display()),
                ));
            }
            ancestor = a.parent();
        }
        Ok(())
    }

    pub fn add(&mut self, rel: PathBuf) {
        self.links.insert(rel);
    }
}

/// Removes whatever is at `path` (but not a directory) so a new file or link replaces it
/// rather than writing through an existing symlink.
pub fn clear_path(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => fs::remove_file(path).map_err(|e| CacheError::io("replace", path, e)),
        Err(_) => Ok(()),
    }
}

/// What an extraction created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

/// Extracts a tar stream into `target`, refusing unsafe entries (see the module docs). An
/// error leaves what was extracted before it; nothing is ever written outside `target`.
pub fn unpack_tar<R: Read>(reader: R, target: &Path) -> Result<UnpackStats> {
    fs::create_dir_all(target).map_err(|e| CacheError::io("create", target, e))?;
    let mut archive = tar::Archive::new(reader);
    let mut stats = UnpackStats::default();
    let mut guard = LinkGuard::default();
    let mut regular: HashSet<PathBuf> = HashSet::new();
    let entries = archive
        .entries()
        .map_err(|e| CacheError::io("read archive", target, e))?;
    for (n, entry) in entries.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(refuse(
                "",
                format!("the archive has more than {MAX_ENTRIES} entries"),
            ));
        }
        let mut entry = entry.map_err(|e| CacheError::io("read archive entry in", target, e))?;
        let raw_path = entry
            .path()
            .map_err(|e| CacheError::io("read entry path in", target, e))?
            .to_string_lossy()
            .into_owned();
        let rel = safe_relative(&raw_path)?;
        guard.check(&raw_path, &rel)?;
        let dest = target.join(&rel);
        let kind = entry.header().entry_type();
        if !rel.as_os_str().is_empty() {
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(|e| CacheError::io("create", parent, e))?;
            }
        }
        match kind {
            tar::EntryType::Directory => {
                fs::create_dir_all(&dest).map_err(|e| CacheError::io("create", &dest, e))?;
                stats.dirs += 1;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if rel.as_os_str().is_empty() {
                    return Err(refuse(
                        &raw_path,
                        "a file cannot replace the target directory",
                    ));
                }
                clear_path(&dest)?;
                let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
                let mut out = open_new_file(&dest, mode)?;
                let n = std::io::copy(&mut entry, &mut out)
                    .map_err(|e| CacheError::io("extract", &dest, e))?;
                stats.files += 1;
                stats.bytes += n;
                regular.insert(rel);
            }
            tar::EntryType::Symlink => {
                let link_target = entry
                    .link_name()
                    .map_err(|e| CacheError::io("read link of", &dest, e))?
                    .ok_or_else(|| refuse(&raw_path, "the symlink has no target"))?
                    .into_owned();
                if rel.as_os_str().is_empty() {
                    return Err(refuse(
                        &raw_path,
                        "a symlink cannot replace the target directory",
                    ));
                }
                check_symlink_target(&raw_path, &rel, &link_target)?;
                clear_path(&dest)?;
                std::os::unix::fs::symlink(&link_target, &dest)
                    .map_err(|e| CacheError::io("create symlink", &dest, e))?;
                guard.add(rel);
                stats.symlinks += 1;
            }
            tar::EntryType::Link => {
                let link_target = entry
                    .link_name()
                    .map_err(|e| CacheError::io("read link of", &dest, e))?
                    .ok_or_else(|| refuse(&raw_path, "the hard link has no target"))?
                    .to_string_lossy()
                    .into_owned();
                let source_rel = safe_relative(&link_target)?;
                if !regular.contains(&source_rel) {
                    return Err(refuse(
                        &raw_path,
                        format!(
                            "the hard link target {link_target:?} is not a file extracted earlier"
                        ),
                    ));
                }
                clear_path(&dest)?;
                fs::hard_link(target.join(&source_rel), &dest)
                    .map_err(|e| CacheError::io("create hard link", &dest, e))?;
                stats.files += 1;
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            other => {
                return Err(refuse(
                    &raw_path,
                    format!("entries of type {other:?} (devices, fifos) are not restored"),
                ));
            }
        }
    }
    Ok(stats)
}

fn open_new_file(path: &Path, mode: u32) -> Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode | 0o600)
        .open(path)
        .map_err(|e| CacheError::io("create", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h
    }

    /// Writes a raw name into the header, bypassing the builder's own path checks.
    fn raw_name(h: &mut tar::Header, name: &str) {
        let bytes = &mut h.as_old_mut().name;
        bytes.fill(0);
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
    }

    #[test]
    fn extracts_ordinary_entries() {
        let data = tar_with(|b| {
            let mut h = header(tar::EntryType::Regular, 5);
            b.append_data(&mut h, "dir/a.txt", &b"hello"[..]).unwrap();
            let mut l = header(tar::EntryType::Symlink, 0);
            b.append_link(&mut l, "dir/link", "a.txt").unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        let stats = unpack_tar(&data[..], dir.path()).unwrap();
        assert_eq!(stats.files, 1);
        assert_eq!(fs::read(dir.path().join("dir/link")).unwrap(), b"hello");
    }

    #[test]
    fn refuses_escapes() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "dotdot",
                tar_with(|b| {
                    let mut h = header(tar::EntryType::Regular, 1);
                    raw_name(&mut h, "../evil");
                    b.append(&h, &b"x"[..]).unwrap();
                }),
            ),
            (
                "absolute",
                tar_with(|b| {
                    let mut h = header(tar::EntryType::Regular, 1);
                    raw_name(&mut h, "/tmp/evil");
                    b.append(&h, &b"x"[..]).unwrap();
                }),
            ),
            (
                "symlink out",
                tar_with(|b| {
                    let mut l = header(tar::EntryType::Symlink, 0);
                    b.append_link(&mut l, "up", "../../etc").unwrap();
                }),
            ),
            (
                "through symlink",
                tar_with(|b| {
                    let mut l = header(tar::EntryType::Symlink, 0);
                    b.append_link(&mut l, "sub", ".").unwrap();
                    let mut h = header(tar::EntryType::Regular, 1);
                    b.append_data(&mut h, "sub/x", &b"x"[..]).unwrap();
                }),
            ),
            (
                "device",
                tar_with(|b| {
                    let mut h = header(tar::EntryType::Char, 0);
                    b.append_data(&mut h, "dev", &b""[..]).unwrap();
                }),
            ),
            (
                "hardlink out",
                tar_with(|b| {
                    let mut h = header(tar::EntryType::Link, 0);
                    b.append_link(&mut h, "hl", "/etc/passwd").unwrap();
                }),
            ),
        ];
        for (name, data) in cases {
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("t");
            let err = unpack_tar(&data[..], &target).expect_err(name);
            assert!(
                matches!(err, CacheError::UnsafeArchiveEntry { .. }),
                "{name}: {err}"
            );
            assert!(!dir.path().join("evil").exists());
        }
    }

    #[test]
    fn symlink_targets() {
        assert!(check_symlink_target("e", Path::new("a/b"), Path::new("../c")).is_ok());
        assert!(check_symlink_target("e", Path::new("a/b"), Path::new("../../c")).is_err());
        assert!(check_symlink_target("e", Path::new("a"), Path::new("/etc")).is_err());
        assert!(safe_relative("a/./b/").is_ok());
        assert!(safe_relative("a/../b").is_err());
    }
}
