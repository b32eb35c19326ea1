//! The rsync daemon target: a native client of the rsync wire protocol
//! (protocol 30–32) that pushes changes into a module of a stock
//! `rsync --daemon`.
//!
//! Changes are gathered as the engine applies them and pushed, one session
//! per batch, when the engine flushes: a file whose dirty ranges the
//! journal knows goes as block-match tokens for its clean blocks and
//! literal data for the dirty ones, with `--inplace` so the daemon rewrites
//! only those blocks; the whole-file checksum still covers the file, and a
//! mismatch makes the daemon ask again, answered with rsync's own
//! rolling-checksum delta. Names that are gone are deleted with
//! `--delete-missing-args`; a renamed directory is pushed as a tree.
//!
//! The protocol files: `wire` (integers, ndx), `mux` (framing), `handshake`
//! (greeting, auth, setup), `flist` (the file list), `sums` (checksums),
//! `delta` (tokens), `session` (one push).

pub mod delta;
pub mod flist;
pub mod handshake;
pub mod mux;
pub mod session;
pub mod sums;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::fs::{OFlags, Stat};

use self::flist::{Entry, XMIT_NO_CONTENT_DIR, XMIT_TOP_DIR};
use self::handshake::Login;
use self::session::{Data, Outcome, Push, VerifyFailed};
use super::tree::{Tree, is_dir, is_file, is_symlink};
use super::{Change, Progress, Target};
use crate::backend::FastIo;
use crate::config::RsyncUrl;
use crate::journal::extents::ExtentSet;
use crate::journal::record::{NodeKind, Op};

/// How long the daemon may stay silent (or refuse our bytes) before the
/// session is given up and retried.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// What the journal says about a path since the last push, weakest first.
#[derive(Debug)]
enum Dirty {
    /// Attributes, existence: list it as it is now.
    Meta,
    /// These byte ranges of a regular file changed.
    Data(ExtentSet),
    /// The file's bytes are unknown to the daemon under this name.
    Whole,
    /// Everything below this name (a renamed directory).
    Tree,
}

impl Dirty {
    fn merge(&mut self, new: Dirty) {
        match (&mut *self, new) {
            (Dirty::Data(a), Dirty::Data(b)) => a.union(&b),
            (Dirty::Tree, _) | (Dirty::Whole, Dirty::Meta | Dirty::Data(_)) => {}
            (Dirty::Data(_), Dirty::Meta) => {}
            (s, n) => *s = n,
        }
    }
}

pub struct RsyncTarget {
    url: RsyncUrl,
    password: Option<Vec<u8>>,
    source: PathBuf,
    pending: Mutex<BTreeMap<PathBuf, Dirty>>,
    /// Paths SOURCE changed outside the mount (or our own writes, seen
    /// by the watch): pushed after the changes, by a quick compare.
    resyncs: Mutex<BTreeSet<PathBuf>>,
    /// Names known to share an inode in SOURCE (hard links), so that a
    /// push lists all of them together: the daemon links only names listed
    /// in one session. Learned from link operations and reconciles;
    /// checked against SOURCE at every push.
    links: Mutex<Links>,
    /// Names last sent as hard links: their daemon copies may share an
    /// inode, so they are never written in place.
    shared: Mutex<BTreeSet<PathBuf>>,
    totals: Mutex<Outcome>,
}

impl RsyncTarget {
    /// `password`: the module password, already read from the password
    /// file or RSYNC_PASSWORD.
    pub fn new(url: RsyncUrl, password: Option<Vec<u8>>, source: &Path) -> Self {
        RsyncTarget {
            url,
            password,
            source: source.to_path_buf(),
            pending: Mutex::new(BTreeMap::new()),
            resyncs: Mutex::new(BTreeSet::new()),
            links: Mutex::new(Links::default()),
            shared: Mutex::new(BTreeSet::new()),
            totals: Mutex::new(Outcome::default()),
        }
    }

