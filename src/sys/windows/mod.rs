//! Windows: the WinFsp side of the product. The passthrough core over
//! SOURCE (`passthrough/`), the WinFsp adapter (`winfsp.rs`) and session
//! (`session.rs`), the named-pipe control channel (`control.rs`), and the
//! helpers the neutral layers share; each offers the names `sys/unix/`
//! does.

pub mod dir;
pub mod passthrough;
pub mod sparse;
pub mod winfsp;

pub use dir::*;
pub use sparse::*;

/// A SOURCE inode itself, independent of its name: the passthrough core's
/// inode table entry (a handle on the file).
pub type Identity = std::sync::Arc<passthrough::Node>;

mod service;
pub use service::{
    service_managed, service_ready, service_status, service_stopping, service_watchdog,
    service_watchdog_interval,
};
mod state_dir;

pub use state_dir::StateDir;
pub(crate) mod mounts;

/// The bytes a mount point is known by to the control channel: `X:`,
/// `x:\` and `\\?\X:\` (what canonicalising gives) are one mount
/// point, as are paths that differ only in case.
pub fn mount_key(mountpoint: &std::path::Path) -> Vec<u8> {
    let s = mountpoint.to_string_lossy();
    let s = s.strip_prefix(r"\\?\").unwrap_or(&s);
    s.trim_end_matches(['\\', '/']).to_uppercase().into_bytes()
}

/// WinFsp mounts on a free drive letter or a directory it creates.
pub const MOUNTPOINT_RULE: crate::sys::MountpointRule =
    crate::sys::MountpointRule::FreeDriveOrNewDir;

/// Where state dirs live by default: `%LOCALAPPDATA%\\replicafs\\state`
/// (the temp dir's `replicafs\\state` without it).
pub fn state_home() -> std::path::PathBuf {
    std::env::var_os("LOCALAPPDATA")
        .filter(|x| !x.is_empty())
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from)
        .join("replicafs")
        .join("state")
}

/// Whether the process runs elevated. Not asked yet: nothing on Windows
/// takes a root-only path so far.
pub fn is_root() -> bool {
    false
}

/// Who the control channel answers, for messages.
pub fn answered_peers() -> String {
    "this user, SYSTEM and elevated administrators".into()
}

/// There are no uids on Windows; 0 stands in for messages.
pub fn euid() -> u32 {
    0
}

/// A name as the journal stored it (`as_encoded_bytes`, WTF-8 on
/// Windows). Names written by this OS are valid WTF-8; anything else (a
/// journal from another OS) is decoded lossily rather than trusted.
pub fn os_from_bytes(b: Vec<u8>) -> std::ffi::OsString {
    String::from_utf8_lossy(&b).into_owned().into()
}

/// Windows has ACLs, not mode bits: nothing to check this way.
pub fn others_can_read(_meta: &std::fs::Metadata) -> bool {
    false
}
mod control;
pub use control::{ControlListener, ControlStream, peer_allowed, runtime_dir, symlink};
mod session;
pub use session::{Mounted, detach, load_winfsp, run_foreground, spawn, stack, umount};

/// Whether this process can mount: WinFsp is installed.
pub fn mount_available() -> Result<(), String> {
    load_winfsp().map_err(|e| e.to_string())
}

/// Directories are traversable by default on Windows (ACLs inherited).
pub fn make_world_traversable(_dir: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}

/// Whether process `pid` is still running. Not asked yet on Windows (no
/// daemon to wait for): reported gone.
pub fn process_running(_pid: u32) -> bool {
    false
}

/// Detached processes have no console session to leave on Windows.
pub fn leave_session() {}

/// There is no umask on Windows.
pub fn clear_umask() {}

/// Takes an exclusive lock on `f` without waiting (`LockFileEx`):
/// `Ok(false)` when another process holds it. std's `File::try_lock`
/// needs Rust 1.89 (the Unix build's floor is 1.85).
///
/// # Errors
///
/// The OS error of anything but a held lock.
#[allow(clippy::incompatible_msrv)]
pub fn try_lock(f: &std::fs::File) -> std::io::Result<bool> {
    match f.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}
