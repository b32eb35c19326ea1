//! The FUSE adapter: kernel requests (through `fuser`) in, [`Vfs`] calls
//! out. It holds no filesystem logic of its own; it negotiates the kernel
//! connection, converts types and turns errors into errnos.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType,
    Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};

use crate::error::errno_of;
use crate::fs::{
    Attr, Ctx, Entry, FileKind, MountStats, Opened, SetAttr, SetTime, Vfs, XattrReply,
};

/// Kernel-facing settings of a mount.
#[derive(Clone, Debug)]
pub struct FuseOptions {
    /// How long the kernel may trust names and attributes without asking.
    pub ttl: Duration,
    /// Let the kernel cache writes (acknowledged before we see them).
    pub writeback_cache: bool,
    /// Largest write request to ask for; the kernel caps it at
    /// `/proc/sys/fs/fuse/max_pages_limit` pages.
    pub max_write: u32,
    /// Opens for writing bypass the kernel's page cache (FOPEN_DIRECT_IO):
    /// a write goes from the caller's buffer straight into the request.
    pub direct_writes: bool,
}

impl Default for FuseOptions {
    fn default() -> Self {
        FuseOptions {
            ttl: Duration::from_secs(1),
            writeback_cache: false,
            max_write: 16 << 20,
            direct_writes: true,
        }
    }
}

pub struct FuseAdapter<F: Vfs> {
    fs: Arc<F>,
    options: FuseOptions,
    stats: Arc<MountStats>,
}

/// Keeps the inodes the kernel holds near `max` (0: no bound) while the
/// session lives. The kernel forgets inodes only under memory pressure, so
/// after a walk of a large tree it holds every one, and so do we: past
/// `max`, a background thread asks it to drop the names of inodes unused
/// since its last pass (`FUSE_NOTIFY_INVAL_ENTRY`); it forgets those that
/// nothing has open, and looks them up again when they are used.
fn bound_inodes<F: Vfs>(
    fs: std::sync::Weak<F>,
    notifier: fuser::Notifier,
    max: usize,
) -> io::Result<()> {
    if max == 0 {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("inode-trim".into())
        .spawn(move || {
            loop {
                std::thread::sleep(TRIM_EVERY);
                // The session is gone with the last strong reference.
                let Some(fs) = fs.upgrade() else { return };
                let held = fs.inode_count();
                if held <= max {
                    continue;
                }
                // Down to 90 % of the bound, so this runs in batches.
                let excess = held - max * 9 / 10;
                for (parent, name) in fs.forgettable(excess) {
                    match notifier.inval_entry(INodeNo(parent), &name) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                        Err(e) => {
                            tracing::debug!("inode trim stops: {e}");
                            return;
                        }
                    }
                }
            }
        })?;
    Ok(())
}

/// How often the inode bound is checked.
const TRIM_EVERY: Duration = Duration::from_millis(500);

impl<F: Vfs> FuseAdapter<F> {
    pub fn new(fs: Arc<F>, options: FuseOptions) -> Self {
        FuseAdapter {
            fs,
            options,
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> Arc<MountStats> {
        Arc::clone(&self.stats)
    }

    /// Counts the inodes the kernel holds, while the session lives.
    pub fn inode_counter(&self) -> impl Fn() -> usize + Send + Sync + use<F> {
        let fs = Arc::downgrade(&self.fs);
        move || fs.upgrade().map_or(0, |fs| fs.inode_count())
    }

    /// What keeps the number of inodes the kernel holds bounded, to run
    /// once the session exists: see [`bound_inodes`].
    pub fn trimmer(&self) -> impl FnOnce(fuser::Notifier, usize) -> io::Result<()> + use<F> {
        let fs = Arc::downgrade(&self.fs);
        move |notifier, max| bound_inodes(fs, notifier, max)
    }

    fn attr(&self, a: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.blocks,
            atime: a.atime,
            mtime: a.mtime,
            ctime: a.ctime,
            crtime: a.ctime,
            kind: file_type(a.kind),
            perm: a.perm,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: u32::try_from(a.rdev).unwrap_or(0),
            blksize: a.blksize,
            flags: 0,
        }
    }

    fn reply_entry(&self, reply: ReplyEntry, r: io::Result<Entry>, op: &str) {
        reply.answer(op, r, |reply, e| {
            reply.entry(&self.options.ttl, &self.attr(&e.attr), Generation(0));
        });
    }
}

/// The one shape of every reply: on success the value goes to the
/// operation's own conversion, on failure the reply carries the errno
/// [`errno`] makes of the error.
trait Answer: Sized {
    /// The reply type's own `error`: fuser has no trait for it.
    fn fail(self, e: Errno);

