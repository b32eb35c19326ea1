//! The passthrough core: a [`Vfs`] over a SOURCE directory.
//!
//! Every inode is held as a handle on the SOURCE inode itself (`O_PATH` on
//! Linux) and every name is resolved one component at a time relative to
//! its parent's handle, with `*at` calls that never follow a symlink. So no
//! path is ever re-walked from the top, a rename under our feet cannot
//! redirect an operation, and nothing reached through the mount can lead
//! out of SOURCE.

mod handles;
mod inode;
pub(crate) mod sys;

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, Mode, OFlags, Stat, Timespec, Timestamps};

use self::handles::{DirStream, Handle, Handles};
pub use self::inode::Node;
use self::inode::{Inode, InodeTable, Live};
use crate::error::context;
use crate::fs::{
    Attr, Ctx, DirEntry, Entry, Fh, FileKind, Ino, Opened, SetAttr, SetTime, StatFs, Vfs,
    XattrReply,
};

/// How the core behaves; fixed at mount time.
#[derive(Clone, Debug)]
pub struct Options {
    /// The kernel caches writes (FUSE writeback cache): opens for writing
    /// must also allow reading, and O_APPEND is the kernel's business.
    pub writeback_cache: bool,
    /// At most this many inodes hold a descriptor at once, where inodes
    /// can be reopened by file handle (see `inode.rs`).
    pub inode_fds: usize,
}

pub struct Passthrough {
    proc: sys::Proc,
    inodes: InodeTable,
    handles: Handles,
    options: Options,
    /// Created files are given to the caller with chown (we are root).
    give_ownership: bool,
    /// Our own umask, whose bits we restore on created files: the kernel
    /// already applied the caller's.
    umask: u32,
}

// File type and set-id bits; the same values on every unix (and typed
// differently by libc on each, hence our own).
const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;
const S_IFIFO: u32 = 0o010000;
const S_IFSOCK: u32 = 0o140000;

fn eio(msg: &str) -> io::Error {
    io::Error::other(msg.to_string())
}

impl Passthrough {
    /// Opens SOURCE with the options of a mount without kernel write
    /// caching (the same call on every OS, for code and tests that drive a
    /// core without a kernel session).
    pub fn with_defaults(source: &Path) -> io::Result<Self> {
        Self::new(
            source,
            Options {
                writeback_cache: false,
                inode_fds: 1024,
            },
        )
    }

    /// Opens SOURCE. Fails with an error naming SOURCE if it cannot be
    /// opened as a directory.
    pub fn new(source: &Path, options: Options) -> io::Result<Self> {
        let root = sys::open_root(source)
            .map_err(|e| context(format_args!("open source {}", source.display()), e))?;
        let st = rustix::fs::fstat(&root)
            .map_err(|e| context(format_args!("stat source {}", source.display()), e.into()))?;
        Ok(Passthrough {
            proc: sys::Proc::open()?,
            inodes: InodeTable::new(root, key_of(&st), options.inode_fds),
            handles: Handles::default(),
            options,
            give_ownership: rustix::process::geteuid().is_root(),
            umask: sys::current_umask(),
        })
    }

    /// Descriptors the inode table holds, and its cap; `None` where inodes
    /// cannot be reopened by handle (every inode then holds one).
    pub fn inode_fds(&self) -> Option<(usize, usize)> {
        self.inodes
            .by_handle()
            .then(|| (self.inodes.held(), self.inodes.cap()))
    }

    fn inode(&self, ino: Ino) -> io::Result<Live> {
        self.inodes.get(ino)
    }

    fn entry_for(&self, node: OwnedFd) -> io::Result<Entry> {
        let st = rustix::fs::fstat(&node)?;
        let ino = self.inodes.reference(node, key_of(&st));
        Ok(Entry {
            attr: attr_of(&st, ino),
        })
    }

    fn lookup_in(&self, parent: &Live, name: &OsStr) -> io::Result<Entry> {
        check_name(name)?;
        let node = sys::open_node(parent.fd(), name)?;
        self.entry_for(node)
    }

