//! POSIX conformance through the mount: each scenario runs the same calls
//! on a plain directory and through a replicafs mount, and the results
//! (values and errnos) must be identical; then SOURCE must hold exactly
//! what the plain directory holds, and the mount must show exactly SOURCE.
#![cfg(target_os = "linux")]

mod common;

use std::fmt::Debug;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, CWD, FallocateFlags, Mode, OFlags, RenameFlags, XattrFlags};

/// Runs calls under a root directory and records what each returned.
struct Probe {
    root: PathBuf,
    log: Vec<String>,
}

fn errno_name(e: &io::Error) -> String {
    let Some(code) = e.raw_os_error() else {
        return format!("non-os error {e}");
    };
    let name = match code {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::ERANGE => "ERANGE",
        libc::ENXIO => "ENXIO",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EMLINK => "EMLINK",
        libc::EBUSY => "EBUSY",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        other => return format!("errno {other}"),
    };
    name.to_string()
}

impl Probe {
    fn new(root: &Path) -> Self {
        Probe {
            root: root.to_path_buf(),
            log: Vec::new(),
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Records the outcome; the value is kept only when it is the same on
    /// every filesystem (callers map away inode numbers, fds, times).
    fn rec<T: Debug>(&mut self, what: &str, r: io::Result<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.log.push(format!("{what}: ok {v:?}"));
                Some(v)
            }
            Err(e) => {
                self.log.push(format!("{what}: {}", errno_name(&e)));
                None
            }
        }
    }

    fn rec_unit<T>(&mut self, what: &str, r: io::Result<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.log.push(format!("{what}: ok"));
                Some(v)
            }
            Err(e) => {
                self.log.push(format!("{what}: {}", errno_name(&e)));
                None
            }
        }
    }

    fn open(&mut self, what: &str, rel: &str, flags: OFlags, mode: u32) -> Option<File> {
        let r = rustix::fs::open(
            self.p(rel),
            flags | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map(File::from)
        .map_err(io::Error::from);
        self.rec_unit(what, r)
    }

    /// What stat says, minus what differs between any two filesystems.
    fn stat(&mut self, rel: &str) {
        let r = std::fs::symlink_metadata(self.p(rel)).map(|m| {
            format!(
                "type={:o} mode={:o} size={} nlink={} uid={} gid={}",
                m.mode() & 0o170000,
                m.mode() & 0o7777,
                if m.is_dir() { 0 } else { m.size() },
                if m.is_dir() { 0 } else { m.nlink() },
                m.uid(),
                m.gid()
            )
        });
        self.rec(&format!("stat {rel}"), r);
    }

    fn content(&mut self, rel: &str) {
        let r = std::fs::read(self.p(rel)).map(|d| {
            if d.len() <= 64 {
                format!("{:?}", String::from_utf8_lossy(&d))
            } else {
                format!("{} bytes hash {:016x}", d.len(), common::fnv(&d))
            }
        });
        self.rec(&format!("content {rel}"), r);
    }

    fn list(&mut self, rel: &str) {
        let r = std::fs::read_dir(self.p(rel)).and_then(|rd| {
            let mut names = rd
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<io::Result<Vec<_>>>()?;
            names.sort();
            Ok(names)
        });
        self.rec(&format!("list {rel}"), r);
    }
}

/// Runs `scenario` on a plain directory and through a mount; everything
/// observable must agree.
fn conform(scenario: fn(&mut Probe)) {
    let Some(fx) = common::fixture() else { return };
    let plain = tempfile::tempdir().unwrap();
    let mut expected = Probe::new(plain.path());
    scenario(&mut expected);
    let mut got = Probe::new(fx.mnt());
    scenario(&mut got);
    let diffs: Vec<String> = expected
        .log
        .iter()
        .zip(got.log.iter())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("  plain: {a}\n  mount: {b}"))
        .collect();
    assert!(
        diffs.is_empty() && expected.log.len() == got.log.len(),
        "results differ from a plain directory:\n{}\n(full mount log:\n{})",
        diffs.join("\n"),
        got.log.join("\n")
    );
    let plain_tree = common::snapshot(plain.path(), false);
    common::assert_same_tree(
        "SOURCE vs plain directory",
        &plain_tree,
        &common::snapshot(fx.source(), false),
    );
    common::assert_same_tree(
        "mount vs SOURCE",
        &common::snapshot(fx.source(), true),
        &common::snapshot(fx.mnt(), true),
    );
    fx.unmount().expect("unmount");
}

