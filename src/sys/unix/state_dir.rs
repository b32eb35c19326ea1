//! The state dir on Unix: one directory descriptor, `*at` calls relative
//! to it with `O_NOFOLLOW`, ownership and mode checked with `fstat`.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

/// A private directory of the daemon's, open by descriptor.
pub struct StateDir {
    path: PathBuf,
    fd: OwnedFd,
}

fn me() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn mode_of(st: &Stat) -> Mode {
    Mode::from_raw_mode(st.st_mode)
}

/// Refuses a directory another user could plant files in: owned by
/// someone other than us (or root), or writable by group or others.
fn check_private(what: &str, path: &Path, st: &Stat) -> io::Result<()> {
    let shown = path.display();
    if st.st_uid != me() && st.st_uid != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{what} {shown} belongs to uid {}, not to this process's user (uid {}): \
                 its owner could plant links in it that redirect replicafs's writes. \
                 Use a directory you own (remove it and replicafs creates it, mode 0700), \
                 or `chown {} {shown}`",
                st.st_uid,
                me(),
                me()
            ),
        ));
    }
    let mode = mode_of(st);
    if mode.intersects(Mode::WGRP | Mode::WOTH) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{what} {shown} is writable by its group or others (mode {:04o}): \
                 they could plant links in it that redirect replicafs's writes. \
                 Fix it with `chmod 700 {shown}`",
                mode.bits()
            ),
        ));
    }
    Ok(())
}

impl StateDir {
    /// Opens `path` as a state dir, creating it (and missing parents) with
    /// mode 0700 first if it does not exist. Refuses a directory owned by
    /// another user or writable by group or others.
    ///
    /// # Errors
    /// The directory cannot be made or opened, or is not private; the
    /// message names the path and the fix.
    pub fn open(path: &Path) -> io::Result<StateDir> {
        if std::fs::symlink_metadata(path).is_err() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|e| {
                    crate::error::context(format_args!("create state dir {}", path.display()), e)
                })?;
        }
        // The path the user named is resolved once, here (a symlink to the
        // state dir is theirs to make); everything below goes by descriptor.
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            crate::error::context(format_args!("open state dir {}", path.display()), e.into())
        })?;
        let st = rustix::fs::fstat(&fd)?;
        check_private("state dir", path, &st)?;
        Ok(StateDir {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// The directory `name` in this one, created 0700 if missing, held to
    /// the same checks; a symlink in its place is refused.
    pub fn subdir(&self, name: &str) -> io::Result<StateDir> {
        let path = self.path.join(name);
        match rustix::fs::mkdirat(&self.fd, name, Mode::RWXU) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => {
                return Err(crate::error::context(
                    format_args!("create {}", path.display()),
                    e.into(),
                ));
            }
        }
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| refuse_link(&path, e))?;
        let st = rustix::fs::fstat(&fd)?;
        check_private("directory", &path, &st)?;
        Ok(StateDir { path, fd })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens `name` with `flags` (plus `O_NOFOLLOW`, `O_NONBLOCK` so a
    /// planted FIFO cannot block us, `O_CLOEXEC`) and checks it is a
    /// regular file. A file opened for writing must be ours with one link
    /// (no hard link to a file elsewhere), and is made 0600 if an older
    /// version left it looser.
    fn open_with(&self, name: &str, flags: OFlags, write: bool) -> io::Result<File> {
        let path = self.path.join(name);
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            flags | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )
        .map_err(|e| refuse_link(&path, e))?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not a regular file: replicafs only uses files it made in its \
                     state dir (remove it)",
                    path.display()
                ),
            ));
        }
        if write {
            if st.st_uid != me() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} belongs to uid {}, not to this process's user (uid {}) (remove it)",
                        path.display(),
                        st.st_uid,
                        me()
                    ),
                ));
            }
            if st.st_nlink > 1 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} has {} hard links: it may be another file's name (remove it)",
                        path.display(),
                        st.st_nlink
                    ),
                ));
            }
            if mode_of(&st).intersects(Mode::RWXG | Mode::RWXO) {
                rustix::fs::fchmod(&fd, Mode::RUSR | Mode::WUSR).map_err(|e| {
                    crate::error::context(format_args!("chmod 600 {}", path.display()), e.into())
                })?;
            }
        }
        Ok(File::from(fd))
    }

    /// Opens an existing file for reading.
    pub fn open_read(&self, name: &str) -> io::Result<File> {
        self.open_with(name, OFlags::RDONLY, false)
    }

    /// Opens an existing file for writing (never truncating it).
    pub fn open_write(&self, name: &str) -> io::Result<File> {
        self.open_with(name, OFlags::WRONLY, true)
    }

    /// Opens `name` for appending, creating it (0600) if missing.
    pub fn open_append(&self, name: &str) -> io::Result<File> {
        self.open_with(name, OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE, true)
    }

    /// Opens `name` read-write for a lock, creating it (0600) if missing.
    pub fn open_lock(&self, name: &str) -> io::Result<File> {
        self.open_with(name, OFlags::RDWR | OFlags::CREATE, true)
    }

    /// Creates `name` afresh (0600, `O_EXCL`): whatever was there before
    /// (a stale temporary, a planted symlink) is unlinked first, which
    /// never follows a link.
    pub fn create_new(&self, name: &str) -> io::Result<File> {
        self.remove(name)?;
        self.open_with(
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::TRUNC,
            true,
        )
    }

    /// Renames `from` to `to`, both in this directory.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        rustix::fs::renameat(&self.fd, from, &self.fd, to).map_err(|e| {
            crate::error::context(
                format_args!("rename {} to {to}", self.path.join(from).display()),
                e.into(),
            )
        })
    }

    /// Removes the file `name` (a symlink itself, never its target); a
    /// missing one is fine.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(crate::error::context(
                format_args!("remove {}", self.path.join(name).display()),
                e.into(),
            )),
        }
    }

    /// Whether `name` exists (as anything; a symlink is not followed).
    pub fn exists(&self, name: &str) -> io::Result<bool> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(crate::error::context(
                format_args!("stat {}", self.path.join(name).display()),
                e.into(),
            )),
        }
    }

    /// Sets `name` (made by us just now, say a socket) to mode 0600.
    pub fn make_private(&self, name: &str) -> io::Result<()> {
        rustix::fs::chmodat(&self.fd, name, Mode::RUSR | Mode::WUSR, AtFlags::empty()).map_err(
            |e| {
                crate::error::context(
                    format_args!("chmod 600 {}", self.path.join(name).display()),
                    e.into(),
                )
            },
        )
    }

    /// The names in the directory (not `.` and `..`; names that are not
    /// UTF-8 are none of ours and left out).
    pub fn names(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in rustix::fs::Dir::read_from(&self.fd)? {
            let e = e?;
            if let Ok(n) = e.file_name().to_str() {
                if n != "." && n != ".." {
                    out.push(n.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Makes the directory's entries durable (after a create, rename or
    /// unlink).
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.fd).map_err(|e| {
            crate::error::context(format_args!("fsync {}", self.path.display()), e.into())
        })
    }
}

/// An open with `O_NOFOLLOW` that met a symlink says so and what to do.
fn refuse_link(path: &Path, e: Errno) -> io::Error {
    if e == Errno::LOOP {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a symbolic link: replicafs never follows links in its state dir \
                 (remove it)",
                path.display()
            ),
        )
    } else {
        crate::error::context(format_args!("open {}", path.display()), e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_dir::write_atomic;
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
