//! Pushes driven through the rsync target directly (no mount), so that
//! one batch holds exactly the changes a test wants together.
#![cfg(target_os = "linux")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::rsyncd::Daemon;
use replicafs::backend::Portable;
use replicafs::journal::record::Op;
use replicafs::replica::rsync::RsyncReplica;
use replicafs::replica::rsync::RsyncUrl;
use replicafs::replica::{Change, Progress, Replica};

fn change(t: &RsyncReplica, op: Op) {
    let c = Change {
        op: &op,
        extents: None,
        subject: None,
        parents: &[],
    };
    t.apply(&c, &Portable::new()).unwrap();
}

fn setup() -> Option<(Daemon, tempfile::TempDir, RsyncReplica)> {
    let d = Daemon::start()?;
    let src = tempfile::tempdir().unwrap();
    let t = RsyncReplica::new(RsyncUrl::parse(&d.url("push")).unwrap(), None, src.path());
    Some((d, src, t))
}

/// The whole tree pushed, as the start-up reconcile does; then checked.
fn reconcile(t: &RsyncReplica, d: &Daemon, src: &Path) {
    t.reconcile(
        src,
        Path::new(""),
        false,
        &Arc::new(Progress::default()),
        &Portable::new(),
    )
    .unwrap();
    check(d, src);
}

