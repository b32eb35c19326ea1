//! macOS: there is no `O_PATH` and no `/proc/self/fd`. Inodes are held as
//! read-only descriptors (`O_SYMLINK` for symlinks, `O_NONBLOCK` so FIFOs
//! do not block), and where a call needs a path it gets the descriptor's
//! current one from `F_GETPATH` and does not follow a final symlink.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, CWD, Mode, OFlags, RenameFlags, Timestamps};

/// Nothing to hold open on macOS.
pub struct Proc;

impl Proc {
    pub fn open() -> io::Result<Self> {
        Ok(Proc)
    }
}

fn path_of(fd: BorrowedFd<'_>) -> io::Result<CString> {
    Ok(rustix::fs::getpath(fd)?)
}

pub fn open_node(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::SYMLINK | OFlags::NONBLOCK | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?)
}

pub fn open_root(path: &std::path::Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

pub fn reopen(_proc: &Proc, node: BorrowedFd<'_>, flags: OFlags) -> io::Result<File> {
    let flags = (flags - (OFlags::CREATE | OFlags::EXCL | OFlags::NOCTTY))
        | OFlags::NOFOLLOW
        | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path_of(node)?.as_c_str(), flags, Mode::empty())?;
    Ok(File::from(fd))
}

pub fn node_of_file(_proc: &Proc, file: &File) -> io::Result<OwnedFd> {
    file.as_fd().try_clone_to_owned()
}

pub fn chown_node(node: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    let uid = uid.map(rustix::fs::Uid::from_raw);
    let gid = gid.map(rustix::fs::Gid::from_raw);
    Ok(rustix::fs::chownat(
        CWD,
        path_of(node)?.as_c_str(),
        uid,
        gid,
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

pub fn chmod_node(_proc: &Proc, node: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::fchmod(node, Mode::from_raw_mode(mode as _))?)
}

pub fn utimens_node(node: BorrowedFd<'_>, times: &Timestamps) -> io::Result<()> {
    Ok(rustix::fs::utimensat(
        CWD,
        path_of(node)?.as_c_str(),
        times,
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// How the xattr calls (`xattr.rs`) name `node`: by its current path,
/// which they do not follow.
pub(super) fn xattr_path(_proc: &Proc, node: BorrowedFd<'_>) -> io::Result<CString> {
    path_of(node)
}

/// The xattr calls by path, not following a final symlink.
pub(super) mod xattr_calls {
    pub use rustix::fs::{
        lgetxattr as get, lgetxattr_query as get_size, llistxattr as list,
        llistxattr_query as list_size, lremovexattr as remove, lsetxattr as set,
    };
}

pub fn access(_proc: &Proc, node: BorrowedFd<'_>, mask: i32) -> io::Result<()> {
    let access = rustix::fs::Access::from_bits_retain(mask as _);
    Ok(rustix::fs::accessat(
        CWD,
        path_of(node)?.as_c_str(),
        access,
        AtFlags::EACCESS,
    )?)
}

pub fn mknod(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
    let mut path = path_of(dir)?.into_bytes();
    path.push(b'/');
    path.extend_from_slice(name.as_bytes());
    let path = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let rdev =
        libc::dev_t::try_from(rdev).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `path` is a valid NUL-terminated string that outlives the
    // call; mknod reads nothing else from our memory.
    let r = unsafe { libc::mknod(path.as_ptr(), mode as libc::mode_t, rdev) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// renameat2-style flags (Linux values, as FUSE carries them) mapped to
/// renameatx_np's.
pub fn rename(
    old_dir: BorrowedFd<'_>,
    old: &OsStr,
    new_dir: BorrowedFd<'_>,
    new: &OsStr,
    flags: u32,
) -> io::Result<()> {
    const NOREPLACE: u32 = 1;
    const EXCHANGE: u32 = 2;
    if flags & !(NOREPLACE | EXCHANGE) != 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut f = RenameFlags::empty();
    if flags & NOREPLACE != 0 {
        f |= RenameFlags::NOREPLACE;
    }
    if flags & EXCHANGE != 0 {
        f |= RenameFlags::EXCHANGE;
    }
    Ok(rustix::fs::renameat_with(old_dir, old, new_dir, new, f)?)
}

pub fn fallocate(_file: &File, _mode: i32, _offset: u64, _len: u64) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
}

pub fn copy_file_range(
    _from: &File,
    _from_off: u64,
    _to: &File,
    _to_off: u64,
    _len: u64,
) -> io::Result<usize> {
    // The kernel falls back to read/write on ENOSYS.
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// The process umask. macOS has no way to read it without setting it; this
/// runs once, at mount time, before any file is created through the mount.
pub fn current_umask() -> u32 {
    let old = rustix::process::umask(Mode::from_raw_mode(0o022));
    rustix::process::umask(old);
    old.bits() as u32
}

pub fn link(
    _proc: &Proc,
    node: BorrowedFd<'_>,
    new_dir: BorrowedFd<'_>,
    name: &OsStr,
) -> io::Result<()> {
    Ok(rustix::fs::linkat(
        CWD,
        path_of(node)?.as_c_str(),
        new_dir,
        name,
        AtFlags::empty(),
    )?)
}

/// macOS has no O_DIRECT open flag: nothing to strip.
pub const DIRECT: OFlags = OFlags::empty();

/// Never called: no open asks for O_DIRECT here.
pub fn pread_dontcache(_file: &File, _buf: &mut [u8], _offset: u64) -> io::Result<usize> {
    Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
}

/// No fdatasync on macOS: fsync (which, unlike F_FULLFSYNC, does not flush
/// the drive's cache; the target side decides about that).
pub fn fdatasync(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::fsync(fd)?)
}

/// macOS exposes no stable d_off: cookies are entry indexes since rewind.
pub fn dir_cookie(_entry: &rustix::fs::DirEntry, index: u64) -> u64 {
    index
}

/// Positions `dir` after the first `cookie` entries.
pub fn seek_dir(dir: &mut rustix::fs::Dir, cookie: u64) -> io::Result<u64> {
    dir.rewind();
    for _ in 0..cookie {
        match dir.read() {
            Some(r) => drop(r?),
            None => break,
        }
    }
    Ok(cookie)
}

/// macOS offers no handle the inode table could reopen an inode by, so
/// each inode's descriptor is held for the inode's life.
pub enum FileHandle {}

pub fn name_to_handle(_node: BorrowedFd<'_>) -> io::Result<(FileHandle, i32)> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

pub fn open_by_handle(
    _mount: BorrowedFd<'_>,
    handle: &FileHandle,
    _flags: OFlags,
) -> io::Result<OwnedFd> {
    match *handle {}
}

pub fn open_node_by_handle(_mount: BorrowedFd<'_>, handle: &FileHandle) -> io::Result<OwnedFd> {
    match *handle {}
}

pub fn probe(_root: BorrowedFd<'_>) -> Result<i32, String> {
    Err("macOS has no file handles".to_string())
}
