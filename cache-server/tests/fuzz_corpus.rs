//! Replays the committed fuzz corpus for the tar extractor (cache-server/fuzz): no input may
//! panic or create anything outside the target, and the hand-made hostile seeds are refused.

use kiln_cache::unpack::unpack_tar;
use kiln_cache::CacheError;
use std::path::Path;

#[test]
fn corpus_replays_safely() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/unpack_tar");
    let hostile = [
        "dotdot",
        "absolute",
        "symlink_escape",
        "through_link",
        "hardlink_out",
        "device",
        "fifo",
    ];
    let mut count = 0;
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let result = unpack_tar(&data[..], &dir.path().join("t"));
        let outside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "t")
            .collect();
        assert!(
            outside.is_empty(),
            "{}: created {outside:?} outside the target",
            path.display()
        );
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if hostile.contains(&name.as_str()) {
            assert!(
                matches!(result, Err(CacheError::UnsafeArchiveEntry { .. })),
                "{name}: {result:?}"
            );
        }
        if name == "benign" {
            assert_eq!(std::fs::read(dir.path().join("t/a/l")).unwrap(), b"hello");
        }
        count += 1;
    }
    assert!(count >= 9, "the corpus has only {count} inputs");
}
