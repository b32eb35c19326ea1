//! The platform. This module and `backend/mod.rs` are the only places the
//! operating system is chosen: everything that differs per OS lives in
//! `sys/unix/` or `sys/windows/`, and each of those offers the same names,
//! re-exported here. The rest of the crate (the `Vfs` trait and the
//! recording layer, the journal, the engine, the replicas, the control
//! protocol, the fixture) is written once, against these names.
//!
//! What each OS module provides:
//!
//! - [`Identity`]: a SOURCE inode independent of its name, which the
//!   engine queues and the replicas read current bytes and attributes
//!   from;
//! - the filesystem pieces: the passthrough core over SOURCE and the
//!   kernel adapter (FUSE on Unix; WinFsp on Windows is still to come);
//! - the small OS helpers the layers above share (process identity, names
//!   as bytes, the state dir's private files, the mount table, the control
//!   socket);
//! - for the replicas and `verify`: [`Dir`] (a directory handle whose
//!   calls take a child's name and never follow a final symlink) and
//!   `Node` (a handle on a node of any kind), the calls on open files
//!   (`fstat`, `futimens`, `read_at`, `fallocate`, the holes'
//!   `data_segments` and `punch_hole`) and a SOURCE inode's
//!   (`identity_open`, `identity_stat`), all in the neutral shapes of
//!   [`meta`]: [`Meta`], [`Access`], [`Errno`].
//!
//! The rules between layers are in docs/architecture.md and are checked by
//! `tests/layers.rs`.

use std::path::Path;

pub mod meta;
pub mod mountinfo;
pub use meta::{Access, Errno, Kind, Meta, MountpointRule, S_IFMT, Time};

/// Inode number as the kernel sees it (`crate::fs::ROOT_INO` is SOURCE
/// itself).
pub type Ino = u64;

/// Whether `rel` under `root` is a directory (not following symlinks).
pub fn is_dir_at(root: &Path, rel: &Path) -> bool {
    std::fs::symlink_metadata(root.join(rel)).is_ok_and(|m| m.is_dir())
}

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;
