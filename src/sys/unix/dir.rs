//! Directories and nodes reached by descriptor, for the replicas and
//! `verify`: every name is resolved under a directory handle with
//! `O_NOFOLLOW`, so no symlink leads anywhere. Each wrapper is named after
//! the system call it makes. Linux holds `O_PATH` descriptors and reaches
//! path-only calls through `/proc/self/fd`; macOS holds read-only
//! descriptors and asks `F_GETPATH` for the path.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, Stat, Timespec, Timestamps};

use crate::sys::{Access, Errno, Identity, Kind, Meta, Time};

impl Errno {
    fn code(self) -> i32 {
        match self {
            Errno::Exist => libc::EEXIST,
            Errno::Loop => libc::ELOOP,
            Errno::IsDir => libc::EISDIR,
            Errno::NoEnt => libc::ENOENT,
            Errno::NotDir => libc::ENOTDIR,
            Errno::NotEmpty => libc::ENOTEMPTY,
            Errno::Stale => libc::ESTALE,
            Errno::NotSup => libc::EOPNOTSUPP,
            Errno::NoData => libc::ENODATA,
        }
    }

    /// Whether `e` is this OS error.
    pub fn is(self, e: &io::Error) -> bool {
        let code = e.raw_os_error();
        code == Some(self.code()) || (self == Errno::NotSup && code == Some(libc::ENOTSUP))
    }

    /// This OS error.
    pub fn error(self) -> io::Error {
        io::Error::from_raw_os_error(self.code())
    }
}

#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn time(sec: i64, nsec: i64) -> Time {
    Time {
        sec,
        nsec: nsec as u32,
    }
}

impl From<&Stat> for Meta {
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    fn from(st: &Stat) -> Meta {
        let mode = st.st_mode as u32;
        Meta {
            kind: Kind::of_mode(mode),
            mode,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            nlink: st.st_nlink as u64,
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            rdev: st.st_rdev as u64,
            atime: time(st.st_atime as i64, st.st_atime_nsec as i64),
            mtime: time(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: time(st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }
}

#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn timespec(t: Time) -> Timespec {
    Timespec {
        tv_sec: t.sec as _,
        tv_nsec: t.nsec as _,
    }
}

/// The access and modification times of `m`, for `utimensat`.
fn times_of(m: &Meta) -> Timestamps {
    Timestamps {
        last_access: timespec(m.atime),
        last_modification: timespec(m.mtime),
    }
}

/// The flags of a handle on a directory: `O_PATH` on Linux.
#[cfg(target_os = "linux")]
const DIR_FLAGS: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);
#[cfg(not(target_os = "linux"))]
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

/// The flags of a handle on any node (a symlink's own, a FIFO without
/// blocking).
#[cfg(target_os = "linux")]
const NODE_FLAGS: OFlags = OFlags::PATH.union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);
#[cfg(not(target_os = "linux"))]
const NODE_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::SYMLINK)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC);

/// A path that reaches the inode behind `fd` itself, for calls that take
/// a path only: its `/proc/self/fd` magic link.
#[cfg(target_os = "linux")]
fn fd_path(fd: BorrowedFd<'_>) -> io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    Ok(PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())))
}

/// The descriptor's current path (`F_GETPATH`).
#[cfg(not(target_os = "linux"))]
fn fd_path(fd: BorrowedFd<'_>) -> io::Result<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    Ok(PathBuf::from(OsString::from_vec(
        rustix::fs::getpath(fd)?.into_bytes(),
    )))
}

/// A handle on a directory.
pub struct Dir {
    fd: OwnedFd,
}

/// A handle on a node of any kind (not followed if a symlink).
pub struct Node {
    fd: OwnedFd,
}