    fn login(&self) -> Login<'_> {
        Login {
            url: &self.url,
            password: self.password.as_deref(),
            timeout: IO_TIMEOUT,
        }
    }

    fn mark(&self, path: &Path, d: Dirty) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match p.get_mut(path) {
            Some(old) => old.merge(d),
            None => {
                p.insert(path.to_path_buf(), d);
            }
        }
    }

    /// The byte ranges a data change dirtied (none for a truncate: blocks
    /// past the new end are simply not matched); `None` for other ops.
    fn data_of(&self, c: &Change<'_>) -> Option<ExtentSet> {
        let mut x = ExtentSet::new();
        match c.op {
            Op::Truncate { .. } => {}
            Op::Write { offset, len, .. } => match c.extents {
                Some(e) => x = e.clone(),
                None => x.insert(*offset, *len),
            },
            Op::Fallocate { offset, len, .. } => x.insert(*offset, *len),
            _ => return None,
        }
        Some(x)
    }

    /// Sums of every push, for `status` and benchmarks.
    pub fn totals(&self) -> Outcome {
        *self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self, push: Push, what: &str) -> io::Result<Outcome> {
        let start = Instant::now();
        let o = session::run(&self.login(), &push)?;
        {
            let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            for e in &push.entries {
                let name = Path::new(OsStr::from_bytes(&e.name));
                if e.mode == 0 {
                    shared.retain(|n| !n.starts_with(name));
                } else if e.hlink.is_some() {
                    shared.insert(name.to_path_buf());
                } else if !push.inplace && e.is_file() {
                    // Written as a new file: no longer linked to anything.
                    shared.remove(name);
                }
            }
        }
        tracing::debug!(
            target_url = %self.url,
            what,
            entries = push.entries.len(),
            files = o.files,
            literal = o.literal,
            matched = o.matched,
            deleted = o.deleted,
            sent = o.bytes_sent,
            received = o.bytes_received,
            ms = start.elapsed().as_secs_f64() * 1e3,
            "rsync push"
        );
        let mut t = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        t.files += o.files;
        t.literal += o.literal;
        t.matched += o.matched;
        t.deleted += o.deleted;
        t.bytes_sent += o.bytes_sent;
        t.bytes_received += o.bytes_received;
        Ok(o)
    }

    /// Moves every multiply-linked file out of `plans` into a push of its
    /// own, with all its names. The daemon links only names listed
    /// together and, in a partial list, cannot be trusted to mend a group
    /// whose links on its side differ from SOURCE's; so groups are sent
    /// compared block by block (`--ignore-times`) and written as new files
    /// (no `--inplace`), which rebuilds them exactly.
    fn take_links<'t, const N: usize>(
        &self,
        src: &'t Tree,
        plans: [&mut Plan<'t>; N],
    ) -> io::Result<Plan<'t>> {
        let mut linked = Plan::new(src);
        for plan in plans {
            // Also names whose copy on the daemon may still be a hard link
            // (it was one when last sent): writing them in place would
            // write through to the other names.
            let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            let names: Vec<Vec<u8>> = plan
                .entries
                .values()
                .filter(|e| {
                    e.is_file()
                        && (e.inode.is_some()
                            || shared.contains(Path::new(OsStr::from_bytes(&e.name))))
                })
                .map(|e| e.name.clone())
                .collect();
            drop(shared);
            for name in names {
                // A name with wildcard characters cannot be written as a
                // literal rule: it stays listed here too (a sweep would
                // delete it otherwise) and is sent twice.
                if plan.delete && name.iter().any(|c| b"*?[\\".contains(c)) {
                    plan.data.insert(name.clone(), Data::Search);
                } else {
                    plan.entries.remove(&name);
                    plan.data.remove(&name);
                    plan.protect.push(name.clone());
                }
                let rel = PathBuf::from(OsStr::from_bytes(&name));
                if let Some(st) = src.lstat(&rel)? {
                    linked.ancestors(&rel)?;
                    linked.add(&rel, &st, false, Some(Data::Search))?;
                }
            }
        }
        linked.complete_links(&mut self.links.lock().unwrap_or_else(|e| e.into_inner()))?;
        Ok(linked)
    }

    /// Pushes the gathered changes; they stay gathered if a push fails.
    fn push_changes(&self) -> io::Result<u64> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if pending.is_empty() {
            return Ok(0);
        }
        // Two pushes: names that still hold the daemon's file, updated in
        // place from the dirty ranges; and names that now hold another
        // file (created, renamed over), which the daemon must replace
        // rather than rewrite, or its other hard links to the old file
        // would change too.
        let renewed: BTreeSet<&PathBuf> = pending
            .iter()
            .filter(|(_, d)| matches!(d, Dirty::Whole | Dirty::Tree))
            .map(|(p, _)| p)
            .collect();
        let under_renewed =
            |rel: &Path| rel.ancestors().any(|a| renewed.contains(&a.to_path_buf()));
        let r: io::Result<Outcome> = (|| {
            let src = Tree::open(&self.source)?;
            let mut same = Plan::new(&src);
            let mut new = Plan::new(&src);
            for (rel, d) in &pending {
                let st = src.lstat(rel)?;
                match (d, st) {
                    (_, None) => same.gone(rel)?,
                    (Dirty::Tree | Dirty::Whole, Some(_)) => new.tree(rel, None)?,
                    (_, Some(_)) if under_renewed(rel) => {}
                    (d, Some(st)) => {
                        let data = match d {
                            Dirty::Data(x) => Data::Known(x.iter().collect()),
                            _ => Data::Known(Vec::new()),
                        };
                        same.ancestors(rel)?;
                        same.add(rel, &st, false, Some(data))?;
                    }
                }
            }
            let mut total = Outcome::default();
            let linked = self.take_links(&src, [&mut same, &mut new])?;
            for (plan, inplace, what) in [
                (same, true, "changes"),
                (new, false, "new files"),
                (linked, false, "hard links"),
            ] {
                if plan.entries.is_empty() {
                    continue;
                }
                let o = self.run(plan.into_push(self.source.clone(), true, inplace)?, what)?;
                total.literal += o.literal;
            }
            Ok(total)
        })();
        match r {
            Ok(o) => Ok(o.literal),
            Err(e) => {
                // Keep everything for the retry, merged with what came
                // meanwhile; files the daemon could not verify go again as
                // new files.
                let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(v) = e.get_ref().and_then(|x| x.downcast_ref::<VerifyFailed>()) {
                    for name in &v.names {
                        p.insert(PathBuf::from(name), Dirty::Whole);
                    }
                }
                for (k, v) in pending {
                    match p.get_mut(&k) {
                        Some(new) => {
                            let newer = std::mem::replace(new, v);
                            new.merge(newer);
                        }
                        None => {
                            p.insert(k, v);
                        }
                    }
                }
                Err(e)
            }
        }
    }

    /// One flush: the gathered changes, then the resyncs.
    fn flush_once(&self) -> io::Result<u64> {
        let pushed = self.push_changes()?;
        let resyncs = std::mem::take(&mut *self.resyncs.lock().unwrap_or_else(|e| e.into_inner()));
        if resyncs.is_empty() {
            return Ok(pushed);
        }
        let r = (|| {
            let src = Tree::open(&self.source)?;
            let mut plan = Plan::new(&src);
            for rel in &resyncs {
                plan.tree(rel, None)?;
            }
            plan.complete_links(&mut self.links.lock().unwrap_or_else(|e| e.into_inner()))?;
            let linked = self.take_links(&src, [&mut plan])?;
            let mut o = self.run(plan.into_push(self.source.clone(), false, false)?, "resync")?;
            if !linked.entries.is_empty() {
                o.literal += self
                    .run(
                        linked.into_push(self.source.clone(), true, false)?,
                        "hard links",
                    )?
                    .literal;
            }
            Ok(o)
        })();
        match r {
            Ok(o) => Ok(pushed + o.literal),
            Err(e) => {
                self.resyncs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(resyncs);
                Err(e)
            }
        }
    }
}

