//! The control socket's transport on Unix: a unix-domain socket, and the
//! peer's uid from the kernel.

use std::io;
use std::path::{Path, PathBuf};

pub use std::os::unix::net::{UnixListener as ControlListener, UnixStream as ControlStream};

/// Where the links to control sockets live: `/run/replicafs` for root,
/// `$XDG_RUNTIME_DIR/replicafs` otherwise (a per-uid temp dir without it).
pub fn runtime_dir() -> PathBuf {
    if super::is_root() {
        PathBuf::from("/run/replicafs")
    } else if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        PathBuf::from(x).join("replicafs")
    } else {
        std::env::temp_dir().join(format!("replicafs-{}", super::euid()))
    }
}

/// `symlink(2)`: `link` pointing at `target`.
///
/// # Errors
///
/// The OS error, e.g. `EEXIST` when `link` exists.
pub fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

/// Whether the peer may be talked to: its uid is ours or root's (the same
/// rule for the daemon about its clients and for a client about the
/// daemon). The error names the peer.
#[cfg(target_os = "linux")]
pub fn peer_allowed(conn: &ControlStream) -> Result<(), String> {
    let cred = rustix::net::sockopt::socket_peercred(conn)
        .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
    let me = rustix::process::geteuid();
    if cred.uid == me || cred.uid.is_root() {
        Ok(())
    } else {
        Err(format!(
            "peer uid {} (pid {})",
            cred.uid.as_raw(),
            cred.pid.as_raw_nonzero()
        ))
    }
}

/// Elsewhere the socket's mode (0600, in a private directory) is the
/// check: there is no safe `getpeereid` wrapper to ask with.
#[cfg(not(target_os = "linux"))]
pub fn peer_allowed(_conn: &ControlStream) -> Result<(), String> {
    Ok(())
}
