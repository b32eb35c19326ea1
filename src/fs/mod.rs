//! The filesystem, in three layers:
//!
//! - [`Vfs`], a platform-neutral trait with one method per filesystem
//!   operation, in terms of inode numbers and file handles (the shape of the
//!   FUSE low-level API, which a WinFsp adapter can drive as well);
//! - the platform's passthrough core, which implements [`Vfs`] over a
//!   SOURCE directory (`crate::sys::passthrough` on Unix);
//! - thin kernel adapters (`crate::sys::fuse` on Unix) that turn kernel
//!   requests into [`Vfs`] calls and errors into errnos.
//!
//! The core and the adapters are per OS and live in [`crate::sys`]; this
//! module and [`recording`] are the same on every OS.
//!
//! Every mutating operation is a [`Vfs`] method, so cross-cutting behaviour
//! (recording changes for replication) is a type that wraps a `Vfs` and
//! implements `Vfs` itself, never an `if` inside the core.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::time::SystemTime;

pub mod recording;

pub use crate::sys::{Identity, Ino};
/// File or directory handle returned by open/opendir/create.
pub type Fh = u64;

pub const ROOT_INO: Ino = 1;

/// The access-mode bits (`O_ACCMODE`) of the open(2) flags the `Vfs`'s
/// `flags` arguments carry, spelled from the three modes so that it means
/// the same on every OS's libc.
pub const ACCMODE: i32 = libc::O_RDONLY | libc::O_WRONLY | libc::O_RDWR;

/// What the mount has seen, for logs, tests and benchmarks.
#[derive(Debug, Default)]
pub struct MountStats {
    /// Largest single write request the kernel sent: what it really grants.
    pub largest_write: std::sync::atomic::AtomicU64,
    /// Largest single read request.
    pub largest_read: std::sync::atomic::AtomicU64,
}

/// Who is asking: the credentials of the process behind a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ctx {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

/// Attributes of an inode, as reported to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub size: u64,
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub kind: FileKind,
    /// Permission bits including set-uid, set-gid and sticky (0o7777).
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub blksize: u32,
}

/// A looked-up inode: the caller now holds one more reference on `attr.ino`
/// that it gives back with [`Vfs::forget`].
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub attr: Attr,
}

impl Entry {
    pub fn ino(&self) -> Ino {
        self.attr.ino
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    Now,
    At(SystemTime),
}

/// The changes of one setattr call; `None` leaves a field alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

/// An open file or directory and how the kernel may cache it.
#[derive(Clone, Copy, Debug)]
pub struct Opened {
    pub fh: Fh,
    /// The file did not change since the kernel last cached it: keep the
    /// page cache instead of dropping it on open.
    pub keep_cache: bool,
    /// The caller asked for uncached I/O (O_DIRECT): the kernel should not
    /// cache this handle's reads and writes either.
    pub uncached: bool,
    /// For create: the file was made by this call (not an existing one
    /// opened because the name turned out to exist, which the kernel's view
    /// of the directory may not know, e.g. after a rename between two hard
    /// links of one file, which leaves both names in place).
    pub created: bool,
}

/// One directory entry; `offset` is the cookie that resumes after it.
#[derive(Debug)]
pub struct DirEntry<'a> {
    pub ino: u64,
    pub offset: u64,
    pub kind: FileKind,
    pub name: &'a OsStr,
}

/// Answer to getxattr/listxattr: the size needed when the caller passed
/// size 0, the bytes otherwise.
#[derive(Debug, PartialEq, Eq)]
pub enum XattrReply {
    Size(u32),
    Data(Vec<u8>),
}

