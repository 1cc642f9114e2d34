//! `DefaultGlobber.globGenerator` (`@actions/glob`) followed by the per-file checks of the
//! runner's `hashFiles.ts`: which files get hashed, in which order.
//!
//! The walk is a depth-first pre-order from each search root, children in `strcmp` order of
//! their raw names (libuv sorts `scandir` that way), so `b/c.txt` comes before `b.txt`.
//! Node stats every path it considers; here the entry type `readdir` already returned
//! (`d_type`) stands in for `lstat`, and only symbolic links are `stat`ed.

use super::pattern::{self, Pattern, MATCH_FILE, MATCH_NONE};
use super::source::{EntryKind, FileSource};
use super::{glob::Scratch, HashFilesError};
use std::io;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

/// The files to hash, in order, and what stopped the walk early, if anything. The error is
/// kept apart because GitHub hashes as it walks: a file before the failure point that
/// cannot be read is the error it reports first.
pub(crate) struct WalkOutcome {
    pub files: Vec<String>,
    pub error: Option<HashFilesError>,
}

/// How often (in visited paths) the walk looks at the clock.
const DEADLINE_CHECK_INTERVAL: usize = 256;

pub(crate) struct WalkSettings<'a> {
    pub source: &'a dyn FileSource,
    pub patterns: &'a [Pattern],
    /// The real workspace path: only files under `cwd/` are hashed.
    pub cwd: &'a str,
    pub follow_symbolic_links: bool,
    pub deadline: Instant,
}

pub(crate) fn walk(settings: &WalkSettings<'_>) -> WalkOutcome {
    let mut files = Vec::new();
    let error = walk_into(settings, &mut files).err();
    WalkOutcome { files, error }
}

/// One path waiting on the walk's stack.
struct Pending {
    path: String,
    /// Depth, roots being 1: keeps the symlink-cycle chain in step with the walk.
    level: usize,
    /// The kind `readdir` reported for the entry itself (not following links).
    entry_type: Option<EntryKind>,
    /// The raw name was not UTF-8. Node only ever sees it decoded with U+FFFD, so any
    /// `stat` of the path it builds fails as if the file did not exist.
    mangled_name: bool,
    /// Following links only: the real path of the directory that listed this entry.
    parent_real_path: Option<Rc<str>>,
}

enum Found {
    Directory,
    RegularFile,
    /// Not followed (the default): `hashFiles` stats through it once it is matched.
    Symlink,
    Special(&'static str),
}

fn walk_into(settings: &WalkSettings<'_>, files: &mut Vec<String>) -> Result<(), HashFilesError> {
    let follow = settings.follow_symbolic_links;
    let source = settings.source;
    let workspace_prefix = format!("{}/", settings.cwd);
    let mut stack: Vec<Pending> = Vec::new();
    for root in pattern::search_paths(settings.patterns) {
        match source.lstat(&root) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(io_error("inspect", &root, source)),
        }
        stack.push(Pending {
            path: root,
            level: 1,
            entry_type: None,
            mangled_name: false,
            parent_real_path: None,
        });
    }
    // Roots are taken in first-appearance order.
    stack.reverse();

    let mut scratch = Scratch::default();
    let mut traversal_chain: Vec<Rc<str>> = Vec::new();
    let mut visited = 0usize;
    while let Some(item) = stack.pop() {
        visited += 1;
        if visited % DEADLINE_CHECK_INTERVAL == 0 && Instant::now() > settings.deadline {
            return Err(HashFilesError::TimedOut {
                seconds: super::GITHUB_TIMEOUT.as_secs(),
            });
        }
        let segments: Vec<&str> = item.path.split('/').collect();
        let kind = pattern::match_all(settings.patterns, &segments, &mut scratch);
        if kind == MATCH_NONE
            && !pattern::partial_match_any(settings.patterns, &segments, &mut scratch)
        {
            continue;
        }
        let Some(found) = inspect(source, &item, follow)? else {
            continue;
        };
        match found {
            Found::Directory => {
                // A matched directory is yielded too, but hashFiles skips directories.
                let real_path = if follow {
                    let real = real_path_of(source, &item)?;
                    while traversal_chain.len() >= item.level {
                        traversal_chain.pop();
                    }
                    if traversal_chain.contains(&real) {
                        continue; // a symlink cycle: Node drops the path silently
                    }
                    traversal_chain.push(Rc::clone(&real));
                    Some(real)
                } else {
                    None
                };
                push_children(source, &item, real_path, &mut stack)?;
            }
            _ if kind & MATCH_FILE == 0 => {}
            // Matched, but outside the workspace: hashFiles ignores it before any stat.
            _ if !item.path.starts_with(&workspace_prefix) => {}
            Found::RegularFile => files.push(item.path),
            Found::Symlink => match source.stat(&item.path) {
                Ok(EntryKind::Directory) => {}
                Ok(EntryKind::File) => files.push(item.path),
                Ok(EntryKind::Special(kind)) => {
                    return Err(HashFilesError::NotRegularFile {
                        path: PathBuf::from(item.path),
                        kind,
                    })
                }
                Ok(EntryKind::Symlink) => {
                    return Err(HashFilesError::NotRegularFile {
                        path: PathBuf::from(item.path),
                        kind: "a symbolic link that cannot be resolved",
                    })
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    return Err(HashFilesError::BrokenSymlink {
                        path: PathBuf::from(item.path),
                    });
                }
                Err(source) => {
                    return Err(io_error("follow the symbolic link", &item.path, source))
                }
            },
            Found::Special(kind) => {
                return Err(HashFilesError::NotRegularFile {
                    path: PathBuf::from(item.path),
                    kind,
                })
            }
        }
    }
    Ok(())
}

