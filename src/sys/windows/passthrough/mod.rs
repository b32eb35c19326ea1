//! The Windows passthrough core: a [`Vfs`] over a SOURCE directory, the
//! twin of the Unix core (`sys::unix::passthrough`).
//!
//! Every inode holds a handle on the SOURCE file itself (attributes-only
//! access, every share mode, so it never stands in another opener's way)
//! and every name is opened relative to its parent's handle with
//! `NtCreateFile` and `FILE_OPEN_REPARSE_POINT` (see [`nt`]). So no path is
//! re-walked from the top, a rename under our feet cannot redirect an
//! operation, and a reparse point (a symlink, a junction, a mount point
//! leading anywhere) is an inode of its own that is never traversed:
//! looking a name up *through* one fails. Names are single components:
//! `.`, `..`, separators and `:` (alternate data streams) are refused.
//! Names compare case-insensitively, as NTFS does: `README` and `readme`
//! find the same inode.
//!
//! Inodes are keyed by the volume serial and file index, so hard links
//! are one inode and a file keeps its identity across renames. Windows
//! has no descriptor limit worth the name (handles are bounded by memory),
//! so unlike the Unix core there is no descriptor cap to keep.
//!
//! What Windows has no equivalent of here is refused with
//! ERROR_NOT_SUPPORTED: owners, device nodes, creating symlinks (which
//! needs a privilege and a full reparse buffer), extended attributes,
//! RENAME_EXCHANGE, hole queries.

pub(crate) mod nt;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::windows::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use windows_sys::Wdk::Storage::FileSystem::{
    FILE_CREATE, FILE_DIRECTORY_FILE, FILE_NON_DIRECTORY_FILE, FILE_OPEN, FILE_OPEN_IF,
    FILE_OVERWRITE_IF,
};
use windows_sys::Win32::Storage::FileSystem::{
    DELETE, FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_NORMAL, FILE_ATTRIBUTE_READONLY,
    FILE_ATTRIBUTE_REPARSE_POINT, FILE_GENERIC_READ, FILE_GENERIC_WRITE, FILE_LIST_DIRECTORY,
    FILE_READ_ATTRIBUTES, FILE_WRITE_ATTRIBUTES, FILE_WRITE_DATA,
};

use self::nt::{Info, Listed, OpenHow};
use crate::error::context;
use crate::fs::{
    ACCMODE, Attr, Ctx, DirEntry, Entry, Fh, FileKind, Ino, Opened, ROOT_INO, SetAttr, SetTime,
    StatFs, Vfs, XattrReply,
};
use crate::sys::{Kind, Meta, Time};

/// `ERROR_INVALID_NAME`: a name that is not one component.
const ERROR_INVALID_NAME: i32 = 123;
/// `ERROR_NOT_SUPPORTED`.
const ERROR_NOT_SUPPORTED: i32 = 50;
/// `ERROR_DIRECTORY`: a directory operation on what is not one.
const ERROR_DIRECTORY: i32 = 267;
/// `ERROR_INVALID_HANDLE`: a file handle we never gave out.
const ERROR_INVALID_HANDLE: i32 = 6;
/// `ERROR_CANT_RESOLVE_FILENAME`: a lookup through a reparse point.
const ERROR_CANT_RESOLVE_FILENAME: i32 = 1921;

/// `renameat2` flags, as the `Vfs` carries them.
const RENAME_NOREPLACE: u32 = 1;
const RENAME_EXCHANGE: u32 = 2;

/// Between 1601-01-01 (FILETIME's epoch) and 1970-01-01, in 100 ns.
const FILETIME_UNIX: i64 = 116_444_736_000_000_000;

fn not_supported() -> io::Error {
    io::Error::from_raw_os_error(ERROR_NOT_SUPPORTED)
}

/// A SOURCE inode: a handle on the file itself. It is what the engine
/// holds ([`crate::sys::Identity`]) to read a file's current bytes and
/// attributes whatever its name is by then.
#[derive(Debug)]
pub struct Node {
    handle: File,
    kind: FileKind,
}

impl Node {
    /// Another handle on the file with `access` (a `FILE_*` mask).
    ///
    /// # Errors
    ///
    /// The OS error of `ReOpenFile`.
    pub fn reopen(&self, access: u32) -> io::Result<File> {
        nt::reopen(&self.handle, access)
    }

