//! One fuzz case for the restore of stock `actions/cache` archives (the confined writer every
//! restore uses), shared by the cargo-fuzz target and by cache-server/tests/fuzz_corpus.rs so
//! the corpus is replayed through the same code.
//!
//! An input is one tar archive, or two (`KLN2`, the first one's length as 4 little-endian
//! bytes, the first, the second) extracted one after the other into the same workspace, as two
//! restores of a job are: chains of symlinks made by the first and used by the second count.
//! Any archive may be refused; what must never happen is a panic, anything created outside the
//! workspace, or a symlink left in it that resolves outside it.

use std::path::Path;

/// The archives an input holds.
pub fn archives(data: &[u8]) -> Vec<&[u8]> {
    if let Some(rest) = data.strip_prefix(b"KLN2") {
        if rest.len() >= 4 {
            let (len, rest) = rest.split_at(4);
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let cut = len.min(rest.len());
            return vec![&rest[..cut], &rest[cut..]];
        }
    }
    vec![data]
}

/// Extracts the input's archives into `scratch/work/ws` and checks what they left. Returns
/// each extraction's result, for replays that expect a refusal.
pub fn run(data: &[u8]) -> Vec<kiln_cache::Result<kiln_cache::unpack::UnpackStats>> {
    let scratch = tempfile::tempdir().expect("scratch directory");
    let ws = scratch.path().join("work/ws");
    let results = archives(data)
        .into_iter()
        .map(|archive| kiln_cache::unpack::unpack_tar(archive, &ws))
        .collect();
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        names(scratch.path()),
        ["work"],
        "created next to the workspace"
    );
    assert_eq!(
        names(&scratch.path().join("work")),
        ["ws"],
        "created outside the workspace"
    );
    let root = ws.canonicalize().expect("the workspace exists");
    links_resolve_inside(&ws, &root);
    results
}

/// Every symlink below `dir` either resolves inside `root` or does not resolve at all.
fn links_resolve_inside(dir: &Path, root: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("entry").path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            if let Ok(resolved) = path.canonicalize() {
                assert!(
                    resolved.starts_with(root),
                    "{} resolves to {}, outside the workspace",
                    path.display(),
                    resolved.display()
                );
            }
        } else if meta.is_dir() {
            links_resolve_inside(&path, root);
        }
    }
}
