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
mod service;
pub use service::{
    service_managed, service_ready, service_status, service_stopping, service_watchdog,
    service_watchdog_interval,
};
mod state_dir;

pub use state_dir::StateDir;
pub(crate) mod mounts;

/// The bytes a mount point is known by to the control channel: the path
/// as the mount and its clients both spell it (canonical).
pub fn mount_key(mountpoint: &std::path::Path) -> Vec<u8> {
    mountpoint.as_os_str().as_encoded_bytes().to_vec()
}

/// FUSE mounts over an existing empty directory.
pub const MOUNTPOINT_RULE: crate::sys::MountpointRule =
    crate::sys::MountpointRule::ExistingEmptyDir;

/// Where state dirs live by default: `/var/lib/replicafs` for root, the
/// XDG state directory otherwise.
pub fn state_home() -> std::path::PathBuf {
    use std::path::PathBuf;
    if is_root() {
        PathBuf::from("/var/lib/replicafs")
    } else if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        PathBuf::from(x).join("replicafs")
    } else if let Some(h) = std::env::var_os("HOME") {
        PathBuf::from(h).join(".local/state/replicafs")
    } else {
        std::env::temp_dir().join("replicafs")
    }
}

/// Whether the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Who the control channel answers, for messages.
pub fn answered_peers() -> String {
    format!("uid {} and root", euid())
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

/// Whether this process can mount FUSE filesystems; the error says why not.
pub fn mount_available() -> Result<(), String> {
    let dev = std::path::Path::new("/dev/fuse");
    if !dev.exists() {
        return Err("/dev/fuse does not exist (load the fuse module, or run in a container with --device /dev/fuse)".into());
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        return Err(format!("cannot open /dev/fuse: {e}"));
    }
    if !is_root() && which("fusermount3").is_none() {
        return Err("not root and fusermount3 is not installed (apt install fuse3)".into());
    }
    Ok(())
}

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(cmd))
            .find(|p| p.is_file())
    })
}

/// Mode 0755 on `dir`, so other users can look inside (fixtures that run
/// a test as another user).
///
/// # Errors
///
/// The OS error of chmod.
pub fn make_world_traversable(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
}

/// Whether process `pid` is still running (not gone, not a zombie).
#[cfg(target_os = "linux")]
pub fn process_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Whether process `pid` is still running: `kill(pid, 0)` succeeds.
#[cfg(not(target_os = "linux"))]
pub fn process_running(pid: u32) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

/// `setsid(2)`: the daemon leaves the caller's session and terminal.
pub fn leave_session() {
    let _ = rustix::process::setsid();
}

/// `umask(0)`: created files get exactly the mode the caller asked for
/// (the kernel already applied the caller's umask).
pub fn clear_umask() {
    rustix::process::umask(rustix::fs::Mode::empty());
}

/// Takes `flock(LOCK_EX|LOCK_NB)` on `f`: `Ok(false)` when another
/// process holds it.
///
/// # Errors
///
/// The OS error of anything but `EWOULDBLOCK`.
pub fn try_lock(f: &std::fs::File) -> std::io::Result<bool> {
    match rustix::fs::flock(f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
