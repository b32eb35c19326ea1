//! Unix (Linux and macOS): the FUSE side of the product. The differences
//! between the two are inside each module (`passthrough/sys/` for the
//! core's system calls).

pub mod fuse;
pub mod passthrough;

/// A SOURCE inode itself, independent of its name: the passthrough core's
/// inode table entry (its file handle and, while it has one, its
/// descriptor).
pub type Identity = std::sync::Arc<passthrough::Node>;
mod state_dir;

pub use state_dir::StateDir;
pub(crate) mod mounts;

/// Whether the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The effective uid, for messages and per-user paths.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A name as the journal stored it (`as_encoded_bytes`): on Unix any
/// bytes are a name.
pub fn os_from_bytes(b: Vec<u8>) -> std::ffi::OsString {
    std::os::unix::ffi::OsStringExt::from_vec(b)
}

/// Whether a file's mode lets its group or others read it (the password
/// file check).
pub fn others_can_read(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o077 != 0
}
mod control;
pub use control::{ControlListener, ControlStream, peer_allowed, runtime_dir, symlink};
mod session;
pub use session::{Mounted, detach, run_foreground, spawn, umount};