impl Dir {
    /// `open(path, O_DIRECTORY)`: a symlink to a directory is followed,
    /// as the user named it.
    ///
    /// # Errors
    ///
    /// The OS error of `open`, naming `path`.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::open(path, DIR_FLAGS, Mode::empty()).map_err(|e| {
            crate::error::context(format_args!("open {}", path.display()), e.into())
        })?;
        Ok(Dir { fd })
    }

    /// Another handle on the same directory.
    ///
    /// # Errors
    ///
    /// The OS error of `dup`.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
        })
    }

    /// A node handle on this directory itself.
    ///
    /// # Errors
    ///
    /// The OS error of `dup`.
    pub fn node(&self) -> io::Result<Node> {
        Ok(Node {
            fd: self.fd.try_clone()?,
        })
    }

    /// `openat(name, O_DIRECTORY | O_NOFOLLOW)`.
    ///
    /// # Errors
    ///
    /// The OS error of `openat` (ENOTDIR or ELOOP for what is not a
    /// directory).
    pub fn openat_dir(&self, name: &OsStr) -> io::Result<Dir> {
        let fd = rustix::fs::openat(&self.fd, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
        Ok(Dir { fd })
    }

    /// `openat(name, O_NOFOLLOW)` of a node of any kind.
    ///
    /// # Errors
    ///
    /// The OS error of `openat`.
    pub fn openat_node(&self, name: &OsStr) -> io::Result<Node> {
        let fd = rustix::fs::openat(&self.fd, name, NODE_FLAGS, Mode::empty())?;
        Ok(Node { fd })
    }

    /// `openat(name, O_NOFOLLOW)` of a file for I/O; `create` is the mode
    /// of a file made if missing (`O_CREAT`).
    ///
    /// # Errors
    ///
    /// The OS error of `openat` (ELOOP for a symlink).
    pub fn openat(&self, name: &OsStr, access: Access, create: Option<u32>) -> io::Result<File> {
        let mut flags = match access {
            Access::Read => OFlags::RDONLY,
            Access::Write => OFlags::WRONLY,
            Access::ReadWrite => OFlags::RDWR,
        } | OFlags::NOFOLLOW
            | OFlags::CLOEXEC;
        if create.is_some() {
            flags |= OFlags::CREATE;
        }
        let mode = Mode::from_raw_mode(create.unwrap_or(0) as _);
        Ok(File::from(rustix::fs::openat(&self.fd, name, flags, mode)?))
    }

    /// `fstat` of the directory.
    ///
    /// # Errors
    ///
    /// The OS error of `fstat`.
    pub fn fstat(&self) -> io::Result<Meta> {
        Ok(Meta::from(&rustix::fs::fstat(&self.fd)?))
    }

    /// `fstatat(name, AT_SYMLINK_NOFOLLOW)`.
    ///
    /// # Errors
    ///
    /// The OS error of `fstatat` (ENOENT, ENOTDIR for what is missing).
    pub fn statat(&self, name: &OsStr) -> io::Result<Meta> {
        Ok(Meta::from(&rustix::fs::statat(
            &self.fd,
            name,
            AtFlags::SYMLINK_NOFOLLOW,
        )?))
    }

    /// The names in the directory, sorted, without "." and "..".
    ///
    /// # Errors
    ///
    /// The OS error of `openat` or `getdents`.
    pub fn list(&self) -> io::Result<Vec<OsString>> {
        let fd = rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut names = Vec::new();
        for e in rustix::fs::Dir::new(fd)? {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsStr::from_bytes(n).to_os_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// `mkdirat(name, mode)`.
    ///
    /// # Errors
    ///
    /// The OS error of `mkdirat`.
    pub fn mkdirat(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        Ok(rustix::fs::mkdirat(
            &self.fd,
            name,
            Mode::from_raw_mode(mode as _),
        )?)
    }

    /// `mknodat(name, kind | mode, rdev)` of a FIFO, socket or device,
    /// through the passthrough core's per-OS wrapper (macOS has no
    /// `mknodat` in rustix and goes by the directory's path).
    ///
    /// # Errors
    ///
    /// The OS error of the call; EINVAL for another kind.
    pub fn mknodat(&self, name: &OsStr, kind: Kind, mode: u32, rdev: u64) -> io::Result<()> {
        let ft = match kind {
            Kind::Fifo => 0o010000,
            Kind::Socket => 0o140000,
            Kind::CharDevice => 0o020000,
            Kind::BlockDevice => 0o060000,
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        let rdev = match kind {
            Kind::CharDevice | Kind::BlockDevice => rdev,
            _ => 0,
        };
        super::passthrough::sys::mknod(self.fd.as_fd(), name, ft | (mode & 0o7777), rdev)
    }

    /// `symlinkat(target, name)`.
    ///
    /// # Errors
    ///
    /// The OS error of `symlinkat`.
    pub fn symlinkat(&self, target: &[u8], name: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::symlinkat(
            OsStr::from_bytes(target),
            &self.fd,
            name,
        )?)
    }

    /// `readlinkat(name)`: a symlink's target.
    ///
    /// # Errors
    ///
    /// The OS error of `readlinkat`.
    pub fn readlinkat(&self, name: &OsStr) -> io::Result<Vec<u8>> {
        Ok(rustix::fs::readlinkat(&self.fd, name, Vec::new())?.into_bytes())
    }

    /// `linkat(name, to_dir, to_name)`: a new name of the node `name`.
    ///
    /// # Errors
    ///
    /// The OS error of `linkat`.
    pub fn linkat(&self, name: &OsStr, to_dir: &Dir, to_name: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::linkat(
            &self.fd,
            name,
            &to_dir.fd,
            to_name,
            AtFlags::empty(),
        )?)
    }

    /// `unlinkat(name)` of what is not a directory.
    ///
    /// # Errors
    ///
    /// The OS error of `unlinkat`.
    pub fn unlinkat(&self, name: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?)
    }

    /// `unlinkat(name, AT_REMOVEDIR)`.
    ///
    /// # Errors
    ///
    /// The OS error of `unlinkat`.
    pub fn rmdirat(&self, name: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)?)
    }

    /// `renameat2(name, to_dir, to_name, flags)`, `flags` being Linux's
    /// (as the journal records them); on macOS `renameatx_np` with them
    /// mapped (the passthrough core's per-OS wrapper, shared).
    ///
    /// # Errors
    ///
    /// The OS error of the call; EINVAL for a flag macOS has not.
    pub fn renameat2(
        &self,
        name: &OsStr,
        to_dir: &Dir,
        to_name: &OsStr,
        flags: u32,
    ) -> io::Result<()> {
        super::passthrough::sys::rename(self.fd.as_fd(), name, to_dir.fd.as_fd(), to_name, flags)
    }

    /// The access and modification times of the directory itself become
    /// those of `m` (as [`Node::futimens`]).
    ///
    /// # Errors
    ///
    /// The OS error of `utimensat`.
    pub fn futimens(&self, m: &Meta) -> io::Result<()> {
        futimens_fd(self.fd.as_fd(), m)
    }

    /// `utimensat(name, AT_SYMLINK_NOFOLLOW)`: the access and modification
    /// times of `name` become those of `m`.
    ///
    /// # Errors
    ///
    /// The OS error of `utimensat`.
    pub fn utimensat(&self, name: &OsStr, m: &Meta) -> io::Result<()> {
        Ok(rustix::fs::utimensat(
            &self.fd,
            name,
            &times_of(m),
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// The extended attributes of `name` (a symlink's own), as sorted
    /// (name, value) pairs; none where the file system has none.
    ///
    /// # Errors
    ///
    /// The OS error of `llistxattr` or `lgetxattr`.
    pub fn llistxattrs_at(&self, name: &OsStr) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        xattrs_path(&fd_path(self.fd.as_fd())?.join(name), Follow::No)
    }

    /// `lsetxattr` of `name`'s attribute `attr`.
    ///
    /// # Errors
    ///
    /// The OS error of `lsetxattr`.
    pub fn lsetxattr_at(&self, name: &OsStr, attr: &[u8], value: &[u8]) -> io::Result<()> {
        let p = fd_path(self.fd.as_fd())?.join(name);
        Ok(rustix::fs::lsetxattr(
            &p,
            OsStr::from_bytes(attr),
            value,
            rustix::fs::XattrFlags::empty(),
        )?)
    }

    /// `lremovexattr` of `name`'s attribute `attr`.
    ///
    /// # Errors
    ///
    /// The OS error of `lremovexattr` (ENODATA if it has none such).
    pub fn lremovexattr_at(&self, name: &OsStr, attr: &[u8]) -> io::Result<()> {
        let p = fd_path(self.fd.as_fd())?.join(name);
        Ok(rustix::fs::lremovexattr(&p, OsStr::from_bytes(attr))?)
    }

    /// `syncfs`: makes everything written to the directory's file system
    /// durable.
    ///
    /// # Errors
    ///
    /// The OS error of `openat` or `syncfs`.
    #[cfg(target_os = "linux")]
    pub fn syncfs(&self) -> io::Result<()> {
        let fd = rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(rustix::fs::syncfs(&fd)?)
    }

    /// `sync`: macOS has no `syncfs`, so every file system.
    ///
    /// # Errors
    ///
    /// None in practice (`sync` cannot fail).
    #[cfg(not(target_os = "linux"))]
    pub fn syncfs(&self) -> io::Result<()> {
        rustix::fs::sync();
        Ok(())
    }
}

impl Node {
    /// `fstat` of the node.
    ///
    /// # Errors
    ///
    /// The OS error of `fstat`.
    pub fn fstat(&self) -> io::Result<Meta> {
        Ok(Meta::from(&rustix::fs::fstat(&self.fd)?))
    }

    /// The node as a directory handle (for listing it; calls on it fail
    /// with ENOTDIR if it is not one).
    pub fn into_dir(self) -> Dir {
        Dir { fd: self.fd }
    }

    /// `readlinkat(fd, "")`: the target of the symlink the node is.
    ///
    /// # Errors
    ///
    /// The OS error of `readlinkat`.
    #[cfg(target_os = "linux")]
    pub fn readlink(&self) -> io::Result<Vec<u8>> {
        Ok(rustix::fs::readlinkat(&self.fd, "", Vec::new())?.into_bytes())
    }

    /// `readlink` of the node's path.
    ///
    /// # Errors
    ///
    /// The OS error of `F_GETPATH` or `readlink`.
    #[cfg(not(target_os = "linux"))]
    pub fn readlink(&self) -> io::Result<Vec<u8>> {
        let p = fd_path(self.fd.as_fd())?;
        Ok(rustix::fs::readlinkat(rustix::fs::CWD, &p, Vec::new())?.into_bytes())
    }

    /// `fchownat(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)`.
    ///
    /// # Errors
    ///
    /// The OS error of `fchownat`.
    #[cfg(target_os = "linux")]
    pub fn fchown(&self, uid: u32, gid: u32) -> io::Result<()> {
        Ok(rustix::fs::chownat(
            &self.fd,
            "",
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// `lchown` of the node's path.
    ///
    /// # Errors
    ///
    /// The OS error of `F_GETPATH` or `fchownat`.
    #[cfg(not(target_os = "linux"))]
    pub fn fchown(&self, uid: u32, gid: u32) -> io::Result<()> {
        super::passthrough::sys::chown_node(self.fd.as_fd(), Some(uid), Some(gid))
    }

    /// `chmod` of the node (through its magic link: an `O_PATH`
    /// descriptor takes no `fchmod`).
    ///
    /// # Errors
    ///
    /// The OS error of `chmod`.
    #[cfg(target_os = "linux")]
    pub fn fchmod(&self, mode: u32) -> io::Result<()> {
        Ok(rustix::fs::chmod(
            fd_path(self.fd.as_fd())?,
            Mode::from_raw_mode(mode),
        )?)
    }

    /// `fchmod`.
    ///
    /// # Errors
    ///
    /// The OS error of `fchmod`.
    #[cfg(not(target_os = "linux"))]
    pub fn fchmod(&self, mode: u32) -> io::Result<()> {
        Ok(rustix::fs::fchmod(
            &self.fd,
            Mode::from_raw_mode(mode as _),
        )?)
    }

    /// `utimensat(fd, "", AT_EMPTY_PATH)`: the access and modification
    /// times become those of `m`.
    ///
    /// # Errors
    ///
    /// The OS error of `utimensat`.
    pub fn futimens(&self, m: &Meta) -> io::Result<()> {
        futimens_fd(self.fd.as_fd(), m)
    }

    /// The extended attributes of the node, as sorted (name, value) pairs;
    /// none where the file system has none.
    ///
    /// # Errors
    ///
    /// The OS error of `listxattr` or `getxattr`.
    pub fn listxattrs(&self) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        xattrs_path(&fd_path(self.fd.as_fd())?, NODE_FOLLOW)
    }

    /// `setxattr` of attribute `attr`.
    ///
    /// # Errors
    ///
    /// The OS error of `setxattr`.
    pub fn setxattr(&self, attr: &[u8], value: &[u8]) -> io::Result<()> {
        let p = fd_path(self.fd.as_fd())?;
        let (name, flags) = (OsStr::from_bytes(attr), rustix::fs::XattrFlags::empty());
        Ok(match NODE_FOLLOW {
            Follow::Yes => rustix::fs::setxattr(&p, name, value, flags),
            Follow::No => rustix::fs::lsetxattr(&p, name, value, flags),
        }?)
    }

    /// `removexattr` of attribute `attr`.
    ///
    /// # Errors
    ///
    /// The OS error of `removexattr` (ENODATA if there is none such).
    pub fn removexattr(&self, attr: &[u8]) -> io::Result<()> {
        let p = fd_path(self.fd.as_fd())?;
        let name = OsStr::from_bytes(attr);
        Ok(match NODE_FOLLOW {
            Follow::Yes => rustix::fs::removexattr(&p, name),
            Follow::No => rustix::fs::lremovexattr(&p, name),
        }?)
    }
}

#[cfg(target_os = "linux")]
fn futimens_fd(fd: BorrowedFd<'_>, m: &Meta) -> io::Result<()> {
    Ok(rustix::fs::utimensat(
        fd,
        "",
        &times_of(m),
        AtFlags::EMPTY_PATH,
    )?)
}

/// `utimensat` of the descriptor's path, not following a symlink.
#[cfg(not(target_os = "linux"))]
fn futimens_fd(fd: BorrowedFd<'_>, m: &Meta) -> io::Result<()> {
    super::passthrough::sys::utimens_node(fd, &times_of(m))
}

/// Whether an xattr call follows a final symlink: yes for a descriptor's
/// magic link (which lands on the inode itself), never for a name (nor
/// for a path from `F_GETPATH`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Follow {
    Yes,
    No,
}

#[cfg(target_os = "linux")]
const NODE_FOLLOW: Follow = Follow::Yes;
#[cfg(not(target_os = "linux"))]
const NODE_FOLLOW: Follow = Follow::No;

fn xattrs_path(p: &Path, follow: Follow) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let follows = follow == Follow::Yes;
    let list_query = |p: &Path| match follows {
        true => rustix::fs::listxattr_query(p),
        false => rustix::fs::llistxattr_query(p),
    };
    let list = |p: &Path, b: &mut [u8]| match follows {
        true => rustix::fs::listxattr(p, b),
        false => rustix::fs::llistxattr(p, b),
    };
    let get_query = |p: &Path, n: &OsStr| match follows {
        true => rustix::fs::getxattr_query(p, n),
        false => rustix::fs::lgetxattr_query(p, n),
    };
    let get = |p: &Path, n: &OsStr, b: &mut [u8]| match follows {
        true => rustix::fs::getxattr(p, n, b),
        false => rustix::fs::lgetxattr(p, n, b),
    };
    let n = match list_query(p) {
        Ok(0) => return Ok(Vec::new()),
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) | Err(rustix::io::Errno::PERM) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut names = vec![0u8; n];
    let n = list(p, &mut names[..])?;
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let name_os = OsStr::from_bytes(name);
        let len = match get_query(p, name_os) {
            Ok(l) => l,
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut v = vec![0u8; len];
        let got = get(p, name_os, &mut v[..])?;
        v.truncate(got);
        out.push((name.to_vec(), v));
    }
    out.sort();
    Ok(out)
}

/// `stat(path)`, following symlinks.
///
/// # Errors
///
/// The OS error of `stat`.
pub fn stat(path: &Path) -> io::Result<Meta> {
    Ok(Meta::from(&rustix::fs::stat(path)?))
}

/// `fstat` of an open file.
///
/// # Errors
///
/// The OS error of `fstat`.
pub fn fstat(f: &File) -> io::Result<Meta> {
    Ok(Meta::from(&rustix::fs::fstat(f)?))
}

/// `futimens`: the access and modification times of `f` become those of
/// `m`.
///
/// # Errors
///
/// The OS error of `futimens`.
pub fn futimens(f: &File, m: &Meta) -> io::Result<()> {
    Ok(rustix::fs::futimens(f, &times_of(m))?)
}

/// `pread`: reads at `offset`, returning the bytes read.
///
/// # Errors
///
/// The OS error of `pread`.
pub fn read_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(f, buf, offset)
}

