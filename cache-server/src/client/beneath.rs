//! Keeps a restore's and a save's file-system calls inside one directory. In a container job
//! the client runs on the host over the bind-mounted workspace, and a process the job left
//! running in the container can swap a directory for a symlink between the plan and a write:
//! following it would write (or read) outside the workspace as the runner's user. Every
//! directory a confined call works in is opened beneath the anchor (`openat2` with
//! `RESOLVE_BENEATH`, or one component at a time with `O_NOFOLLOW` where the kernel lacks
//! `openat2`), and the last name is handled with the `*at` calls, never followed.

use crate::error::{CacheError, Result};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

pub(crate) struct Beneath {
    anchor: PathBuf,
    fd: OwnedFd,
}

fn cstring(bytes: &[u8], path: &Path) -> Result<CString> {
    CString::new(bytes)
        .map_err(|_| CacheError::io("open", path, io::Error::other("the path holds a NUL byte")))
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// Opens directory `name` in `dir` without following a symlink there: `access` is `O_PATH`
/// for a handle to name things in, `O_RDONLY` to list it or change its mode.
fn open_child_dir(dir: RawFd, name: &CString, access: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: `dir` is an open descriptor and `name` NUL-terminated; the result is owned once.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            access | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: just returned by openat and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Beneath {
    /// Opens the anchor itself by its path (the caller's trusted configuration names it).
    pub(crate) fn open(anchor: &Path) -> Result<Self> {
        let name = cstring(anchor.as_os_str().as_bytes(), anchor)?;
        // SAFETY: `name` is NUL-terminated; the result is owned once.
        let fd = unsafe {
            libc::open(
                name.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(CacheError::io("open directory", anchor, last_error()));
        }
        Ok(Beneath {
            anchor: anchor.to_path_buf(),
            // SAFETY: just returned by open and owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn escape(&self, path: &Path) -> CacheError {
        CacheError::io(
            "open",
            path,
            io::Error::other(format!(
                "it is not inside {} (a symlink there leads out of it)",
                self.anchor.display()
            )),
        )
    }

    /// An `O_PATH` handle on directory `dir` (the anchor or below it), resolved inside the
    /// anchor: a symlink leading out of it fails instead of being followed.
    pub(crate) fn open_dir(&self, dir: &Path) -> Result<OwnedFd> {
        let rel = dir
            .strip_prefix(&self.anchor)
            .map_err(|_| self.escape(dir))?;
        let rel_bytes = rel.as_os_str().as_bytes();
        let name = cstring(
            if rel_bytes.is_empty() {
                b"."
            } else {
                rel_bytes
            },
            dir,
        )?;
        // SAFETY: `open_how` is plain data; zero is "no flags".
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: the arguments are an open descriptor, a NUL-terminated path, and `how` with
        // its size, all alive for the call; the result is owned once.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd.as_raw_fd(),
                name.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: just returned by openat2 and owned by nobody else.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        let err = last_error();
        match err.raw_os_error() {
            Some(libc::EXDEV) | Some(libc::ELOOP) => Err(self.escape(dir)),
            Some(libc::ENOSYS) => self.open_dir_stepwise(dir, rel),
            _ => Err(CacheError::io("open directory", dir, err)),
        }
    }

    /// For kernels without `openat2`: one component at a time, following no symlink at all.
    fn open_dir_stepwise(&self, dir: &Path, rel: &Path) -> Result<OwnedFd> {
        let mut current = self
            .fd
            .try_clone()
            .map_err(|e| CacheError::io("open directory", dir, e))?;
        for component in rel.components() {
            let Component::Normal(part) = component else {
                return Err(self.escape(dir));
            };
            let name = cstring(part.as_bytes(), dir)?;
            current = open_child_dir(current.as_raw_fd(), &name, libc::O_PATH).map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR)
                {
                    self.escape(dir)
                } else {
                    CacheError::io("open directory", dir, e)
                }
            })?;
        }
        Ok(current)
    }

    /// The directory `path` is in (opened as by `open_dir`) and its last name.
    pub(crate) fn parent_of(&self, path: &Path) -> Result<(OwnedFd, CString)> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(self.escape(path));
        };
        Ok((self.open_dir(parent)?, cstring(name.as_bytes(), path)?))
    }

    /// Removes whatever is at `path` unless it is a directory (as `unpack::clear_path`).
    pub(crate) fn clear(&self, path: &Path) -> Result<()> {
        let (dir, name) = self.parent_of(path)?;
        clear_at(dir.as_raw_fd(), &name).map_err(|e| CacheError::io("replace", path, e))
    }

    /// Removes `path` and, if it is a directory, everything in it; symlinks are removed, never
    /// followed.
    pub(crate) fn remove_all(&self, path: &Path) -> Result<()> {
        let (dir, name) = self.parent_of(path)?;
        remove_all_at(dir.as_raw_fd(), &name).map_err(|e| CacheError::io("remove", path, e))
    }

    /// `mkdir -p` of `dir` below the anchor. A directory that exists costs one open; a missing
    /// one, its missing parents first.
    pub(crate) fn create_dir_all(&self, dir: &Path) -> Result<()> {
        match self.open_dir(dir) {
            Ok(_) => return Ok(()),
            Err(CacheError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (parent, name) = self.parent_of_missing(dir)?;
        // SAFETY: an open directory descriptor and a NUL-terminated name.
        if unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o777) } != 0 {
            let err = last_error();
            if err.raw_os_error() != Some(libc::EEXIST) {
                return Err(CacheError::io("create", dir, err));
            }
        }
        // Whatever is there now must be a directory inside the anchor.
        self.open_dir(dir).map(drop)
    }

    /// The parent of `dir` (created first if missing) and `dir`'s last name.
    fn parent_of_missing(&self, dir: &Path) -> Result<(OwnedFd, CString)> {
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
            return Err(self.escape(dir));
        };
        if !parent.starts_with(&self.anchor) {
            return Err(self.escape(dir));
        }
        self.create_dir_all(parent)?;
        Ok((self.open_dir(parent)?, cstring(name.as_bytes(), dir)?))
    }

    /// Creates symlink `path` pointing to `target`.
    pub(crate) fn symlink(&self, target: &Path, path: &Path) -> Result<()> {
        let (dir, name) = self.parent_of(path)?;
        let target_c = cstring(target.as_os_str().as_bytes(), path)?;
        // SAFETY: NUL-terminated strings and an open directory descriptor.
        if unsafe { libc::symlinkat(target_c.as_ptr(), dir.as_raw_fd(), name.as_ptr()) } != 0 {
            return Err(CacheError::io("create symlink", path, last_error()));
        }
        Ok(())
    }

    /// Sets the mode of directory `path`, never through a symlink.
    pub(crate) fn set_dir_mode(&self, path: &Path, mode: u32) -> Result<()> {
        let (dir, name) = self.parent_of(path)?;
        let fd = open_child_dir(dir.as_raw_fd(), &name, libc::O_RDONLY)
            .map_err(|e| CacheError::io("set mode of", path, e))?;
        // SAFETY: an open descriptor.
        if unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) } != 0 {
            return Err(CacheError::io("set mode of", path, last_error()));
        }
        Ok(())
    }
}

