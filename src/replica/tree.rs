//! A directory tree reached only through a root handle: every relative
//! path is walked one component at a time without following symlinks, so
//! no symlink (planted in SOURCE or TARGET) can lead outside the root.
//! Used for the target directory and for reading SOURCE by path during
//! reconciles.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::sys::{self, Access, Dir, Errno, Meta, Node};

pub struct Tree {
    root: PathBuf,
    root_dir: Dir,
}

fn einval(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

/// The components of a relative path, refusing anything that could climb.
fn components(rel: &Path) -> io::Result<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return Err(einval("path leaves the tree")),
        }
    }
    Ok(out)
}

impl Tree {
    /// Opens `root` (which must be a directory; a symlink to one is
    /// resolved here, once, as the user named it).
    pub fn open(root: &Path) -> io::Result<Self> {
        Ok(Tree {
            root: root.to_path_buf(),
            root_dir: Dir::open(root)?,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn root_dir(&self) -> &Dir {
        &self.root_dir
    }

    /// The directory containing `rel` and its last component. The root
    /// itself has no parent: EINVAL.
    pub fn parent(&self, rel: &Path) -> io::Result<(Dir, OsString)> {
        let comps = components(rel)?;
        let (last, dirs) = comps
            .split_last()
            .ok_or_else(|| einval("the root has no parent"))?;
        let mut dir = self.root_dir.try_clone()?;
        for d in dirs {
            dir = dir.openat_dir(d)?;
        }
        Ok((dir, last.to_os_string()))
    }

    /// A handle on `rel` itself (not following a final symlink).
    pub fn node(&self, rel: &Path) -> io::Result<Node> {
        if components(rel)?.is_empty() {
            return self.root_dir.node();
        }
        let (dir, name) = self.parent(rel)?;
        dir.openat_node(&name)
    }

    /// lstat, `None` when it does not exist.
    pub fn lstat(&self, rel: &Path) -> io::Result<Option<Meta>> {
        match self.node(rel) {
            Ok(node) => Ok(Some(node.fstat()?)),
            Err(e) if Errno::NoEnt.is(&e) || Errno::NotDir.is(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens a regular file (never through a symlink); `create` is the
    /// mode of one made if missing.
    pub fn open_file(&self, rel: &Path, access: Access, create: Option<u32>) -> io::Result<File> {
        let (dir, name) = self.parent(rel)?;
        dir.openat(&name, access, create)
    }

    /// Names in directory `rel` (sorted, without "." and "..").
    pub fn list(&self, rel: &Path) -> io::Result<Vec<OsString>> {
        self.node(rel)?.into_dir().list()
    }

    /// Removes `rel` whatever it is, directories recursively; a missing
    /// entry is fine.
    pub fn remove_all(&self, rel: &Path) -> io::Result<()> {
        let Some(st) = self.lstat(rel)? else {
            return Ok(());
        };
        let (dir, name) = self.parent(rel)?;
        if is_dir(&st) {
            for child in self.list(rel)? {
                self.remove_all(&rel.join(child))?;
            }
            ignore_enoent(dir.rmdirat(&name))
        } else {
            ignore_enoent(dir.unlinkat(&name))
        }
    }

    /// The extended attributes of `rel` as (name, value) pairs.
    pub fn xattrs(&self, rel: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.node(rel)?.listxattrs()
    }

    /// The target of the symlink `rel`.
    pub fn readlink(&self, rel: &Path) -> io::Result<Vec<u8>> {
        self.node(rel)?.readlink()
    }
}

pub fn ignore_enoent(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if Errno::NoEnt.is(&e) => Ok(()),
        r => r,
    }
}

pub fn mode_of(st: &Meta) -> u32 {
    st.mode
}

pub fn is_dir(st: &Meta) -> bool {
    st.is_dir()
}

pub fn is_file(st: &Meta) -> bool {
    st.is_file()
}

pub fn is_symlink(st: &Meta) -> bool {
    st.is_symlink()
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
pub fn read_full(f: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match sys::read_at(f, &mut buf[done..], at + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
