//! The sync engine: an ordered queue of changes (fed by the recording
//! layer after each operation succeeded on SOURCE), one worker per target
//! that applies them in that order, barriers that wait for them, and the
//! journal checkpoint that follows what every target acknowledged.
//!
//! Queue positions count entries ever pushed. A target has *applied*
//! position p when every entry before p is on it and durable (synced).
//! Writes to one file coalesce into the file's latest entry while no worker
//! has taken it yet, so a burst of writes becomes one range set.
//!
//! The queue is in `queue`, the workers in `worker`, retries and the
//! failing state in `retry`, the barriers in `barrier`.

mod barrier;
#[cfg(test)]
mod fake;
pub mod policy;
mod queue;
mod retry;
pub mod status;
mod worker;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::backend::FastIo;
use crate::journal::Journal;
use crate::journal::record::Op;
use crate::replica::{Progress, Replica};
use crate::sys::{Identity, Ino};
use policy::TargetDown;
pub use queue::Entry;
use queue::Queue;
use retry::Outage;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    InSync,
    CatchingUp,
    Failing,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::InSync => "in_sync",
            State::CatchingUp => "catching_up",
            State::Failing => "failing",
        }
    }
}

/// What a worker does before it drains the queue.
#[derive(Clone, Debug)]
pub enum Startup {
    /// Walk everything (first mount, or the journal cannot be trusted).
    Full,
    /// Only these paths may differ (recovery after a crash in this boot).
    Paths(Vec<PathBuf>),
}

struct Slot {
    target: Box<dyn Replica>,
    applied: AtomicU64,
    claimed: AtomicU64,
    replicated: AtomicU64,
    failing: AtomicBool,
    reconciling: AtomicBool,
    /// The start-up reconcile finished: barriers may count on `applied`.
    ready: AtomicBool,
    /// Applied but not yet made durable (synced): `applied` follows at the
    /// next sync.
    done: AtomicU64,
    last_sync: Mutex<Instant>,
    last_error: Mutex<Option<String>>,
    progress: Arc<Progress>,
    /// The last flush (push) failed: only a flush that works is a recovery
    /// (a batching target's `apply` and `resync` only gather, and succeed
    /// with the target down).
    flush_failing: AtomicBool,
    /// Since when the target has been failing, for the log: one line when
    /// it starts, a reminder now and then, one line when it recovers.
    outage: Mutex<Option<Outage>>,
    /// Writers stopped waiting for it (policy `degrade`) ...
    degraded: AtomicBool,
    /// ... at positions up to this one: it is whole again once applied
    /// reaches it.
    degraded_at: AtomicU64,
}

pub struct Engine {
    queue: Mutex<Queue>,
    work: Condvar,
    progress: Condvar,
    slots: Vec<Slot>,
    journal: Journal,
    source: PathBuf,
    io: Box<dyn FastIo>,
    stop: AtomicBool,
    /// Barriers waiting: workers sync at once instead of on their timer.
    waiters: std::sync::atomic::AtomicUsize,
    /// Changes dropped because they name a path outside the tree.
    invalid_dropped: AtomicU64,
    /// What writers' barriers do while a target is down.
    on_down: TargetDown,
}

impl Engine {
    pub fn new(
        source: &Path,
        journal: Journal,
        targets: Vec<Box<dyn Replica>>,
        io: Box<dyn FastIo>,
        on_down: TargetDown,
    ) -> Arc<Self> {
        let slots = targets
            .into_iter()
            .map(|target| Slot {
                target,
                applied: AtomicU64::new(0),
                claimed: AtomicU64::new(0),
                replicated: AtomicU64::new(0),
                failing: AtomicBool::new(false),
                reconciling: AtomicBool::new(false),
                ready: AtomicBool::new(false),
                done: AtomicU64::new(0),
                last_sync: Mutex::new(Instant::now()),
                last_error: Mutex::new(None),
                progress: Arc::default(),
                flush_failing: AtomicBool::new(false),
                outage: Mutex::new(None),
                degraded: AtomicBool::new(false),
                degraded_at: AtomicU64::new(0),
            })
            .collect();
        Arc::new(Engine {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            progress: Condvar::new(),
            slots,
            journal,
            source: source.to_path_buf(),
            io,
            stop: AtomicBool::new(false),
            waiters: std::sync::atomic::AtomicUsize::new(0),
            invalid_dropped: AtomicU64::new(0),
            on_down,
        })
    }

