//! The directory target: a local directory kept equal to SOURCE. Every
//! path is resolved under the target's root descriptor without following
//! symlinks; data moves through the fast-I/O backend.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rustix::fs::{AtFlags, FallocateFlags, Mode, OFlags, RenameFlags, Stat, Timespec, Timestamps};

use super::sparse;
use super::tree::{self, Tree, is_dir, is_file, is_symlink, mode_of, read_full};
use super::{Change, Progress, Target};
use crate::backend::FastIo;
use crate::fs::Identity;
use crate::journal::record::{NodeKind, Op};

pub struct DirTarget {
    path: PathBuf,
    /// Reopened when the directory was removed and made again.
    tree: Mutex<Option<Arc<Tree>>>,
    reset: std::sync::atomic::AtomicBool,
}

impl DirTarget {
    /// The target at `path`, created if missing.
    pub fn new(path: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(path).map_err(|e| {
            crate::error::context(format_args!("create target {}", path.display()), e)
        })?;
        let t = DirTarget {
            path: path.to_path_buf(),
            tree: Mutex::new(None),
            reset: std::sync::atomic::AtomicBool::new(false),
        };
        t.tree()?;
        Ok(t)
    }

    fn tree(&self) -> io::Result<Arc<Tree>> {
        let mut g = self.tree.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = g.as_ref() {
            // Still the directory at that path? (It may have been removed and
            // made again while the target was failing.)
            let live = rustix::fs::fstat(t.root_fd()).ok();
            let now = rustix::fs::stat(&self.path).ok();
            if let (Some(a), Some(b)) = (live, now) {
                if a.st_ino == b.st_ino && a.st_dev == b.st_dev && a.st_nlink > 0 {
                    return Ok(Arc::clone(t));
                }
            }
        }
        let t = Arc::new(Tree::open(&self.path)?);
        if g.replace(Arc::clone(&t)).is_some() {
            tracing::warn!(
                "target {} was replaced: reconciling it whole",
                self.path.display()
            );
            self.reset.store(true, Ordering::Release);
        }
        Ok(t)
    }
}

fn times_of(st: &Stat) -> Timestamps {
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as i64,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as i64,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
}