    /// The file's attributes now.
    ///
    /// # Errors
    ///
    /// The OS error of the queries.
    pub fn info(&self) -> io::Result<Info> {
        nt::info(&self.handle)
    }
}

struct Inode {
    node: Arc<Node>,
    key: (u32, u64),
    nlookup: u64,
}

#[derive(Default)]
struct Table {
    by_ino: HashMap<Ino, Inode>,
    by_key: HashMap<(u32, u64), Ino>,
}

enum Handle {
    File(File),
    /// A directory's entries as listed at opendir (`.` and `..` first).
    Dir(Vec<(std::ffi::OsString, FileKind, u64)>),
}

pub struct Passthrough {
    /// SOURCE as given, for the volume queries that take a path.
    source: PathBuf,
    inodes: Mutex<Table>,
    next_ino: AtomicU64,
    handles: Mutex<HashMap<Fh, Arc<Handle>>>,
    next_fh: AtomicU64,
}

fn kind_of(attributes: u32) -> FileKind {
    if attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0 {
        FileKind::Symlink
    } else if attributes & FILE_ATTRIBUTE_DIRECTORY != 0 {
        FileKind::Dir
    } else {
        FileKind::File
    }
}

fn system_time(filetime: i64) -> SystemTime {
    let t = filetime - FILETIME_UNIX;
    let d = Duration::from_nanos(t.unsigned_abs().saturating_mul(100));
    if t >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

fn filetime(t: SystemTime) -> i64 {
    let hundreds = |d: Duration| i64::try_from(d.as_nanos() / 100).unwrap_or(i64::MAX);
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => FILETIME_UNIX.saturating_add(hundreds(d)),
        Err(e) => FILETIME_UNIX.saturating_sub(hundreds(e.duration())),
    }
    // 0 means "leave it" to SetFileInformationByHandle: 1601 itself
    // cannot be set.
    .max(1)
}

/// The POSIX permission bits Windows's attributes stand for: what the
/// directory replica's `Meta` makes up too.
fn perm_of(kind: FileKind, attributes: u32) -> u16 {
    let base = match kind {
        FileKind::Dir => 0o755,
        FileKind::Symlink => 0o777,
        _ => 0o644,
    };
    if attributes & FILE_ATTRIBUTE_READONLY != 0 && kind != FileKind::Symlink {
        base & !0o222
    } else {
        base
    }
}

fn attr_of(i: &Info, ino: Ino) -> Attr {
    let kind = kind_of(i.attributes);
    Attr {
        ino,
        size: i.size,
        blocks: i.allocated.div_ceil(512),
        atime: system_time(i.accessed),
        mtime: system_time(i.written),
        ctime: system_time(i.changed),
        kind,
        perm: perm_of(kind, i.attributes),
        nlink: i.nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
    }
}

fn time_of(filetime: i64) -> Time {
    let t = filetime - FILETIME_UNIX;
    Time {
        sec: t.div_euclid(10_000_000),
        nsec: (t.rem_euclid(10_000_000) * 100) as u32,
    }
}

/// A node's attributes in the replicas' shape.
pub fn meta_of(i: &Info) -> Meta {
    let kind = kind_of(i.attributes);
    let ftype = match kind {
        FileKind::Dir => 0o040000,
        FileKind::Symlink => 0o120000,
        _ => 0o100000,
    };
    Meta {
        kind: match kind {
            FileKind::Dir => Kind::Dir,
            FileKind::Symlink => Kind::Symlink,
            _ => Kind::File,
        },
        mode: ftype | u32::from(perm_of(kind, i.attributes)),
        uid: 0,
        gid: 0,
        size: i.size,
        blocks: i.allocated.div_ceil(512),
        nlink: u64::from(i.nlink),
        dev: u64::from(i.volume),
        ino: i.index,
        rdev: 0,
        atime: time_of(i.accessed),
        mtime: time_of(i.written),
        ctime: time_of(i.changed),
    }
}

/// One path component as UTF-16, or ERROR_INVALID_NAME: never `.`, `..`,
/// a separator, a stream name (`:`) or NUL, which would let a name reach
/// past its directory.
fn component(name: &OsStr) -> io::Result<Vec<u16>> {
    let w = nt::units(name);
    let dot = u16::from(b'.');
    let bad = w.is_empty()
        || w == [dot]
        || w == [dot, dot]
        || w.iter().any(|&c| {
            c == 0 || c == u16::from(b'\\') || c == u16::from(b'/') || c == u16::from(b':')
        });
    if bad {
        return Err(io::Error::from_raw_os_error(ERROR_INVALID_NAME));
    }
    Ok(w)
}