/// `pread` until `buf` is full.
///
/// # Errors
///
/// The OS error of `pread`; UnexpectedEof if the file ends first.
pub fn read_exact_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, offset)
}

/// `fallocate(mode)` with Linux's mode bits (as the journal records
/// them), through the passthrough core's per-OS wrapper (EOPNOTSUPP on
/// macOS, which has no modes).
///
/// # Errors
///
/// The OS error of `fallocate`.
pub fn fallocate(f: &File, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    super::passthrough::sys::fallocate(f, mode, offset, len)
}

/// `FALLOC_FL_KEEP_SIZE`, in the journal's (Linux) mode bits.
pub const FALLOC_FL_KEEP_SIZE: i32 = 1;

/// `RENAME_EXCHANGE`, in the journal's (Linux `renameat2`) flags.
pub const RENAME_EXCHANGE: u32 = 2;

/// A device number's major part.
#[allow(clippy::unnecessary_cast)]
pub fn major(rdev: u64) -> u32 {
    rustix::fs::major(rdev as _)
}

/// A device number's minor part.
#[allow(clippy::unnecessary_cast)]
pub fn minor(rdev: u64) -> u32 {
    rustix::fs::minor(rdev as _)
}

/// A name's bytes.
pub fn name_bytes(name: &OsStr) -> Vec<u8> {
    name.as_bytes().to_vec()
}

