//! Directories and nodes for the replicas and `verify`, by path: std's
//! calls where they do what the Unix wrappers do (stat, open, create,
//! remove, rename, links, times, listing), and an Unsupported error naming
//! the call where Windows has no such thing yet (owners, POSIX modes
//! beyond read-only, device nodes, extended attributes, `syncfs`).

use std::ffi::{OsStr, OsString};
use std::fs::{File, FileTimes, Metadata, OpenOptions};
use std::io;
use std::net::TcpStream;
use std::os::windows::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::sys::{Access, Errno, Identity, Kind, Meta, Time};

/// `FILE_FLAG_BACKUP_SEMANTICS`: lets `CreateFileW` open a directory.
const FILE_FLAG_BACKUP_SEMANTICS: u32 = 0x0200_0000;
/// `FILE_FLAG_OPEN_REPARSE_POINT`: a symlink's own, not its target.
const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;

/// The error for a call Windows has no equivalent of here yet.
fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{what}: not supported on Windows yet"),
    )
}

impl Errno {
    /// Whether `e` is this OS error (by its kind: Windows's codes differ).
    pub fn is(self, e: &io::Error) -> bool {
        let kind = e.kind();
        match self {
            Errno::Exist => kind == io::ErrorKind::AlreadyExists,
            Errno::IsDir => kind == io::ErrorKind::IsADirectory,
            Errno::NoEnt => kind == io::ErrorKind::NotFound,
            Errno::NotDir => kind == io::ErrorKind::NotADirectory,
            Errno::NotEmpty => kind == io::ErrorKind::DirectoryNotEmpty,
            Errno::Stale => kind == io::ErrorKind::StaleNetworkFileHandle,
            Errno::NotSup => kind == io::ErrorKind::Unsupported,
            Errno::Loop | Errno::NoData => false,
        }
    }

    /// An error of this kind.
    pub fn error(self) -> io::Error {
        let kind = match self {
            Errno::Exist => io::ErrorKind::AlreadyExists,
            Errno::IsDir => io::ErrorKind::IsADirectory,
            Errno::NoEnt => io::ErrorKind::NotFound,
            Errno::NotDir => io::ErrorKind::NotADirectory,
            Errno::NotEmpty => io::ErrorKind::DirectoryNotEmpty,
            Errno::Stale => io::ErrorKind::StaleNetworkFileHandle,
            Errno::NotSup => io::ErrorKind::Unsupported,
            Errno::Loop => return io::Error::other("too many levels of symbolic links"),
            Errno::NoData => return io::Error::other("no such attribute"),
        };
        io::Error::from(kind)
    }
}

fn time(t: io::Result<SystemTime>) -> Time {
    match t.map(|t| t.duration_since(UNIX_EPOCH)) {
        Ok(Ok(d)) => Time {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        },
        Ok(Err(before)) => {
            let d = before.duration();
            let (sec, nsec) = (d.as_secs() as i64, d.subsec_nanos());
            if nsec == 0 {
                Time { sec: -sec, nsec: 0 }
            } else {
                Time {
                    sec: -sec - 1,
                    nsec: 1_000_000_000 - nsec,
                }
            }
        }
        Err(_) => Time::default(),
    }
}

fn system_time(t: Time) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + Duration::from_nanos(t.nsec.into())
    }
}

impl From<&Metadata> for Meta {
    /// What std tells: the kind, a POSIX mode made up from it and the
    /// read-only attribute, the size and times; no owner, one link, no
    /// inode number (std has no stable accessor for the file index).
    fn from(m: &Metadata) -> Meta {
        let ft = m.file_type();
        let (kind, base) = if ft.is_symlink() {
            (Kind::Symlink, 0o120777)
        } else if ft.is_dir() {
            (Kind::Dir, 0o040755)
        } else {
            (Kind::File, 0o100644)
        };
        let mode = if m.permissions().readonly() && kind != Kind::Symlink {
            base & !0o222
        } else {
            base
        };
        let size = m.len();
        Meta {
            kind,
            mode,
            uid: 0,
            gid: 0,
            size,
            blocks: size.div_ceil(512),
            nlink: 1,
            dev: 0,
            ino: 0,
            rdev: 0,
            atime: time(m.accessed()),
            mtime: time(m.modified()),
            ctime: time(m.created()),
        }
    }
}

