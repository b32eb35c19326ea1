//! Mount points on Windows: none of ours exist until the WinFsp mount
//! does, so no path is one.

use std::io;
use std::path::Path;

use crate::sys::mountinfo::MountEntry;

pub fn find(_path: &Path) -> io::Result<Option<MountEntry>> {
    Ok(None)
}

pub fn is_mountpoint(_path: &Path) -> io::Result<bool> {
    Ok(false)
}
