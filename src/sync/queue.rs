//! The ordered queue of changes: what was pushed, what a batch holds, and
//! what can be dropped once every target has it.
//!
//! Queue positions count entries ever pushed. Writes to one file coalesce
//! into the file's latest entry while no worker has taken it yet, so a
//! burst of writes becomes one range set.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::journal::extents::ExtentSet;
use crate::journal::record::Op;
use crate::sys::{Identity, Ino};

/// The most entries one batch takes.
pub(super) const MAX_BATCH: u64 = 512;

/// One change waiting for the targets.
pub struct Entry {
    pub min_seq: u64,
    pub op: Op,
    pub extents: Option<ExtentSet>,
    pub subject: Option<Identity>,
    pub parents: Vec<(PathBuf, Identity)>,
    pub at: Instant,
}

impl Entry {
    pub(super) fn bytes(&self) -> u64 {
        match (&self.extents, &self.op) {
            (Some(x), _) => x.bytes(),
            (None, Op::Write { len, .. }) => *len,
            _ => 0,
        }
    }
}

#[derive(Default)]
pub(super) struct Queue {
    pub(super) entries: VecDeque<Arc<Entry>>,
    /// Position of `entries[0]`.
    pub(super) base: u64,
    /// Position the next push gets.
    pub(super) pushed: u64,
    /// Latest entry position of each file's writes (to coalesce into).
    pub(super) writes: HashMap<Ino, u64>,
    /// Intents recorded whose operation has not finished yet.
    pub(super) inflight: BTreeSet<u64>,
    pub(super) full_reconcile: bool,
    /// Latest position of a recorded op on each path (for resyncs).
    touched: HashMap<PathBuf, u64>,
    /// Latest position of an op that moves or removes a directory's
    /// contents wholesale (rename, rmdir): they touch paths below theirs.
    last_tree_op: u64,
}

/// The entries one worker claimed, positions `start..end`.
pub(super) struct Batch {
    pub(super) entries: Vec<Arc<Entry>>,
    pub(super) start: u64,
    pub(super) end: u64,
    /// A whole-tree reconcile was requested before the claim.
    pub(super) full: bool,
}

impl Queue {
    /// Appends an entry, indexing the paths it touches.
    pub(super) fn append(&mut self, e: Entry) -> u64 {
        let pos = self.pushed;
        self.pushed += 1;
        if !matches!(e.op, Op::Resync { .. }) {
            for p in e.op.paths() {
                self.touched.insert(p.to_path_buf(), pos);
            }
            if matches!(e.op, Op::Rename { .. } | Op::Rmdir { .. }) {
                self.last_tree_op = pos + 1;
            }
        }
        self.entries.push_back(Arc::new(e));
        pos
    }

    /// Appends a write that did not coalesce: later writes to `ino`
    /// coalesce into it.
    pub(super) fn append_write(&mut self, ino: Ino, e: Entry) -> u64 {
        let pos = self.append(e);
        self.writes.insert(ino, pos);
        pos
    }

    /// Merges a write of `[offset, offset + len)` to `ino` at `path` (intent
    /// `seq`) into the file's latest entry, if that is still a write to the
    /// same path and no worker claimed it (`claimed`: the furthest any
    /// worker claimed). Returns the entry's position.
    pub(super) fn coalesce_write(
        &mut self,
        seq: u64,
        ino: Ino,
        path: &Path,
        offset: u64,
        len: u64,
        claimed: u64,
    ) -> Option<u64> {
        let &p = self.writes.get(&ino)?;
        if p < claimed || p < self.base {
            return None;
        }
        let idx = (p - self.base) as usize;
        // Shared: a batch (or `status`) holds it, so it was taken.
        let e = self.entries.get_mut(idx).and_then(Arc::get_mut)?;
        let Op::Write {
            path: ep,
            offset: first,
            len: first_len,
        } = &e.op
        else {
            return None;
        };
        if ep != path {
            return None;
        }
        let (first, first_len) = (*first, *first_len);
        e.extents
            .get_or_insert_with(|| {
                let mut x = ExtentSet::new();
                x.insert(first, first_len);
                x
            })
            .insert(offset, len);
        e.min_seq = e.min_seq.min(seq);
        Some(p)
    }

    /// The entries from position `pos` on (those before it are gone or
    /// skipped).
    pub(super) fn entries_from(&self, pos: u64) -> impl Iterator<Item = &Arc<Entry>> {
        self.entries
            .iter()
            .skip(pos.saturating_sub(self.base) as usize)
    }

    /// Whether an entry after position `pos` (not yet applied) touches
    /// `path`, an ancestor or a descendant of it: then that entry brings
    /// the target there, and a compare now would run ahead of it.
    /// `is_dir` says whether `path` is a directory on SOURCE.
    pub(super) fn later_touches(
        &self,
        pos: u64,
        path: &Path,
        is_dir: impl FnOnce() -> bool,
    ) -> bool {
        if self.touched.get(path).is_some_and(|&p| p > pos) {
            return true;
        }
        // Below a directory, or after a rename/rmdir: look at each entry.
        let is_dir = is_dir();
        if self.last_tree_op <= pos + 1 && !is_dir {
            return false;
        }
        self.entries_from(pos + 1).any(|e| {
            !matches!(e.op, Op::Resync { .. })
                && e.op
                    .paths()
                    .iter()
                    .any(|p| p.starts_with(path) || path.starts_with(p))
        })
    }