/// A directory, by path.
pub struct Dir {
    path: PathBuf,
}

/// A node of any kind, by path (not followed if a symlink).
pub struct Node {
    path: PathBuf,
}

/// Sets the access and modification times of `path` itself.
fn set_times(path: &Path, m: &Meta) -> io::Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)?;
    let times = FileTimes::new()
        .set_accessed(system_time(m.atime))
        .set_modified(system_time(m.mtime));
    f.set_times(times)
}

/// Applies a POSIX mode as far as Windows has one: the read-only attribute.
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    let mut p = std::fs::symlink_metadata(path)?.permissions();
    p.set_readonly(mode & 0o222 == 0);
    std::fs::set_permissions(path, p)
}

/// What changed since the last [`Dir::syncfs`]: files written and
/// directories whose entries or attributes changed. Windows lets only an
/// administrator flush a whole volume, so `syncfs` flushes these one by
/// one instead (`FlushFileBuffers`), as fsync would.
static DIRTY: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn dirty(path: PathBuf) {
    let mut d = DIRTY.lock().unwrap_or_else(|p| p.into_inner());
    if d.last() != Some(&path) {
        d.push(path);
    }
}

/// Flushes `path` (a file's data and metadata, or a directory's entries);
/// gone since is fine.
fn flush(path: &Path) -> io::Result<()> {
    let opened = OpenOptions::new()
        .write(true)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path);
    match opened {
        Ok(f) => f.sync_all(),
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound) => Ok(()),
        // A read-only file: its data was flushed when last written.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(e),
    }
}

fn with_path(what: &str, path: &Path, e: io::Error) -> io::Error {
    crate::error::context(format_args!("{what} {}", path.display()), e)
}

