#![no_main]
//! Feeds arbitrary bytes to the safe tar extractor: it must never panic, and never create
//! anything outside its target directory.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t");
    let _ = kiln_cache::unpack::unpack_tar(data, &target);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name();
        assert_eq!(name, "t", "something was created outside the target: {name:?}");
    }
});
