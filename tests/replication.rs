//! Replication to a directory target with real mounts: every mutating
//! operation, then a barrier, leaves the target equal to SOURCE, by
//! `replicafs verify`'s comparison and by an independent one.
#![cfg(target_os = "linux")]

mod common;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use replicafs::cli::Consistency;
use replicafs::fixture::Fixture;
use rustix::fs::{AtFlags, CWD, FallocateFlags, RenameFlags, XattrFlags};

/// Barrier, then both comparisons.
fn assert_replicated(fx: &Fixture, what: &str) {
    fx.sync()
        .unwrap_or_else(|e| panic!("{what}: sync failed: {e}"));
    let diffs = fx.verify().unwrap();
    assert!(
        diffs.is_empty(),
        "{what}: target differs from SOURCE:\n{}",
        diffs.join("\n")
    );
    common::assert_same_tree(
        what,
        &common::snapshot(fx.source(), true),
        &common::snapshot(fx.target(), true),
    );
}

fn ren(fx: &Fixture, a: &str, b: &str, flags: RenameFlags) {
    rustix::fs::renameat_with(CWD, fx.mnt().join(a), CWD, fx.mnt().join(b), flags).unwrap();
}

#[test]
fn every_operation_reaches_the_target() {
    let Some(fx) = common::fixture() else { return };
    let m = |p: &str| fx.mnt().join(p);
    // Files, directories, special files.
    std::fs::create_dir_all(m("a/b/c")).unwrap();
    std::fs::write(m("a/b/c/file"), b"hello").unwrap();
    std::fs::write(m("plain"), vec![7u8; 100_000]).unwrap();
    rustix::fs::mknodat(
        CWD,
        m("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    std::os::unix::fs::symlink("a/b/c/file", m("link")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", m("dangling")).unwrap();
    std::fs::hard_link(m("plain"), m("plain-hard")).unwrap();
    std::fs::hard_link(m("a/b/c/file"), m("a/second-name")).unwrap();
    assert_replicated(&fx, "creations");

    // Overwrites in the middle, O_APPEND, truncate down and up, sparse.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m("plain"))
        .unwrap();
    f.write_at(b"MIDDLE", 50_000).unwrap();
    drop(f);
    let mut a = std::fs::OpenOptions::new()
        .append(true)
        .open(m("a/b/c/file"))
        .unwrap();
    a.write_all(b" appended").unwrap();
    a.write_all(b" twice").unwrap();
    drop(a);
    let t = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(m("trunc"))
        .unwrap();
    t.write_at(&[1u8; 10_000], 0).unwrap();
    t.set_len(3000).unwrap();
    t.set_len(20_000).unwrap();
    drop(t);
    let s = File::create(m("sparse")).unwrap();
    s.write_at(b"far", 50 << 20).unwrap();
    s.write_at(b"near", 10).unwrap();
    drop(s);
    assert_replicated(&fx, "data");

    // Holes: punch, zero range, preallocate.
    let h = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m("plain"))
        .unwrap();
    rustix::fs::fallocate(
        &h,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        8192,
        16384,
    )
    .unwrap();
    rustix::fs::fallocate(&h, FallocateFlags::ZERO_RANGE, 60_000, 100).unwrap();
    rustix::fs::fallocate(&h, FallocateFlags::empty(), 0, 200_000).unwrap();
    drop(h);
    assert_replicated(&fx, "fallocate");

    // Metadata.
    std::fs::set_permissions(m("plain"), std::fs::Permissions::from_mode(0o4751)).unwrap();
    std::fs::set_permissions(m("a/b"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(m("trunc"), Some(1234), Some(4321)).unwrap();
    std::os::unix::fs::lchown(m("link"), Some(55), Some(66)).unwrap();
    let ts = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 1,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 1_100_000_000,
            tv_nsec: 123_456_789,
        },
    };
    rustix::fs::utimensat(CWD, m("sparse"), &ts, AtFlags::empty()).unwrap();
    rustix::fs::utimensat(CWD, m("dangling"), &ts, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    rustix::fs::setxattr(m("plain"), "user.colour", b"blue", XattrFlags::empty()).unwrap();
    rustix::fs::setxattr(m("a"), "user.dir", b"yes", XattrFlags::empty()).unwrap();
    rustix::fs::setxattr(m("trunc"), "user.gone", b"x", XattrFlags::empty()).unwrap();
    rustix::fs::removexattr(m("trunc"), "user.gone").unwrap();
    assert_replicated(&fx, "metadata");

    // Renames: plain, over an existing file, NOREPLACE, EXCHANGE of a file
    // and a directory, a directory with contents.
    ren(&fx, "trunc", "trunc2", RenameFlags::empty());
    std::fs::write(m("victim"), b"to be replaced").unwrap();
    ren(&fx, "trunc2", "victim", RenameFlags::empty());
    ren(&fx, "sparse", "sparse2", RenameFlags::NOREPLACE);
    ren(&fx, "sparse2", "a/b", RenameFlags::EXCHANGE);
    ren(&fx, "a", "moved-a", RenameFlags::empty());
    assert_replicated(&fx, "renames");

    // Unlinks and rmdirs; removing one name of a hard-linked file.
    std::fs::remove_file(m("plain-hard")).unwrap();
    std::fs::remove_file(m("fifo")).unwrap();
    std::fs::remove_dir_all(m("sparse2/c")).unwrap();
    assert_replicated(&fx, "removals");
    fx.unmount().unwrap();
}

#[test]
fn dirty_open_files_renamed_unlinked_and_racing() {
    let Some(fx) = common::fixture() else { return };
    let m = |p: &str| fx.mnt().join(p);
    // A file renamed while dirty and open: its data lands under the new name.
    let f = File::create(m("dirty")).unwrap();
    f.write_at(&[1u8; 300_000], 0).unwrap();
    std::fs::create_dir(m("d")).unwrap();
    std::fs::rename(m("dirty"), m("d/renamed")).unwrap();
    f.write_at(b"after the rename", 1000).unwrap();
    // Unlink of an open file: its later writes go nowhere, and a new file
    // of the same name does not get them.
    let g = File::create(m("doomed")).unwrap();
    g.write_at(b"old data that must not reappear", 0).unwrap();
    std::fs::remove_file(m("doomed")).unwrap();
    g.write_at(b"written after unlink", 0).unwrap();
    std::fs::write(m("doomed"), b"new").unwrap();
    // Rename over an existing file that has dirty data pending.
    let v = File::create(m("over")).unwrap();
    v.write_at(b"pending", 0).unwrap();
    std::fs::write(m("src"), b"replacement").unwrap();
    std::fs::rename(m("src"), m("over")).unwrap();
    v.write_at(b"more to the replaced inode", 0).unwrap();
    drop((f, g, v));
    assert_replicated(&fx, "dirty open files");

    // Writers racing renames of the same file.
    std::fs::write(m("race"), vec![0u8; 1 << 20]).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m("race"))
        .unwrap();
    let writer = std::thread::spawn(move || {
        for i in 0..2000u64 {
            f.write_at(&i.to_le_bytes(), (i * 4096) % (1 << 20))
                .unwrap();
        }
    });
    for i in 0..200 {
        let (a, b) = if i % 2 == 0 {
            ("race", "race2")
        } else {
            ("race2", "race")
        };
        std::fs::rename(m(a), m(b)).unwrap();
    }
    writer.join().unwrap();
    assert_replicated(&fx, "writes racing renames");
}

