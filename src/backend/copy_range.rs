//! copy_file_range(2): the kernel copies (or, on filesystems that can,
//! shares) the bytes without a trip through user space. A benchmark peer
//! of the other backends.

use std::fs::File;
use std::io;

use super::FastIo;

#[derive(Debug, Default)]
pub struct CopyRange;

impl FastIo for CopyRange {
    fn name(&self) -> &'static str {
        "copy_file_range"
    }

    fn copy_ranges(&self, src: &File, dst: &File, ranges: &[(u64, u64)]) -> io::Result<u64> {
        let size = src.metadata()?.len();
        let mut total = 0;
        for &(start, end) in ranges {
            let (mut from, mut to) = (start, start);
            let end = end.min(size);
            while from < end {
                let want = usize::try_from(end - from).unwrap_or(usize::MAX);
                let n = match rustix::fs::copy_file_range(
                    src,
                    Some(&mut from),
                    dst,
                    Some(&mut to),
                    want,
                ) {
                    Ok(n) => n,
                    // Across filesystems (or where the kernel cannot):
                    // copy through user space, as cp does.
                    Err(
                        rustix::io::Errno::XDEV
                        | rustix::io::Errno::NOSYS
                        | rustix::io::Errno::OPNOTSUPP,
                    ) => {
                        total += super::Portable::new().copy_ranges(src, dst, &[(from, end)])?;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                };
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        }
        Ok(total)
    }
}