fn check(d: &Daemon, src: &Path) {
    let diffs = replicafs::verify::compare(src, &d.module_dir("push")).unwrap();
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn a_truncate_with_a_deletion_in_one_batch_keeps_hard_links() {
    let Some((d, src, t)) = setup() else { return };
    let s = |p: &str| src.path().join(p);
    std::fs::create_dir_all(s("d3")).unwrap();
    std::fs::create_dir_all(s("d1")).unwrap();
    std::fs::write(s("d3/f3"), vec![7u8; 300_000]).unwrap();
    std::fs::hard_link(s("d3/f3"), s("d3/f9")).unwrap();
    std::fs::write(s("d1/x"), b"x").unwrap();
    reconcile(&t, &d, src.path());
    std::fs::OpenOptions::new()
        .write(true)
        .open(s("d3/f3"))
        .unwrap()
        .set_len(160_000)
        .unwrap();
    std::fs::remove_file(s("d1/x")).unwrap();
    change(
        &t,
        Op::Truncate {
            path: PathBuf::from("d3/f3"),
            size: 160_000,
        },
    );
    change(
        &t,
        Op::Unlink {
            path: PathBuf::from("d1/x"),
        },
    );
    t.flush().unwrap();
    check(&d, src.path());
}

/// The journal's ranges can be wrong (the daemon's copy was changed
/// behind our back): the daemon's checksum catches it and the redo, a
/// real delta, must make the file right.
#[test]
fn wrong_dirty_ranges_are_caught_and_redone() {
    let Some((d, src, t)) = setup() else { return };
    let s = |p: &str| src.path().join(p);
    let mut data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(s("f"), &data).unwrap();
    reconcile(&t, &d, src.path());
    // Change three places, tell the target about only one.
    for (at, len) in [(1000usize, 50usize), (150_000, 7000), (299_000, 1000)] {
        for b in &mut data[at..at + len] {
            *b = b.wrapping_add(1);
        }
    }
    data.truncate(299_500);
    std::fs::write(s("f"), &data).unwrap();
    let c = Change {
        op: &Op::Write {
            path: PathBuf::from("f"),
            offset: 150_000,
            len: 7000,
        },
        extents: None,
        subject: None,
        parents: &[],
    };
    t.apply(&c, &Portable::new()).unwrap();
    t.flush().unwrap();
    check(&d, src.path());
}

/// A file renamed within its directory is rebuilt on the daemon from the
/// old name (`--fuzzy`): block-match tokens, not the file again.
#[test]
fn a_rename_reuses_the_old_file_as_basis() {
    let Some((d, src, t)) = setup() else { return };
    let s = |p: &str| src.path().join(p);
    std::fs::create_dir(s("dir")).unwrap();
    let data: Vec<u8> = (0..4_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(s("dir/old"), &data).unwrap();
    reconcile(&t, &d, src.path());
    let before = t.totals();
    std::fs::rename(s("dir/old"), s("dir/new")).unwrap();
    change(
        &t,
        Op::Rename {
            from: PathBuf::from("dir/old"),
            to: PathBuf::from("dir/new"),
            flags: 0,
        },
    );
    t.flush().unwrap();
    check(&d, src.path());
    let after = t.totals();
    let literal = after.literal - before.literal;
    let matched = after.matched - before.matched;
    assert!(
        literal < 64 * 1024 && matched >= 3_900_000,
        "rename sent {literal} literal bytes, matched {matched}"
    );
}

/// Deletions sweep the directories that lost names: everything else in
/// them is listed only to be spared, so no file is sent again (the
/// quick check skips them), names created meanwhile stay, hard links on
/// the daemon stay links, and a removed tree goes with its contents.
#[test]
fn deletions_sweep_only_what_is_gone() {
    let Some((d, src, t)) = setup() else { return };
    let s = |p: &str| src.path().join(p);
    std::fs::create_dir_all(s("d/tree/deep")).unwrap();
    std::fs::create_dir_all(s("d/keep")).unwrap();
    std::fs::create_dir_all(s("other")).unwrap();
    for i in 0..40 {
        std::fs::write(s(&format!("d/f{i}")), vec![i as u8; 50_000]).unwrap();
    }
    std::fs::write(s("d/tree/deep/x"), b"x").unwrap();
    std::fs::write(s("d/keep/y"), b"y").unwrap();
    std::fs::write(s("d/linked"), vec![9u8; 100_000]).unwrap();
    std::fs::hard_link(s("d/linked"), s("other/linked")).unwrap();
    std::fs::write(s("gone-at-the-top"), b"z").unwrap();
    reconcile(&t, &d, src.path());
    let module = d.module_dir("push");
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    assert_eq!(
        ino(&module.join("d/linked")),
        ino(&module.join("other/linked"))
    );
    let before = t.totals();
    let log_before = d.log().len();

    std::fs::remove_file(s("d/f7")).unwrap();
    std::fs::remove_dir_all(s("d/tree")).unwrap();
    std::fs::remove_file(s("gone-at-the-top")).unwrap();
    std::fs::write(s("d/created"), b"new").unwrap();
    for op in [
        Op::Unlink {
            path: PathBuf::from("d/f7"),
        },
        Op::Unlink {
            path: PathBuf::from("d/tree/deep/x"),
        },
        Op::Rmdir {
            path: PathBuf::from("d/tree/deep"),
        },
        Op::Rmdir {
            path: PathBuf::from("d/tree"),
        },
        Op::Unlink {
            path: PathBuf::from("gone-at-the-top"),
        },
        Op::Create {
            path: PathBuf::from("d/created"),
            kind: replicafs::journal::record::NodeKind::File,
            mode: 0o644,
        },
    ] {
        change(&t, op);
    }
    t.flush().unwrap();
    check(&d, src.path());
    let after = t.totals();
    eprintln!(
        "deletions: {} files, {} literal, {} bytes sent, {} received, {} deleted",
        after.files - before.files,
        after.literal - before.literal,
        after.bytes_sent - before.bytes_sent,
        after.bytes_received - before.bytes_received,
        after.deleted - before.deleted,
    );
    let log = d.log()[log_before..].to_string();
    eprintln!("{log}");
    for gone in ["d/f7", "d/tree/", "gone-at-the-top"] {
        assert!(log.contains(&format!("*deleting   {gone}")), "{log}");
    }
    // Only the created file was sent.
    let sent: Vec<&str> = log.lines().filter(|l| l.contains(" >f")).collect();
    assert!(sent.len() == 1 && sent[0].contains(" d/created "), "{log}");
    assert_eq!(after.files - before.files, 1);
    assert_eq!(after.literal - before.literal, 3);
    assert!(after.bytes_sent - before.bytes_sent < 8 * 1024);
    assert_eq!(
        ino(&module.join("d/linked")),
        ino(&module.join("other/linked"))
    );
}

/// A listed file that cannot be opened when the daemon asks for it (gone
/// since the list was made) is refused with MSG_NO_SEND; the index echoed
/// for the next file must still be the right one.
#[test]
fn a_file_gone_before_it_is_sent_does_not_shift_the_next_index() {
    use replicafs::replica::rsync::flist::Entry;
    use replicafs::replica::rsync::handshake::Login;
    use replicafs::replica::rsync::session::{self, Push};
    use std::io::Write;
    let Some(d) = Daemon::start() else { return };
    let file = |name: &str| Entry {
        mode: 0o100644,
        size: 5,
        mtime: 1_700_000_000,
        ..Entry::missing(name.as_bytes().to_vec())
    };
    let push = Push {
        entries: vec![
            Entry {
                mode: 0o040755,
                mtime: 1_700_000_000,
                flags: replicafs::replica::rsync::flist::XMIT_TOP_DIR,
                ..Entry::missing(b".".to_vec())
            },
            file("a"),
            file("b"),
            file("c"),
        ],
        data: Default::default(),
        open: Box::new(|e: &Entry| {
            if e.name == b"b" {
                return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
            }
            let mut f = tempfile::tempfile()?;
            f.write_all(&[e.name[0]; 5])?;
            Ok(f)
        }),
        delete: false,
        protect: Vec::new(),
        gone: Vec::new(),
        spared: Default::default(),
        ignore_times: false,
        inplace: false,
        fuzzy: false,
    };
    let url = RsyncUrl::parse(&d.url("push")).unwrap();
    let login = Login {
        url: &url,
        password: None,
        timeout: std::time::Duration::from_secs(10),
    };
    // The daemon may report the vanished file; what matters is that the
    // others arrive intact.
    let r = session::run(&login, &push);
    let m = d.module_dir("push");
    assert_eq!(
        std::fs::read(m.join("a")).ok(),
        Some(b"aaaaa".to_vec()),
        "{r:?}\n{}",
        d.log()
    );
    assert_eq!(
        std::fs::read(m.join("c")).ok(),
        Some(b"ccccc".to_vec()),
        "{r:?}\n{}",
        d.log()
    );
    assert!(!m.join("b").exists());
}
