//! The directory target: a local directory kept equal to SOURCE. Every
//! path is resolved under the target's root descriptor without following
//! symlinks; data moves through the fast-I/O backend.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustix::fs::{AtFlags, FallocateFlags, Mode, OFlags, RenameFlags, Stat, Timespec, Timestamps};

use super::sparse;
use super::tree::{self, Tree, is_dir, is_file, is_symlink, mode_of, read_full};
use super::{Change, Progress, Replica};
use crate::backend::FastIo;
use crate::journal::record::{NodeKind, Op};
use crate::sys::Identity;

pub struct DirReplica {
    path: PathBuf,
    /// Reopened when the directory was removed and made again.
    tree: Mutex<Option<Arc<Tree>>>,
    reset: std::sync::atomic::AtomicBool,
}

impl DirReplica {
    /// The target at `path`, created if missing.
    pub fn new(path: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(path).map_err(|e| {
            crate::error::context(format_args!("create target {}", path.display()), e)
        })?;
        let t = DirReplica {
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
    copy_xattrs_path(&Tree::proc_path(node), tree::Follow::Yes, want)
}

/// Makes the xattrs of `name` in `dir` (not following a symlink) exactly
/// `want`.
fn copy_xattrs_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    want: &[(Vec<u8>, Vec<u8>)],
) -> io::Result<()> {
    copy_xattrs_path(&Tree::proc_path(dir).join(name), tree::Follow::No, want)
}

fn copy_xattrs_path(p: &Path, follow: tree::Follow, want: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    let have = tree::xattrs_path(p, follow)?;
    if have == want {
        return Ok(());
    }
    type Remove = fn(&Path, &OsStr) -> rustix::io::Result<()>;
    type Set = fn(&Path, &OsStr, &[u8], rustix::fs::XattrFlags) -> rustix::io::Result<()>;
    let (remove, set): (Remove, Set) = match follow {
        tree::Follow::Yes => (
            |p, n| rustix::fs::removexattr(p, n),
            |p, n, v, f| rustix::fs::setxattr(p, n, v, f),
        ),
        tree::Follow::No => (
            |p, n| rustix::fs::lremovexattr(p, n),
            |p, n, v, f| rustix::fs::lsetxattr(p, n, v, f),
        ),
    };
    for (name, _) in &have {
        if !want.iter().any(|(n, _)| n == name) {
            let _ = remove(p, OsStr::from_bytes_compat(name));
        }
    }
    for (name, value) in want {
        if !have.iter().any(|(n, v)| n == name && v == value) {
            set(
                p,
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
    id.open(OFlags::RDONLY)
}

/// A SOURCE inode's attributes, `None` once it has no name left in SOURCE
/// (unlinked since the change, or gone altogether): nothing of it has
/// anywhere to go on the target.
fn subject_stat(id: &Identity) -> io::Result<Option<Stat>> {
    match id.stat() {
        Ok(st) if st.st_nlink == 0 => Ok(None),
        Ok(st) => Ok(Some(st)),
        Err(e) if errno(&e) == Some(libc::ESTALE) => Ok(None),
        Err(e) => Err(e),
    }
}

impl DirReplica {
    fn create(&self, t: &Tree, rel: &Path, kind: NodeKind, mode: u32) -> io::Result<()> {
        let (dir, name) = t.parent(rel)?;
        self.create_at(t, dir.as_fd(), &name, rel, kind, mode)
    }

    /// Makes `name` in `dir` (which is `rel`'s parent) a new node of `kind`,
    /// replacing whatever was there unless it is the directory asked for.
    fn create_at(
        &self,
        t: &Tree,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        kind: NodeKind,
        mode: u32,
    ) -> io::Result<()> {
        let perm = Mode::from_raw_mode(mode & 0o7777);
        let attempt = || -> io::Result<()> {
            match kind {
                NodeKind::File => {
                    let f = rustix::fs::openat(
                        dir,
                        name,
                        OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        perm,
                    )?;
                    // The name was new in SOURCE: whatever was here is stale.
                    rustix::fs::ftruncate(&f, 0)?;
                    Ok(())
                }
                NodeKind::Dir => Ok(rustix::fs::mkdirat(dir, name, perm)?),
                NodeKind::Fifo => Ok(rustix::fs::mknodat(
                    dir,
                    name,
                    rustix::fs::FileType::Fifo,
                    perm,
                    0,
                )?),
                NodeKind::Socket => Ok(rustix::fs::mknodat(
                    dir,
                    name,
                    rustix::fs::FileType::Socket,
                    perm,
                    0,
                )?),
                NodeKind::CharDevice(d) => Ok(rustix::fs::mknodat(
                    dir,
                    name,
                    rustix::fs::FileType::CharacterDevice,
                    perm,
                    d,
                )?),
                NodeKind::BlockDevice(d) => Ok(rustix::fs::mknodat(
                    dir,
                    name,
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
        let Some(st) = subject_stat(subject)? else {
            // Unlinked in SOURCE since: its data has nowhere to go.
            return Ok(0);
        };
        let src = open_subject(subject)?;
        let dst = t.open_file(rel, OFlags::WRONLY | OFlags::CREATE, 0o600)?;
        let n = sparse::copy_ranges(io, &src, &dst, ranges)?;
        rustix::fs::futimens(&dst, &times_of(&st))?;
        Ok(n)
    }

    fn apply_op(&self, t: &Tree, c: &Change<'_>, io: &dyn FastIo) -> io::Result<u64> {
        let attrs_from_subject = |rel: &Path| -> io::Result<()> {
            if let Some(st) = c.subject.map(subject_stat).transpose()?.flatten() {
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
            let Some(st) = subject_stat(id)? else {
                continue;
            };
            if let Ok(node) = t.node(dir) {
                rustix::fs::utimensat(node.as_fd(), "", &times_of(&st), AtFlags::EMPTY_PATH)?;
            }
        }
        Ok(bytes)
    }

    /// Makes the entry `name` of target directory `w.dst` equal to the
    /// entry `name` of SOURCE directory `w.src` (and below it, for
    /// directories). Directories are walked by descriptor, two held per
    /// level, so nothing is resolved from the top again and a walk of a
    /// large tree costs a few calls per entry.
    fn reconcile_entry(
        &self,
        w: &Walk<'_>,
        dirs: At<'_>,
        name: &OsStr,
        rel: &Path,
    ) -> io::Result<()> {
        let progress = w.progress;
        let Some(s) = stat_at(dirs.src, name)? else {
            if stat_at(dirs.dst, name)?.is_some() {
                tracing::debug!("reconcile: removing {} (not in SOURCE)", rel.display());
                progress.entries_fixed.fetch_add(1, Ordering::Relaxed);
                w.t.remove_all(rel)?;
            }
            return Ok(());
        };
        progress.entries.fetch_add(1, Ordering::Relaxed);
        let mut have = stat_at(dirs.dst, name)?;
        // Hard links: the second name of an inode links to the first.
        #[allow(clippy::unnecessary_cast)]
        let key = (s.st_dev as u64, s.st_ino as u64);
        if !is_dir(&s) && s.st_nlink > 1 {
            if w.defer_links.load(Ordering::Relaxed) {
                // Which name comes first is only clear in one walk order.
                w.deferred
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(rel.to_path_buf());
                return Ok(());
            }
            let first = w
                .links
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .cloned();
            if let Some(first) = first {
                let first_t = w.t.lstat(&first)?;
                let linked = match (&have, &first_t) {
                    (Some(h), Some(f)) => h.st_ino == f.st_ino && h.st_dev == f.st_dev,
                    _ => false,
                };
                if !linked {
                    w.t.remove_all(rel)?;
                    let (fd, fname) = w.t.parent(&first)?;
                    rustix::fs::linkat(&fd, &fname, dirs.dst, name, AtFlags::empty())?;
                    progress.entries_fixed.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(());
            }
            w.links
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, rel.to_path_buf());
        }
        let kind = mode_of(&s) & 0o170000;
        let mut fresh = false;
        let fixed_before = progress.entries_fixed.load(Ordering::Relaxed);
        if have.as_ref().is_some_and(|h| mode_of(h) & 0o170000 != kind) {
            w.t.remove_all(rel)?;
            have = None;
        }
        if have.is_none() {
            fresh = true;
            progress.entries_fixed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("reconcile: creating {}", rel.display());
            if is_symlink(&s) {
                let target = rustix::fs::readlinkat(dirs.src, name, Vec::new())?;
                rustix::fs::symlinkat(target.as_c_str(), dirs.dst, name)?;
            } else if !is_file(&s) {
                // Files are made by the copy below.
                self.create_at(w.t, dirs.dst, name, rel, node_kind(&s), mode_of(&s))?;
            }
        } else if is_symlink(&s) {
            let a = rustix::fs::readlinkat(dirs.src, name, Vec::new())?;
            let b = rustix::fs::readlinkat(dirs.dst, name, Vec::new())?;
            if a != b {
                w.t.remove_all(rel)?;
                rustix::fs::symlinkat(a.as_c_str(), dirs.dst, name)?;
                progress.entries_fixed.fetch_add(1, Ordering::Relaxed);
            }
        }
        if is_file(&s) {
            let quick_same = have.as_ref().is_some_and(|h| {
                h.st_size == s.st_size
                    && h.st_mtime == s.st_mtime
                    && h.st_mtime_nsec == s.st_mtime_nsec
            });
            if !quick_same || w.dirty {
                #[allow(clippy::unnecessary_cast)]
                let old_size = have.as_ref().map_or(0, |h| h.st_size as u64);
                let n = self.block_copy(dirs, name, &s, old_size, w.io)?;
                progress.bytes_copied.fetch_add(n, Ordering::Relaxed);
                if !fresh {
                    progress.entries_fixed.fetch_add(1, Ordering::Relaxed);
                }
                have = None; // changed: looked at again below
            }
        } else if is_dir(&s) {
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let src = rustix::fs::openat(dirs.src, name, flags, Mode::empty())?;
            let dst = rustix::fs::openat(dirs.dst, name, flags, Mode::empty())?;
            let inner = At {
                src: src.as_fd(),
                dst: dst.as_fd(),
            };
            self.reconcile_children(w, inner, rel, fresh)?;
        }
        if !is_symlink(&s) {
            let want = tree::xattrs_at(dirs.src, name)?;
            // What we just made has none of its own.
            if !(fresh && want.is_empty()) {
                copy_xattrs_at(dirs.dst, name, &want)?;
            }
        }
        // Times last: the contents above changed the directory's (or the
        // file's), so look again if anything was done.
        let have = if progress.entries_fixed.load(Ordering::Relaxed) != fixed_before {
            stat_at(dirs.dst, name)?
        } else {
            have
        };
        let have = have.ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        fix_attrs(dirs.dst, name, &have, &s)
    }

    /// Reconciles the entries of a directory pair: removes what SOURCE does
    /// not have, then each of SOURCE's entries. A failure at one entry is
    /// logged and the walk goes on (the rest still converges); the walk
    /// then fails naming how many entries it could not reconcile.
    fn reconcile_children(
        &self,
        w: &Walk<'_>,
        dirs: At<'_>,
        rel: &Path,
        fresh: bool,
    ) -> io::Result<()> {
        let want = tree::list_at(dirs.src)?;
        if !fresh {
            for name in tree::list_at(dirs.dst)? {
                if want.binary_search(&name).is_err() {
                    w.t.remove_all(&rel.join(&name))?;
                    w.progress.entries_fixed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        for name in want {
            let child = rel.join(&name);
            if let Err(e) = self.reconcile_entry(w, dirs, &name, &child) {
                // Gone from SOURCE while we looked: its removal is a change
                // of its own.
                if matches!(stat_at(dirs.src, &name), Ok(None)) {
                    continue;
                }
                w.failed(&child, e)?;
            }
        }
        Ok(())
    }

    /// The entries of the root, a few subtrees at a time on as many
    /// threads as there are cores (a walk is mostly waiting on metadata
    /// calls). Hard-linked names are made afterwards, in one order.
    fn reconcile_root(&self, w: &Walk<'_>, src: &Tree, dirs: At<'_>) -> io::Result<()> {
        let root = Path::new("");
        let want = tree::list_at(dirs.src)?;
        for name in tree::list_at(dirs.dst)? {
            if want.binary_search(&name).is_err() {
                w.t.remove_all(Path::new(&name))?;
                w.progress.entries_fixed.fetch_add(1, Ordering::Relaxed);
            }
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_WALK_THREADS);
        let next = AtomicUsize::new(0);
        w.defer_links.store(threads > 1, Ordering::Relaxed);
        let each = || -> io::Result<()> {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = want.get(i) else {
                    return Ok(());
                };
                let child = root.join(name);
                if let Err(e) = self.reconcile_entry(w, dirs, name, &child) {
                    if !matches!(stat_at(dirs.src, name), Ok(None)) {
                        w.failed(&child, e)?;
                    }
                }
            }
        };
        std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(each)).collect();
            let mine = each();
            helpers
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("reconcile thread panicked")))
                })
                .fold(mine, |a, b| a.and(b))
        })?;
        w.defer_links.store(false, Ordering::Relaxed);
        let deferred = std::mem::take(&mut *w.deferred.lock().unwrap_or_else(|e| e.into_inner()));
        for rel in &deferred {
            let (sdir, name) = src.parent(rel)?;
            let (tdir, _) = w.t.parent(rel)?;
            let at = At {
                src: sdir.as_fd(),
                dst: tdir.as_fd(),
            };
            if let Err(e) = self.reconcile_entry(w, at, &name, rel) {
                if !matches!(stat_at(at.src, &name), Ok(None)) {
                    w.failed(rel, e)?;
                }
            }
            // The directory's times were set before its new name.
            let s = rustix::fs::fstat(&sdir)?;
            rustix::fs::utimensat(&tdir, "", &times_of(&s), AtFlags::EMPTY_PATH)?;
        }
        Ok(())
    }

    /// Copies the blocks of SOURCE's `name` that differ from the target's
    /// (whose size was `old_size`; what lies beyond it is copied without
    /// reading), and sets the size.
    fn block_copy(
        &self,
        dirs: At<'_>,
        name: &OsStr,
        s: &Stat,
        old_size: u64,
        io: &dyn FastIo,
    ) -> io::Result<u64> {
        const BLOCK: usize = 1 << 20;
        let src = rustix::fs::openat(
            dirs.src,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let dst = rustix::fs::openat(
            dirs.dst,
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode_of(s) & 0o777),
        )?;
        let (src, dst) = (File::from(src), File::from(dst));
        let size = src.metadata()?.len();
        let mut ranges = Vec::new();
        let compared = size.min(old_size);
        if compared > 0 {
            let mut a = vec![0u8; BLOCK];
            let mut b = vec![0u8; BLOCK];
            let mut off = 0u64;
            while off < compared {
                let want = ((compared - off) as usize).min(BLOCK);
                let n = read_full(&src, &mut a[..want], off)?;
                let m = read_full(&dst, &mut b[..want], off)?;
                if n != m || a[..n] != b[..n] {
                    ranges.push((off, off + n as u64));
                }
                if n < want {
                    break;
                }
                off += n as u64;
            }
        }
        if size > compared {
            ranges.push((compared, size));
        }
        // Where SOURCE has holes the target keeps or gets them, also in
        // blocks whose bytes already compare equal (zeros written out).
        if compared > 0 {
            sparse::punch_holes(io, &src, &dst, size)?;
        }
        let copied = sparse::copy_ranges(io, &src, &dst, &ranges)?;
        // A hole at the end is not written: the size says where it ends.
        if old_size > size || dst.metadata()?.len() != size {
            dst.set_len(size)?;
        }
        Ok(copied)
    }
}

/// A directory in SOURCE and its twin on the target.
#[derive(Clone, Copy)]
struct At<'a> {
    src: BorrowedFd<'a>,
    dst: BorrowedFd<'a>,
}

/// What one reconcile walk shares.
struct Walk<'a> {
    t: &'a Tree,
    dirty: bool,
    /// The first name seen of each inode with several.
    links: Mutex<HashMap<(u64, u64), PathBuf>>,
    progress: &'a Progress,
    io: &'a dyn FastIo,
    failures: AtomicU64,
    first_failure: Mutex<Option<String>>,
    /// While the walk runs on several threads, names of inodes with
    /// several names wait in `deferred` and are linked up after it.
    defer_links: AtomicBool,
    deferred: Mutex<Vec<PathBuf>>,
}

/// Threads of a whole-tree reconcile, at most.
const MAX_WALK_THREADS: usize = 4;

/// More failed entries than this and the walk stops: the target itself is
/// in trouble (full, read-only, gone).
const MAX_FAILED_ENTRIES: u64 = 100;

impl Walk<'_> {
    /// Logs a failed entry; fails the walk once there are too many.
    fn failed(&self, rel: &Path, e: io::Error) -> io::Result<()> {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let line = format!("{}: {e}", rel.display());
        tracing::warn!("reconcile: {line}");
        self.first_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(line);
        if n >= MAX_FAILED_ENTRIES {
            return Err(self.error().unwrap_or(e));
        }
        Ok(())
    }

    /// The walk's failure, if entries failed.
    fn error(&self) -> Option<io::Error> {
        let n = self.failures.load(Ordering::Relaxed);
        let first = self
            .first_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        Some(io::Error::other(format!(
            "{n} entries could not be reconciled (first: {first})"
        )))
    }
}

/// lstat of `name` in `dir`; `None` when it does not exist.
fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The kind of node to make for `s` (files and symlinks are made elsewhere).
fn node_kind(s: &Stat) -> NodeKind {
    #[allow(clippy::unnecessary_cast)]
    let rdev = s.st_rdev as u64;
    match mode_of(s) & 0o170000 {
        0o040000 => NodeKind::Dir,
        0o010000 => NodeKind::Fifo,
        0o140000 => NodeKind::Socket,
        0o020000 => NodeKind::CharDevice(rdev),
        0o060000 => NodeKind::BlockDevice(rdev),
        _ => NodeKind::File,
    }
}

/// Makes the owner, mode and times of `name` in `dir` (now `have`) those
/// of `want`, touching only what differs.
fn fix_attrs(dir: BorrowedFd<'_>, name: &OsStr, have: &Stat, want: &Stat) -> io::Result<()> {
    #[allow(clippy::unnecessary_cast)]
    let differs = have.st_uid as u32 != want.st_uid as u32
        || have.st_gid as u32 != want.st_gid as u32
        || (!is_symlink(want) && mode_of(have) & 0o7777 != mode_of(want) & 0o7777);
    if differs {
        let node = rustix::fs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        return copy_attrs(node.as_fd(), want);
    }
    if have.st_mtime != want.st_mtime || have.st_mtime_nsec != want.st_mtime_nsec {
        rustix::fs::utimensat(dir, name, &times_of(want), AtFlags::SYMLINK_NOFOLLOW)?;
    }
    Ok(())
}

impl Replica for DirReplica {
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
        let walk = Walk {
            t: &t,
            dirty: known_dirty,
            links: Mutex::new(HashMap::new()),
            progress,
            io,
            failures: AtomicU64::new(0),
            first_failure: Mutex::new(None),
            defer_links: AtomicBool::new(false),
            deferred: Mutex::new(Vec::new()),
        };
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
                    let (sdir, name) = src.parent(&parent)?;
                    let (tdir, _) = t.parent(&parent)?;
                    let dirs = At {
                        src: sdir.as_fd(),
                        dst: tdir.as_fd(),
                    };
                    self.reconcile_entry(&walk, dirs, &name, &parent)?;
                    return walk.error().map_or(Ok(()), Err);
                }
            }
        }
        if rel.components().next().is_none() {
            // The root: its entries, then its own attributes.
            let dirs = At {
                src: src.root_fd(),
                dst: t.root_fd(),
            };
            progress.entries.fetch_add(1, Ordering::Relaxed);
            self.reconcile_root(&walk, &src, dirs)?;
            let s = rustix::fs::fstat(src.root_fd())?;
            copy_xattrs(t.root_fd(), &tree::xattrs_of(src.root_fd())?)?;
            copy_attrs(t.root_fd(), &s)?;
        } else {
            let (sdir, name) = src.parent(rel)?;
            let (tdir, _) = t.parent(rel)?;
            let dirs = At {
                src: sdir.as_fd(),
                dst: tdir.as_fd(),
            };
            self.reconcile_entry(&walk, dirs, &name, rel)?;
            // The parent's contents may have changed: its times follow SOURCE.
            let s = rustix::fs::fstat(&sdir)?;
            rustix::fs::utimensat(&tdir, "", &times_of(&s), AtFlags::EMPTY_PATH)?;
        }
        walk.error().map_or(Ok(()), Err)
    }
}
