//! io_uring: each range is a READ_FIXED from the source linked
//! (IOSQE_IO_LINK) to a WRITE_FIXED into the target, both on one registered
//! buffer pool; many chains go in one submit.
//!
//! The pool is used as a ring buffer in submission order and the ring is
//! kept full: as the oldest chains complete their space takes new ones, so
//! no buffer is ever reused while the kernel may still write into it. Nothing is
//! lent out of the pool: data only goes kernel → buffer → kernel.
//!
//! Pieces of 1 MiB (those of ranges that large) drop the target's pages
//! once written, like `portable` (posix_fadvise DONTNEED).
//!
//! A short read fails its chain (the kernel cancels the linked write with
//! ECANCELED): the bytes that were read are written with pwrite and the
//! rest of the range goes into the next batch. A short write is finished
//! the same way. Ranges are clamped to the source's size first, so short
//! reads only happen when the file shrinks meanwhile.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use io_uring::{IoUring, Probe, opcode, squeue, types};

use super::FastIo;

/// Registered pool size, and the largest piece one chain moves.
const POOL: usize = 32 << 20;
const CHUNK: u64 = 1 << 20;
/// Copies of at most this many bytes in all go through pread/pwrite: for
/// them one submit-and-wait round trip costs more than the copy, and the
/// ring is one per process (behind a lock), so the parallel threads of a
/// reconcile copying small files would queue on it (measured on 100,000
/// files of 100 bytes: first copy 12.4 s through the ring, 8.1 s with
/// pread/pwrite).
const SMALL: u64 = 64 << 10;
/// Submission queue entries (two per chain).
const ENTRIES: u32 = 512;

struct Ring {
    ring: IoUring,
    /// The registered buffer (index 0). Boxed so its address never moves
    /// while registered; freed only after the ring (field order).
    pool: Box<[u8]>,
}

pub struct Uring {
    ring: Mutex<Ring>,
}

impl Uring {
    /// Sets up a ring, probes the opcodes we use and registers the pool;
    /// the error says why io_uring cannot be used here.
    pub fn new() -> Result<Self, String> {
        let ring = IoUring::new(ENTRIES).map_err(|e| format!("io_uring_setup: {e}"))?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| format!("IORING_REGISTER_PROBE: {e}"))?;
        for (name, code) in [
            ("READ_FIXED", opcode::ReadFixed::CODE),
            ("WRITE_FIXED", opcode::WriteFixed::CODE),
        ] {
            if !probe.is_supported(code) {
                return Err(format!("the kernel does not support IORING_OP_{name}"));
            }
        }
        let mut pool = vec![0u8; POOL].into_boxed_slice();
        let iov = libc::iovec {
            iov_base: pool.as_mut_ptr().cast(),
            iov_len: pool.len(),
        };
        // SAFETY: the iovec describes `pool`, which lives in the same
        // `Ring` as the io_uring and is dropped after it (field order), and
        // is never reallocated: the kernel's pinned pages stay valid for as
        // long as the registration exists.
        unsafe { ring.submitter().register_buffers(&[iov]) }
            .map_err(|e| format!("IORING_REGISTER_BUFFERS: {e}"))?;
        Ok(Uring {
            ring: Mutex::new(Ring { ring, pool }),
        })
    }
}

/// One READ_FIXED → WRITE_FIXED chain in flight.
struct Chain {
    offset: u64,
    len: u32,
    /// Where in the pool.
    at: usize,
    /// Pool bytes it holds: its length, plus the tail end it skipped when
    /// it wrapped round to the start.
    span: usize,
    read: Option<i32>,
    write: Option<i32>,
}

