//! The WinFsp adapter: WinFsp's `FileSystemContext` over any [`Vfs`] (in
//! the mount, the recording layer over the Windows passthrough core), the
//! twin of the FUSE adapter (`sys::unix::fuse`). Translation only: WinFsp
//! names files by path, the `Vfs` by inode, so each request's path is
//! looked up one component at a time from the root, and the opened
//! inode's lookup is held until WinFsp closes the file. NTSTATUS codes
//! come from one function, [`status`]. No replication logic lives here:
//! every change is a `Vfs` call, which the recording layer journals.
//!
//! How WinFsp's requests map:
//!
//! | WinFsp | `Vfs` |
//! |---|---|
//! | `get_security_by_name`, `open` | `lookup` per component, `getattr`, `open` |
//! | `create` | `mkdir`, or `create` with O_EXCL (WinFsp asks only for new names) |
//! | `overwrite` | `setattr` size 0 (and the read-only attribute) |
//! | `write` (to EOF, constrained) | `getattr` for the size, `write` |
//! | `set_file_size` | `setattr` size |
//! | `set_basic_info` | `setattr` times and the read-only attribute |
//! | `set_delete` + `cleanup` with the delete flag | `unlink` / `rmdir` of the current name |
//! | `rename` (replace-if-exists) | `rename`, with RENAME_NOREPLACE unless replacing |
//! | `flush`, `read`, `read_directory` | `fsync`, `read`, `opendir`/`readdir`/`lookup` |
//! | `close` | `release`/`releasedir`, `forget` |
//!
//! Security descriptors are not mapped: every file reports one fixed
//! descriptor (full access for everyone, as a FAT volume behaves), and
//! `set_security` is refused, as the volume does not claim persistent ACLs.

#![allow(unsafe_code)]

use std::ffi::{OsStr, OsString, c_void};
use std::io;
use std::os::windows::ffi::{OsStrExt, OsStringExt};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use winfsp::U16CStr;
use winfsp::filesystem::{
    DirBuffer, DirInfo, DirMarker, FileInfo, FileSecurity, FileSystemContext,
    ModificationDescriptor, OpenFileInfo, VolumeInfo, WideNameInfo,
};
use winfsp::{FspError, constants::FspCleanupFlags};

use crate::fs::{Attr, Ctx, Fh, FileKind, Ino, ROOT_INO, SetAttr, SetTime, Vfs};

// NTSTATUS values (winnt.h / ntstatus.h).
pub const STATUS_OBJECT_NAME_NOT_FOUND: i32 = 0xC000_0034_u32 as i32;
pub const STATUS_OBJECT_PATH_NOT_FOUND: i32 = 0xC000_003A_u32 as i32;
pub const STATUS_OBJECT_NAME_INVALID: i32 = 0xC000_0033_u32 as i32;
pub const STATUS_OBJECT_NAME_COLLISION: i32 = 0xC000_0035_u32 as i32;
pub const STATUS_ACCESS_DENIED: i32 = 0xC000_0022_u32 as i32;
pub const STATUS_INVALID_HANDLE: i32 = 0xC000_0008_u32 as i32;
pub const STATUS_INVALID_PARAMETER: i32 = 0xC000_000D_u32 as i32;
pub const STATUS_NO_MEMORY: i32 = 0xC000_0017_u32 as i32;
pub const STATUS_SHARING_VIOLATION: i32 = 0xC000_0043_u32 as i32;
pub const STATUS_FILE_LOCK_CONFLICT: i32 = 0xC000_0054_u32 as i32;
pub const STATUS_END_OF_FILE: i32 = 0xC000_0011_u32 as i32;
pub const STATUS_DISK_FULL: i32 = 0xC000_007F_u32 as i32;
pub const STATUS_NOT_SUPPORTED: i32 = 0xC000_00BB_u32 as i32;
pub const STATUS_DIRECTORY_NOT_EMPTY: i32 = 0xC000_0101_u32 as i32;
pub const STATUS_NOT_A_DIRECTORY: i32 = 0xC000_0103_u32 as i32;
pub const STATUS_FILE_IS_A_DIRECTORY: i32 = 0xC000_00BA_u32 as i32;
pub const STATUS_NAME_TOO_LONG: i32 = 0xC000_0106_u32 as i32;
pub const STATUS_NOT_SAME_DEVICE: i32 = 0xC000_00D4_u32 as i32;
pub const STATUS_MEDIA_WRITE_PROTECTED: i32 = 0xC000_00A2_u32 as i32;
pub const STATUS_IO_TIMEOUT: i32 = 0xC000_00B5_u32 as i32;
pub const STATUS_REPARSE_POINT_NOT_RESOLVED: i32 = 0xC000_0280_u32 as i32;
pub const STATUS_BUFFER_OVERFLOW: i32 = 0x8000_0005_u32 as i32;
pub const STATUS_UNEXPECTED_IO_ERROR: i32 = 0xC000_00E9_u32 as i32;

