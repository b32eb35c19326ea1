//! Is a path a mount point, and of what: Linux reads
//! `/proc/self/mountinfo`, other Unixes compare device numbers.

use std::io;
use std::path::Path;

use crate::sys::mountinfo::MountEntry;

#[cfg(target_os = "linux")]
pub fn find(path: &Path) -> io::Result<Option<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| crate::error::context("read /proc/self/mountinfo", e))?;
    let want = path.to_string_lossy();
    // The last entry wins: later mounts stack on earlier ones.
    Ok(crate::sys::mountinfo::parse(&text)
        .into_iter()
        .rev()
        .find(|m| m.mountpoint == want))
}

#[cfg(target_os = "linux")]
pub fn is_mountpoint(path: &Path) -> io::Result<bool> {
    Ok(find(path)?.is_some())
}

#[cfg(not(target_os = "linux"))]
pub fn find(path: &Path) -> io::Result<Option<MountEntry>> {
    Ok(is_mountpoint(path)?.then(|| MountEntry {
        mountpoint: path.to_string_lossy().into_owned(),
        fstype: String::new(),
        source: String::new(),
    }))
}

#[cfg(not(target_os = "linux"))]
pub fn is_mountpoint(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let here = std::fs::metadata(path)?;
    let parent = std::fs::metadata(path.join(".."))?;
    Ok(here.dev() != parent.dev() || here.ino() == parent.ino())
}
