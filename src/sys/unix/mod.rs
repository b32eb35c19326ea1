//! Unix (Linux and macOS): the FUSE side of the product. The differences
//! between the two are inside each module (`passthrough/sys/` for the
//! core's system calls; `dir` and `sparse`, for the replicas, within
//! their own files).

pub mod dir;
pub mod fuse;
pub mod passthrough;
pub mod sparse;

pub use dir::*;
pub use sparse::*;

/// A SOURCE inode itself, independent of its name: the passthrough core's
/// inode table entry (its file handle and, while it has one, its
/// descriptor).
pub type Identity = std::sync::Arc<passthrough::Node>;
