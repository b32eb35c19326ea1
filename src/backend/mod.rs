//! Fast I/O: moving byte ranges from SOURCE files to TARGET files. One
//! trait, chosen once at start-up, here and nowhere else; `portable`
//! (pread/pwrite) always compiles and is the reference the others are
//! tested against.

#[cfg(test)]
mod conformance;
#[cfg(all(test, target_os = "linux"))]
mod conformance_linux;
#[cfg(target_os = "linux")]
mod copy_range;
#[cfg(windows)]
mod iocp;
#[cfg(target_os = "macos")]
mod macos;
mod portable;
#[cfg(target_os = "linux")]
mod uring;

use std::fs::File;
use std::io;

#[cfg(target_os = "linux")]
pub use copy_range::CopyRange;
#[cfg(windows)]
pub use iocp::Iocp;
#[cfg(target_os = "macos")]
pub use macos::Macos;
pub use portable::Portable;
#[cfg(target_os = "linux")]
pub use uring::Uring;

/// `--io`: which backend moves data to the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoChoice {
    /// The platform's default: io_uring on Linux (portable if the kernel
    /// refuses it), the macOS backend (F_NOCACHE, F_FULLFSYNC) on macOS,
    /// portable on Windows.
    Auto,
    Uring,
    Portable,
}

impl IoChoice {
    pub const ALL: [IoChoice; 3] = [IoChoice::Auto, IoChoice::Uring, IoChoice::Portable];

    pub fn as_str(self) -> &'static str {
        match self {
            IoChoice::Auto => "auto",
            IoChoice::Uring => "uring",
            IoChoice::Portable => "portable",
        }
    }

    /// One line for `--help`.
    pub fn help(self) -> &'static str {
        match self {
            IoChoice::Auto => "The platform's default: io_uring on Linux, F_NOCACHE on macOS",
            IoChoice::Uring => "io_uring (portable, with a log line, if the kernel refuses it)",
            IoChoice::Portable => "pread/pwrite, the reference",
        }
    }
}

impl std::fmt::Display for IoChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for IoChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("'{s}' is not an I/O backend (one of auto, uring, portable)"))
    }
}

/// Moves ranges between open files.
pub trait FastIo: Send + Sync {
    /// The name `status` reports (`"portable"`, `"uring"`, ...).
    fn name(&self) -> &'static str;

    /// Copies each `(start, end)` range of `src` to the same offsets of
    /// `dst`. Ranges past the end of `src` are cut at its end (the file
    /// shrank since the range was recorded). Returns the bytes written.
    fn copy_ranges(&self, src: &File, dst: &File, ranges: &[(u64, u64)]) -> io::Result<u64>;

    /// Makes what was written to `dst` durable: the barrier after a batch
    /// of [`copy_ranges`](Self::copy_ranges). The default is `fsync`
    /// (`FlushFileBuffers` on Windows); backends whose platform needs more
    /// for real durability (macOS: `F_FULLFSYNC`, because its `fsync`
    /// leaves data in the drive's cache) override it.
    ///
    /// # Errors
    ///
    /// The OS error of the flush.
    fn sync(&self, dst: &File) -> io::Result<()> {
        dst.sync_all()
    }
}

/// The backend for `--io`, after the environment: `REPLICAFS_IO=portable`
/// is the kill switch, `REPLICAFS_IO=uring` asks for io_uring whatever
/// `--io` says (how the test suite runs everything on io_uring), and
/// `REPLICAFS_IO=iocp` asks for the completion port on Windows.
/// `uring` and `iocp` fall back to `portable` with one log line saying why.
/// What `auto` means depends on the platform (`auto()` below;
/// the whole table is in docs/backends.md).
pub fn select(choice: IoChoice) -> Box<dyn FastIo> {
    match std::env::var("REPLICAFS_IO").as_deref() {
        Ok("portable") => return Box::new(Portable::new()),
        Ok("uring") => return uring_or_portable(),
        Ok("iocp") => return iocp_or_portable(),
        _ => {}
    }
    match choice {
        IoChoice::Portable => Box::new(Portable::new()),
        IoChoice::Auto => auto(),
        IoChoice::Uring => uring_or_portable(),
    }
}

/// `auto` on macOS: the macOS backend, which is the portable path plus a
/// cache hint and a real flush, so it cannot lose to `portable`.
#[cfg(target_os = "macos")]
fn auto() -> Box<dyn FastIo> {
    Box::new(Macos::new())
}