impl Dir {
    /// Opens the directory `path` (following a symlink, as named).
    ///
    /// # Errors
    ///
    /// The OS error of `GetFileAttributesEx`, naming `path`; NotADirectory
    /// if it is not one.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let m = std::fs::metadata(path).map_err(|e| with_path("open", path, e))?;
        if !m.is_dir() {
            return Err(with_path(
                "open",
                path,
                io::Error::from(io::ErrorKind::NotADirectory),
            ));
        }
        Ok(Dir {
            path: path.to_path_buf(),
        })
    }

    /// Another handle on the same directory.
    ///
    /// # Errors
    ///
    /// None.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            path: self.path.clone(),
        })
    }

    /// A node handle on this directory itself.
    ///
    /// # Errors
    ///
    /// None.
    pub fn node(&self) -> io::Result<Node> {
        Ok(Node {
            path: self.path.clone(),
        })
    }

    /// The child directory `name`, not following a symlink.
    ///
    /// # Errors
    ///
    /// The OS error of the stat; NotADirectory for what is not one.
    pub fn openat_dir(&self, name: &OsStr) -> io::Result<Dir> {
        let path = self.path.join(name);
        if !std::fs::symlink_metadata(&path)?.is_dir() {
            return Err(io::Error::from(io::ErrorKind::NotADirectory));
        }
        Ok(Dir { path })
    }

    /// The child `name` of any kind, not following a symlink.
    ///
    /// # Errors
    ///
    /// The OS error of the stat (NotFound if missing).
    pub fn openat_node(&self, name: &OsStr) -> io::Result<Node> {
        let path = self.path.join(name);
        std::fs::symlink_metadata(&path)?;
        Ok(Node { path })
    }

    /// Opens the file `name` for I/O; `create` makes it if missing (the
    /// mode applies as the read-only attribute only).
    ///
    /// # Errors
    ///
    /// The OS error of `CreateFileW`.
    pub fn openat(&self, name: &OsStr, access: Access, create: Option<u32>) -> io::Result<File> {
        let path = self.path.join(name);
        let mut o = OpenOptions::new();
        match access {
            Access::Read => o.read(true),
            Access::Write => o.write(true),
            Access::ReadWrite => o.read(true).write(true),
        };
        o.create(create.is_some())
            .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT);
        let f = o.open(&path)?;
        if access != Access::Read {
            dirty(path);
            if create.is_some() {
                dirty(self.path.clone());
            }
        }
        Ok(f)
    }

    /// The directory's attributes.
    ///
    /// # Errors
    ///
    /// The OS error of the stat.
    pub fn fstat(&self) -> io::Result<Meta> {
        Ok(Meta::from(&std::fs::metadata(&self.path)?))
    }

    /// The attributes of `name`, not following a symlink.
    ///
    /// # Errors
    ///
    /// The OS error of the stat (NotFound if missing).
    pub fn statat(&self, name: &OsStr) -> io::Result<Meta> {
        Ok(Meta::from(&std::fs::symlink_metadata(
            self.path.join(name),
        )?))
    }

    /// The names in the directory, sorted.
    ///
    /// # Errors
    ///
    /// The OS error of `FindFirstFile`/`FindNextFile`.
    pub fn list(&self) -> io::Result<Vec<OsString>> {
        let mut names = std::fs::read_dir(&self.path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    /// `CreateDirectoryW` of `name` (the mode applies as the read-only
    /// attribute only).
    ///
    /// # Errors
    ///
    /// The OS error of `CreateDirectoryW`.
    pub fn mkdirat(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        let path = self.path.join(name);
        std::fs::create_dir(&path)?;
        dirty(self.path.clone());
        if mode & 0o222 == 0 {
            set_mode(&path, mode)?;
        }
        Ok(())
    }

    /// FIFOs, sockets and device nodes: none on Windows.
    ///
    /// # Errors
    ///
    /// Always Unsupported.
    pub fn mknodat(&self, _name: &OsStr, kind: Kind, _mode: u32, _rdev: u64) -> io::Result<()> {
        Err(unsupported(&format!("mknod of a {kind:?}")))
    }

    /// `CreateSymbolicLinkW` (a file symlink; needs the privilege or
    /// developer mode).
    ///
    /// # Errors
    ///
    /// The OS error of `CreateSymbolicLinkW`.
    pub fn symlinkat(&self, target: &[u8], name: &OsStr) -> io::Result<()> {
        std::os::windows::fs::symlink_file(path_from_bytes(target), self.path.join(name))?;
        dirty(self.path.clone());
        Ok(())
    }

    /// A symlink's target.
    ///
    /// # Errors
    ///
    /// The OS error of reading the reparse point.
    pub fn readlinkat(&self, name: &OsStr) -> io::Result<Vec<u8>> {
        let t = std::fs::read_link(self.path.join(name))?;
        Ok(name_bytes(t.as_os_str()))
    }

    /// `CreateHardLinkW`: a new name of the file `name`.
    ///
    /// # Errors
    ///
    /// The OS error of `CreateHardLinkW`.
    pub fn linkat(&self, name: &OsStr, to_dir: &Dir, to_name: &OsStr) -> io::Result<()> {
        std::fs::hard_link(self.path.join(name), to_dir.path.join(to_name))?;
        dirty(to_dir.path.clone());
        Ok(())
    }

    /// `DeleteFileW` of what is not a directory.
    ///
    /// # Errors
    ///
    /// The OS error of `DeleteFileW`.
    pub fn unlinkat(&self, name: &OsStr) -> io::Result<()> {
        let path = self.path.join(name);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            return Err(io::Error::from(io::ErrorKind::IsADirectory));
        }
        std::fs::remove_file(path)?;
        dirty(self.path.clone());
        Ok(())
    }

    /// `RemoveDirectoryW`.
    ///
    /// # Errors
    ///
    /// The OS error of `RemoveDirectoryW`.
    pub fn rmdirat(&self, name: &OsStr) -> io::Result<()> {
        std::fs::remove_dir(self.path.join(name))?;
        dirty(self.path.clone());
        Ok(())
    }

    /// `MoveFileExW(REPLACE_EXISTING)`; of Linux's `renameat2` flags only
    /// none.
    ///
    /// # Errors
    ///
    /// The OS error of `MoveFileExW`; Unsupported for any flag.
    pub fn renameat2(
        &self,
        name: &OsStr,
        to_dir: &Dir,
        to_name: &OsStr,
        flags: u32,
    ) -> io::Result<()> {
        if flags != 0 {
            return Err(unsupported(&format!("rename with flags {flags:#x}")));
        }
        std::fs::rename(self.path.join(name), to_dir.path.join(to_name))?;
        dirty(self.path.clone());
        dirty(to_dir.path.clone());
        Ok(())
    }

    /// The directory's access and modification times become `m`'s.
    ///
    /// # Errors
    ///
    /// The OS error of `SetFileTime`.
    pub fn futimens(&self, m: &Meta) -> io::Result<()> {
        set_times(&self.path, m)
    }

    /// The access and modification times of `name` (a symlink's own)
    /// become `m`'s.
    ///
    /// # Errors
    ///
    /// The OS error of `SetFileTime`.
    pub fn utimensat(&self, name: &OsStr, m: &Meta) -> io::Result<()> {
        set_times(&self.path.join(name), m)
    }

    /// Extended attributes: none on Windows (as a file system without
    /// them reports on Unix).
    ///
    /// # Errors
    ///
    /// None.
    pub fn llistxattrs_at(&self, _name: &OsStr) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(Vec::new())
    }

    /// Extended attributes are not kept on Windows.
    ///
    /// # Errors
    ///
    /// Always Unsupported.
    pub fn lsetxattr_at(&self, _name: &OsStr, _attr: &[u8], _value: &[u8]) -> io::Result<()> {
        Err(unsupported("lsetxattr"))
    }

    /// Extended attributes are not kept on Windows.
    ///
    /// # Errors
    ///
    /// Always Unsupported.
    pub fn lremovexattr_at(&self, _name: &OsStr, _attr: &[u8]) -> io::Result<()> {
        Err(unsupported("lremovexattr"))
    }

    /// Makes what was changed below this directory durable: each file
    /// written and each directory changed since the last call is flushed
    /// (Windows flushes a whole volume for administrators only).
    ///
    /// # Errors
    ///
    /// The first flush that fails; what was not flushed stays to flush
    /// next time.
    pub fn syncfs(&self) -> io::Result<()> {
        let todo: Vec<PathBuf> = {
            let mut d = DIRTY.lock().unwrap_or_else(|p| p.into_inner());
            let (mine, others) = d.drain(..).partition(|p| p.starts_with(&self.path));
            *d = others;
            mine
        };
        let mut seen = std::collections::HashSet::new();
        for (i, p) in todo.iter().enumerate() {
            if !seen.insert(p) {
                continue;
            }
            if let Err(e) = flush(p) {
                let mut d = DIRTY.lock().unwrap_or_else(|p| p.into_inner());
                d.extend(todo[i..].iter().cloned());
                return Err(with_path("flush", p, e));
            }
        }
        Ok(())
    }
}