    /// Makes a node just created by us (as root) look as if the caller had
    /// created it: owned by the caller's uid, by the caller's gid unless the
    /// directory is set-gid, and with exactly the requested permission bits
    /// that our umask or the chown took away.
    fn adopt(
        &self,
        ctx: &Ctx,
        parent: &Live,
        node: BorrowedFd<'_>,
        requested: u32,
        kind: FileKind,
    ) -> io::Result<()> {
        let requested = requested & 0o7777;
        let mut chowned_gid = None;
        if self.give_ownership && (ctx.uid != 0 || ctx.gid != 0) {
            let parent_st = rustix::fs::fstat(parent.fd())?;
            let gid = if mode_of(&parent_st) & S_ISGID != 0 {
                None
            } else {
                Some(ctx.gid)
            };
            sys::chown_node(node, Some(ctx.uid), gid)?;
            chowned_gid = Some(gid);
        }
        if kind == FileKind::Symlink {
            return Ok(());
        }
        let mut restore = requested & self.umask;
        if let Some(gid) = chowned_gid {
            // chown cleared set-uid/set-gid; set-gid comes back only for a
            // group the caller is in (their own), as the kernel would allow.
            restore |= requested & S_ISUID;
            if gid.is_some() || kind == FileKind::Dir {
                restore |= requested & S_ISGID;
            }
        }
        if restore != 0 {
            let st = rustix::fs::fstat(node)?;
            let have = mode_of(&st) & 0o7777;
            if have | restore != have {
                sys::chmod_node(&self.proc, node, have | restore)?;
            }
        }
        Ok(())
    }

    /// Registers the node created as `name` in `parent` and hands it to the
    /// caller.
    fn created(
        &self,
        ctx: &Ctx,
        parent: &Live,
        name: &OsStr,
        mode: u32,
        kind: FileKind,
    ) -> io::Result<Entry> {
        let node = sys::open_node(parent.fd(), name)?;
        self.adopt(ctx, parent, node.as_fd(), mode, kind)?;
        self.entry_for(node)
    }

    fn open_flags(&self, flags: i32) -> OFlags {
        // O_DIRECT is the caller's promise about *its* buffers; ours (the
        // kernel's request buffers) are not aligned as it requires, so our
        // descriptor is opened without it: the adapter keeps the kernel's
        // page cache out of the way instead (`Opened::uncached`), and reads
        // skip SOURCE's where they can (`pread`). Writes stay cached in
        // SOURCE on purpose: replication reads them back right away. The
        // kernel never tells us about a later fcntl(F_SETFL, O_DIRECT).
        let mut f = OFlags::from_bits_retain(flags as u32)
            - (OFlags::CREATE | OFlags::EXCL | OFlags::NOCTTY | sys::DIRECT);
        if self.options.writeback_cache {
            // The kernel reads pages to fill partial writes, and it alone
            // knows where the end of the file is: it sends explicit offsets.
            if f & OFlags::RWMODE == OFlags::WRONLY {
                f = (f - OFlags::WRONLY) | OFlags::RDWR;
            }
            f -= OFlags::APPEND;
        }
        f
    }

    fn opened(&self, inode: &Inode, file: File, flags: i32) -> io::Result<Opened> {
        let st = rustix::fs::fstat(&file)?;
        self.opened_with(inode, file, &st, flags)
    }

    /// A handle for `file`, opened with the caller's open(2) `flags`.
    fn opened_with(&self, inode: &Inode, file: File, st: &Stat, flags: i32) -> io::Result<Opened> {
        let direct = OFlags::from_bits_retain(flags as u32).intersects(sys::DIRECT);
        let stamp = stamp_of(st);
        let keep_cache = {
            let mut cached = inode.cache_stamp.lock().unwrap_or_else(|e| e.into_inner());
            let keep = *cached == Some(stamp);
            *cached = Some(stamp);
            keep
        };
        let fh = self
            .handles
            .insert(Handle::new_file(file, inode.node.pin(), direct));
        Ok(Opened {
            fh,
            keep_cache,
            uncached: direct,
            created: false,
        })
    }

    fn file(&self, fh: Fh) -> io::Result<Arc<Handle>> {
        self.handles.get(fh)
    }
}

impl Vfs for Passthrough {
    fn lookup(&self, _ctx: &Ctx, parent: Ino, name: &OsStr) -> io::Result<Entry> {
        let parent = self.inode(parent)?;
        self.lookup_in(&parent, name)
    }

    fn forget(&self, ino: Ino, nlookup: u64) {
        self.inodes.forget(ino, nlookup);
    }

