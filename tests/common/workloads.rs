//! Workloads shared by the replication tests of every target kind.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

use replicafs::fixture::Fixture;
use rustix::fs::{AtFlags, CWD, FallocateFlags, RenameFlags, XattrFlags};

fn ren(fx: &Fixture, a: &str, b: &str, flags: RenameFlags) {
    rustix::fs::renameat_with(CWD, fx.mnt().join(a), CWD, fx.mnt().join(b), flags).unwrap();
}

/// Every kind of change through the mount, in rounds, with `check` after
/// each round (a barrier and comparisons). `xattrs`: include xattr changes
/// (targets that keep them).
pub fn every_operation(fx: &Fixture, check: &dyn Fn(&Fixture, &str), xattrs: bool) {
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
    check(fx, "creations");

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
    check(fx, "data");

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
    check(fx, "fallocate");

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
    if xattrs {
        rustix::fs::setxattr(m("plain"), "user.colour", b"blue", XattrFlags::empty()).unwrap();
        rustix::fs::setxattr(m("a"), "user.dir", b"yes", XattrFlags::empty()).unwrap();
        rustix::fs::setxattr(m("trunc"), "user.gone", b"x", XattrFlags::empty()).unwrap();
        rustix::fs::removexattr(m("trunc"), "user.gone").unwrap();
    }
    check(fx, "metadata");

    // Renames: plain, over an existing file, NOREPLACE, EXCHANGE of a file
    // and a directory, a directory with contents.
    ren(fx, "trunc", "trunc2", RenameFlags::empty());
    std::fs::write(m("victim"), b"to be replaced").unwrap();
    ren(fx, "trunc2", "victim", RenameFlags::empty());
    ren(fx, "sparse", "sparse2", RenameFlags::NOREPLACE);
    ren(fx, "sparse2", "a/b", RenameFlags::EXCHANGE);
    ren(fx, "a", "moved-a", RenameFlags::empty());
    check(fx, "renames");

    // Unlinks and rmdirs; removing one name of a hard-linked file.
    std::fs::remove_file(m("plain-hard")).unwrap();
    std::fs::remove_file(m("fifo")).unwrap();
    std::fs::remove_dir_all(m("sparse2/c")).unwrap();
    check(fx, "removals");
}

/// A small deterministic generator (xorshift), so a failure names a seed.
pub struct Rng(pub u64);

/// A randomized test's barrier: `sync`, then SOURCE and the target must
/// be identical; a failure names the seed and the ops since the last one.
pub fn barrier(fx: &Fixture, seed: u64, i: usize, since: &mut Vec<String>) {
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

/// The seed of a randomized test: REPLICAFS_SEED, else the clock; printed
/// so that a failure can be replayed.
pub fn seed() -> u64 {
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
    seed
}

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One random operation through the mount; errors (a missing name, a
/// non-empty directory) are part of the game. Returns what it did.
/// What a target keeps, beyond data, names and modes.
#[derive(Clone, Copy)]
pub struct Keeps {
    pub xattrs: bool,
    /// Hard links between symlinks.
    pub linked_symlinks: bool,
    /// Hard links at all, under random interleavings.
    pub hard_links: bool,
}

pub const EVERYTHING: Keeps = Keeps {
    xattrs: true,
    linked_symlinks: true,
    hard_links: true,
};

pub fn random_op(rng: &mut Rng, root: &Path, keeps: Keeps) -> String {
    let dir = |r: &mut Rng| match r.below(4) {
        0 => String::new(),
        n => format!("d{n}/"),
    };
    let name = |r: &mut Rng| format!("{}f{}", dir(r), r.below(12));
    let p = |s: &str| root.join(s);
    let mut pick = rng.below(16);
    if pick == 14 && !keeps.xattrs {
        pick = 13;
    }
    let (what, r): (String, std::io::Result<()>) = match pick {
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
            if !keeps.hard_links {
                return format!("link {a} {b} -> skipped (no hard links)");
            }
            let symlink = std::fs::symlink_metadata(p(&a)).is_ok_and(|m| m.is_symlink());
            if symlink && !keeps.linked_symlinks {
                return format!("link {a} {b} -> skipped (a symlink)");
            }
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
