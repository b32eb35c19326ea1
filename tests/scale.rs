//! Real-sized trees: the mount and the replication must not need a
//! descriptor per file. The daemon runs with an open-file limit of 1,024
//! while the kernel comes to remember 50,000 inodes.
#![cfg(target_os = "linux")]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::workloads::{self, Rng};
use common::{Dirs, assert_same_tree, mounted, run_ok, snapshot};
use replicafs::fixture::Fixture;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn stat_all(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m =
            std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
        n += 1;
        if m.is_dir() {
            n += stat_all(&p);
        }
    }
    n
}

#[test]
fn fifty_thousand_files_with_a_limit_of_1024_descriptors() {
    if let Err(why) = replicafs::fixture::fuse_available() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "FUSE is required under CI=true: {why}"
        );
        eprintln!("SKIPPED: cannot mount FUSE here: {why}");
        return;
    }
    let d = Dirs::new();
    // 25 directories of 1,000 files before the mount, replicated by the
    // start-up reconcile.
    for i in 0..25 {
        let dir = d.p(&format!("src/d{i:02}"));
        std::fs::create_dir(&dir).unwrap();
        for j in 0..1000 {
            std::fs::write(dir.join(format!("f{j:04}")), format!("{i}/{j}")).unwrap();
        }
    }
    let pid = common::mount_daemon(&d, &["-o", "rlimit_nofile=1024"]);
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(
        nofile.split_whitespace().nth(3) == Some("1024"),
        "the daemon's limit: {nofile}"
    );

    let t = Instant::now();
    let seen = stat_all(&d.p("mnt"));
    assert_eq!(seen, 25 + 25_000);
    eprintln!(
        "stat of {seen} entries through the mount: {:?}",
        t.elapsed()
    );
    let fds = open_fds(pid);
    assert!(fds < 1024, "the daemon holds {fds} descriptors");

    let t = Instant::now();
    let big = d.p("mnt/big");
    std::fs::create_dir(&big).unwrap();
    for j in 0..25_000 {
        std::fs::write(big.join(format!("n{j:05}")), format!("new {j}"))
            .unwrap_or_else(|e| panic!("create file {j} through the mount: {e}"));
    }
    eprintln!("25,000 files created through the mount: {:?}", t.elapsed());
    let fds = open_fds(pid);
    assert!(fds < 1024, "the daemon holds {fds} descriptors");

    let t = Instant::now();
    run_ok(&["sync", &d.s("mnt"), "--timeout", "600s"]);
    eprintln!("replicated: {:?}", t.elapsed());
    // The watch sees our own writes on SOURCE too and queues a compare for
    // each (no-ops: the target already has them); the barrier does not
    // wait for those, so the target may show catching_up for a moment.
    let start = Instant::now();
    let status = loop {
        let status = run_ok(&["status", &d.s("mnt"), "--json"]);
        if status.contains("\"in_sync\"") || start.elapsed() > Duration::from_secs(60) {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.contains("\"in_sync\""), "status: {status}");
    run_ok(&["unmount", &d.s("mnt")]);
    assert!(!mounted(&d.p("mnt")));

    assert_same_tree(
        "50,000 files",
        &snapshot(&d.p("src"), true),
        &snapshot(&d.p("target"), true),
    );
    let log = std::fs::read_to_string(d.p("state/replicafs.log")).unwrap();
    for bad in ["Too many open files", "failing"] {
        let hits: Vec<&str> = log.lines().filter(|l| l.contains(bad)).take(5).collect();
        assert!(
            hits.is_empty(),
            "the log says {bad:?}:\n{}",
            hits.join("\n")
        );
    }
}

/// With room for 16 descriptors, inodes are closed and reopened by handle
/// all the time: every operation still lands on the right file.
#[test]
fn every_operation_with_16_inode_descriptors() {
    let builder = Fixture::builder().options("inode_fds=16").unwrap();
    let Some(fx) = common::mount(builder) else {
        return;
    };
    workloads::every_operation(&fx, &common::assert_replicated, true);
    let seed = workloads::seed();
    let mut rng = Rng(seed);
    let mut since = Vec::new();
    for i in 0..1500 {
        since.push(workloads::random_op(
            &mut rng,
            fx.mnt(),
            workloads::EVERYTHING,
        ));
        if rng.below(150) == 0 || i == 1499 {
            workloads::barrier(&fx, seed, i, &mut since);
        }
    }
}

/// A whole-tree reconcile walks top-level subtrees on several threads;
/// hard links between them still come out as one inode with every name.
#[test]
fn a_whole_tree_reconcile_keeps_hard_links_across_subtrees() {
    let Some(fx) = common::fixture() else {
        return;
    };
    let s = |p: &str| fx.source().join(p);
    for d in ["a", "b", "c", "d", "e", "f"] {
        std::fs::create_dir(s(d)).unwrap();
        for i in 0..50 {
            std::fs::write(s(&format!("{d}/plain{i}")), format!("{d}{i}")).unwrap();
        }
    }
    std::fs::write(s("e/first"), b"one inode, four names").unwrap();
    for name in ["a/second", "c/third", "f/fourth"] {
        std::fs::hard_link(s("e/first"), s(name)).unwrap();
    }
    std::fs::write(s("b/x"), b"another").unwrap();
    std::fs::hard_link(s("b/x"), s("d/y")).unwrap();
    std::fs::hard_link(s("b/x"), s("top")).unwrap();
    fx.sync().unwrap();
    // The target comes back empty: the engine reconciles it whole.
    std::fs::remove_dir_all(fx.target()).unwrap();
    std::fs::create_dir(fx.target()).unwrap();
    std::fs::write(fx.mnt().join("after"), b"z").unwrap();
    common::assert_replicated(&fx, "a whole-tree reconcile with hard links");
}

/// Past `-o max_inodes`, the kernel is asked to forget inodes nobody uses:
/// what it holds (and so what we hold) stays near the bound, and every
/// file is still there when looked up again.
#[test]
fn the_inodes_the_kernel_holds_stay_near_the_bound() {
    let builder = Fixture::builder().options("max_inodes=500").unwrap();
    let Some(fx) = common::mount(builder) else {
        return;
    };
    for d in 0..3 {
        let dir = fx.mnt().join(format!("d{d}"));
        std::fs::create_dir(&dir).unwrap();
        for i in 0..1000 {
            std::fs::write(dir.join(format!("f{i}")), format!("{d}/{i}")).unwrap();
        }
    }
    let seen = stat_all(fx.mnt());
    assert_eq!(seen, 3003);
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while fx.inode_count() > 550 {
        assert!(
            Instant::now() < deadline,
            "the kernel still holds {} inodes",
            fx.inode_count()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Looked up again, each is itself.
    for d in 0..3 {
        for i in (0..1000).step_by(7) {
            let p = fx.mnt().join(format!("d{d}/f{i}"));
            assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("{d}/{i}"));
        }
    }
    std::fs::write(fx.mnt().join("d1/f500"), b"changed after a forget").unwrap();
    common::assert_replicated(&fx, "after the kernel forgot most inodes");
}
