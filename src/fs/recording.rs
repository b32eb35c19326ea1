//! The recording layer: a [`Vfs`] that wraps another and turns every
//! successful change into a journal record and a queued change for the
//! sync engine. Reads pass straight through.
//!
//! Each change is recorded as an intent *before* it runs (so a crash can
//! never leave a change unrecorded) and queued *after* it succeeded, with
//! the SOURCE inode it was about, so the engine reads current bytes and
//! attributes from the inode itself whatever its name is by then.
//!
//! Paths: the kernel names things by (parent inode, name); this layer
//! keeps that map to turn inodes into paths at the moment of each change.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::fs::{
    Attr, Ctx, DirEntry, Entry, Fh, Identity, Ino, Opened, ROOT_INO, SetAttr, StatFs, Vfs,
    XattrReply,
};
use crate::journal::record::{NodeKind, Op};
use crate::sync::Engine;
use crate::sync::policy::Consistency;

/// renameat2's flag as the kernel's FUSE request carries it.
const RENAME_EXCHANGE: u32 = 2;

/// How long a writer waits for the targets in `sync` mode (and fsync in
/// `fsync` mode) before it gets EIO.
/// `REPLICAFS_BARRIER_TIMEOUT` (e.g. `5s`) overrides it.
pub const BARRIER_TIMEOUT: Duration = Duration::from_secs(30);

fn barrier_timeout() -> Duration {
    static T: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *T.get_or_init(|| {
        std::env::var("REPLICAFS_BARRIER_TIMEOUT")
            .ok()
            .and_then(|s| humantime::parse_duration(&s).ok())
            .unwrap_or(BARRIER_TIMEOUT)
    })
}

/// Every name the kernel told us of, per inode (hard links have several).
#[derive(Default)]
struct Names {
    by_ino: HashMap<Ino, Vec<(Ino, OsString)>>,
    by_name: HashMap<(Ino, OsString), Ino>,
}

impl Names {
    fn learn(&mut self, ino: Ino, parent: Ino, name: &OsStr) {
        if ino == ROOT_INO {
            return;
        }
        let key = (parent, name.to_os_string());
        if let Some(old) = self.by_name.insert(key.clone(), ino) {
            if old != ino {
                self.drop_name(old, &key);
            }
        }
        let names = self.by_ino.entry(ino).or_default();
        if !names.contains(&key) {
            names.push(key);
        }
    }

    fn drop_name(&mut self, ino: Ino, key: &(Ino, OsString)) {
        if let Some(names) = self.by_ino.get_mut(&ino) {
            names.retain(|n| n != key);
            if names.is_empty() {
                self.by_ino.remove(&ino);
            }
        }
    }

    /// The kernel forgot `ino`: its names go (its children, if it is a
    /// directory, were forgotten before it).
    fn forget_ino(&mut self, ino: Ino) {
        for key in self.by_ino.remove(&ino).unwrap_or_default() {
            if self.by_name.get(&key) == Some(&ino) {
                self.by_name.remove(&key);
            }
        }
    }

    fn forget_name(&mut self, parent: Ino, name: &OsStr) -> Option<Ino> {
        let key = (parent, name.to_os_string());
        let ino = self.by_name.remove(&key)?;
        self.drop_name(ino, &key);
        Some(ino)
    }

    fn path(&self, mut ino: Ino) -> Option<PathBuf> {
        let mut parts = Vec::new();
        while ino != ROOT_INO {
            let (p, n) = self.by_ino.get(&ino)?.first()?;
            parts.push(n.as_os_str());
            ino = *p;
            if parts.len() > 4096 {
                return None;
            }
        }
        Some(parts.iter().rev().collect())
    }
}

pub struct Recording<V: Vfs> {
    inner: V,
    names: RwLock<Names>,
    /// Handles opened with O_APPEND: their writes land at the end of the
    /// file, wherever the kernel thought that was.
    appending: RwLock<std::collections::HashSet<Fh>>,
    engine: Arc<Engine>,
    consistency: Consistency,
}

/// An I/O error for the caller (EIO through FUSE), the detail logged: a
/// kind, not a raw code, so that it means the same on every OS.
fn eio(msg: String) -> io::Error {
    tracing::error!("{msg}");
    io::Error::other(msg)
}