const FILE_ATTRIBUTE_READONLY: u32 = 0x1;
const FILE_ATTRIBUTE_DIRECTORY: u32 = 0x10;
const FILE_ATTRIBUTE_NORMAL: u32 = 0x80;
const FILE_ATTRIBUTE_REPARSE_POINT: u32 = 0x400;
const INVALID_FILE_ATTRIBUTES: u32 = u32::MAX;
/// `CreateOptions` bit for a directory.
const FILE_DIRECTORY_FILE: u32 = 0x1;
/// Access rights that write data.
const FILE_WRITE_DATA: u32 = 0x2;
const FILE_APPEND_DATA: u32 = 0x4;
/// `renameat2`'s RENAME_NOREPLACE, as the `Vfs` carries it.
const RENAME_NOREPLACE: u32 = 1;

/// Between 1601-01-01 (FILETIME's epoch) and 1970-01-01, in 100 ns.
const FILETIME_UNIX: u64 = 116_444_736_000_000_000;

/// The one place an `io::Error` from the layers below becomes an NTSTATUS:
/// by its Win32 code when it has one (the Windows core's errors do, also
/// inside `error::context`), else by its kind.
pub fn status(e: &io::Error) -> FspError {
    FspError::NTSTATUS(ntstatus_of(e))
}

fn ntstatus_of(e: &io::Error) -> i32 {
    if let Some(s) = crate::error::os_code(e).and_then(win32_status) {
        return s;
    }
    use io::ErrorKind as K;
    match e.kind() {
        K::NotFound => STATUS_OBJECT_NAME_NOT_FOUND,
        K::PermissionDenied => STATUS_ACCESS_DENIED,
        K::AlreadyExists => STATUS_OBJECT_NAME_COLLISION,
        K::InvalidInput => STATUS_INVALID_PARAMETER,
        K::InvalidFilename => STATUS_OBJECT_NAME_INVALID,
        K::NotADirectory => STATUS_NOT_A_DIRECTORY,
        K::IsADirectory => STATUS_FILE_IS_A_DIRECTORY,
        K::DirectoryNotEmpty => STATUS_DIRECTORY_NOT_EMPTY,
        K::Unsupported => STATUS_NOT_SUPPORTED,
        K::StorageFull => STATUS_DISK_FULL,
        K::OutOfMemory => STATUS_NO_MEMORY,
        K::ReadOnlyFilesystem => STATUS_MEDIA_WRITE_PROTECTED,
        K::CrossesDevices => STATUS_NOT_SAME_DEVICE,
        K::TimedOut => STATUS_IO_TIMEOUT,
        _ => STATUS_UNEXPECTED_IO_ERROR,
    }
}