#[derive(Clone, Copy, Debug, Default)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// The filesystem operations. Every method that changes SOURCE is listed
/// here, so a wrapper that implements `Vfs` sees every change.
///
/// Errors are `io::Error`s carrying the OS error of the failed call; the
/// kernel adapters turn them into errnos with [`crate::error::errno_of`].
pub trait Vfs: Send + Sync + 'static {
    fn lookup(&self, ctx: &Ctx, parent: Ino, name: &OsStr) -> io::Result<Entry>;
    fn forget(&self, ino: Ino, nlookup: u64);
    fn getattr(&self, ctx: &Ctx, ino: Ino, fh: Option<Fh>) -> io::Result<Attr>;
    fn setattr(&self, ctx: &Ctx, ino: Ino, fh: Option<Fh>, set: &SetAttr) -> io::Result<Attr>;
    fn readlink(&self, ctx: &Ctx, ino: Ino) -> io::Result<Vec<u8>>;

    fn mknod(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        rdev: u64,
    ) -> io::Result<Entry>;
    fn mkdir(&self, ctx: &Ctx, parent: Ino, name: &OsStr, mode: u32) -> io::Result<Entry>;
    fn unlink(&self, ctx: &Ctx, parent: Ino, name: &OsStr) -> io::Result<()>;
    fn rmdir(&self, ctx: &Ctx, parent: Ino, name: &OsStr) -> io::Result<()>;
    fn symlink(&self, ctx: &Ctx, parent: Ino, name: &OsStr, target: &Path) -> io::Result<Entry>;
    /// `flags` are the renameat2 flags (RENAME_NOREPLACE, RENAME_EXCHANGE, ...).
    fn rename(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        flags: u32,
    ) -> io::Result<()>;
    fn link(&self, ctx: &Ctx, ino: Ino, new_parent: Ino, new_name: &OsStr) -> io::Result<Entry>;

    /// `flags` are open(2) flags; O_TRUNC truncates.
    fn open(&self, ctx: &Ctx, ino: Ino, flags: i32) -> io::Result<Opened>;
    fn create(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> io::Result<(Entry, Opened)>;
    fn read(&self, ctx: &Ctx, ino: Ino, fh: Fh, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    fn write(&self, ctx: &Ctx, ino: Ino, fh: Fh, offset: u64, data: &[u8]) -> io::Result<usize>;
    fn flush(&self, ctx: &Ctx, ino: Ino, fh: Fh) -> io::Result<()>;
    fn release(&self, ctx: &Ctx, ino: Ino, fh: Fh) -> io::Result<()>;
    fn fsync(&self, ctx: &Ctx, ino: Ino, fh: Fh, datasync: bool) -> io::Result<()>;

    fn opendir(&self, ctx: &Ctx, ino: Ino, flags: i32) -> io::Result<Opened>;
    /// Calls `add` for each entry after `offset` until it returns `true`
    /// (the reply is full) or the directory ends.
    fn readdir(
        &self,
        ctx: &Ctx,
        ino: Ino,
        fh: Fh,
        offset: u64,
        add: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> io::Result<()>;
    fn releasedir(&self, ctx: &Ctx, ino: Ino, fh: Fh) -> io::Result<()>;
    fn fsyncdir(&self, ctx: &Ctx, ino: Ino, fh: Fh, datasync: bool) -> io::Result<()>;

    fn statfs(&self, ctx: &Ctx, ino: Ino) -> io::Result<StatFs>;
    fn setxattr(
        &self,
        ctx: &Ctx,
        ino: Ino,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> io::Result<()>;
    fn getxattr(&self, ctx: &Ctx, ino: Ino, name: &OsStr, size: u32) -> io::Result<XattrReply>;
    fn listxattr(&self, ctx: &Ctx, ino: Ino, size: u32) -> io::Result<XattrReply>;
    fn removexattr(&self, ctx: &Ctx, ino: Ino, name: &OsStr) -> io::Result<()>;
    /// `mask` is an access(2) mask (R_OK, W_OK, X_OK, or F_OK).
    fn access(&self, ctx: &Ctx, ino: Ino, mask: i32) -> io::Result<()>;

    /// `mode` is the fallocate(2) mode (KEEP_SIZE, PUNCH_HOLE, ...).
    fn fallocate(
        &self,
        ctx: &Ctx,
        ino: Ino,
        fh: Fh,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> io::Result<()>;
    /// `whence` is SEEK_DATA or SEEK_HOLE (the kernel handles the others).
    fn lseek(&self, ctx: &Ctx, ino: Ino, fh: Fh, offset: i64, whence: i32) -> io::Result<i64>;
    #[allow(clippy::too_many_arguments)]
    fn copy_file_range(
        &self,
        ctx: &Ctx,
        ino_in: Ino,
        fh_in: Fh,
        offset_in: u64,
        ino_out: Ino,
        fh_out: Fh,
        offset_out: u64,
        len: u64,
    ) -> io::Result<usize>;

    /// The SOURCE inode behind `ino`, while the kernel holds it.
    fn identity(&self, _ino: Ino) -> Option<Identity> {
        None
    }

    /// Number of inodes the kernel holds references to.
    fn inode_count(&self) -> usize {
        0
    }

    /// At most `max` inodes the kernel holds that were not used since the
    /// last call (and have nothing open).
    fn cold_inodes(&self, _max: usize) -> Vec<Ino> {
        Vec::new()
    }

    /// At most `max` names (parent, name) of cold inodes, under which the
    /// kernel may be asked to forget them.
    fn forgettable(&self, _max: usize) -> Vec<(Ino, std::ffi::OsString)> {
        Vec::new()
    }
}
