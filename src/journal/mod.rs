//! The change journal: an append-only log of what changed through the
//! mount, in the state dir, that survives a kill -9 of the daemon.
//!
//! A record is written with write(2) *before* its operation runs on SOURCE
//! (an intent): the page cache keeps it if the process dies, so no change
//! can happen unrecorded. Records are fsync'd in groups (every
//! [`GROUP_COMMIT`] and at clean shutdown). After every target acknowledged
//! everything up to a sequence number, that number is the checkpoint and
//! whole segments below it are deleted. On start, records after the
//! checkpoint are what recovery must look at. Format: docs/journal.md.

pub mod extents;
pub mod record;

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::error::context;
use crate::state_dir::{self, StateDir};
use record::{Op, Record};

/// How often appended records are made durable.
pub const GROUP_COMMIT: Duration = Duration::from_millis(50);
/// A segment is closed and a new one begun past this size.
pub const SEGMENT_BYTES: u64 = 16 << 20;

struct Active {
    file: File,
    first_seq: u64,
    size: u64,
    buf: Vec<u8>,
}

pub struct Journal {
    dir: StateDir,
    active: Mutex<Active>,
    next_seq: AtomicU64,
    checkpoint: AtomicU64,
    /// Held while the checkpoint is written: the worker of every target
    /// moves it, and one write must never overtake another (an older
    /// checkpoint renamed over a newer one, or two writers sharing one
    /// temporary file).
    checkpoint_writer: Mutex<()>,
    dirty: AtomicBool,
}

/// What a previous run left behind.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Records after the checkpoint, in order.
    pub records: Vec<Record>,
    pub checkpoint: u64,
    /// The previous run shut down cleanly (drained and checkpointed).
    pub clean: bool,
    /// The previous run was in this boot: its unsynced records are still
    /// intact (only power loss or a reboot loses them).
    pub same_boot: bool,
    /// Whether a previous run existed at all.
    pub existed: bool,
    /// Bytes of torn tail cut off.
    pub torn_bytes: u64,
}

fn seg_name(first: u64) -> String {
    format!("seg-{first:020}.log")
}

