//! Mount points on Windows: a path is one when it is the root of a volume
//! (`GetVolumePathNameW` names the path itself: a drive letter, or a
//! directory a volume is mounted on), and ours when that volume's file
//! system name is [`FS_NAME`], the name the WinFsp mount gives itself.

use std::io;
use std::path::Path;

use super::passthrough::nt;
use crate::sys::mountinfo::{FSTYPE, MountEntry};

/// The file system name a replicafs volume reports.
pub const FS_NAME: &str = "replicafs";

/// `C:\x\` and `C:\x` name the same place.
fn same(a: &Path, b: &Path) -> bool {
    let norm = |p: &Path| {
        p.to_string_lossy()
            .trim_end_matches(['\\', '/'])
            .to_lowercase()
    };
    norm(a) == norm(b)
}

pub fn is_mountpoint(path: &Path) -> io::Result<bool> {
    let abs = std::path::absolute(path)?;
    Ok(same(&nt::volume_path(&abs)?, &abs))
}

pub fn find(path: &Path) -> io::Result<Option<MountEntry>> {
    if !is_mountpoint(path)? {
        return Ok(None);
    }
    let abs = std::path::absolute(path)?;
    let mut root = abs.clone().into_os_string();
    if !root.to_string_lossy().ends_with('\\') {
        root.push("\\");
    }
    let name = nt::volume_fs_name(Path::new(&root)).unwrap_or_default();
    Ok(Some(MountEntry {
        mountpoint: abs.to_string_lossy().into_owned(),
        fstype: if name == FS_NAME {
            FSTYPE.to_string()
        } else {
            name
        },
        source: String::new(),
    }))
}
