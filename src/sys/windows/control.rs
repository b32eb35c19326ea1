//! The control channel's transport on Windows: a local named pipe, found
//! through a small file that holds its name.
//!
//! **Names.** [`ControlListener::bind`]`(path)` creates the pipe
//! `\\.\pipe\replicafs-HASH`, HASH being 16 hex digits of an FNV-1a hash
//! of `path`'s bytes, and writes that name into a regular file at `path`
//! (in the state dir, where Unix has its socket). The "link" in the
//! runtime dir ([`symlink`]) is another such file, a copy of the name:
//! real symlinks need a privilege on Windows, and a copy does the same
//! job here. [`ControlStream::connect`]`(path)` reads the name from the
//! file and opens the pipe. A name file holds nothing but a well-formed
//! name (`\\.\pipe\replicafs-` and 16 hex digits), so a file that was
//! tampered with cannot send a client to another kind of pipe or to a
//! remote path.
//!
//! **Instances.** A pipe serves one client per instance. The listener
//! keeps one instance waiting; [`ControlListener::incoming`] waits for a
//! client on it (`ConnectNamedPipe`), creates the next instance, and
//! yields the connected one as a [`ControlStream`]. So the pipe's name
//! never lapses while the listener lives.
//!
//! **Security.** Three layers, as the Unix socket's mode, private dir
//! and peer check:
//! - the pipe's DACL grants access to the current user (by SID: the
//!   Owner Rights SID would name Administrators for an elevated admin,
//!   whose objects Administrators own), SYSTEM and Administrators only,
//!   protected (nothing inherited); `PIPE_REJECT_REMOTE_CLIENTS` refuses
//!   clients from other machines;
//! - the first instance is created with `FILE_FLAG_FIRST_PIPE_INSTANCE`,
//!   and must be the pipe's only instance: if anyone (a squatter) made
//!   the name first, `bind` fails with `AddrInUse` instead of joining
//!   their pipe, and since the DACL keeps others from adding instances,
//!   every instance is ours;
//! - [`peer_allowed`] asks which process is at the other end
//!   (`GetNamedPipeClientProcessId` on the server's side,
//!   `GetNamedPipeServerProcessId` on the client's), reads the user from
//!   its token, and accepts our own user, LocalSystem, or a token in which
//!   Administrators is enabled (an elevated admin: Unix's root). When the
//!   peer's process or token cannot be read, it refuses (fails closed).
//!
//! A client opens the pipe with `SECURITY_IDENTIFICATION`: the server may
//! learn who the client is, but cannot act as it (impersonate it), so a
//! hostile server gains nothing from being connected to.
//!
//! **I/O.** Handles are opened overlapped so reads and writes can time
//! out like a socket's: each operation has its own event and OVERLAPPED;
//! it is waited for with the stream's timeout and, when that passes,
//! cancelled (`CancelIoEx`) and waited for again until the kernel is done
//! with it, then reported as `TimedOut`. Memory contract: no operation
//! outlives the call that started it, so the OVERLAPPED on the stack and
//! the caller's buffer stay valid for as long as the kernel may use them.
//! A pipe whose other end is closed reads as end of file, as a socket
//! does. `flush` has nothing to do: a write has completed when the pipe
//! holds its bytes, and closing an end does not discard what it wrote.
//!
//! **Wine** (the CI's Windows; the tests below run there): pipes,
//! overlapped I/O with its cancelling, and the peer's pid and token work
//! as on Windows. Wine 8 ignores `FILE_FLAG_FIRST_PIPE_INSTANCE` (it
//! joins an existing pipe), which the instance count catches, and does
//! not enforce a pipe's DACL (a client it excludes still connects), so
//! there the peer check is what refuses strangers.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS, ERROR_BROKEN_PIPE, ERROR_IO_PENDING, ERROR_NO_DATA,
    ERROR_OPERATION_ABORTED, ERROR_PIPE_BUSY, ERROR_PIPE_CONNECTED, ERROR_PIPE_NOT_CONNECTED,
    GENERIC_READ, GENERIC_WRITE, HANDLE, INVALID_HANDLE_VALUE, LocalFree, WAIT_OBJECT_0,
    WAIT_TIMEOUT,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{
    EqualSid, GetTokenInformation, IsWellKnownSid, PSID, SECURITY_ATTRIBUTES, SID_AND_ATTRIBUTES,
    TOKEN_GROUPS, TOKEN_INFORMATION_CLASS, TOKEN_QUERY, TOKEN_USER, TokenGroups, TokenUser,
    WinBuiltinAdministratorsSid, WinLocalSystemSid,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_FLAG_FIRST_PIPE_INSTANCE, FILE_FLAG_OVERLAPPED, OPEN_EXISTING,
    PIPE_ACCESS_DUPLEX, ReadFile, SECURITY_IDENTIFICATION, SECURITY_SQOS_PRESENT, WriteFile,
};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, CreateNamedPipeW, DisconnectNamedPipe, GetNamedPipeClientProcessId,
    GetNamedPipeHandleStateW, GetNamedPipeServerProcessId, PIPE_READMODE_BYTE,
    PIPE_REJECT_REMOTE_CLIENTS, PIPE_TYPE_BYTE, PIPE_UNLIMITED_INSTANCES, PIPE_WAIT,
    WaitNamedPipeW,
};
use windows_sys::Win32::System::Threading::{
    CreateEventW, GetCurrentProcess, INFINITE, OpenProcess, OpenProcessToken,
    PROCESS_QUERY_LIMITED_INFORMATION, WaitForSingleObject,
};
use windows_sys::core::BOOL;

