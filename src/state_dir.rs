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

#[cfg(not(unix))]
mod portable;
#[cfg(unix)]
mod unix;

#[cfg(not(unix))]
pub use portable::StateDir;
#[cfg(unix)]
pub use unix::StateDir;

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

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn created_dirs_and_files_are_private() {
        let t = tempfile::tempdir().unwrap();
        let d = StateDir::open(&t.path().join("a/state")).unwrap();
        assert_eq!(mode(&t.path().join("a/state")), 0o700);
        let j = d.subdir("journal").unwrap();
        assert_eq!(mode(&t.path().join("a/state/journal")), 0o700);
        write_atomic(&j, "checkpoint", b"1").unwrap();
        drop(j.open_append("seg").unwrap());
        drop(d.open_lock("lock").unwrap());
        for f in ["journal/checkpoint", "journal/seg", "lock"] {
            assert_eq!(mode(&t.path().join("a/state").join(f)), 0o600, "{f}");
        }
        assert!(!t.path().join("a/state/journal/checkpoint.tmp").exists());
    }

    #[test]
    fn a_loose_dir_is_refused_and_names_the_fix() {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let Err(e) = StateDir::open(t.path()) else {
            panic!("a 0777 state dir was accepted")
        };
        let msg = e.to_string();
        assert!(msg.contains(&t.path().display().to_string()), "{msg}");
        assert!(msg.contains("chmod"), "{msg}");
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = StateDir::open(t.path()).unwrap();
        std::fs::create_dir(t.path().join("journal")).unwrap();
        std::fs::set_permissions(
            t.path().join("journal"),
            std::fs::Permissions::from_mode(0o757),
        )
        .unwrap();
        assert!(d.subdir("journal").is_err());
    }

    #[test]
    fn symlinks_are_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let d = StateDir::open(&t.path().join("state")).unwrap();
        for name in ["f.tmp", "seg", "lock", "plain"] {
            std::os::unix::fs::symlink(&victim, t.path().join("state").join(name)).unwrap();
        }
        // A stale temporary (a symlink) is removed, not written through.
        write_atomic(&d, "f", b"new").unwrap();
        assert_eq!(std::fs::read(t.path().join("state/f")).unwrap(), b"new");
        let Err(e) = d.open_append("seg") else {
            panic!("opened through a symlink")
        };
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(d.open_lock("lock").is_err());
        assert!(d.open_read("plain").is_err());
        assert!(d.open_write("plain").is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn loose_files_left_by_older_versions_are_made_private() {
        let t = tempfile::tempdir().unwrap();
        let d = StateDir::open(t.path()).unwrap();
        std::fs::write(t.path().join("lock"), b"").unwrap();
        std::fs::set_permissions(
            t.path().join("lock"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        drop(d.open_lock("lock").unwrap());
        assert_eq!(mode(&t.path().join("lock")), 0o600);
    }
}