#[test]
fn files_open_read_write_truncate() {
    conform(|t| {
        let rw = OFlags::RDWR;
        t.open(
            "create excl",
            "f",
            rw | OFlags::CREATE | OFlags::EXCL,
            0o640,
        );
        t.open(
            "create excl again",
            "f",
            rw | OFlags::CREATE | OFlags::EXCL,
            0o640,
        );
        if let Some(mut f) = t.open("open rw", "f", rw, 0) {
            let r = f.write_all(b"hello world");
            t.rec_unit("write", r);
            let r = f.write_at(b"WORLD", 6);
            t.rec("pwrite", r);
            let mut s = String::new();
            let r = f
                .seek(SeekFrom::Start(0))
                .and_then(|_| f.read_to_string(&mut s));
            t.rec("read back", r.map(|_| s));
        }
        t.stat("f");
        for i in 0..2 {
            if let Some(mut a) = t.open("open append", "f", OFlags::WRONLY | OFlags::APPEND, 0) {
                let r = a.write_all(format!("+{i}").as_bytes());
                t.rec_unit("append", r);
                // O_APPEND ignores the offset of pwrite on Linux.
                let r = a.write_at(b"@", 0);
                t.rec("pwrite on append", r);
            }
        }
        t.content("f");
        if let Some(f) = t.open("open wronly", "f", OFlags::WRONLY, 0) {
            let mut b = [0u8; 4];
            let r = (&f).read(&mut b);
            t.rec("read from wronly", r);
        }
        if let Some(f) = t.open("open rdonly", "f", OFlags::RDONLY, 0) {
            let r = (&f).write(b"x");
            t.rec("write to rdonly", r);
        }
        t.open("open trunc", "f", OFlags::WRONLY | OFlags::TRUNC, 0);
        t.stat("f");
        // Large I/O: one 3 MiB write, read back.
        let big: Vec<u8> = (0..3 * 1024 * 1024u32)
            .map(|i| (i * 7 + i / 4096) as u8)
            .collect();
        if let Some(mut f) = t.open("create big", "big", OFlags::WRONLY | OFlags::CREATE, 0o644) {
            let r = f.write_all(&big);
            t.rec_unit("write 3 MiB", r);
        }
        t.content("big");
        // Sparse file and truncation up and down, by path and by fd.
        if let Some(f) = t.open(
            "create sparse",
            "sparse",
            OFlags::RDWR | OFlags::CREATE,
            0o600,
        ) {
            let r = f.write_at(b"end", 10 << 20);
            t.rec("write at 10 MiB", r);
            let r = f.set_len(5);
            t.rec_unit("ftruncate down", r);
            let r = f.set_len(1 << 20);
            t.rec_unit("ftruncate up", r);
            let r = f.sync_all();
            t.rec_unit("fsync", r);
            let r = f.sync_data();
            t.rec_unit("fdatasync", r);
        }
        t.stat("sparse");
        t.content("sparse");
        let r = std::fs::OpenOptions::new()
            .write(true)
            .open(t.p("sparse"))
            .and_then(|f| f.set_len(77));
        t.rec_unit("truncate path", r);
        t.stat("sparse");
        // Error cases.
        t.open("open missing", "missing", OFlags::RDONLY, 0);
        t.open("open under file", "f/x", OFlags::RDONLY, 0);
        t.open(
            "O_DIRECTORY on file",
            "f",
            OFlags::RDONLY | OFlags::DIRECTORY,
            0,
        );
        let long = "n".repeat(256);
        t.open("name too long", &long, OFlags::RDWR | OFlags::CREATE, 0o644);
        t.open(
            "create in missing dir",
            "nodir/f",
            OFlags::RDWR | OFlags::CREATE,
            0o644,
        );
        std::fs::create_dir(t.p("dir")).unwrap();
        t.open("open dir for writing", "dir", OFlags::WRONLY, 0);
        // An unlinked open file stays readable and writable.
        if let Some(f) = t.open(
            "create doomed",
            "doomed",
            OFlags::RDWR | OFlags::CREATE,
            0o644,
        ) {
            let r = f.write_at(b"still here", 0);
            t.rec("write doomed", r);
            let r = std::fs::remove_file(t.p("doomed"));
            t.rec_unit("unlink open file", r);
            let mut s = String::new();
            let r = (&f).read_to_string(&mut s);
            t.rec("read unlinked", r.map(|_| s));
            let r = f.metadata().map(|m| m.nlink());
            t.rec("nlink of unlinked", r);
            let r = f.write_at(b"!", 10);
            t.rec("write unlinked", r);
        }
        t.list("");
    });
}