use crate::error::context;

/// What every control pipe's name starts with.
const PREFIX: &str = r"\\.\pipe\replicafs-";
/// Each direction's buffer in the pipe; a request or reply line fits.
const BUFFER: u32 = 4096;
/// How long `connect` waits for an instance while all are busy.
const BUSY_WAIT: Duration = Duration::from_secs(5);
/// A name file is read up to this many bytes (a name is 35).
const NAME_FILE_MAX: u64 = 256;
/// `SE_GROUP_ENABLED` and `SE_GROUP_USE_FOR_DENY_ONLY` (winnt.h).
const SE_GROUP_ENABLED: u32 = 0x4;
const SE_GROUP_USE_FOR_DENY_ONLY: u32 = 0x10;

/// The pipe for a name file at `path`.
fn pipe_name(path: &Path) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in path.as_os_str().as_encoded_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{PREFIX}{h:016x}")
}

fn is_pipe_name(s: &str) -> bool {
    s.strip_prefix(PREFIX)
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `s` as a NUL-terminated UTF-16 string.
fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// Takes ownership of `h`, a handle a call just returned, or the call's
/// error when `h` is null or INVALID_HANDLE_VALUE (APIs differ in which
/// they fail with). Call it right after the call, before anything can
/// change the thread's last error.
fn owned(h: HANDLE) -> io::Result<OwnedHandle> {
    if h.is_null() || h == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `h` is a valid handle just returned to us, owned by nothing
    // else (callers never pass pseudo-handles, which are not closed).
    Ok(unsafe { OwnedHandle::from_raw_handle(h) })
}

/// Memory that Windows allocated for us with LocalAlloc; freed on drop.
struct Local(*mut core::ffi::c_void);

impl Drop for Local {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a call documented to return memory
        // to be freed with LocalFree, and is freed here only, once.
        unsafe { LocalFree(self.0) };
    }
}

/// Reads the pipe's name from the name file at `path`.
fn read_name(path: &Path) -> io::Result<String> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(NAME_FILE_MAX).read_to_end(&mut bytes))
        .map_err(|e| context(format_args!("read {}", path.display()), e))?;
    match std::str::from_utf8(&bytes).map(str::trim_end) {
        Ok(name) if is_pipe_name(name) => Ok(name.to_owned()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} does not name a replicafs control pipe (expected {PREFIX} and 16 hex digits)",
                path.display()
            ),
        )),
    }
}

/// Writes `name` into a new file at `path`; fails if `path` exists.
fn write_name(path: &Path, name: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(name.as_bytes()).inspect_err(|_| {
        drop(f);
        let _ = std::fs::remove_file(path);
    })
}

