//! One worker per target: it claims the queue in batches, applies them in
//! order, pushes what a batching target gathered, reconciles where the
//! target cannot be trusted, and syncs the target before it counts a batch
//! as applied.
//!
//! A target has *applied* position p when every entry before p is on it
//! and durable (synced).

use std::path::{Path, PathBuf};
use std::sync::MutexGuard;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::queue::{Batch, Entry, Queue};
use super::retry::Backoff;
use super::{Engine, Slot, Startup};
use crate::journal::record::Op;
use crate::replica::Change;

/// How long applied changes may wait for a target sync when no barrier
/// asks for one: syncing after every batch would make every write to
/// SOURCE hit the disk synchronously.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The paths a reconcile covers (`[""]`: the whole tree).
type Scope = Vec<PathBuf>;

fn everything() -> Scope {
    vec![PathBuf::new()]
}

/// What one worker carries from one round to the next.
struct Worker<'a> {
    i: usize,
    slot: &'a Slot,
    /// A reconcile reads SOURCE as it is *now*: entries applied after one
    /// may land on a state from their future. Such a target is "tainted"
    /// until a reconcile of this scope finishes with nothing pushed
    /// meanwhile; only then is it known equal to SOURCE.
    taint: Option<Scope>,
    /// A target whose flush failed: when to try again, and the pauses
    /// after that. Meanwhile new batches are still taken (and gathered by
    /// the target), so the retry pushes what SOURCE is now.
    flush_retry: Option<(Instant, Backoff)>,
    /// A taint that waits for the failed push to go through.
    taint_after_push: Option<Scope>,
}

/// What became of a round's push.
enum Pushed {
    /// On the target: go on, with what is tainted.
    Done(Option<Scope>),
    /// Not pushed yet (waiting for its retry, or failed): the next round
    /// gathers more and pushes again.
    Later,
    /// Failed, and the engine is stopping.
    Stop,
}

impl Engine {
    pub(super) fn worker(&self, i: usize, startup: Startup) {
        let Some(mut w) = self.start_worker(i, startup) else {
            return;
        };
        while self.round(&mut w).is_some() {}
    }

