//! Linux: inodes are held as `O_PATH` descriptors and reopened through
//! `/proc/self/fd`, so no operation ever resolves a path below SOURCE again
//! (the virtiofsd / passthrough_hp design).

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FallocateFlags, Mode, OFlags, RenameFlags, Timestamps};

/// Descriptors of `/proc/self/fd`, opened once.
pub struct Proc {
    fd_dir: OwnedFd,
}

impl Proc {
    pub fn open() -> io::Result<Self> {
        let fd_dir = rustix::fs::open(
            "/proc/self/fd",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| crate::error::context("open /proc/self/fd", e.into()))?;
        Ok(Proc { fd_dir })
    }

    fn name(fd: BorrowedFd<'_>) -> CString {
        CString::new(fd.as_raw_fd().to_string()).expect("decimal digits contain no NUL")
    }

    /// The magic link that names `fd`'s inode; following it lands on that
    /// inode itself, never on a path that could have been swapped meanwhile.
    fn link(&self, fd: BorrowedFd<'_>) -> CString {
        CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .expect("decimal digits contain no NUL")
    }
}

/// Opens `name` in `dir` as an inode handle, without following a symlink.
pub fn open_node(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens a directory given by path as the root inode handle.
pub fn open_root(path: &std::path::Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the inode behind `node` for I/O with open(2) `flags`.
pub fn reopen(proc: &Proc, node: BorrowedFd<'_>, flags: OFlags) -> io::Result<File> {
    let flags = (flags - (OFlags::CREATE | OFlags::EXCL | OFlags::NOCTTY | OFlags::NOFOLLOW))
        | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&proc.fd_dir, Proc::name(node), flags, Mode::empty())?;
    Ok(File::from(fd))
}

/// An inode handle for an open file: the same inode, whatever its name is
/// by now.
pub fn node_of_file(proc: &Proc, file: &File) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        &proc.fd_dir,
        Proc::name(file.as_fd()),
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

pub fn chown_node(node: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    // "Leave unchanged" is None here, never the raw -1.
    let uid = uid.map(rustix::fs::Uid::from_raw);
    let gid = gid.map(rustix::fs::Gid::from_raw);
    Ok(rustix::fs::chownat(
        node,
        "",
        uid,
        gid,
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

pub fn chmod_node(proc: &Proc, node: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::chmodat(
        &proc.fd_dir,
        Proc::name(node),
        Mode::from_raw_mode(mode),
        AtFlags::empty(),
    )?)
}

pub fn utimens_node(node: BorrowedFd<'_>, times: &Timestamps) -> io::Result<()> {
    Ok(rustix::fs::utimensat(node, "", times, AtFlags::EMPTY_PATH)?)
}

/// How the xattr calls (`xattr.rs`) name `node`: by its magic link, which
/// they follow to the inode.
pub(super) fn xattr_path(proc: &Proc, node: BorrowedFd<'_>) -> io::Result<CString> {
    Ok(proc.link(node))
}

/// The xattr calls by path, following the final link.
pub(super) mod xattr_calls {
    pub use rustix::fs::{
        getxattr as get, getxattr_query as get_size, listxattr as list,
        listxattr_query as list_size, removexattr as remove, setxattr as set,
    };
}

pub fn access(proc: &Proc, node: BorrowedFd<'_>, mask: i32) -> io::Result<()> {
    let access = rustix::fs::Access::from_bits_retain(mask as _);
    Ok(rustix::fs::accessat(
        &proc.fd_dir,
        Proc::name(node),
        access,
        AtFlags::EACCESS,
    )?)
}

pub fn mknod(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
    let kind = rustix::fs::FileType::from_raw_mode(mode);
    Ok(rustix::fs::mknodat(
        dir,
        name,
        kind,
        Mode::from_raw_mode(mode & 0o7777),
        rdev,
    )?)
}

/// renameat2 with the flags as the kernel's FUSE request carries them.
pub fn rename(
    old_dir: BorrowedFd<'_>,
    old: &OsStr,
    new_dir: BorrowedFd<'_>,
    new: &OsStr,
    flags: u32,
) -> io::Result<()> {
    Ok(rustix::fs::renameat_with(
        old_dir,
        old,
        new_dir,
        new,
        RenameFlags::from_bits_retain(flags),
    )?)
}

pub fn fallocate(file: &File, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    Ok(rustix::fs::fallocate(
        file,
        FallocateFlags::from_bits_retain(mode as _),
        offset,
        len,
    )?)
}

pub fn copy_file_range(
    from: &File,
    mut from_off: u64,
    to: &File,
    mut to_off: u64,
    len: u64,
) -> io::Result<usize> {
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    Ok(rustix::fs::copy_file_range(
        from,
        Some(&mut from_off),
        to,
        Some(&mut to_off),
        len,
    )?)
}

/// The process umask, read without changing it (changing it, even
/// briefly, would race with other threads creating files).
pub fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Hard-links the inode behind `node` as `name` in `new_dir`. Through the
/// magic link, so it needs no privilege and works for symlinks too.
pub fn link(
    proc: &Proc,
    node: BorrowedFd<'_>,
    new_dir: BorrowedFd<'_>,
    name: &OsStr,
) -> io::Result<()> {
    Ok(rustix::fs::linkat(
        &proc.fd_dir,
        Proc::name(node),
        new_dir,
        name,
        AtFlags::SYMLINK_FOLLOW,
    )?)
}

/// The open flag that asks for uncached I/O (`O_DIRECT`).
pub const DIRECT: OFlags = OFlags::DIRECT;

/// `RWF_DONTCACHE` from `<linux/fs.h>` (Linux 6.14): buffered I/O whose
/// pages leave the page cache once the I/O is done.
const RWF_DONTCACHE: u32 = 0x80;

/// Reads at `offset` through the page cache without leaving the pages
/// there (`preadv2(RWF_DONTCACHE)`); no alignment needed, unlike O_DIRECT.
///
/// # Errors
///
/// As preadv2(2): `EOPNOTSUPP` where the kernel (before 6.14) or the file
/// system does not support it.
pub fn pread_dontcache(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    Ok(rustix::io::preadv2(
        file,
        &mut [io::IoSliceMut::new(buf)],
        offset,
        rustix::io::ReadWriteFlags::from_bits_retain(RWF_DONTCACHE),
    )?)
}

pub fn fdatasync(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::fdatasync(fd)?)
}

/// The cookie that resumes a listing after `entry`: the directory's own
/// d_off, stable while entries come and go.
pub fn dir_cookie(entry: &rustix::fs::DirEntry, _index: u64) -> u64 {
    entry.offset() as u64
}

/// Positions `dir` at `cookie`; returns the entry index (unused on Linux).
pub fn seek_dir(dir: &mut rustix::fs::Dir, cookie: u64) -> io::Result<u64> {
    let cookie = i64::try_from(cookie).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    dir.seek(cookie)?;
    Ok(0)
}
