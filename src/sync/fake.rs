//! A scripted in-memory target and an engine around it, for the engine's
//! unit tests: no mount, no target directory.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::Engine;
use super::policy::TargetDown;
use crate::backend::{FastIo, Portable};
use crate::journal::Journal;
use crate::replica::{Change, Progress, Replica};
use crate::state_dir::StateDir;

/// What a [`Fake`] did and what it is told to do; the test keeps a clone.
#[derive(Default)]
pub(super) struct Script {
    /// Every call, in order: `apply <path>`, `flush`, `sync`,
    /// `reconcile <path>`, `resync <path>`.
    pub(super) log: Mutex<Vec<String>>,
    /// How many flushes fail before one works.
    pub(super) flush_failures: AtomicU64,
    /// Applies of ops on these paths fail.
    pub(super) bad_paths: Mutex<Vec<PathBuf>>,
}

impl Script {
    pub(super) fn calls(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn say(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }
}

pub(super) struct Fake {
    name: String,
    pub(super) script: Arc<Script>,
}

impl Fake {
    pub(super) fn new(name: &str) -> Self {
        Fake {
            name: name.into(),
            script: Arc::default(),
        }
    }
}

impl Replica for Fake {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn apply(&self, change: &Change<'_>, _io: &dyn FastIo) -> io::Result<u64> {
        let paths = change.op.paths();
        self.script.say(format!("apply {}", paths[0].display()));
        let bad = self.script.bad_paths.lock().unwrap();
        if paths.iter().any(|p| bad.iter().any(|b| b == p)) {
            return Err(io::Error::other("not as expected"));
        }
        Ok(1)
    }

    fn flush(&self) -> io::Result<u64> {
        self.script.say("flush".into());
        let left = &self.script.flush_failures;
        if left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(io::Error::other("unreachable"));
        }
        Ok(0)
    }

    fn resync(
        &self,
        _source: &Path,
        rel: &Path,
        _progress: &Arc<Progress>,
        _io: &dyn FastIo,
    ) -> io::Result<()> {
        self.script.say(format!("resync {}", rel.display()));
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.script.say("sync".into());
        Ok(())
    }

    fn reconcile(
        &self,
        _source: &Path,
        rel: &Path,
        _known_dirty: bool,
        _progress: &Arc<Progress>,
        _io: &dyn FastIo,
    ) -> io::Result<()> {
        self.script.say(format!("reconcile {}", rel.display()));
        Ok(())
    }
}

/// An engine over `targets`, with its journal and an empty SOURCE in a
/// temporary directory (kept alive by the second value).
pub(super) fn engine(targets: Vec<Fake>, on_down: TargetDown) -> (Arc<Engine>, tempfile::TempDir) {
    let d = tempfile::tempdir().unwrap();
    let source = d.path().join("source");
    std::fs::create_dir(&source).unwrap();
    let (journal, _) = Journal::open(StateDir::open(&d.path().join("journal")).unwrap()).unwrap();
    let targets = targets
        .into_iter()
        .map(|t| Box::new(t) as Box<dyn Replica>)
        .collect();
    let e = Engine::new(
        &source,
        journal,
        targets,
        Box::new(Portable::new()),
        on_down,
    );
    (e, d)
}