impl FastIo for Uring {
    fn name(&self) -> &'static str {
        "uring"
    }

    fn copy_ranges(&self, src: &File, dst: &File, ranges: &[(u64, u64)]) -> io::Result<u64> {
        let size = src.metadata()?.len();
        let bytes: u64 = ranges
            .iter()
            .map(|&(s, e)| e.min(size).saturating_sub(s))
            .sum();
        if bytes <= SMALL {
            return super::Portable::new().copy_ranges(src, dst, ranges);
        }
        // Pieces of at most CHUNK bytes, cut at the source's end.
        let mut todo: VecDeque<(u64, u64)> = ranges
            .iter()
            .map(|&(s, e)| (s, e.min(size)))
            .filter(|&(s, e)| s < e)
            .flat_map(|(s, e)| {
                (0..(e - s).div_ceil(CHUNK)).map(move |i| {
                    let a = s + i * CHUNK;
                    (a, (a + CHUNK).min(e))
                })
            })
            .collect();
        let mut r = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let Ring { ring, pool } = &mut *r;
        let (sfd, dfd) = (types::Fd(src.as_raw_fd()), types::Fd(dst.as_raw_fd()));
        let cap = pool.len();
        let base = pool.as_mut_ptr();
        // Chains in submission order; the pool is used as a ring buffer in
        // the same order, so a chain's space comes back when it and every
        // chain before it have completed.
        let mut chains: VecDeque<Chain> = VecDeque::new();
        let mut first_id = 0u64;
        let mut next_id = 0u64;
        let (mut tail, mut used) = (0usize, 0usize);
        let mut total = 0u64;
        let mut first_err: Option<io::Error> = None;
        loop {
            {
                let mut sq = ring.submission();
                while first_err.is_none() && sq.capacity() - sq.len() >= 2 {
                    let Some(&(s, e)) = todo.front() else { break };
                    let len = (e - s) as usize;
                    let (at, span) = if tail + len <= cap {
                        (tail, len)
                    } else {
                        (0, cap - tail + len)
                    };
                    if used + span > cap {
                        break;
                    }
                    todo.pop_front();
                    // SAFETY: `at .. at + len` is inside the registered pool
                    // and free: the ring-buffer accounting above keeps it
                    // apart from every chain still in flight.
                    let ptr = unsafe { base.add(at) };
                    let read = opcode::ReadFixed::new(sfd, ptr, len as u32, 0)
                        .offset(s)
                        .build()
                        .flags(squeue::Flags::IO_LINK)
                        .user_data(next_id << 1);
                    let write = opcode::WriteFixed::new(dfd, ptr, len as u32, 0)
                        .offset(s)
                        .build()
                        .user_data((next_id << 1) | 1);
                    // SAFETY: both entries point into the pool, which this
                    // chain owns until both completions are reaped; the fds
                    // outlive the call.
                    unsafe {
                        sq.push(&read)
                            .map_err(|_| io::Error::other("io_uring queue full"))?;
                        sq.push(&write)
                            .map_err(|_| io::Error::other("io_uring queue full"))?;
                    }
                    chains.push_back(Chain {
                        offset: s,
                        len: len as u32,
                        at,
                        span,
                        read: None,
                        write: None,
                    });
                    next_id += 1;
                    tail = at + len;
                    used += span;
                }
            }
            if chains.is_empty() {
                break;
            }
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            for cqe in ring.completion() {
                let id = cqe.user_data() >> 1;
                let c = &mut chains[(id - first_id) as usize];
                if cqe.user_data() & 1 == 0 {
                    c.read = Some(cqe.result());
                } else {
                    c.write = Some(cqe.result());
                }
            }
            // Settle completed chains in order, finishing partial ones by
            // hand, and give their space back.
            while chains
                .front()
                .is_some_and(|c| c.read.is_some() && c.write.is_some())
            {
                let c = chains.pop_front().expect("checked above");
                first_id += 1;
                used -= c.span;
                if chains.is_empty() {
                    tail = 0;
                    used = 0;
                }
                let (read, write) = (c.read.unwrap_or(-libc::EIO), c.write.unwrap_or(-libc::EIO));
                if read < 0 {
                    first_err.get_or_insert(io::Error::from_raw_os_error(-read));
                    continue;
                }
                if write < 0 && write != -libc::ECANCELED {
                    first_err.get_or_insert(io::Error::from_raw_os_error(-write));
                    continue;
                }
                let got = read as usize;
                let wrote = if write >= 0 {
                    (write as usize).min(got)
                } else {
                    0
                };
                if wrote < got {
                    let bytes = &pool[c.at + wrote..c.at + got];
                    if let Err(e) = dst.write_all_at(bytes, c.offset + wrote as u64) {
                        first_err.get_or_insert(e);
                        continue;
                    }
                }
                total += got as u64;
                // As `portable` does: a backup of big files should not
                // push the user's working set out of the page cache.
                if c.len as u64 >= super::portable::LARGE {
                    super::drop_written_pages(dst, c.offset, got as u64);
                }
                if got < c.len as usize && got > 0 {
                    // Short read: the rest of the range goes round again.
                    todo.push_back((c.offset + got as u64, c.offset + c.len as u64));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }
}
