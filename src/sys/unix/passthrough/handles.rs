//! Open file and directory handles.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::inode::Pin;
use super::sys;
use crate::fs::{DirEntry, Fh, FileKind};

pub enum Handle {
    File {
        file: File,
        written: AtomicBool,
        /// The caller opened with O_DIRECT (which our own descriptor does
        /// not carry, see `open_flags`) and SOURCE's file system can read
        /// without keeping the pages (`RWF_DONTCACHE`).
        uncached_reads: AtomicBool,
        _pin: Pin,
    },
    Dir {
        stream: Mutex<DirStream>,
        _pin: Pin,
    },
}

fn ebadf() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

impl Handle {
    /// An open file; `pin` keeps its inode's descriptor while it is open.
    pub fn new_file(file: File, pin: Pin, direct: bool) -> Self {
        Handle::File {
            file,
            written: AtomicBool::new(false),
            uncached_reads: AtomicBool::new(direct),
            _pin: pin,
        }
    }

    pub fn new_dir(stream: DirStream, pin: Pin) -> Self {
        Handle::Dir {
            stream: Mutex::new(stream),
            _pin: pin,
        }
    }

    pub fn as_file(&self) -> Option<&File> {
        match self {
            Handle::File { file, .. } => Some(file),
            Handle::Dir { .. } => None,
        }
    }

    /// The open file, or EBADF for a directory handle.
    pub fn file(&self) -> io::Result<&File> {
        self.as_file().ok_or_else(ebadf)
    }

    /// The directory stream, or EBADF for a file handle.
    pub fn dir(&self) -> io::Result<std::sync::MutexGuard<'_, DirStream>> {
        match self {
            Handle::Dir { stream, .. } => Ok(stream.lock().unwrap_or_else(|e| e.into_inner())),
            Handle::File { .. } => Err(ebadf()),
        }
    }

    pub fn mark_written(&self) {
        if let Handle::File { written, .. } = self {
            written.store(true, Ordering::Relaxed);
        }
    }

    /// Reads should not stay in SOURCE's page cache.
    pub fn uncached_reads(&self) -> bool {
        matches!(self, Handle::File { uncached_reads, .. } if uncached_reads.load(Ordering::Relaxed))
    }

    /// SOURCE's file system cannot read uncached: read the ordinary way.
    pub fn cached_reads_only(&self) {
        if let Handle::File { uncached_reads, .. } = self {
            uncached_reads.store(false, Ordering::Relaxed);
        }
    }

    pub fn was_written(&self) -> bool {
        matches!(self, Handle::File { written, .. } if written.load(Ordering::Relaxed))
    }
}

#[derive(Default)]
pub struct Handles {
    map: RwLock<HashMap<Fh, Arc<Handle>>>,
    next: AtomicU64,
}

impl Handles {
    pub fn insert(&self, handle: Handle) -> Fh {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, Arc::new(handle));
        fh
    }

    pub fn get(&self, fh: Fh) -> io::Result<Arc<Handle>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh)
            .cloned()
            .ok_or_else(ebadf)
    }

    pub fn remove(&self, fh: Fh) -> io::Result<Arc<Handle>> {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh)
            .ok_or_else(ebadf)
    }
}

/// A directory being listed. Offsets are the directory's own stream
/// cookies (telldir values), so a listing resumes exactly where the kernel
/// asks, also after entries were added or removed meanwhile.
pub struct DirStream {
    dir: rustix::fs::Dir,
    /// The cookie the stream is positioned at.
    pos: u64,
    /// Entries read since the last rewind.
    index: u64,
}

impl DirStream {
    pub fn new(dir: rustix::fs::Dir) -> Self {
        DirStream {
            dir,
            pos: 0,
            index: 0,
        }
    }

    pub fn read(
        &mut self,
        offset: u64,
        add: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> io::Result<()> {
        if offset != self.pos {
            if offset == 0 {
                self.dir.rewind();
                self.index = 0;
            } else {
                self.index = sys::seek_dir(&mut self.dir, offset)?;
            }
            self.pos = offset;
        }
        while let Some(entry) = self.dir.read() {
            let entry = entry?;
            self.index += 1;
            let next = sys::dir_cookie(&entry, self.index);
            // The stream moved past this entry whether or not it fits.
            self.pos = next;
            let name = entry.file_name().to_bytes();
            let name = std::ffi::OsStr::from_bytes(name);
            let full = add(DirEntry {
                ino: entry.ino(),
                offset: next,
                kind: kind_of(entry.file_type()),
                name,
            });
            if full {
                // Not delivered: make the next call seek back to it.
                self.pos = u64::MAX;
                break;
            }
        }
        Ok(())
    }

    pub fn sync(&self, datasync: bool) -> io::Result<()> {
        let fd = self.dir.fd()?;
        if datasync {
            sys::fdatasync(fd)
        } else {
            Ok(rustix::fs::fsync(fd)?)
        }
    }
}

fn kind_of(t: rustix::fs::FileType) -> FileKind {
    use rustix::fs::FileType as T;
    match t {
        T::Directory => FileKind::Dir,
        T::Symlink => FileKind::Symlink,
        T::CharacterDevice => FileKind::CharDevice,
        T::BlockDevice => FileKind::BlockDevice,
        T::Fifo => FileKind::Fifo,
        T::Socket => FileKind::Socket,
        _ => FileKind::File,
    }
}
