//! Barriers: waiting until every target applied (durably) the changes up to
//! a queue position, and what the target-down policy makes of a target
//! that is down meanwhile (block, fail, or degrade: stop waiting for it
//! until it caught up again).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::policy::TargetDown;
use super::{Engine, Slot};

impl Engine {
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

    /// Waits for everything pushed so far.
    pub fn barrier(&self, timeout: Duration) -> Result<(), String> {
        let pos = self.position();
        self.wait(pos, timeout)
    }

    fn wait_with(&self, pos: u64, timeout: Duration, policy: TargetDown) -> Result<(), String> {
        struct Waiting<'a>(&'a AtomicUsize);
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
            let behind = self.behind(pos, timeout, policy, q.pushed)?;
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

    /// The targets a barrier for `pos` still waits for, as `policy` says
    /// (called under the queue lock, `pushed` its end): `fail` gives up on
    /// a failing one, `degrade` degrades it and does not wait for it.
    fn behind(
        &self,
        pos: u64,
        timeout: Duration,
        policy: TargetDown,
        pushed: u64,
    ) -> Result<Vec<&Slot>, String> {
        let mut behind: Vec<&Slot> = self
            .slots
            .iter()
            .filter(|s| !s.ready.load(Ordering::Acquire) || s.applied.load(Ordering::Acquire) < pos)
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
                    self.degrade(s, pushed);
                    false
                } else {
                    // Still draining what writers did not wait for.
                    !s.degraded.load(Ordering::Acquire)
                }
            }),
        }
        Ok(behind)
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
    pub(super) fn undegrade_if_whole(&self, slot: &Slot) {
        if slot.degraded.load(Ordering::Acquire)
            && !slot.failing.load(Ordering::Acquire)
            && slot.applied.load(Ordering::Acquire) >= slot.degraded_at.load(Ordering::Acquire)
            && slot.degraded.swap(false, Ordering::AcqRel)
        {
            tracing::info!(target = %slot.target.name(), "target caught up: no longer degraded");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::Op;
    use crate::sync::fake::{Fake, engine};

    const SHORT: Duration = Duration::from_millis(30);
    const LONG: Duration = Duration::from_secs(20);

    /// Pushes `n` changes; returns the position that covers them.
    fn push(e: &Engine, n: usize) -> u64 {
        let mut pos = 0;
        for i in 0..n {
            let op = Op::Attr {
                path: format!("f{i}").into(),
            };
            let seq = e.intent(&op).unwrap();
            pos = e.push(seq, op, None, Vec::new());
        }
        pos
    }

    fn ready(s: &Slot, applied: u64) {
        s.ready.store(true, Ordering::Release);
        s.applied.store(applied, Ordering::Release);
    }

    fn fail(e: &Engine, s: &Slot) {
        e.set_error(s, "push: unreachable".into());
    }

    #[test]
    fn a_barrier_waits_for_every_target_to_be_ready_and_applied() {
        let (e, _d) = engine(vec![Fake::new("a"), Fake::new("b")], TargetDown::Block);
        assert_eq!(e.position(), 0);
        // Not ready (the start-up reconcile runs): even position 0 waits.
        assert_eq!(
            e.wait(0, SHORT),
            Err("target a did not catch up within 30ms".into())
        );
        ready(&e.slots[0], 0);
        ready(&e.slots[1], 0);
        assert_eq!(e.barrier(SHORT), Ok(()));
        let pos = push(&e, 3);
        assert_eq!((pos, e.position()), (3, 3));
        ready(&e.slots[0], 3);
        assert_eq!(
            e.barrier(SHORT),
            Err("target b did not catch up within 30ms".into())
        );
        ready(&e.slots[1], 2);
        assert_eq!(e.wait(2, SHORT), Ok(()));
        assert!(e.wait(3, SHORT).is_err());
        assert_eq!(e.waiters.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_barrier_names_the_error_of_a_failing_target() {
        let (e, _d) = engine(vec![Fake::new("a")], TargetDown::Block);
        fail(&e, &e.slots[0]);
        assert_eq!(
            e.barrier(SHORT),
            Err("target a is failing: push: unreachable".into())
        );
    }

    #[test]
    fn policy_fail_gives_up_at_once_on_a_failing_target() {
        let (e, _d) = engine(vec![Fake::new("a"), Fake::new("b")], TargetDown::Fail);
        ready(&e.slots[0], 0);
        fail(&e, &e.slots[1]);
        let t = Instant::now();
        assert_eq!(
            e.writer_wait(1, LONG),
            Err("target b is failing: push: unreachable".into())
        );
        assert!(t.elapsed() < LONG / 2);
        // A failing target that has everything is not waited for.
        ready(&e.slots[0], 1);
        ready(&e.slots[1], 1);
        assert_eq!(e.writer_wait(1, LONG), Ok(()));
        // The explicit barriers block whatever the policy.
        e.slots[0].applied.store(2, Ordering::Release);
        assert_eq!(
            e.wait(2, SHORT),
            Err("target b is failing: push: unreachable".into())
        );
    }

    #[test]
    fn policy_degrade_stops_waiting_for_a_failing_target_until_it_is_whole() {
        let (e, _d) = engine(vec![Fake::new("a")], TargetDown::Degrade);
        let s = &e.slots[0];
        ready(s, 0);
        let pos = push(&e, 2);
        fail(&e, s);
        assert_eq!(e.writer_wait(pos, LONG), Ok(()));
        assert!(s.degraded.load(Ordering::Acquire));
        assert_eq!(s.degraded_at.load(Ordering::Acquire), 2);
        // Back, but still draining: writers still do not wait for it.
        e.recovered(s);
        assert_eq!(e.writer_wait(pos, LONG), Ok(()));
        s.applied.store(1, Ordering::Release);
        e.undegrade_if_whole(s);
        assert!(s.degraded.load(Ordering::Acquire));
        s.applied.store(2, Ordering::Release);
        e.undegrade_if_whole(s);
        assert!(!s.degraded.load(Ordering::Acquire));
        assert!(e.writer_wait(pos + 1, SHORT).is_ok());
        // That timeout degraded it again, up to the queue's end.
        assert!(s.degraded.load(Ordering::Acquire));
    }

    #[test]
    fn policy_degrade_turns_a_timeout_into_degrading_the_late_target() {
        let (e, _d) = engine(vec![Fake::new("a"), Fake::new("b")], TargetDown::Degrade);
        ready(&e.slots[0], 0);
        ready(&e.slots[1], 0);
        let pos = push(&e, 1);
        ready(&e.slots[0], 1);
        assert_eq!(e.writer_wait(pos, SHORT), Ok(()));
        assert!(!e.slots[0].degraded.load(Ordering::Acquire));
        assert!(e.slots[1].degraded.load(Ordering::Acquire));
        assert_eq!(e.slots[1].degraded_at.load(Ordering::Acquire), 1);
        // The explicit barrier still reports it.
        assert!(e.barrier(SHORT).is_err());
    }
}
