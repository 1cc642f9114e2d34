//! The one way the cache client writes a restore (tree listings and stock `actions/cache`
//! archives, host and container jobs alike) and reads a confined save.
//!
//! A restore writes only beneath its anchors (the workspace, and for host jobs the roots of
//! `path:` lines outside it), and never through a symlink: every directory it creates files,
//! directories or links in, removes things from or sets modes on is opened from the anchor with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (one component at a time with `O_NOFOLLOW`
//! where the kernel lacks `openat2`), and the last name is handled with the `*at` calls, never
//! followed. So no symlink, whoever made it (this restore, an earlier one, the job, a process it
//! left running that swaps a directory for a link mid-restore), can carry a write elsewhere.
//!
//! The symlinks a restore creates are checked twice before they exist: their target must climb
//! (`..`) only at its start and no higher than the link's own depth below the anchor, so it stays
//! inside whatever the directories it then names turn out to be (`a/..` is refused: where it
//! leads depends on what `a` resolves to, which a later restore could change); and the target is
//! resolved as the kernel would from the link's directory (`RESOLVE_BENEATH`), so a link through
//! a symlink already there that leads out is refused too.
//!
//! Saves read through symlinks that stay inside the anchor when confined (a container job's
//! bind-mounted workspace) and follow paths as given otherwise (a host job's own files).

use crate::error::{CacheError, Result};
use std::collections::VecDeque;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// How the directories below an anchor are resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resolve {
    /// Restores: no symlink below the anchor is followed, wherever it points.
    NoSymlinks,
    /// Confined saves: symlinks are followed while they stay beneath the anchor.
    Beneath,
    /// Unconfined saves: paths are opened as given.
    Follow,
}

/// A directory everything below it is resolved from. Opened (and created if missing) on first
/// use, by its path: the workspace and the `path:` lines come from the runner and the workflow
/// author, who are trusted with them.
struct Anchor {
    path: PathBuf,
    fd: OnceLock<OwnedFd>,
}

pub(crate) struct Beneath {
    /// Disjoint: none lies inside another, so a path is beneath one anchor at most.
    anchors: Vec<Anchor>,
    resolve: Resolve,
}