fn open_how(access: u32, disposition: u32, options: u32) -> OpenHow {
    OpenHow {
        access,
        disposition,
        options,
        attributes: 0,
    }
}

/// What an inode's own handle is opened with: attributes only, which no
/// other opener's share mode can conflict with.
const META: u32 = FILE_READ_ATTRIBUTES;

impl Passthrough {
    /// Opens SOURCE (the same call on every OS; Windows's core has no
    /// options).
    pub fn with_defaults(source: &Path) -> io::Result<Self> {
        Self::new(source)
    }

    /// Opens SOURCE. Fails with an error naming SOURCE if it cannot be
    /// opened as a directory.
    pub fn new(source: &Path) -> io::Result<Self> {
        let root = nt::open_dir(source)
            .map_err(|e| context(format_args!("open source {}", source.display()), e))?;
        let info = nt::info(&root)
            .map_err(|e| context(format_args!("stat source {}", source.display()), e))?;
        if kind_of(info.attributes) != FileKind::Dir {
            return Err(context(
                format_args!("source {}", source.display()),
                io::Error::from_raw_os_error(ERROR_DIRECTORY),
            ));
        }
        let key = (info.volume, info.index);
        let mut table = Table::default();
        table.by_key.insert(key, ROOT_INO);
        table.by_ino.insert(
            ROOT_INO,
            Inode {
                node: Arc::new(Node {
                    handle: root,
                    kind: FileKind::Dir,
                }),
                key,
                // The root is never forgotten.
                nlookup: u64::MAX / 2,
            },
        );
        Ok(Passthrough {
            source: source.to_path_buf(),
            inodes: Mutex::new(table),
            next_ino: AtomicU64::new(ROOT_INO + 1),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        })
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.inodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn node(&self, ino: Ino) -> io::Result<Arc<Node>> {
        self.table()
            .by_ino
            .get(&ino)
            .map(|i| Arc::clone(&i.node))
            .ok_or_else(|| io::Error::from_raw_os_error(ERROR_INVALID_HANDLE))
    }

    fn dir(&self, ino: Ino) -> io::Result<Arc<Node>> {
        let n = self.node(ino)?;
        match n.kind {
            FileKind::Dir => Ok(n),
            FileKind::Symlink => Err(io::Error::from_raw_os_error(ERROR_CANT_RESOLVE_FILENAME)),
            _ => Err(io::Error::from_raw_os_error(ERROR_DIRECTORY)),
        }
    }

    /// Enters the file `handle` (attributes access) is open on into the
    /// table, or counts one more lookup of the inode it already is.
    fn enter(&self, handle: File) -> io::Result<Entry> {
        let info = nt::info(&handle)?;
        let key = (info.volume, info.index);
        let mut t = self.table();
        let ino = match t.by_key.get(&key).copied() {
            Some(ino) => {
                if let Some(i) = t.by_ino.get_mut(&ino) {
                    i.nlookup += 1;
                }
                ino
            }
            None => {
                let ino = self.next_ino.fetch_add(1, Ordering::Relaxed);
                t.by_key.insert(key, ino);
                t.by_ino.insert(
                    ino,
                    Inode {
                        node: Arc::new(Node {
                            handle,
                            kind: kind_of(info.attributes),
                        }),
                        key,
                        nlookup: 1,
                    },
                );
                ino
            }
        };
        Ok(Entry {
            attr: attr_of(&info, ino),
        })
    }

    fn child(&self, parent: Ino, name: &OsStr, how: OpenHow) -> io::Result<(File, bool)> {
        let p = self.dir(parent)?;
        nt::open_at(&p.handle, &component(name)?, how)
    }

    fn add_handle(&self, h: Handle) -> Fh {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(h));
        fh
    }