/// `auto` on Linux: io_uring, which won every row of `cargo bench --bench
/// fastio` against `portable` in the same run (docs/benchmarks.md), with
/// the probe's fallback to `portable`.
#[cfg(target_os = "linux")]
fn auto() -> Box<dyn FastIo> {
    uring_or_portable()
}

/// `auto` elsewhere (Windows): `portable`. IOCP is not the default until it
/// is measured on Windows itself (under wine, timings say nothing about
/// Windows).
#[cfg(not(any(target_os = "macos", target_os = "linux")))]
fn auto() -> Box<dyn FastIo> {
    Box::new(Portable::new())
}

/// Tells the kernel the target's cached pages will not be read again
/// (`posix_fadvise(DONTNEED)`; dirty pages start writeback and go once
/// written). The macOS backend uses F_NOCACHE instead.
#[cfg(target_os = "linux")]
fn drop_written_pages(f: &File, offset: u64, len: u64) {
    let _ = rustix::fs::fadvise(
        f,
        offset,
        std::num::NonZeroU64::new(len),
        rustix::fs::Advice::DontNeed,
    );
}

#[cfg(not(target_os = "linux"))]
fn drop_written_pages(_f: &File, _offset: u64, _len: u64) {}

/// `pread(2)`. On Windows, `ReadFile` at an offset, which also moves the
/// file pointer: no caller of a backend relies on it.
#[cfg(unix)]
fn read_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(f, buf, offset)
}

#[cfg(windows)]
fn read_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(f, buf, offset)
}

/// `pwrite(2)`; on Windows `WriteFile` at an offset (see [`read_at`]).
#[cfg(unix)]
fn write_at(f: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::write_at(f, buf, offset)
}

#[cfg(windows)]
fn write_at(f: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_write(f, buf, offset)
}

/// Writes all of `buf` at `offset`, through short writes and EINTR.
fn write_all_at(f: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match write_at(f, buf, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn uring_or_portable() -> Box<dyn FastIo> {
    match Uring::new() {
        Ok(u) => Box::new(u),
        Err(why) => {
            tracing::warn!("io_uring unavailable ({why}); using portable");
            Box::new(Portable::new())
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn uring_or_portable() -> Box<dyn FastIo> {
    tracing::warn!("io_uring exists only on Linux; using portable");
    Box::new(Portable::new())
}

#[cfg(windows)]
fn iocp_or_portable() -> Box<dyn FastIo> {
    match Iocp::new() {
        Ok(b) => Box::new(b),
        Err(why) => {
            tracing::warn!("IOCP unavailable ({why}); using portable");
            Box::new(Portable::new())
        }
    }
}

#[cfg(not(windows))]
fn iocp_or_portable() -> Box<dyn FastIo> {
    tracing::warn!("IOCP exists only on Windows; using portable");
    Box::new(Portable::new())
}

/// Every backend of this platform, for the conformance suite: the
/// portable reference first.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn test_backends() -> Vec<Box<dyn FastIo>> {
    let mut v: Vec<Box<dyn FastIo>> = vec![Box::new(Portable::new()), Box::new(CopyRange)];
    match Uring::new() {
        Ok(u) => v.push(Box::new(u)),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("io_uring must be testable under CI=true: {why}")
        }
        Err(why) => eprintln!("SKIPPED uring: {why}"),
    }
    v
}

#[cfg(all(test, target_os = "macos"))]
pub(crate) fn test_backends() -> Vec<Box<dyn FastIo>> {
    vec![Box::new(Portable::new()), Box::new(Macos::new())]
}

#[cfg(all(test, windows))]
pub(crate) fn test_backends() -> Vec<Box<dyn FastIo>> {
    let iocp = Iocp::new().expect("an I/O completion port");
    vec![Box::new(Portable::new()), Box::new(iocp)]
}

#[cfg(all(test, not(any(target_os = "linux", target_os = "macos", windows))))]
pub(crate) fn test_backends() -> Vec<Box<dyn FastIo>> {
    vec![Box::new(Portable::new())]
}

/// The OS error for I/O through a handle opened without the right for it.
#[cfg(all(test, unix))]
pub(crate) const TEST_NO_RIGHT: i32 = libc::EBADF;
/// ERROR_ACCESS_DENIED.
#[cfg(all(test, windows))]
pub(crate) const TEST_NO_RIGHT: i32 = 5;
