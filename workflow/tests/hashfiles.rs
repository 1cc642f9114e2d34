//! hashFiles() against the vectors GitHub's runner produced (cache-protocol research §6.4),
//! plus the glob, ordering, symlink and error rules behind them.

use kiln_workflow::hashfiles::{
    hash_files, hash_files_with, matched_files, HashFilesError, HashFilesOptions,
};
use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use tempfile::TempDir;

/// The §6.4 tree; no file has a trailing newline.
const TREE: &[(&str, &str)] = &[
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
];

const ALL_FILES: &[&str] = &[
    ".hid/h.txt",
    "B.txt",
    "a.txt",
    "b/c.txt",
    "b.txt",
    "node_modules/x/package-lock.json",
    "package-lock.json",
    "src/Z.txt",
    "src/_u.txt",
    "src/a10.txt",
    "src/a9.txt",
    "src/sub/y.json",
    "src/x.json",
];
const ALL_FILES_DIGEST: &str = "cdc40ffa58bb40e4c172cab1bb1b3e6bc8a43ee687c6ac2f3a5f3618353b20cf";

fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let path = root.join(path);
        fs::create_dir_all(path.parent().expect("a file has a parent")).expect("create dirs");
        fs::write(path, content).expect("write file");
    }
}

fn vector_tree() -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write_tree(dir.path(), TREE);
    dir
}

fn args(patterns: &[&str]) -> Vec<String> {
    patterns.iter().map(|p| p.to_string()).collect()
}

