//! Windows: overlapped ReadFile/WriteFile on one I/O completion port, up to
//! [`SLOTS`] pieces in flight.
//!
//! Ranges are cut at the source's end and into pieces of at most [`PIECE`]
//! bytes. A piece takes a slot (an OVERLAPPED and a buffer of its own) and
//! is read from the source; when the read completes, the same bytes are
//! written at the same offset of the target, and the slot is free again
//! when that write completes. Completions are drained in batches with
//! GetQueuedCompletionStatusEx. A read at or past the end (the file shrank
//! meanwhile) moves nothing; a short read writes what it got and queues the
//! rest of the piece again; a short write is re-issued for the remainder.
//! After the first error nothing new starts, what is in flight is cancelled
//! (CancelIoEx) and drained, and the error names the piece and the file.
//!
//! Overlapped I/O needs handles opened with FILE_FLAG_OVERLAPPED, and a
//! handle joins a completion port for good, so the caller's `File`s are
//! never used for the I/O: each call reopens them (ReOpenFile) with the one
//! right it needs, after checking that the caller's handle has that right
//! itself, so a target opened read-only is refused as it would be by
//! `portable`, never written through a new handle.
//!
//! Memory contract with the kernel: from the moment ReadFile or WriteFile
//! accepts an operation until its completion packet is dequeued, the
//! kernel may write the slot's OVERLAPPED and read or write its buffer.
//! Both are heap allocations made once per pool and handled only through
//! raw pointers, so nothing moves them or asserts exclusive access to them
//! meanwhile. A slot is touched by us only while idle, and freed only when
//! no operation uses it: a run drains every operation it started before it
//! returns, and if it cannot (the port failed, or a panic unwinds), it
//! leaks the slots instead of freeing them.
//!
//! Barriers are the trait's default `sync_all`, which is FlushFileBuffers.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::ptr;
use std::sync::Mutex;

use windows_sys::Wdk::Foundation::{NtQueryObject, ObjectBasicInformation};
use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_HANDLE_EOF, ERROR_IO_PENDING, HANDLE, INVALID_HANDLE_VALUE,
    RtlNtStatusToDosError,
};
use windows_sys::Win32::Storage::FileSystem::{
    FILE_FLAG_OVERLAPPED, FILE_READ_DATA, FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE,
    FILE_WRITE_DATA, ReOpenFile, ReadFile, WriteFile,
};
use windows_sys::Win32::System::IO::{
    CancelIoEx, CreateIoCompletionPort, GetOverlappedResult, GetQueuedCompletionStatusEx,
    OVERLAPPED, OVERLAPPED_0, OVERLAPPED_0_0, OVERLAPPED_ENTRY,
};
use windows_sys::Win32::System::Threading::INFINITE;
use windows_sys::Win32::System::WindowsProgramming::PUBLIC_OBJECT_BASIC_INFORMATION;

use super::FastIo;
use crate::error::context;

/// Operations in flight at most, each with a buffer of [`PIECE`] bytes:
/// a 32 MiB pool, as io_uring's.
pub(crate) const SLOTS: usize = 64;
pub(crate) const PIECE: usize = 512 << 10;

/// One operation's memory. See the module's memory contract.
struct Slot {
    ov: *mut OVERLAPPED,
    /// [`PIECE`] bytes.
    buf: *mut u8,
}