type Inode = (u64, u64);

#[derive(Default)]
struct Links {
    names: HashMap<Inode, BTreeSet<PathBuf>>,
}

impl Links {
    fn learn(&mut self, ino: Inode, name: &Path) {
        self.names
            .entry(ino)
            .or_default()
            .insert(name.to_path_buf());
    }

    /// A rename moves every name at or below `from`.
    fn rename(&mut self, from: &Path, to: &Path) {
        for names in self.names.values_mut() {
            let moved: Vec<PathBuf> = names
                .iter()
                .filter(|n| n.starts_with(from))
                .cloned()
                .collect();
            for n in moved {
                names.remove(&n);
                if let Ok(rest) = n.strip_prefix(from) {
                    names.insert(if rest.as_os_str().is_empty() {
                        to.to_path_buf()
                    } else {
                        to.join(rest)
                    });
                }
            }
        }
    }
}

fn name_of(rel: &Path) -> Vec<u8> {
    if rel.as_os_str().is_empty() {
        b".".to_vec()
    } else {
        rel.as_os_str().as_bytes().to_vec()
    }
}

/// The list being built for one push.
struct Plan<'a> {
    src: &'a Tree,
    entries: BTreeMap<Vec<u8>, Entry>,
    data: HashMap<Vec<u8>, Data>,
    delete: bool,
    /// Listed in another push: a sweep here must not delete them.
    protect: Vec<Vec<u8>>,
}

