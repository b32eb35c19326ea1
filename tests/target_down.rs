//! `--on-target-down`: what fsync through the mount does while the
//! directory target is gone. `degrade` (the default) returns once SOURCE
//! is durable and marks the target degraded until it caught up; `fail`
//! gives EIO at once; `block` waits for the barrier timeout, then EIO.
//! `replicafs sync` reports the failing target whatever the policy. Also
//! what the log says during an outage: one line when it starts, one when
//! it ends.
#![cfg(target_os = "linux")]

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Dirs;

fn bin() -> Command {
    common::bin("info")
}

fn mount(d: &Dirs, extra: &[&str], barrier_timeout: &str) {
    let mut args = vec!["--daemon"];
    args.extend_from_slice(extra);
    let out = bin()
        .env("REPLICAFS_BARRIER_TIMEOUT", barrier_timeout)
        .args(d.mount_args("target", &args))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = bin().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status(d: &Dirs) -> serde_json::Value {
    let (ok, out, err) = run(&["status", &d.s("mnt"), "--json"]);
    assert!(ok, "status: {err}");
    serde_json::from_str(&out).unwrap()
}

fn target0(d: &Dirs) -> serde_json::Value {
    status(d)["targets"][0].clone()
}

/// Writes `name` through the mount and fsyncs it: how long the fsync
/// took and what it returned.
fn write_and_fsync(d: &Dirs, name: &str) -> (Duration, std::io::Result<()>) {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(d.p("mnt").join(name))
        .unwrap();
    f.write_all(name.as_bytes()).unwrap();
    let start = Instant::now();
    let r = f.sync_all();
    (start.elapsed(), r)
}

fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Takes the target away (renamed aside, as a removed or unmounted disk).
fn target_down(d: &Dirs) {
    std::fs::rename(d.p("target"), d.p("target.away")).unwrap();
}

fn unmount(d: &Dirs) {
    let (ok, _, err) = run(&["unmount", &d.s("mnt"), "--timeout", "30s"]);
    assert!(ok, "unmount: {err}");
}

fn log(d: &Dirs) -> String {
    std::fs::read_to_string(d.p("state/replicafs.log")).unwrap_or_default()
}

#[test]
fn degrade_returns_from_fsync_and_catches_up() {
    if replicafs::fixture::fuse_available().is_err() {
        common::fixture();
        return;
    }
    let d = Dirs::new();
    // A long barrier timeout: the fsync must not come back because of it.
    mount(&d, &[], "30s");
    let (_, r) = write_and_fsync(&d, "before");
    r.unwrap();
    assert_eq!(std::fs::read(d.p("target/before")).unwrap(), b"before");

    target_down(&d);
    // Several writers while it is down, each fsync'd.
    for i in 0..20 {
        let (took, r) = write_and_fsync(&d, &format!("down-{i}"));
        r.unwrap_or_else(|e| panic!("fsync {i} with the target down: {e}"));
        assert!(
            took < Duration::from_secs(10),
            "fsync {i} took {took:?} with the target down"
        );
        if i == 0 {
            eprintln!("first fsync with the target down: {took:?}");
        }
    }
    // The data is durable on SOURCE.
    assert_eq!(std::fs::read(d.p("src/down-7")).unwrap(), b"down-7");
    assert_eq!(status(&d)["on_target_down"], "degrade");
    let t = target0(&d);
    assert_eq!(t["state"], "failing", "{t}");
    assert_eq!(t["degraded"], true, "{t}");
    // The explicit barrier still says the target is down.
    let (ok, _, err) = run(&["sync", &d.s("mnt"), "--timeout", "2s"]);
    assert!(!ok, "replicafs sync succeeded with the target down");
    assert!(
        err.contains(&d.s("target")),
        "sync should name the target: {err}"
    );

    // Back (empty): reconciled whole, no longer degraded, and equal.
    std::fs::create_dir(d.p("target")).unwrap();
    eventually("the target to catch up", Duration::from_secs(60), || {
        let t = target0(&d);
        t["state"] == "in_sync" && t["degraded"] == false
    });
    let (ok, _, err) = run(&["sync", &d.s("mnt"), "--timeout", "30s"]);
    assert!(ok, "sync after the target returned: {err}");
    let (ok, out, _) = run(&["verify", &d.s("src"), &d.s("target")]);
    assert!(ok, "verify after catching up:\n{out}");
    let l = log(&d);
    assert_eq!(l.matches("target degraded").count(), 1, "{l}");
    assert_eq!(l.matches("no longer degraded").count(), 1, "{l}");
    unmount(&d);
}

#[test]
fn fail_gives_eio_at_once() {
    if replicafs::fixture::fuse_available().is_err() {
        common::fixture();
        return;
    }
    let d = Dirs::new();
    mount(&d, &["--on-target-down", "fail"], "30s");
    write_and_fsync(&d, "before").1.unwrap();
    target_down(&d);
    // The first write after the outage is what finds the target gone;
    // once it is failing, fsync fails at once.
    std::fs::write(d.p("mnt/trigger"), b"x").unwrap();
    eventually("the target to be failing", Duration::from_secs(10), || {
        target0(&d)["state"] == "failing"
    });
    let (took, r) = write_and_fsync(&d, "down");
    let e = r.expect_err("fsync succeeded with the target down under `fail`");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(took < Duration::from_secs(5), "EIO took {took:?}");
    // SOURCE has the data all the same; the target gets it when back.
    assert_eq!(std::fs::read(d.p("src/down")).unwrap(), b"down");
    std::fs::create_dir(d.p("target")).unwrap();
    let (ok, _, err) = run(&["sync", &d.s("mnt"), "--timeout", "60s"]);
    assert!(ok, "sync after the target returned: {err}");
    write_and_fsync(&d, "after").1.unwrap();
    let (ok, out, _) = run(&["verify", &d.s("src"), &d.s("target")]);
    assert!(ok, "verify:\n{out}");
    unmount(&d);
}

#[test]
fn block_waits_for_the_barrier_timeout() {
    if replicafs::fixture::fuse_available().is_err() {
        common::fixture();
        return;
    }
    let d = Dirs::new();
    mount(&d, &["--on-target-down", "block"], "2s");
    write_and_fsync(&d, "before").1.unwrap();
    target_down(&d);
    let (took, r) = write_and_fsync(&d, "down");
    let e = r.expect_err("fsync succeeded with the target down under `block`");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(
        took >= Duration::from_millis(1900),
        "EIO after only {took:?}"
    );
    assert!(took < Duration::from_secs(15), "EIO after {took:?}");
    assert_eq!(target0(&d)["degraded"], false);
    std::fs::create_dir(d.p("target")).unwrap();
    let (ok, _, err) = run(&["sync", &d.s("mnt"), "--timeout", "60s"]);
    assert!(ok, "sync after the target returned: {err}");
    let (ok, out, _) = run(&["verify", &d.s("src"), &d.s("target")]);
    assert!(ok, "verify:\n{out}");
    unmount(&d);
}

/// An outage with writes going on: one line when the target starts
/// failing, one when it recovers, none per write or per retry.
#[test]
fn an_outage_is_logged_once() {
    if replicafs::fixture::fuse_available().is_err() {
        common::fixture();
        return;
    }
    let d = Dirs::new();
    mount(&d, &["--consistency", "async"], "30s");
    std::fs::write(d.p("mnt/before"), b"x").unwrap();
    let (ok, _, err) = run(&["sync", &d.s("mnt"), "--timeout", "30s"]);
    assert!(ok, "{err}");
    target_down(&d);
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(4) {
        std::fs::write(d.p(&format!("mnt/w{i}")), b"during").unwrap();
        i += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::create_dir(d.p("target")).unwrap();
    let (ok, _, err) = run(&["sync", &d.s("mnt"), "--timeout", "60s"]);
    assert!(ok, "{err}");
    let l = log(&d);
    let failing = l.matches("replication failing").count();
    let recovered = l.matches("replication recovered").count();
    eprintln!("{i} writes during the outage: {failing} failing line(s), {recovered} recovered");
    assert_eq!(failing, 1, "{l}");
    assert_eq!(recovered, 1, "{l}");
    let (ok, out, _) = run(&["verify", &d.s("src"), &d.s("target")]);
    assert!(ok, "verify:\n{out}");
    unmount(&d);
}
