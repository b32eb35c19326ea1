//! The directory target: a local directory kept equal to SOURCE. Every
//! path is resolved under the target's root handle without following
//! symlinks; data moves through the fast-I/O backend.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::sparse;
use super::tree::{Tree, is_dir, is_file, is_symlink, mode_of, read_full};
use super::{Change, Progress, Replica};
use crate::backend::FastIo;
use crate::journal::record::{NodeKind, Op};
use crate::sys::{self, Access, Dir, Errno, Identity, Kind, Meta, Node, S_IFMT};

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
            let live = t.root_dir().fstat().ok();
            let now = sys::stat(&self.path).ok();
            if let (Some(a), Some(b)) = (live, now) {
                if a.ino == b.ino && a.dev == b.dev && a.nlink > 0 {
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

/// Makes `node`'s owner, mode and times those of `src`.
fn copy_attrs(node: &Node, src: &Meta) -> io::Result<()> {
    let symlink = is_symlink(src);
    let (uid, gid) = (src.uid, src.gid);
    let have = node.fstat()?;
    if have.uid != uid || have.gid != gid {
        node.fchown(uid, gid)?;
    }
    if !symlink {
        let want = mode_of(src) & 0o7777;
        // chown may have cleared set-id bits: compare after it.
        let have = node.fstat()?;
        if mode_of(&have) & 0o7777 != want {
            node.fchmod(want)?;
        }
    }
    node.futimens(src)?;
    Ok(())
}

/// Makes the xattrs of `node` exactly `want`.
fn copy_xattrs(node: &Node, want: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    sync_xattrs(
        &node.listxattrs()?,
        want,
        |n| node.removexattr(n),
        |n, v| node.setxattr(n, v),
    )
}

/// Makes the xattrs of `name` in `dir` (not following a symlink) exactly
/// `want`.
fn copy_xattrs_at(dir: &Dir, name: &OsStr, want: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    sync_xattrs(
        &dir.llistxattrs_at(name)?,
        want,
        |n| dir.lremovexattr_at(name, n),
        |n, v| dir.lsetxattr_at(name, n, v),
    )
}

/// Turns the xattrs `have` into `want` with `remove` and `set`.
fn sync_xattrs(
    have: &[(Vec<u8>, Vec<u8>)],
    want: &[(Vec<u8>, Vec<u8>)],
    remove: impl Fn(&[u8]) -> io::Result<()>,
    set: impl Fn(&[u8], &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    if have == want {
        return Ok(());
    }
    for (name, _) in have {
        if !want.iter().any(|(n, _)| n == name) {
            let _ = remove(name);
        }
    }
    for (name, value) in want {
        if !have.iter().any(|(n, v)| n == name && v == value) {
            set(name, value)?;
        }
    }
    Ok(())
}

/// A SOURCE inode's attributes, `None` once it has no name left in SOURCE
/// (unlinked since the change, or gone altogether): nothing of it has
/// anywhere to go on the target.
fn subject_stat(id: &Identity) -> io::Result<Option<Meta>> {
    sys::identity_stat(id)
}

impl DirReplica {
    fn create(&self, t: &Tree, rel: &Path, kind: NodeKind, mode: u32) -> io::Result<()> {
        let (dir, name) = t.parent(rel)?;
        self.create_at(t, &dir, &name, rel, kind, mode)
    }

    /// Makes `name` in `dir` (which is `rel`'s parent) a new node of `kind`,
    /// replacing whatever was there unless it is the directory asked for.
    fn create_at(
        &self,
        t: &Tree,
        dir: &Dir,
        name: &OsStr,
        rel: &Path,
        kind: NodeKind,
        mode: u32,
    ) -> io::Result<()> {
        let perm = mode & 0o7777;
        let attempt = || -> io::Result<()> {
            match kind {
                NodeKind::File => {
                    let f = dir.openat(name, Access::Write, Some(perm))?;
                    // The name was new in SOURCE: whatever was here is stale.
                    f.set_len(0)?;
                    Ok(())
                }
                NodeKind::Dir => dir.mkdirat(name, perm),
                NodeKind::Fifo => dir.mknodat(name, Kind::Fifo, perm, 0),
                NodeKind::Socket => dir.mknodat(name, Kind::Socket, perm, 0),
                NodeKind::CharDevice(d) => dir.mknodat(name, Kind::CharDevice, perm, d),
                NodeKind::BlockDevice(d) => dir.mknodat(name, Kind::BlockDevice, perm, d),
            }
        };
        match attempt() {
            Ok(()) => Ok(()),
            Err(e) if Errno::Exist.is(&e) || Errno::Loop.is(&e) || Errno::IsDir.is(&e) => {
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
        let src = sys::identity_open(subject)?;
        let dst = t.open_file(rel, Access::Write, Some(0o600))?;
        let n = sparse::copy_ranges(io, &src, &dst, ranges)?;
        sys::futimens(&dst, &st)?;
        Ok(n)
    }

    fn apply_op(&self, t: &Tree, c: &Change<'_>, io: &dyn FastIo) -> io::Result<u64> {
        let attrs_from_subject = |rel: &Path| -> io::Result<()> {
            if let Some(st) = c.subject.map(subject_stat).transpose()?.flatten() {
                let node = t.node(rel)?;
                copy_attrs(&node, &st)?;
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
                let target = sys::name_bytes(target.as_os_str());
                match dir.symlinkat(&target, &name) {
                    Err(e) if Errno::Exist.is(&e) => {
                        t.remove_all(path)?;
                        dir.symlinkat(&target, &name)?;
                    }
                    r => r?,
                }
                attrs_from_subject(path)?;
            }
            Op::Link { from, to } => {
                let (fd, fname) = t.parent(from)?;
                let (td, tname) = t.parent(to)?;
                match fd.linkat(&fname, &td, &tname) {
                    Err(e) if Errno::Exist.is(&e) => {
                        t.remove_all(to)?;
                        fd.linkat(&fname, &td, &tname)?;
                    }
                    r => r?,
                }
            }
            Op::Unlink { path } => {
                let (dir, name) = t.parent(path)?;
                match dir.unlinkat(&name) {
                    Ok(()) => {}
                    Err(e) if Errno::NoEnt.is(&e) => {}
                    Err(e) if Errno::IsDir.is(&e) => t.remove_all(path)?,
                    Err(e) => return Err(e),
                }
            }
            Op::Rmdir { path } => {
                let (dir, name) = t.parent(path)?;
                match dir.rmdirat(&name) {
                    Ok(()) => {}
                    Err(e) if Errno::NoEnt.is(&e) => {}
                    Err(e) if Errno::NotEmpty.is(&e) || Errno::NotDir.is(&e) => {
                        t.remove_all(path)?
                    }
                    Err(e) => return Err(e),
                }
            }
            Op::Rename { from, to, flags } => {
                let (fd, fname) = t.parent(from)?;
                let (td, tname) = t.parent(to)?;
                fd.renameat2(&fname, &td, &tname, *flags)?;
            }
            Op::Attr { path } => attrs_from_subject(path)?,
            Op::Truncate { path, size } => {
                let f = t.open_file(path, Access::Write, None)?;
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
                let f = t.open_file(path, Access::Write, None)?;
                match sys::fallocate(&f, *mode, *offset, *len) {
                    Ok(()) => {}
                    // The target filesystem cannot: the data copy below
                    // still makes the bytes right.
                    Err(e) if Errno::NotSup.is(&e) => {}
                    Err(e) => return Err(e),
                }
                drop(f);
                if let Some(s) = c.subject {
                    let src = sys::identity_open(s)?;
                    let dst = t.open_file(path, Access::Write, None)?;
                    let end = src.metadata()?.len().min(offset.saturating_add(*len));
                    // Holes too: a punched range stays punched.
                    bytes = sparse::copy_ranges(io, &src, &dst, &[(*offset, end)])?;
                    if dst.metadata()?.len() != src.metadata()?.len()
                        && *mode & sys::FALLOC_FL_KEEP_SIZE == 0
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
                t.node(path)?.setxattr(name, value)?;
            }
            Op::RemoveXattr { path, name } => match t.node(path)?.removexattr(name) {
                Ok(()) => {}
                Err(e) if Errno::NoData.is(&e) => {}
                Err(e) => return Err(e),
            },
            // The engine reconciles these itself; nothing to apply.
            Op::Resync { .. } => {}
        }
        for (dir, id) in c.parents {
            let Some(st) = subject_stat(id)? else {
                continue;
            };
            if let Ok(node) = t.node(dir) {
                node.futimens(&st)?;
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
        let key = s.key();
        if !is_dir(&s) && s.nlink > 1 {
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
                    (Some(h), Some(f)) => h.ino == f.ino && h.dev == f.dev,
                    _ => false,
                };
                if !linked {
                    w.t.remove_all(rel)?;
                    let (fd, fname) = w.t.parent(&first)?;
                    fd.linkat(&fname, dirs.dst, name)?;
                    progress.entries_fixed.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(());
            }
            w.links
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, rel.to_path_buf());
        }
        let kind = mode_of(&s) & S_IFMT;
        let mut fresh = false;
        let fixed_before = progress.entries_fixed.load(Ordering::Relaxed);
        if have.as_ref().is_some_and(|h| mode_of(h) & S_IFMT != kind) {
            w.t.remove_all(rel)?;
            have = None;
        }
        if have.is_none() {
            fresh = true;
            progress.entries_fixed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("reconcile: creating {}", rel.display());
            if is_symlink(&s) {
                let target = dirs.src.readlinkat(name)?;
                dirs.dst.symlinkat(&target, name)?;
            } else if !is_file(&s) {
                // Files are made by the copy below.
                self.create_at(w.t, dirs.dst, name, rel, node_kind(&s), mode_of(&s))?;
            }
        } else if is_symlink(&s) {
            let a = dirs.src.readlinkat(name)?;
            let b = dirs.dst.readlinkat(name)?;
            if a != b {
                w.t.remove_all(rel)?;
                dirs.dst.symlinkat(&a, name)?;
                progress.entries_fixed.fetch_add(1, Ordering::Relaxed);
            }
        }
        if is_file(&s) {
            let quick_same = have
                .as_ref()
                .is_some_and(|h| h.size == s.size && h.mtime == s.mtime);
            if !quick_same || w.dirty {
                let old_size = have.as_ref().map_or(0, |h| h.size);
                let n = self.block_copy(dirs, name, &s, old_size, w.io)?;
                progress.bytes_copied.fetch_add(n, Ordering::Relaxed);
                if !fresh {
                    progress.entries_fixed.fetch_add(1, Ordering::Relaxed);
                }
                have = None; // changed: looked at again below
            }
        } else if is_dir(&s) {
            let src = dirs.src.openat_dir(name)?;
            let dst = dirs.dst.openat_dir(name)?;
            let inner = At {
                src: &src,
                dst: &dst,
            };
            self.reconcile_children(w, inner, rel, fresh)?;
        }
        if !is_symlink(&s) {
            let want = dirs.src.llistxattrs_at(name)?;
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
        let have = have.ok_or_else(|| Errno::NoEnt.error())?;
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
        let want = dirs.src.list()?;
        if !fresh {
            for name in dirs.dst.list()? {
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
        let want = dirs.src.list()?;
        for name in dirs.dst.list()? {
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
                src: &sdir,
                dst: &tdir,
            };
            if let Err(e) = self.reconcile_entry(w, at, &name, rel) {
                if !matches!(stat_at(at.src, &name), Ok(None)) {
                    w.failed(rel, e)?;
                }
            }
            // The directory's times were set before its new name.
            let s = sdir.fstat()?;
            tdir.futimens(&s)?;
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
        s: &Meta,
        old_size: u64,
        io: &dyn FastIo,
    ) -> io::Result<u64> {
        const BLOCK: usize = 1 << 20;
        let src = dirs.src.openat(name, Access::Read, None)?;
        let dst = dirs
            .dst
            .openat(name, Access::ReadWrite, Some(mode_of(s) & 0o777))?;
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
    src: &'a Dir,
    dst: &'a Dir,
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
fn stat_at(dir: &Dir, name: &OsStr) -> io::Result<Option<Meta>> {
    match dir.statat(name) {
        Ok(st) => Ok(Some(st)),
        Err(e) if Errno::NoEnt.is(&e) || Errno::NotDir.is(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The kind of node to make for `s` (files and symlinks are made elsewhere).
fn node_kind(s: &Meta) -> NodeKind {
    let rdev = s.rdev;
    match mode_of(s) & S_IFMT {
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
fn fix_attrs(dir: &Dir, name: &OsStr, have: &Meta, want: &Meta) -> io::Result<()> {
    let differs = have.uid != want.uid
        || have.gid != want.gid
        || (!is_symlink(want) && mode_of(have) & 0o7777 != mode_of(want) & 0o7777);
    if differs {
        let node = dir.openat_node(name)?;
        return copy_attrs(&node, want);
    }
    if have.mtime != want.mtime {
        dir.utimensat(name, want)?;
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
        self.tree()?.root_dir().syncfs()
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
                        src: &sdir,
                        dst: &tdir,
                    };
                    self.reconcile_entry(&walk, dirs, &name, &parent)?;
                    return walk.error().map_or(Ok(()), Err);
                }
            }
        }
        if rel.components().next().is_none() {
            // The root: its entries, then its own attributes.
            let dirs = At {
                src: src.root_dir(),
                dst: t.root_dir(),
            };
            progress.entries.fetch_add(1, Ordering::Relaxed);
            self.reconcile_root(&walk, &src, dirs)?;
            let s = src.root_dir().fstat()?;
            let root = t.root_dir().node()?;
            copy_xattrs(&root, &src.root_dir().node()?.listxattrs()?)?;
            copy_attrs(&root, &s)?;
        } else {
            let (sdir, name) = src.parent(rel)?;
            let (tdir, _) = t.parent(rel)?;
            let dirs = At {
                src: &sdir,
                dst: &tdir,
            };
            self.reconcile_entry(&walk, dirs, &name, rel)?;
            // The parent's contents may have changed: its times follow SOURCE.
            let s = sdir.fstat()?;
            tdir.futimens(&s)?;
        }
        walk.error().map_or(Ok(()), Err)
    }
}
