//! The lookup record: every lookup, save and removal is counted per repository, key family and
//! scope, survives a restart, and is dropped after its retention.

use kiln_cache::digest::{ChunkRef, Digest};
use kiln_cache::index::{EntryKind, Reservation};
use kiln_cache::{CacheStore, StoreConfig};
use std::time::{Duration, SystemTime};

fn save(store: &CacheStore, scope: &str, key: &str, content: &[u8]) {
    let id = store
        .reserve_native(Reservation {
            repo: "o/r".into(),
            scope: scope.into(),
            key: key.into(),
            version: "v".into(),
            kind: EntryKind::Tree,
        })
        .unwrap();
    let digest = Digest::of(content);
    let refs = [ChunkRef {
        digest,
        len: content.len() as u32,
    }];
    let answer = store
        .missing_chunks(id, &refs, &[scope.to_string()])
        .unwrap();
    for d in &answer.missing {
        store
            .put_native_chunk(id, d, &kiln_cache::chunks::encode_chunk(content, 0))
            .unwrap();
    }
    store
        .commit_native(id, content.len() as u64, &refs, &[])
        .unwrap();
}

fn lookup(store: &CacheStore, scopes: &[&str], keys: &[&str]) {
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    let keys: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
    store.lookup("o/r", &scopes, &keys, "v", true).unwrap();
}

const MAIN: &str = "refs/heads/main";
const PR: &str = "refs/pull/1/merge";
const K1: &str = "Linux-cargo-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const K2: &str = "Linux-cargo-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

#[test]
fn lookups_saves_and_removals_are_counted_and_kept_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::new(dir.path());
    {
        let store = CacheStore::open(config.clone()).unwrap();
        lookup(&store, &[MAIN], &[K1, "Linux-cargo-"]); // miss
        save(&store, MAIN, K1, b"first content");
        lookup(&store, &[MAIN], &[K1]); // exact
        lookup(&store, &[MAIN], &[K2, "Linux-cargo-"]); // restore key
        save(&store, MAIN, K2, b"first content"); // all deduplicated
        lookup(&store, &[PR, MAIN], &[K2]); // exact, from main, counted in the PR's scope
        lookup(&store, &[PR, MAIN], &["other-key"]); // miss, another family
        store.flush_durability();
    }
    let store = CacheStore::open(config).unwrap();
    let report = store.stats(None, 0).unwrap();
    let t = &report.totals;
    assert_eq!(
        (t.lookups, t.exact_hits, t.restore_key_hits, t.misses),
        (5, 2, 1, 2)
    );
    assert_eq!(t.saves, 2);
    assert_eq!(t.bytes_dedup_saved, 13, "the second save sent nothing");
    assert_eq!(t.bytes_served, 3 * 13);
    let main = report
        .groups
        .iter()
        .find(|g| g.scope == MAIN && g.key_family == "Linux-cargo-*")
        .expect("main's cargo family");
    assert_eq!((main.tally.lookups, main.tally.misses), (3, 1));
    assert!((main.tally.hit_rate - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!((main.entries, main.entry_bytes), (2, 26));
    let pr: Vec<_> = report.groups.iter().filter(|g| g.scope == PR).collect();
    assert_eq!(pr.len(), 2, "{pr:?}");
    assert_eq!(report.days.len(), 2, "one day, two families");

    // Eviction of everything unused: both entries are removed and counted.
    let later = SystemTime::now() + Duration::from_secs(30 * 24 * 3600);
    store.maintain(later).unwrap();
    let report = store.stats(None, 0).unwrap();
    assert_eq!(report.totals.evictions, 2);
    let main = report
        .groups
        .iter()
        .find(|g| g.scope == MAIN && g.key_family == "Linux-cargo-*")
        .unwrap();
    assert_eq!((main.tally.evictions, main.entries), (2, 0));

    // A repository filter sees only its own events; a time filter only later ones.
    assert_eq!(store.stats(Some("x/y"), 0).unwrap().totals.lookups, 0);
    let future = kiln_cache::store::now_ms() + 60_000;
    assert_eq!(store.stats(None, future).unwrap().totals.lookups, 0);
}

#[test]
fn events_older_than_the_retention_are_dropped_at_maintenance() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.stats_retention = Duration::from_secs(3600);
    let store = CacheStore::open(config).unwrap();
    lookup(&store, &[MAIN], &[K1]);
    store.maintain(SystemTime::now()).unwrap();
    assert_eq!(store.stats(None, 0).unwrap().totals.lookups, 1);
    store
        .maintain(SystemTime::now() + Duration::from_secs(7200))
        .unwrap();
    assert_eq!(store.stats(None, 0).unwrap().totals.lookups, 0);
}