impl Slot {
    fn new() -> Self {
        Slot {
            ov: Box::into_raw(Box::new(OVERLAPPED::default())),
            buf: Box::into_raw(vec![0u8; PIECE].into_boxed_slice()).cast(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // SAFETY: both pointers come from `Box::into_raw` in `new`, with
        // these types and this length, and are freed here only, once. A
        // slot is dropped only when no operation uses it (module docs:
        // `Run` drains or leaks).
        unsafe {
            drop(Box::from_raw(self.ov));
            drop(Box::from_raw(ptr::slice_from_raw_parts_mut(
                self.buf, PIECE,
            )));
        }
    }
}

struct Pool {
    port: OwnedHandle,
    /// Made on first use, so a backend that is selected but never used
    /// costs no memory.
    slots: Vec<Slot>,
}

// SAFETY: a slot's pointers are heap allocations it owns, with no tie to
// the thread that made them; the pool is reached only through the `Mutex`
// in `Iocp`, one thread at a time.
unsafe impl Send for Pool {}

pub struct Iocp {
    pool: Mutex<Pool>,
}

impl Iocp {
    /// Makes the completion port.
    ///
    /// # Errors
    ///
    /// CreateIoCompletionPort's.
    pub fn new() -> io::Result<Self> {
        // SAFETY: with INVALID_HANDLE_VALUE and no existing port, the call
        // only creates a port; it reads no memory of ours.
        let port = unsafe { CreateIoCompletionPort(INVALID_HANDLE_VALUE, ptr::null_mut(), 0, 1) };
        if port.is_null() {
            return Err(context(
                "creating an I/O completion port",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `port` is a handle just made, owned by nothing else.
        let port = unsafe { OwnedHandle::from_raw_handle(port) };
        Ok(Iocp {
            pool: Mutex::new(Pool {
                port,
                slots: Vec::new(),
            }),
        })
    }
}

/// The access rights the handle of `f` was opened with.
fn granted_access(f: &File) -> io::Result<u32> {
    let mut info = PUBLIC_OBJECT_BASIC_INFORMATION::default();
    // SAFETY: `info` is a writable PUBLIC_OBJECT_BASIC_INFORMATION of the
    // size passed, the shape ObjectBasicInformation fills in; the handle
    // is borrowed from `f` for the call.
    let status = unsafe {
        NtQueryObject(
            f.as_raw_handle(),
            ObjectBasicInformation,
            (&raw mut info).cast(),
            size_of::<PUBLIC_OBJECT_BASIC_INFORMATION>() as u32,
            ptr::null_mut(),
        )
    };
    if status < 0 {
        // SAFETY: a pure conversion of a status code.
        let code = unsafe { RtlNtStatusToDosError(status) };
        return Err(io::Error::from_raw_os_error(code as i32));
    }
    Ok(info.GrantedAccess)
}

/// `f` reopened for overlapped I/O with `right` (FILE_READ_DATA or
/// FILE_WRITE_DATA) and no other, provided `f` itself has that right.
fn reopen(f: &File, right: u32) -> io::Result<OwnedHandle> {
    if granted_access(f)? & right == 0 {
        return Err(io::Error::from_raw_os_error(ERROR_ACCESS_DENIED as i32));
    }
    // Share everything: the new handle must not lock out the caller's
    // own handles or anyone else's.
    let share = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;
    // SAFETY: the handle of `f` is valid for the call; ReOpenFile returns
    // a new handle or INVALID_HANDLE_VALUE and touches no memory of ours.
    let h = unsafe { ReOpenFile(f.as_raw_handle(), right, share, FILE_FLAG_OVERLAPPED) };
    if h == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `h` is a handle just made, owned by nothing else.
    Ok(unsafe { OwnedHandle::from_raw_handle(h) })
}

/// Joins `file` to `port`: its completions are queued there until it is
/// closed.
fn associate(port: &OwnedHandle, file: &OwnedHandle) -> io::Result<()> {
    // SAFETY: both handles are valid for the call, which touches no memory
    // of ours.
    let r = unsafe { CreateIoCompletionPort(file.as_raw_handle(), port.as_raw_handle(), 0, 0) };
    if r.is_null() {
        return Err(context(
            "joining a file to the I/O completion port",
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Ranges cut at `size` and into pieces of at most [`PIECE`] bytes.
fn pieces(ranges: &[(u64, u64)], size: u64) -> VecDeque<(u64, u64)> {
    let piece = PIECE as u64;
    ranges
        .iter()
        .map(|&(s, e)| (s, e.min(size)))
        .filter(|&(s, e)| s < e)
        .flat_map(|(s, e)| {
            (0..(e - s).div_ceil(piece)).map(move |i| {
                let a = s + i * piece;
                (a, (a + piece).min(e))
            })
        })
        .collect()
}

impl FastIo for Iocp {
    fn name(&self) -> &'static str {
        "iocp"
    }

    fn copy_ranges(&self, src: &File, dst: &File, ranges: &[(u64, u64)]) -> io::Result<u64> {
        let size = src.metadata()?.len();
        let todo = pieces(ranges, size);
        if todo.is_empty() {
            return Ok(0);
        }
        let src = reopen(src, FILE_READ_DATA)
            .map_err(|e| context("reopening the source for overlapped reads", e))?;
        let dst = reopen(dst, FILE_WRITE_DATA)
            .map_err(|e| context("reopening the target for overlapped writes", e))?;
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        associate(&pool.port, &src)?;
        associate(&pool.port, &dst)?;
        if pool.slots.is_empty() {
            pool.slots = (0..SLOTS).map(|_| Slot::new()).collect();
        }
        // Declared after the handles, so dropped before they close.
        let mut run = Run {
            src: src.as_raw_handle(),
            dst: dst.as_raw_handle(),
            jobs: vec![None; SLOTS],
            free: (0..SLOTS).rev().collect(),
            in_flight: 0,
            todo,
            total: 0,
            err: None,
            pool: &mut pool,
        };
        run.go()
    }
}

/// What a slot is doing.
#[derive(Clone, Copy)]
struct Job {
    offset: u64,
    /// Bytes asked of the read.
    len: u32,
    /// Bytes the read returned.
    got: u32,
    /// Of those, bytes written so far.
    written: u32,
    writing: bool,
}

/// One `copy_ranges` call in progress.
struct Run<'a> {
    pool: &'a mut Pool,
    src: HANDLE,
    dst: HANDLE,
    /// Per slot: `Some` while an operation of it is in flight.
    jobs: Vec<Option<Job>>,
    free: Vec<usize>,
    in_flight: usize,
    todo: VecDeque<(u64, u64)>,
    total: u64,
    err: Option<io::Error>,
}

fn is_eof(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ERROR_HANDLE_EOF as i32)
}

impl Run<'_> {
    fn go(&mut self) -> io::Result<u64> {
        let mut entries = [OVERLAPPED_ENTRY::default(); SLOTS];
        loop {
            self.fill();
            if self.in_flight == 0 {
                break;
            }
            let mut n = 0u32;
            // SAFETY: `entries` has room for the SLOTS entries the call may
            // write and `n` is writable; the port is valid while `self`
            // borrows the pool.
            let ok = unsafe {
                GetQueuedCompletionStatusEx(
                    self.pool.port.as_raw_handle(),
                    entries.as_mut_ptr(),
                    SLOTS as u32,
                    &mut n,
                    INFINITE,
                    0,
                )
            };
            if ok == 0 {
                // Cannot happen with INFINITE on a live port; if it does,
                // the operations in flight cannot be waited for, and
                // `Drop` leaks their memory.
                return Err(context(
                    "waiting on the I/O completion port",
                    io::Error::last_os_error(),
                ));
            }
            for e in &entries[..n as usize] {
                self.complete(e.lpOverlapped);
            }
        }
        match self.err.take() {
            Some(e) => Err(e),
            None => Ok(self.total),
        }
    }

    /// Starts reads for queued pieces while slots are free.
    fn fill(&mut self) {
        while self.err.is_none() && !self.free.is_empty() {
            let Some((s, e)) = self.todo.pop_front() else {
                break;
            };
            let i = self.free.pop().expect("checked above");
            let len = (e - s) as u32;
            match self.start(i, false, s, 0, len) {
                Ok(()) => {
                    self.jobs[i] = Some(Job {
                        offset: s,
                        len,
                        got: 0,
                        written: 0,
                        writing: false,
                    });
                }
                Err(err) => {
                    self.free.push(i);
                    if !is_eof(&err) {
                        self.fail(context(
                            format!("reading bytes {s}..{e} of the source"),
                            err,
                        ));
                    }
                }
            }
        }
    }

    /// Starts a read into, or a write from, bytes `from .. from + len` of
    /// slot `i`'s buffer at file offset `at`. `Ok` means a completion
    /// packet will come for it.
    fn start(&mut self, i: usize, write: bool, at: u64, from: usize, len: u32) -> io::Result<()> {
        assert!(from + len as usize <= PIECE, "beyond the slot's buffer");
        let slot = &self.pool.slots[i];
        let ov = OVERLAPPED {
            Anonymous: OVERLAPPED_0 {
                Anonymous: OVERLAPPED_0_0 {
                    Offset: at as u32,
                    OffsetHigh: (at >> 32) as u32,
                },
            },
            ..OVERLAPPED::default()
        };
        // SAFETY: slot `i` is idle (on the free list, or its last
        // operation's completion has been dequeued), so nothing else reads
        // or writes its OVERLAPPED or buffer now. `from + len <= PIECE`
        // (asserted), so the bytes passed are inside the buffer. Both stay
        // allocated until this operation's completion is dequeued (module
        // docs), and the handles stay open until then (they outlive `Run`).
        let ok = unsafe {
            slot.ov.write(ov);
            let buf = slot.buf.add(from);
            if write {
                WriteFile(self.dst, buf, len, ptr::null_mut(), slot.ov)
            } else {
                ReadFile(self.src, buf, len, ptr::null_mut(), slot.ov)
            }
        };
        if ok == 0 {
            let e = io::Error::last_os_error();
            // Any other failure queues no packet.
            if e.raw_os_error() != Some(ERROR_IO_PENDING as i32) {
                return Err(e);
            }
        }
        // Done at once or pending: either way a packet is queued.
        self.in_flight += 1;
        Ok(())
    }

    fn complete(&mut self, ov: *mut OVERLAPPED) {
        // Not one of ours: a leftover of a run that had to abandon its
        // operations (their slots were leaked, so the address is no
        // current slot's).
        let Some(i) = self.pool.slots.iter().position(|s| s.ov == ov) else {
            return;
        };
        let Some(mut job) = self.jobs[i].take() else {
            return;
        };
        self.in_flight -= 1;
        let handle = if job.writing { self.dst } else { self.src };
        let mut n = 0u32;
        // SAFETY: this operation's packet has been dequeued, so the kernel
        // is done with the OVERLAPPED; with bWait FALSE the call only reads
        // it (status and byte count) and writes `n`.
        let ok = unsafe { GetOverlappedResult(handle, ov, &mut n, 0) };
        let res = if ok != 0 {
            Ok(n)
        } else {
            Err(io::Error::last_os_error())
        };
        let (s, e) = (job.offset, job.offset + u64::from(job.len));
        if !job.writing {
            match res {
                Ok(0) => {}
                Err(err) if is_eof(&err) => {}
                Err(err) => self.fail(context(
                    format!("reading bytes {s}..{e} of the source"),
                    err,
                )),
                Ok(got) if self.err.is_none() => {
                    job.got = got;
                    job.writing = true;
                    return self.write_rest(i, job);
                }
                Ok(_) => {}
            }
        } else {
            match res {
                Ok(0) => self.fail(context(
                    format!("writing bytes {s}..{e} of the target"),
                    io::ErrorKind::WriteZero.into(),
                )),
                Err(err) => self.fail(context(
                    format!("writing bytes {s}..{e} of the target"),
                    err,
                )),
                Ok(w) => {
                    job.written += w;
                    if job.written < job.got {
                        if self.err.is_none() {
                            return self.write_rest(i, job);
                        }
                    } else {
                        self.total += u64::from(job.got);
                        if job.got < job.len {
                            // Short read: the rest of the piece goes round
                            // again.
                            self.todo.push_back((s + u64::from(job.got), e));
                        }
                    }
                }
            }
        }
        self.free.push(i);
    }

    /// Writes what slot `i` read and has not written yet.
    fn write_rest(&mut self, i: usize, job: Job) {
        let at = job.offset + u64::from(job.written);
        match self.start(i, true, at, job.written as usize, job.got - job.written) {
            Ok(()) => self.jobs[i] = Some(job),
            Err(err) => {
                let end = job.offset + u64::from(job.got);
                self.fail(context(
                    format!("writing bytes {at}..{end} of the target"),
                    err,
                ));
                self.free.push(i);
            }
        }
    }

    /// Keeps the first error and cancels everything in flight: the cancelled
    /// operations still complete (ERROR_OPERATION_ABORTED) and are drained.
    fn fail(&mut self, err: io::Error) {
        if self.err.is_some() {
            return;
        }
        self.err = Some(err);
        for h in [self.src, self.dst] {
            // SAFETY: the handle is open (it outlives `Run`); a null
            // OVERLAPPED cancels all of its operations and reads no memory.
            unsafe { CancelIoEx(h, ptr::null()) };
        }
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        if self.in_flight > 0 {
            // Operations we could not wait for may still use the slots:
            // give their memory up for good rather than free it under
            // them. The next run makes new slots.
            for slot in self.pool.slots.drain(..) {
                std::mem::forget(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::ManuallyDrop;
    use std::sync::Arc;

    use super::*;
    use crate::error::errno_of;

    fn files(d: &std::path::Path, data: &[u8]) -> (File, File) {
        std::fs::write(d.join("s"), data).unwrap();
        let s = File::open(d.join("s")).unwrap();
        let t = File::create(d.join("t")).unwrap();
        (s, t)
    }

    #[test]
    fn pieces_are_cut_at_the_end_and_at_the_piece_size() {
        let p = PIECE as u64;
        let got: Vec<_> = pieces(
            &[(5, 5), (0, 10), (100, 2 * p + 200), (3 * p, 4 * p)],
            p + 50,
        )
        .into_iter()
        .collect();
        assert_eq!(got, vec![(0, 10), (100, p + 50)]);
        let got: Vec<_> = pieces(&[(1, 2 * p + 2)], u64::MAX).into_iter().collect();
        assert_eq!(
            got,
            vec![(1, p + 1), (p + 1, 2 * p + 1), (2 * p + 1, 2 * p + 2)]
        );
    }

    #[test]
    fn an_invalid_handle_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let (s, t) = files(d.path(), &[7u8; 10_000]);
        // SAFETY: the value is never closed (ManuallyDrop); every use of it
        // is a call that checks the handle and fails.
        let bad = ManuallyDrop::new(unsafe { File::from_raw_handle(0x7777_7770 as HANDLE) });
        let io = Iocp::new().unwrap();
        let e = io.copy_ranges(&bad, &t, &[(0, 100)]);
        // metadata() on the source fails first, with the same error.
        let e = e.unwrap_err();
        assert_eq!(errno_of(&e), 6, "ERROR_INVALID_HANDLE: {e}");
        let e = io.copy_ranges(&s, &bad, &[(0, 100)]).unwrap_err();
        assert_eq!(errno_of(&e), 6, "ERROR_INVALID_HANDLE: {e}");
        assert!(e.to_string().contains("the target"), "{e}");
    }

    #[test]
    fn a_read_only_target_is_refused_and_named() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = files(d.path(), &[7u8; 10_000]);
        let ro = File::open(d.path().join("t")).unwrap();
        let e = Iocp::new()
            .unwrap()
            .copy_ranges(&s, &ro, &[(0, 100)])
            .unwrap_err();
        assert_eq!(errno_of(&e), ERROR_ACCESS_DENIED as i32, "{e}");
        assert!(e.to_string().contains("reopening the target"), "{e}");
        assert_eq!(std::fs::read(d.path().join("t")).unwrap(), b"");
    }

    #[test]
    fn the_callers_files_stay_usable_for_plain_io() {
        use std::os::windows::fs::FileExt;
        let d = tempfile::tempdir().unwrap();
        let (s, t) = files(d.path(), &[7u8; 10_000]);
        let io = Iocp::new().unwrap();
        assert_eq!(io.copy_ranges(&s, &t, &[(0, 10_000)]).unwrap(), 10_000);
        // Our handles joined the port, not the caller's: synchronous I/O
        // through them still works.
        t.seek_write(b"xy", 3).unwrap();
        let mut b = [0u8; 4];
        assert_eq!(s.seek_read(&mut b, 0).unwrap(), 4);
        assert_eq!(b, [7; 4]);
        io.sync(&t).unwrap();
        drop(t);
        let out = std::fs::read(d.path().join("t")).unwrap();
        assert_eq!(&out[..6], &[7, 7, 7, b'x', b'y', 7]);
    }

    #[test]
    fn callers_on_several_threads_share_one_backend() {
        let d = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(3 * PIECE as u32)).map(|i| (i / 7) as u8).collect();
        std::fs::write(d.path().join("s"), &data).unwrap();
        let io = Arc::new(Iocp::new().unwrap());
        let threads: Vec<_> = (0..4)
            .map(|k| {
                let (io, dir) = (io.clone(), d.path().to_path_buf());
                std::thread::spawn(move || {
                    let s = File::open(dir.join("s")).unwrap();
                    let t = File::create(dir.join(format!("t{k}"))).unwrap();
                    io.copy_ranges(&s, &t, &[(0, u64::MAX)]).unwrap()
                })
            })
            .collect();
        for (k, h) in threads.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), data.len() as u64);
            assert!(std::fs::read(d.path().join(format!("t{k}"))).unwrap() == data);
        }
    }
}
