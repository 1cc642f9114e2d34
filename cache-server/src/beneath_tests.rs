//! The confined writer: no write through any symlink, links checked lexically and as the kernel
//! resolves them, chains of links (within one restore, across restores, through directories
//! already there), absolute and relative targets.

use super::*;
use std::fs;
use std::os::unix::fs::symlink;

/// A workspace inside a scratch directory, so that "outside" is a directory the test can list.
struct Scratch {
    _dir: tempfile::TempDir,
    ws: PathBuf,
    outside: PathBuf,
}

fn scratch() -> Scratch {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("work/ws");
    let outside = dir.path().join("outside");
    fs::create_dir_all(&ws).unwrap();
    fs::create_dir_all(&outside).unwrap();
    Scratch {
        _dir: dir,
        ws,
        outside,
    }
}

impl Scratch {
    fn nothing_outside(&self) {
        assert_eq!(fs::read_dir(&self.outside).unwrap().count(), 0);
        let work: Vec<_> = fs::read_dir(self.ws.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            work,
            vec!["ws"],
            "something was written next to the workspace"
        );
    }
}

fn refusal(result: Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(e @ CacheError::UnsafePath { .. }) => e.to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn write_file(b: &Arc<Beneath>, path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        b.create_dir_all(parent)?;
    }
    let mut dir = ParentDir::new(Arc::clone(b));
    dir.create(path, 0o644, true).map(drop)
}

#[test]
fn link_targets_must_climb_first_and_not_past_the_top() {
    let ok = |link: &str, target: &str| check_link_target(Path::new(link), Path::new(target));
    assert!(ok("a/b", "../c").is_ok());
    assert!(ok("a/b", "c/d").is_ok());
    assert!(ok("a/b", ".").is_ok());
    assert!(ok("a/b/c", "../../x/./y").is_ok());
    assert!(ok("a/b", "../../c").unwrap_err().contains("points outside"));
    assert!(ok("l", "..").is_err());
    // Each harmless by its text alone, but `..` after a name goes wherever the name leads.
    assert!(ok("d/l2", "l1/..")
        .unwrap_err()
        .contains("after naming a directory"));
    assert!(ok("a/b", "x/../y").is_err());
    assert!(ok("a", "/etc").unwrap_err().contains("absolute"));
    assert!(ok("a", "").is_err());
}

/// The chain the issue describes: `d/l1 -> ..` is harmless, `d/l2 -> l1/..` passes a check of
/// its text (it never climbs above `d`'s parent as written) but resolves to the workspace's
/// parent. The second is refused when created; if it was planted anyway (an older restore, the
/// job), a later write through it is refused.
#[test]
fn a_chain_of_links_cannot_plant_an_escape_or_be_written_through() {
    let s = scratch();
    let b = Arc::new(Beneath::at(&s.ws));
    b.create_dir_all(&s.ws.join("d")).unwrap();
    b.symlink(Path::new(".."), &s.ws.join("d/l1")).unwrap();
    let err = refusal(b.symlink(Path::new("l1/.."), &s.ws.join("d/l2")));
    assert!(err.contains("after naming a directory"), "{err}");
    assert!(fs::symlink_metadata(s.ws.join("d/l2")).is_err());

    // Planted by something else, then met by another restore (a fresh Beneath).
    symlink("l1/..", s.ws.join("d/l2")).unwrap();
    symlink(&s.outside, s.ws.join("abs")).unwrap();
    let later = Arc::new(Beneath::at(&s.ws));
    for path in ["d/l2/pwned", "d/l2/new/pwned", "abs/pwned", "d/l1/../x"] {
        let err = refusal(write_file(&later, &s.ws.join(path)));
        assert!(err.contains("goes through the symlink"), "{path}: {err}");
    }
    let err = refusal(later.symlink(Path::new("x"), &s.ws.join("d/l2/link")));
    assert!(err.contains("goes through the symlink"), "{err}");
    assert!(later.set_dir_mode(&s.ws.join("d/l2"), 0o700).is_err());
    assert!(later
        .hard_link(&s.ws.join("d/l1"), &s.ws.join("d/l2/h"))
        .is_err());
    // Even a link that stays inside is not written through.
    symlink("d", s.ws.join("inside")).unwrap();
    let err = refusal(write_file(&later, &s.ws.join("inside/f")));
    assert!(
        err.contains(&format!("{}", s.ws.join("inside").display())),
        "{err}"
    );
    s.nothing_outside();
    assert!(!s.ws.join("d/f").exists());
}

