//! Crash safety: the daemon is killed with SIGKILL at random points of a
//! workload, the mount is remounted with the same state dir, and after
//! `replicafs sync` the target equals SOURCE (`replicafs verify`). Also the
//! CLI's sync/status/verify against a real daemon.
#![cfg(target_os = "linux")]

mod common;

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Dirs, mounted, run_ok};

fn bin() -> Command {
    common::bin("info")
}

/// Mounts with --daemon; returns the daemon's pid.
fn mount(d: &Dirs) -> u32 {
    common::mount_daemon(d, &[])
}

/// A workload thread: random changes through the mount until told to stop
/// (or the mount dies under it).
fn workload(mnt: PathBuf, seed: u64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut done = 0;
        while !stop.load(Ordering::Relaxed) {
            let n = next();
            let name = mnt.join(format!(
                "{}f{}",
                if n % 3 == 0 { "dir/" } else { "" },
                n % 17
            ));
            let r = match (n >> 8) % 8 {
                0..=3 => std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&name)
                    .and_then(|f| {
                        f.write_all_at(
                            &vec![(n >> 16) as u8; 1 + (n >> 20) as usize % 50_000],
                            (n >> 40) % 200_000,
                        )
                    }),
                4 => std::fs::rename(&name, mnt.join(format!("f{}", (n >> 12) % 17))),
                5 => std::fs::remove_file(&name),
                6 => std::fs::create_dir(mnt.join("dir")),
                _ => std::fs::OpenOptions::new()
                    .write(true)
                    .open(&name)
                    .and_then(|f| f.set_len((n >> 24) % 100_000)),
            };
            if let Err(e) = r {
                if e.raw_os_error() == Some(libc::ENOTCONN)
                    || e.raw_os_error() == Some(libc::ECONNABORTED)
                {
                    break;
                }
            }
            done += 1;
        }
        done
    })
}

#[test]
fn kill_9_at_random_points_loses_nothing() {
    if replicafs::fixture::fuse_available().is_err() {
        common::fixture();
        return;
    }
    let d = Dirs::new();
    let mnt = d.p("mnt");
    let cycles = 20;
    let mut total_ops = 0;
    for cycle in 0..cycles {
        let pid = mount(&d);
        let stop = Arc::new(AtomicBool::new(false));
        let w = workload(
            mnt.clone(),
            0x9e3779b97f4a7c15 ^ (cycle as u64 * 7919),
            Arc::clone(&stop),
        );
        // Let it run a random while, then kill the daemon mid-stream.
        std::thread::sleep(Duration::from_millis(20 + (cycle as u64 * 37) % 180));
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        total_ops += w.join().unwrap();
        // The dead mount answers ENOTCONN; take it away.
        let start = Instant::now();
        while mounted(&mnt) {
            replicafs::mount::detach(&mnt).unwrap();
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "cannot detach the dead mount"
            );
        }
        // Remount with the same state dir: recovery, then a barrier.
        let log_before = std::fs::metadata(d.p("state/replicafs.log"))
            .map(|m| m.len())
            .unwrap_or(0) as usize;
        mount(&d);
        run_ok(&["sync", &d.s("mnt"), "--timeout", "60s"]);
        let diffs = run_ok_or_diffs(&d);
        if !diffs.is_empty() {
            std::thread::sleep(Duration::from_secs(2));
            let later = run_ok_or_diffs(&d);
            let _ = std::fs::copy(
                d.p("state/replicafs.log"),
                std::env::temp_dir().join("replicafs-crash-failure.log"),
            );
            panic!("cycle {cycle}: target differs after recovery:\n{diffs}\n2 s later:\n{later}");
        }
        run_ok(&["unmount", &d.s("mnt")]);
        let log = std::fs::read_to_string(d.p("state/replicafs.log")).unwrap();
        let this_mount = &log[log_before.min(log.len())..];
        assert!(
            this_mount.contains("recovery after an unclean stop"),
            "cycle {cycle}: no recovery logged:\n{this_mount}"
        );
    }
    eprintln!("{cycles} kill -9 cycles, {total_ops} operations, zero divergence");
}