/// Runs one overlapped operation: `start` issues it (ReadFile, WriteFile
/// or ConnectNamedPipe with the OVERLAPPED it is given, and its result
/// returned), and this waits up to `timeout` milliseconds (INFINITE: no
/// limit) for it to end. Returns the bytes transferred, or `TimedOut`.
/// The operation has ended (done or cancelled) when this returns: the
/// OVERLAPPED and whatever buffer `start` passed are free again.
fn run(
    pipe: &OwnedHandle,
    timeout: u32,
    start: impl FnOnce(*mut OVERLAPPED) -> BOOL,
) -> io::Result<u32> {
    let h = pipe.as_raw_handle();
    // Manual reset, as overlapped I/O requires; not signalled.
    // SAFETY: no attributes and no name; the call reads no memory of ours.
    let event = owned(unsafe { CreateEventW(ptr::null(), 1, 0, ptr::null()) })?;
    let mut ov = OVERLAPPED {
        hEvent: event.as_raw_handle(),
        ..OVERLAPPED::default()
    };
    let ov = &raw mut ov;
    if start(ov) == 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(ERROR_IO_PENDING as i32) {
            // Not started: nothing in flight.
            return Err(e);
        }
        // SAFETY: the event is ours and open for the call.
        let woke = unsafe { WaitForSingleObject(event.as_raw_handle(), timeout) };
        if woke != WAIT_OBJECT_0 {
            let why = if woke == WAIT_TIMEOUT {
                io::Error::new(io::ErrorKind::TimedOut, "timed out on the control pipe")
            } else {
                io::Error::last_os_error()
            };
            // SAFETY: cancels only this operation, found by its
            // OVERLAPPED, which is still alive; it may have ended
            // meanwhile, which makes this a no-op.
            unsafe { CancelIoEx(h, ov) };
            let mut n = 0;
            // SAFETY: waits (bWait) until the operation has ended, so
            // the OVERLAPPED and the buffer outlive it; `n` is writable.
            let done = unsafe { GetOverlappedResult(h, ov, &mut n, 1) };
            let e = io::Error::last_os_error();
            return if done != 0 || n > 0 {
                // It completed before the cancel took: keep what it did.
                Ok(n)
            } else if e.raw_os_error() == Some(ERROR_OPERATION_ABORTED as i32) {
                Err(why)
            } else {
                Err(e)
            };
        }
    }
    let mut n = 0;
    // SAFETY: the operation has ended (it completed at once, or its event
    // is signalled), so this only reads its result; bWait makes sure even
    // so. `n` is writable.
    if unsafe { GetOverlappedResult(h, ov, &mut n, 1) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n)
}

/// A timeout as WaitForSingleObject takes it: INFINITE for none, else
/// milliseconds rounded up. Zero is refused, as std's sockets refuse it.
fn millis(t: Option<Duration>) -> io::Result<u32> {
    match t {
        None => Ok(INFINITE),
        Some(d) if d.is_zero() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot set a 0 duration timeout",
        )),
        Some(d) => Ok(u32::try_from(d.as_nanos().div_ceil(1_000_000))
            .unwrap_or(INFINITE)
            .min(INFINITE - 1)),
    }
}

/// The security descriptor every instance gets (module docs), as SDDL:
/// a protected DACL granting all access to the current user, SYSTEM
/// and Administrators.
fn sddl() -> io::Result<Vec<u16>> {
    let me = Token::current()
        .and_then(|t| t.user())
        .and_then(|u| sid_string(u.sid()))
        .map_err(|e| context("read the current user's SID", e))?;
    Ok(wide(&format!("D:P(A;;GA;;;{me})(A;;GA;;;SY)(A;;GA;;;BA)")))
}

/// Creates an instance of the pipe `name` (NUL-terminated), the first one
/// when `first`, with the security descriptor `sddl` (NUL-terminated).
fn create_instance(name: &[u16], sddl: &[u16], first: bool) -> io::Result<OwnedHandle> {
    let mut sd = ptr::null_mut();
    // SAFETY: `sddl` is NUL-terminated; `sd` is a writable pointer the
    // call fills with a LocalAlloc'd descriptor; the size is not asked.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(context(
            "build the control pipe's security descriptor",
            io::Error::last_os_error(),
        ));
    }
    let sd = Local(sd);
    let sa = SECURITY_ATTRIBUTES {
        nLength: size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: sd.0,
        bInheritHandle: 0,
    };
    let mut open_mode = PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED;
    if first {
        open_mode |= FILE_FLAG_FIRST_PIPE_INSTANCE;
    }
    let pipe_mode = PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS;
    // SAFETY: `name` is NUL-terminated; `sa` and the descriptor it points
    // to live through the call, which copies them.
    let h = unsafe {
        CreateNamedPipeW(
            name.as_ptr(),
            open_mode,
            pipe_mode,
            PIPE_UNLIMITED_INSTANCES,
            BUFFER,
            BUFFER,
            0,
            &sa,
        )
    };
    let pipe = owned(h)?;
    // Windows refuses a first instance of an existing pipe (the flag);
    // wine ignores the flag and joins the pipe. A first instance that is
    // not alone is refused the same way here, on both.
    if first && instances(&pipe)? != 1 {
        return Err(io::Error::from_raw_os_error(ERROR_ALREADY_EXISTS as i32));
    }
    Ok(pipe)
}

