//! Holes reach the target as holes: the same bytes and the same allocated
//! blocks as SOURCE, for files written through the mount with holes, a
//! hole punched through the mount, and a sparse file that arrives by a
//! reconcile (made in SOURCE outside the mount).

#![cfg(target_os = "linux")]

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

const K: u64 = 1024;

fn blocks(p: &Path) -> u64 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .blocks()
}

/// Writes `data` ranges of a file of `size` bytes (the rest holes).
fn write_sparse(p: &Path, size: u64, data: &[(u64, u64)]) {
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(p)
        .unwrap();
    for &(a, b) in data {
        let bytes: Vec<u8> = (a..b).map(|i| (i % 251) as u8 + 1).collect();
        f.write_all_at(&bytes, a).unwrap();
    }
    f.set_len(size).unwrap();
}

/// A 10 MiB file, 5 % holes: every twentieth 64 KiB piece left out.
fn ten_mib_five_percent() -> Vec<(u64, u64)> {
    (0..160u64)
        .filter(|i| i % 20 != 7)
        .map(|i| (i * 64 * K, (i + 1) * 64 * K))
        .collect()
}

/// One 4 KiB block of slack: ext4 counts an extent-tree block in
/// `st_blocks` once writeback allocates it, which may be on one side only
/// when the two are compared. A filled 52 KiB hole is 104 blocks.
fn same_file(fx: &replicafs::fixture::Fixture, name: &str) {
    same_file_within(fx, name, 8);
}

/// Contents equal, and the target's allocated 512-byte blocks no more than
/// `slack` away from SOURCE's.
fn same_file_within(fx: &replicafs::fixture::Fixture, name: &str, slack: u64) {
    let (s, t) = (fx.source().join(name), fx.target().join(name));
    let (x, y) = (std::fs::read(&s).unwrap(), std::fs::read(&t).unwrap());
    assert!(
        x == y,
        "{name}: contents differ ({} vs {} bytes, first at {:?})",
        x.len(),
        y.len(),
        x.iter().zip(&y).position(|(p, q)| p != q)
    );
    let (a, b) = (blocks(&s), blocks(&t));
    eprintln!("{name}: SOURCE {a} blocks, target {b}");
    assert!(
        a.abs_diff(b) <= slack,
        "{name}: allocated 512-byte blocks differ: SOURCE {a}, target {b}"
    );
}

#[test]
fn holes_written_through_the_mount_stay_holes() {
    let Some(fx) = common::fixture() else { return };
    // Does this file system keep holes at all? (tmpfs and ext4 do.)
    write_sparse(&fx.source().join(".probe"), 1 << 20, &[(0, 4096)]);
    if blocks(&fx.source().join(".probe")) * 512 >= 1 << 20 {
        eprintln!("SKIPPED: SOURCE's file system does not keep holes");
        return;
    }
    std::fs::remove_file(fx.source().join(".probe")).unwrap();

    // A 52 KiB hole in a 196 KiB file.
    write_sparse(
        &fx.mnt().join("db"),
        196 * K,
        &[(0, 64 * K), (116 * K, 196 * K)],
    );
    write_sparse(&fx.mnt().join("image"), 10 << 20, &ten_mib_five_percent());
    // A trailing hole (the size set past the data).
    write_sparse(&fx.mnt().join("tail"), 1 << 20, &[(0, 8 * K)]);
    fx.sync().unwrap();
    assert!(
        blocks(&fx.source().join("db")) < 196 * 2,
        "SOURCE has no hole"
    );
    for name in ["db", "image", "tail"] {
        same_file(&fx, name);
    }

    // A hole punched through the mount into data the target has.
    let f = OpenOptions::new()
        .write(true)
        .open(fx.mnt().join("image"))
        .unwrap();
    rustix::fs::fallocate(
        &f,
        rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
        2 << 20,
        1 << 20,
    )
    .unwrap();
    // Then rewriting a range that spans data and the new hole's edge.
    f.write_all_at(&[7u8; 4096], (3 << 20) - 2048).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fx.sync().unwrap();
    same_file(&fx, "image");
    assert_eq!(fx.verify().unwrap(), Vec::<String>::new());
}

