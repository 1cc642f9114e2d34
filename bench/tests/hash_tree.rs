//! hashFiles() over a commit's tree read from git objects gives exactly what it gives on a
//! checkout of that commit (the same walk, order and digest code, over another file source).

mod support;

use kiln_bench::git::Repo;
use kiln_bench::tree::{CommitTree, Objects};
use kiln_workflow::hashfiles::{self, HashFilesOptions};
use std::sync::Arc;
use support::TestRepo;

const PATTERNS: &[&[&str]] = &[
    &["**/Cargo.lock"],
    &["**/*.txt"],
    &["src"],
    &["*"],
    &["**/*.json", "!**/node_modules/**"],
    &["b/**", "src/**"],
    &["src/**", "b/**"],
    &["src/a?.txt"],
    &[".hid/*"],
    &["linked/**"],
    &["link.txt"],
    &["--follow-symbolic-links", "**"],
    &["nomatch*"],
    &["**/{a,b}.txt"],
    &["../x"],
    &["--bogus", "x"],
];

#[test]
fn tree_and_checkout_agree_on_every_commit_and_pattern() {
    let mut repo = TestRepo::new();
    for (file, text) in [
        ("a.txt", "A"),
        ("B.txt", "Bu"),
        ("b.txt", "b"),
        ("b/c.txt", "c"),
        (".hid/h.txt", "h"),
        ("package-lock.json", "pl"),
        ("node_modules/x/package-lock.json", "nm"),
        ("src/x.json", "x"),
        ("src/sub/y.json", "y"),
        ("src/a10.txt", "10"),
        ("src/a9.txt", "9"),
        ("src/_u.txt", "_"),
        ("src/Z.txt", "Z"),
        ("Cargo.lock", "1"),
    ] {
        repo.write(file, text);
    }
    repo.symlink("a.txt", "link.txt");
    repo.symlink("src", "linked");
    let first = repo.commit("first");
    repo.write("Cargo.lock", "2");
    repo.write("crates/x/Cargo.lock", "x");
    std::fs::remove_file(repo.path.join("b/c.txt")).unwrap();
    repo.write("src/sub/z.txt", "z");
    let second = repo.commit("second");
    std::fs::remove_file(repo.path.join("a.txt")).unwrap(); // link.txt is broken now
    let third = repo.commit("third");

    let git = Arc::new(Repo::open(&repo.path).unwrap());
    let objects = Objects::new(Arc::clone(&git));
    let options = HashFilesOptions::default();
    let mut compared = 0;
    for (i, rev) in [first, second, third].iter().enumerate() {
        let checkout = repo.path.parent().unwrap().join(format!("checkout-{i}"));
        repo.export(rev, &checkout);
        let checkout = std::fs::canonicalize(&checkout).unwrap();
        let commit = &git.commits(&["-n1", rev]).unwrap()[0];
        let cwd = checkout.to_str().unwrap();
        let tree = CommitTree::new(&objects, &commit.tree, cwd);
        for patterns in PATTERNS {
            let args: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
            let on_disk = hashfiles::hash_files_with(&checkout, &args, &options);
            let from_git = hashfiles::hash_files_in(&tree, cwd, &args, &options);
            match (&on_disk, &from_git) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "commit {i}, patterns {patterns:?}"),
                (Err(a), Err(b)) => assert_eq!(
                    std::mem::discriminant(a),
                    std::mem::discriminant(b),
                    "commit {i}, patterns {patterns:?}: {a} / {b}"
                ),
                _ => panic!("commit {i}, patterns {patterns:?}: {on_disk:?} vs {from_git:?}"),
            }
            let listed_disk = hashfiles::matched_files(&checkout, &args, &options).ok();
            let listed_git = hashfiles::matched_files_in(&tree, cwd, &args, &options).ok();
            assert_eq!(
                listed_disk.map(|l| l
                    .into_iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()),
                listed_git,
                "commit {i}, patterns {patterns:?}"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 3 * PATTERNS.len());
    // The research notes' vector for `src` over the same files (GitHub's runner computed it).
    let commit = &git.commits(&["-n1", "HEAD~2"]).unwrap()[0];
    let tree = CommitTree::new(&objects, &commit.tree, "/w");
    let listed = hashfiles::matched_files_in(&tree, "/w", &["src".to_string()], &options).unwrap();
    assert_eq!(
        listed,
        [
            "src/Z.txt",
            "src/_u.txt",
            "src/a10.txt",
            "src/a9.txt",
            "src/sub/y.json",
            "src/x.json"
        ]
        .map(|f| format!("/w/{f}"))
    );
    assert_eq!(
        hashfiles::hash_files_in(&tree, "/w", &["src".to_string()], &options).unwrap(),
        "caeea1b9a160d24e5e5591dfd9c4993bec3a9aab02e35e0abc29b007baee7e1e"
    );
}

#[test]
fn a_link_out_of_the_repository_is_an_error_that_says_so() {
    let mut repo = TestRepo::new();
    repo.symlink("/etc/hostname", "host.txt");
    repo.commit("link out");
    let git = Arc::new(Repo::open(&repo.path).unwrap());
    let objects = Objects::new(Arc::clone(&git));
    let commit = &git.commits(&["-n1", "HEAD"]).unwrap()[0];
    let tree = CommitTree::new(&objects, &commit.tree, "/w");
    let err = hashfiles::hash_files_in(&tree, "/w", &["*.txt".to_string()], &Default::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("leads out of the repository"),
        "{err}"
    );
}
