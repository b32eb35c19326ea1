//! The state dir and the journal directory in it: private directories that
//! only the daemon's user writes, and files in them reached only relative
//! to the directory's descriptor, never through a symlink.
//!
//! The daemon usually runs as root, and a state dir another user can write
//! into would let them redirect its writes: a symlink named like a
//! temporary file or a segment would make root overwrite or truncate any
//! file. So, like ssh with a loose `~/.ssh`, a directory owned by another
//! user, or writable by its group or others, is refused at start, and
//! every file is opened with `O_NOFOLLOW` relative to the directory (temp
//! files also `O_EXCL`, after a stale one is unlinked), with mode 0600 and
//! directories 0700 whatever the process's umask (the mount runs with
//! umask 0 for the passthrough's creation semantics). See docs/security.md.

use std::io;

/// The directory itself, per OS (`crate::sys`): on Unix a directory
/// descriptor and `*at` calls with `O_NOFOLLOW`.
pub use crate::sys::StateDir;

/// Reads a whole small file of `dir`, `None` when it does not exist.
pub fn read_optional(dir: &StateDir, name: &str) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    match dir.open_read(name) {
        Ok(mut f) => {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)
                .map_err(|e| crate::error::context(dir.path().join(name).display(), e))?;
            Ok(Some(buf))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `data` to `name` in `dir` atomically: a fresh temporary
/// (`O_EXCL`, never through a symlink), fsync, rename, fsync of the
/// directory. Callers that may race on one name serialize themselves.
pub fn write_atomic(dir: &StateDir, name: &str, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = format!("{name}.tmp");
    let mut f = dir.create_new(&tmp)?;
    let path = dir.path().join(&tmp);
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| crate::error::context(path.display(), e))?;
    drop(f);
    dir.rename(&tmp, name)?;
    dir.sync()
}