#[test]
fn fsync_is_a_barrier_and_sync_mode_waits_for_the_target() {
    let Some(fx) = common::fixture() else { return };
    let f = File::create(fx.mnt().join("f")).unwrap();
    f.write_at(b"durable", 0).unwrap();
    f.sync_all().unwrap();
    assert_eq!(
        std::fs::read(fx.target().join("f")).unwrap(),
        b"durable",
        "fsync returned before the target had the data"
    );
    drop(f);
    fx.unmount().unwrap();

    let Some(fx) = common::mount(Fixture::builder().consistency(Consistency::Sync)) else {
        return;
    };
    for i in 0..20 {
        std::fs::write(fx.mnt().join(format!("s{i}")), format!("sync {i}")).unwrap();
        assert_eq!(
            std::fs::read_to_string(fx.target().join(format!("s{i}"))).unwrap(),
            format!("sync {i}"),
            "a write returned in sync mode before the target had it"
        );
    }
    std::fs::rename(fx.mnt().join("s0"), fx.mnt().join("renamed")).unwrap();
    assert!(fx.target().join("renamed").exists());
}

#[test]
fn the_target_catches_up_after_an_outage() {
    let Some(fx) = common::fixture() else { return };
    std::fs::write(fx.mnt().join("before"), b"1").unwrap();
    assert_replicated(&fx, "before the outage");
    // The target directory disappears: writes through the mount still work.
    let away = fx.target().with_extension("away");
    std::fs::rename(fx.target(), &away).unwrap();
    std::fs::write(fx.mnt().join("during"), b"2").unwrap();
    std::fs::create_dir(fx.mnt().join("dir-during")).unwrap();
    let failing = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        fx.engine().target_status()[0].state == "failing"
    });
    assert!(
        failing,
        "status should say failing: {:?}",
        fx.engine().target_status()
    );
    assert!(fx.engine().barrier(Duration::from_millis(200)).is_err());
    // It comes back empty: the engine notices and reconciles everything.
    std::fs::create_dir(fx.target()).unwrap();
    std::fs::write(fx.mnt().join("after"), b"3").unwrap();
    assert_replicated(&fx, "after the outage");
    assert_eq!(fx.engine().target_status()[0].state, "in_sync");
    drop(away);
}

