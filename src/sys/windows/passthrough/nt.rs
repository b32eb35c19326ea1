//! The Windows passthrough core's system calls: every `unsafe` call the
//! core and the Windows helpers make, each wrapped in a safe function over
//! `std::fs::File` (an owned handle) that returns `io::Error`s carrying a
//! Win32 error code (NTSTATUS results are translated with
//! `RtlNtStatusToDosError`, so callers see one kind of code).
//!
//! Names are opened relative to a directory handle (`NtCreateFile` with
//! `RootDirectory`), always with `FILE_OPEN_REPARSE_POINT`: a reparse point
//! (symlink, junction, mount point) is opened itself, never followed.

#![allow(unsafe_code)]

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::mem::{size_of, zeroed};
use std::os::windows::ffi::{OsStrExt, OsStringExt};
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::path::{Path, PathBuf};

use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::Storage::FileSystem::{
    FILE_LINK_INFORMATION, FILE_RENAME_INFORMATION, FileLinkInformation, FileRenameInformation,
    NtCreateFile, NtSetInformationFile,
};
use windows_sys::Win32::Foundation::{
    ERROR_MORE_DATA, ERROR_NO_MORE_FILES, HANDLE, INVALID_HANDLE_VALUE, RtlNtStatusToDosError,
    UNICODE_STRING,
};
use windows_sys::Win32::Storage::FileSystem::{
    BY_HANDLE_FILE_INFORMATION, FILE_BASIC_INFO, FILE_DISPOSITION_INFO, FILE_ID_BOTH_DIR_INFO,
    FILE_STANDARD_INFO, FileBasicInfo, FileDispositionInfo, FileIdBothDirectoryInfo,
    FileIdBothDirectoryRestartInfo, FileStandardInfo, GetDiskFreeSpaceExW,
    GetFileInformationByHandle, GetFileInformationByHandleEx, GetVolumeInformationW,
    GetVolumePathNameW, ReOpenFile, SetFileInformationByHandle,
};
use windows_sys::Win32::System::IO::{DeviceIoControl, IO_STATUS_BLOCK};
use windows_sys::Win32::System::Ioctl::FSCTL_GET_REPARSE_POINT;
use windows_sys::Win32::System::WindowsProgramming::FILE_CREATED;

/// What `NtCreateFile` is asked for: an access mask, a create disposition
/// and create options (the `FILE_*` values of the native API).
#[derive(Clone, Copy, Debug)]
pub struct OpenHow {
    pub access: u32,
    pub disposition: u32,
    pub options: u32,
    /// File attributes for a created file (`FILE_ATTRIBUTE_*`).
    pub attributes: u32,
}

/// Everything `FILE_SHARE_*`: the core never restricts other openers
/// (WinFsp checks the client's share modes itself).
pub const SHARE_ALL: u32 = 7;

fn from_status(status: i32) -> io::Error {
    // SAFETY: RtlNtStatusToDosError only reads its integer argument.
    let code = unsafe { RtlNtStatusToDosError(status) };
    io::Error::from_raw_os_error(code as i32)
}

fn wide(s: &std::ffi::OsStr) -> Vec<u16> {
    s.encode_wide().collect()
}

fn wide_nul(p: &Path) -> Vec<u16> {
    p.as_os_str().encode_wide().chain(Some(0)).collect()
}