    /// Takes the next batch from `start` (where the worker's last claim
    /// ended), and a pending whole-tree reconcile request. A backlog (after
    /// an outage, or a burst) goes in batches of at most [`MAX_BATCH`],
    /// each done (and, at the next sync, applied) on its own, so the lag
    /// falls as it drains. Not after a reconcile (`tainted`, or the
    /// request): that batch must reach the end of the queue. A worker
    /// `retrying` a failed push pushes what was gathered, nothing more.
    pub(super) fn claim(&mut self, start: u64, retrying: bool, tainted: bool) -> Batch {
        let full = std::mem::take(&mut self.full_reconcile);
        let end = if retrying {
            start
        } else if !tainted && !full {
            self.pushed.min(start + MAX_BATCH)
        } else {
            self.pushed
        };
        let entries = self
            .entries
            .range((start - self.base) as usize..(end - self.base) as usize)
            .cloned()
            .collect();
        Batch {
            entries,
            start,
            end,
            full,
        }
    }

    /// Drops the entries before `done` (what every target applied) and the
    /// indexes that point at them. Returns the journal checkpoint: the last
    /// sequence number nothing queued or in flight still needs (`next_seq`
    /// is the journal's next).
    pub(super) fn trim(&mut self, done: u64, next_seq: u64) -> u64 {
        while self.base < done {
            self.entries.pop_front();
            self.base += 1;
        }
        let base = self.base;
        self.writes.retain(|_, p| *p >= base);
        if self.touched.len() > 4 * self.entries.len() + 1024 {
            self.touched.retain(|_, p| *p >= base);
        }
        let oldest_entry = self
            .entries
            .iter()
            .map(|e| e.min_seq)
            .min()
            .unwrap_or(next_seq);
        let oldest_inflight = self.inflight.first().copied().unwrap_or(next_seq);
        oldest_entry
            .min(oldest_inflight)
            .min(next_seq)
            .saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, op: Op) -> Entry {
        Entry {
            min_seq: seq,
            op,
            extents: None,
            subject: None,
            parents: Vec::new(),
            at: Instant::now(),
        }
    }

    fn write(path: &str, offset: u64, len: u64) -> Op {
        Op::Write {
            path: path.into(),
            offset,
            len,
        }
    }

    fn attr(path: &str) -> Op {
        Op::Attr { path: path.into() }
    }

    /// Pushes a write the way the engine does: coalesced if it can be.
    fn push_write(q: &mut Queue, seq: u64, ino: Ino, path: &str, off: u64, len: u64) -> u64 {
        let claimed = 0;
        q.coalesce_write(seq, ino, Path::new(path), off, len, claimed)
            .unwrap_or_else(|| q.append_write(ino, entry(seq, write(path, off, len))))
    }

    fn ranges(e: &Entry) -> Vec<(u64, u64)> {
        e.extents
            .as_ref()
            .map_or_else(Vec::new, |x| x.iter().collect())
    }

    #[test]
    fn appending_counts_positions_from_the_first_push() {
        let mut q = Queue::default();
        assert_eq!(q.append(entry(1, attr("a"))), 0);
        assert_eq!(q.append(entry(2, attr("b"))), 1);
        assert_eq!(q.pushed, 2);
        assert_eq!(q.entries.len(), 2);
        assert_eq!(q.entries_from(1).count(), 1);
        assert_eq!(q.entries_from(7).count(), 0);
    }

    #[test]
    fn writes_to_one_file_coalesce_into_one_range_set() {
        let mut q = Queue::default();
        assert_eq!(push_write(&mut q, 5, 1, "f", 0, 10), 0);
        assert_eq!(push_write(&mut q, 6, 1, "f", 100, 5), 0);
        assert_eq!(push_write(&mut q, 4, 1, "f", 10, 10), 0);
        assert_eq!(q.entries.len(), 1);
        let e = &q.entries[0];
        assert_eq!(ranges(e), vec![(0, 20), (100, 105)]);
        assert_eq!(e.bytes(), 25);
        assert_eq!(e.min_seq, 4);
        // Another file gets its own entry.
        assert_eq!(push_write(&mut q, 7, 2, "g", 0, 1), 1);
        assert_eq!(q.entries[1].bytes(), 1);
    }