/// How many instances the pipe of `pipe` has.
fn instances(pipe: &OwnedHandle) -> io::Result<u32> {
    let mut n = 0;
    // SAFETY: the handle is open; `n` is a writable u32, and every other
    // out pointer is null (not asked), with a user name buffer of 0.
    let ok = unsafe {
        GetNamedPipeHandleStateW(
            pipe.as_raw_handle(),
            ptr::null_mut(),
            &mut n,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            0,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n)
}

/// A listening control pipe: the instance waiting for the next client.
/// Dropping it closes that instance; connections already made live on.
pub struct ControlListener {
    /// The pipe's name, for messages.
    name: String,
    /// The same, NUL-terminated UTF-16.
    wide: Vec<u16>,
    sddl: Vec<u16>,
    /// The instance waiting for a client: none only after making the next
    /// one failed (the next accept tries again).
    waiting: Mutex<Option<OwnedHandle>>,
}

impl ControlListener {
    /// Creates the pipe for `path` and writes its name into a new file at
    /// `path`.
    ///
    /// # Errors
    ///
    /// `AddrInUse` when the pipe exists already (another process serves
    /// `path`, or squats the name) or `path` exists; otherwise the OS
    /// error, naming the pipe or the file.
    pub fn bind(path: &Path) -> io::Result<Self> {
        let name = pipe_name(path);
        let wide = wide(&name);
        let sddl = sddl()?;
        let first = create_instance(&wide, &sddl, true).map_err(|e| {
            let code = e.raw_os_error();
            let taken = [ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS, ERROR_PIPE_BUSY];
            if taken.iter().any(|&c| code == Some(c as i32)) {
                io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "the pipe {name} for {} exists already: another process serves it, \
                         or holds its name",
                        path.display()
                    ),
                )
            } else {
                context(format_args!("create the pipe {name}"), e)
            }
        })?;
        write_name(path, &name).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} exists already", path.display()),
                )
            } else {
                context(format_args!("write {}", path.display()), e)
            }
        })?;
        Ok(ControlListener {
            name,
            wide,
            sddl,
            waiting: Mutex::new(Some(first)),
        })
    }

    /// The clients as they connect, without end.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// Waits for a client on the waiting instance, then makes the next.
    fn accept(&self) -> io::Result<ControlStream> {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let pipe = match waiting.take() {
            Some(p) => p,
            None => create_instance(&self.wide, &self.sddl, false)
                .map_err(|e| context(format_args!("create an instance of {}", self.name), e))?,
        };
        let h = pipe.as_raw_handle();
        // SAFETY: `h` is open; the OVERLAPPED is `run`'s, alive until the
        // operation ends.
        let connected = run(&pipe, INFINITE, |ov| unsafe { ConnectNamedPipe(h, ov) });
        if let Err(e) = connected {
            if e.raw_os_error() != Some(ERROR_PIPE_CONNECTED as i32) {
                // A client that came and went (ERROR_NO_DATA), say: make
                // the instance ready for the next one and keep it.
                // SAFETY: `h` is open; the call touches no memory of ours.
                unsafe { DisconnectNamedPipe(h) };
                *waiting = Some(pipe);
                return Err(context(format_args!("accept on {}", self.name), e));
            }
        }
        // The next client's instance, before this one is handed out, so
        // the name never lapses. On failure the next accept tries again.
        *waiting = create_instance(&self.wide, &self.sddl, false).ok();
        Ok(ControlStream::new(pipe, Side::Server))
    }
}

impl std::fmt::Debug for ControlListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlListener")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// [`ControlListener::incoming`]'s iterator; it never ends.
pub struct Incoming<'a> {
    listener: &'a ControlListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<ControlStream>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.listener.accept())
    }
}

/// Which end of the pipe a stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// A control connection: one end of a pipe instance.
#[derive(Debug)]
pub struct ControlStream {
    pipe: OwnedHandle,
    side: Side,
    /// Milliseconds, INFINITE for none.
    read_timeout: AtomicU32,
    write_timeout: AtomicU32,
}

impl ControlStream {
    fn new(pipe: OwnedHandle, side: Side) -> Self {
        ControlStream {
            pipe,
            side,
            read_timeout: AtomicU32::new(INFINITE),
            write_timeout: AtomicU32::new(INFINITE),
        }
    }