impl Node {
    /// The node's attributes (a symlink's own).
    ///
    /// # Errors
    ///
    /// The OS error of the stat.
    pub fn fstat(&self) -> io::Result<Meta> {
        Ok(Meta::from(&std::fs::symlink_metadata(&self.path)?))
    }

    /// The node as a directory handle (for listing it).
    pub fn into_dir(self) -> Dir {
        Dir { path: self.path }
    }

    /// The target of the symlink the node is.
    ///
    /// # Errors
    ///
    /// The OS error of reading the reparse point.
    pub fn readlink(&self) -> io::Result<Vec<u8>> {
        Ok(name_bytes(std::fs::read_link(&self.path)?.as_os_str()))
    }

    /// POSIX owners: none on Windows.
    ///
    /// # Errors
    ///
    /// Always Unsupported.
    pub fn fchown(&self, uid: u32, gid: u32) -> io::Result<()> {
        Err(unsupported(&format!(
            "chown {} to {uid}:{gid}",
            self.path.display()
        )))
    }

    /// The mode as far as Windows has one: the read-only attribute.
    ///
    /// # Errors
    ///
    /// The OS error of `SetFileAttributesW`.
    pub fn fchmod(&self, mode: u32) -> io::Result<()> {
        set_mode(&self.path, mode)
    }

    /// The node's access and modification times become `m`'s.
    ///
    /// # Errors
    ///
    /// The OS error of `SetFileTime`.
    pub fn futimens(&self, m: &Meta) -> io::Result<()> {
        set_times(&self.path, m)
    }

    /// Extended attributes: none on Windows.
    ///
    /// # Errors
    ///
    /// None.
    pub fn listxattrs(&self) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(Vec::new())
    }

    /// Extended attributes are not kept on Windows.
    ///
    /// # Errors
    ///
    /// Always Unsupported.
    pub fn setxattr(&self, _attr: &[u8], _value: &[u8]) -> io::Result<()> {
        Err(unsupported("setxattr"))
    }

    /// Extended attributes are not kept on Windows.
    ///
    /// # Errors
    ///
    /// Always Unsupported.
    pub fn removexattr(&self, _attr: &[u8]) -> io::Result<()> {
        Err(unsupported("removexattr"))
    }
}