impl<V: Vfs> Recording<V> {
    pub fn new(inner: V, engine: Arc<Engine>, consistency: Consistency) -> Self {
        Recording {
            inner,
            names: RwLock::new(Names::default()),
            appending: RwLock::default(),
            engine,
            consistency,
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    fn path(&self, ino: Ino) -> Option<PathBuf> {
        self.names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .path(ino)
    }

    fn child(&self, parent: Ino, name: &OsStr) -> Option<PathBuf> {
        self.path(parent).map(|p| p.join(name))
    }

    fn learn(&self, ino: Ino, parent: Ino, name: &OsStr) {
        self.names
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .learn(ino, parent, name);
    }

    /// Records the intent; `None` when the path is unknown (then the whole
    /// tree is reconciled instead, and a record saying so is journaled so
    /// a crash cannot forget it).
    fn intent(&self, op: Option<Op>) -> io::Result<Option<(u64, Op)>> {
        match op {
            Some(op) => {
                let seq = self.engine.intent(&op)?;
                Ok(Some((seq, op)))
            }
            None => {
                tracing::warn!(
                    "a change to a path not known to the recorder: reconciling everything"
                );
                let everything = Op::Attr {
                    path: PathBuf::new(),
                };
                let seq = self.engine.intent(&everything)?;
                self.engine.request_full_reconcile();
                Ok(Some((seq, everything)))
            }
        }
    }

    fn parent_of(&self, parent: Ino) -> Vec<(PathBuf, Identity)> {
        match (self.path(parent), self.inner.identity(parent)) {
            (Some(p), Some(id)) => vec![(p, id)],
            _ => Vec::new(),
        }
    }

    /// Queues a recorded change that succeeded, or drops one that failed;
    /// in `sync` mode, waits until every target has it.
    fn finish<T>(
        &self,
        rec: Option<(u64, Op)>,
        r: io::Result<T>,
        subject: impl FnOnce(&T) -> Option<Ino>,
        parents: Vec<(PathBuf, Identity)>,
    ) -> io::Result<T> {
        let Some((seq, op)) = rec else { return r };
        match r {
            Ok(v) => {
                let id = subject(&v).and_then(|ino| self.inner.identity(ino));
                let pos = self.engine.push(seq, op, id, parents);
                self.settle(pos)?;
                Ok(v)
            }
            Err(e) => {
                self.engine.abort(seq);
                Err(e)
            }
        }
    }

    /// fsync on the mount is a barrier: it returns once the targets have
    /// everything (except in async mode, which never waits), or as the
    /// target-down policy says when one is down.
    fn fsync_barrier(&self) -> io::Result<()> {
        if self.consistency != Consistency::Async {
            self.engine
                .writer_wait(self.engine.position(), barrier_timeout())
                .map_err(|e| eio(format!("fsync barrier: {e}")))?;
        }
        Ok(())
    }

    fn note_append(&self, fh: Fh, flags: i32) {
        if flags & libc::O_APPEND != 0 {
            self.appending
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(fh);
        }
    }

    fn settle(&self, pos: u64) -> io::Result<()> {
        if self.consistency == Consistency::Sync {
            self.engine
                .writer_wait(pos, barrier_timeout())
                .map_err(|e| eio(format!("sync mode: {e}")))?;
        }
        Ok(())
    }
}

impl<V: Vfs> Vfs for Recording<V> {
    fn lookup(&self, ctx: &Ctx, parent: Ino, name: &OsStr) -> io::Result<Entry> {
        let e = self.inner.lookup(ctx, parent, name)?;
        self.learn(e.ino(), parent, name);
        Ok(e)
    }

    fn forget(&self, ino: Ino, nlookup: u64) {
        self.inner.forget(ino, nlookup);
        if self.inner.identity(ino).is_none() {
            self.names
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .forget_ino(ino);
        }
    }

    fn getattr(&self, ctx: &Ctx, ino: Ino, fh: Option<Fh>) -> io::Result<Attr> {
        self.inner.getattr(ctx, ino, fh)
    }

    fn setattr(&self, ctx: &Ctx, ino: Ino, fh: Option<Fh>, set: &SetAttr) -> io::Result<Attr> {
        let path = self.path(ino);
        let mut out = None;
        if let Some(size) = set.size {
            self.engine.fence(ino);
            let rec = self.intent(path.clone().map(|path| Op::Truncate { path, size }))?;
            let only_size = SetAttr {
                size: Some(size),
                ..SetAttr::default()
            };
            let r = self.inner.setattr(ctx, ino, fh, &only_size);
            out = Some(self.finish(rec, r, |_| Some(ino), Vec::new())?);
        }
        let rest = SetAttr { size: None, ..*set };
        if rest != SetAttr::default() {
            let rec = self.intent(path.map(|path| Op::Attr { path }))?;
            let r = self.inner.setattr(ctx, ino, fh, &rest);
            out = Some(self.finish(rec, r, |_| Some(ino), Vec::new())?);
        }
        match out {
            Some(a) => Ok(a),
            None => self.inner.getattr(ctx, ino, fh),
        }
    }

    fn readlink(&self, ctx: &Ctx, ino: Ino) -> io::Result<Vec<u8>> {
        self.inner.readlink(ctx, ino)
    }

    fn mknod(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        rdev: u64,
    ) -> io::Result<Entry> {
        let kind = match mode & 0o170000 {
            0o010000 => NodeKind::Fifo,
            0o140000 => NodeKind::Socket,
            0o020000 => NodeKind::CharDevice(rdev),
            0o060000 => NodeKind::BlockDevice(rdev),
            _ => NodeKind::File,
        };
        let rec =
            self.intent(
                self.child(parent, name)
                    .map(|path| Op::Create { path, kind, mode }),
            )?;
        let r = self.inner.mknod(ctx, parent, name, mode, rdev);
        if let Ok(e) = &r {
            self.learn(e.ino(), parent, name);
        }
        self.finish(rec, r, |e| Some(e.ino()), self.parent_of(parent))
    }

    fn mkdir(&self, ctx: &Ctx, parent: Ino, name: &OsStr, mode: u32) -> io::Result<Entry> {
        let rec = self.intent(self.child(parent, name).map(|path| Op::Create {
            path,
            kind: NodeKind::Dir,
            mode,
        }))?;
        let r = self.inner.mkdir(ctx, parent, name, mode);
        if let Ok(e) = &r {
            self.learn(e.ino(), parent, name);
        }
        self.finish(rec, r, |e| Some(e.ino()), self.parent_of(parent))
    }

    fn unlink(&self, ctx: &Ctx, parent: Ino, name: &OsStr) -> io::Result<()> {
        let rec = self.intent(self.child(parent, name).map(|path| Op::Unlink { path }))?;
        let r = self.inner.unlink(ctx, parent, name);
        if r.is_ok() {
            let gone = self
                .names
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .forget_name(parent, name);
            if let Some(ino) = gone {
                self.engine.fence(ino);
            }
        }
        self.finish(rec, r, |_| None, self.parent_of(parent))
    }

    fn rmdir(&self, ctx: &Ctx, parent: Ino, name: &OsStr) -> io::Result<()> {
        let rec = self.intent(self.child(parent, name).map(|path| Op::Rmdir { path }))?;
        let r = self.inner.rmdir(ctx, parent, name);
        if r.is_ok() {
            self.names
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .forget_name(parent, name);
        }
        self.finish(rec, r, |_| None, self.parent_of(parent))
    }

    fn symlink(&self, ctx: &Ctx, parent: Ino, name: &OsStr, target: &Path) -> io::Result<Entry> {
        let rec = self.intent(self.child(parent, name).map(|path| Op::Symlink {
            path,
            target: target.to_path_buf(),
        }))?;
        let r = self.inner.symlink(ctx, parent, name, target);
        if let Ok(e) = &r {
            self.learn(e.ino(), parent, name);
        }
        self.finish(rec, r, |e| Some(e.ino()), self.parent_of(parent))
    }

    fn rename(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        flags: u32,
    ) -> io::Result<()> {
        let op = match (self.child(parent, name), self.child(new_parent, new_name)) {
            (Some(from), Some(to)) => Some(Op::Rename { from, to, flags }),
            _ => None,
        };
        let rec = self.intent(op)?;
        let r = self
            .inner
            .rename(ctx, parent, name, new_parent, new_name, flags);
        if r.is_ok() {
            let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
            let moved = names.forget_name(parent, name);
            let other = names.forget_name(new_parent, new_name);
            if let Some(ino) = moved {
                names.learn(ino, new_parent, new_name);
                self.engine.fence(ino);
            }
            if flags & RENAME_EXCHANGE != 0 {
                if let Some(ino) = other {
                    names.learn(ino, parent, name);
                    self.engine.fence(ino);
                }
            } else if let Some(ino) = other {
                self.engine.fence(ino);
            }
        }
        let mut parents = self.parent_of(parent);
        if new_parent != parent {
            parents.extend(self.parent_of(new_parent));
        }
        self.finish(rec, r, |_| None, parents)
    }

    fn link(&self, ctx: &Ctx, ino: Ino, new_parent: Ino, new_name: &OsStr) -> io::Result<Entry> {
        let op = match (self.path(ino), self.child(new_parent, new_name)) {
            (Some(from), Some(to)) => Some(Op::Link { from, to }),
            _ => None,
        };
        let rec = self.intent(op)?;
        let r = self.inner.link(ctx, ino, new_parent, new_name);
        if let Ok(e) = &r {
            self.learn(e.ino(), new_parent, new_name);
        }
        self.finish(rec, r, |e| Some(e.ino()), self.parent_of(new_parent))
    }

    fn open(&self, ctx: &Ctx, ino: Ino, flags: i32) -> io::Result<Opened> {
        let opened = if flags & libc::O_TRUNC != 0 && flags & crate::fs::ACCMODE != libc::O_RDONLY {
            self.engine.fence(ino);
            let rec = self.intent(self.path(ino).map(|path| Op::Truncate { path, size: 0 }))?;
            let r = self.inner.open(ctx, ino, flags);
            self.finish(rec, r, |_| Some(ino), Vec::new())?
        } else {
            self.inner.open(ctx, ino, flags)?
        };
        self.note_append(opened.fh, flags);
        Ok(opened)
    }

    fn create(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> io::Result<(Entry, Opened)> {
        let path = self.child(parent, name);
        let rec = self.intent(path.clone().map(|path| Op::Create {
            path,
            kind: NodeKind::File,
            mode,
        }))?;
        let r = self.inner.create(ctx, parent, name, mode, flags);
        if let Ok((e, o)) = &r {
            self.learn(e.ino(), parent, name);
            self.note_append(o.fh, flags);
            if !o.created {
                // An existing file was opened: not a creation. (The intent
                // stays in the journal; recovery only re-checks the path.)
                if let Some((seq, _)) = rec {
                    self.engine.abort(seq);
                }
                if flags & libc::O_TRUNC != 0 {
                    let rec = self.intent(path.map(|path| Op::Truncate { path, size: 0 }))?;
                    return self.finish(rec, r, |(e, _)| Some(e.ino()), Vec::new());
                }
                return r;
            }
        }
        self.finish(rec, r, |(e, _)| Some(e.ino()), self.parent_of(parent))
    }

    fn read(&self, ctx: &Ctx, ino: Ino, fh: Fh, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(ctx, ino, fh, offset, buf)
    }

    fn write(&self, ctx: &Ctx, ino: Ino, fh: Fh, offset: u64, data: &[u8]) -> io::Result<usize> {
        let Some(path) = self.path(ino) else {
            let rec = self.intent(None)?;
            let r = self.inner.write(ctx, ino, fh, offset, data);
            return self.finish(rec, r, |_| None, Vec::new());
        };
        let seq = self.engine.intent(&Op::Write {
            path: path.clone(),
            offset,
            len: data.len() as u64,
        })?;
        match self.inner.write(ctx, ino, fh, offset, data) {
            Ok(n) => {
                let mut offset = offset;
                if self
                    .appending
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&fh)
                {
                    // The bytes went to the end of the file: find where.
                    if let Ok(a) = self.inner.getattr(ctx, ino, Some(fh)) {
                        offset = a.size.saturating_sub(n as u64);
                    }
                }
                let pos = self.engine.push_write(
                    seq,
                    ino,
                    path,
                    offset,
                    n as u64,
                    self.inner.identity(ino),
                );
                self.settle(pos)?;
                Ok(n)
            }
            Err(e) => {
                self.engine.abort(seq);
                Err(e)
            }
        }
    }

    fn flush(&self, ctx: &Ctx, ino: Ino, fh: Fh) -> io::Result<()> {
        self.inner.flush(ctx, ino, fh)
    }

    fn release(&self, ctx: &Ctx, ino: Ino, fh: Fh) -> io::Result<()> {
        self.appending
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh);
        self.inner.release(ctx, ino, fh)
    }

    fn fsync(&self, ctx: &Ctx, ino: Ino, fh: Fh, datasync: bool) -> io::Result<()> {
        self.inner.fsync(ctx, ino, fh, datasync)?;
        self.fsync_barrier()
    }

    fn opendir(&self, ctx: &Ctx, ino: Ino, flags: i32) -> io::Result<Opened> {
        self.inner.opendir(ctx, ino, flags)
    }

    fn readdir(
        &self,
        ctx: &Ctx,
        ino: Ino,
        fh: Fh,
        offset: u64,
        add: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> io::Result<()> {
        self.inner.readdir(ctx, ino, fh, offset, add)
    }

    fn releasedir(&self, ctx: &Ctx, ino: Ino, fh: Fh) -> io::Result<()> {
        self.inner.releasedir(ctx, ino, fh)
    }

    fn fsyncdir(&self, ctx: &Ctx, ino: Ino, fh: Fh, datasync: bool) -> io::Result<()> {
        self.inner.fsyncdir(ctx, ino, fh, datasync)?;
        self.fsync_barrier()
    }

    fn statfs(&self, ctx: &Ctx, ino: Ino) -> io::Result<StatFs> {
        self.inner.statfs(ctx, ino)
    }

    fn setxattr(
        &self,
        ctx: &Ctx,
        ino: Ino,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> io::Result<()> {
        let rec = self.intent(self.path(ino).map(|path| Op::SetXattr {
            path,
            name: name.as_encoded_bytes().to_vec(),
            value: value.to_vec(),
            flags,
        }))?;
        let r = self.inner.setxattr(ctx, ino, name, value, flags);
        self.finish(rec, r, |_| Some(ino), Vec::new())
    }

    fn getxattr(&self, ctx: &Ctx, ino: Ino, name: &OsStr, size: u32) -> io::Result<XattrReply> {
        self.inner.getxattr(ctx, ino, name, size)
    }

    fn listxattr(&self, ctx: &Ctx, ino: Ino, size: u32) -> io::Result<XattrReply> {
        self.inner.listxattr(ctx, ino, size)
    }

    fn removexattr(&self, ctx: &Ctx, ino: Ino, name: &OsStr) -> io::Result<()> {
        let rec = self.intent(self.path(ino).map(|path| Op::RemoveXattr {
            path,
            name: name.as_encoded_bytes().to_vec(),
        }))?;
        let r = self.inner.removexattr(ctx, ino, name);
        self.finish(rec, r, |_| Some(ino), Vec::new())
    }

    fn access(&self, ctx: &Ctx, ino: Ino, mask: i32) -> io::Result<()> {
        self.inner.access(ctx, ino, mask)
    }

    fn fallocate(
        &self,
        ctx: &Ctx,
        ino: Ino,
        fh: Fh,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> io::Result<()> {
        self.engine.fence(ino);
        let rec = self.intent(self.path(ino).map(|path| Op::Fallocate {
            path,
            mode,
            offset,
            len: length,
        }))?;
        let r = self.inner.fallocate(ctx, ino, fh, offset, length, mode);
        self.finish(rec, r, |_| Some(ino), Vec::new())
    }

    fn lseek(&self, ctx: &Ctx, ino: Ino, fh: Fh, offset: i64, whence: i32) -> io::Result<i64> {
        self.inner.lseek(ctx, ino, fh, offset, whence)
    }

    fn copy_file_range(
        &self,
        ctx: &Ctx,
        ino_in: Ino,
        fh_in: Fh,
        offset_in: u64,
        ino_out: Ino,
        fh_out: Fh,
        offset_out: u64,
        len: u64,
    ) -> io::Result<usize> {
        let Some(path) = self.path(ino_out) else {
            let rec = self.intent(None)?;
            let r = self.inner.copy_file_range(
                ctx, ino_in, fh_in, offset_in, ino_out, fh_out, offset_out, len,
            );
            return self.finish(rec, r, |_| None, Vec::new());
        };
        let seq = self.engine.intent(&Op::Write {
            path: path.clone(),
            offset: offset_out,
            len,
        })?;
        match self.inner.copy_file_range(
            ctx, ino_in, fh_in, offset_in, ino_out, fh_out, offset_out, len,
        ) {
            Ok(n) => {
                let id = self.inner.identity(ino_out);
                let pos = self
                    .engine
                    .push_write(seq, ino_out, path, offset_out, n as u64, id);
                self.settle(pos)?;
                Ok(n)
            }
            Err(e) => {
                self.engine.abort(seq);
                Err(e)
            }
        }
    }

    fn inode_count(&self) -> usize {
        self.inner.inode_count()
    }

    fn cold_inodes(&self, max: usize) -> Vec<Ino> {
        self.inner.cold_inodes(max)
    }

    fn forgettable(&self, max: usize) -> Vec<(Ino, std::ffi::OsString)> {
        let cold = self.inner.cold_inodes(max);
        let names = self.names.read().unwrap_or_else(|e| e.into_inner());
        cold.iter()
            .filter_map(|ino| names.by_ino.get(ino))
            .flatten()
            .take(max)
            .cloned()
            .collect()
    }

    fn identity(&self, ino: Ino) -> Option<Identity> {
        self.inner.identity(ino)
    }
}