/// `lstat` (default) or `stat` (following links) of a path the patterns care about.
/// `Ok(None)`: following links, the path is a broken link (or vanished), which Node omits.
fn inspect(
    source: &dyn FileSource,
    item: &Pending,
    follow: bool,
) -> Result<Option<Found>, HashFilesError> {
    if item.mangled_name {
        if follow {
            return Ok(None);
        }
        return Err(HashFilesError::InvalidFileName {
            path: PathBuf::from(&item.path),
        });
    }
    let kind = match item.entry_type {
        Some(kind) if !(follow && kind == EntryKind::Symlink) => kind,
        _ => {
            let found = if follow {
                source.stat(&item.path)
            } else {
                source.lstat(&item.path)
            };
            match found {
                Ok(kind) => kind,
                Err(error) if follow && error.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(error) => return Err(io_error("inspect", &item.path, error)),
            }
        }
    };
    Ok(Some(match kind {
        EntryKind::Directory => Found::Directory,
        EntryKind::File => Found::RegularFile,
        EntryKind::Symlink => Found::Symlink,
        EntryKind::Special(kind) => Found::Special(kind),
    }))
}

/// The directory's real path for cycle detection. A plain directory listed by a directory
/// whose real path is known needs no syscall.
fn real_path_of(source: &dyn FileSource, item: &Pending) -> Result<Rc<str>, HashFilesError> {
    let listed_as_directory = item.entry_type == Some(EntryKind::Directory);
    if let (true, Some(parent)) = (listed_as_directory, &item.parent_real_path) {
        let name = item.path.rsplit('/').next().unwrap_or_default();
        let separator = if parent.ends_with('/') { "" } else { "/" };
        return Ok(Rc::from(format!("{parent}{separator}{name}")));
    }
    match source.real_path(&item.path) {
        Ok(real) => Ok(Rc::from(real)),
        Err(error) if error.kind() == io::ErrorKind::InvalidData => {
            Err(HashFilesError::InvalidFileName {
                path: PathBuf::from(&item.path),
            })
        }
        Err(error) => Err(io_error("resolve", &item.path, error)),
    }
}

fn push_children(
    source: &dyn FileSource,
    item: &Pending,
    real_path: Option<Rc<str>>,
    stack: &mut Vec<Pending>,
) -> Result<(), HashFilesError> {
    let mut children = source
        .read_dir(&item.path)
        .map_err(|error| io_error("read the directory", &item.path, error))?;
    // Raw bytes order: libuv's `strcmp`.
    children.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    let separator = if item.path.ends_with('/') { "" } else { "/" };
    for child in children.into_iter().rev() {
        let entry_type = child.kind;
        let (name, mangled_name) = match String::from_utf8(child.name) {
            Ok(name) => (name, false),
            Err(raw) => (String::from_utf8_lossy(raw.as_bytes()).into_owned(), true),
        };
        stack.push(Pending {
            path: format!("{}{separator}{name}", item.path),
            level: item.level + 1,
            entry_type,
            mangled_name,
            parent_real_path: real_path.clone(),
        });
    }
    Ok(())
}

fn io_error(action: &'static str, path: &str, source: io::Error) -> HashFilesError {
    HashFilesError::Io {
        action,
        path: PathBuf::from(path),
        source,
    }
}
