//! Holes: a range of a SOURCE file is copied as its data segments only
//! (`SEEK_DATA`/`SEEK_HOLE`), and where SOURCE has a hole the target gets
//! one too: punched where the target had bytes, simply not written past
//! its old end. The final size is the one a dense copy would have left.

use std::fs::File;
use std::io;

use crate::backend::FastIo;
use crate::sys::{self, data_segments};

/// Punches a hole over `[start, end)` of `dst`; where the target's file
/// system cannot punch, zeros are written instead (read from SOURCE's
/// hole), so the bytes are right either way.
fn punch(io: &dyn FastIo, src: &File, dst: &File, start: u64, end: u64) -> io::Result<()> {
    if sys::punch_hole(dst, start, end)? {
        Ok(())
    } else {
        io.copy_ranges(src, dst, &[(start, end)]).map(drop)
    }
}

/// Copies each `(start, end)` range of `src` to `dst` keeping SOURCE's
/// holes: data segments go through `io`, holes are punched below `dst`'s
/// old size and skipped above it. Ranges are cut at `src`'s end. Returns
/// the data bytes written.
///
/// # Errors
///
/// The first error of a stat, seek, copy, punch or truncate.
pub fn copy_ranges(
    io: &dyn FastIo,
    src: &File,
    dst: &File,
    ranges: &[(u64, u64)],
) -> io::Result<u64> {
    let old = dst.metadata()?.len();
    let size = src.metadata()?.len();
    let mut data = Vec::new();
    let mut holes = Vec::new();
    // What a dense copy would leave: the old size, or the end of the last
    // byte copied.
    let mut want = old;
    for &(start, end) in ranges {
        let end = end.min(size);
        if start >= end {
            continue;
        }
        want = want.max(end);
        let mut at = start;
        for (a, b) in data_segments(src, start, end)? {
            if a > at {
                holes.push((at, a));
            }
            data.push((a, b));
            at = b;
        }
        if at < end {
            holes.push((at, end));
        }
    }
    let n = io.copy_ranges(src, dst, &data)?;
    for (a, b) in holes {
        let b = b.min(old);
        if a < b {
            punch(io, src, dst, a, b)?;
        }
    }
    if dst.metadata()?.len() < want {
        dst.set_len(want)?;
    }
    Ok(n)
}

/// Punches, in `dst`, every hole `src` has below `end` where `dst` holds
/// data (a reconcile's pass for bytes that compare equal but were
/// written out as zeros).
///
/// # Errors
///
/// As [`copy_ranges`].
pub fn punch_holes(io: &dyn FastIo, src: &File, dst: &File, end: u64) -> io::Result<()> {
    let end = end.min(dst.metadata()?.len());
    let mut at = 0;
    for (a, b) in data_segments(src, 0, end)?
        .into_iter()
        .chain(std::iter::once((end, end)))
    {
        if a > at && !data_segments(dst, at, a)?.is_empty() {
            punch(io, src, dst, at, a)?;
        }
        at = b;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_all_at(f: &File, buf: &[u8], at: u64) {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = f;
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(buf).unwrap();
    }

    fn blocks(f: &File) -> u64 {
        sys::fstat(f).unwrap().blocks
    }

    fn sparse(path: &std::path::Path, size: u64, data: &[(u64, u64)]) -> File {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        for &(a, b) in data {
            write_all_at(&f, &vec![0xa5; (b - a) as usize], a);
        }
        f.set_len(size).unwrap();
        f
    }

    #[test]
    fn copies_data_and_keeps_holes() {
        let d = tempfile::tempdir().unwrap();
        const K: u64 = 1024;
        let src = sparse(
            &d.path().join("s"),
            196 * K,
            &[(0, 64 * K), (116 * K, 196 * K)],
        );
        let segs = data_segments(&src, 0, 196 * K).unwrap();
        if segs.len() == 1 {
            eprintln!("SKIPPED: this file system does not report holes");
            return;
        }
        assert_eq!(segs, vec![(0, 64 * K), (116 * K, 196 * K)]);
        // A target that had data everywhere: the hole is punched.
        let dst = sparse(&d.path().join("d"), 196 * K, &[(0, 196 * K)]);
        let io = crate::backend::Portable::new();
        let n = copy_ranges(&io, &src, &dst, &[(0, 196 * K)]).unwrap();
        assert_eq!(n, 144 * K);
        assert_eq!(std::fs::read(d.path().join("s")).unwrap(), {
            std::fs::read(d.path().join("d")).unwrap()
        });
        assert_eq!(blocks(&src), blocks(&dst));
        // A new target: nothing written into the hole, the size set.
        let new = sparse(&d.path().join("n"), 0, &[]);
        copy_ranges(&io, &src, &new, &[(0, 300 * K)]).unwrap();
        assert_eq!(new.metadata().unwrap().len(), 196 * K);
        assert_eq!(blocks(&new), blocks(&src));
        // A trailing hole that a dense copy would have extended the file by.
        let tail = sparse(&d.path().join("t"), 10 * K, &[(0, 4 * K)]);
        let empty = sparse(&d.path().join("e"), 0, &[]);
        copy_ranges(&io, &tail, &empty, &[(0, 10 * K)]).unwrap();
        assert_eq!(empty.metadata().unwrap().len(), 10 * K);
        // Zeros written out where SOURCE has a hole are punched.
        let filled = sparse(&d.path().join("f"), 196 * K, &[]);
        write_all_at(&filled, &vec![0; 196 * 1024], 0);
        write_all_at(&filled, &vec![0xa5; 64 * 1024], 0);
        write_all_at(&filled, &vec![0xa5; 80 * 1024], 116 * K);
        punch_holes(&io, &src, &filled, 196 * K).unwrap();
        assert_eq!(blocks(&filled), blocks(&src));
    }
}
