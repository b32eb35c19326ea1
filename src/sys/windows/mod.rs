//! Windows: the WinFsp side of the product. The mount (a passthrough core
//! over SOURCE and the WinFsp adapter) is still to come; until then what
//! needs it fails with [`not_yet`]'s error, and everything else (the
//! journal, the engine, the replicas' logic, the IOCP backend) builds and
//! runs as on Unix.

use std::io;

pub mod dir;
pub mod sparse;

pub use dir::*;
pub use sparse::*;

/// A SOURCE inode on Windows. None can exist until the Windows passthrough
/// core does, so the type has no values: code that holds one compiles and
/// is never reached.
#[derive(Clone, Debug)]
pub enum Identity {}

/// The error for what needs the Windows mount, naming what was asked.
pub fn not_yet(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{what}: the Windows mount (WinFsp) is not built yet"),
    )
}
