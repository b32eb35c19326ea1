//! The mount on Windows: the WinFsp session is still to come. Mounting
//! fails with a clear error; [`Mounted`] has no values, so the fixture and
//! the CLI written against it compile unchanged.

use std::io;
use std::path::Path;
use std::time::Duration;

use super::not_yet;
use crate::fs::MountStats;
use crate::mount::{MountSpec, Replication};

/// A mount served by this process (none can exist yet).
pub enum Mounted {}

impl Mounted {
    pub fn set_drain_timeout(&mut self, _d: Duration) {
        match *self {}
    }

    pub fn stats(&self) -> &MountStats {
        match *self {}
    }

    pub fn inode_count(&self) -> usize {
        match *self {}
    }

    pub fn replication(&self) -> &Replication {
        match *self {}
    }

    pub fn unmount(self) -> io::Result<()> {
        match self {}
    }
}

pub fn spawn(spec: &MountSpec) -> io::Result<Mounted> {
    Err(not_yet(&format!("mount {}", spec.mountpoint.display())))
}

pub fn run_foreground(spec: &MountSpec) -> io::Result<()> {
    Err(not_yet(&format!("mount {}", spec.mountpoint.display())))
}

pub fn umount(path: &Path) -> io::Result<()> {
    Err(not_yet(&format!("unmount {}", path.display())))
}

pub fn detach(path: &Path) -> io::Result<()> {
    Err(not_yet(&format!("detach {}", path.display())))
}