impl<'a> Plan<'a> {
    fn new(src: &'a Tree) -> Self {
        Plan {
            src,
            entries: BTreeMap::new(),
            data: HashMap::new(),
            delete: false,
            protect: Vec::new(),
        }
    }

    fn entry(&self, rel: &Path, st: &Stat, flags: u32) -> io::Result<Entry> {
        let link = if is_symlink(st) {
            let (dir, name) = self.src.parent(rel)?;
            Some(rustix::fs::readlinkat(&dir, &name, Vec::new())?.into_bytes())
        } else {
            None
        };
        let size = match &link {
            Some(l) => l.len() as u64,
            None if is_file(st) || is_dir(st) => st.st_size as u64,
            None => 0,
        };
        // The root is a "top dir" only when it is swept: as a plain
        // parent, the daemon would take a top dir for an implied one and
        // leave its times alone.
        let top = if rel.as_os_str().is_empty() && flags & XMIT_NO_CONTENT_DIR == 0 {
            XMIT_TOP_DIR
        } else {
            0
        };
        Ok(Entry {
            name: name_of(rel),
            mode: st.st_mode,
            size,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev)),
            link,
            flags: if is_dir(st) { flags | top } else { 0 },
            // Hard-linked symlinks are sent as separate symlinks: the
            // daemon does not keep their times right as links.
            inode: (is_file(st) && st.st_nlink > 1).then_some((st.st_dev, st.st_ino)),
            hlink: None,
        })
    }

    /// Lists `rel` itself: `content` makes a directory one the daemon
    /// sweeps of what is not listed.
    fn add(&mut self, rel: &Path, st: &Stat, content: bool, data: Option<Data>) -> io::Result<()> {
        let flags = if content { 0 } else { XMIT_NO_CONTENT_DIR };
        let e = self.entry(rel, st, flags)?;
        if let Some(d) = data.filter(|_| e.is_file()) {
            self.data.insert(e.name.clone(), d);
        }
        match self.entries.get_mut(&e.name) {
            // A content directory stays one.
            Some(old) if old.is_dir() && e.is_dir() => old.flags &= e.flags,
            Some(_) => {}
            None => {
                self.entries.insert(e.name.clone(), e);
            }
        }
        Ok(())
    }

    /// Every directory above `rel`, as a directory whose other contents
    /// the push leaves alone (the daemon insists that parents are listed).
    fn ancestors(&mut self, rel: &Path) -> io::Result<()> {
        let mut p = rel.parent();
        while let Some(d) = p {
            if self.entries.contains_key(&name_of(d)) {
                break;
            }
            match self.src.lstat(d)? {
                Some(st) if is_dir(&st) => self.add(d, &st, false, None)?,
                _ => {
                    return Err(io::Error::other(format!(
                        "{} changed during the push",
                        d.display()
                    )));
                }
            }
            p = d.parent();
        }
        Ok(())
    }

    /// A name that is gone from SOURCE: the daemon deletes the topmost
    /// missing one (recursively).
    fn gone(&mut self, rel: &Path) -> io::Result<()> {
        let mut top = rel;
        while let Some(parent) = top.parent() {
            if parent.as_os_str().is_empty() || self.src.lstat(parent)?.is_some() {
                break;
            }
            top = parent;
        }
        let name = name_of(top);
        self.entries
            .entry(name.clone())
            .or_insert_with(|| Entry::missing(name));
        self.ancestors(top)
    }

    /// `rel` and (for a directory) everything below it, every directory
    /// swept of what SOURCE does not have.
    fn tree(&mut self, rel: &Path, progress: Option<&Progress>) -> io::Result<()> {
        let Some(st) = self.src.lstat(rel)? else {
            return self.gone(rel);
        };
        self.ancestors(rel)?;
        self.walk(rel, &st, progress)
    }

    fn walk(&mut self, rel: &Path, st: &Stat, progress: Option<&Progress>) -> io::Result<()> {
        self.add(rel, st, true, Some(Data::Search))?;
        if let Some(p) = progress {
            p.entries.fetch_add(1, Ordering::Relaxed);
        }
        if !is_dir(st) {
            return Ok(());
        }
        self.delete = true;
        for name in self.src.list(rel)? {
            let child = rel.join(&name);
            if let Some(cst) = self.src.lstat(&child)? {
                self.walk(&child, &cst, progress)?;
            }
        }
        Ok(())
    }

    /// Lists every other name of each listed multiply-linked file (a name
    /// still holding the same inode in SOURCE), and records the groups
    /// seen in `links`.
    fn complete_links(&mut self, links: &mut Links) -> io::Result<()> {
        let listed: Vec<(Vec<u8>, Inode)> = self
            .entries
            .values()
            .filter_map(|e| e.inode.map(|i| (e.name.clone(), i)))
            .collect();
        for (name, ino) in listed {
            links.learn(ino, Path::new(OsStr::from_bytes(&name)));
            let Some(names) = links.names.get_mut(&ino) else {
                continue;
            };
            let mut stale = Vec::new();
            for other in names.iter() {
                if self.entries.contains_key(&name_of(other)) {
                    continue;
                }
                match self.src.lstat(other)? {
                    Some(st) if (st.st_dev, st.st_ino) == ino => {
                        self.ancestors(other)?;
                        self.add(other, &st, false, Some(Data::Known(Vec::new())))?;
                    }
                    _ => stale.push(other.clone()),
                }
            }
            for s in stale {
                names.remove(&s);
            }
        }
        links.names.retain(|_, n| n.len() > 1);
        Ok(())
    }

    fn into_push(self, source: PathBuf, ignore_times: bool, inplace: bool) -> io::Result<Push> {
        let mut entries: Vec<Entry> = self.entries.into_values().collect();
        entries.sort_by(flist::cmp);
        flist::link_groups(&mut entries);
        // The daemon sends one name of a link group and links the others
        // to it: every name must carry what is known of the inode.
        let mut by_inode: HashMap<Inode, Data> = HashMap::new();
        for e in &entries {
            if let (Some(ino), Some(d)) = (e.inode, self.data.get(&e.name)) {
                by_inode
                    .entry(ino)
                    .and_modify(|have| have.merge(d))
                    .or_insert_with(|| d.clone());
            }
        }
        let data = entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let d = match e.inode {
                    Some(ino) => by_inode.get(&ino),
                    None => self.data.get(&e.name),
                };
                d.map(|d| (i, d.clone()))
            })
            .collect();
        let tree = Arc::new(Tree::open(&source)?);
        Ok(Push {
            entries,
            data,
            open: Box::new(move |e: &Entry| {
                tree.open_file(Path::new(OsStr::from_bytes(&e.name)), OFlags::RDONLY, 0)
            }),
            delete: self.delete,
            protect: self.protect,
            ignore_times,
            inplace,
        })
    }
}