    /// Connects to the pipe named in the file at `path` (a listener's, or
    /// a [`symlink`] to one), waiting up to a few seconds while all its
    /// instances are busy.
    ///
    /// # Errors
    ///
    /// `InvalidData` when the file does not hold a control pipe's name,
    /// `NotFound` when the file or the pipe does not exist, `TimedOut`
    /// when it stayed busy; the message names the file and the pipe.
    pub fn connect(path: &Path) -> io::Result<Self> {
        let name = read_name(path)?;
        let wide = wide(&name);
        let deadline = Instant::now() + BUSY_WAIT;
        loop {
            // Identification only: the server may ask who we are, not act
            // as us.
            let flags = FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION;
            // SAFETY: `wide` is NUL-terminated; no security attributes,
            // no template; the call reads no other memory of ours.
            let h = unsafe {
                CreateFileW(
                    wide.as_ptr(),
                    GENERIC_READ | GENERIC_WRITE,
                    0,
                    ptr::null(),
                    OPEN_EXISTING,
                    flags,
                    ptr::null_mut(),
                )
            };
            let e = match owned(h) {
                Ok(pipe) => return Ok(ControlStream::new(pipe, Side::Client)),
                Err(e) => e,
            };
            if e.raw_os_error() != Some(ERROR_PIPE_BUSY as i32) {
                return Err(context(
                    format_args!("open the pipe {name} (named in {})", path.display()),
                    e,
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the pipe {name} (named in {}) stayed busy for {BUSY_WAIT:?}",
                        path.display()
                    ),
                ));
            }
            // Until an instance is free, or the time is up, or the pipe
            // is gone: the next CreateFileW tells which.
            // SAFETY: `wide` is NUL-terminated; nothing else is read.
            unsafe { WaitNamedPipeW(wide.as_ptr(), millis(Some(left))?) };
        }
    }

    /// How long a read waits for data; `None`: forever.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a zero duration, as std's sockets.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.read_timeout.store(millis(t)?, Ordering::Relaxed);
        Ok(())
    }

    /// How long a write waits for room in the pipe; `None`: forever.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a zero duration, as std's sockets.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.write_timeout.store(millis(t)?, Ordering::Relaxed);
        Ok(())
    }

    /// The pid of the process at the other end.
    fn peer_pid(&self) -> io::Result<u32> {
        let mut pid = 0;
        let h = self.pipe.as_raw_handle();
        // SAFETY: `h` is open; `pid` is a writable u32.
        let ok = unsafe {
            match self.side {
                Side::Server => GetNamedPipeClientProcessId(h, &mut pid),
                Side::Client => GetNamedPipeServerProcessId(h, &mut pid),
            }
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(pid)
    }
}

/// Whether a read's error means the other end is gone: end of file.
fn is_eof(e: &io::Error) -> bool {
    [ERROR_BROKEN_PIPE, ERROR_PIPE_NOT_CONNECTED, ERROR_NO_DATA]
        .iter()
        .any(|&c| e.raw_os_error() == Some(c as i32))
}

impl io::Read for &ControlStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let h = self.pipe.as_raw_handle();
        let timeout = self.read_timeout.load(Ordering::Relaxed);
        // SAFETY: `buf` is writable for `len` bytes and borrowed until
        // `run` returns, by when the read has ended; the OVERLAPPED is
        // `run`'s. The byte count is left null, as overlapped I/O wants.
        let read = run(&self.pipe, timeout, |ov| unsafe {
            ReadFile(h, buf.as_mut_ptr(), len, ptr::null_mut(), ov)
        });
        match read {
            Ok(n) => Ok(n as usize),
            Err(e) if is_eof(&e) => Ok(0),
            Err(e) => Err(e),
        }
    }
}

impl io::Write for &ControlStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let h = self.pipe.as_raw_handle();
        let timeout = self.write_timeout.load(Ordering::Relaxed);
        // SAFETY: `buf` is readable for `len` bytes and borrowed until
        // `run` returns, by when the write has ended; the OVERLAPPED is
        // `run`'s. The byte count is left null, as overlapped I/O wants.
        let n = run(&self.pipe, timeout, |ov| unsafe {
            WriteFile(h, buf.as_ptr(), len, ptr::null_mut(), ov)
        })?;
        Ok(n as usize)
    }

    /// Nothing to do: see the module docs.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where the links to control pipes live: `%LOCALAPPDATA%\replicafs`
/// (per user, elevated or not), `%TEMP%\replicafs` without it.
pub fn runtime_dir() -> PathBuf {
    std::env::var_os("LOCALAPPDATA")
        .filter(|x| !x.is_empty())
        .map_or_else(std::env::temp_dir, PathBuf::from)
        .join("replicafs")
}

/// The "link" `link` to the name file `target`: a new file holding the
/// same pipe name (module docs), not a symbolic link, so no privilege is
/// needed; it stays valid while the pipe lives, whatever becomes of
/// `target`.
///
/// # Errors
///
/// `InvalidData` when `target` does not hold a pipe's name,
/// `AlreadyExists` when `link` exists (as `symlink(2)`'s `EEXIST`), or
/// the OS error.
pub fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    write_name(link, &read_name(target)?)
}

/// A token open for queries.
struct Token(OwnedHandle);

/// A token's information of some class, in a buffer aligned for the
/// structures Windows puts there.
struct TokenInfo(Vec<u64>);