fn seg_first(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn read_text(dir: &StateDir, name: &str) -> io::Result<Option<String>> {
    Ok(state_dir::read_optional(dir, name)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

impl Journal {
    /// Opens (or creates) the journal in `dir` (the state dir's
    /// `journal`), returning what a previous run left. Torn tails are cut
    /// off; the clean marker is consumed.
    pub fn open(dir: StateDir) -> io::Result<(Journal, Recovered)> {
        let mut rec = Recovered::default();
        if let Some(s) = read_text(&dir, "checkpoint")? {
            rec.existed = true;
            rec.checkpoint = s.trim().parse().unwrap_or(0);
        }
        rec.clean = dir.exists("clean")?;
        rec.same_boot = read_text(&dir, "boot_id")?.is_some_and(|b| b.trim() == boot_id());
        let mut segs: Vec<(u64, String)> = dir
            .names()?
            .into_iter()
            .filter_map(|n| Some((seg_first(&n)?, n)))
            .collect();
        segs.sort();
        rec.existed |= !segs.is_empty();
        let mut last_seq = rec.checkpoint;
        for (_, name) in &segs {
            let mut buf = Vec::new();
            dir.open_read(name)?
                .read_to_end(&mut buf)
                .map_err(|e| context(dir.path().join(name).display(), e))?;
            let (records, valid) = record::decode_all(&buf);
            if valid < buf.len() {
                rec.torn_bytes += (buf.len() - valid) as u64;
                let f = dir.open_write(name)?;
                f.set_len(valid as u64)?;
                f.sync_all()?;
            }
            for r in records {
                last_seq = last_seq.max(r.seq);
                if r.seq > rec.checkpoint {
                    rec.records.push(r);
                }
            }
        }
        // A fresh segment for this run.
        let first = last_seq + 1;
        let file = dir.open_append(&seg_name(first))?;
        dir.remove("clean")?;
        state_dir::write_atomic(&dir, "boot_id", boot_id().as_bytes())?;
        dir.sync()?;
        let journal = Journal {
            dir,
            active: Mutex::new(Active {
                file,
                first_seq: first,
                size: 0,
                buf: Vec::with_capacity(4096),
            }),
            next_seq: AtomicU64::new(first),
            checkpoint: AtomicU64::new(rec.checkpoint),
            checkpoint_writer: Mutex::new(()),
            dirty: AtomicBool::new(false),
        };
        Ok((journal, rec))
    }

    /// Appends an intent record; returns its sequence number. One write(2):
    /// after it returns, a kill -9 cannot lose the record.
    pub fn append(&self, op: &Op) -> io::Result<u64> {
        let mut a = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        let Active {
            buf, file, size, ..
        } = &mut *a;
        buf.clear();
        record::encode(
            &Record {
                seq,
                op: op.clone(),
            },
            buf,
        );
        file.write_all(buf).map_err(|e| {
            context(
                format_args!("append to journal {}", self.dir.path().display()),
                e,
            )
        })?;
        *size += buf.len() as u64;
        self.dirty.store(true, Ordering::Release);
        if a.size >= SEGMENT_BYTES {
            self.rotate(&mut a, seq + 1)?;
        }
        Ok(seq)
    }

    fn rotate(&self, a: &mut Active, first: u64) -> io::Result<()> {
        a.file.sync_data()?;
        a.file = self.dir.open_append(&seg_name(first))?;
        a.first_seq = first;
        a.size = 0;
        Ok(())
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::SeqCst)
    }

    pub fn checkpoint(&self) -> u64 {
        self.checkpoint.load(Ordering::SeqCst)
    }

    /// Makes appended records durable (group commit).
    pub fn commit(&self) -> io::Result<()> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            let f = {
                let a = self.active.lock().unwrap_or_else(|e| e.into_inner());
                a.file.try_clone()?
            };
            f.sync_data()?;
        }
        Ok(())
    }

    /// Every target has everything up to `seq`: records at or below it are
    /// no longer needed. Persists the checkpoint and deletes whole segments
    /// below it.
    pub fn set_checkpoint(&self, seq: u64) -> io::Result<()> {
        let _writer = self
            .checkpoint_writer
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if seq <= self.checkpoint.load(Ordering::SeqCst) {
            return Ok(());
        }
        state_dir::write_atomic(&self.dir, "checkpoint", seq.to_string().as_bytes())?;
        self.checkpoint.store(seq, Ordering::SeqCst);
        let active_first = self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first_seq;
        let mut segs: Vec<u64> = self
            .dir
            .names()?
            .iter()
            .filter_map(|n| seg_first(n))
            .collect();
        segs.sort();
        // A segment can go when the next one starts at or below seq + 1.
        for w in segs.windows(2) {
            if w[1] <= seq + 1 && w[0] != active_first {
                let _ = self.dir.remove(&seg_name(w[0]));
            }
        }
        Ok(())
    }

    /// Records a clean shutdown: everything is on every target.
    pub fn mark_clean(&self) -> io::Result<()> {
        self.commit()?;
        state_dir::write_atomic(&self.dir, "clean", b"clean\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::Op;
    use std::fs::OpenOptions;
    use std::sync::Arc;

    fn open(p: &std::path::Path) -> (Journal, Recovered) {
        Journal::open(StateDir::open(p).unwrap()).unwrap()
    }

    fn op(i: u64) -> Op {
        Op::Write {
            path: format!("f{i}").into(),
            offset: i,
            len: 1,
        }
    }

    #[test]
    fn records_survive_reopen_and_the_checkpoint_trims_them() {
        let d = tempfile::tempdir().unwrap();
        let (j, rec) = open(d.path());
        assert!(!rec.existed);
        for i in 0..10 {
            assert_eq!(j.append(&op(i)).unwrap(), i + 1);
        }
        j.set_checkpoint(4).unwrap();
        drop(j); // no clean marker: as after kill -9
        let (j, rec) = open(d.path());
        assert!(rec.existed && !rec.clean && rec.same_boot);
        assert_eq!(rec.checkpoint, 4);
        assert_eq!(
            rec.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (5..=10).collect::<Vec<_>>()
        );
        assert_eq!(j.next_seq(), 11);
        j.set_checkpoint(10).unwrap();
        j.mark_clean().unwrap();
        drop(j);
        let (_, rec) = open(d.path());
        assert!(rec.clean);
        assert!(rec.records.is_empty());
    }

    #[test]
    fn a_torn_tail_is_cut_off() {
        let d = tempfile::tempdir().unwrap();
        let (j, _) = open(d.path());
        j.append(&op(1)).unwrap();
        j.append(&op(2)).unwrap();
        drop(j);
        let seg = std::fs::read_dir(d.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().starts_with("seg-"))
            .unwrap()
            .path();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (j, rec) = open(d.path());
        assert_eq!(rec.records.len(), 2);
        assert_eq!(rec.torn_bytes, 6);
        assert_eq!(j.append(&op(3)).unwrap(), 3);
    }

    #[test]
    fn old_segments_are_deleted_once_checkpointed() {
        let d = tempfile::tempdir().unwrap();
        let (j, _) = open(d.path());
        let big = Op::SetXattr {
            path: "f".into(),
            name: b"user.x".to_vec(),
            value: vec![0; 60_000],
            flags: 0,
        };
        let mut last = 0;
        while std::fs::read_dir(d.path()).unwrap().count() < 6 {
            last = j.append(&big).unwrap();
        }
        j.set_checkpoint(last).unwrap();
        let segs = std::fs::read_dir(d.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("seg-")
            })
            .count();
        assert!(segs <= 2, "{segs} segments left");
    }

    #[test]
    fn concurrent_checkpoints_never_fail_nor_go_back() {
        let d = tempfile::tempdir().unwrap();
        let (j, _) = open(d.path());
        for i in 0..3000 {
            j.append(&op(i)).unwrap();
        }
        let j = Arc::new(j);
        // Three targets' workers, each moving the checkpoint as its own
        // batches finish: interleaved, overlapping sequence numbers.
        let workers: Vec<_> = (0..3u64)
            .map(|t| {
                let j = Arc::clone(&j);
                std::thread::spawn(move || {
                    let mut errors = Vec::new();
                    for k in 0..1000u64 {
                        let seq = k * 3 + (t + k) % 3 + 1;
                        if let Err(e) = j.set_checkpoint(seq) {
                            errors.push(format!("set_checkpoint({seq}): {e}"));
                        }
                    }
                    errors
                })
            })
            .collect();
        let errors: Vec<String> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        assert!(
            errors.is_empty(),
            "{} errors: {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        );
        let on_disk: u64 = std::fs::read_to_string(d.path().join("checkpoint"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(on_disk, j.checkpoint());
        assert_eq!(on_disk, 3000);
        assert!(!d.path().join("checkpoint.tmp").exists());
    }
}