/// Makes `node`'s owner, mode and times those of `src`.
fn copy_attrs(node: BorrowedFd<'_>, src: &Stat) -> io::Result<()> {
    let symlink = is_symlink(src);
    #[allow(clippy::unnecessary_cast)]
    let (uid, gid) = (src.st_uid as u32, src.st_gid as u32);
    let have = rustix::fs::fstat(node)?;
    #[allow(clippy::unnecessary_cast)]
    if have.st_uid as u32 != uid || have.st_gid as u32 != gid {
        rustix::fs::chownat(
            node,
            "",
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    if !symlink {
        let want = mode_of(src) & 0o7777;
        // chown may have cleared set-id bits: compare after it.
        let have = rustix::fs::fstat(node)?;
        if mode_of(&have) & 0o7777 != want {
            rustix::fs::chmod(Tree::proc_path(node), Mode::from_raw_mode(want))?;
        }
    }
    rustix::fs::utimensat(node, "", &times_of(src), AtFlags::EMPTY_PATH)?;
    Ok(())
}

/// Makes the xattrs of `node` exactly `want`.
fn copy_xattrs(node: BorrowedFd<'_>, want: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    let have = tree::xattrs_of(node)?;
    if have == want {
        return Ok(());
    }
    let p = Tree::proc_path(node);
    for (name, _) in &have {
        if !want.iter().any(|(n, _)| n == name) {
            let _ = rustix::fs::removexattr(&p, OsStr::from_bytes_compat(name));
        }
    }
    for (name, value) in want {
        if !have.iter().any(|(n, v)| n == name && v == value) {
            rustix::fs::setxattr(
                &p,
                OsStr::from_bytes_compat(name),
                value,
                rustix::fs::XattrFlags::empty(),
            )?;
        }
    }
    Ok(())
}

trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &OsStr;
}

impl FromBytesCompat for OsStr {
    fn from_bytes_compat(b: &[u8]) -> &OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

/// A SOURCE inode's identity opened for reading.
fn open_subject(id: &Identity) -> io::Result<File> {
    crate::fs::passthrough::open_identity(id, OFlags::RDONLY)
}

impl DirTarget {
    fn create(&self, t: &Tree, rel: &Path, kind: NodeKind, mode: u32) -> io::Result<()> {
        let (dir, name) = t.parent(rel)?;
        let perm = Mode::from_raw_mode(mode & 0o7777);
        let attempt = || -> io::Result<()> {
            match kind {
                NodeKind::File => {
                    let f = rustix::fs::openat(
                        &dir,
                        &name,
                        OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        perm,
                    )?;
                    // The name was new in SOURCE: whatever was here is stale.
                    rustix::fs::ftruncate(&f, 0)?;
                    Ok(())
                }
                NodeKind::Dir => Ok(rustix::fs::mkdirat(&dir, &name, perm)?),
                NodeKind::Fifo => Ok(rustix::fs::mknodat(
                    &dir,
                    &name,
                    rustix::fs::FileType::Fifo,
                    perm,
                    0,
                )?),
                NodeKind::Socket => Ok(rustix::fs::mknodat(
                    &dir,
                    &name,
                    rustix::fs::FileType::Socket,
                    perm,
                    0,
                )?),
                NodeKind::CharDevice(d) => Ok(rustix::fs::mknodat(
                    &dir,
                    &name,
                    rustix::fs::FileType::CharacterDevice,
                    perm,
                    d,
                )?),
                NodeKind::BlockDevice(d) => Ok(rustix::fs::mknodat(
                    &dir,
                    &name,
                    rustix::fs::FileType::BlockDevice,
                    perm,
                    d,
                )?),
            }
        };
        match attempt() {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    errno(&e),
                    Some(libc::EEXIST) | Some(libc::ELOOP) | Some(libc::EISDIR)
                ) =>
            {
                let existing = t.lstat(rel)?;
                let same_dir = kind == NodeKind::Dir && existing.as_ref().is_some_and(is_dir);
                if same_dir {
                    return Ok(());
                }
                t.remove_all(rel)?;
                attempt()
            }
            Err(e) => Err(e),
        }
    }

    fn write(
        &self,
        t: &Tree,
        rel: &Path,
        subject: Option<&Identity>,
        ranges: &[(u64, u64)],
        io: &dyn FastIo,
    ) -> io::Result<u64> {
        let Some(subject) = subject else {
            return Err(io::Error::other(format!("no source for {}", rel.display())));
        };
        let st = rustix::fs::fstat(subject.as_fd())?;
        if st.st_nlink == 0 {
            // Unlinked in SOURCE since: its data has nowhere to go.
            return Ok(0);
        }
        let src = open_subject(subject)?;
        let dst = t.open_file(rel, OFlags::WRONLY | OFlags::CREATE, 0o600)?;
        let n = sparse::copy_ranges(io, &src, &dst, ranges)?;
        rustix::fs::futimens(&dst, &times_of(&st))?;
        Ok(n)
    }

    fn apply_op(&self, t: &Tree, c: &Change<'_>, io: &dyn FastIo) -> io::Result<u64> {
        let attrs_from_subject = |rel: &Path| -> io::Result<()> {
            if let Some(s) = c.subject {
                let st = rustix::fs::fstat(s.as_fd())?;
                let node = t.node(rel)?;
                copy_attrs(node.as_fd(), &st)?;
            }
            Ok(())
        };
        let mut bytes = 0;
        match c.op {
            Op::Create { path, kind, mode } => {
                self.create(t, path, *kind, *mode)?;
                attrs_from_subject(path)?;
            }
            Op::Symlink { path, target } => {
                let (dir, name) = t.parent(path)?;
                match rustix::fs::symlinkat(target, &dir, &name) {
                    Err(rustix::io::Errno::EXIST) => {
                        t.remove_all(path)?;
                        rustix::fs::symlinkat(target, &dir, &name)?;
                    }
                    r => r?,
                }
                attrs_from_subject(path)?;
            }
            Op::Link { from, to } => {
                let (fd, fname) = t.parent(from)?;
                let (td, tname) = t.parent(to)?;
                match rustix::fs::linkat(&fd, &fname, &td, &tname, AtFlags::empty()) {
                    Err(rustix::io::Errno::EXIST) => {
                        t.remove_all(to)?;
                        rustix::fs::linkat(&fd, &fname, &td, &tname, AtFlags::empty())?;
                    }
                    r => r?,
                }
            }
            Op::Unlink { path } => {
                let (dir, name) = t.parent(path)?;
                match rustix::fs::unlinkat(&dir, &name, AtFlags::empty()) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                    Err(rustix::io::Errno::ISDIR) => t.remove_all(path)?,
                    Err(e) => return Err(e.into()),
                }
            }
            Op::Rmdir { path } => {
                let (dir, name) = t.parent(path)?;
                match rustix::fs::unlinkat(&dir, &name, AtFlags::REMOVEDIR) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                    Err(rustix::io::Errno::NOTEMPTY) | Err(rustix::io::Errno::NOTDIR) => {
                        t.remove_all(path)?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Op::Rename { from, to, flags } => {
                let (fd, fname) = t.parent(from)?;
                let (td, tname) = t.parent(to)?;
                rustix::fs::renameat_with(
                    &fd,
                    &fname,
                    &td,
                    &tname,
                    RenameFlags::from_bits_retain(*flags),
                )?;
            }
            Op::Attr { path } => attrs_from_subject(path)?,
            Op::Truncate { path, size } => {
                let f = t.open_file(path, OFlags::WRONLY, 0)?;
                f.set_len(*size)?;
                drop(f);
                attrs_from_subject(path)?;
            }
            Op::Write { path, offset, len } => {
                let ranges: Vec<(u64, u64)> = match c.extents {
                    Some(x) => x.iter().collect(),
                    None => vec![(*offset, offset + len)],
                };
                bytes = self.write(t, path, c.subject, &ranges, io)?;
            }
            Op::Fallocate {
                path,
                mode,
                offset,
                len,
            } => {
                let f = t.open_file(path, OFlags::WRONLY, 0)?;
                match rustix::fs::fallocate(
                    &f,
                    FallocateFlags::from_bits_retain(*mode as _),
                    *offset,
                    *len,
                ) {
                    Ok(()) => {}
                    // The target filesystem cannot: the data copy below
                    // still makes the bytes right.
                    Err(rustix::io::Errno::OPNOTSUPP) => {}
                    Err(e) => return Err(e.into()),
                }
                drop(f);
                if let Some(s) = c.subject {
                    let src = open_subject(s)?;
                    let dst = t.open_file(path, OFlags::WRONLY, 0)?;
                    let end = src.metadata()?.len().min(offset.saturating_add(*len));
                    // Holes too: a punched range stays punched.
                    bytes = sparse::copy_ranges(io, &src, &dst, &[(*offset, end)])?;
                    if dst.metadata()?.len() != src.metadata()?.len()
                        && *mode & libc::FALLOC_FL_KEEP_SIZE == 0
                    {
                        dst.set_len(src.metadata()?.len())?;
                    }
                }
                attrs_from_subject(path)?;
            }
            Op::SetXattr {
                path,
                name,
                value,
                flags: _,
            } => {
                let node = t.node(path)?;
                rustix::fs::setxattr(
                    Tree::proc_path(node.as_fd()),
                    OsStr::from_bytes_compat(name),
                    value,
                    rustix::fs::XattrFlags::empty(),
                )?;
            }
            Op::RemoveXattr { path, name } => {
                let node = t.node(path)?;
                match rustix::fs::removexattr(
                    Tree::proc_path(node.as_fd()),
                    OsStr::from_bytes_compat(name),
                ) {
                    Ok(()) | Err(rustix::io::Errno::NODATA) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            // The engine reconciles these itself; nothing to apply.
            Op::Resync { .. } => {}
        }
        for (dir, id) in c.parents {
            let st = rustix::fs::fstat(id.as_fd())?;
            if st.st_nlink == 0 {
                continue;
            }
            if let Ok(node) = t.node(dir) {
                rustix::fs::utimensat(node.as_fd(), "", &times_of(&st), AtFlags::EMPTY_PATH)?;
            }
        }
        Ok(bytes)
    }

    /// Reconciles one entry (and below it, for directories).
    #[allow(clippy::too_many_arguments)]
    fn reconcile_entry(
        &self,
        src: &Tree,
        t: &Tree,
        rel: &Path,
        dirty: bool,
        links: &mut HashMap<(u64, u64), PathBuf>,
        progress: &Progress,
        io: &dyn FastIo,
    ) -> io::Result<()> {
        progress.entries.fetch_add(1, Ordering::Relaxed);
        let Some(s) = src.lstat(rel)? else {
            if t.lstat(rel)?.is_some() {
                tracing::debug!("reconcile: removing {} (not in SOURCE)", rel.display());
                progress.entries_fixed.fetch_add(1, Ordering::Relaxed);
            }
            return t.remove_all(rel);
        };
        let root = rel.as_os_str().is_empty();
        let have = t.lstat(rel)?;
        let same_type = have
            .as_ref()
            .is_some_and(|h| mode_of(h) & 0o170000 == mode_of(&s) & 0o170000);
        // Hard links: the second name of an inode links to the first.
        #[allow(clippy::unnecessary_cast)]
        let key = (s.st_dev as u64, s.st_ino as u64);
        if !is_dir(&s) && s.st_nlink > 1 {
            if let Some(first) = links.get(&key).cloned() {
                let first_t = t.lstat(&first)?;
                let linked = match (&have, &first_t) {
                    (Some(h), Some(f)) => h.st_ino == f.st_ino && h.st_dev == f.st_dev,
                    _ => false,
                };
                if !linked {
                    t.remove_all(rel)?;
                    let (fd, fname) = t.parent(&first)?;
                    let (td, tname) = t.parent(rel)?;
                    rustix::fs::linkat(&fd, &fname, &td, &tname, AtFlags::empty())?;
                    progress.entries_fixed.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(());
            }
            links.insert(key, rel.to_path_buf());
        }
        if !same_type && !root {
            if have.is_some() {
                t.remove_all(rel)?;
            }
            let kind = if is_dir(&s) {
                NodeKind::Dir
            } else if is_file(&s) {
                NodeKind::File
            } else if is_symlink(&s) {
                let target = rustix::fs::readlinkat(src.node(rel)?, "", Vec::new())?;
                let (dir, name) = t.parent(rel)?;
                rustix::fs::symlinkat(target.as_c_str(), &dir, &name)?;
                progress.entries_fixed.fetch_add(1, Ordering::Relaxed);
                let node = t.node(rel)?;
                return copy_attrs(node.as_fd(), &s);
            } else {
                let m = mode_of(&s) & 0o170000;
                #[allow(clippy::unnecessary_cast)]
                let rdev = s.st_rdev as u64;
                match m {
                    0o010000 => NodeKind::Fifo,
                    0o140000 => NodeKind::Socket,
                    0o020000 => NodeKind::CharDevice(rdev),
                    _ => NodeKind::BlockDevice(rdev),
                }
            };
            self.create(t, rel, kind, 0o700)?;
            tracing::debug!("reconcile: created {}", rel.display());
            progress.entries_fixed.fetch_add(1, Ordering::Relaxed);
        }
        if is_symlink(&s) {
            let a = rustix::fs::readlinkat(src.node(rel)?, "", Vec::new())?;
            let b = rustix::fs::readlinkat(t.node(rel)?, "", Vec::new())?;
            if a != b {
                t.remove_all(rel)?;
                let (dir, name) = t.parent(rel)?;
                rustix::fs::symlinkat(a.as_c_str(), &dir, &name)?;
                progress.entries_fixed.fetch_add(1, Ordering::Relaxed);
            }
        } else if is_file(&s) {
            let h = t
                .lstat(rel)?
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
            let quick_same = h.st_size == s.st_size
                && h.st_mtime == s.st_mtime
                && h.st_mtime_nsec == s.st_mtime_nsec;
            if !quick_same || dirty {
                let n = self.block_copy(src, t, rel, io)?;
                progress.bytes_copied.fetch_add(n, Ordering::Relaxed);
                progress.entries_fixed.fetch_add(1, Ordering::Relaxed);
            }
        } else if is_dir(&s) {
            let want = src.list(rel)?;
            for name in t.list(rel)? {
                if want.binary_search(&name).is_err() {
                    t.remove_all(&rel.join(&name))?;
                    progress.entries_fixed.fetch_add(1, Ordering::Relaxed);
                }
            }
            for name in want {
                self.reconcile_entry(src, t, &rel.join(name), dirty, links, progress, io)?;
            }
        }
        let node = t.node(rel)?;
        let snode = src.node(rel)?;
        if !is_symlink(&s) {
            copy_xattrs(node.as_fd(), &tree::xattrs_of(snode.as_fd())?)?;
        }
        // Times last: the contents above changed the directory's.
        let s = rustix::fs::fstat(&snode)?;
        copy_attrs(node.as_fd(), &s)
    }

    /// Copies the blocks of `rel` that differ (keeping SOURCE's holes), and
    /// sets the size.
    fn block_copy(&self, src: &Tree, t: &Tree, rel: &Path, io: &dyn FastIo) -> io::Result<u64> {
        const BLOCK: usize = 1 << 20;
        let s = src.open_file(rel, OFlags::RDONLY, 0)?;
        let d = t.open_file(rel, OFlags::RDWR, 0)?;
        let size = s.metadata()?.len();
        let mut a = vec![0u8; BLOCK];
        let mut b = vec![0u8; BLOCK];
        let mut ranges = Vec::new();
        let mut off = 0u64;
        while off < size {
            let want = ((size - off) as usize).min(BLOCK);
            let n = read_full(&s, &mut a[..want], off)?;
            let m = read_full(&d, &mut b[..want], off)?;
            if n != m || a[..n] != b[..n] {
                ranges.push((off, off + n as u64));
            }
            if n < want {
                break;
            }
            off += n as u64;
        }
        // Where SOURCE has holes the target keeps or gets them, also in
        // blocks whose bytes already compare equal (zeros written out).
        sparse::punch_holes(io, &s, &d, size)?;
        let copied = sparse::copy_ranges(io, &s, &d, &ranges)?;
        d.set_len(size)?;
        Ok(copied)
    }
}

impl Target for DirTarget {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn apply(&self, change: &Change<'_>, io: &dyn FastIo) -> io::Result<u64> {
        let t = self.tree()?;
        let r = self.apply_op(&t, change, io);
        tracing::trace!(op = ?change.op, ok = r.is_ok(), "applied");
        r
    }

    fn take_reset(&self) -> bool {
        self.reset.swap(false, Ordering::AcqRel)
    }

    fn sync(&self) -> io::Result<()> {
        let t = self.tree()?;
        let fd = rustix::fs::openat(
            t.root_fd(),
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(rustix::fs::syncfs(&fd)?)
    }

    fn reconcile(
        &self,
        source: &Path,
        rel: &Path,
        known_dirty: bool,
        progress: &Arc<Progress>,
        io: &dyn FastIo,
    ) -> io::Result<()> {
        let src = Tree::open(source)?;
        let t = self.tree()?;
        // Parents first, so `rel` has somewhere to go.
        let mut parent = PathBuf::new();
        let comps: Vec<_> = rel.components().collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            parent.push(c);
            match src.lstat(&parent)? {
                Some(s) if is_dir(&s) => {
                    if !t.lstat(&parent)?.as_ref().is_some_and(is_dir) {
                        t.remove_all(&parent)?;
                        self.create(&t, &parent, NodeKind::Dir, mode_of(&s))?;
                    }
                }
                // The parent is gone (or not a directory) in SOURCE: so is
                // `rel`; reconciling the parent removes it.
                _ => {
                    return self.reconcile_entry(
                        &src,
                        &t,
                        &parent,
                        known_dirty,
                        &mut HashMap::new(),
                        progress,
                        io,
                    );
                }
            }
        }
        let mut links = HashMap::new();
        self.reconcile_entry(&src, &t, rel, known_dirty, &mut links, progress, io)?;
        // The parent's contents may have changed: its times follow SOURCE.
        if let Some(p) = rel.parent() {
            if let (Ok(Some(s)), Ok(node)) = (src.lstat(p), t.node(p)) {
                rustix::fs::utimensat(node.as_fd(), "", &times_of(&s), AtFlags::EMPTY_PATH)?;
            }
        }
        Ok(())
    }
}