/// Opens `name` (one component, UTF-16, no separators: the caller checks)
/// relative to the directory `dir`; an empty `name` reopens `dir` itself.
/// Returns the handle and whether the call created the file.
///
/// # Errors
///
/// The OS error, e.g. ERROR_FILE_NOT_FOUND, ERROR_FILE_EXISTS,
/// ERROR_ACCESS_DENIED, ERROR_SHARING_VIOLATION.
pub fn open_at(dir: &File, name: &[u16], how: OpenHow) -> io::Result<(File, bool)> {
    let bytes = u16::try_from(name.len() * 2)
        .map_err(|_| io::Error::from_raw_os_error(206 /* ERROR_FILENAME_EXCED_RANGE */))?;
    let uname = UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        Buffer: name.as_ptr().cast_mut(),
    };
    let attrs = OBJECT_ATTRIBUTES {
        Length: size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: dir.as_raw_handle() as HANDLE,
        ObjectName: &uname,
        // Names compare as NTFS compares them: case-insensitively.
        Attributes: windows_sys::Win32::Foundation::OBJ_CASE_INSENSITIVE,
        SecurityDescriptor: std::ptr::null(),
        SecurityQualityOfService: std::ptr::null(),
    };
    let mut handle: HANDLE = std::ptr::null_mut();
    // SAFETY: IO_STATUS_BLOCK is plain data; all zeroes is a valid value.
    let mut iosb: IO_STATUS_BLOCK = unsafe { zeroed() };
    // SAFETY: every pointer is to a live local for the duration of the
    // call: `uname`'s buffer borrows `name`, `attrs` borrows `uname` and
    // `dir`'s handle, which `dir` keeps open; the out-parameters are ours.
    let status = unsafe {
        NtCreateFile(
            &mut handle,
            how.access | windows_sys::Win32::Storage::FileSystem::SYNCHRONIZE,
            &attrs,
            &mut iosb,
            std::ptr::null(),
            how.attributes,
            SHARE_ALL,
            how.disposition,
            how.options
                | windows_sys::Wdk::Storage::FileSystem::FILE_OPEN_REPARSE_POINT
                | windows_sys::Wdk::Storage::FileSystem::FILE_SYNCHRONOUS_IO_NONALERT
                | windows_sys::Wdk::Storage::FileSystem::FILE_OPEN_FOR_BACKUP_INTENT,
            std::ptr::null(),
            0,
        )
    };
    if status < 0 {
        return Err(from_status(status));
    }
    // SAFETY: NtCreateFile succeeded, so `handle` is a new handle that
    // nothing else owns.
    let file = File::from(unsafe { OwnedHandle::from_raw_handle(handle as RawHandle) });
    Ok((file, iosb.Information == FILE_CREATED as usize))
}

/// Opens the directory `path` (following links, as a user-given path
/// is), for use as a root of relative opens.
///
/// # Errors
///
/// The OS error of `CreateFileW`.
pub fn open_dir(path: &Path) -> io::Result<File> {
    use std::os::windows::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .access_mode(
            windows_sys::Win32::Storage::FileSystem::FILE_LIST_DIRECTORY
                | windows_sys::Win32::Storage::FileSystem::FILE_TRAVERSE
                | windows_sys::Win32::Storage::FileSystem::FILE_READ_ATTRIBUTES
                | windows_sys::Win32::Storage::FileSystem::FILE_WRITE_ATTRIBUTES
                | windows_sys::Win32::Storage::FileSystem::SYNCHRONIZE,
        )
        .share_mode(SHARE_ALL)
        .custom_flags(windows_sys::Win32::Storage::FileSystem::FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)
}

/// Another handle on the file `f` is open on, with `access`
/// (`ReOpenFile`; not following a reparse point).
///
/// # Errors
///
/// The OS error, e.g. ERROR_ACCESS_DENIED.
pub fn reopen(f: &File, access: u32) -> io::Result<File> {
    // SAFETY: `f`'s handle is open for the call; the flags are valid
    // ReOpenFile flags.
    let h = unsafe {
        ReOpenFile(
            f.as_raw_handle() as HANDLE,
            access,
            SHARE_ALL,
            windows_sys::Win32::Storage::FileSystem::FILE_FLAG_BACKUP_SEMANTICS
                | windows_sys::Win32::Storage::FileSystem::FILE_FLAG_OPEN_REPARSE_POINT,
        )
    };
    if h == INVALID_HANDLE_VALUE || h.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ReOpenFile succeeded: `h` is a new handle nothing else owns.
    Ok(File::from(unsafe {
        OwnedHandle::from_raw_handle(h as RawHandle)
    }))
}

/// A file's attributes as the handle-based queries report them.
#[derive(Clone, Copy, Debug)]
pub struct Info {
    pub volume: u32,
    pub index: u64,
    pub attributes: u32,
    pub size: u64,
    pub allocated: u64,
    pub nlink: u32,
    pub delete_pending: bool,
    /// FILETIMEs: 100 ns since 1601.
    pub created: i64,
    pub accessed: i64,
    pub written: i64,
    pub changed: i64,
}