    fn getattr(&self, _ctx: &Ctx, ino: Ino, fh: Option<Fh>) -> io::Result<Attr> {
        if let Some(handle) = fh.and_then(|fh| self.handles.get(fh).ok()) {
            if let Some(file) = handle.as_file() {
                return Ok(attr_of(&rustix::fs::fstat(file)?, ino));
            }
        }
        let inode = self.inode(ino)?;
        Ok(attr_of(&rustix::fs::fstat(inode.fd())?, ino))
    }

    fn setattr(&self, ctx: &Ctx, ino: Ino, fh: Option<Fh>, set: &SetAttr) -> io::Result<Attr> {
        let inode = self.inode(ino)?;
        let handle = fh.and_then(|fh| self.handles.get(fh).ok());
        let file = handle.as_deref().and_then(Handle::as_file);
        if let Some(mode) = set.mode {
            match file {
                Some(f) => rustix::fs::fchmod(f, perm(mode))?,
                None => sys::chmod_node(&self.proc, inode.fd(), mode & 0o7777)?,
            }
        }
        if set.uid.is_some() || set.gid.is_some() {
            sys::chown_node(inode.fd(), set.uid, set.gid)?;
        }
        if let Some(size) = set.size {
            match file {
                Some(f) if f.set_len(size).is_ok() => {}
                _ => {
                    let f = sys::reopen(&self.proc, inode.fd(), OFlags::WRONLY)?;
                    f.set_len(size)?;
                }
            }
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let times = Timestamps {
                last_access: timespec_of(set.atime),
                last_modification: timespec_of(set.mtime),
            };
            match file {
                Some(f) => rustix::fs::futimens(f, &times)?,
                None => sys::utimens_node(inode.fd(), &times)?,
            }
        }
        self.getattr(ctx, ino, fh)
    }

    fn readlink(&self, _ctx: &Ctx, ino: Ino) -> io::Result<Vec<u8>> {
        let inode = self.inode(ino)?;
        let target = rustix::fs::readlinkat(inode.fd(), "", Vec::new())?;
        Ok(target.into_bytes())
    }

    fn mknod(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        rdev: u64,
    ) -> io::Result<Entry> {
        let parent = self.inode(parent)?;
        check_name(name)?;
        sys::mknod(parent.fd(), name, mode, rdev)?;
        let kind = kind_of_mode(mode);
        self.created(ctx, &parent, name, mode, kind)
    }

    fn mkdir(&self, ctx: &Ctx, parent: Ino, name: &OsStr, mode: u32) -> io::Result<Entry> {
        let parent = self.inode(parent)?;
        check_name(name)?;
        rustix::fs::mkdirat(parent.fd(), name, perm(mode))?;
        self.created(ctx, &parent, name, mode, FileKind::Dir)
    }

    fn unlink(&self, _ctx: &Ctx, parent: Ino, name: &OsStr) -> io::Result<()> {
        let parent = self.inode(parent)?;
        check_name(name)?;
        Ok(rustix::fs::unlinkat(parent.fd(), name, AtFlags::empty())?)
    }

    fn rmdir(&self, _ctx: &Ctx, parent: Ino, name: &OsStr) -> io::Result<()> {
        let parent = self.inode(parent)?;
        check_name(name)?;
        Ok(rustix::fs::unlinkat(parent.fd(), name, AtFlags::REMOVEDIR)?)
    }

    fn symlink(&self, ctx: &Ctx, parent: Ino, name: &OsStr, target: &Path) -> io::Result<Entry> {
        let parent = self.inode(parent)?;
        check_name(name)?;
        rustix::fs::symlinkat(target, parent.fd(), name)?;
        self.created(ctx, &parent, name, 0o777, FileKind::Symlink)
    }

    fn rename(
        &self,
        _ctx: &Ctx,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        flags: u32,
    ) -> io::Result<()> {
        let from = self.inode(parent)?;
        let to = self.inode(new_parent)?;
        check_name(name)?;
        check_name(new_name)?;
        sys::rename(from.fd(), name, to.fd(), new_name, flags)
    }

