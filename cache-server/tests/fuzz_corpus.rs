//! Replays the committed fuzz corpus of the archive restore (fuzz/corpus/unpack_tar) through
//! the fuzz target's own code: no input may panic, create anything outside the workspace or
//! leave a symlink resolving outside it, and the hand-made hostile seeds are refused (each
//! archive of a two-archive seed as expected).

use kiln_cache::CacheError;
use std::path::Path;

#[path = "../../fuzz/common/unpack_tar.rs"]
mod unpack_tar;

fn refused<T: std::fmt::Debug>(result: &kiln_cache::Result<T>) -> bool {
    matches!(
        result,
        Err(CacheError::UnsafeArchiveEntry { .. } | CacheError::UnsafePath { .. })
    )
}

#[test]
fn corpus_replays_safely() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/unpack_tar");
    // Seed name -> whether each of its archives must be refused.
    let expected: &[(&str, &[bool])] = &[
        ("dotdot", &[true]),
        ("absolute", &[true]),
        ("symlink_escape", &[true]),
        ("through_link", &[true]),
        ("hardlink_out", &[true]),
        ("device", &[true]),
        ("fifo", &[true]),
        ("benign", &[false]),
        ("chain_climb", &[true]),
        ("chain_deep", &[true]),
        ("chain_inside_write", &[true]),
        ("absolute_link", &[true]),
        ("two_chain", &[true, false]),
        ("two_inside_link", &[false, true]),
        ("two_link_through_link", &[false, true]),
        ("two_benign", &[false, false]),
    ];
    let mut count = 0;
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let results = unpack_tar::run(&data);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if let Some((_, refusals)) = expected.iter().find(|(n, _)| *n == name) {
            let got: Vec<bool> = results.iter().map(refused).collect();
            assert_eq!(&got, refusals, "{name}: {results:?}");
            seen.push(name);
        }
        count += 1;
    }
    assert_eq!(seen.len(), expected.len(), "seeds missing: only {seen:?}");
    assert!(count >= 20, "the corpus has only {count} inputs");
}
