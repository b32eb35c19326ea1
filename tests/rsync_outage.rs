//! `status` and the log during an outage of a real rsync daemon: the
//! target is `failing` for as long as the daemon is down (not flipping to
//! `catching_up` at every write), `catching_up` while the queued changes
//! drain after the daemon is back (never `in_sync` with changes pending),
//! and the log says once that it failed and once that it recovered.
#![cfg(target_os = "linux")]

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::rsyncd::Daemon;
use replicafs::fixture::Fixture;

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned()
}

/// When, state, pending ops, lag.
type Sample = (Instant, String, u64, f64);

fn state(fx: &Fixture) -> (String, u64) {
    let t = &fx.engine().target_status()[0];
    (t.state.clone(), t.pending_ops)
}

#[test]
fn status_and_log_tell_the_truth_through_an_outage() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("replicafs=info")
        .with_writer(|| Capture)
        .with_ansi(false)
        .try_init();
    let Some(mut d) = Daemon::start() else { return };
    let Some(fx) = common::mount(
        Fixture::builder()
            .rsync_target(&d.url("push"), None, &d.module_dir("push"))
            .unwrap()
            .drain_timeout(Duration::from_secs(60)),
    ) else {
        return;
    };
    std::fs::write(fx.mnt().join("before"), b"x").unwrap();
    fx.sync().unwrap();

    d.stop();
    let data = vec![0x5au8; 32 << 10];
    std::fs::write(fx.mnt().join("w0"), &data).unwrap();
    let start = Instant::now();
    while state(&fx).0 != "failing" {
        assert!(start.elapsed() < Duration::from_secs(20), "never failing");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Sample the state from here on.
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (samples, stop) = (Arc::clone(&samples), Arc::clone(&stop));
        let engine = Arc::clone(fx.engine());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let t = &engine.target_status()[0];
                samples.lock().unwrap().push((
                    Instant::now(),
                    t.state.clone(),
                    t.pending_ops,
                    t.lag_seconds,
                ));
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };
    // Writes queue while the daemon is down (and the watch sees each).
    for i in 1..600 {
        std::fs::write(fx.mnt().join(format!("w{i}")), &data).unwrap();
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // fsync with the daemon down (policy `degrade`, the default): it
    // returns once SOURCE has the data, and the target is degraded.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(fx.mnt().join("w1"))
        .unwrap();
    let t0 = Instant::now();
    f.sync_all().unwrap();
    let fsync_took = t0.elapsed();
    drop(f);
    assert!(
        fsync_took < Duration::from_secs(5),
        "fsync took {fsync_took:?}"
    );
    assert!(fx.engine().target_status()[0].degraded);
    std::thread::sleep(Duration::from_millis(300));
    let (_, queued) = state(&fx);
    let back = Instant::now();
    d.restart();
    fx.sync().unwrap();
    stop.store(true, Ordering::Release);
    poller.join().unwrap();

    let samples = samples.lock().unwrap();
    let down: Vec<&String> = samples
        .iter()
        .filter(|(at, ..)| *at < back)
        .map(|(_, s, ..)| s)
        .collect();
    let flips = down.iter().filter(|s| s.as_str() != "failing").count();
    let after: Vec<(&str, u64)> = samples
        .iter()
        .filter(|(at, ..)| *at >= back)
        .map(|(_, s, n, _)| (s.as_str(), *n))
        .collect();
    let lags: Vec<f64> = samples
        .iter()
        .filter(|(at, s, ..)| *at >= back && s == "catching_up")
        .map(|(.., lag)| *lag)
        .collect();
    let peak = lags.iter().copied().fold(0.0, f64::max);
    // The backlog drains in steps (batches), not in one push at the end.
    let mut steps: Vec<u64> = samples
        .iter()
        .filter(|(at, s, ..)| *at >= back && s == "catching_up")
        .map(|(_, _, n, _)| *n)
        .collect();
    steps.dedup();
    let catching_up = after.iter().filter(|(s, _)| *s == "catching_up").count();
    let lie = after.iter().find(|(s, n)| *s == "in_sync" && *n > 0);
    let l = log();
    let failing_lines = l.matches("replication failing").count();
    let recovered_lines = l.matches("replication recovered").count();
    eprintln!(
        "{queued} ops queued; during the outage {} samples, {flips} not `failing`; \
         after it {} samples, {catching_up} `catching_up`, lag peaking at {peak:.2}s, \
         pending ops {steps:?}; log: {failing_lines} failing, {recovered_lines} recovered",
        down.len(),
        after.len()
    );
    assert!(queued > 100, "only {queued} ops queued during the outage");
    assert_eq!(flips, 0, "status left `failing` while the daemon was down");
    assert!(lie.is_none(), "in_sync with {lie:?} pending");
    assert!(
        catching_up >= 3,
        "the drain after the outage was not shown as catching_up: {after:?}"
    );
    assert!(
        steps.len() >= 3 && steps.windows(2).all(|w| w[1] < w[0]),
        "the backlog did not drain in falling steps: {steps:?}"
    );
    assert_eq!(failing_lines, 1, "{l}");
    assert_eq!(recovered_lines, 1, "{l}");
    let (s, n) = state(&fx);
    assert_eq!((s.as_str(), n), ("in_sync", 0));
    assert!(!fx.engine().target_status()[0].degraded);
    eprintln!("fsync with the daemon down took {fsync_took:?}");
    assert_eq!(fx.verify().unwrap(), Vec::<String>::new());
}

/// A module with `munge symlinks` (an unchrooted daemon's default) stores
/// every symlink rewritten: `status` warns, and the log says so once. A
/// module that keeps them raises nothing.
#[test]
fn a_module_that_munges_symlinks_is_reported() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("replicafs=info")
        .with_writer(|| Capture)
        .with_ansi(false)
        .try_init();
    let Some(d) = Daemon::start() else { return };
    for (module, munges) in [("munged", true), ("push", false)] {
        let Some(fx) = common::mount(
            Fixture::builder()
                .rsync_target(&d.url(module), None, &d.module_dir(module))
                .unwrap(),
        ) else {
            return;
        };
        std::fs::write(fx.mnt().join("file"), b"x").unwrap();
        fx.sync().unwrap();
        assert!(fx.engine().target_status()[0].warnings.is_empty());
        std::os::unix::fs::symlink("file", fx.mnt().join("link")).unwrap();
        std::os::unix::fs::symlink("file", fx.mnt().join("link2")).unwrap();
        fx.sync().unwrap();
        let stored = std::fs::read_link(d.module_dir(module).join("link")).unwrap();
        let t = &fx.engine().target_status()[0];
        eprintln!("{module}: stored as {stored:?}; warnings {:?}", t.warnings);
        if munges {
            assert_ne!(
                stored,
                std::path::Path::new("file"),
                "the daemon did not munge"
            );
            assert_eq!(t.warnings.len(), 1, "{t:?}");
            assert!(t.warnings[0].contains("rewrites symlinks"), "{t:?}");
        } else {
            assert_eq!(stored, std::path::Path::new("file"));
            assert!(t.warnings.is_empty(), "{t:?}");
        }
        fx.unmount().unwrap();
    }
    let l = log();
    assert_eq!(l.matches("rewrites symlinks").count(), 1, "{l}");
}