impl Target for RsyncTarget {
    fn name(&self) -> String {
        self.url.to_string()
    }

    fn apply(&self, c: &Change<'_>, _io: &dyn FastIo) -> io::Result<u64> {
        tracing::trace!(op = ?c.op, "gather");
        // A change to the data or attributes of a file with several names
        // is a change under each of them (the op names just one, perhaps
        // one that is gone by the time of the push).
        let other_names = || -> io::Result<Vec<PathBuf>> {
            let Some(id) = c.subject else {
                return Ok(Vec::new());
            };
            // Not by st_nlink: by now a name may be gone that was there
            // when the change was made.
            let st = rustix::fs::fstat(id)?;
            if is_dir(&st) {
                return Ok(Vec::new());
            }
            let l = self.links.lock().unwrap_or_else(|e| e.into_inner());
            Ok(l.names
                .get(&(st.st_dev, st.st_ino))
                .map(|n| n.iter().cloned().collect())
                .unwrap_or_default())
        };
        match c.op {
            Op::Write { .. } | Op::Truncate { .. } | Op::Fallocate { .. } | Op::Attr { .. } => {
                for name in other_names()? {
                    let d = match self.data_of(c) {
                        Some(x) => Dirty::Data(x),
                        None => Dirty::Meta,
                    };
                    self.mark(&name, d);
                }
            }
            _ => {}
        }
        match c.op {
            Op::Create {
                path,
                kind: NodeKind::File,
                ..
            } => self.mark(path, Dirty::Whole),
            Op::Create { path, .. }
            | Op::Symlink { path, .. }
            | Op::Unlink { path }
            | Op::Rmdir { path }
            | Op::Attr { path }
            | Op::SetXattr { path, .. }
            | Op::RemoveXattr { path, .. } => self.mark(path, Dirty::Meta),
            // Both names, so that the push lists them as links of one inode.
            Op::Link { from, to } => {
                if let Some(id) = c.subject {
                    let st = rustix::fs::fstat(id)?;
                    let mut l = self.links.lock().unwrap_or_else(|e| e.into_inner());
                    l.learn((st.st_dev, st.st_ino), from);
                    l.learn((st.st_dev, st.st_ino), to);
                }
                self.mark(from, Dirty::Meta);
                self.mark(to, Dirty::Meta);
            }
            Op::Rename { from, to, flags } => {
                let exchange = *flags & libc::RENAME_EXCHANGE != 0;
                if !exchange {
                    self.links
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .rename(from, to);
                }
                self.mark(from, if exchange { Dirty::Tree } else { Dirty::Meta });
                self.mark(to, Dirty::Tree);
            }
            Op::Truncate { path, .. } | Op::Write { path, .. } | Op::Fallocate { path, .. } => {
                let x = self.data_of(c).unwrap_or_default();
                self.mark(path, Dirty::Data(x));
            }
            Op::Resync { .. } => {}
        }
        Ok(0)
    }