    fn handle(&self, fh: Fh) -> io::Result<Arc<Handle>> {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(ERROR_INVALID_HANDLE))
    }

    fn file(&self, fh: Fh) -> io::Result<Arc<Handle>> {
        let h = self.handle(fh)?;
        match *h {
            Handle::File(_) => Ok(h),
            Handle::Dir(_) => Err(io::Error::from_raw_os_error(ERROR_INVALID_HANDLE)),
        }
    }

    fn drop_handle(&self, fh: Fh) {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh);
    }

    fn remove(&self, parent: Ino, name: &OsStr, dir: bool) -> io::Result<()> {
        let opts = if dir {
            FILE_DIRECTORY_FILE
        } else {
            FILE_NON_DIRECTORY_FILE
        };
        let (f, _) = self.child(parent, name, open_how(DELETE | META, FILE_OPEN, opts))?;
        nt::delete(&f)
    }
}

fn as_file(h: &Handle) -> &File {
    match h {
        Handle::File(f) => f,
        // `file()` hands out file handles only.
        Handle::Dir(_) => unreachable!("a directory handle where a file handle was checked"),
    }
}

/// A handle the core gave out (caching is WinFsp's own affair);
/// `created` when this call made the name.
fn opened(fh: Fh, created: bool) -> Opened {
    Opened {
        fh,
        keep_cache: false,
        uncached: false,
        created,
    }
}

fn data_access(flags: i32) -> u32 {
    match flags & ACCMODE {
        libc::O_WRONLY => FILE_GENERIC_WRITE | FILE_READ_ATTRIBUTES,
        libc::O_RDWR => FILE_GENERIC_READ | FILE_GENERIC_WRITE,
        _ => FILE_GENERIC_READ,
    }
}

impl Vfs for Passthrough {
    fn lookup(&self, _ctx: &Ctx, parent: Ino, name: &OsStr) -> io::Result<Entry> {
        let (f, _) = self.child(parent, name, open_how(META, FILE_OPEN, 0))?;
        self.enter(f)
    }

    fn forget(&self, ino: Ino, nlookup: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut t = self.table();
        let gone = match t.by_ino.get_mut(&ino) {
            Some(i) => {
                i.nlookup = i.nlookup.saturating_sub(nlookup);
                (i.nlookup == 0).then_some(i.key)
            }
            None => None,
        };
        if let Some(key) = gone {
            t.by_ino.remove(&ino);
            t.by_key.remove(&key);
        }
    }

    fn getattr(&self, _ctx: &Ctx, ino: Ino, fh: Option<Fh>) -> io::Result<Attr> {
        if let Some(h) = fh.and_then(|fh| self.file(fh).ok()) {
            return Ok(attr_of(&nt::info(as_file(&h))?, ino));
        }
        Ok(attr_of(&self.node(ino)?.info()?, ino))
    }

    fn setattr(&self, ctx: &Ctx, ino: Ino, fh: Option<Fh>, set: &SetAttr) -> io::Result<Attr> {
        let node = self.node(ino)?;
        if set.uid.is_some() || set.gid.is_some() {
            return Err(not_supported());
        }
        if let Some(size) = set.size {
            let open = fh.and_then(|fh| self.file(fh).ok());
            match open.as_deref().map(as_file) {
                Some(f) if f.set_len(size).is_ok() => {}
                _ => node.reopen(FILE_WRITE_DATA)?.set_len(size)?,
            }
        }
        if set.mode.is_some() || set.atime.is_some() || set.mtime.is_some() {
            let f = node.reopen(FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES)?;
            let now = SystemTime::now();
            let when = |t: Option<SetTime>| match t {
                None => 0,
                Some(SetTime::Now) => filetime(now),
                Some(SetTime::At(t)) => filetime(t),
            };
            let attributes = match set.mode {
                None => 0,
                Some(mode) => {
                    let old = nt::info(&f)?.attributes;
                    let new = if mode & 0o222 == 0 {
                        old | FILE_ATTRIBUTE_READONLY
                    } else {
                        old & !FILE_ATTRIBUTE_READONLY
                    };
                    if new == 0 { FILE_ATTRIBUTE_NORMAL } else { new }
                }
            };
            nt::set_basic(&f, attributes, when(set.atime), when(set.mtime))?;
        }
        self.getattr(ctx, ino, fh)
    }

    fn readlink(&self, _ctx: &Ctx, ino: Ino) -> io::Result<Vec<u8>> {
        let node = self.node(ino)?;
        Ok(crate::sys::name_bytes(&nt::read_symlink(&node.handle)?))
    }