/// The NTSTATUS a Win32 error code stands for, for the codes the core
/// and the journal produce.
fn win32_status(code: i32) -> Option<i32> {
    Some(match code {
        2 => STATUS_OBJECT_NAME_NOT_FOUND,         // ERROR_FILE_NOT_FOUND
        3 => STATUS_OBJECT_PATH_NOT_FOUND,         // ERROR_PATH_NOT_FOUND
        5 => STATUS_ACCESS_DENIED,                 // ERROR_ACCESS_DENIED
        6 => STATUS_INVALID_HANDLE,                // ERROR_INVALID_HANDLE
        8 | 14 => STATUS_NO_MEMORY,                // ERROR_NOT_ENOUGH_MEMORY, OUTOFMEMORY
        17 => STATUS_NOT_SAME_DEVICE,              // ERROR_NOT_SAME_DEVICE
        19 => STATUS_MEDIA_WRITE_PROTECTED,        // ERROR_WRITE_PROTECT
        32 => STATUS_SHARING_VIOLATION,            // ERROR_SHARING_VIOLATION
        33 => STATUS_FILE_LOCK_CONFLICT,           // ERROR_LOCK_VIOLATION
        38 => STATUS_END_OF_FILE,                  // ERROR_HANDLE_EOF
        39 | 112 => STATUS_DISK_FULL,              // ERROR_HANDLE_DISK_FULL, DISK_FULL
        50 => STATUS_NOT_SUPPORTED,                // ERROR_NOT_SUPPORTED
        80 | 183 => STATUS_OBJECT_NAME_COLLISION,  // ERROR_FILE_EXISTS, ALREADY_EXISTS
        87 => STATUS_INVALID_PARAMETER,            // ERROR_INVALID_PARAMETER
        123 => STATUS_OBJECT_NAME_INVALID,         // ERROR_INVALID_NAME
        145 => STATUS_DIRECTORY_NOT_EMPTY,         // ERROR_DIR_NOT_EMPTY
        206 => STATUS_NAME_TOO_LONG,               // ERROR_FILENAME_EXCED_RANGE
        267 => STATUS_NOT_A_DIRECTORY,             // ERROR_DIRECTORY
        1460 => STATUS_IO_TIMEOUT,                 // ERROR_TIMEOUT
        1921 => STATUS_REPARSE_POINT_NOT_RESOLVED, // ERROR_CANT_RESOLVE_FILENAME
        _ => return None,
    })
}

fn nt(code: i32) -> FspError {
    FspError::NTSTATUS(code)
}

/// Requests carry no Unix credentials; the core acts as the mounting user.
const CTX: Ctx = Ctx {
    uid: 0,
    gid: 0,
    pid: 0,
};

/// An open file or directory: its inode (one lookup held until close) and,
/// for a file, the `Vfs` handle.
pub struct FileCtx {
    ino: Ino,
    dir: bool,
    fh: Option<Fh>,
    /// A directory's listing for WinFsp's paging (filled on the first read).
    listing: DirBuffer,
}

impl FileCtx {
    pub fn ino(&self) -> Ino {
        self.ino
    }
}

/// The adapter over a `Vfs`. Requests run concurrently: each walk holds a
/// lookup of the directory it is in until it has the child, so no other
/// request's forget can drop that directory meanwhile.
pub struct WinFspAdapter<V: Vfs> {
    vfs: Arc<V>,
}

/// Splits WinFsp's `\a\b\c` into its components.
fn components(path: &U16CStr) -> Vec<OsString> {
    path.as_slice()
        .split(|&c| c == u16::from(b'\\'))
        .filter(|c| !c.is_empty())
        .map(OsString::from_wide)
        .collect()
}

fn filetime(t: SystemTime) -> u64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => FILETIME_UNIX.saturating_add(u64::try_from(d.as_nanos() / 100).unwrap_or(0)),
        Err(e) => {
            FILETIME_UNIX.saturating_sub(u64::try_from(e.duration().as_nanos() / 100).unwrap_or(0))
        }
    }
}