#[test]
fn a_sparse_file_reconciled_from_source_keeps_its_holes() {
    let Some(fx) = common::fixture() else { return };
    // Made in SOURCE behind the mount's back: the watch queues a resync,
    // which copies the file as a reconcile does.
    let p = fx.source().join("outside");
    write_sparse(&p, 196 * K, &[(0, 64 * K), (116 * K, 196 * K)]);
    if blocks(&p) >= 196 * 2 {
        eprintln!("SKIPPED: SOURCE's file system does not keep holes");
        return;
    }
    write_sparse(
        &fx.source().join("outside-big"),
        10 << 20,
        &ten_mib_five_percent(),
    );
    let start = Instant::now();
    while fx.verify().unwrap() != Vec::<String>::new() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the watch did not bring the files over: {:?}",
            fx.verify().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
        fx.sync().unwrap();
    }
    fx.sync().unwrap();
    same_file(&fx, "outside");
    same_file(&fx, "outside-big");
}

/// The rsync target asks the daemon for `--sparse` (with `--inplace` too,
/// which rsync 3.2 accepts): zero runs the daemon receives are left as
/// holes, in new files and in files rewritten in place.
#[test]
fn holes_reach_an_rsync_module() {
    let Some(d) = common::rsyncd::Daemon::start() else {
        return;
    };
    let Some(fx) = common::mount(
        replicafs::fixture::Fixture::builder()
            .rsync_target(&d.url("push"), None, &d.module_dir("push"))
            .unwrap(),
    ) else {
        return;
    };
    write_sparse(
        &fx.mnt().join("db"),
        196 * K,
        &[(0, 64 * K), (116 * K, 196 * K)],
    );
    if blocks(&fx.source().join("db")) >= 196 * 2 {
        eprintln!("SKIPPED: SOURCE's file system does not keep holes");
        return;
    }
    write_sparse(&fx.mnt().join("image"), 10 << 20, &ten_mib_five_percent());
    fx.sync().unwrap();
    same_file(&fx, "db");
    same_file(&fx, "image");
    // Rewritten in place: a range of data and a punched hole.
    let f = OpenOptions::new()
        .write(true)
        .open(fx.mnt().join("image"))
        .unwrap();
    f.write_all_at(&[9u8; 8192], 5 << 20).unwrap();
    rustix::fs::fallocate(
        &f,
        rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
        1 << 20,
        1 << 20,
    )
    .unwrap();
    drop(f);
    fx.sync().unwrap();
    assert_eq!(
        std::fs::read(fx.source().join("image")).unwrap(),
        std::fs::read(fx.target().join("image")).unwrap()
    );
    let (s, t) = (
        blocks(&fx.source().join("image")),
        blocks(&fx.target().join("image")),
    );
    eprintln!("image after an in-place rewrite: SOURCE {s} blocks, module {t}");
    assert!(
        t <= s + 8,
        "the module's copy holds more blocks ({t}) than SOURCE ({s})"
    );
}

/// A sparse file already in SOURCE when the mount starts: the start-up
/// reconcile copies it with its holes.
#[test]
fn the_start_up_reconcile_keeps_holes() {
    if replicafs::fixture::fuse_available().is_err() {
        common::fixture();
        return;
    }
    let d = common::Dirs::new();
    write_sparse(&d.p("src/db"), 196 * K, &[(0, 64 * K), (116 * K, 196 * K)]);
    if blocks(&d.p("src/db")) >= 196 * 2 {
        eprintln!("SKIPPED: SOURCE's file system does not keep holes");
        return;
    }
    write_sparse(&d.p("src/image"), 10 << 20, &ten_mib_five_percent());
    // A stale, filled copy on the target: the reconcile punches it. (Its
    // mtime set apart: written in the same clock tick as SOURCE's, size
    // and mtime would match and the quick compare would trust it.)
    std::fs::write(d.p("target/image"), vec![0u8; 10 << 20]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(d.p("target/image"))
        .unwrap()
        .set_modified(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
        .unwrap();
    let run = |args: Vec<String>| {
        let out = common::bin("info").args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(d.mount_args("target", &["--daemon"]));
    run(vec![
        "sync".into(),
        d.s("mnt"),
        "--timeout".into(),
        "60s".into(),
    ]);
    for name in ["db", "image"] {
        let (s, t) = (d.p("src").join(name), d.p("target").join(name));
        let (a, b) = (std::fs::read(&s).unwrap(), std::fs::read(&t).unwrap());
        let first = a.iter().zip(&b).position(|(x, y)| x != y);
        assert!(
            a == b,
            "{name}: contents differ ({} vs {} bytes, first at {first:?})",
            a.len(),
            b.len()
        );
        let (a, b) = (blocks(&s), blocks(&t));
        eprintln!("{name} after the start-up reconcile: SOURCE {a} blocks, target {b}");
        assert!(a.abs_diff(b) <= 8, "{name}: SOURCE {a} blocks, target {b}");
    }
    run(vec!["unmount".into(), d.s("mnt")]);
}