    fn mknod(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        _rdev: u64,
    ) -> io::Result<Entry> {
        if mode & crate::sys::S_IFMT != 0o100000 {
            return Err(not_supported());
        }
        let (e, opened) = self.create(ctx, parent, name, mode, libc::O_EXCL)?;
        self.drop_handle(opened.fh);
        Ok(e)
    }

    fn mkdir(&self, _ctx: &Ctx, parent: Ino, name: &OsStr, _mode: u32) -> io::Result<Entry> {
        let (f, _) = self.child(
            parent,
            name,
            open_how(META, FILE_CREATE, FILE_DIRECTORY_FILE),
        )?;
        self.enter(f)
    }

    fn unlink(&self, _ctx: &Ctx, parent: Ino, name: &OsStr) -> io::Result<()> {
        self.remove(parent, name, false)
    }

    fn rmdir(&self, _ctx: &Ctx, parent: Ino, name: &OsStr) -> io::Result<()> {
        self.remove(parent, name, true)
    }

    fn symlink(
        &self,
        _ctx: &Ctx,
        _parent: Ino,
        _name: &OsStr,
        _target: &Path,
    ) -> io::Result<Entry> {
        Err(not_supported())
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
        if flags & RENAME_EXCHANGE != 0 {
            return Err(not_supported());
        }
        let to = self.dir(new_parent)?;
        let to_name = component(new_name)?;
        let (f, _) = self.child(parent, name, open_how(DELETE | META, FILE_OPEN, 0))?;
        nt::rename_at(&f, &to.handle, &to_name, flags & RENAME_NOREPLACE == 0)
    }

    fn link(&self, ctx: &Ctx, ino: Ino, new_parent: Ino, new_name: &OsStr) -> io::Result<Entry> {
        let node = self.node(ino)?;
        let to = self.dir(new_parent)?;
        nt::link_at(&node.handle, &to.handle, &component(new_name)?)?;
        self.lookup(ctx, new_parent, new_name)
    }

    fn open(&self, _ctx: &Ctx, ino: Ino, flags: i32) -> io::Result<Opened> {
        let node = self.node(ino)?;
        if node.kind == FileKind::Dir {
            return Err(io::Error::from(io::ErrorKind::IsADirectory));
        }
        let f = node.reopen(data_access(flags))?;
        if flags & libc::O_TRUNC != 0 && flags & ACCMODE != libc::O_RDONLY {
            f.set_len(0)?;
        }
        Ok(opened(self.add_handle(Handle::File(f)), false))
    }

