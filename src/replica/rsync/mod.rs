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
//! rolling-checksum delta. Names that are gone are deleted by a sweep
//! (`--delete`) of the directories that held them, listed with what they
//! hold now; a renamed directory is pushed as a tree.
//!
//! The protocol files: `wire` (integers, ndx), `mux` (framing), `handshake`
//! (greeting, auth, setup), `flist` (the file list), `sums` (checksums),
//! `delta` (tokens), `session` (one push); `plan` builds what one push
//! lists.

pub mod delta;
pub mod flist;
pub mod handshake;
pub mod mux;
mod plan;
pub mod session;
pub mod sums;
pub mod url;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use self::handshake::Login;
use self::plan::{Links, Plan};
use self::session::{Data, Outcome, Push, VerifyFailed};
use super::tree::{Tree, is_dir};
use super::{Change, Progress, Replica};
use crate::backend::FastIo;
use crate::journal::extents::ExtentSet;
use crate::journal::record::{NodeKind, Op};
use crate::sys::{self, Errno};
pub use url::{RsyncUrl, remote_target};

/// How long the daemon may stay silent (or refuse our bytes) before the
/// session is given up and retried.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a probe of a daemon that was failing may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

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

pub struct RsyncReplica {
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
    /// Whether the module keeps symlinks as sent (`munge symlinks`, the
    /// default of an unchrooted daemon, rewrites them): learned from the
    /// first push that carries one.
    symlinks: Mutex<SymlinkCheck>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SymlinkCheck {
    /// Not known yet; the number of listings that failed so far.
    Unknown(u32),
    Faithful,
    /// What `status` says about it.
    Rewritten(String),
}

/// Listings of a pushed symlink to try before giving up on knowing.
const SYMLINK_CHECKS: u32 = 3;

impl RsyncReplica {
    /// `password`: the module password, already read from the password
    /// file or RSYNC_PASSWORD.
    pub fn new(url: RsyncUrl, password: Option<Vec<u8>>, source: &Path) -> Self {
        RsyncReplica {
            url,
            password,
            source: source.to_path_buf(),
            pending: Mutex::new(BTreeMap::new()),
            resyncs: Mutex::new(BTreeSet::new()),
            links: Mutex::new(Links::default()),
            shared: Mutex::new(BTreeSet::new()),
            totals: Mutex::new(Outcome::default()),
            symlinks: Mutex::new(SymlinkCheck::Unknown(0)),
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
            for gone in &push.gone {
                let name = sys::path_from_bytes(gone);
                shared.retain(|n| !n.starts_with(&name));
            }
            for (i, e) in push.entries.iter().enumerate() {
                let name = sys::path_from_bytes(&e.name);
                if e.hlink.is_some() {
                    shared.insert(name);
                } else if !push.inplace && !push.spared.contains(&i) && e.is_file() {
                    // Written as a new file: no longer linked to anything.
                    shared.remove(&name);
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
        self.check_symlinks(&push);
        let mut t = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        t.files += o.files;
        t.literal += o.literal;
        t.matched += o.matched;
        t.deleted += o.deleted;
        t.bytes_sent += o.bytes_sent;
        t.bytes_received += o.bytes_received;
        Ok(o)
    }

    /// After the first push that carried a symlink: lists it back and
    /// compares. The daemon undoes its munging when it sends a link's
    /// text, but the size it lists is the stored link's length, so a
    /// rewritten link shows.
    fn check_symlinks(&self, push: &Push) {
        let tries = match *self.symlinks.lock().unwrap_or_else(|e| e.into_inner()) {
            SymlinkCheck::Unknown(n) if n < SYMLINK_CHECKS => n,
            _ => return,
        };
        let Some((name, sent)) = push
            .entries
            .iter()
            .find_map(|e| Some((&e.name, e.link.as_ref()?)))
        else {
            return;
        };
        let verdict = match self.list_one(name) {
            Ok(Some(got)) => {
                let stored = got.size;
                if stored == sent.len() as u64 && got.link.as_ref() == Some(sent) {
                    SymlinkCheck::Faithful
                } else {
                    let msg = format!(
                        "module rewrites symlinks (`munge symlinks`, the default without \
                         `use chroot`): {} -> {} is stored as a {stored}-byte link; symlinks \
                         on this module are not faithful (set `munge symlinks = no` or `use \
                         chroot = yes`)",
                        String::from_utf8_lossy(name),
                        String::from_utf8_lossy(sent),
                    );
                    tracing::warn!(target_url = %self.url, "{msg}");
                    SymlinkCheck::Rewritten(msg)
                }
            }
            Ok(None) => SymlinkCheck::Unknown(tries + 1),
            Err(e) => {
                tracing::debug!(target_url = %self.url, "listing a pushed symlink: {e}");
                SymlinkCheck::Unknown(tries + 1)
            }
        };
        *self.symlinks.lock().unwrap_or_else(|e| e.into_inner()) = verdict;
    }

    /// The daemon's file-list entry for `name` (a listing with `-l`: the
    /// daemon is the sender); the session is dropped after it.
    fn list_one(&self, name: &[u8]) -> io::Result<Option<flist::Entry>> {
        let args = ["--sender".to_string(), "-le.LsfxCIvu".to_string()];
        let mut c = handshake::connect_at(&self.login(), &args, name)?;
        // No filter rules.
        c.output.data(&0i32.to_le_bytes())?;
        c.output.flush()?;
        let mut prev = flist::Entry::missing(Vec::new());
        flist::decode(&mut c.input, &mut prev, c.protocol >= 31)
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
                    // Listed only to be spared by a sweep: the daemon's
                    // links stay as they are.
                    e.is_file()
                        && !plan.spared.contains(&e.name)
                        && (e.inode.is_some() || shared.contains(&sys::path_from_bytes(&e.name)))
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
                let rel = sys::path_from_bytes(&name);
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
            let mut sweep = Plan::new(&src);
            for (rel, d) in &pending {
                let st = src.lstat(rel)?;
                match (d, st) {
                    (_, None) => sweep.gone(rel)?,
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
            // Listed last, so that what it lists from SOURCE is no older
            // than what the other pushes list: a name they send is never
            // swept away for being missing from an older listing.
            sweep.sweep_lost(&[&new])?;
            // New files go first, with --fuzzy: the name a file was renamed
            // from is still on the daemon then (its deletion is in the
            // last push), so in the same directory it serves as the basis
            // (same size and mtime) and the rename costs block-match
            // tokens instead of the whole file. The deletions go last, by
            // the quick check (the names they list only to spare them are
            // up to date by then).
            for (plan, ignore_times, inplace, fuzzy, what) in [
                (new, true, false, true, "new files"),
                (same, true, true, false, "changes"),
                (linked, true, false, false, "hard links"),
                (sweep, false, false, false, "deletions"),
            ] {
                if plan.entries.is_empty() {
                    continue;
                }
                let mut push = plan.into_push(self.source.clone(), ignore_times, inplace)?;
                push.fuzzy = fuzzy;
                let o = self.run(push, what)?;
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
            plan.sweep_lost(&[])?;
            plan.complete_links(&mut self.links.lock().unwrap_or_else(|e| e.into_inner()))?;
            let linked = self.take_links(&src, [&mut plan])?;
            let mut o = self.run(plan.into_push(self.source.clone(), false, false)?, "resync")?;
            if !linked.entries.is_empty() {
                // By the quick check, like the rest of a resync: a group
                // the daemon already has as SOURCE does is left alone
                // (mostly the echo of our own writes); compared block by
                // block, every echo rewrote and re-linked it, and a verify
                // running meanwhile saw it half built.
                o.literal += self
                    .run(
                        linked.into_push(self.source.clone(), false, false)?,
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

impl Replica for RsyncReplica {
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
            if self
                .links
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .names
                .is_empty()
            {
                return Ok(Vec::new()); // no hard links known: no fstat
            }
            // Not by st_nlink: by now a name may be gone that was there
            // when the change was made.
            let st = match sys::identity_fstat(id) {
                Ok(st) => st,
                // Gone from SOURCE: its names' own changes say so.
                Err(e) if Errno::Stale.is(&e) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            if is_dir(&st) {
                return Ok(Vec::new());
            }
            let l = self.links.lock().unwrap_or_else(|e| e.into_inner());
            Ok(l.names
                .get(&st.key())
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
                if let Some(st) = c.subject.and_then(|id| sys::identity_fstat(id).ok()) {
                    let mut l = self.links.lock().unwrap_or_else(|e| e.into_inner());
                    l.learn(st.key(), from);
                    l.learn(st.key(), to);
                }
                self.mark(from, Dirty::Meta);
                self.mark(to, Dirty::Meta);
            }
            Op::Rename { from, to, flags } => {
                let exchange = *flags & sys::RENAME_EXCHANGE != 0;
                let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
                if exchange {
                    links.exchange(from, to);
                } else {
                    links.rename(from, to);
                }
                drop(links);
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

    fn probe(&self) -> io::Result<()> {
        handshake::probe(&self.url, PROBE_TIMEOUT)
    }

    fn warnings(&self) -> Vec<String> {
        match &*self.symlinks.lock().unwrap_or_else(|e| e.into_inner()) {
            SymlinkCheck::Rewritten(w) => vec![w.clone()],
            _ => Vec::new(),
        }
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
        // `rel` is gone: the sweep of its directory lists the rest of it
        // only to spare it, by the quick check.
        let ignore_times = known_dirty && !plan.has_lost();
        plan.sweep_lost(&[])?;
        plan.complete_links(&mut self.links.lock().unwrap_or_else(|e| e.into_inner()))?;
        let linked = self.take_links(&src, [&mut plan])?;
        let mut o = self.run(
            plan.into_push(source.to_path_buf(), ignore_times, false)?,
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
