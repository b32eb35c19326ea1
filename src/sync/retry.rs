//! Failures of a target: attempts retried with backoff, the target's
//! `failing` state and last error, and a log that says once that a target
//! started failing, now and then that it still is, and once that it
//! recovered.

use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Engine, Slot};

/// Backoff between retries of a failing target.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// How often the log repeats that a target is still failing.
const REMIND_EVERY: Duration = Duration::from_secs(30);

/// The pauses between attempts: [`RETRY_MIN`] first, doubling up to
/// [`RETRY_MAX`].
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Backoff {
    last: Option<Duration>,
}

impl Backoff {
    /// The pause before the next attempt.
    pub(super) fn next_pause(&mut self) -> Duration {
        let pause = self.last.map_or(RETRY_MIN, |p| (p * 2).min(RETRY_MAX));
        self.last = Some(pause);
        pause
    }
}

/// Since when the target has been failing, for the log.
#[derive(Debug)]
pub(super) struct Outage {
    since: Instant,
    last_said: Instant,
    attempts: u64,
}

/// What the log says about a failed attempt.
#[derive(Debug, PartialEq, Eq)]
enum Say {
    /// The target was fine until now.
    Started,
    /// A reminder: still failing, since then, after so many attempts.
    StillFailing { since: Instant, attempts: u64 },
    /// Said recently enough: only the debug log.
    Quiet,
}

impl Outage {
    /// Counts an attempt that failed at `now` in `outage` (`None`: the
    /// target was fine), and says whether the log hears of it.
    fn failed(outage: &mut Option<Outage>, now: Instant) -> Say {
        match outage.as_mut() {
            None => {
                *outage = Some(Outage {
                    since: now,
                    last_said: now,
                    attempts: 1,
                });
                Say::Started
            }
            Some(o) => {
                o.attempts += 1;
                if now.duration_since(o.last_said) >= REMIND_EVERY {
                    o.last_said = now;
                    Say::StillFailing {
                        since: o.since,
                        attempts: o.attempts,
                    }
                } else {
                    Say::Quiet
                }
            }
        }
    }
}

impl Engine {
    /// An attempt on the target failed. The log says so once when the
    /// target starts failing and then every [`REMIND_EVERY`], not at every
    /// retry or write.
    pub(super) fn set_error(&self, slot: &Slot, msg: String) {
        {
            let mut o = slot.outage.lock().unwrap_or_else(|e| e.into_inner());
            match Outage::failed(&mut o, Instant::now()) {
                Say::Started => {
                    tracing::warn!(target = %slot.target.name(), "replication failing: {msg}");
                }
                Say::StillFailing { since, attempts } => {
                    tracing::warn!(
                        target = %slot.target.name(),
                        "replication still failing after {:.0}s ({} attempts): {msg}",
                        since.elapsed().as_secs_f64(),
                        attempts
                    );
                }
                Say::Quiet => {
                    tracing::debug!(target = %slot.target.name(), "still failing: {msg}");
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
    pub(super) fn recovered(&self, slot: &Slot) {
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
    pub(super) fn retry<T>(
        &self,
        slot: &Slot,
        what: &str,
        mut f: impl FnMut() -> io::Result<T>,
    ) -> Option<T> {
        let mut backoff = Backoff::default();
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
                    let _ = self.work.wait_timeout(q, backoff.next_pause());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::fake::{Fake, engine};
    use crate::sync::policy::TargetDown;

    #[test]
    fn the_backoff_doubles_from_the_minimum_up_to_the_maximum() {
        let mut b = Backoff::default();
        let pauses: Vec<u64> = (0..10).map(|_| b.next_pause().as_millis() as u64).collect();
        assert_eq!(
            pauses,
            [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]
        );
        // A copy goes on from where it was; a new one starts over.
        let mut c = b;
        assert_eq!(c.next_pause(), RETRY_MAX);
        assert_eq!(Backoff::default().next_pause(), RETRY_MIN);
    }

    #[test]
    fn the_log_says_when_failing_starts_then_reminds_now_and_then() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut o = None;
        assert_eq!(Outage::failed(&mut o, at(0)), Say::Started);
        assert_eq!(Outage::failed(&mut o, at(1)), Say::Quiet);
        assert_eq!(Outage::failed(&mut o, at(29)), Say::Quiet);
        assert_eq!(
            Outage::failed(&mut o, at(30)),
            Say::StillFailing {
                since: t0,
                attempts: 4
            }
        );
        // The next reminder counts from the last one said.
        assert_eq!(Outage::failed(&mut o, at(31)), Say::Quiet);
        assert_eq!(Outage::failed(&mut o, at(59)), Say::Quiet);
        assert_eq!(
            Outage::failed(&mut o, at(60)),
            Say::StillFailing {
                since: t0,
                attempts: 7
            }
        );
        // Recovered: the next failure starts a new outage.
        o = None;
        assert_eq!(Outage::failed(&mut o, at(61)), Say::Started);
        assert_eq!(o.as_ref().map(|o| o.attempts), Some(1));
    }

    #[test]
    fn a_retry_marks_the_target_failing_until_an_attempt_works() {
        let (e, _d) = engine(vec![Fake::new("t")], TargetDown::Block);
        let slot = &e.slots[0];
        let mut left = 2;
        let mut seen_failing = Vec::new();
        let r = e.retry(slot, "sync", || {
            seen_failing.push(slot.failing.load(Ordering::Acquire));
            if left == 0 {
                return Ok(7);
            }
            left -= 1;
            Err(io::Error::other("down"))
        });
        assert_eq!(r, Some(7));
        assert_eq!(seen_failing, [false, true, true]);
        assert!(!slot.failing.load(Ordering::Acquire));
        assert!(slot.last_error.lock().unwrap().is_none());
        assert!(slot.outage.lock().unwrap().is_none());
    }

    #[test]
    fn a_retry_gives_up_when_the_engine_stops() {
        let (e, _d) = engine(vec![Fake::new("t")], TargetDown::Block);
        e.stop.store(true, Ordering::Release);
        let slot = &e.slots[0];
        let r: Option<()> = e.retry(slot, "sync", || Err(io::Error::other("down")));
        assert_eq!(r, None);
        assert!(slot.failing.load(Ordering::Acquire));
        assert_eq!(
            slot.last_error.lock().unwrap().as_deref(),
            Some("sync: down")
        );
    }

    #[test]
    fn a_working_attempt_does_not_end_an_outage_while_the_push_fails() {
        let (e, _d) = engine(vec![Fake::new("t")], TargetDown::Block);
        let slot = &e.slots[0];
        slot.flush_failing.store(true, Ordering::Release);
        e.set_error(slot, "push: down".into());
        // A batching target's apply only gathers: no recovery.
        assert_eq!(e.retry(slot, "resync", || Ok(())), Some(()));
        assert!(slot.failing.load(Ordering::Acquire));
        e.recovered(slot);
        assert!(!slot.failing.load(Ordering::Acquire));
    }
}