    /// The start-up reconcile; after it, barriers count on the target.
    /// `None`: the engine stopped first.
    fn start_worker(&self, i: usize, startup: Startup) -> Option<Worker<'_>> {
        let slot = &self.slots[i];
        let paths = match startup {
            Startup::Full => everything(),
            Startup::Paths(p) => p,
        };
        if !paths.is_empty() && self.reconcile(slot, &paths).is_none() {
            return None;
        }
        {
            let _q = self.lock();
            slot.ready.store(true, Ordering::Release);
        }
        self.progress.notify_all();
        // The mount was live during the start-up reconcile: what was pushed
        // meanwhile may have met a state from its future.
        let taint = (self.lock().pushed > 0).then_some(paths);
        Some(Worker {
            i,
            slot,
            taint,
            flush_retry: None,
            taint_after_push: None,
        })
    }

    /// One batch: claim it, apply it, push it, reconcile what is tainted,
    /// and count it done. `None`: the worker stops.
    fn round(&self, w: &mut Worker<'_>) -> Option<()> {
        let batch = self.next_batch(w)?;
        let mut tainted = w.taint.take();
        if batch.full {
            tainted = Some(everything());
        }
        if self.apply_batch(w, &batch) {
            tainted = Some(everything());
        }
        let tainted = match self.push_batch(w, tainted) {
            Pushed::Done(tainted) => tainted,
            Pushed::Later => return Some(()),
            Pushed::Stop => return None,
        };
        self.settle(w, tainted, batch.end)
    }

    /// Waits for work and claims it. `None`: the worker stops.
    fn next_batch(&self, w: &Worker<'_>) -> Option<Batch> {
        let mut q = self.wait_for_work(w)?;
        let start = w.slot.claimed.load(Ordering::Acquire);
        let batch = q.claim(start, w.flush_retry.is_some(), w.taint.is_some());
        w.slot.claimed.store(batch.end, Ordering::Release);
        Some(batch)
    }

    /// Waits until there are entries to claim, a reconcile to do or a push
    /// to retry, syncing the target meanwhile when that is due. Returns
    /// with the queue locked; `None`: the worker stops.
    fn wait_for_work(&self, w: &Worker<'_>) -> Option<MutexGuard<'_, Queue>> {
        let slot = w.slot;
        let mut q = self.lock();
        loop {
            let claimed = slot.claimed.load(Ordering::Acquire);
            // While a failed push waits for its retry, new entries stay
            // queued (where writes still coalesce): the retry then drains
            // them batch by batch.
            let waiting_retry = w.flush_retry.is_some();
            if (claimed < q.pushed && !waiting_retry) || q.full_reconcile || w.taint.is_some() {
                return Some(q);
            }
            if w.flush_retry.is_some_and(|(at, _)| Instant::now() >= at) {
                return Some(q);
            }
            let unsynced = slot.done.load(Ordering::Acquire) > slot.applied.load(Ordering::Acquire);
            let stopping = self.stop.load(Ordering::Acquire);
            if unsynced && (stopping || self.sync_due(slot)) {
                drop(q);
                if !self.make_durable(slot) {
                    return None;
                }
                q = self.lock();
                continue;
            }
            if stopping {
                return None;
            }
            let wait = w.flush_retry.map_or(SYNC_EVERY, |(at, _)| {
                at.saturating_duration_since(Instant::now()).min(SYNC_EVERY)
            });
            q = self
                .work
                .wait_timeout(q, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Applies a batch in order. `true`: an apply failed and its paths were
    /// repaired, so the target is tainted.
    fn apply_batch(&self, w: &Worker<'_>, batch: &Batch) -> bool {
        let mut repaired = false;
        for (k, e) in batch.entries.iter().enumerate() {
            repaired |= self.apply_entry(w, batch.start + k as u64, e);
        }
        repaired
    }

    /// Applies the entry at position `pos`; `true` if it needed a repair.
    fn apply_entry(&self, w: &Worker<'_>, pos: u64, e: &Entry) -> bool {
        let slot = w.slot;
        // No target can apply a path outside the tree, and a retry never
        // would: drop it (once, by the first worker).
        if let Some(p) = e.op.invalid_path() {
            if w.i == 0 {
                tracing::error!(
                    "change names a path outside the tree ({}): dropped",
                    p.display()
                );
                self.count_invalid_records(1);
            }
            return false;
        }
        if let Op::Resync { path } = &e.op {
            if !self.later_touches(pos, path) {
                let _ = self.retry(slot, "resync", || {
                    slot.target
                        .resync(&self.source, path, &slot.progress, self.io.as_ref())
                });
            }
            return false;
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
                false
            }
            Err(err) => {
                tracing::debug!(target = %slot.target.name(), "apply {:?}: {err}; reconciling", e.op);
                self.repair(slot, &e.op);
                true
            }
        }
    }

    /// The target was not where the journal expected (a change outside
    /// the mount, an earlier failure): make the paths `op` involves equal
    /// to SOURCE now.
    fn repair(&self, slot: &Slot, op: &Op) {
        let paths: Vec<PathBuf> = op.paths().into_iter().map(Path::to_path_buf).collect();
        let _ = self.retry(slot, "repair", || {
            for p in &paths {
                slot.target
                    .reconcile(&self.source, p, true, &slot.progress, self.io.as_ref())?;
            }
            Ok(())
        });
    }

    /// Whether an entry after `pos` brings `path` where a compare now would
    /// run ahead of it (see [`Queue::later_touches`]).
    fn later_touches(&self, pos: u64, path: &Path) -> bool {
        self.lock()
            .later_touches(pos, path, || crate::sys::is_dir_at(&self.source, path))
    }

    /// Flushes what the batch gathered (a batching target pushes it now),
    /// on the retry schedule of a push that failed.
    fn push_batch(&self, w: &mut Worker<'_>, tainted: Option<Scope>) -> Pushed {
        let slot = w.slot;
        if let Some((at, _)) = w.flush_retry {
            if Instant::now() < at {
                // A failed push is retried on its own schedule, not at
                // every write: this batch is only gathered.
                w.taint_after_push = tainted.or(w.taint_after_push.take());
                return Pushed::Later;
            }
            // Reachable again? Then what follows drains the backlog: the
            // target is catching up, no longer failing.
            if slot.target.probe().is_ok() {
                slot.failing.store(false, Ordering::Release);
            }
        }
        match slot.target.flush() {
            Ok(n) => {
                slot.replicated.fetch_add(n, Ordering::Relaxed);
                let tainted = tainted.or(w.taint_after_push.take());
                if w.flush_retry.take().is_some() {
                    slot.flush_failing.store(false, Ordering::Release);
                    self.recovered(slot);
                }
                Pushed::Done(tainted)
            }
            Err(e) => {
                slot.flush_failing.store(true, Ordering::Release);
                self.set_error(slot, format!("push: {e}"));
                let mut backoff = w.flush_retry.map_or_else(Backoff::default, |(_, b)| b);
                let pause = backoff.next_pause();
                w.flush_retry = Some((Instant::now() + pause, backoff));
                if self.stop.load(Ordering::Acquire) {
                    return Pushed::Stop;
                }
                // Not done: the next round gathers more and pushes again;
                // a taint waits for that push.
                w.taint_after_push = tainted.or(w.taint_after_push.take());
                Pushed::Later
            }
        }
    }

    /// After a push: reconciles what is tainted, then counts the batch up
    /// to `end` done (applied at the next sync). `None`: the worker stops.
    fn settle(&self, w: &mut Worker<'_>, mut tainted: Option<Scope>, end: u64) -> Option<()> {
        let slot = w.slot;
        if slot.target.take_reset() {
            tainted = Some(everything());
        }
        if let Some(scope) = tainted {
            self.reconcile(slot, &scope)?;
            if self.lock().pushed != end {
                // More arrived while reconciling: go round again.
                w.taint = Some(scope);
            }
        }
        if w.taint.is_none() {
            slot.done.store(end, Ordering::Release);
            if self.sync_due(slot) && !self.make_durable(slot) {
                return None;
            }
        }
        Some(())
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
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::super::fake::{Fake, Script, engine};
    use super::super::policy::TargetDown;
    use super::super::{Engine, Startup};
    use crate::journal::record::Op;

    const LONG: Duration = Duration::from_secs(20);

    fn push(e: &Engine, op: Op) -> u64 {
        let seq = e.intent(&op).unwrap();
        e.push(seq, op, None, Vec::new())
    }

    fn attr(path: &str) -> Op {
        Op::Attr { path: path.into() }
    }

    /// Runs one worker over a fake target, with `ops` queued before it
    /// starts (so they make one batch, after the start-up reconcile) and
    /// `script` set up by `setup`, until a barrier covers them all.
    /// Returns the target's calls.
    fn run(
        startup: Startup,
        ops: Vec<Op>,
        setup: impl FnOnce(&Script),
    ) -> (Arc<Engine>, Vec<String>) {
        let fake = Fake::new("t");
        let script = Arc::clone(&fake.script);
        setup(&script);
        let (e, _d) = engine(vec![fake], TargetDown::Block);
        for op in ops {
            push(&e, op);
        }
        let handles = e.start(startup).unwrap();
        assert_eq!(e.barrier(LONG), Ok(()));
        let st = &e.target_status()[0];
        assert_eq!((st.state.as_str(), st.pending_ops), ("in_sync", 0));
        assert_eq!(st.last_error, None);
        e.shutdown(handles);
        (e, script.calls())
    }

    fn applies(calls: &[String]) -> Vec<&str> {
        calls
            .iter()
            .filter(|c| c.starts_with("apply"))
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn a_worker_applies_in_order_pushes_and_syncs() {
        let fake = Fake::new("t");
        let script = Arc::clone(&fake.script);
        let (e, _d) = engine(vec![fake], TargetDown::Block);
        let handles = e.start(Startup::Paths(Vec::new())).unwrap();
        let pos = push(&e, attr("a"));
        push(&e, attr("b"));
        assert_eq!(e.wait(pos, LONG), Ok(()));
        assert_eq!(e.barrier(LONG), Ok(()));
        e.shutdown(handles);
        let calls = script.calls();
        assert_eq!(applies(&calls), ["apply a", "apply b"]);
        assert!(calls.iter().any(|c| c == "flush"));
        assert_eq!(calls.last().map(String::as_str), Some("sync"));
        assert!(calls.iter().all(|c| !c.starts_with("reconcile")));
    }

    #[test]
    fn the_start_up_reconcile_comes_first_and_taints_what_was_pushed_meanwhile() {
        let (_, calls) = run(Startup::Full, vec![attr("a")], |_| {});
        assert_eq!(
            calls[..6],
            [
                "reconcile ",
                "sync",
                "apply a",
                "flush",
                "reconcile ",
                "sync"
            ]
        );
        let (_, calls) = run(Startup::Paths(vec!["x".into()]), vec![attr("a")], |_| {});
        assert_eq!(
            calls[..6],
            [
                "reconcile x",
                "sync",
                "apply a",
                "flush",
                "reconcile x",
                "sync"
            ]
        );
    }

    #[test]
    fn a_failed_apply_repairs_its_paths_then_reconciles_the_tree() {
        let ops = vec![attr("a"), attr("b"), attr("c")];
        let (_, calls) = run(Startup::Paths(Vec::new()), ops, |s| {
            s.bad_paths.lock().unwrap().push("b".into());
        });
        assert_eq!(
            calls[..7],
            [
                "apply a",
                "apply b",
                "reconcile b",
                "apply c",
                "flush",
                "reconcile ",
                "sync"
            ]
        );
    }

    #[test]
    fn a_failed_push_is_retried_on_its_schedule_until_it_works() {
        let (e, calls) = run(Startup::Paths(Vec::new()), vec![attr("a")], |s| {
            s.flush_failures.store(2, Ordering::Release);
        });
        assert_eq!(calls.iter().filter(|c| *c == "flush").count(), 3);
        assert_eq!(applies(&calls), ["apply a"]);
        let slot = &e.slots[0];
        assert!(!slot.failing.load(Ordering::Acquire));
        assert!(!slot.flush_failing.load(Ordering::Acquire));
    }

    #[test]
    fn a_change_outside_the_tree_is_dropped_once() {
        let fakes = vec![Fake::new("a"), Fake::new("b")];
        let scripts: Vec<Arc<Script>> = fakes.iter().map(|f| Arc::clone(&f.script)).collect();
        let (e, _d) = engine(fakes, TargetDown::Block);
        push(&e, attr("../x"));
        push(&e, attr("y"));
        let handles = e.start(Startup::Paths(Vec::new())).unwrap();
        assert_eq!(e.barrier(LONG), Ok(()));
        e.shutdown(handles);
        assert_eq!(e.invalid_records_dropped(), 1);
        for s in scripts {
            assert_eq!(applies(&s.calls()), ["apply y"]);
        }
    }

    #[test]
    fn a_resync_waits_for_a_later_change_to_the_same_path() {
        let ops = vec![
            Op::Resync { path: "x".into() },
            Op::Resync { path: "y".into() },
            attr("x"),
        ];
        let (_, calls) = run(Startup::Paths(Vec::new()), ops, |_| {});
        assert_eq!(calls[..3], ["resync y", "apply x", "flush"]);
    }
}
