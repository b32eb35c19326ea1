//! macOS: the portable pread/pwrite path, with the target's page caching
//! turned off (`F_NOCACHE`) while large ranges are written, and
//! `F_FULLFSYNC` for barriers.
//!
//! macOS has no analogue of registered buffers, submission polling, batched
//! submission or linked operations, so there is nothing to gain from the
//! kernel side; what it does have is a cache hint and a real flush.
//!
//! Only the target gets `F_NOCACHE`: nobody reads the replica through this
//! machine's cache, so caching it only pushes the user's working set out.
//! The source is that working set (its pages were usually written a moment
//! ago and are still cached): reading them through the cache is the cheap
//! path, and turning caching off for them would hurt the user's next read.

use std::fs::File;
use std::io;

use rustix::io::Errno;

use super::portable::LARGE;
use super::{FastIo, Portable};

#[derive(Debug, Default)]
pub struct Macos;

impl Macos {
    pub fn new() -> Self {
        Macos
    }
}

fn is_large(&(start, end): &(u64, u64)) -> bool {
    end.saturating_sub(start) >= LARGE
}

impl FastIo for Macos {
    fn name(&self) -> &'static str {
        "macos"
    }

    fn copy_ranges(&self, src: &File, dst: &File, ranges: &[(u64, u64)]) -> io::Result<u64> {
        let mut total = 0;
        // Runs of large and of small ranges, so the cache mode changes only
        // where the kind of range does: two fcntls per run, not per range.
        for run in ranges.chunk_by(|a, b| is_large(a) == is_large(b)) {
            if !is_large(&run[0]) {
                total += Portable.copy_ranges(src, dst, run)?;
                continue;
            }
            // F_NOCACHE is a hint: if the filesystem refuses it, the copy
            // is still correct, only cached.
            let _ = rustix::fs::fcntl_nocache(dst, true);
            let copied = Portable.copy_ranges(src, dst, run);
            // Back on, whatever happened: the caller's descriptor may be
            // used for small writes next, which the cache serves better.
            let _ = rustix::fs::fcntl_nocache(dst, false);
            total += copied?;
        }
        Ok(total)
    }

    /// `F_FULLFSYNC`: macOS's `fsync` hands the data to the drive, which may
    /// keep it in its own volatile cache; `F_FULLFSYNC` also flushes that.
    /// Filesystems that do not implement it (network and some FUSE
    /// filesystems) refuse it with ENOTSUP or EINVAL; there, `fsync` is the
    /// most that can be had. Any other error (EIO above all) is the answer.
    fn sync(&self, dst: &File) -> io::Result<()> {
        match rustix::fs::fcntl_fullfsync(dst) {
            Ok(()) => Ok(()),
            Err(Errno::NOTSUP | Errno::OPNOTSUPP | Errno::INVAL | Errno::NOTTY) => dst.sync_all(),
            Err(e) => Err(e.into()),
        }
    }
}