impl Token {
    fn current() -> io::Result<Token> {
        let mut t = ptr::null_mut();
        // SAFETY: GetCurrentProcess's pseudo-handle needs no closing and
        // is only passed on; `t` is a writable HANDLE.
        let ok = unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut t) };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        owned(t).map(Token)
    }

    fn of_process(pid: u32) -> io::Result<Token> {
        // SAFETY: no memory of ours is involved.
        let process = owned(unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) })?;
        let mut t = ptr::null_mut();
        // SAFETY: `process` is open; `t` is a writable HANDLE.
        let ok = unsafe { OpenProcessToken(process.as_raw_handle(), TOKEN_QUERY, &mut t) };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        owned(t).map(Token)
    }

    fn info(&self, class: TOKEN_INFORMATION_CLASS) -> io::Result<TokenInfo> {
        let mut len = 0;
        // SAFETY: with no buffer the call only writes the size it needs to
        // `len`.
        unsafe { GetTokenInformation(self.0.as_raw_handle(), class, ptr::null_mut(), 0, &mut len) };
        if len == 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u64; (len as usize).div_ceil(8)];
        let size = u32::try_from(buf.len() * 8).unwrap_or(u32::MAX);
        // SAFETY: `buf` is writable for `size` bytes, and 8-aligned, which
        // the token structures need at most; `len` is writable.
        let ok = unsafe {
            GetTokenInformation(
                self.0.as_raw_handle(),
                class,
                buf.as_mut_ptr().cast(),
                size,
                &mut len,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(TokenInfo(buf))
    }

    /// The token's user.
    fn user(&self) -> io::Result<User> {
        self.info(TokenUser).map(User)
    }

    /// Whether Administrators is among the token's enabled groups (it is
    /// there, for deny only, in an admin's unelevated token).
    fn is_admin(&self) -> io::Result<bool> {
        let info = self.info(TokenGroups)?;
        let groups: *const TOKEN_GROUPS = info.0.as_ptr().cast();
        // SAFETY: GetTokenInformation(TokenGroups) filled `info` with a
        // TOKEN_GROUPS: a count, then that many entries, whose SIDs point
        // into `info` too; `info` lives while the slice is used.
        let groups: &[SID_AND_ATTRIBUTES] = unsafe {
            std::slice::from_raw_parts(
                (&raw const (*groups).Groups).cast(),
                (*groups).GroupCount as usize,
            )
        };
        Ok(groups.iter().any(|g| {
            g.Attributes & SE_GROUP_ENABLED != 0
                && g.Attributes & SE_GROUP_USE_FOR_DENY_ONLY == 0
                // SAFETY: `g.Sid` points to a SID in `info`.
                && unsafe { IsWellKnownSid(g.Sid, WinBuiltinAdministratorsSid) } != 0
        }))
    }
}

/// A token's user ([`TokenInfo`] of class TokenUser).
struct User(TokenInfo);

impl User {
    /// The user's SID, pointing into `self`.
    fn sid(&self) -> PSID {
        let user: *const TOKEN_USER = self.0.0.as_ptr().cast();
        // SAFETY: GetTokenInformation(TokenUser) filled the buffer with a
        // TOKEN_USER, whose SID points into the same buffer.
        unsafe { (*user).User.Sid }
    }

    fn is(&self, other: &User) -> bool {
        // SAFETY: both SIDs are valid, in buffers borrowed for the call.
        unsafe { EqualSid(self.sid(), other.sid()) != 0 }
    }

    fn is_system(&self) -> bool {
        // SAFETY: the SID is valid, in a buffer borrowed for the call.
        unsafe { IsWellKnownSid(self.sid(), WinLocalSystemSid) != 0 }
    }
}

