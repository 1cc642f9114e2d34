//! The HTML reports of `kiln bench cache` and `kiln cache stats`, opened in headless Chromium:
//! the page's script must have drawn each chart as SVG with one point per value, in the right
//! colours' kinds, with its legend and axis labels; a file that merely exists proves nothing.
//! Skips loudly without Chromium, and fails instead under `KILN_REQUIRE_CHROMIUM=1` (.ci/run
//! sets it and installs Debian's `chromium`).

mod bench_support;
mod run_support;

use bench_support::{lockfile_history, OUTCOMES};
use kiln_cache::digest::{ChunkRef, Digest};
use kiln_cache::index::{EntryKind, Reservation};
use kiln_cache::{CacheStore, StoreConfig};
use run_support::kiln;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Chromium's binary, or None (after saying so) when it is missing and not required.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("KILN_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from))
        .find(|p| p.is_file());
    if found.is_none() {
        let required = std::env::var("KILN_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "KILN_REQUIRE_CHROMIUM=1 but chromium is not installed (apt-get install chromium)"
        );
        eprintln!(
            "SKIPPED: chromium is not installed, so the HTML reports' charts are not checked \
             (apt-get install chromium; .ci/run does, and sets KILN_REQUIRE_CHROMIUM=1)"
        );
    }
    found
}

/// The page's DOM after its scripts ran, as headless Chromium serialises it.
fn rendered_dom(browser: &Path, page: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        let _ = stdout.read_to_string(&mut dom);
        dom
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish rendering {} in 90 s",
                page.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

/// The drawn `<svg data-chart="ID">…</svg>` of the page.
fn chart<'a>(dom: &'a str, id: &str) -> &'a str {
    let marker = format!("data-chart=\"{id}\"");
    let at = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no chart {id} was drawn; the DOM:\n{dom}"));
    let start = dom[..at].rfind("<svg").unwrap();
    let end = start + dom[start..].find("</svg>").unwrap();
    &dom[start..end]
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// `data-kind` of every outcome dot, in drawing order.
fn dot_kinds(svg: &str) -> Vec<&str> {
    svg.split("data-kind=\"")
        .skip(1)
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .collect()
}

#[test]
fn the_bench_report_draws_an_outcome_per_commit_and_bytes_over_time() {
    let Some(browser) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let repo = lockfile_history(dir.path());
    let out = dir.path().join("out");
    let (status, _, err) = kiln(
        &repo,
        &[
            "bench",
            "cache",
            "--format",
            "html",
            "--out",
            out.to_str().unwrap(),
            "--content-model",
            "size=8MiB",
        ],
    );
    assert_eq!(status, 0, "{err}");
    let dom = rendered_dom(&browser, &out.join("cache-bench.html"));

    let outcomes = chart(&dom, "outcomes");
    assert_eq!(dot_kinds(outcomes), OUTCOMES);
    assert!(outcomes.contains("commit (oldest first)"), "x axis label");
    for legend in ["exact hit", "restore-key hit", "miss"] {
        assert!(outcomes.contains(&format!(">{legend}<")), "legend {legend}");
    }
    // One point per commit for each of the two series, and a line each.
    let bytes = chart(&dom, "bytes");
    assert_eq!(count(bytes, "class=\"point\""), 2 * 5, "{bytes}");
    assert_eq!(count(bytes, "<polyline"), 2);
    assert!(
        bytes.contains("bytes uploaded (compressed)"),
        "y axis label"
    );
    assert!(bytes.contains(">kiln chunked store<") && bytes.contains(">whole archive (GitHub)<"));
    // The figures table is there too, and the page loads nothing from elsewhere.
    assert!(dom.contains("Linux-cargo-*"));
    let page = std::fs::read_to_string(out.join("cache-bench.html")).unwrap();
    for external in ["src=\"http", "href=\"http", "@import", "url("] {
        assert!(!page.contains(external), "{external} in the page");
    }
}

fn save(store: &CacheStore, key: &str, content: &[u8]) {
    let id = store
        .reserve_native(Reservation {
            repo: "o/r".into(),
            scope: "refs/heads/main".into(),
            key: key.into(),
            version: "v".into(),
            kind: EntryKind::Tree,
        })
        .unwrap();
    let refs = [ChunkRef {
        digest: Digest::of(content),
        len: content.len() as u32,
    }];
    for d in store
        .missing_chunks(id, &refs, &["refs/heads/main".to_string()])
        .unwrap()
        .missing
    {
        let encoded = kiln_cache::chunks::encode_chunk(content, 0);
        store.put_native_chunk(id, &d, &encoded).unwrap();
    }
    store
        .commit_native(id, content.len() as u64, &refs, &[])
        .unwrap();
}

fn lookup(store: &CacheStore, keys: &[&str]) {
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    store
        .lookup("o/r", &["refs/heads/main".into()], &keys, "v", true)
        .unwrap();
}

#[test]
fn the_stats_report_draws_hit_rates_per_family_and_day_and_bytes_per_day() {
    let Some(browser) = chromium() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let h = |c: char| std::iter::repeat_n(c, 40).collect::<String>();
    {
        let store = CacheStore::open(StoreConfig::new(data.path())).unwrap();
        // Family cargo-*: a miss and a save, then an exact hit; family npm-*: a miss.
        lookup(&store, &[&format!("cargo-{}", h('a'))]);
        save(&store, &format!("cargo-{}", h('a')), b"cargo content");
        lookup(&store, &[&format!("cargo-{}", h('a'))]);
        lookup(&store, &[&format!("npm-{}", h('b'))]);
        store.flush_durability();
    }
    // Spread the events over three days: the first two two days ago, the third yesterday.
    let index = rusqlite::Connection::open(data.path().join("index.sqlite")).unwrap();
    let day = 86_400_000i64;
    index
        .execute(
            "UPDATE cache_events SET at = at - ?1 WHERE id IN (SELECT id FROM cache_events ORDER BY id LIMIT 2)",
            [2 * day],
        )
        .unwrap();
    index
        .execute(
            "UPDATE cache_events SET at = at - ?1 WHERE id = (SELECT id FROM cache_events ORDER BY id LIMIT 1 OFFSET 2)",
            [day],
        )
        .unwrap();
    drop(index);
    let out = tempfile::tempdir().unwrap();
    let (status, _, err) = kiln(
        data.path(),
        &[
            "cache",
            "stats",
            "--data",
            data.path().to_str().unwrap(),
            "--format",
            "html",
            "--out",
            out.path().to_str().unwrap(),
        ],
    );
    assert_eq!(status, 0, "{err}");
    let dom = rendered_dom(&browser, &out.path().join("cache-stats.html"));

    // Hit rate: a point where a family had lookups that day. cargo-*: day 1 (0%), day 2
    // (100%); npm-*: day 3 (0%).
    let rates = chart(&dom, "hit-rate");
    assert_eq!(count(rates, "class=\"point\""), 3, "{rates}");
    assert_eq!(count(rates, "<polyline"), 2);
    assert!(rates.contains("o/r cargo-*") && rates.contains("o/r npm-*"));
    assert!(rates.contains(">hit rate<") && rates.contains(">day (UTC)<"));
    assert!(rates.contains("o/r cargo-*, ") && rates.contains(": 100%"));
    // Bytes per day: served and uploaded, a point each per day.
    let bytes = chart(&dom, "bytes");
    assert_eq!(count(bytes, "class=\"point\""), 2 * 3, "{bytes}");
}