/// The file type bits of `name` in `dir`, not following a symlink; `None` if nothing is there.
pub(crate) fn stat_kind(dir: RawFd, name: &CString) -> io::Result<Option<libc::mode_t>> {
    // SAFETY: `st` is plain data filled by the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: an open directory descriptor, a NUL-terminated name, a valid out pointer.
    if unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        let err = last_error();
        return if err.raw_os_error() == Some(libc::ENOENT) {
            Ok(None)
        } else {
            Err(err)
        };
    }
    Ok(Some(st.st_mode & libc::S_IFMT))
}

/// Unlinks `name` in `dir` unless it is a directory.
pub(crate) fn clear_at(dir: RawFd, name: &CString) -> io::Result<()> {
    match stat_kind(dir, name)? {
        None => Ok(()),
        Some(libc::S_IFDIR) => Ok(()),
        Some(_) => {
            // SAFETY: an open directory descriptor and a NUL-terminated name.
            if unsafe { libc::unlinkat(dir, name.as_ptr(), 0) } != 0 {
                return Err(last_error());
            }
            Ok(())
        }
    }
}

fn remove_all_at(dir: RawFd, name: &CString) -> io::Result<()> {
    if stat_kind(dir, name)? != Some(libc::S_IFDIR) {
        return clear_at(dir, name);
    }
    let fd = open_child_dir(dir, name, libc::O_RDONLY)?.into_raw_fd();
    // SAFETY: `fd` is an open directory; on success the stream owns it.
    let stream = unsafe { libc::fdopendir(fd) };
    if stream.is_null() {
        let err = last_error();
        // SAFETY: fdopendir failed, so `fd` is still ours to close.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        return Err(err);
    }
    let mut names = Vec::new();
    loop {
        // SAFETY: `stream` is a valid DIR stream; the entry is read before the next call.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            break;
        }
        // SAFETY: readdir returned a valid entry whose name is NUL-terminated.
        let child = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) };
        let bytes = child.to_bytes();
        if bytes != b"." && bytes != b".." {
            names.push(child.to_owned());
        }
    }
    // SAFETY: the stream's descriptor stays open for the removals below.
    let inner = unsafe { libc::dirfd(stream) };
    let mut result = Ok(());
    for child in &names {
        if let Err(e) = remove_all_at(inner, child) {
            result = Err(e);
            break;
        }
    }
    // SAFETY: `stream` is valid and closed once (which closes its descriptor).
    unsafe { libc::closedir(stream) };
    result?;
    // SAFETY: an open directory descriptor and a NUL-terminated name.
    if unsafe { libc::unlinkat(dir, name.as_ptr(), libc::AT_REMOVEDIR) } != 0 {
        return Err(last_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn calls_stay_inside_the_anchor() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let w = ws.path();
        fs::create_dir_all(w.join("real/sub")).unwrap();
        std::os::unix::fs::symlink(outside.path(), w.join("escape")).unwrap();
        std::os::unix::fs::symlink("real", w.join("inside")).unwrap();
        let b = Beneath::open(w).unwrap();

        assert!(b.open_dir(&w.join("real/sub")).is_ok());
        // A relative symlink that stays inside is fine; one leading out is refused.
        assert!(b.open_dir(&w.join("inside/sub")).is_ok());
        let err = b.open_dir(&w.join("escape")).unwrap_err().to_string();
        assert!(err.contains("leads out of it"), "{err}");
        assert!(b.create_dir_all(&w.join("escape/made")).is_err());
        assert!(b.symlink(Path::new("x"), &w.join("escape/link")).is_err());
        assert!(b.set_dir_mode(&w.join("escape"), 0o700).is_err());
        assert!(b.open_dir(outside.path()).is_err());
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);

        b.create_dir_all(&w.join("real/a/b/c")).unwrap();
        assert!(w.join("real/a/b/c").is_dir());
        fs::write(w.join("real/a/b/file"), b"x").unwrap();
        // Removing a tree removes a symlink in it, not what it points to.
        fs::write(outside.path().join("keep"), b"keep").unwrap();
        std::os::unix::fs::symlink(outside.path(), w.join("real/a/link")).unwrap();
        b.remove_all(&w.join("real/a")).unwrap();
        assert!(!w.join("real/a").exists());
        assert_eq!(fs::read(outside.path().join("keep")).unwrap(), b"keep");
        // Clearing removes a file or a symlink and leaves a directory.
        b.clear(&w.join("escape")).unwrap();
        assert!(fs::symlink_metadata(w.join("escape")).is_err());
        b.clear(&w.join("real")).unwrap();
        assert!(w.join("real").is_dir());
    }

    #[test]
    fn the_stepwise_fallback_refuses_every_symlink() {
        let ws = tempfile::tempdir().unwrap();
        let w = ws.path();
        fs::create_dir_all(w.join("real/sub")).unwrap();
        std::os::unix::fs::symlink("real", w.join("inside")).unwrap();
        let b = Beneath::open(w).unwrap();
        assert!(b
            .open_dir_stepwise(&w.join("real/sub"), Path::new("real/sub"))
            .is_ok());
        assert!(b
            .open_dir_stepwise(&w.join("inside/sub"), Path::new("inside/sub"))
            .is_err());
    }
}