/// A link whose text is fine but that resolves out through a symlink already in the workspace
/// (absolute or relative) is refused, by the kernel's resolution and by the hand-made one.
#[test]
fn links_are_resolved_as_the_kernel_would_before_they_are_made() {
    let s = scratch();
    let b = Beneath::at(&s.ws);
    fs::create_dir_all(s.ws.join("sub/deep")).unwrap();
    symlink(&s.outside, s.ws.join("vendor")).unwrap();
    symlink("../../..", s.ws.join("sub/deep/up")).unwrap();
    for (link, target) in [("v", "vendor/lib"), ("sub/x", "deep/up/y")] {
        let err = refusal(b.symlink(Path::new(target), &s.ws.join(link)));
        assert!(err.contains("through a symlink already there"), "{err}");
        assert!(fs::symlink_metadata(s.ws.join(link)).is_err());
    }
    // Inside, dangling or a loop: made.
    fs::write(s.ws.join("sub/file"), b"x").unwrap();
    symlink("loop", s.ws.join("loop")).unwrap();
    for (link, target) in [
        ("sub/f", "file"),
        ("sub/deep/f", "../file"),
        ("sub/missing", "nowhere/at/all"),
        ("sub/l", "../loop"),
    ] {
        b.symlink(Path::new(target), &s.ws.join(link)).unwrap();
    }
    assert_eq!(fs::read(s.ws.join("sub/deep/f")).unwrap(), b"x");
    // Absolute targets are refused even when they name the workspace itself.
    let err = refusal(b.symlink(&s.ws.join("sub"), &s.ws.join("abs")));
    assert!(err.contains("absolute"), "{err}");

    let anchor = b.anchor_fd(&b.anchors[0]).unwrap();
    for (path, inside) in [
        ("vendor/lib", false),
        ("sub/deep/up/y", false),
        ("sub/deep/up", false),
        ("sub/deep/../file", true),
        ("sub/missing", true),
        ("loop", true),
        ("..", false),
        ("sub/file/below", true),
        (".", true),
    ] {
        assert_eq!(
            resolves_inside(anchor, Path::new(path)).unwrap(),
            inside,
            "kernel: {path}"
        );
        assert_eq!(
            resolves_inside_by_hand(anchor, Path::new(path)).unwrap(),
            inside,
            "by hand: {path}"
        );
    }
    s.nothing_outside();
}

/// Two restores, the first leaving a link that stays inside, the second listing a directory
/// where that link is: the link is replaced by a real directory, never followed.
#[test]
fn a_directory_replaces_a_link_left_by_an_earlier_restore() {
    let s = scratch();
    let first = Beneath::at(&s.ws);
    first.create_dir_all(&s.ws.join("real")).unwrap();
    first.symlink(Path::new("real"), &s.ws.join("dir")).unwrap();
    let second = Arc::new(Beneath::at(&s.ws));
    second.clear(&s.ws.join("dir")).unwrap();
    second.create_dir_all(&s.ws.join("dir")).unwrap();
    write_file(&second, &s.ws.join("dir/f")).unwrap();
    assert!(fs::symlink_metadata(s.ws.join("dir")).unwrap().is_dir());
    assert!(!s.ws.join("real/f").exists());
}

