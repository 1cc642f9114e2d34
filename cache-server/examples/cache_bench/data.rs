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
