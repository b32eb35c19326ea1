//! Linux file handles: `name_to_handle_at` / `open_by_handle_at`.
//!
//! A file handle names an inode by what the filesystem itself uses to find
//! it again (on ext4: inode number and generation), so the inode table can
//! close an inode's descriptor and reopen exactly that inode later, or learn
//! that it is gone (`ESTALE`), without resolving a path. Opening by handle
//! needs `CAP_DAC_READ_SEARCH`; [`probe`] tells whether this process and
//! filesystem allow it.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::fs::OFlags;

/// The largest handle the kernel hands out (`MAX_HANDLE_SZ`).
const MAX_HANDLE: usize = libc::MAX_HANDLE_SZ as usize;

/// `struct file_handle` with room for the largest handle, aligned as the
/// kernel's structure is.
#[repr(C)]
struct RawHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    f_handle: [u8; MAX_HANDLE],
}

/// An opaque, filesystem-defined name of one inode.
#[derive(Clone, PartialEq, Eq)]
pub struct FileHandle {
    kind: i32,
    bytes: Box<[u8]>,
}

impl std::fmt::Debug for FileHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FileHandle(type {}, {} bytes)",
            self.kind,
            self.bytes.len()
        )
    }
}

/// The handle of the inode behind `node` (an `O_PATH` descriptor is fine)
/// and the id of the mount it was reached through.
///
/// # Errors
///
/// `EOPNOTSUPP` when the filesystem cannot export handles; any error of
/// `name_to_handle_at(2)`.
pub fn name_to_handle(node: BorrowedFd<'_>) -> io::Result<(FileHandle, i32)> {
    let mut raw = RawHandle {
        handle_bytes: MAX_HANDLE as libc::c_uint,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `raw` is a `struct file_handle` whose `handle_bytes` says how
    // much room follows it (MAX_HANDLE_SZ bytes, which is all the kernel
    // ever writes); the path is a NUL-terminated empty string, valid with
    // AT_EMPTY_PATH; `mount_id` is a valid out-pointer. All outlive the call.
    let rc = unsafe {
        libc::name_to_handle_at(
            node.as_raw_fd(),
            c"".as_ptr(),
            (&raw mut raw).cast::<libc::file_handle>(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let len = (raw.handle_bytes as usize).min(MAX_HANDLE);
    Ok((
        FileHandle {
            kind: raw.handle_type,
            bytes: raw.f_handle[..len].into(),
        },
        mount_id,
    ))
}

/// Opens the inode `handle` names, on the filesystem `mount` is on, with
/// open(2) `flags` (`O_PATH` for an inode handle). Symlinks are opened
/// themselves: there is no path to follow.
///
/// # Errors
///
/// `ESTALE` when the inode no longer exists; `EPERM` without
/// `CAP_DAC_READ_SEARCH`; any error of `open_by_handle_at(2)`.
pub fn open_by_handle(
    mount: BorrowedFd<'_>,
    handle: &FileHandle,
    flags: OFlags,
) -> io::Result<OwnedFd> {
    let mut raw = RawHandle {
        handle_bytes: handle.bytes.len() as libc::c_uint,
        handle_type: handle.kind,
        f_handle: [0; MAX_HANDLE],
    };
    raw.f_handle[..handle.bytes.len()].copy_from_slice(&handle.bytes);
    let flags = (flags | OFlags::CLOEXEC).bits() as libc::c_int;
    // SAFETY: `raw` is a valid `struct file_handle` of `handle_bytes` bytes
    // that lives across the call; the kernel only reads it.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            (&raw mut raw).cast::<libc::file_handle>(),
            flags,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_by_handle_at returned a new descriptor that nothing else
    // owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An inode handle (`O_PATH`) on the inode `handle` names.
pub fn open_node_by_handle(mount: BorrowedFd<'_>, handle: &FileHandle) -> io::Result<OwnedFd> {
    open_by_handle(mount, handle, OFlags::PATH)
}

/// Whether inodes under `root` (a descriptor that is not `O_PATH`, as
/// `open_by_handle_at` wants its mount descriptor) can be closed and
/// reopened by handle: the filesystem exports handles and this process may
/// open them. Returns the root's mount id, or why not.
pub fn probe(root: BorrowedFd<'_>) -> Result<i32, String> {
    let (handle, mount_id) =
        name_to_handle(root).map_err(|e| format!("the filesystem gives no file handles ({e})"))?;
    open_by_handle(root, &handle, OFlags::PATH).map_err(|e| {
        if e.raw_os_error() == Some(libc::EPERM) {
            "opening by file handle needs CAP_DAC_READ_SEARCH".to_string()
        } else {
            format!("opening by file handle failed ({e})")
        }
    })?;
    Ok(mount_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_handle_reopens_the_same_inode_and_a_removed_one_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let root = rustix::fs::open(dir.path(), OFlags::RDONLY, rustix::fs::Mode::empty()).unwrap();
        if let Err(why) = probe(root.as_fd()) {
            // Root on ext4 or tmpfs has them; CI runs as root.
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            eprintln!("SKIPPED: file handles unavailable here: {why}");
            return;
        }
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let node = rustix::fs::open(&path, OFlags::PATH, rustix::fs::Mode::empty()).unwrap();
        let (h, _) = name_to_handle(node.as_fd()).unwrap();
        drop(node);
        let again = open_by_handle(root.as_fd(), &h, OFlags::PATH).unwrap();
        let a = rustix::fs::fstat(&again).unwrap();
        let b = rustix::fs::stat(&path).unwrap();
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));
        drop(again);
        std::fs::remove_file(&path).unwrap();
        let err = open_by_handle(root.as_fd(), &h, OFlags::PATH).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESTALE));
    }
}