/// The matched files relative to the workspace's real path.
fn listed(workspace: &Path, patterns: &[&str], follow: bool) -> Vec<String> {
    let options = HashFilesOptions {
        follow_symbolic_links: follow,
        threads: 2,
    };
    let real = fs::canonicalize(workspace).expect("workspace exists");
    matched_files(workspace, &args(patterns), &options)
        .expect("hashFiles succeeds")
        .iter()
        .map(|path| {
            path.strip_prefix(&real)
                .expect("under the workspace")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn digest(workspace: &Path, patterns: &[&str]) -> String {
    hash_files(workspace, &args(patterns)).expect("hashFiles succeeds")
}

/// The digest recomputed from the contents, independently of the library's hashing.
fn expected_digest(contents: &[&[u8]]) -> String {
    if contents.is_empty() {
        return String::new();
    }
    let mut combined = Sha256::new();
    for content in contents {
        combined.update(Sha256::digest(content));
    }
    combined
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn github_vectors_order_and_digest() {
    let tree = vector_tree();
    let cases: &[(&[&str], &[&str], &str)] = &[
        (
            &["a.txt"],
            &["a.txt"],
            "1cd6ef71e6e0ff46ad2609d403dc3fee244417089aa4461245a4e4fe23a55e42",
        ),
        (
            &["**/*.txt"],
            &[
                ".hid/h.txt",
                "B.txt",
                "a.txt",
                "b/c.txt",
                "b.txt",
                "src/Z.txt",
                "src/_u.txt",
                "src/a10.txt",
                "src/a9.txt",
            ],
            "656150b8798487d77464956d32aa42ead996e8589c46d748cf96844d12c0f36c",
        ),
        (
            &["src"],
            &[
                "src/Z.txt",
                "src/_u.txt",
                "src/a10.txt",
                "src/a9.txt",
                "src/sub/y.json",
                "src/x.json",
            ],
            "caeea1b9a160d24e5e5591dfd9c4993bec3a9aab02e35e0abc29b007baee7e1e",
        ),
        (
            &["**/*.json"],
            &[
                "node_modules/x/package-lock.json",
                "package-lock.json",
                "src/sub/y.json",
                "src/x.json",
            ],
            "fadb23c74f1df4fd0c26a41c724ae787784d26be03830c7d0583f45d299a4f43",
        ),
        (
            &["**/*.json", "!**/node_modules/**"],
            &["package-lock.json", "src/sub/y.json", "src/x.json"],
            "2141c620e55142706f430f5e7860cf4dc1aa3f95fee645e8c68ee7a42cacf43a",
        ),
        (
            &["src/**", "b/**"],
            &[
                "src/Z.txt",
                "src/_u.txt",
                "src/a10.txt",
                "src/a9.txt",
                "src/sub/y.json",
                "src/x.json",
                "b/c.txt",
            ],
            "0b46456cc9c087bff186f20e6f60dc084fdee2049fb337a89fe15461c689b026",
        ),
        (
            &["b/**", "src/**"],
            &[
                "b/c.txt",
                "src/Z.txt",
                "src/_u.txt",
                "src/a10.txt",
                "src/a9.txt",
                "src/sub/y.json",
                "src/x.json",
            ],
            "f9d8707cf21083be6056c620e6d42cb8c004804ea3e19b5d186577ccaaed99c5",
        ),
        (&["*"], ALL_FILES, ALL_FILES_DIGEST),
        (
            &["src/a?.txt"],
            &["src/a9.txt"],
            "9823a2989686ae381368f8f461f09a146f65b9a60c33592ca9613bcebe9abce0",
        ),
        (
            &[".hid/*"],
            &[".hid/h.txt"],
            "0482c58b0485e24065d49f615d61d3df8584e1c2517e810ddf161f7876b4b923",
        ),
        (&["nomatch*"], &[], ""),
        (&["**/{a,b}.txt"], &[], ""),
        (&["*.TXT"], &[], ""),
    ];
    let contents: std::collections::HashMap<&str, &str> = TREE.iter().copied().collect();
    for (patterns, files, hash) in cases {
        assert_eq!(
            listed(tree.path(), patterns, false),
            *files,
            "order for {patterns:?}"
        );
        assert_eq!(
            digest(tree.path(), patterns),
            *hash,
            "digest for {patterns:?}"
        );
        let bytes: Vec<&[u8]> = files.iter().map(|f| contents[f].as_bytes()).collect();
        assert_eq!(
            expected_digest(&bytes),
            *hash,
            "independent digest for {patterns:?}"
        );
    }
}

#[test]
fn dot_and_globstar_equal_star() {
    let tree = vector_tree();
    for patterns in [&["."][..], &["**"], &["./"], &["./**"]] {
        assert_eq!(
            listed(tree.path(), patterns, false),
            ALL_FILES,
            "{patterns:?}"
        );
        assert_eq!(
            digest(tree.path(), patterns),
            ALL_FILES_DIGEST,
            "{patterns:?}"
        );
    }
}

#[test]
fn digest_is_independent_of_thread_count() {
    let tree = vector_tree();
    for threads in [0, 1, 2, 7, 64] {
        let options = HashFilesOptions {
            follow_symbolic_links: false,
            threads,
        };
        assert_eq!(
            hash_files_with(tree.path(), &args(&["**"]), &options).expect("hashes"),
            ALL_FILES_DIGEST
        );
    }
}

#[test]
fn parent_relative_patterns_fail() {
    let tree = vector_tree();
    for bad in ["../x", "src/../a.txt", "src/./x.json", "!"] {
        let error = hash_files(tree.path(), &args(&[bad])).expect_err(bad);
        assert!(
            matches!(&error, HashFilesError::InvalidPattern { pattern, .. } if pattern == bad),
            "{bad}: {error}"
        );
    }
    let message = hash_files(tree.path(), &args(&["../x"]))
        .expect_err("fails")
        .to_string();
    assert!(
        message.contains("Relative pathing '.' and '..' is not allowed"),
        "{message}"
    );
    // A leading `./` is fine.
    assert_eq!(
        digest(tree.path(), &["./a.txt"]),
        "1cd6ef71e6e0ff46ad2609d403dc3fee244417089aa4461245a4e4fe23a55e42"
    );
}

fn symlink_tree() -> TempDir {
    let tree = vector_tree();
    symlink("src", tree.path().join("linkdir")).expect("dir link");
    symlink("a.txt", tree.path().join("linkfile")).expect("file link");
    tree
}

#[test]
fn broken_symlink_fails_without_follow_and_is_skipped_with_it() {
    let tree = vector_tree();
    symlink("missing.txt", tree.path().join("dangling")).expect("broken link");
    let error = hash_files(tree.path(), &args(&["*"])).expect_err("broken link fails");
    match &error {
        HashFilesError::BrokenSymlink { path } => {
            assert!(path.ends_with("dangling"), "{}", path.display())
        }
        other => panic!("expected BrokenSymlink, got {other}"),
    }
    assert!(error.to_string().contains("--follow-symbolic-links"));
    // Not matched: no error.
    assert_eq!(
        digest(tree.path(), &["a.txt"]),
        "1cd6ef71e6e0ff46ad2609d403dc3fee244417089aa4461245a4e4fe23a55e42"
    );
    // Excluded by a later negation: no error either.
    assert_eq!(digest(tree.path(), &["*", "!dangling"]), ALL_FILES_DIGEST);
    let follow = args(&["--follow-symbolic-links", "*"]);
    assert_eq!(
        hash_files(tree.path(), &follow).expect("skips it"),
        ALL_FILES_DIGEST
    );
}

#[test]
fn symlinked_directory_descended_only_when_following() {
    let tree = symlink_tree();
    // Without following: `linkdir` is not descended, `linkfile` is read through the link.
    let plain = listed(tree.path(), &["**"], false);
    let mut expected: Vec<&str> = ALL_FILES.to_vec();
    expected.insert(5, "linkfile");
    assert_eq!(plain, expected);
    assert_eq!(listed(tree.path(), &["**/x.json"], false), ["src/x.json"]);
    // Matching the directory link itself hashes nothing (it is a directory once followed).
    assert_eq!(
        listed(tree.path(), &["linkdir"], false),
        Vec::<String>::new()
    );
    assert_eq!(digest(tree.path(), &["linkdir"]), "");

    // Following: the same file is reached twice, through both paths.
    assert_eq!(
        listed(tree.path(), &["**/x.json"], true),
        ["linkdir/x.json", "src/x.json"]
    );
    let followed = hash_files(
        tree.path(),
        &args(&["--follow-symbolic-links", "**/x.json"]),
    )
    .expect("hashes");
    assert_eq!(followed, expected_digest(&[b"x", b"x"]));
    assert_eq!(listed(tree.path(), &["linkdir"], true).len(), 6);
}

#[test]
fn symlink_cycles_end_when_following() {
    let tree = vector_tree();
    symlink("..", tree.path().join("b/up")).expect("cycle link");
    let files = listed(tree.path(), &["b/**"], true);
    // `b/up` resolves to the workspace, which is not on the chain of directories being
    // walked, so it is descended; `b/up/b` resolves to `b`, which is, so it is dropped.
    let mut expected = vec!["b/c.txt".to_string()];
    expected.extend(
        ALL_FILES
            .iter()
            .filter(|f| !f.starts_with("b/"))
            .map(|f| format!("b/up/{f}")),
    );
    assert_eq!(files, expected);
}

#[test]
fn absolute_paths_outside_the_workspace_are_ignored() {
    let tree = vector_tree();
    let elsewhere = tempfile::tempdir().expect("temp dir");
    fs::write(elsewhere.path().join("outside.txt"), "o").expect("write");
    let outside = elsewhere
        .path()
        .join("outside.txt")
        .to_string_lossy()
        .into_owned();
    assert_eq!(digest(tree.path(), &[&outside]), "");
    assert_eq!(
        digest(tree.path(), &[&outside, "a.txt"]),
        "1cd6ef71e6e0ff46ad2609d403dc3fee244417089aa4461245a4e4fe23a55e42"
    );
    // An absolute pattern inside the workspace counts.
    let inside = fs::canonicalize(tree.path())
        .expect("real")
        .join("a.txt")
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        digest(tree.path(), &[&inside]),
        "1cd6ef71e6e0ff46ad2609d403dc3fee244417089aa4461245a4e4fe23a55e42"
    );
}

#[test]
fn workspace_spelled_through_a_symlink_is_resolved() {
    let tree = vector_tree();
    let links = tempfile::tempdir().expect("temp dir");
    let alias = links.path().join("ws");
    symlink(tree.path(), &alias).expect("workspace link");
    // Relative patterns are rooted at the real path, as process.cwd() reports it.
    assert_eq!(digest(&alias, &["*"]), ALL_FILES_DIGEST);
    // The same files spelled through the alias are "outside" the real workspace.
    let through_alias = alias.join("a.txt").to_string_lossy().into_owned();
    assert_eq!(digest(&alias, &[&through_alias]), "");
}

#[test]
fn comment_and_blank_lines_are_skipped() {
    let tree = vector_tree();
    let a_txt = "1cd6ef71e6e0ff46ad2609d403dc3fee244417089aa4461245a4e4fe23a55e42";
    assert_eq!(
        digest(tree.path(), &["# a comment\n\n   \n  a.txt  \n#src"]),
        a_txt
    );
    assert_eq!(digest(tree.path(), &["", "#**", "a.txt"]), a_txt);
    assert_eq!(digest(tree.path(), &["#*"]), "");
}

#[test]
fn negation_applies_in_pattern_order() {
    let tree = vector_tree();
    // A later positive pattern re-adds what an earlier negation removed.
    assert_eq!(listed(tree.path(), &["!src/**", "**"], false), ALL_FILES);
    assert_eq!(digest(tree.path(), &["!src/**", "**"]), ALL_FILES_DIGEST);
    let without_src: Vec<&str> = ALL_FILES
        .iter()
        .copied()
        .filter(|f| !f.starts_with("src/"))
        .collect();
    assert_eq!(listed(tree.path(), &["**", "!src/**"], false), without_src);
    // `!!` negates twice; spaces after `!` are trimmed.
    assert_eq!(
        listed(
            tree.path(),
            &["**/*.json", "! !src/x.json", "!  **/node_modules"],
            false
        ),
        ["package-lock.json", "src/sub/y.json", "src/x.json"]
    );
}

#[test]
fn nested_roots_walk_once_in_global_order() {
    let tree = vector_tree();
    let forward = listed(tree.path(), &["**/x.json", "**/y.json"], false);
    let backward = listed(tree.path(), &["**/y.json", "**/x.json"], false);
    assert_eq!(forward, ["src/sub/y.json", "src/x.json"]);
    assert_eq!(backward, forward);
    assert_eq!(
        digest(tree.path(), &["**/x.json", "**/y.json"]),
        digest(tree.path(), &["**/y.json", "**/x.json"])
    );
    // A root under another root is dropped: `src/sub` is walked as part of `src`.
    assert_eq!(
        listed(tree.path(), &["src/sub/*", "src/*.json"], false),
        ["src/sub/y.json", "src/x.json"]
    );
}

#[test]
fn braces_are_literal() {
    let tree = vector_tree();
    fs::write(tree.path().join("{a,b}.txt"), "brace").expect("write");
    assert_eq!(listed(tree.path(), &["{a,b}.txt"], false), ["{a,b}.txt"]);
    assert_eq!(listed(tree.path(), &["**/{a,b}.txt"], false), ["{a,b}.txt"]);
    assert_eq!(
        digest(tree.path(), &["{a,b}.txt"]),
        expected_digest(&[b"brace"])
    );
}

#[test]
fn dotfiles_are_matched_by_wildcards() {
    let tree = vector_tree();
    fs::write(tree.path().join(".env"), "e").expect("write");
    assert_eq!(listed(tree.path(), &["**/h.txt"], false), [".hid/h.txt"]);
    assert_eq!(listed(tree.path(), &["*/h.txt"], false), [".hid/h.txt"]);
    assert_eq!(listed(tree.path(), &[".e*"], false), [".env"]);
    assert_eq!(listed(tree.path(), &["?env"], false), [".env"]);
}

#[test]
fn trailing_slash_matches_directories_and_their_files() {
    let tree = vector_tree();
    assert_eq!(
        listed(tree.path(), &["src/sub/"], false),
        ["src/sub/y.json"]
    );
    assert_eq!(
        listed(tree.path(), &["*/"], false),
        [
            ".hid/h.txt",
            "b/c.txt",
            "node_modules/x/package-lock.json",
            "src/Z.txt",
            "src/_u.txt",
            "src/a10.txt",
            "src/a9.txt",
            "src/sub/y.json",
            "src/x.json"
        ]
    );
    // A file named with a trailing slash is not a directory: nothing.
    assert_eq!(digest(tree.path(), &["a.txt/"]), "");
}

#[test]
fn follow_option_is_case_insensitive_and_only_first() {
    let tree = symlink_tree();
    let upper = hash_files(
        tree.path(),
        &args(&["--FOLLOW-Symbolic-LINKS", "**/x.json"]),
    )
    .expect("accepted");
    assert_eq!(upper, expected_digest(&[b"x", b"x"]));
    // Later arguments are patterns, even when they look like options.
    let later = hash_files(
        tree.path(),
        &args(&["**/x.json", "--follow-symbolic-links"]),
    )
    .expect("a pattern");
    assert_eq!(later, expected_digest(&[b"x"]));
}

#[test]
fn unknown_option_fails() {
    let tree = vector_tree();
    let error = hash_files(tree.path(), &args(&["--bogus", "a.txt"])).expect_err("invalid option");
    assert!(
        matches!(&error, HashFilesError::InvalidGlobOption { option } if option == "--bogus"),
        "{error}"
    );
    assert!(error.to_string().contains("--follow-symbolic-links"));
}

#[test]
fn classes_escapes_and_strcmp_order() {
    let tree = vector_tree();
    assert_eq!(
        listed(tree.path(), &["src/a[0-9]*.txt"], false),
        ["src/a10.txt", "src/a9.txt"]
    );
    // `sub` matches too, and its implicit `/**` sibling takes its files.
    assert_eq!(
        listed(tree.path(), &["src/[!a]*"], false),
        ["src/Z.txt", "src/_u.txt", "src/sub/y.json", "src/x.json"]
    );
    assert_eq!(
        listed(tree.path(), &["[ab].txt"], false),
        ["a.txt", "b.txt"]
    );
    fs::write(tree.path().join("star*.txt"), "s").expect("write");
    fs::write(tree.path().join("starx.txt"), "x").expect("write");
    assert_eq!(listed(tree.path(), &["star\\*.txt"], false), ["star*.txt"]);
    assert_eq!(listed(tree.path(), &["star[*].txt"], false), ["star*.txt"]);
    assert_eq!(
        listed(tree.path(), &["star*.txt"], false),
        ["star*.txt", "starx.txt"]
    );
}

#[test]
fn missing_roots_and_file_roots() {
    let tree = vector_tree();
    assert_eq!(digest(tree.path(), &["missing/**"]), "");
    // A search root below a file cannot be inspected (ENOTDIR): GitHub's helper fails too.
    let error = hash_files(tree.path(), &args(&["a.txt/x"])).expect_err("not a directory");
    assert!(matches!(error, HashFilesError::Io { .. }), "{error}");
}

#[test]
fn workspace_must_exist() {
    let tree = vector_tree();
    let error = hash_files(&tree.path().join("nope"), &args(&["*"])).expect_err("no workspace");
    assert!(matches!(error, HashFilesError::Workspace { .. }), "{error}");
}

#[test]
fn named_pipes_are_refused_not_read() {
    let tree = vector_tree();
    let fifo = tree.path().join("pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
    let error = hash_files(tree.path(), &args(&["pipe"])).expect_err("a pipe");
    assert!(
        matches!(&error, HashFilesError::NotRegularFile { kind, .. } if *kind == "a named pipe"),
        "{error}"
    );
}

#[test]
fn non_utf8_names_fail_when_matched_like_node() {
    use std::os::unix::ffi::OsStrExt;
    let tree = vector_tree();
    let name = std::ffi::OsStr::from_bytes(b"bad\xff.bin");
    fs::write(tree.path().join(name), "bad").expect("write");
    // Node sees the name with U+FFFD, so its lstat fails: an error without following links...
    let error = hash_files(tree.path(), &args(&["*.bin"])).expect_err("mangled name");
    assert!(
        matches!(error, HashFilesError::InvalidFileName { .. }),
        "{error}"
    );
    // ...nothing at all when following them (a failing stat is a broken link, omitted)...
    assert_eq!(
        hash_files(tree.path(), &args(&["--follow-symbolic-links", "*.bin"])).expect("skipped"),
        ""
    );
    // ...and no trouble when no pattern reaches it.
    assert_eq!(
        listed(tree.path(), &["a.txt", "src/x.json"], false),
        ["a.txt", "src/x.json"]
    );
}

#[test]
fn symlink_loops_fail_when_matched() {
    let tree = vector_tree();
    symlink("loop2", tree.path().join("loop1")).expect("link");
    symlink("loop1", tree.path().join("loop2")).expect("link");
    for patterns in [&["loop*"][..], &["--follow-symbolic-links", "loop*"]] {
        let error = hash_files(tree.path(), &args(patterns)).expect_err("ELOOP");
        assert!(
            matches!(error, HashFilesError::Io { .. }),
            "{patterns:?}: {error}"
        );
    }
    assert_eq!(
        digest(tree.path(), &["src"]),
        "caeea1b9a160d24e5e5591dfd9c4993bec3a9aab02e35e0abc29b007baee7e1e"
    );
}
