//! hashFiles() on a generated tree of 2,000 small files (0-8 KiB) in 40 directories: the
//! walk plus matching (`**/*.json` with a negation, little to hash) and the walk plus
//! hashing (`**`). The full-size comparison with sha256sum is benches/hashfiles-vs-sha256sum.sh.

use criterion::{criterion_group, criterion_main, Criterion};
use kiln_workflow::hashfiles::{hash_files_with, HashFilesOptions};
use std::fs;
use std::hint::black_box;
use std::path::Path;

/// A fixed xorshift stream, so every run hashes the same bytes.
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fill(&mut self, length: usize) -> Vec<u8> {
        (0..length).map(|_| self.next() as u8).collect()
    }
}

fn generate(root: &Path) {
    let mut bytes = Bytes(0x9e37_79b9_7f4a_7c15);
    for top in 0..8 {
        for sub in 0..5 {
            let directory = root.join(format!("pkg{top}")).join(format!("mod{sub}"));
            fs::create_dir_all(&directory).expect("create the bench tree");
            for index in 0..50 {
                let extension = if index % 5 == 0 { "json" } else { "rs" };
                let length = (bytes.next() % 8193) as usize;
                fs::write(
                    directory.join(format!("file{index:02}.{extension}")),
                    bytes.fill(length),
                )
                .expect("write the bench tree");
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let tree = tempfile::tempdir().expect("temp dir");
    generate(tree.path());
    let options = HashFilesOptions::default();
    let cases: [(&str, Vec<String>); 2] = [
        ("walk_and_hash_all_2000_files", vec!["**".to_string()]),
        (
            "match_json_without_one_package",
            vec!["**/*.json".to_string(), "!pkg3/**".to_string()],
        ),
    ];
    for (name, patterns) in &cases {
        c.bench_function(name, |b| {
            b.iter(|| {
                hash_files_with(black_box(tree.path()), black_box(patterns), &options)
                    .expect("hashes")
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
