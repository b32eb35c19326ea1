//! Targets: where changes are replicated. One trait; the directory target
//! now, the rsync daemon client next.

// What differs per OS (directory handles, holes, a SOURCE inode's
// attributes) comes from `crate::sys`.
pub mod dir;
pub mod rsync;
pub mod sparse;
pub mod tree;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::backend::FastIo;
use crate::journal::extents::ExtentSet;
use crate::journal::record::Op;
use crate::replica::rsync::RsyncUrl;
use crate::sys::Identity;

/// One change to apply, with what SOURCE can tell about it now.
pub struct Change<'a> {
    pub op: &'a Op,
    /// All dirty ranges, for a (coalesced) write.
    pub extents: Option<&'a ExtentSet>,
    /// The SOURCE inode the op was about, as it is now (for current bytes
    /// and attributes: "data from the future" is fine at a barrier).
    pub subject: Option<&'a Identity>,
    /// Directories whose contents the op changed, with their SOURCE inodes,
    /// so their times follow.
    pub parents: &'a [(PathBuf, Identity)],
}

/// Counters a reconcile updates as it goes, for progress and `status`.
#[derive(Debug, Default)]
pub struct Progress {
    pub entries: AtomicU64,
    pub bytes_copied: AtomicU64,
    pub entries_fixed: AtomicU64,
}

pub trait Replica: Send + Sync {
    /// As the user wrote it.
    fn name(&self) -> String;

    /// Applies one change; returns the data bytes written.
    fn apply(&self, change: &Change<'_>, io: &dyn FastIo) -> io::Result<u64>;

    /// Sends what `apply` gathered, for a target that batches (the rsync
    /// client pushes one session per batch); returns the data bytes sent.
    fn flush(&self) -> io::Result<u64> {
        Ok(0)
    }

    /// SOURCE changed at `rel` outside the mount: make the target's `rel`
    /// equal to it (quick compare). A batching target may defer this to
    /// its next flush.
    fn resync(
        &self,
        source: &Path,
        rel: &Path,
        progress: &Arc<Progress>,
        io: &dyn FastIo,
    ) -> io::Result<()> {
        self.reconcile(source, rel, false, progress, io)
    }

    /// Makes everything applied so far durable.
    fn sync(&self) -> io::Result<()>;

    /// Whether the target can be reached again, cheaply, after a failed
    /// flush: the engine then reports it catching up (not failing) while
    /// the flush that follows drains what queued meanwhile.
    fn probe(&self) -> io::Result<()> {
        Ok(())
    }

    /// What `status` should say about how faithful the target is (say, a
    /// daemon that rewrites symlinks), as learned so far.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether the target was replaced since the last call (say, its
    /// directory removed and made again): then only a full reconcile
    /// makes it whole.
    fn take_reset(&self) -> bool {
        false
    }

    /// Makes `rel` (recursively) on the target equal to `rel` in `source`
    /// as it is now: quick compare by size and mtime, block compare where
    /// they differ, deleting what SOURCE does not have. `known_dirty`
    /// block-compares files even when size and mtime agree (the journal
    /// says they changed; their target mtime may have been set from a
    /// later state than their bytes).
    fn reconcile(
        &self,
        source: &Path,
        rel: &Path,
        known_dirty: bool,
        progress: &Arc<Progress>,
        io: &dyn FastIo,
    ) -> io::Result<()>;
}

/// The directory target at `path`.
pub fn open_dir(path: &Path) -> io::Result<Box<dyn Replica>> {
    Ok(Box::new(dir::DirReplica::new(path)?))
}

/// The rsync daemon target at `url`, reading changed files from `source`.
pub fn open_rsync(
    url: &RsyncUrl,
    password: Option<Vec<u8>>,
    source: &Path,
) -> io::Result<Box<dyn Replica>> {
    Ok(Box::new(rsync::RsyncReplica::new(
        url.clone(),
        password,
        source,
    )))
}
