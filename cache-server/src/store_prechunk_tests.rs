//! An archive cut while it arrives gives the chunks one pass over the finished archive gives,
//! whatever order its ranges come in, and falls back to that pass when bytes it read change.

use super::*;
use crate::cdc::StreamChunker;
use crate::index::EntryKind;

/// Deterministic bytes that neither repeat nor compress to nothing.
fn archive(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 64 < 32 {
                x as u8
            } else {
                b"cached build output "[i % 20]
            }
        })
        .collect()
}

fn one_pass(data: &[u8]) -> Vec<ChunkRef> {
    StreamChunker::new(data)
        .map(|c| {
            let c = c.unwrap();
            ChunkRef {
                digest: Digest::of(&c.data),
                len: c.data.len() as u32,
            }
        })
        .collect()
}

fn reserve(store: &CacheStore, key: &str) -> u64 {
    store
        .reserve_archive(Reservation {
            repo: "o/r".into(),
            scope: "refs/heads/main".into(),
            key: key.into(),
            version: "v".into(),
            kind: EntryKind::Archive,
        })
        .unwrap()
}

fn upload_in_order(store: &CacheStore, id: u64, data: &[u8]) {
    for at in (0..data.len()).step_by(PART) {
        store
            .write_archive(id, at as u64, &data[at..(at + PART).min(data.len())])
            .unwrap();
    }
}

fn prechunk_of(store: &CacheStore, id: u64) -> Arc<Prechunk> {
    let upload = store.upload(id).unwrap();
    let state = lock(&upload);
    Arc::clone(&state.archive.as_ref().unwrap().prechunk)
}

/// Waits until the upload's worker has cut at least `bytes` (it runs on its own thread).
fn wait_for_cut(store: &CacheStore, id: u64, bytes: u64) {
    let prechunk = prechunk_of(store, id);
    let deadline = Instant::now() + Duration::from_secs(60);
    while prechunk.lock_for_tests().cut < bytes {
        assert!(Instant::now() < deadline, "the worker cut nothing in 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

const PART: usize = 4 << 20;

#[test]
fn ranges_out_of_order_are_cut_as_one_pass_would() {
    let dir = tempfile::tempdir().unwrap();
    let store = CacheStore::open(StoreConfig::new(dir.path())).unwrap();
    let data = archive(7, 40 << 20);
    let id = reserve(&store, "k");
    // Pairs swapped, as uploads in flight finish: 1, 0, 3, 2, ...
    let parts: Vec<usize> = (0..data.len().div_ceil(PART)).collect();
    for pair in parts.chunks(2) {
        for &p in pair.iter().rev() {
            let at = p * PART;
            let end = (at + PART).min(data.len());
            store.write_archive(id, at as u64, &data[at..end]).unwrap();
        }
    }
    wait_for_cut(&store, id, 20 << 20);
    let stats = store.finalize_archive(id, data.len() as u64).unwrap();
    assert!(
        stats.cut_while_uploading >= 20 << 20,
        "{}",
        stats.cut_while_uploading
    );
    let entry = store.entry(id).unwrap().unwrap();
    assert_eq!(entry.chunks, one_pass(&data));
    assert_eq!(entry.size, data.len() as u64);
}

#[test]
fn bytes_rewritten_after_they_were_cut_are_cut_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = CacheStore::open(StoreConfig::new(dir.path())).unwrap();
    let mut data = archive(9, 24 << 20);
    let id = reserve(&store, "k");
    upload_in_order(&store, id, &data);
    wait_for_cut(&store, id, 1);
    // A retried first range with other bytes: what the worker cut is stale.
    let other = archive(10, PART);
    data[..PART].copy_from_slice(&other);
    store.write_archive(id, 0, &other).unwrap();
    let stats = store.finalize_archive(id, data.len() as u64).unwrap();
    assert_eq!(stats.cut_while_uploading, 0);
    assert_eq!(store.entry(id).unwrap().unwrap().chunks, one_pass(&data));
}

#[test]
fn an_abandoned_upload_stops_its_worker() {
    let dir = tempfile::tempdir().unwrap();
    let store = CacheStore::open(StoreConfig::new(dir.path())).unwrap();
    let data = archive(11, 24 << 20);
    let id = reserve(&store, "k");
    upload_in_order(&store, id, &data);
    wait_for_cut(&store, id, 1);
    let prechunk = prechunk_of(&store, id);
    store.abandon(id).unwrap();
    // Stopped before the upload's pins went, and no worker starts for it again.
    assert!(!prechunk.lock_for_tests().running);
    assert!(!prechunk.claim(u64::MAX));
    // The key can be reserved again and the same bytes saved under it.
    let again = reserve(&store, "k");
    store.write_archive(again, 0, &data).unwrap();
    store.finalize_archive(again, data.len() as u64).unwrap();
    assert_eq!(store.entry(again).unwrap().unwrap().chunks, one_pass(&data));
}

#[test]
fn a_block_list_replacing_a_put_blob_voids_its_cuts() {
    let dir = tempfile::tempdir().unwrap();
    let store = CacheStore::open(StoreConfig::new(dir.path())).unwrap();
    let first = archive(12, 24 << 20);
    let id = reserve(&store, "k");
    upload_in_order(&store, id, &first);
    wait_for_cut(&store, id, 1);
    // The client starts over with blocks holding other bytes (Azure: Put Block List replaces).
    let second = archive(13, 28 << 20);
    let ids: Vec<String> = second
        .chunks(PART)
        .enumerate()
        .map(|(i, block)| {
            let id_text = format!("block-{i:04}");
            store.write_block(id, &id_text, 0, block).unwrap();
            store
                .finish_block(id, &id_text, block.len() as u64)
                .unwrap();
            id_text
        })
        .collect();
    let size = store.commit_block_list(id, &ids).unwrap();
    let stats = store.finalize_archive(id, size).unwrap();
    assert_eq!(stats.cut_while_uploading, 0);
    assert_eq!(store.entry(id).unwrap().unwrap().chunks, one_pass(&second));
}

#[test]
fn cuts_are_handed_out_once() {
    let prechunk = Prechunk::default();
    assert!(prechunk.finish().is_some());
    assert!(prechunk.finish().is_none());
    let unstarted = Prechunk::default();
    assert!(unstarted.claim(u64::MAX));
    unstarted.give_up();
    assert!(unstarted.finish().is_none());
}

#[test]
fn worker_slots_are_bounded() {
    let slots = WorkerSlots::default();
    let mut taken = 0;
    while slots.try_take() {
        taken += 1;
        assert!(taken <= 1024, "no bound");
    }
    assert!(taken >= 2);
    slots.put_back();
    assert!(slots.try_take());
    assert!(!slots.try_take());
}