    #[test]
    fn a_write_does_not_coalesce_into_a_claimed_or_shared_entry() {
        let mut q = Queue::default();
        q.append_write(1, entry(1, write("f", 0, 10)));
        // A worker claimed it.
        assert_eq!(q.coalesce_write(2, 1, Path::new("f"), 10, 1, 1), None);
        // A batch holds it.
        let held = Arc::clone(&q.entries[0]);
        assert_eq!(q.coalesce_write(2, 1, Path::new("f"), 10, 1, 0), None);
        drop(held);
        // Renamed since (a new path for the same inode).
        assert_eq!(q.coalesce_write(2, 1, Path::new("g"), 10, 1, 0), None);
        // Still open: it coalesces.
        assert_eq!(q.coalesce_write(2, 1, Path::new("f"), 10, 1, 0), Some(0));
        // Fenced (an op came in between).
        q.writes.remove(&1);
        assert_eq!(q.coalesce_write(3, 1, Path::new("f"), 20, 1, 0), None);
        assert_eq!(ranges(&q.entries[0]), vec![(0, 11)]);
    }

    #[test]
    fn trimming_drops_what_every_target_has_and_moves_the_checkpoint() {
        let mut q = Queue::default();
        for seq in 1..=4 {
            q.append_write(seq, entry(seq, write("f", 0, 1)));
        }
        // The slowest target applied two entries: seqs 3 and 4 are needed.
        assert_eq!(q.trim(2, 5), 2);
        assert_eq!((q.base, q.pushed, q.entries.len()), (2, 4, 2));
        assert_eq!(q.entries[0].min_seq, 3);
        assert!(!q.writes.contains_key(&1) && q.writes.contains_key(&3));
        // An older intent still in flight holds the checkpoint back.
        q.inflight.insert(2);
        assert_eq!(q.trim(4, 9), 1);
        assert!(q.entries.is_empty());
        q.inflight.clear();
        // Nothing left: everything before the journal's next is done.
        assert_eq!(q.trim(4, 9), 8);
        assert_eq!(q.trim(4, 0), 0);
    }

    #[test]
    fn later_touches_sees_the_path_its_ancestors_and_descendants() {
        let mut q = Queue::default();
        q.append(entry(1, attr("d/f"))); // 0
        q.append(entry(2, Op::Resync { path: "d".into() })); // 1
        q.append(entry(3, attr("d/g"))); // 2
        let file = || false;
        let dir = || true;
        // The same path later.
        assert!(q.later_touches(1, Path::new("d/g"), file));
        assert!(!q.later_touches(2, Path::new("d/g"), file));
        // A file nothing later names.
        assert!(!q.later_touches(0, Path::new("d/f"), file));
        // A directory with a change below it later.
        assert!(q.later_touches(1, Path::new("d"), dir));
        assert!(!q.later_touches(2, Path::new("d"), dir));
        // Resyncs do not count.
        assert!(!q.later_touches(0, Path::new("e"), dir));
        q.append(entry(4, Op::Resync { path: "e".into() })); // 3
        assert!(!q.later_touches(0, Path::new("e"), dir));
    }

    #[test]
    fn later_touches_sees_a_later_rename_of_an_ancestor() {
        let mut q = Queue::default();
        q.append(entry(
            1,
            Op::Resync {
                path: "a/b/c".into(),
            },
        )); // 0
        q.append(entry(
            2,
            Op::Rename {
                from: "a".into(),
                to: "z".into(),
                flags: 0,
            },
        )); // 1
        assert!(q.later_touches(0, Path::new("a/b/c"), || false));
        assert!(!q.later_touches(0, Path::new("y/b"), || false));
        assert!(!q.later_touches(1, Path::new("a/b/c"), || false));
    }

    #[test]
    fn a_batch_takes_at_most_max_batch_unless_after_a_reconcile() {
        let mut q = Queue::default();
        for seq in 0..MAX_BATCH + 10 {
            q.append(entry(seq, attr("a")));
        }
        let b = q.claim(0, false, false);
        assert_eq!(
            (b.start, b.end, b.entries.len()),
            (0, MAX_BATCH, MAX_BATCH as usize)
        );
        assert!(!b.full);
        let b = q.claim(MAX_BATCH, false, false);
        assert_eq!((b.start, b.end), (MAX_BATCH, MAX_BATCH + 10));
        // Tainted: everything to the end.
        let b = q.claim(3, false, true);
        assert_eq!(b.end, MAX_BATCH + 10);
        // A whole-tree request: everything, and the request is taken.
        q.full_reconcile = true;
        let b = q.claim(3, false, false);
        assert!(b.full);
        assert_eq!(b.end, MAX_BATCH + 10);
        assert!(!q.claim(3, false, false).full);
        // Waiting to retry a push: nothing new.
        let b = q.claim(5, true, false);
        assert_eq!((b.start, b.end, b.entries.len()), (5, 5, 0));
    }

    #[test]
    fn a_batch_counts_from_the_trimmed_base() {
        let mut q = Queue::default();
        for seq in 0..6 {
            q.append(entry(seq, attr(&format!("f{seq}"))));
        }
        q.trim(4, 10);
        let b = q.claim(4, false, false);
        assert_eq!(b.entries.len(), 2);
        assert_eq!(b.entries[0].op, attr("f4"));
    }
}