/// The attributes of `path`, following symlinks.
///
/// # Errors
///
/// The OS error of the stat.
pub fn stat(path: &Path) -> io::Result<Meta> {
    Ok(Meta::from(&std::fs::metadata(path)?))
}

/// The attributes of an open file.
///
/// # Errors
///
/// The OS error of `GetFileInformationByHandle`.
pub fn fstat(f: &File) -> io::Result<Meta> {
    Ok(Meta::from(&f.metadata()?))
}

/// `SetFileTime`: the access and modification times of `f` become `m`'s.
///
/// # Errors
///
/// The OS error of `SetFileTime`.
pub fn futimens(f: &File, m: &Meta) -> io::Result<()> {
    f.set_times(
        FileTimes::new()
            .set_accessed(system_time(m.atime))
            .set_modified(system_time(m.mtime)),
    )
}

/// `ReadFile` at `offset` (moves the file's cursor, which the callers do
/// not use).
///
/// # Errors
///
/// The OS error of `ReadFile`.
pub fn read_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    f.seek_read(buf, offset)
}

/// `ReadFile` at `offset` until `buf` is full.
///
/// # Errors
///
/// The OS error of `ReadFile`; UnexpectedEof if the file ends first.
pub fn read_exact_at(f: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match f.seek_read(buf, offset) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Linux's `fallocate` modes have no Windows counterpart here yet.
///
/// # Errors
///
/// Always Unsupported (which the replicas take as "the file system
/// cannot").
pub fn fallocate(_f: &File, mode: i32, _offset: u64, _len: u64) -> io::Result<()> {
    Err(unsupported(&format!("fallocate mode {mode:#x}")))
}

/// `FALLOC_FL_KEEP_SIZE`, in the journal's (Linux) mode bits.
pub const FALLOC_FL_KEEP_SIZE: i32 = 1;

/// `RENAME_EXCHANGE`, in the journal's (Linux `renameat2`) flags.
pub const RENAME_EXCHANGE: u32 = 2;

/// A device number's major part (Linux's encoding, as journaled).
pub fn major(rdev: u64) -> u32 {
    (((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0000_0fff)) as u32
}

/// A device number's minor part (Linux's encoding, as journaled).
pub fn minor(rdev: u64) -> u32 {
    (((rdev >> 12) & 0xffff_ff00) | (rdev & 0x0000_00ff)) as u32
}

/// A name's bytes (UTF-8; unpaired surrogates are replaced).
pub fn name_bytes(name: &OsStr) -> Vec<u8> {
    name.to_string_lossy().into_owned().into_bytes()
}

/// The path a name's bytes spell (UTF-8; invalid bytes are replaced).
pub fn path_from_bytes(b: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(b).into_owned())
}

/// Windows has no `TCP_QUICKACK`.
///
/// # Errors
///
/// Always Unsupported.
pub fn set_tcp_quickack(_s: &TcpStream) -> io::Result<()> {
    Err(unsupported("TCP_QUICKACK"))
}

/// Opens a SOURCE inode for reading.
///
/// # Errors
///
/// The OS error of `ReOpenFile`.
pub fn identity_open(id: &Identity) -> io::Result<File> {
    id.reopen(windows_sys::Win32::Storage::FileSystem::FILE_GENERIC_READ)
}

/// The attributes of a SOURCE inode.
///
/// # Errors
///
/// The OS error of the queries.
pub fn identity_fstat(id: &Identity) -> io::Result<Meta> {
    Ok(super::passthrough::meta_of(&id.info()?))
}

/// A SOURCE inode's attributes, `None` once it has no name left (deleted,
/// or delete-pending until its last handle closes).
///
/// # Errors
///
/// The OS error of the queries.
pub fn identity_stat(id: &Identity) -> io::Result<Option<Meta>> {
    let info = id.info()?;
    if info.delete_pending || info.nlink == 0 {
        return Ok(None);
    }
    Ok(Some(super::passthrough::meta_of(&info)))
}
