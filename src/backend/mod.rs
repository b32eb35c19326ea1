//! Fast I/O: moving byte ranges from SOURCE files to TARGET files. One
//! trait, chosen once at start-up; `portable` (pread/pwrite) always
//! compiles and is the reference the others are tested against.

mod portable;

use std::fs::File;
use std::io;

pub use portable::Portable;

use crate::cli::IoChoice;

/// Moves ranges between open files.
pub trait FastIo: Send + Sync {
    /// The name `status` reports (`"portable"`, `"uring"`, ...).
    fn name(&self) -> &'static str;

    /// Copies each `(start, end)` range of `src` to the same offsets of
    /// `dst`. Ranges past the end of `src` are cut at its end (the file
    /// shrank since the range was recorded). Returns the bytes written.
    fn copy_ranges(&self, src: &File, dst: &File, ranges: &[(u64, u64)]) -> io::Result<u64>;
}

/// The backend for `--io`. io_uring and the other platform backends are
/// not built yet: every choice resolves to `portable`, saying why once.
pub fn select(choice: IoChoice) -> Box<dyn FastIo> {
    if std::env::var("REPLICAFS_IO").as_deref() == Ok("portable") {
        return Box::new(Portable::new());
    }
    match choice {
        IoChoice::Portable | IoChoice::Auto => {}
        IoChoice::Uring => {
            tracing::warn!("--io uring: the io_uring backend is not built yet; using portable");
        }
    }
    Box::new(Portable::new())
}