fn cstring(bytes: &[u8], path: &Path) -> Result<CString> {
    CString::new(bytes)
        .map_err(|_| CacheError::io("open", path, io::Error::other("the path holds a NUL byte")))
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

fn refused(path: &Path, reason: impl Into<String>) -> CacheError {
    CacheError::UnsafePath {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// `path` with `.` dropped and `..` taken off lexically, as `path:` patterns are resolved.
pub(crate) fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Opens directory `name` in `dir` without following a symlink there: `access` is `O_PATH`
/// for a handle to name things in, `O_RDONLY` to list it or change its mode.
fn open_child_dir(dir: RawFd, name: &CStr, access: libc::c_int) -> io::Result<OwnedFd> {
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

/// `openat2(dir, name, flags, resolve)`.
fn openat2(dir: RawFd, name: &CStr, flags: libc::c_int, resolve: u64) -> io::Result<OwnedFd> {
    // SAFETY: `open_how` is plain data; zero is "no flags".
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    // SAFETY: the arguments are an open descriptor, a NUL-terminated path, and `how` with its
    // size, all alive for the call; the result is owned once.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            name.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: just returned by openat2 and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Opens directory `path` by its path, following symlinks (for trusted paths only).
fn open_dir_by_path(path: &Path) -> Result<OwnedFd> {
    let name = cstring(path.as_os_str().as_bytes(), path)?;
    // SAFETY: `name` is NUL-terminated; the result is owned once.
    let fd = unsafe {
        libc::open(
            name.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(CacheError::io("open directory", path, last_error()));
    }
    // SAFETY: just returned by open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether a symlink at `link` (relative to its anchor) pointing to `target` stays beneath the
/// anchor whatever the directories its target names resolve to: the target is relative, climbs
/// (`..`) only before it names anything, and no higher than the directory the link is in.
/// The reason it does not, otherwise.
pub(crate) fn check_link_target(link: &Path, target: &Path) -> std::result::Result<(), String> {
    if target.as_os_str().is_empty() {
        return Err("the symlink has an empty target".into());
    }
    let mut climbs = 0usize;
    let mut named = false;
    for component in target.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "the symlink points to the absolute path {}",
                    target.display()
                ))
            }
            Component::CurDir => {}
            Component::Normal(_) => named = true,
            Component::ParentDir if named => {
                return Err(format!(
                    "the symlink's target {} goes back up (`..`) after naming a directory: \
                     where that leads depends on what the directory resolves to",
                    target.display()
                ))
            }
            Component::ParentDir => climbs += 1,
        }
    }
    let depth = link.components().count().saturating_sub(1);
    if climbs > depth {
        return Err(format!(
            "the symlink points outside ({}): it climbs {climbs} directories from one {depth} below the top",
            target.display()
        ));
    }
    Ok(())
}

impl Anchor {
    fn new(path: PathBuf) -> Self {
        Anchor {
            path,
            fd: OnceLock::new(),
        }
    }
}

impl Beneath {
    /// Where a restore writes: beneath `workspace`, and unless `confine` (a container job, whose
    /// other paths are the container's, not the host's) beneath the roots of `path:` lines
    /// outside it, each its own anchor.
    pub(crate) fn for_restore(workspace: &Path, roots: &[PathBuf], confine: bool) -> Self {
        let workspace = lexical(workspace);
        let mut paths = vec![workspace.clone()];
        if !confine {
            paths.extend(roots.iter().filter(|r| !r.starts_with(&workspace)).cloned());
        }
        // Outermost first: a root inside another anchor is written beneath that one.
        paths.sort_by_key(|p| p.components().count());
        let mut anchors: Vec<Anchor> = Vec::new();
        for path in paths {
            if !anchors.iter().any(|a| path.starts_with(&a.path)) {
                anchors.push(Anchor::new(path));
            }
        }
        Beneath {
            anchors,
            resolve: Resolve::NoSymlinks,
        }
    }

    /// Writes beneath `anchor` alone (an archive extracted into a directory).
    pub(crate) fn at(anchor: &Path) -> Self {
        Beneath {
            anchors: vec![Anchor::new(lexical(anchor))],
            resolve: Resolve::NoSymlinks,
        }
    }

    /// Where a save reads: through symlinks that stay beneath `workspace` when `confine`, by
    /// path otherwise.
    pub(crate) fn for_save(workspace: &Path, confine: bool) -> Self {
        if confine {
            Beneath {
                anchors: vec![Anchor::new(lexical(workspace))],
                resolve: Resolve::Beneath,
            }
        } else {
            Beneath::unconfined()
        }
    }

    pub(crate) fn unconfined() -> Self {
        Beneath {
            anchors: Vec::new(),
            resolve: Resolve::Follow,
        }
    }

    fn anchor_names(&self) -> String {
        self.anchors
            .iter()
            .map(|a| a.path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The anchor `path` is beneath and the path relative to it.
    fn locate<'p>(&self, path: &'p Path) -> Result<(&Anchor, &'p Path)> {
        self.anchors
            .iter()
            .find_map(|a| path.strip_prefix(&a.path).ok().map(|rel| (a, rel)))
            .ok_or_else(|| {
                refused(
                    path,
                    format!(
                        "it is outside {}, where this restore writes",
                        self.anchor_names()
                    ),
                )
            })
    }

    /// `path` relative to its anchor (for checking a listing before anything is written).
    pub(crate) fn relative<'p>(&self, path: &'p Path) -> Result<&'p Path> {
        self.locate(path).map(|(_, rel)| rel)
    }

    fn anchor_fd(&self, anchor: &Anchor) -> Result<RawFd> {
        self.anchor_owned(anchor).map(AsRawFd::as_raw_fd)
    }

    fn anchor_owned<'a>(&self, anchor: &'a Anchor) -> Result<&'a OwnedFd> {
        if let Some(fd) = anchor.fd.get() {
            return Ok(fd);
        }
        std::fs::create_dir_all(&anchor.path)
            .map_err(|e| CacheError::io("create", &anchor.path, e))?;
        let fd = open_dir_by_path(&anchor.path)?;
        // Another thread may have opened it meanwhile: either descriptor names the same place.
        let _ = anchor.fd.set(fd);
        anchor.fd.get().ok_or_else(|| {
            CacheError::io(
                "open directory",
                &anchor.path,
                io::Error::other("lost its descriptor"),
            )
        })
    }

    fn leads_out(&self, anchor: &Anchor, path: &Path) -> CacheError {
        refused(
            path,
            format!(
                "a symlink on its path leads out of {}",
                anchor.path.display()
            ),
        )
    }

    /// The refusal for a path that goes through a symlink, naming the first one.
    fn through_symlink(&self, base: RawFd, anchor: &Anchor, path: &Path, rel: &Path) -> CacheError {
        let mut current: Option<OwnedFd> = None;
        let mut walked = anchor.path.clone();
        for component in rel.components() {
            let Component::Normal(part) = component else {
                return self.leads_out(anchor, path);
            };
            walked.push(part);
            let Ok(name) = CString::new(part.as_bytes()) else {
                break;
            };
            let dir = current.as_ref().map_or(base, |fd| fd.as_raw_fd());
            match stat_kind(dir, &name) {
                Ok(Some(libc::S_IFLNK)) => {
                    return refused(
                        path,
                        format!(
                            "its path goes through the symlink {}, and a restore writes through no symlink \
                             (remove the link, or cache and restore what it points to instead)",
                            walked.display()
                        ),
                    )
                }
                Ok(Some(libc::S_IFDIR)) => match open_child_dir(dir, &name, libc::O_PATH) {
                    Ok(fd) => current = Some(fd),
                    Err(_) => break,
                },
                _ => break,
            }
        }
        refused(
            path,
            "its path goes through a symlink (or changed while it was opened), and a restore writes through no symlink",
        )
    }

    /// An `O_PATH` handle on directory `dir`, resolved as this `Beneath` resolves (see
    /// [`Resolve`]): a symlink on the way fails (restores) or must stay beneath the anchor
    /// (confined saves).
    pub(crate) fn open_dir(&self, dir: &Path) -> Result<OwnedFd> {
        if self.resolve == Resolve::Follow {
            return open_dir_by_path(dir);
        }
        let (anchor, rel) = self.locate(dir)?;
        let base = self.anchor_fd(anchor)?;
        let rel_bytes = rel.as_os_str().as_bytes();
        let name = cstring(
            if rel_bytes.is_empty() {
                b"."
            } else {
                rel_bytes
            },
            dir,
        )?;
        let mut resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        if self.resolve == Resolve::NoSymlinks {
            resolve |= libc::RESOLVE_NO_SYMLINKS;
        }
        match openat2(base, &name, libc::O_PATH | libc::O_DIRECTORY, resolve) {
            Ok(fd) => Ok(fd),
            Err(err) => match err.raw_os_error() {
                Some(libc::EXDEV) => Err(self.leads_out(anchor, dir)),
                Some(libc::ELOOP) if self.resolve == Resolve::NoSymlinks => {
                    Err(self.through_symlink(base, anchor, dir, rel))
                }
                Some(libc::ENOSYS) => self.open_dir_stepwise(base, anchor, dir, rel),
                _ => Err(CacheError::io("open directory", dir, err)),
            },
        }
    }

    /// For kernels without `openat2`: one component at a time, following no symlink at all.
    fn open_dir_stepwise(
        &self,
        base: RawFd,
        anchor: &Anchor,
        dir: &Path,
        rel: &Path,
    ) -> Result<OwnedFd> {
        let mut current: Option<OwnedFd> = None;
        for component in rel.components() {
            let Component::Normal(part) = component else {
                return Err(self.leads_out(anchor, dir));
            };
            let name = cstring(part.as_bytes(), dir)?;
            let at = current.as_ref().map_or(base, |fd| fd.as_raw_fd());
            current =
                Some(open_child_dir(at, &name, libc::O_PATH).map_err(
                    |e| match e.raw_os_error() {
                        Some(libc::ELOOP) | Some(libc::ENOTDIR)
                            if stat_kind(at, &name).ok().flatten() == Some(libc::S_IFLNK) =>
                        {
                            self.through_symlink(base, anchor, dir, rel)
                        }
                        _ => CacheError::io("open directory", dir, e),
                    },
                )?);
        }
        match current {
            Some(fd) => Ok(fd),
            None => self
                .anchor_owned(anchor)?
                .try_clone()
                .map_err(|e| CacheError::io("open directory", dir, e)),
        }
    }

    /// The directory `path` is in (opened as by `open_dir`) and its last name.
    pub(crate) fn parent_of(&self, path: &Path) -> Result<(OwnedFd, CString)> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(refused(path, "it has no parent directory"));
        };
        Ok((self.open_dir(parent)?, cstring(name.as_bytes(), path)?))
    }

    /// Removes whatever is at `path` unless it is a directory, so a file or link can take its
    /// place (a symlink there is removed, never written through).
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

    /// `mkdir -p` of `dir` below its anchor. A directory that exists costs one open; a missing
    /// one, its missing parents first.
    pub(crate) fn create_dir_all(&self, dir: &Path) -> Result<()> {
        match self.open_dir(dir) {
            Ok(_) => return Ok(()),
            Err(CacheError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (_, rel) = self.locate(dir)?;
        if rel.as_os_str().is_empty() {
            // The anchor itself, made by `anchor_fd`: open_dir cannot have found it missing.
            return self.open_dir(dir).map(drop);
        }
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
            return Err(refused(dir, "it has no parent directory"));
        };
        self.create_dir_all(parent)?;
        let parent_fd = self.open_dir(parent)?;
        let name = cstring(name.as_bytes(), dir)?;
        // SAFETY: an open directory descriptor and a NUL-terminated name.
        if unsafe { libc::mkdirat(parent_fd.as_raw_fd(), name.as_ptr(), 0o777) } != 0 {
            let err = last_error();
            if err.raw_os_error() != Some(libc::EEXIST) {
                return Err(CacheError::io("create", dir, err));
            }
        }
        // Whatever is there now must be a directory reached through no symlink.
        self.open_dir(dir).map(drop)
    }

    /// Creates symlink `path` pointing to `target`, after checking that the target stays beneath
    /// the anchor (see the module docs).
    pub(crate) fn symlink(&self, target: &Path, path: &Path) -> Result<()> {
        let (anchor, rel) = self.locate(path)?;
        check_link_target(rel, target).map_err(|reason| refused(path, reason))?;
        let (dir, name) = self.parent_of(path)?;
        let base = self.anchor_fd(anchor)?;
        let from = rel.parent().unwrap_or(Path::new("")).join(target);
        if !resolves_inside(base, &from)
            .map_err(|e| CacheError::io("resolve the target of", path, e))?
        {
            return Err(refused(
                path,
                format!(
                    "the symlink's target {} resolves out of {} through a symlink already there",
                    target.display(),
                    anchor.path.display()
                ),
            ));
        }
        let target_c = cstring(target.as_os_str().as_bytes(), path)?;
        // SAFETY: NUL-terminated strings and an open directory descriptor.
        if unsafe { libc::symlinkat(target_c.as_ptr(), dir.as_raw_fd(), name.as_ptr()) } != 0 {
            return Err(CacheError::io("create symlink", path, last_error()));
        }
        Ok(())
    }

    /// Makes `path` a hard link to the file at `existing` (both beneath the anchors; a symlink
    /// at `existing` would be linked itself, not followed).
    pub(crate) fn hard_link(&self, existing: &Path, path: &Path) -> Result<()> {
        let (from_dir, from_name) = self.parent_of(existing)?;
        let (to_dir, to_name) = self.parent_of(path)?;
        // SAFETY: open directory descriptors and NUL-terminated names; flags 0 follows nothing.
        let linked = unsafe {
            libc::linkat(
                from_dir.as_raw_fd(),
                from_name.as_ptr(),
                to_dir.as_raw_fd(),
                to_name.as_ptr(),
                0,
            )
        };
        if linked != 0 {
            return Err(CacheError::io("create hard link", path, last_error()));
        }
        Ok(())
    }

    /// Sets the mode of directory `path`, never through a symlink.
    pub(crate) fn set_dir_mode(&self, path: &Path, mode: u32) -> Result<()> {
        // An anchor (a `path:` root outside the workspace, `~/.npm`) has no parent beneath
        // any anchor: it is reopened from its own descriptor.
        let anchor = match self.resolve {
            Resolve::Follow => None,
            _ => Some(self.locate(path)?).filter(|(_, rel)| rel.as_os_str().is_empty()),
        };
        let opened = match anchor {
            Some((anchor, _)) => open_child_dir(self.anchor_fd(anchor)?, c".", libc::O_RDONLY),
            None => {
                let (dir, name) = self.parent_of(path)?;
                open_child_dir(dir.as_raw_fd(), &name, libc::O_RDONLY)
            }
        };
        let fd = opened.map_err(|e| CacheError::io("set mode of", path, e))?;
        // SAFETY: an open descriptor.
        if unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) } != 0 {
            return Err(CacheError::io("set mode of", path, last_error()));
        }
        Ok(())
    }
}

