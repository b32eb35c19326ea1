//! The platform's passthrough core, the recording layer, the journal, the
//! engine and a directory target, without a kernel session: a workload
//! driven through the `Vfs` (the calls the FUSE or WinFsp adapter makes)
//! reaches the target exactly. The same test on every OS: on Linux over
//! the Unix core, on Windows (under wine in CI) over the Windows core and
//! the IOCP backend.

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use replicafs::backend::IoChoice;
use replicafs::config::{FuseMountOptions, Target};
use replicafs::fs::recording::Recording;
use replicafs::fs::{Ctx, ROOT_INO, SetAttr, SetTime, Vfs};
use replicafs::mount::{MountSpec, Replication};
use replicafs::sync::policy::{Consistency, TargetDown};
use replicafs::sys::passthrough::Passthrough;

const CTX: Ctx = Ctx {
    uid: 0,
    gid: 0,
    pid: 0,
};

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Fields drop in order: the stack lets go of its handles before the
/// temporary directory is removed (Windows cannot remove what is open).
struct Stack {
    vfs: Recording<Passthrough>,
    replication: Replication,
    source: std::path::PathBuf,
    target: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn stack(consistency: Consistency) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let (source, target, mnt) = (
        dir.path().join("source"),
        dir.path().join("target"),
        dir.path().join("mnt"),
    );
    for d in [&source, &target, &mnt] {
        std::fs::create_dir(d).unwrap();
    }
    let (source, target) = (
        source.canonicalize().unwrap(),
        target.canonicalize().unwrap(),
    );
    let spec = MountSpec {
        source: source.clone(),
        mountpoint: mnt,
        fuse: FuseMountOptions::default(),
        targets: vec![Target::Dir(target.clone())],
        consistency,
        on_target_down: TargetDown::default_for(consistency == Consistency::Sync),
        io: IoChoice::Auto,
        state_dir: dir.path().join("state"),
        password_file: None,
    };
    let replication = Replication::start(&spec).unwrap();
    let core = Passthrough::with_defaults(&source).unwrap();
    let vfs = Recording::new(
        core,
        std::sync::Arc::clone(replication.engine()),
        consistency,
    );
    Stack {
        vfs,
        replication,
        source,
        target,
        _dir: dir,
    }
}

fn settle(s: &Stack) {
    s.replication.drain(Duration::from_secs(30)).unwrap();
    let diffs = replicafs::verify::compare(&s.source, &s.target).unwrap();
    assert!(diffs.is_empty(), "target differs from SOURCE: {diffs:#?}");
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[test]
fn a_workload_through_the_vfs_reaches_the_target() {
    for consistency in [Consistency::Fsync, Consistency::Sync] {
        let s = stack(consistency);
        let v = &s.vfs;
        let d = v.mkdir(&CTX, ROOT_INO, os("d"), 0o755).unwrap();
        // A file written in pieces, with a hole, then extended.
        let (f, o) = v
            .create(&CTX, d.ino(), os("f"), 0o644, libc::O_RDWR | libc::O_CREAT)
            .unwrap();
        let block: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
        for i in 0..8u64 {
            v.write(&CTX, f.ino(), o.fh, i * 65_536, &block).unwrap();
        }
        v.write(&CTX, f.ino(), o.fh, 2_000_000, b"tail").unwrap();
        v.flush(&CTX, f.ino(), o.fh).unwrap();
        v.fsync(&CTX, f.ino(), o.fh, false).unwrap();
        v.release(&CTX, f.ino(), o.fh).unwrap();
        settle(&s);
        assert_eq!(read(&s.target.join("d/f")), read(&s.source.join("d/f")));

        // An edit in the middle reaches the target; then a truncate.
        let o = v.open(&CTX, f.ino(), libc::O_RDWR).unwrap();
        v.write(&CTX, f.ino(), o.fh, 100_000, b"edited in place")
            .unwrap();
        v.release(&CTX, f.ino(), o.fh).unwrap();
        v.setattr(
            &CTX,
            f.ino(),
            None,
            &SetAttr {
                size: Some(300_000),
                ..SetAttr::default()
            },
        )
        .unwrap();
        settle(&s);
        assert_eq!(read(&s.target.join("d/f")).len(), 300_000);

        // Names: a second file, a rename across directories over it, a
        // removed file and directory, and times set.
        let (g, o) = v
            .create(&CTX, ROOT_INO, os("g"), 0o644, libc::O_RDWR | libc::O_CREAT)
            .unwrap();
        v.write(&CTX, g.ino(), o.fh, 0, b"to be replaced").unwrap();
        v.release(&CTX, g.ino(), o.fh).unwrap();
        // Closed and let go, as WinFsp's close does, and replicated, so
        // that the engine holds no handle on it either: wine (like Windows
        // without POSIX rename semantics) refuses to replace a file that
        // any handle is still open on.
        v.forget(g.ino(), 1);
        settle(&s);
        v.rename(&CTX, d.ino(), os("f"), ROOT_INO, os("g"), 0)
            .unwrap();
        let e = v.mkdir(&CTX, ROOT_INO, os("e"), 0o755).unwrap();
        let (x, o) = v
            .create(
                &CTX,
                e.ino(),
                os("x"),
                0o644,
                libc::O_WRONLY | libc::O_CREAT,
            )
            .unwrap();
        v.release(&CTX, x.ino(), o.fh).unwrap();
        v.forget(x.ino(), 1);
        // Wine removes a deleted name only once no handle is open on the
        // file (the engine holds one until the change is applied), and the
        // directory's mtime changes then; Windows's POSIX-semantics delete
        // removes it at once.
        settle(&s);
        v.unlink(&CTX, e.ino(), os("x")).unwrap();
        v.forget(e.ino(), 1);
        // The same for the directory: the engine holds it (the unlinked
        // name's parent) until the unlink is applied.
        settle(&s);
        v.rmdir(&CTX, ROOT_INO, os("e")).unwrap();
        let when = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        v.setattr(
            &CTX,
            d.ino(),
            None,
            &SetAttr {
                mtime: Some(SetTime::At(when)),
                atime: Some(SetTime::At(when)),
                ..SetAttr::default()
            },
        )
        .unwrap();
        settle(&s);
        assert!(!s.target.join("d/f").exists());
        assert!(!s.target.join("e").exists());
        assert_eq!(read(&s.target.join("g")).len(), 300_000);
        let mtime = std::fs::metadata(s.target.join("d"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(mtime, when, "{consistency:?}");
        assert!(SystemTime::now() > when);
        s.replication.stop();
    }
}
