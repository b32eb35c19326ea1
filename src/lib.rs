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
pub mod state_dir;
pub mod sys;

pub use sys::mountinfo;

pub mod control;
pub mod fixture;
pub mod fs;
pub mod mount;
pub mod replica;
pub mod sync;
pub mod verify;
pub mod watch;