fn system_time(filetime: u64) -> SystemTime {
    let hundreds = i128::from(filetime) - i128::from(FILETIME_UNIX);
    let d = std::time::Duration::from_nanos((hundreds.unsigned_abs() * 100) as u64);
    if hundreds >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

/// The Windows attributes the POSIX shape stands for.
pub fn attributes_of(a: &Attr) -> u32 {
    let mut attrs = match a.kind {
        FileKind::Dir => FILE_ATTRIBUTE_DIRECTORY,
        FileKind::Symlink => FILE_ATTRIBUTE_REPARSE_POINT,
        _ => 0,
    };
    if a.perm & 0o222 == 0 && a.kind != FileKind::Symlink {
        attrs |= FILE_ATTRIBUTE_READONLY;
    }
    if attrs == 0 {
        FILE_ATTRIBUTE_NORMAL
    } else {
        attrs
    }
}

/// Fills WinFsp's file information from an inode's attributes.
pub fn fill(info: &mut FileInfo, a: &Attr) {
    info.file_attributes = attributes_of(a);
    info.reparse_tag = 0;
    info.allocation_size = a.blocks * 512;
    info.file_size = a.size;
    info.creation_time = filetime(a.ctime.min(a.mtime));
    info.last_access_time = filetime(a.atime);
    info.last_write_time = filetime(a.mtime);
    info.change_time = filetime(a.ctime);
    info.index_number = a.ino;
    info.hard_links = 0;
    info.ea_size = 0;
}

/// The one security descriptor every file reports: owner and group the
/// Administrators, full access for everyone (what a FAT volume gives).
fn descriptor() -> &'static [u8] {
    static SD: OnceLock<Vec<u8>> = OnceLock::new();
    SD.get_or_init(|| {
        use windows_sys::Win32::Foundation::LocalFree;
        use windows_sys::Win32::Security::Authorization::ConvertStringSecurityDescriptorToSecurityDescriptorW;
        let sddl: Vec<u16> = "O:BAG:BAD:P(A;OICI;FA;;;WD)"
            .encode_utf16()
            .chain(Some(0))
            .collect();
        let mut sd: *mut c_void = std::ptr::null_mut();
        let mut len = 0u32;
        // SAFETY: the SDDL string is NUL-terminated; the out-parameters are
        // live locals. On success `sd` is a LocalAlloc'd self-relative
        // descriptor of `len` bytes, copied out and freed below.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(sddl.as_ptr(), 1, &mut sd, &mut len)
        };
        if ok == 0 || sd.is_null() {
            return Vec::new();
        }
        // SAFETY: `sd` points to `len` initialised bytes (see above).
        let bytes = unsafe { std::slice::from_raw_parts(sd.cast::<u8>(), len as usize) }.to_vec();
        // SAFETY: `sd` was allocated by the call above with LocalAlloc and
        // is not used after this.
        unsafe { LocalFree(sd) };
        bytes
    })
}

/// Copies the descriptor into WinFsp's buffer; its size either way.
fn put_descriptor(buf: Option<&mut [c_void]>) -> winfsp::Result<u64> {
    let sd = descriptor();
    if let Some(buf) = buf {
        if buf.len() < sd.len() {
            return Err(nt(STATUS_BUFFER_OVERFLOW));
        }
        // SAFETY: `buf` is WinFsp's buffer of `buf.len()` bytes, at least
        // `sd.len()` as checked; the two do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(sd.as_ptr(), buf.as_mut_ptr().cast::<u8>(), sd.len());
        }
    }
    Ok(sd.len() as u64)
}

impl<V: Vfs> WinFspAdapter<V> {
    pub fn new(vfs: Arc<V>) -> Self {
        WinFspAdapter { vfs }
    }

    pub fn vfs(&self) -> &Arc<V> {
        &self.vfs
    }

