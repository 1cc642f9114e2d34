//! The restore's file compare against the digests each listing format stores.

use super::*;
use crate::client::tree::{partial_piece_digest, piece_digest};

fn bytes(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

/// A file of 3,000 bytes at offset 1,000 of an entry whose chunks end at 1,500, 2,500 and
/// 5,000: three pieces, of which only the middle one is a whole chunk.
const OFFSET: u64 = 1_000;
const CHUNK_ENDS: &[u64] = &[1_500, 2_500, 5_000];

fn pieces(data: &[u8]) -> [&[u8]; 3] {
    [&data[..500], &data[500..1_500], &data[1_500..]]
}

#[test]
fn layout_marks_whole_chunk_pieces() {
    let layout = PieceLayout::of(CHUNK_ENDS, OFFSET, 3_000);
    assert_eq!(layout.cuts, vec![500, 1_500]);
    assert_eq!(
        (0..3).map(|p| layout.whole_chunk(p)).collect::<Vec<_>>(),
        vec![false, true, false]
    );
    // A file that is exactly the first chunk, and one that ends the entry on a chunk end.
    let first = PieceLayout::of(CHUNK_ENDS, 0, 1_500);
    assert!(first.cuts.is_empty() && first.whole_chunk(0));
    let last = PieceLayout::of(CHUNK_ENDS, 2_500, 2_500);
    assert!(last.cuts.is_empty() && last.whole_chunk(0));
    let inside = PieceLayout::of(CHUNK_ENDS, 2_600, 100);
    assert!(inside.cuts.is_empty() && !inside.whole_chunk(0));
}

#[test]
fn compare_matches_every_listing_format_and_catches_one_changed_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let data = bytes(3_000);
    std::fs::write(&path, &data).unwrap();
    let layout = PieceLayout::of(CHUNK_ENDS, OFFSET, 3_000);
    let [head, middle, tail] = pieces(&data);
    let blake = |d: &[u8]| *blake3::hash(d).as_bytes();
    let expected = [
        (FileDigest::Blake3, blake(&data)),
        (
            FileDigest::Pieces,
            piece_digest([blake(head), blake(middle), blake(tail)]),
        ),
        (
            FileDigest::MixedPieces,
            piece_digest([
                partial_piece_digest(head),
                blake(middle),
                partial_piece_digest(tail),
            ]),
        ),
    ];
    let open = || File::open(&path).unwrap();
    for (kind, digest) in &expected {
        assert!(
            same_content(&open(), 3_000, digest, *kind, &layout),
            "{kind:?}"
        );
    }
    // The formats differ, so a digest is only ever compared the way it was made.
    assert_ne!(expected[1].1, expected[2].1);
    let mut changed = data.clone();
    changed[2_999] ^= 1;
    std::fs::write(&path, &changed).unwrap();
    for (kind, digest) in &expected {
        assert!(
            !same_content(&open(), 3_000, digest, *kind, &layout),
            "{kind:?}"
        );
    }
    let mut parent = ParentDir::new(Arc::new(Beneath::at(dir.path())));
    assert_eq!(
        compare_found(
            &mut parent,
            &dir.path().join("missing"),
            3_000,
            &expected[2].1,
            FileDigest::MixedPieces,
            &layout
        ),
        Found::Nothing
    );
}