    /// Answers `self` with `r`, converted by `ok` if it is a value.
    fn answer<T>(self, op: &str, r: io::Result<T>, ok: impl FnOnce(Self, T)) {
        match r {
            Ok(v) => ok(self, v),
            Err(e) => self.fail(errno(op, &e)),
        }
    }
}

macro_rules! impl_answer {
    ($($reply:ty),* $(,)?) => {
        $(impl Answer for $reply {
            fn fail(self, e: Errno) {
                self.error(e);
            }
        })*
    };
}

impl_answer!(
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyEmpty,
    ReplyEntry,
    ReplyLseek,
    ReplyOpen,
    ReplyStatfs,
    ReplyWrite,
    ReplyXattr,
);

fn ctx(req: &Request) -> Ctx {
    Ctx {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

/// The errno for a failed operation. Failures without an OS error are our
/// own and unexpected: they are logged, the caller sees EIO (or the kind's
/// closest errno).
fn errno(op: &str, e: &io::Error) -> Errno {
    if e.raw_os_error().is_none() {
        tracing::warn!("{op}: {e}");
    } else {
        tracing::trace!("{op}: {e}");
    }
    Errno::from_i32(errno_of(e))
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
    }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(t),
    })
}

fn fopen_flags(o: &Opened, flags: i32, direct_writes: bool) -> FopenFlags {
    // Nothing is buffered between the kernel and SOURCE, so close(2) need
    // not wait for a FLUSH round trip.
    let mut f = FopenFlags::FOPEN_NOFLUSH;
    if o.keep_cache {
        f |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    // A caller that opened with O_DIRECT gets what it asked for: no page
    // cache for this handle, reads included.
    if o.uncached || (direct_writes && flags & libc::O_ACCMODE != libc::O_RDONLY) {
        f |= FopenFlags::FOPEN_DIRECT_IO;
    }
    if o.uncached {
        // O_DIRECT callers (qemu, databases) keep several writes to one file
        // in flight; the kernel then serialises only appending and extending
        // ones. Our write path takes no per-file lock.
        f |= FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES;
    }
    f
}

/// The conversion of a reply that carries nothing but success.
fn ok(reply: ReplyEmpty, (): ()) {
    reply.ok();
}

/// The conversion of a getxattr/listxattr answer: the size asked for, or
/// the bytes.
fn xattr(reply: ReplyXattr, x: XattrReply) {
    match x {
        XattrReply::Size(n) => reply.size(n),
        XattrReply::Data(d) => reply.data(&d),
    }
}

fn raise(max: &AtomicU64, v: u64) {
    max.fetch_max(v, Ordering::Relaxed);
}

thread_local! {
    /// Read buffer, one per session thread: reads are answered from here
    /// instead of a fresh allocation per request.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl<F: Vfs> Filesystem for FuseAdapter<F> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let mut wanted = InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_AUTO_INVAL_DATA
            | InitFlags::FUSE_ASYNC_DIO
            | InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP;
        if self.options.writeback_cache {
            wanted |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        let offered = config.capabilities();
        let granted = wanted & offered;
        if self.options.writeback_cache && !granted.contains(InitFlags::FUSE_WRITEBACK_CACHE) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "writeback_cache: the kernel does not offer FUSE_WRITEBACK_CACHE",
            ));
        }
        if let Err(unsupported) = config.add_capabilities(granted) {
            tracing::debug!("kernel refused capabilities {unsupported:?}");
        }
        let requested = self.options.max_write;
        if let Err(nearest) = config.set_max_write(requested) {
            let _ = config.set_max_write(nearest);
        }
        // Readahead as large as the kernel allows: sequential reads then
        // arrive in requests as large as writes may be.
        if let Err(nearest) = config.set_max_readahead(requested) {
            let _ = config.set_max_readahead(nearest);
        }
        let _ = config.set_max_background(64);
        tracing::info!(
            abi = %config.kernel_abi(),
            max_write_requested = requested,
            max_pages_limit = max_pages_limit(),
            writeback_cache = self.options.writeback_cache,
            "FUSE connection initialised"
        );
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.reply_entry(reply, self.fs.lookup(&ctx(req), parent.0, name), "lookup");
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = self.fs.getattr(&ctx(req), ino.0, fh.map(|f| f.0));
        reply.answer("getattr", r, |reply, a| {
            reply.attr(&self.options.ttl, &self.attr(&a))
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
        };
        let r = self.fs.setattr(&ctx(req), ino.0, fh.map(|f| f.0), &set);
        reply.answer("setattr", r, |reply, a| {
            reply.attr(&self.options.ttl, &self.attr(&a))
        });
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self.fs.readlink(&ctx(req), ino.0);
        reply.answer("readlink", r, |reply, t| reply.data(&t));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self
            .fs
            .mknod(&ctx(req), parent.0, name, mode, u64::from(rdev));
        self.reply_entry(reply, r, "mknod");
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.reply_entry(
            reply,
            self.fs.mkdir(&ctx(req), parent.0, name, mode),
            "mkdir",
        );
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.fs.unlink(&ctx(req), parent.0, name);
        reply.answer("unlink", r, ok);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.fs.rmdir(&ctx(req), parent.0, name);
        reply.answer("rmdir", r, ok);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self.fs.symlink(&ctx(req), parent.0, link_name, target);
        self.reply_entry(reply, r, "symlink");
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.fs.rename(
            &ctx(req),
            parent.0,
            name,
            newparent.0,
            newname,
            flags.bits(),
        );
        reply.answer("rename", r, ok);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = self.fs.link(&ctx(req), ino.0, newparent.0, newname);
        self.reply_entry(reply, r, "link");
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = self.fs.open(&ctx(req), ino.0, flags.0);
        reply.answer("open", r, |reply, o| {
            reply.opened(
                FileHandle(o.fh),
                fopen_flags(&o, flags.0, self.options.direct_writes),
            )
        });
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        raise(&self.stats.largest_read, u64::from(size));
        READ_BUF.with_borrow_mut(|buf| {
            if buf.len() < size as usize {
                buf.resize(size as usize, 0);
            }
            let buf = &mut buf[..size as usize];
            let r = self.fs.read(&ctx(req), ino.0, fh.0, offset, buf);
            reply.answer("read", r, |reply, n| reply.data(&buf[..n]));
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        raise(&self.stats.largest_write, data.len() as u64);
        let r = self.fs.write(&ctx(req), ino.0, fh.0, offset, data);
        reply.answer("write", r, |reply, n| {
            reply.written(u32::try_from(n).unwrap_or(u32::MAX))
        });
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let r = self.fs.flush(&ctx(req), ino.0, fh.0);
        reply.answer("flush", r, ok);
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.fs.release(&ctx(req), ino.0, fh.0);
        reply.answer("release", r, ok);
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.fs.fsync(&ctx(req), ino.0, fh.0, datasync);
        reply.answer("fsync", r, ok);
    }

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = self.fs.opendir(&ctx(req), ino.0, flags.0);
        reply.answer("opendir", r, |reply, o| {
            reply.opened(FileHandle(o.fh), FopenFlags::empty())
        });
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.fs.readdir(&ctx(req), ino.0, fh.0, offset, &mut |e| {
            reply.add(INodeNo(e.ino), e.offset, file_type(e.kind), e.name)
        });
        reply.answer("readdir", r, |reply, ()| reply.ok());
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let ctx = ctx(req);
        let ttl = self.options.ttl;
        let r = self.fs.readdir(&ctx, ino.0, fh.0, offset, &mut |e| {
            let name = e.name.as_encoded_bytes();
            if name == b"." || name == b".." {
                // The kernel takes only the name and cookie of these: it
                // never makes inodes from them, so no reference is taken.
                let attr = self.attr(&Attr {
                    ino: e.ino,
                    size: 0,
                    blocks: 0,
                    atime: SystemTime::UNIX_EPOCH,
                    mtime: SystemTime::UNIX_EPOCH,
                    ctime: SystemTime::UNIX_EPOCH,
                    kind: FileKind::Dir,
                    perm: 0,
                    nlink: 0,
                    uid: 0,
                    gid: 0,
                    rdev: 0,
                    blksize: 0,
                });
                return reply.add(
                    INodeNo(e.ino),
                    e.offset,
                    e.name,
                    &Duration::ZERO,
                    &attr,
                    Generation(0),
                );
            }
            match self.fs.lookup(&ctx, ino.0, e.name) {
                Ok(entry) => {
                    let full = reply.add(
                        INodeNo(entry.ino()),
                        e.offset,
                        e.name,
                        &ttl,
                        &self.attr(&entry.attr),
                        Generation(0),
                    );
                    if full {
                        // Not sent: the kernel will not count this lookup.
                        self.fs.forget(entry.ino(), 1);
                    }
                    full
                }
                // Removed since the directory was read: skip it, as
                // readdir(3) may.
                Err(_) => false,
            }
        });
        reply.answer("readdirplus", r, |reply, ()| reply.ok());
    }

    fn releasedir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.fs.releasedir(&ctx(req), ino.0, fh.0);
        reply.answer("releasedir", r, ok);
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.fs.fsyncdir(&ctx(req), ino.0, fh.0, datasync);
        reply.answer("fsyncdir", r, ok);
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let r = self.fs.statfs(&ctx(req), ino.0);
        reply.answer("statfs", r, |reply, s| {
            reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            );
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let r = self.fs.setxattr(&ctx(req), ino.0, name, value, flags);
        reply.answer("setxattr", r, ok);
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let r = self.fs.getxattr(&ctx(req), ino.0, name, size);
        reply.answer("getxattr", r, xattr);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let r = self.fs.listxattr(&ctx(req), ino.0, size);
        reply.answer("listxattr", r, xattr);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.fs.removexattr(&ctx(req), ino.0, name);
        reply.answer("removexattr", r, ok);
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let r = self.fs.access(&ctx(req), ino.0, mask.bits());
        reply.answer("access", r, ok);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self.fs.create(&ctx(req), parent.0, name, mode, flags);
        reply.answer("create", r, |reply, (entry, o)| {
            reply.created(
                &self.options.ttl,
                &self.attr(&entry.attr),
                Generation(0),
                FileHandle(o.fh),
                fopen_flags(&o, flags, self.options.direct_writes),
            )
        });
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = self
            .fs
            .fallocate(&ctx(req), ino.0, fh.0, offset, length, mode);
        reply.answer("fallocate", r, ok);
    }

    fn lseek(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let r = self.fs.lseek(&ctx(req), ino.0, fh.0, offset, whence);
        reply.answer("lseek", r, |reply, o| reply.offset(o));
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let r = self.fs.copy_file_range(
            &ctx(req),
            ino_in.0,
            fh_in.0,
            offset_in,
            ino_out.0,
            fh_out.0,
            offset_out,
            len,
        );
        reply.answer("copy_file_range", r, |reply, n| {
            reply.written(u32::try_from(n).unwrap_or(u32::MAX))
        });
    }
}

/// The kernel's cap on pages per FUSE request, where it can be read.
pub fn max_pages_limit() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/fs/fuse/max_pages_limit")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(uncached: bool) -> Opened {
        Opened {
            fh: 1,
            keep_cache: false,
            uncached,
            created: false,
        }
    }

    #[test]
    fn o_direct_opens_bypass_the_page_cache_whatever_the_options() {
        let direct = |o: &Opened, flags, direct_writes| {
            fopen_flags(o, flags, direct_writes).contains(FopenFlags::FOPEN_DIRECT_IO)
        };
        for direct_writes in [false, true] {
            for mode in [libc::O_RDONLY, libc::O_WRONLY, libc::O_RDWR] {
                assert!(direct(&opened(true), mode, direct_writes));
            }
        }
        assert!(
            fopen_flags(&opened(true), libc::O_RDWR, true)
                .contains(FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES)
        );
        assert!(
            !fopen_flags(&opened(false), libc::O_RDWR, true)
                .contains(FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES)
        );
        assert!(!direct(&opened(false), libc::O_RDONLY, true));
        assert!(!direct(&opened(false), libc::O_RDWR, false));
        assert!(direct(&opened(false), libc::O_RDWR, true));
    }
}