#[test]
fn calls_stay_inside_the_anchor() {
    let s = scratch();
    let w = &s.ws;
    fs::create_dir_all(w.join("real/sub")).unwrap();
    symlink(&s.outside, w.join("escape")).unwrap();
    symlink("real", w.join("inside")).unwrap();
    let b = Beneath::at(w);
    assert!(b.open_dir(&w.join("real/sub")).is_ok());
    assert!(b.open_dir(&w.join("inside/sub")).is_err());
    assert!(b.open_dir(&w.join("escape")).is_err());
    assert!(b.create_dir_all(&w.join("escape/made")).is_err());
    assert!(b.symlink(Path::new("x"), &w.join("escape/link")).is_err());
    assert!(b.set_dir_mode(&w.join("escape"), 0o700).is_err());
    let err = refusal(b.open_dir(&s.outside));
    assert!(err.contains("is outside"), "{err}");

    // A confined save reads through a link that stays inside, not one leading out.
    let reads = Beneath::for_save(w, true);
    assert!(reads.open_dir(&w.join("inside/sub")).is_ok());
    let err = refusal(reads.open_dir(&w.join("escape")));
    assert!(err.contains("leads out of"), "{err}");

    b.create_dir_all(&w.join("real/a/b/c")).unwrap();
    assert!(w.join("real/a/b/c").is_dir());
    fs::write(w.join("real/a/b/file"), b"x").unwrap();
    // Removing a tree removes a symlink in it, not what it points to.
    fs::write(s.outside.join("keep"), b"keep").unwrap();
    symlink(&s.outside, w.join("real/a/link")).unwrap();
    b.remove_all(&w.join("real/a")).unwrap();
    assert!(!w.join("real/a").exists());
    assert_eq!(fs::read(s.outside.join("keep")).unwrap(), b"keep");
    fs::remove_file(s.outside.join("keep")).unwrap();
    // Clearing removes a file or a symlink and leaves a directory.
    b.clear(&w.join("escape")).unwrap();
    assert!(fs::symlink_metadata(w.join("escape")).is_err());
    b.clear(&w.join("real")).unwrap();
    assert!(w.join("real").is_dir());
    // A hard link between two files beneath the anchor.
    write_file(&Arc::new(Beneath::at(w)), &w.join("real/h1")).unwrap();
    b.hard_link(&w.join("real/h1"), &w.join("real/h2")).unwrap();
    assert!(w.join("real/h2").is_file());
    s.nothing_outside();
}

#[test]
fn anchors_of_a_host_restore_are_the_workspace_and_outside_roots() {
    let s = scratch();
    let home = s.outside.join("home");
    let roots = vec![
        s.ws.join("a"),
        home.join(".npm"),
        home.join(".npm/_cacache"),
        s.ws.join("b/c"),
    ];
    let host = Beneath::for_restore(&s.ws, &roots, false);
    let anchors: Vec<&Path> = host.anchors.iter().map(|a| a.path.as_path()).collect();
    assert_eq!(anchors, vec![s.ws.as_path(), home.join(".npm").as_path()]);
    // An outside root is created when first written to, and links in it are checked against it.
    host.create_dir_all(&home.join(".npm/_cacache/x")).unwrap();
    assert!(host
        .symlink(Path::new("../.."), &home.join(".npm/_cacache/up"))
        .is_err());
    host.symlink(Path::new(".."), &home.join(".npm/_cacache/up"))
        .unwrap();
    // A container job writes only beneath its workspace.
    let confined = Beneath::for_restore(&s.ws, &roots, true);
    let err = refusal(confined.create_dir_all(&home.join(".npm/y")));
    assert!(err.contains("is outside"), "{err}");
}

#[test]
fn the_stepwise_fallback_refuses_every_symlink() {
    let s = scratch();
    let w = &s.ws;
    fs::create_dir_all(w.join("real/sub")).unwrap();
    symlink("real", w.join("inside")).unwrap();
    let b = Beneath::at(w);
    let anchor = &b.anchors[0];
    let base = b.anchor_fd(anchor).unwrap();
    assert!(b
        .open_dir_stepwise(base, anchor, &w.join("real/sub"), Path::new("real/sub"))
        .is_ok());
    let err =
        refusal(b.open_dir_stepwise(base, anchor, &w.join("inside/sub"), Path::new("inside/sub")));
    assert!(err.contains("goes through the symlink"), "{err}");
    assert!(b.open_dir_stepwise(base, anchor, w, Path::new("")).is_ok());
}