    /// Counts records the caller dropped for naming paths outside the
    /// tree (recovery filters the journal before the engine starts).
    pub fn count_invalid_records(&self, n: u64) {
        self.invalid_dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Records and changes dropped for naming paths outside the tree.
    pub fn invalid_records_dropped(&self) -> u64 {
        self.invalid_dropped.load(Ordering::Relaxed)
    }

    /// Whether every target finished its start-up reconcile (barriers
    /// count on it from then on).
    pub fn started(&self) -> bool {
        self.slots.iter().all(|s| s.ready.load(Ordering::Acquire))
    }

    pub fn on_target_down(&self) -> TargetDown {
        self.on_down
    }

    pub fn io_backend(&self) -> &'static str {
        self.io.name()
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts one worker per target, and the journal's group commit.
    pub fn start(
        self: &Arc<Self>,
        startup: Startup,
    ) -> io::Result<Vec<std::thread::JoinHandle<()>>> {
        let mut handles = Vec::new();
        for i in 0..self.slots.len() {
            let me = Arc::clone(self);
            let s = startup.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("sync-{i}"))
                    .spawn(move || me.worker(i, s))?,
            );
        }
        let me = Arc::clone(self);
        handles.push(
            std::thread::Builder::new()
                .name("journal-commit".into())
                .spawn(move || {
                    while !me.stop.load(Ordering::Acquire) {
                        std::thread::sleep(crate::journal::GROUP_COMMIT);
                        if let Err(e) = me.journal.commit() {
                            tracing::error!("journal commit: {e}");
                        }
                    }
                })?,
        );
        Ok(handles)
    }

    /// Records the intent of `op` before it runs on SOURCE. Returns its
    /// sequence number, to [`Engine::push`] or [`Engine::abort`] after.
    pub fn intent(&self, op: &Op) -> io::Result<u64> {
        let mut q = self.lock();
        let seq = self.journal.append(op)?;
        q.inflight.insert(seq);
        Ok(seq)
    }

    /// The operation of intent `seq` failed: nothing to replicate.
    pub fn abort(&self, seq: u64) {
        self.lock().inflight.remove(&seq);
    }

    /// The operation of intent `seq` succeeded: queue it. Returns the
    /// position a barrier waits for to cover it.
    pub fn push(
        &self,
        seq: u64,
        op: Op,
        subject: Option<Identity>,
        parents: Vec<(PathBuf, Identity)>,
    ) -> u64 {
        let mut q = self.lock();
        q.inflight.remove(&seq);
        let pos = q.append(Entry {
            min_seq: seq,
            op,
            extents: None,
            subject,
            parents,
            at: Instant::now(),
        });
        drop(q);
        self.work.notify_all();
        pos + 1
    }

    /// A write of `[offset, offset + len)` to `ino` (at `path`) succeeded.
    pub fn push_write(
        &self,
        seq: u64,
        ino: Ino,
        path: PathBuf,
        offset: u64,
        len: u64,
        subject: Option<Identity>,
    ) -> u64 {
        let mut q = self.lock();
        q.inflight.remove(&seq);
        let claimed = self
            .slots
            .iter()
            .map(|s| s.claimed.load(Ordering::Acquire))
            .max()
            .unwrap_or(0);
        if let Some(p) = q.coalesce_write(seq, ino, &path, offset, len, claimed) {
            return p + 1;
        }
        let pos = q.append_write(
            ino,
            Entry {
                min_seq: seq,
                op: Op::Write { path, offset, len },
                extents: None,
                subject,
                parents: Vec::new(),
                at: Instant::now(),
            },
        );
        drop(q);
        self.work.notify_all();
        pos + 1
    }

    /// SOURCE changed at `path` behind the mount's back (a watch saw it):
    /// journal it and queue a compare of that path.
    pub fn push_resync(&self, path: PathBuf) -> io::Result<()> {
        let op = Op::Resync { path };
        let seq = self.intent(&op)?;
        self.push(seq, op, None, Vec::new());
        Ok(())
    }

    /// Something changed that could not be recorded by path: the next
    /// pass of every worker reconciles the whole tree.
    pub fn request_full_reconcile(&self) {
        self.lock().full_reconcile = true;
        self.work.notify_all();
    }

    /// Stops later coalescing into `ino`'s current entry: the next write
    /// must come after whatever op is being recorded now.
    pub fn fence(&self, ino: Ino) {
        self.lock().writes.remove(&ino);
    }

    /// Stops the workers (after a drain, if the caller wants one) and
    /// records a clean shutdown if every target has everything.
    pub fn shutdown(&self, handles: Vec<std::thread::JoinHandle<()>>) {
        self.stop.store(true, Ordering::Release);
        self.work.notify_all();
        for h in handles {
            let _ = h.join();
        }
        let q = self.lock();
        let all = self
            .slots
            .iter()
            .all(|s| s.applied.load(Ordering::Acquire) >= q.pushed)
            && q.inflight.is_empty();
        drop(q);
        if all {
            let last = self.journal.next_seq().saturating_sub(1);
            if let Err(e) = self
                .journal
                .set_checkpoint(last)
                .and_then(|_| self.journal.mark_clean())
            {
                tracing::error!("journal: {e}");
            }
        } else if let Err(e) = self.journal.commit() {
            tracing::error!("journal: {e}");
        }
    }

    /// Drops entries every target has, and moves the checkpoint.
    fn trim(&self) {
        let mut q = self.lock();
        let done = self
            .slots
            .iter()
            .map(|s| s.applied.load(Ordering::Acquire))
            .min()
            .unwrap_or(q.pushed);
        let cp = q.trim(done, self.journal.next_seq());
        drop(q);
        if let Err(e) = self.journal.set_checkpoint(cp) {
            tracing::error!("journal checkpoint: {e}");
        }
    }

    /// The state of every target, for `status`.
    pub fn target_status(&self) -> Vec<status::TargetStatus> {
        let q = self.lock();
        self.slots
            .iter()
            .map(|s| {
                let applied = s.applied.load(Ordering::Acquire);
                let pending: Vec<&Arc<Entry>> = q.entries_from(applied).collect();
                let lag = pending
                    .first()
                    .map(|e| e.at.elapsed().as_secs_f64())
                    .unwrap_or(0.0);
                let state = if s.failing.load(Ordering::Acquire) {
                    State::Failing
                } else if !pending.is_empty() || s.reconciling.load(Ordering::Acquire) {
                    State::CatchingUp
                } else {
                    State::InSync
                };
                status::TargetStatus {
                    target: s.target.name(),
                    state: state.as_str().into(),
                    lag_seconds: lag,
                    pending_bytes: pending.iter().map(|e| e.bytes()).sum(),
                    pending_ops: pending.len() as u64,
                    replicated_bytes: s.replicated.load(Ordering::Relaxed)
                        + s.progress.bytes_copied.load(Ordering::Relaxed),
                    last_error: s
                        .last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone(),
                    degraded: s.degraded.load(Ordering::Acquire),
                    warnings: s.target.warnings(),
                    reconcile: status::ReconcileStatus {
                        running: s.reconciling.load(Ordering::Acquire),
                        entries_scanned: s.progress.entries.load(Ordering::Relaxed),
                        entries_fixed: s.progress.entries_fixed.load(Ordering::Relaxed),
                        bytes_copied: s.progress.bytes_copied.load(Ordering::Relaxed),
                    },
                }
            })
            .collect()
    }
}