    fn link(&self, _ctx: &Ctx, ino: Ino, new_parent: Ino, new_name: &OsStr) -> io::Result<Entry> {
        let inode = self.inode(ino)?;
        let parent = self.inode(new_parent)?;
        check_name(new_name)?;
        sys::link(&self.proc, inode.fd(), parent.fd(), new_name)?;
        self.lookup_in(&parent, new_name)
    }

    fn open(&self, _ctx: &Ctx, ino: Ino, flags: i32) -> io::Result<Opened> {
        let inode = self.inode(ino)?;
        let file = sys::reopen(&self.proc, inode.fd(), self.open_flags(flags))?;
        self.opened(&inode, file, flags)
    }

    fn create(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> io::Result<(Entry, Opened)> {
        let parent = self.inode(parent)?;
        check_name(name)?;
        let oflags = self.open_flags(flags) | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let perm = perm(mode);
        // Only a file we made ourselves is handed to the caller; if the name
        // appeared meanwhile (and O_EXCL was not asked), open what is there.
        let (fd, made) = match rustix::fs::openat(
            parent.fd(),
            name,
            oflags | OFlags::CREATE | OFlags::EXCL,
            perm,
        ) {
            Ok(fd) => (fd, true),
            Err(rustix::io::Errno::EXIST) if flags & libc::O_EXCL == 0 => {
                (rustix::fs::openat(parent.fd(), name, oflags, perm)?, false)
            }
            Err(e) => return Err(e.into()),
        };
        let file = File::from(fd);
        let node = sys::node_of_file(&self.proc, &file)?;
        if made {
            self.adopt(ctx, &parent, node.as_fd(), mode, FileKind::File)?;
        }
        let st = rustix::fs::fstat(&file)?;
        let ino = self.inodes.reference(node, key_of(&st));
        let entry = Entry {
            attr: attr_of(&st, ino),
        };
        let inode = self.inode(ino)?;
        let mut opened = self.opened_with(&inode, file, &st, flags)?;
        opened.created = made;
        Ok((entry, opened))
    }

    fn read(
        &self,
        _ctx: &Ctx,
        _ino: Ino,
        fh: Fh,
        offset: u64,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        let handle = self.file(fh)?;
        let file = handle.file()?;
        let mut done = 0;
        while done < buf.len() {
            match pread(&handle, file, &mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) if done > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write(&self, _ctx: &Ctx, _ino: Ino, fh: Fh, offset: u64, data: &[u8]) -> io::Result<usize> {
        let handle = self.file(fh)?;
        let file = handle.file()?;
        handle.mark_written();
        let mut done = 0;
        while done < data.len() {
            match file.write_at(&data[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) if done > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn flush(&self, _ctx: &Ctx, _ino: Ino, fh: Fh) -> io::Result<()> {
        // Nothing is buffered here; only an unknown handle is an error.
        self.file(fh).map(drop)
    }

    fn release(&self, _ctx: &Ctx, ino: Ino, fh: Fh) -> io::Result<()> {
        let handle = self.handles.remove(fh)?;
        if handle.was_written() {
            // Our own writes went through the kernel's page cache too: what
            // it holds now matches this stamp.
            if let (Ok(file), Ok(inode)) = (handle.file(), self.inode(ino)) {
                if let Ok(st) = rustix::fs::fstat(file) {
                    *inode.cache_stamp.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(stamp_of(&st));
                }
            }
        }
        Ok(())
    }

    fn fsync(&self, _ctx: &Ctx, _ino: Ino, fh: Fh, datasync: bool) -> io::Result<()> {
        let handle = self.file(fh)?;
        let file = handle.file()?;
        if datasync {
            file.sync_data()
        } else {
            file.sync_all()
        }
    }

    fn opendir(&self, _ctx: &Ctx, ino: Ino, _flags: i32) -> io::Result<Opened> {
        let inode = self.inode(ino)?;
        let fd = sys::reopen(&self.proc, inode.fd(), OFlags::RDONLY | OFlags::DIRECTORY)?;
        let dir = rustix::fs::Dir::new(OwnedFd::from(fd))?;
        let fh = self
            .handles
            .insert(Handle::new_dir(DirStream::new(dir), inode.node.pin()));
        Ok(Opened {
            fh,
            keep_cache: false,
            uncached: false,
            created: false,
        })
    }

    fn readdir(
        &self,
        _ctx: &Ctx,
        _ino: Ino,
        fh: Fh,
        offset: u64,
        add: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> io::Result<()> {
        let handle = self.handles.get(fh)?;
        handle.dir()?.read(offset, add)
    }

    fn releasedir(&self, _ctx: &Ctx, _ino: Ino, fh: Fh) -> io::Result<()> {
        self.handles.remove(fh).map(drop)
    }

    fn fsyncdir(&self, _ctx: &Ctx, _ino: Ino, fh: Fh, datasync: bool) -> io::Result<()> {
        let handle = self.handles.get(fh)?;
        handle.dir()?.sync(datasync)
    }

    fn statfs(&self, _ctx: &Ctx, ino: Ino) -> io::Result<StatFs> {
        let inode = self.inode(ino)?;
        let s = rustix::fs::fstatvfs(inode.fd())?;
        Ok(StatFs {
            blocks: s.f_blocks,
            bfree: s.f_bfree,
            bavail: s.f_bavail,
            files: s.f_files,
            ffree: s.f_ffree,
            bsize: u32::try_from(s.f_bsize).unwrap_or(u32::MAX),
            namelen: u32::try_from(s.f_namemax).unwrap_or(255),
            frsize: u32::try_from(s.f_frsize).unwrap_or(u32::MAX),
        })
    }

    fn setxattr(
        &self,
        _ctx: &Ctx,
        ino: Ino,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> io::Result<()> {
        let inode = self.inode(ino)?;
        sys::setxattr(&self.proc, inode.fd(), name, value, flags)
    }

    fn getxattr(&self, _ctx: &Ctx, ino: Ino, name: &OsStr, size: u32) -> io::Result<XattrReply> {
        let inode = self.inode(ino)?;
        let mut buf = vec![0u8; size as usize];
        let n = sys::getxattr(&self.proc, inode.fd(), name, &mut buf)?;
        xattr_reply(buf, n, size)
    }

    fn listxattr(&self, _ctx: &Ctx, ino: Ino, size: u32) -> io::Result<XattrReply> {
        let inode = self.inode(ino)?;
        let mut buf = vec![0u8; size as usize];
        let n = sys::listxattr(&self.proc, inode.fd(), &mut buf)?;
        xattr_reply(buf, n, size)
    }

    fn removexattr(&self, _ctx: &Ctx, ino: Ino, name: &OsStr) -> io::Result<()> {
        let inode = self.inode(ino)?;
        sys::removexattr(&self.proc, inode.fd(), name)
    }

    fn access(&self, _ctx: &Ctx, ino: Ino, mask: i32) -> io::Result<()> {
        let inode = self.inode(ino)?;
        sys::access(&self.proc, inode.fd(), mask)
    }

    fn fallocate(
        &self,
        _ctx: &Ctx,
        _ino: Ino,
        fh: Fh,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> io::Result<()> {
        let handle = self.file(fh)?;
        handle.mark_written();
        sys::fallocate(handle.file()?, mode, offset, length)
    }

    fn lseek(&self, _ctx: &Ctx, _ino: Ino, fh: Fh, offset: i64, whence: i32) -> io::Result<i64> {
        let handle = self.file(fh)?;
        let file = handle.file()?;
        let start =
            u64::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let pos = match whence {
            libc::SEEK_DATA => rustix::fs::SeekFrom::Data(start),
            libc::SEEK_HOLE => rustix::fs::SeekFrom::Hole(start),
            libc::SEEK_SET => rustix::fs::SeekFrom::Start(start),
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        let at = rustix::fs::seek(file, pos)?;
        i64::try_from(at).map_err(|_| eio("seek offset beyond i64"))
    }

    fn copy_file_range(
        &self,
        _ctx: &Ctx,
        _ino_in: Ino,
        fh_in: Fh,
        offset_in: u64,
        _ino_out: Ino,
        fh_out: Fh,
        offset_out: u64,
        len: u64,
    ) -> io::Result<usize> {
        let from = self.file(fh_in)?;
        let to = self.file(fh_out)?;
        to.mark_written();
        sys::copy_file_range(from.file()?, offset_in, to.file()?, offset_out, len)
    }

    fn identity(&self, ino: Ino) -> Option<crate::fs::Identity> {
        self.inodes.node(ino)
    }

    fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    fn cold_inodes(&self, max: usize) -> Vec<Ino> {
        self.inodes.cold(max)
    }
}

/// One read for `handle`. If its caller asked for O_DIRECT, the pages do
/// not stay in SOURCE's page cache (the caller chose to cache them itself)
/// where SOURCE's file system can do that; otherwise an ordinary pread.
fn pread(handle: &Handle, file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    if handle.uncached_reads() {
        match sys::pread_dontcache(file, buf, offset) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                static ONCE: std::sync::Once = std::sync::Once::new();
                ONCE.call_once(|| {
                    tracing::info!(
                        "uncached reads (RWF_DONTCACHE) not supported here: \
                         O_DIRECT reads go through SOURCE's page cache"
                    );
                });
                handle.cached_reads_only();
            }
            r => return r,
        }
    }
    file.read_at(buf, offset)
}

fn xattr_reply(mut buf: Vec<u8>, n: usize, size: u32) -> io::Result<XattrReply> {
    if size == 0 {
        let n = u32::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
        return Ok(XattrReply::Size(n));
    }
    buf.truncate(n);
    Ok(XattrReply::Data(buf))
}

/// Names come from the kernel one component at a time; "." and ".." never
/// do (the VFS resolves them), and either would let a lookup leave its
/// directory, so refuse them outright.
fn check_name(name: &OsStr) -> io::Result<()> {
    let b = name.as_encoded_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(())
}

#[allow(clippy::unnecessary_cast)]
fn mode_of(st: &Stat) -> u32 {
    st.st_mode as u32
}

/// Permission bits (0o7777 of `mode`) as rustix wants them.
#[allow(clippy::unnecessary_cast)]
fn perm(mode: u32) -> Mode {
    Mode::from_raw_mode((mode & 0o7777) as _)
}

#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn key_of(st: &Stat) -> inode::Key {
    (st.st_dev as u64, st.st_ino as u64)
}

#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn stamp_of(st: &Stat) -> inode::CacheStamp {
    (
        st.st_mtime as i64,
        st.st_mtime_nsec as i64,
        st.st_size as u64,
    )
}

fn kind_of_mode(mode: u32) -> FileKind {
    match mode & S_IFMT {
        m if m == S_IFDIR => FileKind::Dir,
        m if m == S_IFLNK => FileKind::Symlink,
        m if m == S_IFCHR => FileKind::CharDevice,
        m if m == S_IFBLK => FileKind::BlockDevice,
        m if m == S_IFIFO => FileKind::Fifo,
        m if m == S_IFSOCK => FileKind::Socket,
        _ => FileKind::File,
    }
}

fn system_time(sec: i64, nsec: i64) -> SystemTime {
    let nsec = u32::try_from(nsec.clamp(0, 999_999_999)).unwrap_or(0);
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::new(sec.unsigned_abs(), 0) + Duration::new(0, nsec)
    }
}

#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn attr_of(st: &Stat, ino: Ino) -> Attr {
    let mode = mode_of(st);
    Attr {
        ino,
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: system_time(st.st_atime as i64, st.st_atime_nsec as i64),
        mtime: system_time(st.st_mtime as i64, st.st_mtime_nsec as i64),
        ctime: system_time(st.st_ctime as i64, st.st_ctime_nsec as i64),
        kind: kind_of_mode(mode),
        perm: (mode & 0o7777) as u16,
        nlink: u32::try_from(st.st_nlink as u64).unwrap_or(u32::MAX),
        uid: st.st_uid as u32,
        gid: st.st_gid as u32,
        rdev: st.st_rdev as u64,
        blksize: u32::try_from(st.st_blksize as i64).unwrap_or(4096),
    }
}

fn timespec_of(t: Option<SetTime>) -> Timespec {
    match t {
        None => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        Some(SetTime::Now) => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        Some(SetTime::At(t)) => {
            let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
                Err(e) => {
                    // Before 1970: whole seconds down, nanoseconds up.
                    let d = e.duration();
                    let mut sec = -(d.as_secs() as i64);
                    let mut nsec = -(d.subsec_nanos() as i64);
                    if nsec < 0 {
                        sec -= 1;
                        nsec += 1_000_000_000;
                    }
                    (sec, nsec)
                }
            };
            Timespec {
                tv_sec: sec,
                tv_nsec: nsec as _,
            }
        }
    }
}