    fn flush(&self) -> io::Result<u64> {
        let mut tries = 0;
        loop {
            match self.flush_once() {
                Err(e) if e.kind() == io::ErrorKind::Interrupted && tries < 5 => {
                    tries += 1;
                    tracing::debug!(target_url = %self.url, "{e}; pushing again");
                }
                r => return r,
            }
        }
    }
    fn resync(
        &self,
        _source: &Path,
        rel: &Path,
        _progress: &Arc<Progress>,
        _io: &dyn FastIo,
    ) -> io::Result<()> {
        tracing::trace!(path = %rel.display(), "gather resync");
        self.resyncs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(rel.to_path_buf());
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.flush().map(|_| ())
    }

    fn reconcile(
        &self,
        source: &Path,
        rel: &Path,
        known_dirty: bool,
        progress: &Arc<Progress>,
        _io: &dyn FastIo,
    ) -> io::Result<()> {
        let src = Tree::open(source)?;
        let mut plan = Plan::new(&src);
        plan.tree(rel, Some(progress))?;
        plan.complete_links(&mut self.links.lock().unwrap_or_else(|e| e.into_inner()))?;
        let linked = self.take_links(&src, [&mut plan])?;
        let mut o = self.run(
            plan.into_push(source.to_path_buf(), known_dirty, false)?,
            "reconcile",
        )?;
        if !linked.entries.is_empty() {
            let l = self.run(
                linked.into_push(source.to_path_buf(), true, false)?,
                "hard links",
            )?;
            o.literal += l.literal;
            o.files += l.files;
        }
        progress
            .bytes_copied
            .fetch_add(o.literal, Ordering::Relaxed);
        progress
            .entries_fixed
            .fetch_add(o.files + o.deleted, Ordering::Relaxed);
        Ok(())
    }
}
