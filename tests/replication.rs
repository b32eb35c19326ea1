//! Replication to a directory target with real mounts: every mutating
//! operation, then a barrier, leaves the target equal to SOURCE, by
//! `replicafs verify`'s comparison and by an independent one.
#![cfg(target_os = "linux")]

mod common;

use common::workloads::{self, Rng};

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use replicafs::fixture::Fixture;
use replicafs::sync::policy::Consistency;

#[test]
fn every_operation_reaches_the_target() {
    let Some(fx) = common::fixture() else { return };
    workloads::every_operation(&fx, &common::assert_replicated, true);
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
    common::assert_replicated(&fx, "dirty open files");

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
    common::assert_replicated(&fx, "writes racing renames");
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
    common::assert_replicated(&fx, "before the outage");
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
    common::assert_replicated(&fx, "after the outage");
    assert_eq!(common::settled_state(&fx), "in_sync");
    drop(away);
}

#[test]
fn randomized_operations_match_at_every_barrier() {
    let Some(fx) = common::fixture() else { return };
    let seed = workloads::seed();
    let mut rng = Rng(seed);
    let mut barriers = 0;
    let mut since = Vec::new();
    for i in 0..3000 {
        since.push(workloads::random_op(
            &mut rng,
            fx.mnt(),
            workloads::EVERYTHING,
        ));
        let step = std::env::var_os("REPLICAFS_STEP").is_some();
        if rng.below(150) == 0 || i == 2999 || step {
            barriers += 1;
            workloads::barrier(&fx, seed, i, &mut since);
        }
    }
    eprintln!("{barriers} barriers, all identical");
}

#[test]
fn status_reports_the_contract_fields() {
    let Some(fx) = common::fixture() else { return };
    std::fs::write(fx.mnt().join("x"), b"x").unwrap();
    fx.sync().unwrap();
    assert_eq!(common::settled_state(&fx), "in_sync");
    let st = fx.engine().target_status();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].pending_ops, 0);
    assert!(st[0].replicated_bytes >= 1);
    // `auto` is io_uring where the kernel allows it; the kill switch wins.
    let uring = replicafs::backend::Uring::new().is_ok();
    let want = match std::env::var("REPLICAFS_IO").as_deref() {
        Ok("portable") => "portable",
        _ if uring => "uring",
        _ => "portable",
    };
    assert_eq!(fx.engine().io_backend(), want);
}

#[test]
fn changes_made_directly_in_source_are_replicated() {
    let Some(fx) = common::fixture() else { return };
    std::fs::write(fx.mnt().join("through"), b"via the mount").unwrap();
    common::assert_replicated(&fx, "through the mount");
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
    common::assert_replicated(&fx, "after room was made");
}