#[test]
fn directories() {
    conform(|t| {
        let r = std::fs::DirBuilder::new()
            .mode_compat(0o750)
            .create(t.p("d"));
        t.rec_unit("mkdir", r);
        let r = std::fs::create_dir(t.p("d"));
        t.rec_unit("mkdir again", r);
        let r = std::fs::create_dir(t.p("d/sub"));
        t.rec_unit("mkdir sub", r);
        let r = std::fs::create_dir(t.p("nope/sub"));
        t.rec_unit("mkdir in missing", r);
        let r = std::fs::remove_dir(t.p("d"));
        t.rec_unit("rmdir non-empty", r);
        std::fs::write(t.p("d/file"), b"x").unwrap();
        let r = std::fs::remove_dir(t.p("d/file"));
        t.rec_unit("rmdir file", r);
        let r = std::fs::remove_file(t.p("d/sub"));
        t.rec_unit("unlink dir", r);
        let r = std::fs::remove_dir(t.p("d/missing"));
        t.rec_unit("rmdir missing", r);
        let r = std::fs::remove_file(t.p("d/missing"));
        t.rec_unit("unlink missing", r);
        t.stat("d");
        // A directory larger than one readdir reply.
        std::fs::create_dir(t.p("many")).unwrap();
        for i in 0..1500 {
            std::fs::write(t.p(&format!("many/entry-with-a-longish-name-{i:05}")), b"").unwrap();
        }
        t.list("many");
        // Removing entries while a listing is under way must not lose the
        // rest (readdir may or may not return the removed ones).
        let mut seen = 0;
        let rd = std::fs::read_dir(t.p("many")).unwrap();
        for (i, e) in rd.enumerate() {
            let e = e.unwrap();
            if i % 3 == 0 {
                let _ = std::fs::remove_file(e.path());
            }
            seen += 1;
        }
        t.log
            .push(format!("listing while removing saw all: {}", seen >= 1000));
        let remaining = std::fs::read_dir(t.p("many")).unwrap().count();
        t.log.push(format!("remaining entries: {remaining}"));
        // rewinddir: a second pass over the same handle.
        let r = rustix::fs::open(t.p("d"), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
            .map_err(io::Error::from)
            .and_then(|fd| {
                let mut dir = rustix::fs::Dir::read_from(&fd)?;
                let first = (&mut dir).filter_map(Result::ok).count();
                dir.rewind();
                let second = dir.filter_map(Result::ok).count();
                rustix::fs::fsync(&fd)?;
                Ok((first, second))
            });
        t.rec("readdir twice + fsyncdir", r);
        let r = std::fs::remove_dir_all(t.p("d"));
        t.rec_unit("rm -r", r);
        t.list("");
    });
}

#[test]
fn symlinks_and_hard_links() {
    conform(|t| {
        std::fs::write(t.p("f"), b"data").unwrap();
        let r = std::os::unix::fs::symlink("f", t.p("rel"));
        t.rec_unit("symlink", r);
        let r = std::os::unix::fs::symlink("/etc/passwd", t.p("abs"));
        t.rec_unit("symlink absolute", r);
        let r = std::os::unix::fs::symlink("nowhere", t.p("dangling"));
        t.rec_unit("symlink dangling", r);
        let r = std::os::unix::fs::symlink("f", t.p("rel"));
        t.rec_unit("symlink existing", r);
        let r = std::fs::read_link(t.p("rel"));
        t.rec("readlink", r);
        let r = std::fs::read_link(t.p("abs"));
        t.rec("readlink absolute", r);
        let r = std::fs::read_link(t.p("f"));
        t.rec_unit("readlink regular", r);
        t.content("rel");
        t.open("open dangling", "dangling", OFlags::RDONLY, 0);
        t.open(
            "O_NOFOLLOW on symlink",
            "rel",
            OFlags::RDONLY | OFlags::NOFOLLOW,
            0,
        );
        t.stat("rel");
        let r = std::fs::hard_link(t.p("f"), t.p("g"));
        t.rec_unit("link", r);
        t.stat("f");
        t.stat("g");
        let r = std::fs::hard_link(t.p("f"), t.p("g"));
        t.rec_unit("link existing", r);
        std::fs::create_dir(t.p("dir")).unwrap();
        let r = std::fs::hard_link(t.p("dir"), t.p("dir2"));
        t.rec_unit("link directory", r);
        let r = std::fs::hard_link(t.p("missing"), t.p("x"));
        t.rec_unit("link missing", r);
        // A hard link to a symlink links the symlink itself.
        let r = rustix::fs::linkat(CWD, t.p("rel"), CWD, t.p("rel2"), AtFlags::empty())
            .map_err(io::Error::from);
        t.rec_unit("link symlink", r);
        t.stat("rel2");
        std::fs::write(t.p("g"), b"via g").unwrap();
        t.content("f");
        let r = std::fs::remove_file(t.p("f"));
        t.rec_unit("unlink one name", r);
        t.stat("g");
        t.list("");
    });
}

#[test]
fn renames() {
    conform(|t| {
        std::fs::write(t.p("a"), b"A").unwrap();
        std::fs::write(t.p("b"), b"B").unwrap();
        std::fs::write(t.p("c"), b"C").unwrap();
        std::fs::create_dir(t.p("d1")).unwrap();
        std::fs::create_dir(t.p("d2")).unwrap();
        std::fs::write(t.p("d2/x"), b"x").unwrap();
        std::fs::create_dir(t.p("empty")).unwrap();
        let r = std::fs::rename(t.p("a"), t.p("a2"));
        t.rec_unit("rename", r);
        let r = std::fs::rename(t.p("a2"), t.p("b"));
        t.rec_unit("rename over file", r);
        t.content("b");
        let rn = |t: &mut Probe, what: &str, a: &str, b: &str, f: RenameFlags| {
            let r = rustix::fs::renameat_with(CWD, t.p(a), CWD, t.p(b), f).map_err(io::Error::from);
            t.rec_unit(what, r);
        };
        rn(
            t,
            "noreplace onto existing",
            "b",
            "c",
            RenameFlags::NOREPLACE,
        );
        rn(t, "noreplace onto new", "b", "b2", RenameFlags::NOREPLACE);
        rn(t, "exchange files", "b2", "c", RenameFlags::EXCHANGE);
        t.content("b2");
        t.content("c");
        rn(t, "exchange file and dir", "c", "d1", RenameFlags::EXCHANGE);
        t.stat("c");
        t.stat("d1");
        rn(
            t,
            "exchange with missing",
            "c",
            "nothing",
            RenameFlags::EXCHANGE,
        );
        rn(t, "dir over non-empty dir", "c", "d2", RenameFlags::empty());
        rn(t, "dir over empty dir", "c", "empty", RenameFlags::empty());
        rn(t, "file over dir", "b2", "d2", RenameFlags::empty());
        rn(t, "dir over file", "d2", "d1", RenameFlags::empty());
        rn(t, "missing", "nothing", "x", RenameFlags::empty());
        rn(
            t,
            "dir into itself",
            "d2",
            "d2/inside",
            RenameFlags::empty(),
        );
        rn(t, "into other dir", "b2", "d2/moved", RenameFlags::empty());
        // A file renamed while open keeps taking writes under its new name.
        if let Some(f) = t.open("open for rename", "d2/moved", OFlags::RDWR, 0) {
            let r = std::fs::rename(t.p("d2/moved"), t.p("moved-again"));
            t.rec_unit("rename open file", r);
            let r = f.write_at(b"Z", 0);
            t.rec("write after rename", r);
        }
        t.content("moved-again");
        t.list("");
        t.list("d2");
    });
}

#[test]
fn attributes_modes_owners_times() {
    conform(|t| {
        std::fs::write(t.p("f"), b"0123456789").unwrap();
        std::fs::create_dir(t.p("d")).unwrap();
        std::os::unix::fs::symlink("f", t.p("l")).unwrap();
        let chmod = |t: &mut Probe, rel: &str, mode: u32| {
            let r = rustix::fs::chmod(t.p(rel), Mode::from_raw_mode(mode)).map_err(io::Error::from);
            t.rec_unit(&format!("chmod {rel} {mode:o}"), r);
            t.stat(rel);
        };
        chmod(t, "f", 0o604);
        chmod(t, "f", 0o4755);
        chmod(t, "f", 0o2755);
        chmod(t, "d", 0o1777);
        chmod(t, "missing", 0o644);
        let r = std::os::unix::fs::chown(t.p("f"), Some(1234), Some(5678));
        t.rec_unit("chown", r);
        t.stat("f");
        let r = std::os::unix::fs::chown(t.p("f"), None, Some(42));
        t.rec_unit("chgrp only", r);
        t.stat("f");
        let r = std::os::unix::fs::lchown(t.p("l"), Some(77), Some(88));
        t.rec_unit("lchown symlink", r);
        t.stat("l");
        t.stat("f");
        // Times: explicit, UTIME_OMIT, UTIME_NOW, by path and by fd.
        let ts = |s: i64, n: i64| rustix::fs::Timespec {
            tv_sec: s,
            tv_nsec: n as _,
        };
        let times = rustix::fs::Timestamps {
            last_access: ts(1_000_000_000, 500_000_000),
            last_modification: ts(1_234_567_890, 123_456_789),
        };
        let r =
            rustix::fs::utimensat(CWD, t.p("f"), &times, AtFlags::empty()).map_err(io::Error::from);
        t.rec_unit("utimensat", r);
        let times_of = |p: &Path| {
            std::fs::symlink_metadata(p)
                .map(|m| (m.atime(), m.atime_nsec(), m.mtime(), m.mtime_nsec()))
        };
        let r = times_of(&t.p("f"));
        t.rec("times", r);
        let omit_atime = rustix::fs::Timestamps {
            last_access: ts(0, rustix::fs::UTIME_OMIT),
            last_modification: ts(2_000_000_000, 0),
        };
        let r = rustix::fs::utimensat(CWD, t.p("f"), &omit_atime, AtFlags::empty())
            .map_err(io::Error::from);
        t.rec_unit("utimensat omit atime", r);
        let r = times_of(&t.p("f"));
        t.rec("times after omit", r);
        let now = rustix::fs::Timestamps {
            last_access: ts(0, rustix::fs::UTIME_OMIT),
            last_modification: ts(0, rustix::fs::UTIME_NOW),
        };
        let r =
            rustix::fs::utimensat(CWD, t.p("f"), &now, AtFlags::empty()).map_err(io::Error::from);
        t.rec_unit("utimensat now", r);
        let recent = std::fs::metadata(t.p("f")).map(|m| {
            let age = SystemTime::now()
                .duration_since(UNIX_EPOCH + Duration::new(m.mtime() as u64, 0))
                .unwrap_or_default();
            age < Duration::from_secs(30)
        });
        t.rec("mtime is now", recent);
        let r = rustix::fs::utimensat(CWD, t.p("l"), &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io::Error::from);
        t.rec_unit("utimensat symlink nofollow", r);
        let r = times_of(&t.p("l"));
        t.rec("symlink times", r);
        if let Some(f) = t.open("open", "d", OFlags::RDONLY | OFlags::DIRECTORY, 0) {
            let r = rustix::fs::futimens(&f, &times).map_err(io::Error::from);
            t.rec_unit("futimens dir", r);
        }
        let r = times_of(&t.p("d"));
        t.rec("dir times", r);
    });
}

#[test]
fn special_files() {
    conform(|t| {
        let mk = |t: &mut Probe, rel: &str, kind: rustix::fs::FileType, dev: u64| {
            let r = rustix::fs::mknodat(CWD, t.p(rel), kind, Mode::from_raw_mode(0o640), dev)
                .map_err(io::Error::from);
            t.rec_unit(&format!("mknod {rel}"), r);
            t.stat(rel);
        };
        mk(t, "fifo", rustix::fs::FileType::Fifo, 0);
        mk(t, "sock", rustix::fs::FileType::Socket, 0);
        mk(t, "regular", rustix::fs::FileType::RegularFile, 0);
        if common::is_root() {
            mk(
                t,
                "null",
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::makedev(1, 3),
            );
            mk(
                t,
                "loop",
                rustix::fs::FileType::BlockDevice,
                rustix::fs::makedev(7, 200),
            );
            let r = std::fs::symlink_metadata(t.p("null")).map(|m| m.rdev());
            t.rec("rdev", r);
        }
        mk(t, "fifo", rustix::fs::FileType::Fifo, 0);
        t.list("");
    });
}

#[test]
fn extended_attributes() {
    conform(|t| {
        std::fs::write(t.p("f"), b"x").unwrap();
        std::fs::create_dir(t.p("d")).unwrap();
        let set = |t: &mut Probe, rel: &str, k: &str, v: &[u8], f: XattrFlags| {
            let r = rustix::fs::setxattr(t.p(rel), k, v, f).map_err(io::Error::from);
            t.rec_unit(&format!("setxattr {rel} {k} {f:?}"), r);
        };
        let get = |t: &mut Probe, rel: &str, k: &str, size: usize| {
            let mut buf = vec![0u8; size];
            let r = if size == 0 {
                rustix::fs::getxattr_query(t.p(rel), k)
            } else {
                rustix::fs::getxattr(t.p(rel), k, &mut buf[..])
            }
            .map_err(io::Error::from)
            .map(|n| {
                String::from_utf8_lossy(&buf[..n.min(size)]).into_owned() + &format!(" ({n})")
            });
            t.rec(&format!("getxattr {rel} {k} size={size}"), r);
        };
        set(t, "f", "user.a", b"alpha", XattrFlags::empty());
        set(t, "f", "user.b", b"", XattrFlags::empty());
        set(t, "f", "user.a", b"again", XattrFlags::CREATE);
        set(t, "f", "user.zz", b"z", XattrFlags::REPLACE);
        set(t, "f", "user.a", b"replaced", XattrFlags::REPLACE);
        set(t, "d", "user.dir", &[0xffu8; 300], XattrFlags::empty());
        get(t, "f", "user.a", 100);
        get(t, "f", "user.a", 0);
        get(t, "f", "user.a", 2);
        get(t, "f", "user.b", 10);
        get(t, "f", "user.missing", 10);
        get(t, "d", "user.dir", 1000);
        let list = |t: &mut Probe, rel: &str| {
            let mut buf = vec![0u8; 4096];
            let r = rustix::fs::listxattr(t.p(rel), &mut buf[..])
                .map_err(io::Error::from)
                .map(|n| {
                    let mut names: Vec<String> = buf[..n]
                        .split(|&b| b == 0)
                        .filter(|s| !s.is_empty())
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .filter(|s| s.starts_with("user."))
                        .collect();
                    names.sort();
                    names
                });
            t.rec(&format!("listxattr {rel}"), r);
            let r = rustix::fs::listxattr(t.p(rel), &mut [0u8; 1][..]).map_err(io::Error::from);
            t.rec_unit(&format!("listxattr {rel} tiny buffer"), r);
        };
        list(t, "f");
        let r = rustix::fs::removexattr(t.p("f"), "user.b").map_err(io::Error::from);
        t.rec_unit("removexattr", r);
        let r = rustix::fs::removexattr(t.p("f"), "user.b").map_err(io::Error::from);
        t.rec_unit("removexattr again", r);
        list(t, "f");
        if common::is_root() {
            set(t, "f", "trusted.t", b"root only", XattrFlags::empty());
            get(t, "f", "trusted.t", 100);
        }
        set(t, "missing", "user.a", b"x", XattrFlags::empty());
    });
}

#[test]
fn fallocate_holes_seek_copy_range() {
    conform(|t| {
        if let Some(f) = t.open("create", "f", OFlags::RDWR | OFlags::CREATE, 0o644) {
            let fa = |t: &mut Probe, what: &str, mode: FallocateFlags, off: u64, len: u64| {
                let r = rustix::fs::fallocate(&f, mode, off, len).map_err(io::Error::from);
                t.rec_unit(what, r);
                let r = f.metadata().map(|m| m.len());
                t.rec("size", r);
            };
            fa(t, "fallocate", FallocateFlags::empty(), 0, 1 << 20);
            fa(
                t,
                "fallocate keep size",
                FallocateFlags::KEEP_SIZE,
                1 << 20,
                1 << 20,
            );
            f.write_at(&vec![0xabu8; 1 << 20], 0).unwrap();
            fa(
                t,
                "punch hole",
                FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                4096,
                65536,
            );
            let mut b = vec![0u8; 8192];
            let r = f.read_at(&mut b, 0).map(|n| (n, b[4095], b[4096], b[8191]));
            t.rec("read across hole", r);
            fa(t, "zero range", FallocateFlags::ZERO_RANGE, 0, 10);
            fa(
                t,
                "punch without keep size",
                FallocateFlags::PUNCH_HOLE,
                0,
                10,
            );
            let r = f.write_at(b"tail", 8 << 20);
            t.rec("write at 8 MiB", r);
            let seek = |t: &mut Probe, what: &str, pos: rustix::fs::SeekFrom| {
                let r = rustix::fs::seek(&f, pos).map_err(io::Error::from);
                t.rec(what, r);
            };
            seek(t, "SEEK_DATA 0", rustix::fs::SeekFrom::Data(0));
            seek(t, "SEEK_HOLE 0", rustix::fs::SeekFrom::Hole(0));
            seek(t, "SEEK_DATA in gap", rustix::fs::SeekFrom::Data(2 << 20));
            seek(t, "SEEK_HOLE in tail", rustix::fs::SeekFrom::Hole(8 << 20));
            seek(
                t,
                "SEEK_DATA past end",
                rustix::fs::SeekFrom::Data(100 << 20),
            );
        }
        t.content("f");
        std::fs::write(
            t.p("src"),
            (0..200_000u32).map(|i| i as u8).collect::<Vec<_>>(),
        )
        .unwrap();
        if let (Some(from), Some(to)) = (
            t.open("open src", "src", OFlags::RDONLY, 0),
            t.open("create dst", "dst", OFlags::RDWR | OFlags::CREATE, 0o644),
        ) {
            let mut off_in = 1000u64;
            let mut off_out = 5u64;
            let mut copied = 0;
            while copied < 150_000 {
                match rustix::fs::copy_file_range(
                    from.as_fd(),
                    Some(&mut off_in),
                    to.as_fd(),
                    Some(&mut off_out),
                    150_000 - copied,
                ) {
                    Ok(0) => break,
                    Ok(n) => copied += n,
                    Err(e) => {
                        t.rec_unit("copy_file_range", Err::<(), _>(io::Error::from(e)));
                        break;
                    }
                }
            }
            t.log.push(format!("copy_file_range copied {copied}"));
        }
        t.content("dst");
    });
}

#[test]
fn access_and_statfs() {
    let Some(fx) = common::fixture() else { return };
    std::fs::write(fx.mnt().join("f"), b"x").unwrap();
    for (path, mask) in [
        ("f", libc::R_OK | libc::W_OK),
        ("f", libc::F_OK),
        ("missing", libc::F_OK),
    ] {
        let a = rustix::fs::access(
            fx.source().join(path),
            rustix::fs::Access::from_bits_retain(mask as u32),
        );
        let b = rustix::fs::access(
            fx.mnt().join(path),
            rustix::fs::Access::from_bits_retain(mask as u32),
        );
        assert_eq!(a, b, "access {path} {mask}");
    }
    let s = rustix::fs::statvfs(fx.source()).unwrap();
    let m = rustix::fs::statvfs(fx.mnt()).unwrap();
    assert_eq!(
        (s.f_bsize, s.f_blocks, s.f_namemax),
        (m.f_bsize, m.f_blocks, m.f_namemax)
    );
}

#[test]
fn large_requests_are_granted() {
    let Some(fx) = common::fixture() else { return };
    let data = vec![7u8; 8 << 20];
    let mut f = File::create(fx.mnt().join("big")).unwrap();
    f.write_all(&data).unwrap();
    drop(f);
    let largest = fx
        .stats()
        .largest_write
        .load(std::sync::atomic::Ordering::Relaxed);
    let limit = replicafs::sys::fuse::max_pages_limit().unwrap_or(256) as u64 * 4096;
    eprintln!("largest write request: {largest} bytes (kernel limit {limit})");
    assert_eq!(
        largest,
        limit.min(16 << 20),
        "the kernel should send writes as large as it allows"
    );
    assert_eq!(std::fs::read(fx.source().join("big")).unwrap(), data);
}

#[test]
fn concurrent_writers_and_readers() {
    let Some(fx) = common::fixture() else { return };
    let mnt = fx.mnt().to_path_buf();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let mnt = mnt.clone();
            std::thread::spawn(move || {
                let dir = mnt.join(format!("t{i}"));
                std::fs::create_dir(&dir).unwrap();
                for j in 0..200 {
                    let p = dir.join(format!("f{j}"));
                    let body = format!("{i}:{j}").repeat(j + 1);
                    std::fs::write(&p, &body).unwrap();
                    assert_eq!(std::fs::read_to_string(&p).unwrap(), body);
                    if j % 3 == 0 {
                        std::fs::rename(&p, dir.join(format!("r{j}"))).unwrap();
                    } else if j % 3 == 1 {
                        std::fs::remove_file(&p).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    common::assert_same_tree(
        "mount vs SOURCE after concurrent work",
        &common::snapshot(fx.source(), true),
        &common::snapshot(fx.mnt(), true),
    );
    assert_eq!(common::snapshot(fx.source(), false).len(), 8 + 8 * 133);
}

#[test]
fn no_escape_through_symlinks() {
    let Some(fx) = common::fixture() else { return };
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"outside").unwrap();
    // A symlink in SOURCE pointing outside: through the mount it stays a
    // symlink (resolved by the caller's kernel in the caller's view), and
    // creating through it never writes outside SOURCE on our side.
    std::os::unix::fs::symlink(outside.path(), fx.source().join("out")).unwrap();
    let meta = std::fs::symlink_metadata(fx.mnt().join("out")).unwrap();
    assert!(meta.file_type().is_symlink());
    // Renaming a directory while a file inside is open must not redirect
    // writes anywhere else.
    std::fs::create_dir(fx.mnt().join("d")).unwrap();
    let f = File::create(fx.mnt().join("d/f")).unwrap();
    std::fs::rename(fx.mnt().join("d"), fx.mnt().join("e")).unwrap();
    std::os::unix::fs::symlink(outside.path(), fx.source().join("d")).unwrap();
    f.write_at(b"inside", 0).unwrap();
    drop(f);
    assert_eq!(std::fs::read(fx.source().join("e/f")).unwrap(), b"inside");
    assert!(!outside.path().join("f").exists(), "a write escaped SOURCE");
}

trait ModeCompat {
    fn mode_compat(&mut self, mode: u32) -> &mut Self;
}

impl ModeCompat for std::fs::DirBuilder {
    fn mode_compat(&mut self, mode: u32) -> &mut Self {
        use std::os::unix::fs::DirBuilderExt;
        self.mode(mode)
    }
}

/// Shared writable mappings work on files opened for writing (their
/// writes bypass the page cache otherwise) and reach SOURCE on msync.
#[test]
fn shared_mmap_writes_reach_source() {
    let Some(fx) = common::fixture() else { return };
    let path = fx.mnt().join("mapped");
    std::fs::write(&path, vec![b'.'; 8192]).unwrap();
    let script = "import mmap,os,sys\n\
                  fd=os.open(sys.argv[1], os.O_RDWR)\n\
                  m=mmap.mmap(fd, 8192)\n\
                  m[100:105]=b'hello'\n\
                  m.flush()\n\
                  m.close(); os.close(fd)\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = std::fs::read(fx.source().join("mapped")).unwrap();
    assert_eq!(&data[100..105], b"hello");
    assert_eq!(data.len(), 8192);
}