/// Whether `path` (relative to the anchor `base`) resolves inside it as the kernel resolves it
/// now: `openat2(RESOLVE_BENEATH)`, or the same walk by hand on kernels without it. A path that
/// does not resolve (a missing name, a loop) counts as inside: `check_link_target` already
/// keeps whatever is created there later from leading out.
fn resolves_inside(base: RawFd, path: &Path) -> io::Result<bool> {
    let bytes = path.as_os_str().as_bytes();
    let name = CString::new(if bytes.is_empty() { b"." } else { bytes })
        .map_err(|_| io::Error::other("the target holds a NUL byte"))?;
    match openat2(
        base,
        &name,
        libc::O_PATH,
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => resolves_inside_by_hand(base, path),
        Err(_) => Ok(true),
    }
}

/// The kernel's resolution, one component at a time: `..` goes to the physical parent (out of
/// the anchor when there is none below it), a symlink's target continues from the directory it
/// is in (an absolute one leads out), at most 40 links.
pub(crate) fn resolves_inside_by_hand(base: RawFd, path: &Path) -> io::Result<bool> {
    let mut opened: Vec<OwnedFd> = Vec::new();
    let mut pending: VecDeque<Vec<u8>> = path
        .components()
        .map(|c| c.as_os_str().as_bytes().to_vec())
        .collect();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        let dir = opened.last().map_or(base, |fd| fd.as_raw_fd());
        match part.as_slice() {
            b"/" => return Ok(false),
            b"." => continue,
            b".." => {
                if opened.pop().is_none() {
                    return Ok(false);
                }
                continue;
            }
            _ => {}
        }
        let name = CString::new(part).map_err(|_| io::Error::other("a NUL byte"))?;
        match stat_kind(dir, &name)? {
            None => return Ok(true),
            Some(libc::S_IFLNK) => {
                links += 1;
                if links > 40 {
                    return Ok(true);
                }
                let target = read_link_at(dir, &name)?;
                let target = Path::new(OsStr::from_bytes(&target));
                if target.is_absolute() {
                    return Ok(false);
                }
                for component in target.components().rev() {
                    pending.push_front(component.as_os_str().as_bytes().to_vec());
                }
            }
            Some(libc::S_IFDIR) => opened.push(open_child_dir(dir, &name, libc::O_PATH)?),
            // A file: nothing resolves below it.
            Some(_) => return Ok(true),
        }
    }
    Ok(true)
}