/// A small deterministic generator (xorshift), so a failure names a seed.
pub struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One random operation through the mount; errors (a missing name, a
/// non-empty directory) are part of the game. Returns what it did.
pub fn random_op(rng: &mut Rng, root: &Path) -> String {
    let dir = |r: &mut Rng| match r.below(4) {
        0 => String::new(),
        n => format!("d{n}/"),
    };
    let name = |r: &mut Rng| format!("{}f{}", dir(r), r.below(12));
    let p = |s: &str| root.join(s);
    let (what, r): (String, std::io::Result<()>) = match rng.below(16) {
        0..=4 => {
            let n = name(rng);
            let off = rng.below(300_000);
            let len = 1 + rng.below(70_000);
            let byte = rng.below(256) as u8;
            let r = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(p(&n))
                .and_then(|f| f.write_all_at(&vec![byte; len as usize], off));
            (format!("write {n} {off}+{len}"), r)
        }
        5 => {
            let n = name(rng);
            let size = rng.below(200_000);
            let r = std::fs::OpenOptions::new()
                .write(true)
                .open(p(&n))
                .and_then(|f| f.set_len(size));
            (format!("truncate {n} {size}"), r)
        }
        6 | 7 => {
            let (a, b) = (name(rng), name(rng));
            (format!("rename {a} {b}"), std::fs::rename(p(&a), p(&b)))
        }
        8 => {
            let n = name(rng);
            (format!("unlink {n}"), std::fs::remove_file(p(&n)))
        }
        9 => {
            let n = format!("d{}", 1 + rng.below(3));
            (format!("mkdir {n}"), std::fs::create_dir(p(&n)))
        }
        10 => {
            let n = format!("d{}", 1 + rng.below(3));
            (format!("rmdir {n}"), std::fs::remove_dir(p(&n)))
        }
        11 => {
            let (a, b) = (name(rng), name(rng));
            (format!("link {a} {b}"), std::fs::hard_link(p(&a), p(&b)))
        }
        12 => {
            let (t, n) = (format!("target{}", rng.below(5)), name(rng));
            (
                format!("symlink {t} {n}"),
                std::os::unix::fs::symlink(&t, p(&n)),
            )
        }
        13 => {
            let (n, mode) = (name(rng), 0o600 + rng.below(0o177) as u32);
            (
                format!("chmod {n} {mode:o}"),
                std::fs::set_permissions(p(&n), std::fs::Permissions::from_mode(mode)),
            )
        }
        14 => {
            let (n, k, v) = (
                name(rng),
                format!("user.k{}", rng.below(3)),
                rng.below(1000),
            );
            let r = rustix::fs::setxattr(p(&n), k.as_str(), &v.to_le_bytes(), XattrFlags::empty())
                .map_err(Into::into);
            (format!("setxattr {n} {k}"), r)
        }
        _ => {
            let n = name(rng);
            let r = std::fs::OpenOptions::new()
                .append(true)
                .open(p(&n))
                .and_then(|mut f| f.write_all(b"appended"));
            (format!("append {n}"), r)
        }
    };
    match r {
        Ok(()) => what,
        Err(e) => format!("{what} -> {}", e.kind()),
    }
}

#[test]
fn randomized_operations_match_at_every_barrier() {
    let Some(fx) = common::fixture() else { return };
    let seed = std::env::var("REPLICAFS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("randomized test seed {seed} (rerun with REPLICAFS_SEED={seed})");
    let mut rng = Rng(seed);
    let mut barriers = 0;
    let mut since = Vec::new();
    for i in 0..3000 {
        since.push(random_op(&mut rng, fx.mnt()));
        let step = std::env::var_os("REPLICAFS_STEP").is_some();
        if rng.below(150) == 0 || i == 2999 || step {
            barriers += 1;
            fx.sync().unwrap();
            let diffs = fx.verify().unwrap();
            assert!(
                diffs.is_empty(),
                "seed {seed}, after op {i}:\n{}\nops since the last barrier:\n{}",
                diffs.join("\n"),
                since.join("\n")
            );
            since.clear();
        }
    }
    eprintln!("{barriers} barriers, all identical");
}

#[test]
fn status_reports_the_contract_fields() {
    let Some(fx) = common::fixture() else { return };
    std::fs::write(fx.mnt().join("x"), b"x").unwrap();
    fx.sync().unwrap();
    let st = fx.engine().target_status();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].state, "in_sync");
    assert_eq!(st[0].pending_ops, 0);
    assert!(st[0].replicated_bytes >= 1);
    let want = match std::env::var("REPLICAFS_IO").as_deref() {
        Ok("uring") => "uring",
        _ => "portable",
    };
    assert_eq!(fx.engine().io_backend(), want);
}

