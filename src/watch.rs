//! Changes made to SOURCE directly, not through the mount, caught with a
//! `notify` watch (inotify on Linux) and replicated at whole-file
//! granularity: each path an event names is queued for a compare
//! (size and mtime, then blocks) in the engine, in order with the changes
//! the mount recorded.
//!
//! Our own writes through the mount reach SOURCE too and raise the same
//! events; the engine skips a compare while a later recorded change to the
//! same path is still queued (that change brings the target there), and
//! otherwise finds the target already equal after two stats. A queue
//! overflow (more events than the kernel kept) reconciles everything.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use notify::{Event, EventKind, RecursiveMode, Watcher};

use crate::sync::Engine;

/// Events for one path within this window become one compare.
const COALESCE: Duration = Duration::from_millis(20);

/// A live watch; dropping it stops watching.
pub struct Watch {
    _watcher: notify::RecommendedWatcher,
}

/// Watches `source` recursively, feeding `engine`.
pub fn start(source: &Path, engine: Arc<Engine>) -> notify::Result<Watch> {
    let (tx, rx) = mpsc::channel::<Option<PathBuf>>();
    let root = source.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<Event>| match res {
        Ok(ev) => {
            if ev.need_rescan() {
                let _ = tx.send(None);
                return;
            }
            if matches!(ev.kind, EventKind::Access(_)) {
                return;
            }
            for p in ev.paths {
                if let Ok(rel) = p.strip_prefix(&root) {
                    let _ = tx.send(Some(rel.to_path_buf()));
                }
            }
        }
        Err(e) => {
            tracing::warn!("watch on SOURCE: {e}; reconciling everything");
            let _ = tx.send(None);
        }
    })?;
    watcher.watch(source, RecursiveMode::Recursive)?;
    std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || feed(rx, engine))
        .map_err(notify::Error::io)?;
    Ok(Watch { _watcher: watcher })
}

fn feed(rx: mpsc::Receiver<Option<PathBuf>>, engine: Arc<Engine>) {
    while let Ok(first) = rx.recv() {
        let mut paths = BTreeSet::new();
        let mut everything = false;
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Some(p) => {
                    paths.insert(p);
                }
                None => everything = true,
            }
            if paths.len() < 10_000 {
                next = rx.recv_timeout(COALESCE).ok();
            }
        }
        if everything {
            if let Err(e) = engine.push_resync(PathBuf::new()) {
                tracing::error!("journal: {e}");
            }
            continue;
        }
        for p in paths {
            tracing::trace!("SOURCE changed outside the mount: {}", p.display());
            if let Err(e) = engine.push_resync(p) {
                tracing::error!("journal: {e}");
            }
        }
    }
}
