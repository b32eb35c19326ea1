//! A directory tree reached only through a root descriptor: every relative
//! path is walked one component at a time with `O_NOFOLLOW`, so no symlink
//! (planted in SOURCE or TARGET) can lead outside the root. Used for the
//! target directory and for reading SOURCE by path during reconciles.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, Stat};

pub struct Tree {
    root: PathBuf,
    root_fd: OwnedFd,
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
        let root_fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| crate::error::context(format_args!("open {}", root.display()), e.into()))?;
        Ok(Tree {
            root: root.to_path_buf(),
            root_fd,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn root_fd(&self) -> BorrowedFd<'_> {
        self.root_fd.as_fd()
    }

    /// The directory containing `rel` and its last component. The root
    /// itself has no parent: EINVAL.
    pub fn parent(&self, rel: &Path) -> io::Result<(OwnedFd, OsString)> {
        let comps = components(rel)?;
        let (last, dirs) = comps
            .split_last()
            .ok_or_else(|| einval("the root has no parent"))?;
        let mut fd = self.root_fd.try_clone()?;
        for d in dirs {
            fd = rustix::fs::openat(
                &fd,
                *d,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
        }
        Ok((fd, last.to_os_string()))
    }

    /// An `O_PATH` handle on `rel` itself (not following a final symlink).
    pub fn node(&self, rel: &Path) -> io::Result<OwnedFd> {
        if components(rel)?.is_empty() {
            return self.root_fd.try_clone();
        }
        let (dir, name) = self.parent(rel)?;
        Ok(rustix::fs::openat(
            &dir,
            &name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// lstat, `None` when it does not exist.
    pub fn lstat(&self, rel: &Path) -> io::Result<Option<Stat>> {
        match self.node(rel) {
            Ok(fd) => Ok(Some(rustix::fs::fstat(&fd)?)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Opens a regular file (never through a symlink).
    pub fn open_file(&self, rel: &Path, flags: OFlags, mode: u32) -> io::Result<File> {
        let (dir, name) = self.parent(rel)?;
        let fd = rustix::fs::openat(
            &dir,
            &name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        Ok(File::from(fd))
    }

    /// Names in directory `rel` (without "." and "..").
    pub fn list(&self, rel: &Path) -> io::Result<Vec<OsString>> {
        list_at(self.node(rel)?.as_fd())
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
            ignore_enoent(rustix::fs::unlinkat(&dir, &name, AtFlags::REMOVEDIR).map_err(Into::into))
        } else {
            ignore_enoent(rustix::fs::unlinkat(&dir, &name, AtFlags::empty()).map_err(Into::into))
        }
    }

    /// The magic-link path of a handle, for calls that take a path only.
    pub fn proc_path(fd: BorrowedFd<'_>) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
    }

    /// The extended attributes of `rel` as (name, value) pairs.
    pub fn xattrs(&self, rel: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let node = self.node(rel)?;
        xattrs_of(node.as_fd())
    }
}

/// Names in the directory `dir` (sorted, without "." and "..").
pub fn list_at(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for e in rustix::fs::Dir::new(fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Whether an xattr call follows a final symlink: yes for a descriptor's
/// magic link (which lands on the inode itself), never for a name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    Yes,
    No,
}

/// The extended attributes of the inode behind `node`, as sorted (name,
/// value) pairs.
pub fn xattrs_of(node: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    xattrs_path(&Tree::proc_path(node), Follow::Yes)
}

/// The extended attributes of `name` in `dir` (a symlink's own).
pub fn xattrs_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    xattrs_path(&Tree::proc_path(dir).join(name), Follow::No)
}

pub fn xattrs_path(p: &Path, follow: Follow) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let follows = follow == Follow::Yes;
    let list_query = |p: &Path| match follows {
        true => rustix::fs::listxattr_query(p),
        false => rustix::fs::llistxattr_query(p),
    };
    let list = |p: &Path, b: &mut [u8]| match follows {
        true => rustix::fs::listxattr(p, b),
        false => rustix::fs::llistxattr(p, b),
    };
    let get_query = |p: &Path, n: &OsStr| match follows {
        true => rustix::fs::getxattr_query(p, n),
        false => rustix::fs::lgetxattr_query(p, n),
    };
    let get = |p: &Path, n: &OsStr, b: &mut [u8]| match follows {
        true => rustix::fs::getxattr(p, n, b),
        false => rustix::fs::lgetxattr(p, n, b),
    };
    let n = match list_query(p) {
        Ok(0) => return Ok(Vec::new()),
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) | Err(rustix::io::Errno::PERM) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut names = vec![0u8; n];
    let n = list(p, &mut names[..])?;
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let name_os = OsStr::from_bytes(name);
        let len = match get_query(p, name_os) {
            Ok(l) => l,
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut v = vec![0u8; len];
        let got = get(p, name_os, &mut v[..])?;
        v.truncate(got);
        out.push((name.to_vec(), v));
    }
    out.sort();
    Ok(out)
}

pub fn ignore_enoent(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

#[allow(clippy::unnecessary_cast)]
pub fn mode_of(st: &Stat) -> u32 {
    st.st_mode as u32
}

pub fn is_dir(st: &Stat) -> bool {
    mode_of(st) & 0o170000 == 0o040000
}

pub fn is_file(st: &Stat) -> bool {
    mode_of(st) & 0o170000 == 0o100000
}

pub fn is_symlink(st: &Stat) -> bool {
    mode_of(st) & 0o170000 == 0o120000
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
pub fn read_full(f: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], at + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