    fn create(
        &self,
        _ctx: &Ctx,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> io::Result<(Entry, Opened)> {
        let disposition = if flags & libc::O_EXCL != 0 {
            FILE_CREATE
        } else if flags & libc::O_TRUNC != 0 {
            FILE_OVERWRITE_IF
        } else {
            FILE_OPEN_IF
        };
        let mut how = open_how(
            FILE_GENERIC_READ | FILE_GENERIC_WRITE,
            disposition,
            FILE_NON_DIRECTORY_FILE,
        );
        how.attributes = if mode & 0o222 == 0 {
            FILE_ATTRIBUTE_READONLY
        } else {
            FILE_ATTRIBUTE_NORMAL
        };
        let (f, created) = self.child(parent, name, how)?;
        let entry = self.enter(nt::reopen(&f, META)?)?;
        Ok((entry, opened(self.add_handle(Handle::File(f)), created)))
    }

    fn read(
        &self,
        _ctx: &Ctx,
        _ino: Ino,
        fh: Fh,
        offset: u64,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        let h = self.file(fh)?;
        let f = as_file(&h);
        let mut done = 0;
        while done < buf.len() {
            match f.seek_read(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                // Reading at or past the end.
                Err(e) if e.raw_os_error() == Some(38 /* ERROR_HANDLE_EOF */) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write(&self, _ctx: &Ctx, _ino: Ino, fh: Fh, offset: u64, data: &[u8]) -> io::Result<usize> {
        let h = self.file(fh)?;
        let f = as_file(&h);
        let mut done = 0;
        while done < data.len() {
            match f.seek_write(&data[done..], offset + done as u64)? {
                0 => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                n => done += n,
            }
        }
        Ok(done)
    }

    fn flush(&self, _ctx: &Ctx, _ino: Ino, _fh: Fh) -> io::Result<()> {
        Ok(())
    }

    fn release(&self, _ctx: &Ctx, _ino: Ino, fh: Fh) -> io::Result<()> {
        self.drop_handle(fh);
        Ok(())
    }

    fn fsync(&self, _ctx: &Ctx, _ino: Ino, fh: Fh, datasync: bool) -> io::Result<()> {
        let h = self.file(fh)?;
        if datasync {
            as_file(&h).sync_data()
        } else {
            as_file(&h).sync_all()
        }
    }

    fn opendir(&self, _ctx: &Ctx, ino: Ino, _flags: i32) -> io::Result<Opened> {
        let node = self.dir(ino)?;
        let listing = node.reopen(FILE_LIST_DIRECTORY)?;
        let mut entries = vec![
            (".".into(), FileKind::Dir, 0),
            ("..".into(), FileKind::Dir, 0),
        ];
        entries.extend(nt::list(&listing)?.into_iter().map(
            |Listed {
                 name,
                 attributes,
                 file_id,
             }| (name, kind_of(attributes), file_id),
        ));
        Ok(opened(self.add_handle(Handle::Dir(entries)), false))
    }

    fn readdir(
        &self,
        _ctx: &Ctx,
        _ino: Ino,
        fh: Fh,
        offset: u64,
        add: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> io::Result<()> {
        let h = self.handle(fh)?;
        let Handle::Dir(entries) = &*h else {
            return Err(io::Error::from_raw_os_error(ERROR_DIRECTORY));
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (name, kind, file_id)) in entries.iter().enumerate().skip(start) {
            let full = add(DirEntry {
                ino: *file_id,
                offset: i as u64 + 1,
                kind: *kind,
                name,
            });
            if full {
                break;
            }
        }
        Ok(())
    }

    fn releasedir(&self, _ctx: &Ctx, _ino: Ino, fh: Fh) -> io::Result<()> {
        self.drop_handle(fh);
        Ok(())
    }

    fn fsyncdir(&self, _ctx: &Ctx, _ino: Ino, _fh: Fh, _datasync: bool) -> io::Result<()> {
        Ok(())
    }

    fn statfs(&self, _ctx: &Ctx, _ino: Ino) -> io::Result<StatFs> {
        let (total, free, avail) = nt::disk_space(&self.source)?;
        let bsize = 4096u64;
        Ok(StatFs {
            blocks: total / bsize,
            bfree: free / bsize,
            bavail: avail / bsize,
            files: 0,
            ffree: 0,
            bsize: bsize as u32,
            namelen: 255,
            frsize: bsize as u32,
        })
    }

    fn setxattr(&self, _: &Ctx, _: Ino, _: &OsStr, _: &[u8], _: i32) -> io::Result<()> {
        Err(not_supported())
    }

    fn getxattr(&self, _: &Ctx, _: Ino, _: &OsStr, _: u32) -> io::Result<XattrReply> {
        Err(not_supported())
    }

    fn listxattr(&self, _: &Ctx, _: Ino, size: u32) -> io::Result<XattrReply> {
        // No extended attributes: an empty list.
        Ok(if size == 0 {
            XattrReply::Size(0)
        } else {
            XattrReply::Data(Vec::new())
        })
    }

    fn removexattr(&self, _: &Ctx, _: Ino, _: &OsStr) -> io::Result<()> {
        Err(not_supported())
    }

    fn access(&self, _ctx: &Ctx, ino: Ino, _mask: i32) -> io::Result<()> {
        // The ACLs are checked by the opens themselves.
        self.node(ino).map(|_| ())
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
        if mode != 0 {
            return Err(not_supported());
        }
        let h = self.file(fh)?;
        let f = as_file(&h);
        let end = offset.saturating_add(length);
        if nt::info(f)?.size < end {
            f.set_len(end)?;
        }
        Ok(())
    }

    fn lseek(&self, _: &Ctx, _: Ino, _: Fh, _: i64, _: i32) -> io::Result<i64> {
        Err(not_supported())
    }

    fn copy_file_range(
        &self,
        _: &Ctx,
        _: Ino,
        _: Fh,
        _: u64,
        _: Ino,
        _: Fh,
        _: u64,
        _: u64,
    ) -> io::Result<usize> {
        Err(not_supported())
    }

    fn identity(&self, ino: Ino) -> Option<crate::sys::Identity> {
        self.node(ino).ok()
    }

    fn inode_count(&self) -> usize {
        self.table().by_ino.len()
    }
}

#[cfg(test)]
mod tests;