fn run_ok_or_diffs(d: &Dirs) -> String {
    let out = bin()
        .args(["verify", &d.s("src"), &d.s("target")])
        .output()
        .unwrap();
    match out.status.code() {
        Some(0) => String::new(),
        Some(1) => String::from_utf8_lossy(&out.stdout).into_owned(),
        other => panic!(
            "verify failed ({other:?}): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn sync_status_and_verify_through_the_cli() {
    if replicafs::fixture::fuse_available().is_err() {
        common::fixture();
        return;
    }
    let d = Dirs::new();
    std::fs::write(d.p("src/existing"), b"was here before the mount").unwrap();
    std::fs::write(d.p("target/stale"), b"not in SOURCE").unwrap();
    mount(&d);
    std::fs::write(d.p("mnt/new"), vec![5u8; 1 << 20]).unwrap();
    run_ok(&["sync", &d.s("mnt")]);
    assert_eq!(run_ok_or_diffs(&d), "", "initial reconcile + replication");
    assert!(!d.p("target/stale").exists());
    let json = run_ok(&["status", &d.s("mnt"), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for k in [
        "mountpoint",
        "source",
        "consistency",
        "io_backend",
        "targets",
    ] {
        assert!(v.get(k).is_some(), "status --json lacks {k}: {json}");
    }
    let t = &v["targets"][0];
    for k in [
        "target",
        "state",
        "lag_seconds",
        "pending_bytes",
        "pending_ops",
        "replicated_bytes",
        "last_error",
    ] {
        assert!(t.get(k).is_some(), "target status lacks {k}: {json}");
    }
    // Right after `sync` a late watch event for our own write may still be
    // queued (catching_up); it must settle to in_sync.
    let start = Instant::now();
    let mut state = t["state"].clone();
    while state != "in_sync" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never in_sync: {state}"
        );
        std::thread::sleep(Duration::from_millis(20));
        let json = run_ok(&["status", &d.s("mnt"), "--json"]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        state = v["targets"][0]["state"].clone();
    }
    assert_eq!(v["consistency"], "fsync");
    // The text form says the same (polled too: another late event may
    // come and go in between).
    let start = Instant::now();
    loop {
        let text = run_ok(&["status", &d.s("mnt")]);
        if text.contains("in_sync") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A difference made behind the engine's back shows in verify (exit 1).
    // (On a file nothing touched through the mount: the engine may still
    // be comparing recently changed ones, and would repair them.)
    std::fs::write(d.p("target/existing"), b"tampered").unwrap();
    let out = bin()
        .args(["verify", &d.s("src"), &d.s("target")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("existing: size differs"));
    run_ok(&["unmount", &d.s("mnt")]);
    assert!(!mounted(&d.p("mnt")));
}

/// `--consistency sync`: a write returns only once the target has it; when
/// the target is gone, writers get EIO after the barrier timeout instead of
/// a silent loss, and the mount recovers when the target comes back.
#[test]
fn sync_mode_gives_eio_when_the_target_fails() {
    if replicafs::fixture::fuse_available().is_err() {
        common::fixture();
        return;
    }
    let d = Dirs::new();
    let out = bin()
        .env("REPLICAFS_BARRIER_TIMEOUT", "1s")
        .args(d.mount_args("target", &["--consistency", "sync", "--daemon"]))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(d.p("mnt/a"), b"on the target when write returns").unwrap();
    assert_eq!(
        std::fs::read(d.p("target/a")).unwrap(),
        b"on the target when write returns"
    );
    std::fs::rename(d.p("target"), d.p("target.away")).unwrap();
    let start = Instant::now();
    let err = std::fs::write(d.p("mnt/b"), b"cannot be replicated").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(start.elapsed() < Duration::from_secs(20));
    let status = run_ok(&["status", &d.s("mnt"), "--json"]);
    assert!(status.contains("\"failing\""), "{status}");
    // The target comes back (empty): everything is replicated again.
    std::fs::create_dir(d.p("target")).unwrap();
    run_ok(&["sync", &d.s("mnt"), "--timeout", "60s"]);
    std::fs::write(d.p("mnt/c"), b"after").unwrap();
    assert_eq!(run_ok_or_diffs(&d), "");
    run_ok(&["unmount", &d.s("mnt")]);
}

/// `unmount` tells the truth: a target that was down when the unmount's
/// barrier gave up, and caught up while the mount's process finished, is
/// reported as caught up (exit 0), not as failing.
#[test]
fn unmount_reports_a_drain_that_finished_after_it() {
    if replicafs::fixture::fuse_available().is_err() {
        common::fixture();
        return;
    }
    let d = Dirs::new();
    mount(&d);
    std::fs::write(d.p("mnt/a"), b"a").unwrap();
    run_ok(&["sync", &d.s("mnt"), "--timeout", "60s"]);
    std::fs::rename(d.p("target"), d.p("target.away")).unwrap();
    std::fs::write(d.p("mnt/b"), b"while the target is away").unwrap();
    let mnt = d.s("mnt");
    let unmount = std::thread::spawn(move || {
        bin()
            .args(["unmount", &mnt, "--timeout", "6s"])
            .output()
            .unwrap()
    });
    // The first barrier gives up at 6 s; the target is back before the
    // mount's process stops draining.
    std::thread::sleep(Duration::from_secs(7));
    std::fs::create_dir(d.p("target")).unwrap();
    let out = unmount.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "unmount: {:?}: {err}", out.status);
    assert!(err.contains("caught up after the unmount"), "{err}");
    assert!(!mounted(&d.p("mnt")));
    assert_eq!(
        std::fs::read(d.p("target/b")).unwrap(),
        b"while the target is away"
    );
}
