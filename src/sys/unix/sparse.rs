//! Holes in files: where a file's data lies (`SEEK_DATA`/`SEEK_HOLE`) and
//! punching a hole (`fallocate(PUNCH_HOLE)`).

use std::fs::File;
use std::io;

use rustix::fs::SeekFrom;
use rustix::io::Errno;

/// The data segments of `f` within `[start, end)`, in order. A file
/// system that cannot tell holes from data reports one segment (the
/// whole range), as the kernel's generic `SEEK_DATA` does.
///
/// # Errors
///
/// The OS error of `lseek`, other than "no data past here" (ENXIO) and
/// "not supported".
pub fn data_segments(f: &File, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let data = match rustix::fs::seek(f, SeekFrom::Data(at)) {
            Ok(d) => d,
            // Only a hole (or the end of the file) from `at` on.
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL | Errno::OPNOTSUPP) => {
                out.push((at, end));
                break;
            }
            Err(e) => return Err(e.into()),
        };
        if data >= end {
            break;
        }
        let hole = match rustix::fs::seek(f, SeekFrom::Hole(data)) {
            Ok(h) => h,
            // The file shrank between the two calls.
            Err(Errno::NXIO) => end,
            Err(e) => return Err(e.into()),
        };
        let stop = hole.clamp(data + 1, end);
        out.push((data, stop));
        at = stop;
    }
    Ok(out)
}

/// `fallocate(PUNCH_HOLE | KEEP_SIZE)` over `[start, end)` of `f`.
/// `Ok(false)` where the file system cannot punch (EOPNOTSUPP, ENOSYS).
///
/// # Errors
///
/// Other OS errors of `fallocate`.
#[cfg(target_os = "linux")]
pub fn punch_hole(f: &File, start: u64, end: u64) -> io::Result<bool> {
    use rustix::fs::FallocateFlags;
    match rustix::fs::fallocate(
        f,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        start,
        end - start,
    ) {
        Ok(()) => Ok(true),
        Err(Errno::OPNOTSUPP | Errno::NOSYS) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// macOS: not punched (the caller writes zeros instead).
///
/// # Errors
///
/// None.
#[cfg(not(target_os = "linux"))]
pub fn punch_hole(_f: &File, _start: u64, _end: u64) -> io::Result<bool> {
    Ok(false)
}
