//! The state dir where there are no `*at` calls (Windows): paths under the
//! directory, temporaries created new after a stale one is removed.
//! Ownership and ACLs are not checked here yet (docs/security.md).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

pub struct StateDir {
    path: PathBuf,
}

fn named(path: &Path, what: &str, e: io::Error) -> io::Error {
    crate::error::context(format_args!("{what} {}", path.display()), e)
}

impl StateDir {
    /// Opens `path` as a state dir, creating it if missing.
    pub fn open(path: &Path) -> io::Result<StateDir> {
        std::fs::create_dir_all(path).map_err(|e| named(path, "create state dir", e))?;
        Ok(StateDir {
            path: path.to_path_buf(),
        })
    }

    /// The directory `name` in this one, created if missing.
    pub fn subdir(&self, name: &str) -> io::Result<StateDir> {
        StateDir::open(&self.path.join(name))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_with(&self, name: &str, o: &OpenOptions) -> io::Result<File> {
        let p = self.path.join(name);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is a symbolic link: replicafs never follows links in its state dir \
                     (remove it)",
                    p.display()
                ),
            ));
        }
        o.open(&p).map_err(|e| named(&p, "open", e))
    }

    pub fn open_read(&self, name: &str) -> io::Result<File> {
        self.open_with(name, OpenOptions::new().read(true))
    }

    pub fn open_write(&self, name: &str) -> io::Result<File> {
        self.open_with(name, OpenOptions::new().write(true))
    }

    pub fn open_append(&self, name: &str) -> io::Result<File> {
        self.open_with(name, OpenOptions::new().append(true).create(true))
    }

    pub fn open_lock(&self, name: &str) -> io::Result<File> {
        self.open_with(
            name,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )
    }

    pub fn create_new(&self, name: &str) -> io::Result<File> {
        self.remove(name)?;
        self.open_with(name, OpenOptions::new().write(true).create_new(true))
    }

    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let p = self.path.join(from);
        std::fs::rename(&p, self.path.join(to)).map_err(|e| named(&p, "rename", e))
    }

    pub fn remove(&self, name: &str) -> io::Result<()> {
        let p = self.path.join(name);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(named(&p, "remove", e)),
        }
    }

    pub fn exists(&self, name: &str) -> io::Result<bool> {
        Ok(std::fs::symlink_metadata(self.path.join(name)).is_ok())
    }

    /// Access to files is the directory's ACL's business on Windows (not
    /// checked here yet, docs/security.md): nothing to tighten per file.
    pub fn make_private(&self, name: &str) -> io::Result<()> {
        self.exists(name).map(|_| ())
    }

    pub fn names(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.path).map_err(|e| named(&self.path, "list", e))? {
            if let Ok(n) = e?.file_name().into_string() {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// Directory entries cannot be flushed by handle here; NTFS journals
    /// its metadata.
    pub fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}
