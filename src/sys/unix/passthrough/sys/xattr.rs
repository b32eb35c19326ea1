//! The xattr calls of the passthrough core, once for both platforms. Each
//! platform module says only how an inode is named to them
//! (`xattr_path`) and which system calls take that name (`xattr_calls`):
//! on Linux the `/proc/self/fd` magic link, followed to the inode; on macOS
//! the descriptor's current path, not followed (the `l*` calls, which
//! rustix makes of macOS's `XATTR_NOFOLLOW` option).

use std::ffi::OsStr;
use std::io;
use std::os::fd::BorrowedFd;

use rustix::fs::XattrFlags;

use super::os::{Proc, xattr_calls as call, xattr_path};

/// The value of xattr `name` of `node` into `buf`; with an empty `buf`,
/// only its size.
pub fn getxattr(
    proc: &Proc,
    node: BorrowedFd<'_>,
    name: &OsStr,
    buf: &mut [u8],
) -> io::Result<usize> {
    let path = xattr_path(proc, node)?;
    if buf.is_empty() {
        return Ok(call::get_size(path.as_c_str(), name)?);
    }
    Ok(call::get(path.as_c_str(), name, buf)?)
}

/// The NUL-separated xattr names of `node` into `buf`; with an empty
/// `buf`, only their size.
pub fn listxattr(proc: &Proc, node: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let path = xattr_path(proc, node)?;
    if buf.is_empty() {
        return Ok(call::list_size(path.as_c_str())?);
    }
    Ok(call::list(path.as_c_str(), buf)?)
}

/// Sets xattr `name` of `node`, with setxattr(2) `flags` as FUSE carries
/// them.
pub fn setxattr(
    proc: &Proc,
    node: BorrowedFd<'_>,
    name: &OsStr,
    value: &[u8],
    flags: i32,
) -> io::Result<()> {
    let flags = XattrFlags::from_bits_retain(flags as _);
    let path = xattr_path(proc, node)?;
    Ok(call::set(path.as_c_str(), name, value, flags)?)
}

pub fn removexattr(proc: &Proc, node: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let path = xattr_path(proc, node)?;
    Ok(call::remove(path.as_c_str(), name)?)
}