fn read_link_at(dir: RawFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: an open directory descriptor, a NUL-terminated name and a buffer of its length.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(last_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// The metadata of `name` in `dir`, not following a symlink; `None` if nothing is there.
pub(crate) fn stat_at(dir: RawFd, name: &CStr) -> io::Result<Option<libc::stat>> {
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
    Ok(Some(st))
}

/// The file type bits of `name` in `dir`, not following a symlink; `None` if nothing is there.
pub(crate) fn stat_kind(dir: RawFd, name: &CStr) -> io::Result<Option<libc::mode_t>> {
    Ok(stat_at(dir, name)?.map(|st| st.st_mode & libc::S_IFMT))
}

/// Unlinks `name` in `dir` unless it is a directory.
pub(crate) fn clear_at(dir: RawFd, name: &CStr) -> io::Result<()> {
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

fn remove_all_at(dir: RawFd, name: &CStr) -> io::Result<()> {
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
        let child = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
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

/// The directory a thread last worked in, held open so that each file is created (or read) by
/// name inside it (`openat`) rather than by resolving its whole path again: files come in path
/// order, a directory's files mostly together, and on a tree of small files the path walks are
/// about a tenth of the kernel's work. Directories are opened through a [`Beneath`].
pub(crate) struct ParentDir {
    path: PathBuf,
    fd: Option<OwnedFd>,
    beneath: Arc<Beneath>,
}

impl ParentDir {
    pub(crate) fn new(beneath: Arc<Beneath>) -> Self {
        ParentDir {
            path: PathBuf::new(),
            fd: None,
            beneath,
        }
    }

    /// Creates `dest` for writing. `O_CREAT | O_EXCL` never follows a symlink that appeared
    /// since the plan; whatever the plan saw there is removed first, by name in its directory.
    pub(crate) fn create(&mut self, dest: &Path, mode: u32, exists: bool) -> Result<File> {
        if exists {
            let (dir, name) = self.parent_and_name(dest, "replace")?;
            clear_at(dir, &name).map_err(|e| CacheError::io("replace", dest, e))?;
        }
        self.open_at(
            dest,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            mode | 0o600,
            "create",
        )
    }

    /// Opens the regular file `path` for reading, by name inside its parent. If it is a
    /// symlink now, that is refused rather than followed (a save must not get a file outside
    /// the cached paths into the cache that way, nor a restore compare one), and a FIFO does
    /// not block the open.
    pub(crate) fn open_read(&mut self, path: &Path) -> Result<File> {
        self.open_at(
            path,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            0,
            "open",
        )
    }

    /// What is at `path` (not following a symlink there); `None` if nothing.
    pub(crate) fn stat(&mut self, path: &Path) -> Result<Option<libc::stat>> {
        let (dir, name) = self.parent_and_name(path, "stat")?;
        stat_at(dir, &name).map_err(|e| CacheError::io("stat", path, e))
    }

    fn parent_and_name(&mut self, path: &Path, action: &'static str) -> Result<(RawFd, CString)> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(CacheError::io(
                action,
                path,
                io::Error::other("the path has no parent directory"),
            ));
        };
        let dir = self.open(parent)?;
        let name = CString::new(name.as_bytes()).map_err(|_| {
            CacheError::io(action, path, io::Error::other("the name holds a NUL byte"))
        })?;
        Ok((dir, name))
    }

    fn open_at(
        &mut self,
        path: &Path,
        flags: libc::c_int,
        mode: u32,
        action: &'static str,
    ) -> Result<File> {
        let (dir, name) = self.parent_and_name(path, action)?;
        // SAFETY: `dir` is an open directory descriptor and `name` a NUL-terminated string, both
        // alive for the call; the descriptor returned is owned by the File built from it alone.
        let fd = unsafe {
            libc::openat(
                dir,
                name.as_ptr(),
                flags | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(CacheError::io(action, path, last_error()));
        }
        // SAFETY: `fd` was just returned by openat and nothing else owns it.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Makes directory `path` (mode 0777 less the umask, as mkdir(2) does) inside its parent.
    pub(crate) fn mkdir(&mut self, path: &Path) -> Result<()> {
        let (dir, name) = self.parent_and_name(path, "create")?;
        // SAFETY: `dir` is an open directory descriptor and `name` a NUL-terminated string.
        if unsafe { libc::mkdirat(dir, name.as_ptr(), 0o777) } != 0 {
            return Err(CacheError::io("create", path, last_error()));
        }
        Ok(())
    }

    fn open(&mut self, parent: &Path) -> Result<RawFd> {
        if let Some(fd) = self.fd.as_ref().filter(|_| self.path == parent) {
            return Ok(fd.as_raw_fd());
        }
        let dir = self.beneath.open_dir(parent)?;
        self.path = parent.to_path_buf();
        Ok(self.fd.insert(dir).as_raw_fd())
    }
}

#[cfg(test)]
#[path = "beneath_tests.rs"]
mod tests;