    /// Looks `names` up from the root, holding one lookup of the last
    /// inode (none for the root), giving back the others'.
    fn walk(&self, names: &[OsString]) -> io::Result<Ino> {
        let mut at = ROOT_INO;
        for (i, name) in names.iter().enumerate() {
            let found = self.vfs.lookup(&CTX, at, name);
            if at != ROOT_INO {
                self.vfs.forget(at, 1);
            }
            match found {
                Ok(e) => at = e.ino(),
                // A missing directory on the way is a missing path.
                Err(e) if i + 1 < names.len() && e.kind() == io::ErrorKind::NotFound => {
                    return Err(io::Error::from_raw_os_error(3));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(at)
    }

    /// Gives back a lookup [`walk`](Self::walk) held.
    fn done(&self, ino: Ino) {
        if ino != ROOT_INO {
            self.vfs.forget(ino, 1);
        }
    }

    /// The inode of `path`'s parent (one lookup held) and the last name.
    fn parent_of(&self, path: &U16CStr) -> io::Result<(Ino, OsString)> {
        let mut names = components(path);
        let Some(last) = names.pop() else {
            // The root has no parent and no name to change.
            return Err(io::Error::from_raw_os_error(5));
        };
        Ok((self.walk(&names)?, last))
    }

    fn attr(&self, ctx: &FileCtx) -> io::Result<Attr> {
        self.vfs.getattr(&CTX, ctx.ino, ctx.fh)
    }

    /// Opens `path`: the attributes WinFsp reports, and the context it
    /// hands back with each request on the file.
    pub fn open_path(&self, path: &U16CStr, granted_access: u32) -> io::Result<(FileCtx, Attr)> {
        let ino = self.walk(&components(path))?;
        let opened = (|| {
            let attr = self.vfs.getattr(&CTX, ino, None)?;
            let dir = attr.kind == FileKind::Dir;
            let fh = if dir {
                None
            } else {
                let flags = if granted_access & (FILE_WRITE_DATA | FILE_APPEND_DATA) != 0 {
                    libc::O_RDWR
                } else {
                    libc::O_RDONLY
                };
                Some(self.vfs.open(&CTX, ino, flags)?.fh)
            };
            Ok((
                FileCtx {
                    ino,
                    dir,
                    fh,
                    listing: DirBuffer::new(),
                },
                attr,
            ))
        })();
        if opened.is_err() {
            self.done(ino);
        }
        opened
    }

    /// Creates `path` (WinFsp asks only when the name does not exist): a
    /// directory when `create_options` says so, else a file opened for
    /// writing; read-only when the attributes ask it.
    pub fn create_path(
        &self,
        path: &U16CStr,
        create_options: u32,
        file_attributes: u32,
    ) -> io::Result<(FileCtx, Attr)> {
        let (parent, name) = self.parent_of(path)?;
        let readonly = file_attributes != INVALID_FILE_ATTRIBUTES
            && file_attributes & FILE_ATTRIBUTE_READONLY != 0;
        let made = if create_options & FILE_DIRECTORY_FILE != 0 {
            self.vfs
                .mkdir(&CTX, parent, &name, if readonly { 0o555 } else { 0o755 })
                .map(|e| (e, None))
        } else {
            let mode = if readonly { 0o444 } else { 0o644 };
            self.vfs
                .create(
                    &CTX,
                    parent,
                    &name,
                    mode,
                    libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                )
                .map(|(e, o)| (e, Some(o.fh)))
        };
        self.done(parent);
        let (entry, fh) = made?;
        Ok((
            FileCtx {
                ino: entry.ino(),
                dir: entry.attr.kind == FileKind::Dir,
                fh,
                listing: DirBuffer::new(),
            },
            entry.attr,
        ))
    }

    /// Ends a context: its handle and its lookup.
    pub fn close_ctx(&self, ctx: FileCtx) {
        if let Some(fh) = ctx.fh {
            if let Err(e) = self.vfs.release(&CTX, ctx.ino, fh) {
                tracing::debug!("release inode {}: {e}", ctx.ino);
            }
        }
        self.done(ctx.ino);
    }

    /// Deletes `path`'s name, as cleanup does for a file marked for
    /// deletion.
    pub fn delete_path(&self, ctx: &FileCtx, path: &U16CStr) -> io::Result<()> {
        let (parent, name) = self.parent_of(path)?;
        let r = if ctx.dir {
            self.vfs.rmdir(&CTX, parent, &name)
        } else {
            self.vfs.unlink(&CTX, parent, &name)
        };
        self.done(parent);
        r
    }

    /// The entries of a directory, with the attributes WinFsp lists (`.`
    /// and `..` too, except at the root).
    pub fn entries(&self, ctx: &FileCtx) -> io::Result<Vec<(OsString, Attr)>> {
        let own = self.attr(ctx)?;
        let opened = self.vfs.opendir(&CTX, ctx.ino, 0)?;
        let mut names = Vec::new();
        let listed = self.vfs.readdir(&CTX, ctx.ino, opened.fh, 0, &mut |e| {
            names.push(e.name.to_os_string());
            false
        });
        let _ = self.vfs.releasedir(&CTX, ctx.ino, opened.fh);
        listed?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if name == "." || name == ".." {
                if ctx.ino != ROOT_INO {
                    out.push((name, own));
                }
                continue;
            }
            match self.vfs.lookup(&CTX, ctx.ino, &name) {
                Ok(e) => {
                    self.vfs.forget(e.ino(), 1);
                    out.push((name, e.attr));
                }
                // Gone since the listing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn set(&self, ctx: &FileCtx, set: &SetAttr, info: &mut FileInfo) -> winfsp::Result<()> {
        let a = self
            .vfs
            .setattr(&CTX, ctx.ino, ctx.fh, set)
            .map_err(|e| status(&e))?;
        fill(info, &a);
        Ok(())
    }

    /// The mode that keeps the kind's bits and sets or clears write.
    fn mode_for(a: &Attr, readonly: bool) -> u32 {
        let base: u32 = if a.kind == FileKind::Dir {
            0o755
        } else {
            0o644
        };
        if readonly { base & !0o222 } else { base }
    }
}

impl<V: Vfs> FileSystemContext for WinFspAdapter<V> {
    type FileContext = FileCtx;

    fn get_security_by_name(
        &self,
        file_name: &U16CStr,
        security_descriptor: Option<&mut [c_void]>,
        _resolve: impl FnOnce(&U16CStr) -> Option<FileSecurity>,
    ) -> winfsp::Result<FileSecurity> {
        let ino = self.walk(&components(file_name)).map_err(|e| status(&e))?;
        let attr = self.vfs.getattr(&CTX, ino, None);
        self.done(ino);
        let attr = attr.map_err(|e| status(&e))?;
        Ok(FileSecurity {
            reparse: false,
            sz_security_descriptor: put_descriptor(security_descriptor)?,
            attributes: attributes_of(&attr),
        })
    }

    fn open(
        &self,
        file_name: &U16CStr,
        _create_options: u32,
        granted_access: u32,
        file_info: &mut OpenFileInfo,
    ) -> winfsp::Result<FileCtx> {
        let (ctx, attr) = self
            .open_path(file_name, granted_access)
            .map_err(|e| status(&e))?;
        fill(file_info.as_mut(), &attr);
        Ok(ctx)
    }

    fn close(&self, context: FileCtx) {
        self.close_ctx(context);
    }

    fn create(
        &self,
        file_name: &U16CStr,
        create_options: u32,
        _granted_access: u32,
        file_attributes: u32,
        _security_descriptor: Option<&[c_void]>,
        _allocation_size: u64,
        _extra_buffer: Option<&[u8]>,
        _extra_buffer_is_reparse_point: bool,
        file_info: &mut OpenFileInfo,
    ) -> winfsp::Result<FileCtx> {
        let (ctx, attr) = self
            .create_path(file_name, create_options, file_attributes)
            .map_err(|e| status(&e))?;
        fill(file_info.as_mut(), &attr);
        Ok(ctx)
    }

    fn cleanup(&self, context: &FileCtx, file_name: Option<&U16CStr>, flags: u32) {
        if !FspCleanupFlags::FspCleanupDelete.is_flagged(flags) {
            return;
        }
        let Some(name) = file_name else { return };
        if let Err(e) = self.delete_path(context, name) {
            tracing::warn!("delete {}: {e}", name.display());
        }
    }

    fn flush(&self, context: Option<&FileCtx>, file_info: &mut FileInfo) -> winfsp::Result<()> {
        let Some(ctx) = context else {
            // The whole volume: every write already went to SOURCE.
            return Ok(());
        };
        if let Some(fh) = ctx.fh {
            self.vfs
                .fsync(&CTX, ctx.ino, fh, false)
                .map_err(|e| status(&e))?;
        }
        fill(file_info, &self.attr(ctx).map_err(|e| status(&e))?);
        Ok(())
    }

    fn get_file_info(&self, context: &FileCtx, file_info: &mut FileInfo) -> winfsp::Result<()> {
        fill(file_info, &self.attr(context).map_err(|e| status(&e))?);
        Ok(())
    }

    fn get_security(
        &self,
        _context: &FileCtx,
        security_descriptor: Option<&mut [c_void]>,
    ) -> winfsp::Result<u64> {
        put_descriptor(security_descriptor)
    }

    fn set_security(
        &self,
        _context: &FileCtx,
        _security_information: u32,
        _modification_descriptor: ModificationDescriptor,
    ) -> winfsp::Result<()> {
        Err(nt(STATUS_NOT_SUPPORTED))
    }

    fn overwrite(
        &self,
        context: &FileCtx,
        file_attributes: u32,
        replace_file_attributes: bool,
        _allocation_size: u64,
        _extra_buffer: Option<&[u8]>,
        file_info: &mut FileInfo,
    ) -> winfsp::Result<()> {
        let a = self.attr(context).map_err(|e| status(&e))?;
        let readonly = file_attributes & FILE_ATTRIBUTE_READONLY != 0;
        let was = a.perm & 0o222 == 0;
        let mode = (replace_file_attributes && readonly != was
            || !replace_file_attributes && readonly && !was)
            .then(|| Self::mode_for(&a, readonly));
        let set = SetAttr {
            size: Some(0),
            mode,
            ..SetAttr::default()
        };
        self.set(context, &set, file_info)
    }

    fn read_directory(
        &self,
        context: &FileCtx,
        _pattern: Option<&U16CStr>,
        marker: DirMarker,
        buffer: &mut [u8],
    ) -> winfsp::Result<u32> {
        // A fresh listing when reading from the start; the buffer keeps it
        // for the pages after (acquire fails when it is already filled).
        if let Ok(lock) = context.listing.acquire(marker.is_none(), None) {
            let entries = self.entries(context).map_err(|e| status(&e))?;
            let mut info: DirInfo = DirInfo::new();
            for (name, attr) in entries {
                info.reset();
                info.set_name(&name)?;
                fill(info.file_info_mut(), &attr);
                lock.write(&mut info)?;
            }
        }
        Ok(context.listing.read(marker, buffer))
    }

    fn rename(
        &self,
        _context: &FileCtx,
        file_name: &U16CStr,
        new_file_name: &U16CStr,
        replace_if_exists: bool,
    ) -> winfsp::Result<()> {
        let (from, name) = self.parent_of(file_name).map_err(|e| status(&e))?;
        let to = self.parent_of(new_file_name);
        let r = to.and_then(|(to, new_name)| {
            let flags = if replace_if_exists {
                0
            } else {
                RENAME_NOREPLACE
            };
            let r = self.vfs.rename(&CTX, from, &name, to, &new_name, flags);
            self.done(to);
            r
        });
        self.done(from);
        r.map_err(|e| status(&e))
    }

    fn set_basic_info(
        &self,
        context: &FileCtx,
        file_attributes: u32,
        _creation_time: u64,
        last_access_time: u64,
        last_write_time: u64,
        _last_change_time: u64,
        file_info: &mut FileInfo,
    ) -> winfsp::Result<()> {
        let a = self.attr(context).map_err(|e| status(&e))?;
        let mode = (file_attributes != INVALID_FILE_ATTRIBUTES && file_attributes != 0)
            .then_some(file_attributes & FILE_ATTRIBUTE_READONLY != 0)
            .filter(|&ro| ro != (a.perm & 0o222 == 0))
            .map(|ro| Self::mode_for(&a, ro));
        let time = |t: u64| (t != 0 && t != u64::MAX).then(|| SetTime::At(system_time(t)));
        let set = SetAttr {
            mode,
            atime: time(last_access_time),
            mtime: time(last_write_time),
            ..SetAttr::default()
        };
        if set == SetAttr::default() {
            fill(file_info, &a);
            return Ok(());
        }
        self.set(context, &set, file_info)
    }

    fn set_delete(
        &self,
        context: &FileCtx,
        _file_name: &U16CStr,
        delete_file: bool,
    ) -> winfsp::Result<()> {
        if delete_file && context.dir {
            let entries = self.entries(context).map_err(|e| status(&e))?;
            if entries.iter().any(|(n, _)| n != "." && n != "..") {
                return Err(nt(STATUS_DIRECTORY_NOT_EMPTY));
            }
        }
        Ok(())
    }

    fn set_file_size(
        &self,
        context: &FileCtx,
        new_size: u64,
        set_allocation_size: bool,
        file_info: &mut FileInfo,
    ) -> winfsp::Result<()> {
        let a = self.attr(context).map_err(|e| status(&e))?;
        // An allocation size below the end of file cuts the file there;
        // above it, there is nothing to record (space is the OS's affair).
        if set_allocation_size && new_size >= a.size {
            fill(file_info, &a);
            return Ok(());
        }
        let set = SetAttr {
            size: Some(new_size),
            ..SetAttr::default()
        };
        self.set(context, &set, file_info)
    }

    fn read(&self, context: &FileCtx, buffer: &mut [u8], offset: u64) -> winfsp::Result<u32> {
        let fh = context.fh.ok_or(nt(STATUS_FILE_IS_A_DIRECTORY))?;
        let n = self
            .vfs
            .read(&CTX, context.ino, fh, offset, buffer)
            .map_err(|e| status(&e))?;
        if n == 0 && !buffer.is_empty() {
            return Err(nt(STATUS_END_OF_FILE));
        }
        Ok(n as u32)
    }

    fn write(
        &self,
        context: &FileCtx,
        buffer: &[u8],
        offset: u64,
        write_to_eof: bool,
        constrained_io: bool,
        file_info: &mut FileInfo,
    ) -> winfsp::Result<u32> {
        let fh = context.fh.ok_or(nt(STATUS_FILE_IS_A_DIRECTORY))?;
        let size = self.attr(context).map_err(|e| status(&e))?.size;
        let offset = if write_to_eof { size } else { offset };
        let mut data = buffer;
        if constrained_io {
            // Paging I/O never extends the file.
            if offset >= size {
                fill(file_info, &self.attr(context).map_err(|e| status(&e))?);
                return Ok(0);
            }
            let room = usize::try_from(size - offset).unwrap_or(usize::MAX);
            data = &data[..data.len().min(room)];
        }
        let n = self
            .vfs
            .write(&CTX, context.ino, fh, offset, data)
            .map_err(|e| status(&e))?;
        fill(file_info, &self.attr(context).map_err(|e| status(&e))?);
        Ok(n as u32)
    }

    fn get_volume_info(&self, out: &mut VolumeInfo) -> winfsp::Result<()> {
        let s = self.vfs.statfs(&CTX, ROOT_INO).map_err(|e| status(&e))?;
        let unit = u64::from(s.frsize.max(1));
        out.total_size = s.blocks * unit;
        out.free_size = s.bavail * unit;
        out.set_volume_label(OsStr::new(super::mounts::FS_NAME));
        Ok(())
    }
}

/// UTF-16 with a terminating NUL, as WinFsp passes names.
pub fn wide_path(s: &str) -> winfsp::U16CString {
    winfsp::U16CString::from_vec_truncate(OsStr::new(s).encode_wide().collect::<Vec<u16>>())
}

#[cfg(test)]
mod tests;
