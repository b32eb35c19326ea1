//! The control socket's transport on Windows: not built yet (the WinFsp
//! issue brings it, e.g. over AF_UNIX sockets, which Windows 10 has). The
//! types have no values: binding and connecting fail with a clear error,
//! and the code written against them elsewhere compiles unchanged.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::not_yet;

/// A listening control socket (none can exist yet).
pub enum ControlListener {}

/// A control connection (none can exist yet).
pub enum ControlStream {}

impl ControlListener {
    pub fn bind(path: &Path) -> io::Result<Self> {
        Err(not_yet(&format!("control socket {}", path.display())))
    }

    pub fn incoming(&self) -> std::iter::Empty<io::Result<ControlStream>> {
        match *self {}
    }
}

impl ControlStream {
    pub fn connect(path: &Path) -> io::Result<Self> {
        Err(not_yet(&format!("control socket {}", path.display())))
    }

    pub fn set_read_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        match *self {}
    }

    pub fn set_write_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        match *self {}
    }
}

impl io::Read for &ControlStream {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        match **self {}
    }
}

impl io::Write for &ControlStream {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        match **self {}
    }

    fn flush(&mut self) -> io::Result<()> {
        match **self {}
    }
}

/// Where the links to control sockets would live.
pub fn runtime_dir() -> PathBuf {
    std::env::temp_dir().join("replicafs")
}

/// Links to control sockets are not made on Windows yet.
pub fn symlink(_target: &Path, link: &Path) -> io::Result<()> {
    Err(not_yet(&format!("link {}", link.display())))
}

pub fn peer_allowed(conn: &ControlStream) -> Result<(), String> {
    match *conn {}
}