/// `sid` in its string form (`S-1-5-...`).
fn sid_string(sid: PSID) -> io::Result<String> {
    let mut s = ptr::null_mut();
    // SAFETY: `sid` is a valid SID; `s` is a writable pointer the call
    // fills with a LocalAlloc'd string.
    if unsafe { ConvertSidToStringSidW(sid, &mut s) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let _free = Local(s.cast());
    // SAFETY: `s` is the NUL-terminated string just made, alive until
    // `_free` drops: its length is found before the slice is made.
    let units = unsafe {
        let len = (0..).take_while(|&i| *s.add(i) != 0).count();
        std::slice::from_raw_parts(s, len)
    };
    Ok(String::from_utf16_lossy(units))
}

/// Whether the peer may be talked to: its process runs as our user, as
/// LocalSystem, or elevated as an Administrator (module docs; the same
/// rule for the server about its clients and for a client about the
/// server). A peer whose process or token cannot be read is refused.
/// The error names the peer.
pub fn peer_allowed(conn: &ControlStream) -> Result<(), String> {
    let pid = conn
        .peer_pid()
        .map_err(|e| format!("a peer whose pid cannot be read ({e})"))?;
    process_allowed(pid)
}

/// [`peer_allowed`]'s rule for the process `pid`.
fn process_allowed(pid: u32) -> Result<(), String> {
    let peer = Token::of_process(pid)
        .map_err(|e| format!("pid {pid}, whose user cannot be read ({e})"))?;
    let user = peer
        .user()
        .map_err(|e| format!("pid {pid}, whose user cannot be read ({e})"))?;
    let me = Token::current()
        .and_then(|t| t.user())
        .map_err(|e| format!("pid {pid} (our own user cannot be read: {e})"))?;
    if user.is(&me) || user.is_system() || peer.is_admin().unwrap_or(false) {
        return Ok(());
    }
    let who = sid_string(user.sid()).unwrap_or_else(|_| "?".into());
    Err(format!("peer user {who} (pid {pid})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    /// A listener in a fresh temp dir, and the dir.
    fn listen() -> (tempfile::TempDir, PathBuf, ControlListener) {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("control.sock");
        let l = ControlListener::bind(&path).unwrap();
        (d, path, l)
    }

    fn line(conn: &ControlStream) -> String {
        let mut s = String::new();
        BufReader::new(conn).read_line(&mut s).unwrap();
        s
    }

    #[test]
    fn names_are_checked() {
        let n = pipe_name(Path::new(r"C:\x\control.sock"));
        assert!(is_pipe_name(&n), "{n}");
        assert_eq!(n.len(), PREFIX.len() + 16);
        assert!(!is_pipe_name(r"\\.\pipe\replicafs-0123"));
        assert!(!is_pipe_name(r"\\.\pipe\other-0123456789abcdef"));
        assert!(!is_pipe_name(r"\\.\pipe\replicafs-0123456789abcdeg"));
        assert!(!is_pipe_name(r"\\host\pipe\replicafs-0123456789abcdef"));
    }

    #[test]
    fn timeouts_convert() {
        assert_eq!(millis(None).unwrap(), INFINITE);
        assert_eq!(millis(Some(Duration::from_micros(1))).unwrap(), 1);
        assert_eq!(millis(Some(Duration::from_millis(1500))).unwrap(), 1500);
        assert_eq!(
            millis(Some(Duration::from_secs(u64::MAX))).unwrap(),
            INFINITE - 1
        );
        assert_eq!(
            millis(Some(Duration::ZERO)).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn request_and_reply_through_a_link() {
        let (d, path, l) = listen();
        let link = d.path().join("link.sock");
        symlink(&path, &link).unwrap();
        assert_eq!(
            symlink(&path, &link).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        let (closed, server_closed) = std::sync::mpsc::channel();
        let client = std::thread::spawn(move || {
            let c = ControlStream::connect(&link).unwrap();
            peer_allowed(&c).unwrap();
            assert_eq!(c.peer_pid().unwrap(), std::process::id());
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
            (&c).write_all(b"status\n").unwrap();
            // The reply is read after the server has closed its end: what
            // it wrote is not lost...
            server_closed.recv().unwrap();
            let reply = line(&c);
            // ...and then comes the end of file, as a socket's.
            let mut rest = Vec::new();
            (&c).read_to_end(&mut rest).unwrap();
            (reply, rest)
        });
        let s = l.incoming().next().unwrap().unwrap();
        peer_allowed(&s).unwrap();
        assert_eq!(s.peer_pid().unwrap(), std::process::id());
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(line(&s), "status\n");
        (&s).write_all(b"ok {}\n").unwrap();
        (&s).flush().unwrap();
        drop(s);
        closed.send(()).unwrap();
        let (reply, rest) = client.join().unwrap();
        assert_eq!(reply, "ok {}\n");
        assert!(rest.is_empty());
    }

    #[test]
    fn a_read_times_out() {
        let (_d, path, l) = listen();
        let client = std::thread::spawn(move || {
            let c = ControlStream::connect(&path).unwrap();
            c.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let t = Instant::now();
            let e = (&c).read(&mut [0; 16]).unwrap_err();
            let took = t.elapsed();
            // Still usable after the timeout.
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            (&c).write_all(b"after\n").unwrap();
            (e.kind(), took)
        });
        let s = l.incoming().next().unwrap().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(line(&s), "after\n");
        let (kind, took) = client.join().unwrap();
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert!(took >= Duration::from_millis(150), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn a_write_times_out() {
        let (_d, path, l) = listen();
        let client = std::thread::spawn(move || {
            let c = ControlStream::connect(&path).unwrap();
            c.set_write_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let t = Instant::now();
            // Far more than the pipe holds, and nobody reads.
            let e = (&c).write_all(&vec![b'x'; 1 << 20]).unwrap_err();
            (e.kind(), t.elapsed())
        });
        let s = l.incoming().next().unwrap().unwrap();
        let (kind, took) = client.join().unwrap();
        drop(s);
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert!(took >= Duration::from_millis(150), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn a_second_bind_fails() {
        let (d, path, _l) = listen();
        // The pipe's name is taken (the first-instance rule)...
        let other = d.path().join("other.sock");
        std::fs::remove_file(&path).unwrap();
        let e = ControlListener::bind(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        assert!(e.to_string().contains("exists already"), "{e}");
        assert!(!path.exists(), "no name file for a failed bind");
        // ...and so is an existing file, as a socket's path.
        std::fs::write(&other, "x").unwrap();
        let e = ControlListener::bind(&other).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
    }

    #[test]
    fn a_gone_pipe_is_not_found() {
        let (d, path, l) = listen();
        drop(l);
        let e = ControlStream::connect(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert!(e.to_string().contains(&pipe_name(&path)), "{e}");
        let e = ControlStream::connect(&d.path().join("missing")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn garbage_is_invalid_data() {
        let d = tempfile::tempdir().unwrap();
        for (i, junk) in [
            &b"hello"[..],
            b"",
            br"\\.\pipe\other",
            br"\\server\pipe\replicafs-0123456789abcdef",
            b"\xff\xfe",
        ]
        .iter()
        .enumerate()
        {
            let p = d.path().join(format!("junk{i}"));
            std::fs::write(&p, junk).unwrap();
            let e = ControlStream::connect(&p).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
            assert!(e.to_string().contains(&p.display().to_string()), "{e}");
            let e = symlink(&p, &d.path().join(format!("link{i}"))).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        }
    }

    #[test]
    fn clients_in_sequence_are_all_served() {
        const CLIENTS: usize = 5;
        let (_d, path, l) = listen();
        let server = std::thread::spawn(move || {
            for conn in l.incoming().take(CLIENTS) {
                let conn = conn.unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let req = line(&conn);
                (&conn).write_all(format!("re {}", req).as_bytes()).unwrap();
            }
        });
        for i in 0..CLIENTS {
            let c = ControlStream::connect(&path).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            (&c).write_all(format!("n {i}\n").as_bytes()).unwrap();
            assert_eq!(line(&c), format!("re n {i}\n"));
        }
        server.join().unwrap();
    }

    #[test]
    fn processes_that_cannot_be_read_are_refused() {
        process_allowed(std::process::id()).unwrap();
        // Pid 0 (the idle process) cannot be opened; 0xFFFFFFF0 is no
        // process at all.
        for pid in [0, 0xFFFF_FFF0] {
            let e = process_allowed(pid).unwrap_err();
            assert!(e.contains(&format!("pid {pid}")), "{e}");
        }
    }

    /// The whole channel as the mount and the CLI use it: `serve` (the
    /// name file, the link in the runtime dir, the accept loop with its
    /// peer check) and `request`.
    #[test]
    fn serve_and_request() {
        struct Mount;
        impl crate::control::Handler for Mount {
            fn sync(&self, timeout: Duration) -> Result<(), String> {
                match timeout.as_millis() {
                    7 => Ok(()),
                    _ => Err("not synced".into()),
                }
            }
            fn status_json(&self) -> String {
                r#"{"state":"up"}"#.into()
            }
            fn unmount(&self) -> Result<(), String> {
                Ok(())
            }
        }
        let d = tempfile::tempdir().unwrap();
        let state = crate::state_dir::StateDir::open(&d.path().join("state")).unwrap();
        let mnt = d.path().join("mnt");
        let server = crate::control::serve(&mnt, &state, std::sync::Arc::new(Mount)).unwrap();
        let ask = |req: &str| crate::control::request(&mnt, req, Some(Duration::from_secs(10)));
        assert_eq!(ask("status").unwrap(), Ok(r#"{"state":"up"}"#.into()));
        assert_eq!(ask("sync 7").unwrap(), Ok(String::new()));
        assert_eq!(ask("sync 8").unwrap(), Err("not synced".into()));
        assert_eq!(ask("unmount").unwrap(), Ok(String::new()));
        assert!(
            ask("bogus")
                .unwrap()
                .unwrap_err()
                .contains("unknown request")
        );
        drop(server);
        let e = ask("status").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn streams_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ControlStream>();
        check::<ControlListener>();
    }
}
