//! Shared test helpers: mounting fixtures (skipping loudly, or failing
//! under CI, when FUSE is unavailable), comparing trees, running as
//! another user.
#![allow(dead_code)]

pub mod rsyncd;
pub mod workloads;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use replicafs::fixture::{Fixture, FixtureBuilder};

/// A mounted fixture, or `None` after printing why the test is skipped.
/// Under `CI=true` a machine that cannot mount is a failure, not a skip.
pub fn mount(builder: FixtureBuilder) -> Option<Fixture> {
    if let Err(why) = replicafs::fixture::fuse_available() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("FUSE is required under CI=true: {why}");
        }
        eprintln!("SKIPPED: cannot mount FUSE here: {why}");
        return None;
    }
    Some(builder.mount().expect("mount the fixture"))
}

pub fn fixture() -> Option<Fixture> {
    mount(Fixture::builder())
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Everything about a tree that a mirror must preserve, one line per entry,
/// keyed by relative path. `mtimes` adds modification times (only where a
/// test set them, since creation times differ between two runs).
pub fn snapshot(root: &Path, mtimes: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    walk(root, root, mtimes, &mut out, &mut inodes);
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    mtimes: bool,
    out: &mut BTreeMap<String, String>,
    inodes: &mut BTreeMap<(u64, u64), String>,
) {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("symlink->{}", std::fs::read_link(&p).unwrap().display())
        } else if ft.is_file() {
            let data = std::fs::read(&p).unwrap();
            format!("file size={} hash={:016x}", data.len(), fnv(&data))
        } else if ft.is_fifo() {
            "fifo".into()
        } else if ft.is_char_device() {
            format!("chr {:x}", m.rdev())
        } else if ft.is_block_device() {
            format!("blk {:x}", m.rdev())
        } else if ft.is_socket() {
            "socket".into()
        } else {
            "other".into()
        };
        let mut line = format!(
            "{kind} mode={:o} uid={} gid={} nlink={}",
            m.mode() & 0o7777,
            m.uid(),
            m.gid(),
            if ft.is_dir() { 0 } else { m.nlink() }
        );
        if !ft.is_dir() && m.nlink() > 1 {
            // Hard-link structure: every name of one inode points at the
            // first name seen.
            let first = inodes
                .entry((m.dev(), m.ino()))
                .or_insert_with(|| rel.clone());
            line.push_str(&format!(" linked={first}"));
        }
        if mtimes {
            line.push_str(&format!(" mtime={}.{:09}", m.mtime(), m.mtime_nsec()));
        }
        if !ft.is_symlink() {
            for (k, v) in xattrs(&p) {
                line.push_str(&format!(" xattr:{k}={v}"));
            }
        }
        out.insert(rel, line);
        if ft.is_dir() {
            walk(root, &p, mtimes, out, inodes);
        }
    }
}

fn xattrs(p: &Path) -> Vec<(String, String)> {
    let mut buf = vec![0u8; 65536];
    let n = match rustix::fs::llistxattr(p, &mut buf[..]) {
        Ok(n) => n,
        Err(_) => return Vec::new(),
    };
    let mut out = Vec::new();
    for name in buf[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if !name.starts_with("user.") {
            continue;
        }
        let mut v = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(p, name.as_str(), &mut v[..]).unwrap_or(0);
        out.push((name, String::from_utf8_lossy(&v[..len]).into_owned()));
    }
    out.sort();
    out
}

pub fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Asserts two snapshots are equal, printing only the differing lines.
pub fn assert_same_tree(what: &str, a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) {
    let mut diffs = Vec::new();
    for k in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if x == y => {}
            (x, y) => diffs.push(format!("  {k}:\n    expected {x:?}\n    got      {y:?}")),
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: trees differ:\n{}",
        diffs.join("\n")
    );
}

/// The `replicafs` binary under test, logging at `log`.
pub fn bin(log: &str) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_replicafs"));
    c.env_remove("RSYNC_PASSWORD").env("REPLICAFS_LOG", log);
    c
}

/// Runs the binary with `args`; it must succeed. Returns its stdout.
pub fn run_ok(args: &[&str]) -> String {
    let out = bin("info").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Mounts `d`'s src at mnt with `--daemon` and `extra`; returns the
/// daemon's pid.
pub fn mount_daemon(d: &Dirs, extra: &[&str]) -> u32 {
    let mut args = vec!["--daemon"];
    args.extend_from_slice(extra);
    let out = bin("info")
        .args(d.mount_args("target", &args))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mount failed: {err}");
    err.split("(pid ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {err}"))
}

pub fn mounted(mnt: &Path) -> bool {
    replicafs::mountinfo::find(mnt).unwrap().is_some()
}

/// A temporary root with `src`, `mnt`, `state` and `target` directories.
pub struct Dirs {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
}

impl Dirs {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        for d in ["src", "mnt", "state", "target"] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        Dirs { _tmp: tmp, root }
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn s(&self, rel: &str) -> String {
        self.p(rel).to_string_lossy().into_owned()
    }

    /// `mount src mnt --target <target> --state-dir state` plus `extra`.
    pub fn mount_args(&self, target: &str, extra: &[&str]) -> Vec<String> {
        let mut v = vec![
            "mount".to_string(),
            self.s("src"),
            self.s("mnt"),
            "--target".into(),
            self.s(target),
            "--state-dir".into(),
            self.s("state"),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }
}

/// The first target's state, once it settles (within 30 s): the watch sees
/// our own writes on SOURCE too and queues a compare for each (no-ops, the
/// target has them already), which the barrier does not wait for, so a
/// target can read catching_up for a moment after one.
pub fn settled_state(fx: &Fixture) -> String {
    let start = std::time::Instant::now();
    loop {
        let state = fx.engine().target_status()[0].state.to_string();
        if state == "in_sync" || start.elapsed() > std::time::Duration::from_secs(30) {
            return state;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Barrier, then both comparisons.
pub fn assert_replicated(fx: &Fixture, what: &str) {
    fx.sync()
        .unwrap_or_else(|e| panic!("{what}: sync failed: {e}"));
    let diffs = fx.verify().unwrap();
    assert!(
        diffs.is_empty(),
        "{what}: target differs from SOURCE:\n{}",
        diffs.join("\n")
    );
    assert_same_tree(
        what,
        &snapshot(fx.source(), true),
        &snapshot(fx.target(), true),
    );
}
