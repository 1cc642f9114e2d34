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
    for (kind, digest) in &expected {
        assert!(
            same_content(&path, 3_000, digest, *kind, &layout),
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
            !same_content(&path, 3_000, digest, *kind, &layout),
            "{kind:?}"
        );
    }
    assert_eq!(
        compare_found(
            &dir.path().join("missing"),
            3_000,
            &expected[2].1,
            FileDigest::MixedPieces,
            &layout
        ),
        Found::Nothing
    );
}

/// The compare stats first; if the path changes to a symlink or a FIFO before it is opened,
/// the symlink is not followed and the FIFO is not waited on: the file is just not the same.
#[test]
fn compare_does_not_follow_or_wait_on_what_replaced_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(100);
    let real = dir.path().join("real");
    std::fs::write(&real, &data).unwrap();
    let layout = PieceLayout::of(&[100], 0, 100);
    let digest = *blake3::hash(&data).as_bytes();
    assert!(same_content(
        &real,
        100,
        &digest,
        FileDigest::Blake3,
        &layout
    ));
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert!(!same_content(
        &link,
        100,
        &digest,
        FileDigest::Blake3,
        &layout
    ));
    let fifo = dir.path().join("fifo");
    let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path that lives for the call.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(same_content(
            &fifo,
            100,
            &digest,
            FileDigest::Blake3,
            &layout,
        ));
    });
    assert_eq!(
        rx.recv_timeout(std::time::Duration::from_secs(10)),
        Ok(false)
    );
}