fn get_ex<T>(f: &File, class: i32) -> io::Result<T> {
    // SAFETY: T is one of the plain-data FILE_*_INFO structs, for which
    // all zeroes is a valid value.
    let mut v: T = unsafe { zeroed() };
    // SAFETY: the buffer is a live T of the size passed, and `class` is
    // the information class whose answer is a T.
    let ok = unsafe {
        GetFileInformationByHandleEx(
            f.as_raw_handle() as HANDLE,
            class,
            (&raw mut v).cast(),
            size_of::<T>() as u32,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// The attributes of the file `f` is open on.
///
/// # Errors
///
/// The OS error of the queries.
pub fn info(f: &File) -> io::Result<Info> {
    // SAFETY: plain data; all zeroes is valid.
    let mut h: BY_HANDLE_FILE_INFORMATION = unsafe { zeroed() };
    // SAFETY: `h` is a live out-parameter; the handle is open.
    if unsafe { GetFileInformationByHandle(f.as_raw_handle() as HANDLE, &mut h) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let basic: FILE_BASIC_INFO = get_ex(f, FileBasicInfo)?;
    let std_info: FILE_STANDARD_INFO = get_ex(f, FileStandardInfo)?;
    Ok(Info {
        volume: h.dwVolumeSerialNumber,
        index: (u64::from(h.nFileIndexHigh) << 32) | u64::from(h.nFileIndexLow),
        attributes: basic.FileAttributes,
        size: u64::try_from(std_info.EndOfFile).unwrap_or(0),
        allocated: u64::try_from(std_info.AllocationSize).unwrap_or(0),
        nlink: std_info.NumberOfLinks,
        delete_pending: std_info.DeletePending,
        created: basic.CreationTime,
        accessed: basic.LastAccessTime,
        written: basic.LastWriteTime,
        changed: basic.ChangeTime,
    })
}

/// Sets attributes and times (`FileBasicInfo`); 0 leaves a field as it is
/// (and attributes 0 too: `FILE_ATTRIBUTE_NORMAL` is how to clear them).
///
/// # Errors
///
/// The OS error; the handle needs FILE_WRITE_ATTRIBUTES.
pub fn set_basic(f: &File, attributes: u32, accessed: i64, written: i64) -> io::Result<()> {
    let v = FILE_BASIC_INFO {
        CreationTime: 0,
        LastAccessTime: accessed,
        LastWriteTime: written,
        ChangeTime: 0,
        FileAttributes: attributes,
    };
    set_info(f, FileBasicInfo, &v)
}

fn set_info<T>(f: &File, class: i32, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live T of the size passed, the struct `class` takes.
    let ok = unsafe {
        SetFileInformationByHandle(
            f.as_raw_handle() as HANDLE,
            class,
            (v as *const T).cast(),
            size_of::<T>() as u32,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Deletes the name `f` was opened by (the handle needs DELETE access).
/// With POSIX semantics (`FileDispositionInfoEx`, Windows 10 1607 and
/// later, NTFS) the name goes at once even while other handles are open,
/// as unlink(2) does, and the read-only attribute does not stand in the
/// way; elsewhere the classic disposition marks it delete-pending until
/// the file's last handle closes.
///
/// # Errors
///
/// The OS error, e.g. ERROR_DIR_NOT_EMPTY for a directory with entries.
pub fn delete(f: &File) -> io::Result<()> {
    use windows_sys::Win32::Storage::FileSystem::{
        FILE_DISPOSITION_FLAG_DELETE, FILE_DISPOSITION_FLAG_IGNORE_READONLY_ATTRIBUTE,
        FILE_DISPOSITION_FLAG_POSIX_SEMANTICS, FILE_DISPOSITION_INFO_EX, FileDispositionInfoEx,
    };
    let posix = FILE_DISPOSITION_INFO_EX {
        Flags: FILE_DISPOSITION_FLAG_DELETE
            | FILE_DISPOSITION_FLAG_POSIX_SEMANTICS
            | FILE_DISPOSITION_FLAG_IGNORE_READONLY_ATTRIBUTE,
    };
    match set_info(f, FileDispositionInfoEx, &posix) {
        Ok(()) => Ok(()),
        // Not this Windows, or not this filesystem: the classic way.
        Err(e) if matches!(e.raw_os_error(), Some(1 | 50 | 87)) => set_info(
            f,
            FileDispositionInfo,
            &FILE_DISPOSITION_INFO { DeleteFile: true },
        ),
        Err(e) => Err(e),
    }
}

/// `FILE_RENAME_INFORMATION` and `FILE_LINK_INFORMATION` share a layout:
/// a flag word (a boolean `ReplaceIfExists` for the classic classes,
/// `FILE_RENAME_*` flags for the `Ex` ones), the target directory's
/// handle, then the name.
fn name_info(class: i32, f: &File, to_dir: &File, to_name: &[u16], flags: u32) -> io::Result<()> {
    let header = std::mem::offset_of!(FILE_RENAME_INFORMATION, FileName);
    debug_assert_eq!(
        header,
        std::mem::offset_of!(FILE_LINK_INFORMATION, FileName)
    );
    // A u64 buffer keeps the struct's 8-byte alignment; the length passed
    // is at least the declared struct's (a one-letter name is shorter).
    let len = (header + to_name.len() * 2).max(size_of::<FILE_RENAME_INFORMATION>());
    let mut buf = vec![0u64; len.div_ceil(8)];
    let info = buf.as_mut_ptr().cast::<FILE_RENAME_INFORMATION>();
    // SAFETY: `buf` is at least `len` bytes, 8-aligned, and holds a
    // FILE_RENAME_INFORMATION header followed by room for the name; the
    // fields are written through raw pointers (the name extends past the
    // declared one-element array).
    unsafe {
        (*info).Anonymous.Flags = flags;
        (*info).RootDirectory = to_dir.as_raw_handle() as HANDLE;
        (*info).FileNameLength = (to_name.len() * 2) as u32;
        std::ptr::copy_nonoverlapping(
            to_name.as_ptr(),
            (&raw mut (*info).FileName).cast::<u16>(),
            to_name.len(),
        );
    }
    // SAFETY: plain data; all zeroes is valid.
    let mut iosb: IO_STATUS_BLOCK = unsafe { zeroed() };
    // SAFETY: the buffer holds a complete information struct of `len`
    // bytes for `class`; both handles are open for the call.
    let status = unsafe {
        NtSetInformationFile(
            f.as_raw_handle() as HANDLE,
            &mut iosb,
            buf.as_ptr().cast(),
            len as u32,
            class,
        )
    };
    if status < 0 {
        return Err(from_status(status));
    }
    Ok(())
}

/// Renames the file `f` is open on (with DELETE access) to `to_name` in
/// `to_dir`, replacing what is there if `replace`. With POSIX semantics
/// (`FileRenameInformationEx`, Windows 10 1809 and later, NTFS) a file
/// still open elsewhere can be replaced, as rename(2) does; elsewhere the
/// classic rename, which refuses to replace an open file.
///
/// # Errors
///
/// The OS error, e.g. ERROR_ALREADY_EXISTS without `replace`.
pub fn rename_at(f: &File, to_dir: &File, to_name: &[u16], replace: bool) -> io::Result<()> {
    use windows_sys::Wdk::Storage::FileSystem::{
        FILE_RENAME_IGNORE_READONLY_ATTRIBUTE, FILE_RENAME_POSIX_SEMANTICS,
        FILE_RENAME_REPLACE_IF_EXISTS, FileRenameInformationEx,
    };
    let mut flags = FILE_RENAME_POSIX_SEMANTICS | FILE_RENAME_IGNORE_READONLY_ATTRIBUTE;
    if replace {
        flags |= FILE_RENAME_REPLACE_IF_EXISTS;
    }
    match name_info(FileRenameInformationEx, f, to_dir, to_name, flags) {
        Ok(()) => Ok(()),
        // ERROR_INVALID_FUNCTION, _NOT_SUPPORTED, _INVALID_PARAMETER: not
        // this Windows or not this filesystem.
        Err(e) if matches!(e.raw_os_error(), Some(1 | 50 | 87)) => name_info(
            FileRenameInformation,
            f,
            to_dir,
            to_name,
            u32::from(replace),
        ),
        Err(e) => Err(e),
    }
}

/// Makes `to_name` in `to_dir` another name of the file `f` is open on.
///
/// # Errors
///
/// The OS error, e.g. ERROR_ALREADY_EXISTS.
pub fn link_at(f: &File, to_dir: &File, to_name: &[u16]) -> io::Result<()> {
    name_info(FileLinkInformation, f, to_dir, to_name, 0)
}

/// One directory entry as listed.
#[derive(Clone, Debug)]
pub struct Listed {
    pub name: OsString,
    pub attributes: u32,
    pub file_id: u64,
}

/// Every entry of the directory `dir` is open on (FILE_LIST_DIRECTORY),
/// `.` and `..` left out, from the start whatever was read before.
///
/// # Errors
///
/// The OS error of the enumeration.
pub fn list(dir: &File) -> io::Result<Vec<Listed>> {
    let mut out = Vec::new();
    let mut buf = vec![0u64; 8192];
    let mut class = FileIdBothDirectoryRestartInfo;
    loop {
        // SAFETY: the buffer is live and of the size passed; the class
        // writes FILE_ID_BOTH_DIR_INFO records into it.
        let ok = unsafe {
            GetFileInformationByHandleEx(
                dir.as_raw_handle() as HANDLE,
                class,
                buf.as_mut_ptr().cast(),
                (buf.len() * 8) as u32,
            )
        };
        if ok == 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(c) if c == ERROR_NO_MORE_FILES as i32 => return Ok(out),
                Some(c) if c == ERROR_MORE_DATA as i32 => {
                    buf.resize(buf.len() * 2, 0);
                    continue;
                }
                _ => return Err(e),
            }
        }
        class = FileIdBothDirectoryInfo;
        let base = buf.as_ptr().cast::<u8>();
        let mut at = 0usize;
        loop {
            // SAFETY: the OS wrote a chain of records into `buf`, each
            // 8-aligned at `at`, whose NextEntryOffset links the next (0
            // ends the chain); the name's FileNameLength bytes follow the
            // header inside the buffer.
            let (next, name, attributes, file_id) = unsafe {
                let rec = base.add(at).cast::<FILE_ID_BOTH_DIR_INFO>();
                let len = (*rec).FileNameLength as usize / 2;
                let p = (&raw const (*rec).FileName).cast::<u16>();
                let name = std::slice::from_raw_parts(p, len).to_vec();
                (
                    (*rec).NextEntryOffset as usize,
                    name,
                    (*rec).FileAttributes,
                    (*rec).FileId as u64,
                )
            };
            if name != [u16::from(b'.')] && name != [u16::from(b'.'), u16::from(b'.')] {
                out.push(Listed {
                    name: OsString::from_wide(&name),
                    attributes,
                    file_id,
                });
            }
            if next == 0 {
                break;
            }
            at += next;
        }
    }
}

/// Space on the volume holding `path`: (total, free, free to the caller),
/// in bytes.
///
/// # Errors
///
/// The OS error of `GetDiskFreeSpaceExW`.
pub fn disk_space(path: &Path) -> io::Result<(u64, u64, u64)> {
    let p = wide_nul(path);
    let (mut avail, mut total, mut free) = (0u64, 0u64, 0u64);
    // SAFETY: `p` is NUL-terminated and live; the out-parameters are ours.
    if unsafe { GetDiskFreeSpaceExW(p.as_ptr(), &mut avail, &mut total, &mut free) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((total, free, avail))
}

/// The mount point `path` is on (`GetVolumePathNameW`), e.g. `C:\`.
///
/// # Errors
///
/// The OS error.
pub fn volume_path(path: &Path) -> io::Result<PathBuf> {
    let p = wide_nul(path);
    let mut out = vec![0u16; 1024];
    // SAFETY: `p` is NUL-terminated; `out` is live with the length given.
    if unsafe { GetVolumePathNameW(p.as_ptr(), out.as_mut_ptr(), out.len() as u32) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let n = out.iter().position(|&c| c == 0).unwrap_or(out.len());
    Ok(PathBuf::from(OsString::from_wide(&out[..n])))
}

/// The file system name of the volume whose root is `root` (e.g. "NTFS";
/// ours say "replicafs").
///
/// # Errors
///
/// The OS error of `GetVolumeInformationW`.
pub fn volume_fs_name(root: &Path) -> io::Result<String> {
    let p = wide_nul(root);
    let mut name = [0u16; 64];
    // SAFETY: `p` is NUL-terminated; `name` is live with the length given;
    // the other buffers are null with size 0, which the call allows.
    let ok = unsafe {
        GetVolumeInformationW(
            p.as_ptr(),
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            name.as_mut_ptr(),
            name.len() as u32,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let n = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    Ok(String::from_utf16_lossy(&name[..n]))
}

/// The target a symlink reparse point names (its print name, else its
/// substitute name), as the link itself stores it.
///
/// # Errors
///
/// The OS error of `FSCTL_GET_REPARSE_POINT`; ERROR_NOT_A_REPARSE_POINT
/// for other files, and InvalidData for a reparse point of another kind
/// or a malformed one.
pub fn read_symlink(f: &File) -> io::Result<OsString> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut got = 0u32;
    // SAFETY: the output buffer is live with the size given, the input
    // is empty; the call is synchronous (no OVERLAPPED).
    let ok = unsafe {
        DeviceIoControl(
            f.as_raw_handle() as HANDLE,
            FSCTL_GET_REPARSE_POINT,
            std::ptr::null(),
            0,
            buf.as_mut_ptr().cast(),
            buf.len() as u32,
            &mut got,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    parse_symlink(&buf[..got as usize])
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a symlink reparse point"))
}

/// REPARSE_DATA_BUFFER for IO_REPARSE_TAG_SYMLINK and MOUNT_POINT: tag,
/// length, reserved; then substitute and print names' offsets and
/// lengths (bytes into the path buffer), flags (symlinks only), the
/// UTF-16 path buffer.
fn parse_symlink(b: &[u8]) -> Option<OsString> {
    let u16_at = |i: usize| Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?));
    let tag = u32::from_le_bytes(b.get(0..4)?.try_into().ok()?);
    let path_buf = match tag {
        windows_sys::Win32::System::SystemServices::IO_REPARSE_TAG_SYMLINK => 20,
        windows_sys::Win32::System::SystemServices::IO_REPARSE_TAG_MOUNT_POINT => 16,
        _ => return None,
    };
    let (sub_off, sub_len) = (usize::from(u16_at(8)?), usize::from(u16_at(10)?));
    let (pr_off, pr_len) = (usize::from(u16_at(12)?), usize::from(u16_at(14)?));
    let (off, len) = if pr_len > 0 {
        (pr_off, pr_len)
    } else {
        (sub_off, sub_len)
    };
    let raw = b.get(path_buf + off..path_buf + off + len)?;
    let w: Vec<u16> = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    Some(OsString::from_wide(&w))
}

/// Whether this process runs under wine (its ntdll exports
/// `wine_get_version`), for messages and tests where wine's emulation
/// differs from Windows.
pub fn is_wine() -> bool {
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
    let ntdll: Vec<u16> = "ntdll.dll".encode_utf16().chain(Some(0)).collect();
    // SAFETY: the name is NUL-terminated; ntdll is always loaded, and the
    // module handle is not freed (GetModuleHandle takes no reference).
    let module = unsafe { GetModuleHandleW(ntdll.as_ptr()) };
    if module.is_null() {
        return false;
    }
    // SAFETY: `module` is a loaded module; the name is NUL-terminated.
    unsafe { GetProcAddress(module, c"wine_get_version".as_ptr().cast()) }.is_some()
}

/// A name as UTF-16 code units.
pub fn units(name: &std::ffi::OsStr) -> Vec<u16> {
    wide(name)
}