/// The path a name's bytes spell.
pub fn path_from_bytes(b: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(b))
}

/// `setsockopt(TCP_QUICKACK)`: acknowledge what was read at once.
///
/// # Errors
///
/// The OS error of `setsockopt`.
#[cfg(target_os = "linux")]
pub fn set_tcp_quickack(s: &TcpStream) -> io::Result<()> {
    Ok(rustix::net::sockopt::set_tcp_quickack(s, true)?)
}

/// macOS has no `TCP_QUICKACK`.
///
/// # Errors
///
/// Always, Unsupported.
#[cfg(not(target_os = "linux"))]
pub fn set_tcp_quickack(_s: &TcpStream) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "TCP_QUICKACK: not on this platform",
    ))
}

/// Opens a SOURCE inode for reading, whatever its name is now.
///
/// # Errors
///
/// The OS error of reopening it (ESTALE once it is gone).
pub fn identity_open(id: &Identity) -> io::Result<File> {
    id.open(OFlags::RDONLY)
}

/// `fstat` of a SOURCE inode.
///
/// # Errors
///
/// The OS error of `fstat` (ESTALE once it is gone).
pub fn identity_fstat(id: &Identity) -> io::Result<Meta> {
    Ok(Meta::from(&id.stat()?))
}

/// A SOURCE inode's attributes, `None` once it has no name left in SOURCE
/// (unlinked, or gone altogether: ESTALE).
///
/// # Errors
///
/// Other OS errors of `fstat`.
pub fn identity_stat(id: &Identity) -> io::Result<Option<Meta>> {
    match id.stat() {
        Ok(st) if st.st_nlink == 0 => Ok(None),
        Ok(st) => Ok(Some(Meta::from(&st))),
        Err(e) if Errno::Stale.is(&e) => Ok(None),
        Err(e) => Err(e),
    }
}
