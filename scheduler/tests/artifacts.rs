//! A run's artifact store: uploads are checked against their digest, a commit makes an
//! artifact exactly its manifest's files at once, names and paths that could escape or that
//! upload-artifact refuses are refused, and an existing artifact is replaced only when asked.

mod service_support;

use std::io::Write as _;

use kiln_scheduler::service::artifacts::{ArtifactError, ManifestFile, RunArtifacts};
use kiln_scheduler::store::prelude::*;
use service_support::*;

fn put(store: &RunArtifacts, upload: &str, bytes: &[u8]) -> ManifestFile {
    let digest = blake3::hash(bytes).to_hex().to_string();
    let mut file = store.upload_file(upload).unwrap();
    file.write_all(bytes).unwrap();
    store.keep_upload(upload, file, &digest, &digest).unwrap();
    ManifestFile {
        path: String::new(),
        size: bytes.len() as u64,
        blake3: digest,
    }
}

fn at(path: &str, file: &ManifestFile) -> ManifestFile {
    ManifestFile {
        path: path.to_owned(),
        ..file.clone()
    }
}

const ONE_JOB: &str =
    "on: push\njobs:\n  only:\n    runs-on: linux\n    steps:\n      - run: 'true'\n";

#[test]
fn an_artifact_is_committed_whole_and_replaced_only_when_asked() {
    let h = Harness::new(&[(".github/workflows/one.yml", ONE_JOB)]);
    let run = h.submit(&[]);
    let other = h.submit(&[]);
    let store = RunArtifacts::open(h.s(), &run).unwrap();
    let hello = put(&store, "u1", b"hello");
    let world = put(&store, "u1", b"world!");
    let manifest = store
        .commit(
            h.s(),
            "dist",
            "u1",
            false,
            vec![at("a/hello.txt", &hello), at("world.txt", &world)],
        )
        .unwrap();
    assert_eq!(manifest.size, 11);
    let (path, size) = store.file("dist", "a/hello.txt").unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"hello");
    assert_eq!(size, 5);
    assert!(matches!(
        store.file("dist", "nope.txt"),
        Err(ArtifactError::NotFound(_))
    ));

    let again = put(&store, "u2", b"again");
    let refused = store.commit(h.s(), "dist", "u2", false, vec![at("x", &again)]);
    assert!(
        matches!(refused, Err(ArtifactError::Exists(_))),
        "{refused:?}"
    );
    store
        .commit(h.s(), "dist", "u2", true, vec![at("x", &again)])
        .unwrap();
    let replaced = store.manifest("dist").unwrap();
    assert_eq!(replaced.files.len(), 1, "exactly the new files");
    assert_eq!(replaced.files[0].path, "x");
    let names: Vec<String> = store.list().unwrap().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["dist"]);
    let recorded = h.s().store().list_artifacts(&run).unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        recorded[0].size, 5,
        "the store holds the replacement's size"
    );
    let other_run = RunArtifacts::open(h.s(), &other).unwrap();
    assert!(other_run.list().unwrap().is_empty(), "scoped to the run");
}

#[test]
fn uploads_and_commits_that_do_not_match_are_refused() {
    let h = Harness::new(&[]);
    let store = RunArtifacts::open(h.s(), "7").unwrap();
    let mut file = store.upload_file("u").unwrap();
    file.write_all(b"bytes").unwrap();
    let actual = blake3::hash(b"bytes").to_hex().to_string();
    let claimed = blake3::hash(b"other").to_hex().to_string();
    assert!(matches!(
        store.keep_upload("u", file, &actual, &claimed),
        Err(ArtifactError::Bad(_))
    ));
    let kept = put(&store, "u", b"bytes");
    let never = ManifestFile {
        path: "missing".to_owned(),
        size: 1,
        blake3: blake3::hash(b"missing").to_hex().to_string(),
    };
    assert!(matches!(
        store.commit(h.s(), "a", "u", false, vec![never]),
        Err(ArtifactError::Bad(_))
    ));
    let wrong_size = ManifestFile {
        size: 99,
        ..at("f", &kept)
    };
    assert!(matches!(
        store.commit(h.s(), "a", "u", false, vec![wrong_size]),
        Err(ArtifactError::Bad(_))
    ));
    for path in ["../x", "a//b", "./a", "/abs", ""] {
        assert!(
            matches!(
                store.commit(h.s(), "a", "u", false, vec![at(path, &kept)]),
                Err(ArtifactError::Bad(_))
            ),
            "{path:?} accepted"
        );
    }
    for name in ["", ".", "..", "a/b", "a\\b", "a:b", "a*"] {
        assert!(
            matches!(
                store.commit(h.s(), name, "u", false, vec![at("f", &kept)]),
                Err(ArtifactError::Bad(_))
            ),
            "{name:?} accepted"
        );
    }
    assert!(matches!(
        store.upload_file("../escape"),
        Err(ArtifactError::Bad(_))
    ));
    assert!(matches!(
        store.manifest("a"),
        Err(ArtifactError::NotFound(_))
    ));
}

#[test]
fn artifacts_are_removed_after_the_retention() {
    let h = Harness::new(&[(".github/workflows/one.yml", ONE_JOB)]);
    let run = h.submit(&[]);
    let store = RunArtifacts::open(h.s(), &run).unwrap();
    let file = put(&store, "u", b"kept a while");
    store
        .commit(h.s(), "logs", "u", false, vec![at("l.txt", &file)])
        .unwrap();
    h.clock.advance(89 * 24 * 3600 * 1000);
    h.s().tick().unwrap();
    assert!(store.manifest("logs").is_ok(), "still within 90 days");
    h.clock.advance(2 * 24 * 3600 * 1000);
    h.s().tick().unwrap();
    assert!(matches!(
        store.manifest("logs"),
        Err(ArtifactError::NotFound(_))
    ));
    assert!(h.s().store().list_artifacts(&run).unwrap().is_empty());
}
