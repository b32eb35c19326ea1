//! io_uring: each range is a READ_FIXED from the source linked
//! (IOSQE_IO_LINK) to a WRITE_FIXED into the target, both on one registered
//! buffer pool; many chains go in one submit.
//!
//! Batches are filled until the pool or the submission queue is full, then
//! submitted and completely reaped before the pool is reused, so no buffer
//! is ever handed back while the kernel may still write into it. Nothing is
//! lent out of the pool: data only goes kernel → buffer → kernel.
//!
//! A short read fails its chain (the kernel cancels the linked write with
//! ECANCELED): the bytes that were read are written with pwrite and the
//! rest of the range goes into the next batch. A short write is finished
//! the same way. Ranges are clamped to the source's size first, so short
//! reads only happen when the file shrinks meanwhile.
#![allow(unsafe_code)]

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

/// One READ_FIXED → WRITE_FIXED chain of a batch.
struct Chain {
    offset: u64,
    len: u32,
    /// Where in the pool.
    at: usize,
    read: Option<i32>,
    write: Option<i32>,
}

impl FastIo for Uring {
    fn name(&self) -> &'static str {
        "uring"
    }

    fn copy_ranges(&self, src: &File, dst: &File, ranges: &[(u64, u64)]) -> io::Result<u64> {
        let size = src.metadata()?.len();
        // Pieces of at most CHUNK bytes, cut at the source's end.
        let mut todo: std::collections::VecDeque<(u64, u64)> = ranges
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
        let base = pool.as_mut_ptr();
        let (sfd, dfd) = (types::Fd(src.as_raw_fd()), types::Fd(dst.as_raw_fd()));
        let mut total = 0u64;
        while !todo.is_empty() {
            // Fill a batch.
            let mut chains: Vec<Chain> = Vec::new();
            let mut used = 0usize;
            while let Some(&(s, e)) = todo.front() {
                let len = (e - s) as usize;
                if used + len > pool.len() || chains.len() * 2 + 2 > ENTRIES as usize {
                    break;
                }
                todo.pop_front();
                chains.push(Chain {
                    offset: s,
                    len: len as u32,
                    at: used,
                    read: None,
                    write: None,
                });
                used += len;
            }
            {
                let mut sq = ring.submission();
                for (i, c) in chains.iter().enumerate() {
                    // SAFETY: `base + c.at .. + c.len` lies inside the
                    // registered pool (index 0), reserved for this chain
                    // alone until the batch is fully reaped below.
                    let ptr = unsafe { base.add(c.at) };
                    let read = opcode::ReadFixed::new(sfd, ptr, c.len, 0)
                        .offset(c.offset)
                        .build()
                        .flags(squeue::Flags::IO_LINK)
                        .user_data((i as u64) << 1);
                    let write = opcode::WriteFixed::new(dfd, ptr, c.len, 0)
                        .offset(c.offset)
                        .build()
                        .user_data(((i as u64) << 1) | 1);
                    // SAFETY: the entries point into the pool, which stays
                    // valid and untouched by us until both completions of
                    // this chain are reaped; the fds outlive the call.
                    unsafe {
                        sq.push(&read)
                            .map_err(|_| io::Error::other("io_uring queue full"))?;
                        sq.push(&write)
                            .map_err(|_| io::Error::other("io_uring queue full"))?;
                    }
                }
            }
            // Submit and reap every completion of the batch: only then may
            // the pool be reused.
            let mut pending = chains.len() * 2;
            while pending > 0 {
                match ring.submit_and_wait(1) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                    Err(e) => return Err(e),
                }
                for cqe in ring.completion() {
                    let i = (cqe.user_data() >> 1) as usize;
                    if cqe.user_data() & 1 == 0 {
                        chains[i].read = Some(cqe.result());
                    } else {
                        chains[i].write = Some(cqe.result());
                    }
                    pending -= 1;
                }
            }
            // Settle each chain; finish partial ones by hand.
            let mut first_err = None;
            for c in &chains {
                let (read, write) = (c.read.unwrap_or(-libc::EIO), c.write.unwrap_or(-libc::EIO));
                if read < 0 {
                    first_err.get_or_insert(io::Error::from_raw_os_error(-read));
                    continue;
                }
                let got = read as usize;
                let wrote = if write >= 0 {
                    (write as usize).min(got)
                } else {
                    0
                };
                if write < 0 && write != -libc::ECANCELED {
                    first_err.get_or_insert(io::Error::from_raw_os_error(-write));
                    continue;
                }
                if wrote < got {
                    let bytes = &pool[c.at + wrote..c.at + got];
                    dst.write_all_at(bytes, c.offset + wrote as u64)?;
                }
                total += got as u64;
                if got < c.len as usize && got > 0 {
                    // Short read: the rest of the range next time round.
                    todo.push_back((c.offset + got as u64, c.offset + c.len as u64));
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        Ok(total)
    }
}
