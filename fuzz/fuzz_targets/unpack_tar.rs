//! Arbitrary bytes as one or two stock `actions/cache` archives restored into one workspace:
//! nothing may be created outside it, nor a symlink left that resolves outside it.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../common/unpack_tar.rs"]
mod unpack_tar;

fuzz_target!(|data: &[u8]| {
    unpack_tar::run(data);
});
