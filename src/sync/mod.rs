//! The sync engine: an ordered queue of changes (fed by the recording
//! layer after each operation succeeded on SOURCE), one worker per target
//! that applies them in that order, barriers that wait for them, and the
//! journal checkpoint that follows what every target acknowledged.
//!
//! Queue positions count entries ever pushed. A target has *applied*
//! position p when every entry before p is on it and durable (synced).
//! Writes to one file coalesce into the file's latest entry while no worker
//! has taken it yet, so a burst of writes becomes one range set.

pub mod policy;
pub mod status;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::backend::FastIo;
use crate::journal::Journal;
use crate::journal::extents::ExtentSet;
use crate::journal::record::Op;
use crate::replica::{Change, Progress, Replica};
use crate::sys::{Identity, Ino};
use policy::TargetDown;

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
    fn bytes(&self) -> u64 {
        match (&self.extents, &self.op) {
            (Some(x), _) => x.bytes(),
            (None, Op::Write { len, .. }) => *len,
            _ => 0,
        }
    }
}

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

struct Outage {
    since: Instant,
    last_said: Instant,
    attempts: u64,
}

struct Queue {
    entries: VecDeque<Arc<Entry>>,
    /// Position of `entries[0]`.
    base: u64,
    /// Position the next push gets.
    pushed: u64,
    /// Latest entry position of each file's writes (to coalesce into).
    writes: HashMap<Ino, u64>,
    /// Intents recorded whose operation has not finished yet.
    inflight: BTreeSet<u64>,
    full_reconcile: bool,
    /// Latest position of a recorded op on each path (for resyncs).
    touched: HashMap<PathBuf, u64>,
    /// Latest position of an op that moves or removes a directory's
    /// contents wholesale (rename, rmdir): they touch paths below theirs.
    last_tree_op: u64,
}

