//! replicafs: a mirror filesystem. It mounts a userspace filesystem over a
//! SOURCE directory, passes every operation through to it, and (in the
//! replication layers) mirrors every change to one or more targets.
//!
//! The crate is a library first so that other projects' tests can mount
//! fixtures with [`fixture::Fixture`]; the `replicafs` binary is a thin CLI
//! over it.

pub mod backend;
pub mod cli;
pub mod config;
pub mod error;
pub mod journal;
pub mod mountinfo;
pub mod state_dir;
pub mod sys;

// The filesystem, the engine and everything around them are Unix-only
// until the WinFsp adapter exists; on Windows the library is the
// platform-neutral parts plus the fast-I/O backends.
#[cfg(unix)]
pub mod control;
#[cfg(unix)]
pub mod fixture;
pub mod fs;
#[cfg(unix)]
pub mod mount;
#[cfg(unix)]
pub mod sync;
/// Elsewhere only the target-down policy, which the command line parses
/// into.
#[cfg(not(unix))]
pub mod sync {
    pub mod policy;
}
pub mod replica;
pub mod verify;
#[cfg(unix)]
pub mod watch;