#[test]
fn changes_made_directly_in_source_are_replicated() {
    let Some(fx) = common::fixture() else { return };
    std::fs::write(fx.mnt().join("through"), b"via the mount").unwrap();
    assert_replicated(&fx, "through the mount");
    // Behind the mount's back: new file, overwrite, removal, new directory.
    std::fs::write(fx.source().join("outside"), b"written directly").unwrap();
    std::fs::write(fx.source().join("through"), b"changed directly").unwrap();
    std::fs::create_dir(fx.source().join("dir")).unwrap();
    std::fs::write(fx.source().join("dir/deep"), vec![9u8; 100_000]).unwrap();
    let start = std::time::Instant::now();
    loop {
        let diffs = fx.verify().unwrap();
        if diffs.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "changes made directly in SOURCE did not reach the target:\n{}",
            diffs.join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_file(fx.source().join("outside")).unwrap();
    let start = std::time::Instant::now();
    while fx.target().join("outside").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "a removal in SOURCE was not replicated"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("out-of-band changes replicated in {:?}", start.elapsed());
}

/// A target that fills up (ENOSPC): the mount keeps working, the target
/// says failing, and it catches up once there is room again.
#[test]
fn a_full_target_fails_then_catches_up() {
    if !common::is_root() {
        eprintln!("SKIPPED: mounting a small tmpfs as the target needs root");
        return;
    }
    let Some(fx) = common::fixture() else { return };
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(fx.target())
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    struct Umount(std::path::PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _guard = Umount(fx.target().to_path_buf());
    fx.sync().unwrap();
    std::fs::write(fx.mnt().join("small"), b"fits").unwrap();
    std::fs::write(fx.mnt().join("huge"), vec![1u8; 3 << 20]).unwrap();
    let failing = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        fx.engine().target_status()[0].state == "failing"
    });
    let st = fx.engine().target_status();
    assert!(failing, "a full target should be failing: {st:?}");
    assert!(
        st[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("No space"),
        "{st:?}"
    );
    // The mount still works meanwhile.
    std::fs::write(fx.mnt().join("during"), b"still writable").unwrap();
    std::fs::remove_file(fx.mnt().join("huge")).unwrap();
    assert_replicated(&fx, "after room was made");
}