impl Queue {
    /// Appends an entry, indexing the paths it touches.
    fn append(&mut self, e: Entry) -> u64 {
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

/// How long applied changes may wait for a target sync when no barrier
/// asks for one: syncing after every batch would make every write to
/// SOURCE hit the disk synchronously.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Backoff between retries of a failing target.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The most entries one batch takes.
const MAX_BATCH: u64 = 512;

/// How often the log repeats that a target is still failing.
const REMIND_EVERY: Duration = Duration::from_secs(30);

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
            queue: Mutex::new(Queue {
                entries: VecDeque::new(),
                base: 0,
                pushed: 0,
                writes: HashMap::new(),
                inflight: BTreeSet::new(),
                full_reconcile: false,
                touched: HashMap::new(),
                last_tree_op: 0,
            }),
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
        if let Some(&p) = q.writes.get(&ino) {
            if p >= claimed && p >= q.base {
                let idx = (p - q.base) as usize;
                if let Some(e) = q.entries.get_mut(idx).and_then(Arc::get_mut) {
                    if let Op::Write {
                        path: ep,
                        offset: first,
                        len: first_len,
                    } = &e.op
                    {
                        if *ep == path {
                            let (first, first_len) = (*first, *first_len);
                            e.extents
                                .get_or_insert_with(|| {
                                    let mut x = ExtentSet::new();
                                    x.insert(first, first_len);
                                    x
                                })
                                .insert(offset, len);
                            e.min_seq = e.min_seq.min(seq);
                            return p + 1;
                        }
                    }
                }
            }
        }
        let pos = q.append(Entry {
            min_seq: seq,
            op: Op::Write { path, offset, len },
            extents: None,
            subject,
            parents: Vec::new(),
            at: Instant::now(),
        });
        q.writes.insert(ino, pos);
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

    /// Whether an entry after position `pos` (not yet applied) touches
    /// `path`, an ancestor or a descendant of it: then that entry brings
    /// the target there, and a compare now would run ahead of it.
    fn later_touches(&self, pos: u64, path: &Path) -> bool {
        let q = self.lock();
        if q.touched.get(path).is_some_and(|&p| p > pos) {
            return true;
        }
        // Below a directory, or after a rename/rmdir: look at each entry.
        let is_dir = crate::sys::is_dir_at(&self.source, path);
        if q.last_tree_op <= pos + 1 && !is_dir {
            return false;
        }
        let from = (pos + 1).saturating_sub(q.base) as usize;
        q.entries.iter().skip(from).any(|e| {
            !matches!(e.op, Op::Resync { .. })
                && e.op
                    .paths()
                    .iter()
                    .any(|p| p.starts_with(path) || path.starts_with(p))
        })
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

    /// Current end of the queue: what a barrier called now waits for.
    pub fn position(&self) -> u64 {
        self.lock().pushed
    }

    /// Waits until every target applied (durably) everything before `pos`:
    /// the explicit barriers (`replicafs sync`, unmount's drain), which
    /// report a target that is down whatever the policy.
    pub fn wait(&self, pos: u64, timeout: Duration) -> Result<(), String> {
        self.wait_with(pos, timeout, TargetDown::Block)
    }

    /// A writer's barrier (fsync, a change in sync mode): [`Engine::wait`]
    /// as the target-down policy says. `degrade` does not wait for a
    /// target that is failing (or still catching up after being degraded)
    /// and turns a timeout into degrading the late target; `fail` gives up
    /// at once when a target it waits for is failing.
    pub fn writer_wait(&self, pos: u64, timeout: Duration) -> Result<(), String> {
        self.wait_with(pos, timeout, self.on_down)
    }

    fn wait_with(&self, pos: u64, timeout: Duration, policy: TargetDown) -> Result<(), String> {
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.waiters.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiters);
        // Idle workers sync now rather than on their timer.
        self.work.notify_all();
        let deadline = Instant::now() + timeout;
        let mut q = self.lock();
        loop {
            let mut behind: Vec<&Slot> = self
                .slots
                .iter()
                .filter(|s| {
                    !s.ready.load(Ordering::Acquire) || s.applied.load(Ordering::Acquire) < pos
                })
                .collect();
            match policy {
                TargetDown::Block => {}
                TargetDown::Fail => {
                    if let Some(s) = behind.iter().find(|s| s.failing.load(Ordering::Acquire)) {
                        return Err(self.failing_error(s, timeout));
                    }
                }
                TargetDown::Degrade => behind.retain(|s| {
                    if s.failing.load(Ordering::Acquire) {
                        self.degrade(s, q.pushed);
                        false
                    } else {
                        // Still draining what writers did not wait for.
                        !s.degraded.load(Ordering::Acquire)
                    }
                }),
            }
            if behind.is_empty() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline && policy == TargetDown::Degrade {
                for s in behind {
                    self.degrade(s, q.pushed);
                }
                return Ok(());
            }
            if now >= deadline {
                return Err(self.failing_error(behind[0], timeout));
            }
            q = self
                .progress
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Why a barrier gave up on `s`.
    fn failing_error(&self, s: &Slot, timeout: Duration) -> String {
        let err = s
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match err {
            Some(e) if s.failing.load(Ordering::Acquire) => {
                format!("target {} is failing: {e}", s.target.name())
            }
            _ => format!(
                "target {} did not catch up within {timeout:?}",
                s.target.name()
            ),
        }
    }

    /// Writers stop waiting for `slot` (policy `degrade`) up to `pos`.
    fn degrade(&self, slot: &Slot, pos: u64) {
        slot.degraded_at.fetch_max(pos, Ordering::AcqRel);
        if !slot.degraded.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                target = %slot.target.name(),
                "target degraded: fsync returns once SOURCE is durable; \
                 the target catches up when it is back"
            );
        }
    }

    /// `slot` has everything writers were told was durable without it.
    fn undegrade_if_whole(&self, slot: &Slot) {
        if slot.degraded.load(Ordering::Acquire)
            && !slot.failing.load(Ordering::Acquire)
            && slot.applied.load(Ordering::Acquire) >= slot.degraded_at.load(Ordering::Acquire)
            && slot.degraded.swap(false, Ordering::AcqRel)
        {
            tracing::info!(target = %slot.target.name(), "target caught up: no longer degraded");
        }
    }

    /// Waits for everything pushed so far.
    pub fn barrier(&self, timeout: Duration) -> Result<(), String> {
        let pos = self.position();
        self.wait(pos, timeout)
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

    /// An attempt on the target failed. The log says so once when the
    /// target starts failing and then every [`REMIND_EVERY`], not at every
    /// retry or write.
    fn set_error(&self, slot: &Slot, msg: String) {
        {
            let mut o = slot.outage.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            match o.as_mut() {
                None => {
                    tracing::warn!(target = %slot.target.name(), "replication failing: {msg}");
                    *o = Some(Outage {
                        since: now,
                        last_said: now,
                        attempts: 1,
                    });
                }
                Some(o) => {
                    o.attempts += 1;
                    if now.duration_since(o.last_said) >= REMIND_EVERY {
                        o.last_said = now;
                        tracing::warn!(
                            target = %slot.target.name(),
                            "replication still failing after {:.0}s ({} attempts): {msg}",
                            o.since.elapsed().as_secs_f64(),
                            o.attempts
                        );
                    } else {
                        tracing::debug!(target = %slot.target.name(), "still failing: {msg}");
                    }
                }
            }
        }
        *slot.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
        {
            // Under the queue lock, as `applied`: a writer's barrier that
            // does not wait for failing targets must not miss this.
            let _q = self.lock();
            slot.failing.store(true, Ordering::Release);
        }
        self.progress.notify_all();
    }

    /// The target took a real attempt (not one that only gathered).
    fn recovered(&self, slot: &Slot) {
        slot.failing.store(false, Ordering::Release);
        *slot.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Some(o) = slot.outage.lock().unwrap_or_else(|e| e.into_inner()).take() {
            tracing::info!(
                target = %slot.target.name(),
                "replication recovered after {:.1}s ({} failed attempts)",
                o.since.elapsed().as_secs_f64(),
                o.attempts
            );
        }
    }

    /// Retries `f` with backoff until it works or the engine stops.
    fn retry<T>(&self, slot: &Slot, what: &str, mut f: impl FnMut() -> io::Result<T>) -> Option<T> {
        let mut pause = RETRY_MIN;
        loop {
            match f() {
                Ok(v) => {
                    if slot.failing.load(Ordering::Acquire)
                        && !slot.flush_failing.load(Ordering::Acquire)
                    {
                        self.recovered(slot);
                    }
                    return Some(v);
                }
                Err(e) => {
                    self.set_error(slot, format!("{what}: {e}"));
                    if self.stop.load(Ordering::Acquire) {
                        return None;
                    }
                    let q = self.lock();
                    let _ = self.work.wait_timeout(q, pause);
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Reconciles `paths`; a whole-tree pass (`[""]`) trusts size and
    /// mtime, a pass over named paths (recovery, repairs) compares bytes.
    fn reconcile(&self, slot: &Slot, paths: &[PathBuf]) -> Option<()> {
        let named = !(paths.len() == 1 && paths[0].as_os_str().is_empty());
        slot.reconciling.store(true, Ordering::Release);
        let start = Instant::now();
        let r = self.retry(slot, "reconcile", || {
            for p in paths {
                slot.target
                    .reconcile(&self.source, p, named, &slot.progress, self.io.as_ref())?;
            }
            slot.target.sync()
        });
        slot.reconciling.store(false, Ordering::Release);
        let p = &slot.progress;
        tracing::info!(
            target = %slot.target.name(),
            paths = paths.len(),
            entries = p.entries.load(Ordering::Relaxed),
            fixed = p.entries_fixed.load(Ordering::Relaxed),
            bytes_copied = p.bytes_copied.load(Ordering::Relaxed),
            secs = start.elapsed().as_secs_f64(),
            "reconcile done"
        );
        r
    }

    fn worker(&self, i: usize, startup: Startup) {
        let slot = &self.slots[i];
        let paths = match startup {
            Startup::Full => vec![PathBuf::new()],
            Startup::Paths(p) => p,
        };
        if !paths.is_empty() && self.reconcile(slot, &paths).is_none() {
            return;
        }
        {
            let _q = self.lock();
            slot.ready.store(true, Ordering::Release);
        }
        self.progress.notify_all();
        // The mount was live during the start-up reconcile: what was pushed
        // meanwhile may have met a state from its future.
        let mut taint: Option<Vec<PathBuf>> = (self.lock().pushed > 0).then_some(paths);
        // A target whose flush failed: when to try again, and the pause
        // after that. Meanwhile new batches are still taken (and gathered
        // by the target), so the retry pushes what SOURCE is now.
        let mut flush_retry: Option<(Instant, Duration)> = None;
        let mut taint_after_push: Option<Vec<PathBuf>> = None;
        loop {
            let (batch, start, end, full) = {
                let mut q = self.lock();
                loop {
                    let claimed = slot.claimed.load(Ordering::Acquire);
                    // While a failed push waits for its retry, new entries
                    // stay queued (where writes still coalesce): the retry
                    // then drains them batch by batch.
                    let waiting_retry = flush_retry.is_some();
                    if (claimed < q.pushed && !waiting_retry) || q.full_reconcile || taint.is_some()
                    {
                        break;
                    }
                    if flush_retry.is_some_and(|(at, _)| Instant::now() >= at) {
                        break;
                    }
                    let unsynced =
                        slot.done.load(Ordering::Acquire) > slot.applied.load(Ordering::Acquire);
                    let stopping = self.stop.load(Ordering::Acquire);
                    if unsynced && (stopping || self.sync_due(slot)) {
                        drop(q);
                        if !self.make_durable(slot) {
                            return;
                        }
                        q = self.lock();
                        continue;
                    }
                    if stopping {
                        return;
                    }
                    let wait = flush_retry.map_or(SYNC_EVERY, |(at, _)| {
                        at.saturating_duration_since(Instant::now()).min(SYNC_EVERY)
                    });
                    q = self
                        .work
                        .wait_timeout(q, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                let full = std::mem::take(&mut q.full_reconcile);
                let start = slot.claimed.load(Ordering::Acquire);
                // A backlog (after an outage, or a burst) goes in batches
                // of at most MAX_BATCH, each done (and, at the next sync,
                // applied) on its own, so the lag falls as it drains. Not
                // after a reconcile: that batch must reach the end of the
                // queue.
                let end = if flush_retry.is_some() {
                    // A retry pushes what was gathered, nothing more.
                    start
                } else if taint.is_none() && !full {
                    q.pushed.min(start + MAX_BATCH)
                } else {
                    q.pushed
                };
                let batch: Vec<Arc<Entry>> = q
                    .entries
                    .range((start - q.base) as usize..(end - q.base) as usize)
                    .cloned()
                    .collect();
                slot.claimed.store(end, Ordering::Release);
                (batch, start, end, full)
            };
            // A reconcile reads SOURCE as it is *now*: entries applied
            // after one may land on a state from their future. Such a
            // target is "tainted" until a reconcile finishes with nothing
            // pushed meanwhile; only then is it known equal to SOURCE.
            let everything = || vec![PathBuf::new()];
            let mut tainted: Option<Vec<PathBuf>> = taint.take();
            if full {
                tainted = Some(everything());
            }
            for (k, e) in batch.iter().enumerate() {
                // No target can apply a path outside the tree, and a retry
                // never would: drop it (once, by the first worker).
                if let Some(p) = e.op.invalid_path() {
                    if i == 0 {
                        tracing::error!(
                            "change names a path outside the tree ({}): dropped",
                            p.display()
                        );
                        self.count_invalid_records(1);
                    }
                    continue;
                }
                if let Op::Resync { path } = &e.op {
                    if !self.later_touches(start + k as u64, path) {
                        let _ = self.retry(slot, "resync", || {
                            slot.target
                                .resync(&self.source, path, &slot.progress, self.io.as_ref())
                        });
                    }
                    continue;
                }
                let change = Change {
                    op: &e.op,
                    extents: e.extents.as_ref(),
                    subject: e.subject.as_ref(),
                    parents: &e.parents,
                };
                match slot.target.apply(&change, self.io.as_ref()) {
                    Ok(n) => {
                        slot.replicated.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(err) => {
                        // The target was not where the journal expected (a
                        // change outside the mount, an earlier failure):
                        // make the paths involved equal to SOURCE now.
                        tracing::debug!(target = %slot.target.name(), "apply {:?}: {err}; reconciling", e.op);
                        let paths: Vec<PathBuf> =
                            e.op.paths().into_iter().map(Path::to_path_buf).collect();
                        let _ = self.retry(slot, "repair", || {
                            for p in &paths {
                                slot.target.reconcile(
                                    &self.source,
                                    p,
                                    true,
                                    &slot.progress,
                                    self.io.as_ref(),
                                )?;
                            }
                            Ok(())
                        });
                        tainted = Some(everything());
                    }
                }
            }
            if let Some((at, _)) = flush_retry {
                if Instant::now() < at {
                    // A failed push is retried on its own schedule, not
                    // at every write: this batch is only gathered.
                    taint_after_push = tainted.or(taint_after_push);
                    continue;
                }
                // Reachable again? Then what follows drains the backlog:
                // the target is catching up, no longer failing.
                if slot.target.probe().is_ok() {
                    slot.failing.store(false, Ordering::Release);
                }
            }
            match slot.target.flush() {
                Ok(n) => {
                    slot.replicated.fetch_add(n, Ordering::Relaxed);
                    tainted = tainted.or(taint_after_push.take());
                    if flush_retry.take().is_some() {
                        slot.flush_failing.store(false, Ordering::Release);
                        self.recovered(slot);
                    }
                }
                Err(e) => {
                    slot.flush_failing.store(true, Ordering::Release);
                    self.set_error(slot, format!("push: {e}"));
                    let pause = flush_retry.map_or(RETRY_MIN, |(_, p)| (p * 2).min(RETRY_MAX));
                    flush_retry = Some((Instant::now() + pause, pause));
                    if self.stop.load(Ordering::Acquire) {
                        return;
                    }
                    // Not done: the next round gathers more and pushes
                    // again; a taint waits for that push.
                    taint_after_push = tainted.or(taint_after_push);
                    continue;
                }
            }
            if slot.target.take_reset() {
                tainted = Some(everything());
            }
            if let Some(scope) = tainted {
                if self.reconcile(slot, &scope).is_none() {
                    return;
                }
                if self.lock().pushed != end {
                    // More arrived while reconciling: go round again.
                    taint = Some(scope);
                }
            }
            if taint.is_none() {
                slot.done.store(end, Ordering::Release);
                if self.sync_due(slot) && !self.make_durable(slot) {
                    return;
                }
            }
        }
    }

    /// A barrier is waiting, or the last sync is old enough.
    fn sync_due(&self, slot: &Slot) -> bool {
        self.waiters.load(Ordering::Acquire) > 0
            || slot
                .last_sync
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed()
                >= SYNC_EVERY
    }

    /// Syncs the target and advances `applied` to what was done; `false`
    /// when the engine is stopping and the target cannot be synced.
    fn make_durable(&self, slot: &Slot) -> bool {
        let done = slot.done.load(Ordering::Acquire);
        if self.retry(slot, "sync", || slot.target.sync()).is_none() {
            return false;
        }
        *slot.last_sync.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        {
            // Under the queue lock: a barrier checks `applied` under it
            // before it waits, so the wakeup cannot be lost.
            let _q = self.lock();
            slot.applied.fetch_max(done, Ordering::AcqRel);
        }
        self.undegrade_if_whole(slot);
        self.progress.notify_all();
        self.trim();
        true
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
        while q.base < done {
            q.entries.pop_front();
            q.base += 1;
        }
        let base = q.base;
        q.writes.retain(|_, p| *p >= base);
        if q.touched.len() > 4 * q.entries.len() + 1024 {
            q.touched.retain(|_, p| *p >= base);
        }
        let next = self.journal.next_seq();
        let oldest_entry = q.entries.iter().map(|e| e.min_seq).min().unwrap_or(next);
        let oldest_inflight = q.inflight.first().copied().unwrap_or(next);
        let cp = oldest_entry
            .min(oldest_inflight)
            .min(next)
            .saturating_sub(1);
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
                let pending: Vec<&Arc<Entry>> = q
                    .entries
                    .iter()
                    .skip(applied.saturating_sub(q.base) as usize)
                    .collect();
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
