//! Holes in files on Windows: not told apart yet (sparse files need
//! `FSCTL_QUERY_ALLOCATED_RANGES` and `FSCTL_SET_ZERO_DATA`), so every file
//! is one data segment, as on a Unix file system without `SEEK_DATA`.

use std::fs::File;
use std::io;

/// The data segments of `f` within `[start, end)`: the whole range,
/// holes not being reported yet.
///
/// # Errors
///
/// None yet.
pub fn data_segments(_f: &File, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
    Ok(if start < end {
        vec![(start, end)]
    } else {
        Vec::new()
    })
}

/// Punching holes is not done yet: `Ok(false)`, and the caller writes
/// zeros instead.
///
/// # Errors
///
/// None.
pub fn punch_hole(_f: &File, _start: u64, _end: u64) -> io::Result<bool> {
    Ok(false)
}