/// The compare looks without following anything: a symlink (to the same bytes) is not the
/// file, a FIFO is not waited on, and a file reached through a symlinked directory is not taken
/// as restored (the writer could not write there).
#[test]
fn compare_does_not_follow_or_wait_on_what_replaced_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(100);
    let real = dir.path().join("real");
    std::fs::write(&real, &data).unwrap();
    let layout = PieceLayout::of(&[100], 0, 100);
    let digest = *blake3::hash(&data).as_bytes();
    let mut parent = ParentDir::new(Arc::new(Beneath::at(dir.path())));
    let mut found =
        |path: &Path| compare_found(&mut parent, path, 100, &digest, FileDigest::Blake3, &layout);
    assert_eq!(found(&real), Found::Same);
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert_eq!(found(&link), Found::Other);
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/f"), &data).unwrap();
    std::os::unix::fs::symlink("sub", dir.path().join("through")).unwrap();
    assert_eq!(found(&dir.path().join("sub/f")), Found::Same);
    assert_eq!(found(&dir.path().join("through/f")), Found::Other);
    let fifo = dir.path().join("fifo");
    let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path that lives for the call.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    let (tx, rx) = std::sync::mpsc::channel();
    let anchor = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let mut parent = ParentDir::new(Arc::new(Beneath::at(&anchor)));
        let _ = tx.send(compare_found(
            &mut parent,
            &fifo,
            100,
            &digest,
            FileDigest::Blake3,
            &layout,
        ));
    });
    assert_eq!(
        rx.recv_timeout(std::time::Duration::from_secs(10)),
        Ok(Found::Other)
    );
}

fn entry(kind: Kind, root: u32, rel: &str, link: &str) -> TreeEntry {
    TreeEntry {
        kind,
        root,
        rel: rel.into(),
        mode: 0o755,
        mtime_secs: 0,
        mtime_nanos: 0,
        size: 0,
        blake3: [0; 32],
        link: link.into(),
    }
}

/// A crafted listing is checked whole before anything is written: links are judged from the
/// anchor (the workspace), not from their root, so a root deep in the workspace may link to a
/// sibling; chains, climbs past the top, absolute targets and entries below the entry's own
/// links are refused, and the refusal names the path.
#[test]
fn the_plan_refuses_hostile_listings_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let roots = vec![ws.join("a/b"), ws.join("c")];
    let beneath = Beneath::for_restore(&ws, &roots, false);
    let plan = |listing: &[TreeEntry]| CacheClient::plan_tree(listing, &roots, &beneath);
    let ok = plan(&[
        entry(Kind::Dir, 0, "", ""),
        entry(Kind::Symlink, 0, "x", "../../c/y"),
        entry(Kind::Symlink, 1, "l1", ".."),
        entry(Kind::File, 1, "f", ""),
    ])
    .unwrap();
    assert_eq!(ok[1], ws.join("a/b/x"));
    for (listing, expect) in [
        (
            vec![
                entry(Kind::Symlink, 1, "l1", ".."),
                entry(Kind::Symlink, 1, "l2", "l1/.."),
            ],
            "after naming a directory",
        ),
        (
            vec![entry(Kind::Symlink, 0, "x", "../../..")],
            "points outside",
        ),
        (vec![entry(Kind::Symlink, 1, "abs", "/etc")], "absolute"),
        (
            vec![
                entry(Kind::Symlink, 1, "in", "."),
                entry(Kind::File, 1, "in/f", ""),
            ],
            "a symlink the entry itself creates",
        ),
    ] {
        let err = plan(&listing).unwrap_err().to_string();
        assert!(err.contains(expect), "{err}");
        assert!(err.contains(&ws.display().to_string()), "{err}");
    }
    assert!(plan(&[entry(Kind::Symlink, 0, "", "x")]).is_err());
    assert!(plan(&[entry(Kind::File, 5, "f", "")]).is_err());
    assert!(!ws.exists(), "the plan wrote something");
}

/// File sizes in a hostile listing that add up past 2^64 are refused, not wrapped around to
/// match the entry's bytes.
#[test]
fn listing_sizes_that_overflow_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let roots = vec![ws.join("d")];
    let beneath = Arc::new(Beneath::for_restore(&ws, &roots, false));
    let mut big = entry(Kind::File, 0, "a", "");
    big.size = u64::MAX / 2 + 1;
    let listing = vec![
        big.clone(),
        TreeEntry {
            rel: "b".into(),
            ..big
        },
    ];
    let client = CacheClient::new("http://127.0.0.1:9", "token");
    let err = client
        .restore_tree(&listing, FileDigest::MixedPieces, &[], &roots, &beneath)
        .unwrap_err()
        .to_string();
    assert!(err.contains("overflow"), "{err}");
}
