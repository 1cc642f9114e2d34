//! The benchmark's data: the generated tree and file, and a digest that proves a restore
//! reproduced them.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Deterministic data that zstd -3 compresses about 2:1: half of every 64 bytes is noise.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let text = b"fn main() { let value = compute(input, options); println!(\"{value}\"); }\n";
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        let at = (x % 40) as usize;
        out.extend_from_slice(&text[at..at + 32]);
    }
    out.truncate(len);
    out
}

/// 50,000 files of 0-8 KiB in 5,000 directories plus 4 files of 64 MiB (about 450 MiB).
pub fn gen_tree(dir: &Path) -> std::io::Result<()> {
    for i in 0..50_000u64 {
        let parent = dir.join(format!("d{:03}/s{:02}", i % 250, (i / 250) % 20));
        std::fs::create_dir_all(&parent)?;
        let path = parent.join(format!("f{i:05}.dat"));
        std::fs::write(&path, content(i, ((i * 7919) % 8193) as usize))?;
    }
    for i in 0..4u64 {
        std::fs::write(
            dir.join(format!("big{i}.bin")),
            content(100_000 + i, 64 << 20),
        )?;
    }
    Ok(())
}

pub fn gen_file(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("one.bin"), content(7, 256 << 20))
}

/// Every regular file under `dir`, sorted by relative path.
pub fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// blake3 over (relative path, executable bit, size, content) of every file, in path order:
/// equal digests mean the restore reproduced the tree byte for byte.
pub fn tree_digest(dir: &Path) -> std::io::Result<String> {
    let mut all = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    for path in files(dir)? {
        let rel = path.strip_prefix(dir).unwrap_or(&path);
        let meta = std::fs::metadata(&path)?;
        all.update(rel.as_os_str().as_encoded_bytes());
        all.update(&[0, u8::from(meta.permissions().mode() & 0o111 != 0)]);
        all.update(&meta.len().to_le_bytes());
        let mut f = std::fs::File::open(&path)?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            all.update(&buf[..n]);
        }
    }
    Ok(all.finalize().to_hex().to_string())
}

/// The machine's floor for a restore of `src`: the same directories and files (content, mode,
/// mtime) created under `out` from memory, the fastest way we know: directories by `threads`
/// threads each taking one parent's children at a time, files by `threads` threads each taking
/// about 1 MiB of files in path order and creating them by name inside their open parent
/// directory. No cache, no decoding, no network: what creating the tree costs on this
/// filesystem. Returns the seconds it took.
pub fn create_floor(src: &Path, out: &Path, threads: usize) -> std::io::Result<f64> {
    struct Item {
        dir: PathBuf,
        name: std::ffi::CString,
        data: Vec<u8>,
        mode: u32,
        mtime: std::time::SystemTime,
    }
    let c_name = |p: &Path| {
        std::ffi::CString::new(p.file_name().unwrap_or_default().as_encoded_bytes())
            .map_err(std::io::Error::other)
    };
    let mut items = Vec::new();
    for path in files(src)? {
        let meta = std::fs::metadata(&path)?;
        let rel = path.strip_prefix(src).unwrap_or(&path);
        items.push(Item {
            dir: out.join(rel.parent().unwrap_or(Path::new(""))),
            name: c_name(&path)?,
            data: std::fs::read(&path)?,
            mode: meta.permissions().mode(),
            mtime: meta.modified()?,
        });
    }
    // Directories below `out`, grouped by parent, shallowest first.
    let mut dirs: Vec<PathBuf> = items
        .iter()
        .flat_map(|i| i.dir.ancestors().map(Path::to_path_buf))
        .filter(|d| d.starts_with(out) && d != out)
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs.sort_by(|a, b| {
        (a.components().count(), a.parent()).cmp(&(b.components().count(), b.parent()))
    });
    let mut batches: Vec<std::ops::Range<usize>> = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        bytes += item.data.len();
        if bytes >= 1 << 20 {
            batches.push(start..i + 1);
            (start, bytes) = (i + 1, 0);
        }
    }
    batches.push(start..items.len());
    let began = std::time::Instant::now();
    std::fs::create_dir_all(out)?;
    let mut rest = dirs.as_slice();
    while let Some(first) = rest.first() {
        let depth = first.components().count();
        let (level, later) =
            rest.split_at(rest.partition_point(|d| d.components().count() == depth));
        rest = later;
        let groups: Vec<&[PathBuf]> = level.chunk_by(|a, b| a.parent() == b.parent()).collect();
        parallel(threads, groups.len(), |g| {
            let group = groups[g];
            let parent = open_dir(group[0].parent().unwrap_or(out))?;
            for d in group {
                // SAFETY: an open directory and a NUL-terminated name, both alive for the call.
                if unsafe { libc::mkdirat(parent.as_raw_fd(), c_name(d)?.as_ptr(), 0o755) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })?;
    }
    parallel(threads, batches.len(), |b| {
        let mut open: Option<(&Path, std::fs::File)> = None;
        for item in &items[batches[b].clone()] {
            let dir = match open.take() {
                Some((path, dir)) if path == item.dir => (path, dir),
                _ => (item.dir.as_path(), open_dir(&item.dir)?),
            };
            // SAFETY: as above; the descriptor returned is owned by the File made from it.
            let fd = unsafe {
                libc::openat(
                    dir.1.as_raw_fd(),
                    item.name.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                    item.mode as libc::c_uint,
                )
            };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: `fd` was just returned by openat and nothing else owns it.
            let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
            std::io::Write::write_all(&mut f, &item.data)?;
            f.set_modified(item.mtime)?;
            open = Some(dir);
        }
        Ok(())
    })?;
    Ok(began.elapsed().as_secs_f64())
}

use std::os::fd::{AsRawFd, FromRawFd};

fn open_dir(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(path)
}

/// Runs `work(0..n)` on `threads` threads, each taking the next index.
fn parallel(
    threads: usize,
    n: usize,
    work: impl Fn(usize) -> std::io::Result<()> + Sync,
) -> std::io::Result<()> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(n).max(1))
            .map(|_| {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return Ok(());
                    }
                    work(i)?;
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .map_err(|_| std::io::Error::other("a floor thread panicked"))?
        })
    })
}
