//! Safe extraction of stock `actions/cache` archives: entries may only create things beneath the
//! target directory. Absolute paths, `..` and device files are refused here; every write goes
//! through [`crate::beneath`] (no symlink followed, links checked to stay inside), the mechanism
//! every restore writes with.

use crate::beneath::{Beneath, ParentDir};
use crate::error::{CacheError, Result};
use std::collections::HashSet;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

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

/// What an extraction created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

/// Extracts a tar stream into `target`, refusing unsafe entries (see the module docs). An
/// error leaves what was extracted before it; nothing is ever written outside `target`, nor
/// through a symlink inside it (an earlier entry's, an earlier restore's, or one already there).
pub fn unpack_tar<R: Read>(reader: R, target: &Path) -> Result<UnpackStats> {
    let beneath = Arc::new(Beneath::at(target));
    let target = &crate::beneath::lexical(target);
    beneath.create_dir_all(target)?;
    let mut files = ParentDir::new(Arc::clone(&beneath));
    let mut archive = tar::Archive::new(reader);
    let mut stats = UnpackStats::default();
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
        let kind = entry.header().entry_type();
        if rel.as_os_str().is_empty() {
            match kind {
                tar::EntryType::Directory => continue,
                tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink => continue,
                _ => {
                    return Err(refuse(
                        &raw_path,
                        "only a directory can be the target itself",
                    ))
                }
            }
        }
        let dest = target.join(&rel);
        if let Some(parent) = dest.parent() {
            beneath.create_dir_all(parent)?;
        }
        match kind {
            tar::EntryType::Directory => {
                // A directory replaces a file or link there; one already there is kept.
                beneath.clear(&dest)?;
                beneath.create_dir_all(&dest)?;
                stats.dirs += 1;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
                let mut out = files.create(&dest, mode, true)?;
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
                beneath.clear(&dest)?;
                beneath.symlink(&link_target, &dest)?;
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
                beneath.clear(&dest)?;
                beneath.hard_link(&target.join(&source_rel), &dest)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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
                matches!(
                    err,
                    CacheError::UnsafeArchiveEntry { .. } | CacheError::UnsafePath { .. }
                ),
                "{name}: {err}"
            );
            assert!(!dir.path().join("evil").exists());
        }
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
        let mut l = header(tar::EntryType::Symlink, 0);
        b.append_link(&mut l, path, target).unwrap();
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str) {
        let mut h = header(tar::EntryType::Regular, 5);
        raw_name(&mut h, path);
        b.append(&h, &b"pwned"[..]).unwrap();
    }

    fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str) {
        let mut h = header(tar::EntryType::Directory, 0);
        b.append_data(&mut h, path, &b""[..]).unwrap();
    }

    /// The target is `scratch/work/ws`; nothing may appear in `scratch` or `scratch/work`
    /// besides it.
    fn assert_contained(scratch: &Path) {
        let names = |p: &Path| -> Vec<String> {
            fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(scratch), vec!["work"]);
        assert_eq!(names(&scratch.join("work")), vec!["ws"]);
    }

    fn refused(result: Result<UnpackStats>) -> String {
        match result {
            Err(e @ (CacheError::UnsafePath { .. } | CacheError::UnsafeArchiveEntry { .. })) => {
                e.to_string()
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// Chains of links, each harmless by its text, within one archive: the escaping link is
    /// refused when it would be created, and nothing is written through any link.
    #[test]
    fn chains_of_links_in_one_archive_are_refused() {
        let archives: Vec<(&str, Vec<u8>)> = vec![
            (
                "climb after a name",
                tar_with(|b| {
                    dir(b, "d");
                    link(b, "d/l1", "..");
                    link(b, "d/l2", "l1/..");
                    file(b, "d/l2/pwned");
                }),
            ),
            (
                "write through an inside link",
                tar_with(|b| {
                    link(b, "l", ".");
                    file(b, "l/pwned");
                }),
            ),
            (
                "deep chain to the root",
                tar_with(|b| {
                    dir(b, "a/b");
                    link(b, "a/b/up", "../..");
                    link(b, "a/b/root", "up/../../../../../../../../../..");
                    file(b, "a/b/root/tmp/pwned");
                }),
            ),
            ("absolute target", tar_with(|b| link(b, "abs", "/tmp"))),
            (
                "relative climb out",
                tar_with(|b| link(b, "d/up", "../../..")),
            ),
        ];
        for (name, data) in archives {
            let scratch = tempfile::tempdir().unwrap();
            let target = scratch.path().join("work/ws");
            let err = refused(unpack_tar(&data[..], &target));
            assert!(!err.is_empty(), "{name}");
            assert_contained(scratch.path());
        }
    }

    /// Across two archives: the first leaves links whose targets stay inside, the second tries
    /// to write through them; and a link planted in the workspace by something else (an older
    /// kiln, the job) is not written through either.
    #[test]
    fn a_later_archive_cannot_write_through_links_already_there() {
        let scratch = tempfile::tempdir().unwrap();
        let target = scratch.path().join("work/ws");
        let first = tar_with(|b| {
            dir(b, "d/real");
            link(b, "d/l1", "..");
            link(b, "d/in", "real");
        });
        unpack_tar(&first[..], &target).unwrap();
        assert_eq!(fs::read_link(target.join("d/l1")).unwrap(), Path::new(".."));
        std::os::unix::fs::symlink("l1/..", target.join("d/l2")).unwrap();
        for path in ["d/l2/pwned", "d/l1/pwned", "d/in/pwned", "d/l2/x/y"] {
            let second = tar_with(|b| file(b, path));
            let err = refused(unpack_tar(&second[..], &target));
            assert!(err.contains("goes through the symlink"), "{path}: {err}");
        }
        let third = tar_with(|b| link(b, "d/l3", "l2/x"));
        let err = refused(unpack_tar(&third[..], &target));
        assert!(err.contains("resolves out of"), "{err}");
        assert!(!target.join("d/real/pwned").exists());
        assert_contained(scratch.path());
    }

    /// A directory that already exists in the workspace: links in it may climb as far as its
    /// depth, no further; a file entry replaces a link rather than writing through it.
    #[test]
    fn links_in_an_existing_directory_climb_no_further_than_its_depth() {
        let scratch = tempfile::tempdir().unwrap();
        let target = scratch.path().join("work/ws");
        fs::create_dir_all(target.join("src/lib")).unwrap();
        let ok = tar_with(|b| {
            link(b, "src/lib/up", "../..");
            link(b, "src/lib/sibling", "../other");
        });
        unpack_tar(&ok[..], &target).unwrap();
        let out = tar_with(|b| link(b, "src/lib/out", "../../.."));
        let err = refused(unpack_tar(&out[..], &target));
        assert!(err.contains("points outside"), "{err}");
        // A file where a link is replaces the link; the link's target is untouched.
        fs::write(scratch.path().join("work/keep"), b"keep").unwrap();
        std::os::unix::fs::symlink("../../keep", target.join("f")).unwrap();
        let replace = tar_with(|b| file(b, "f"));
        unpack_tar(&replace[..], &target).unwrap();
        assert_eq!(fs::read(target.join("f")).unwrap(), b"pwned");
        assert_eq!(fs::read(scratch.path().join("work/keep")).unwrap(), b"keep");
    }
}
