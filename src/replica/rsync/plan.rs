//! Planning one push: which entries to list (with the parents the daemon
//! insists on), how each file's data goes, which names must not be swept;
//! and the hard-link groups known so far.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::flist::{self, Entry, XMIT_NO_CONTENT_DIR, XMIT_TOP_DIR};
use super::session::{Data, Push};
use crate::replica::Progress;
use crate::replica::tree::{Tree, is_dir, is_file, is_symlink};
use crate::sys::{self, Access, Meta};

pub(super) type Inode = (u64, u64);

#[derive(Default)]
pub(super) struct Links {
    pub(super) names: HashMap<Inode, BTreeSet<PathBuf>>,
}

impl Links {
    pub(super) fn learn(&mut self, ino: Inode, name: &Path) {
        self.names
            .entry(ino)
            .or_default()
            .insert(name.to_path_buf());
    }

    /// RENAME_EXCHANGE: the names at or below `a` and at or below `b`
    /// trade places.
    pub(super) fn exchange(&mut self, a: &Path, b: &Path) {
        let swap = |n: &PathBuf| -> PathBuf {
            let (from, to) = if n.starts_with(a) { (a, b) } else { (b, a) };
            match n.strip_prefix(from) {
                Ok(rest) if rest.as_os_str().is_empty() => to.to_path_buf(),
                Ok(rest) => to.join(rest),
                Err(_) => n.clone(),
            }
        };
        for names in self.names.values_mut() {
            *names = names.iter().map(swap).collect();
        }
    }

    /// A rename moves every name at or below `from`.
    pub(super) fn rename(&mut self, from: &Path, to: &Path) {
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

/// A relative path as rsync's wire spells it: its components joined by
/// `/` whatever the local separator is (a path joined on Windows holds
/// `\`, which the daemon would take as part of a name).
pub(super) fn name_of(rel: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for c in rel.components() {
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(&sys::name_bytes(c.as_os_str()));
    }
    if out.is_empty() {
        out.push(b'.');
    }
    out
}

/// The list being built for one push.
pub(super) struct Plan<'a> {
    src: &'a Tree,
    pub(super) entries: BTreeMap<Vec<u8>, Entry>,
    pub(super) data: HashMap<Vec<u8>, Data>,
    pub(super) delete: bool,
    /// Listed in another push: a sweep here must not delete them.
    pub(super) protect: Vec<Vec<u8>>,
    /// Directories that lost names (see `gone`), not yet listed.
    lost: BTreeSet<PathBuf>,
    /// The topmost names gone from SOURCE that the sweeps delete.
    gone: Vec<Vec<u8>>,
    /// Listed only so that a sweep spares them.
    pub(super) spared: BTreeSet<Vec<u8>>,
}

impl<'a> Plan<'a> {
    pub(super) fn new(src: &'a Tree) -> Self {
        Plan {
            src,
            entries: BTreeMap::new(),
            data: HashMap::new(),
            delete: false,
            protect: Vec::new(),
            lost: BTreeSet::new(),
            gone: Vec::new(),
            spared: BTreeSet::new(),
        }
    }

    pub(super) fn entry(&self, rel: &Path, st: &Meta, flags: u32) -> io::Result<Entry> {
        let link = if is_symlink(st) {
            let (dir, name) = self.src.parent(rel)?;
            Some(dir.readlinkat(&name)?)
        } else {
            None
        };
        let size = match &link {
            Some(l) => l.len() as u64,
            None if is_file(st) || is_dir(st) => st.size,
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
            mode: st.mode,
            size,
            mtime: st.mtime.sec,
            mtime_nsec: st.mtime.nsec,
            uid: st.uid,
            gid: st.gid,
            rdev: (sys::major(st.rdev), sys::minor(st.rdev)),
            link,
            flags: if is_dir(st) { flags | top } else { 0 },
            // Hard-linked symlinks are sent as separate symlinks: the
            // daemon does not keep their times right as links.
            inode: (is_file(st) && st.nlink > 1).then_some(st.key()),
            hlink: None,
        })
    }

    /// Lists `rel` itself: `content` makes a directory one the daemon
    /// sweeps of what is not listed.
    pub(super) fn add(
        &mut self,
        rel: &Path,
        st: &Meta,
        content: bool,
        data: Option<Data>,
    ) -> io::Result<()> {
        let flags = if content { 0 } else { XMIT_NO_CONTENT_DIR };
        let e = self.entry(rel, st, flags)?;
        self.spared.remove(&e.name);
        if let Some(d) = data.filter(|_| e.is_file()) {
            self.data.insert(e.name.clone(), d);
        }
        match self.entries.get_mut(&e.name) {
            // A content directory stays one; a listed parent becomes one
            // (with the root's XMIT_TOP_DIR).
            Some(old) if old.is_dir() && e.is_dir() => {
                if e.flags & XMIT_NO_CONTENT_DIR == 0 {
                    old.flags = e.flags;
                }
            }
            Some(_) => {}
            None => {
                self.entries.insert(e.name.clone(), e);
            }
        }
        Ok(())
    }

    /// Every directory above `rel`, as a directory whose other contents
    /// the push leaves alone (the daemon insists that parents are listed).
    pub(super) fn ancestors(&mut self, rel: &Path) -> io::Result<()> {
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

    /// A name that is gone from SOURCE. Not listed (an entry with mode 0,
    /// `--delete-missing-args`, is refused by patched daemons): the
    /// directory that held the topmost missing name is noted, and
    /// `sweep_lost` lists it with what it holds now, swept of the rest.
    pub(super) fn gone(&mut self, rel: &Path) -> io::Result<()> {
        let mut top = rel;
        while let Some(parent) = top.parent() {
            if parent.as_os_str().is_empty() || self.src.lstat(parent)?.is_some() {
                break;
            }
            top = parent;
        }
        if let Some(parent) = top.parent() {
            self.gone.push(name_of(top));
            self.lost.insert(parent.to_path_buf());
        }
        Ok(())
    }

    /// Whether names gone from SOURCE wait for `sweep_lost`.
    pub(super) fn has_lost(&self) -> bool {
        !self.lost.is_empty()
    }

    /// Lists every directory that lost names as one the daemon sweeps
    /// (`--delete`), with everything it holds now in SOURCE, so that only
    /// the names that are really gone are deleted. The other names are
    /// listed only to be spared: under the quick check (size and mtime)
    /// an unchanged one costs the daemon a stat and no data; one SOURCE
    /// changed since is sent (rsync's delta, not in place). They go
    /// without hard-link information, so the sweep leaves the daemon's
    /// links as they are (see `spared`). A directory one of `swept`
    /// already sweeps (or lists as a non-directory) is skipped.
    pub(super) fn sweep_lost(&mut self, swept: &[&Plan<'_>]) -> io::Result<()> {
        for dir in std::mem::take(&mut self.lost) {
            let name = name_of(&dir);
            // Swept, or no longer a directory: listed as what it is now,
            // it replaces the daemon's directory (`--force`).
            let sweeps = |p: &Plan<'_>| {
                p.entries
                    .get(&name)
                    .is_some_and(|e| !e.is_dir() || e.flags & XMIT_NO_CONTENT_DIR == 0)
            };
            if sweeps(self) || swept.iter().any(|p| sweeps(p)) {
                continue;
            }
            self.sweep(&dir)?;
        }
        Ok(())
    }

    fn sweep(&mut self, dir: &Path) -> io::Result<()> {
        // Gone too by now: its parent lost it.
        let mut dir = dir;
        let st = loop {
            match (self.src.lstat(dir)?, dir.parent()) {
                (Some(st), _) => break st,
                (None, Some(parent)) => dir = parent,
                (None, None) => return Err(io::Error::other("SOURCE's root is gone")),
            }
        };
        self.ancestors(dir)?;
        // No longer a directory: listed itself, it replaces the daemon's.
        self.add(dir, &st, true, Some(Data::Search))?;
        if !is_dir(&st) {
            return Ok(());
        }
        self.delete = true;
        for name in self.src.list(dir)? {
            let child = dir.join(&name);
            if self.entries.contains_key(&name_of(&child)) {
                continue;
            }
            if let Some(cst) = self.src.lstat(&child)? {
                self.add(&child, &cst, false, Some(Data::Search))?;
                let name = name_of(&child);
                if let Some(e) = self.entries.get_mut(&name) {
                    e.inode = None;
                }
                self.spared.insert(name);
            }
        }
        Ok(())
    }

    /// `rel` and (for a directory) everything below it, every directory
    /// swept of what SOURCE does not have.
    pub(super) fn tree(&mut self, rel: &Path, progress: Option<&Progress>) -> io::Result<()> {
        let Some(st) = self.src.lstat(rel)? else {
            return self.gone(rel);
        };
        self.ancestors(rel)?;
        self.walk(rel, &st, progress)
    }

    pub(super) fn walk(
        &mut self,
        rel: &Path,
        st: &Meta,
        progress: Option<&Progress>,
    ) -> io::Result<()> {
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
    pub(super) fn complete_links(&mut self, links: &mut Links) -> io::Result<()> {
        let listed: Vec<(Vec<u8>, Inode)> = self
            .entries
            .values()
            .filter_map(|e| e.inode.map(|i| (e.name.clone(), i)))
            .collect();
        for (name, ino) in listed {
            links.learn(ino, &sys::path_from_bytes(&name));
            let Some(names) = links.names.get_mut(&ino) else {
                continue;
            };
            let mut stale = Vec::new();
            for other in names.iter() {
                if self.entries.contains_key(&name_of(other)) {
                    continue;
                }
                match self.src.lstat(other)? {
                    Some(st) if st.key() == ino => {
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

    pub(super) fn into_push(
        self,
        source: PathBuf,
        ignore_times: bool,
        inplace: bool,
    ) -> io::Result<Push> {
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
        let spared = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| self.spared.contains(&e.name))
            .map(|(i, _)| i)
            .collect();
        let tree = Arc::new(Tree::open(&source)?);
        Ok(Push {
            entries,
            data,
            open: Box::new(move |e: &Entry| {
                tree.open_file(&sys::path_from_bytes(&e.name), Access::Read, None)
            }),
            delete: self.delete,
            protect: self.protect,
            gone: self.gone,
            spared,
            ignore_times,
            inplace,
            fuzzy: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(l: &Links) -> Vec<String> {
        let mut v: Vec<String> = l
            .names
            .values()
            .flatten()
            .map(|p| String::from_utf8_lossy(&name_of(p)).into_owned())
            .collect();
        v.sort();
        v
    }

    fn listed(p: &Plan<'_>) -> Vec<(String, bool)> {
        p.entries
            .values()
            .map(|e| {
                let content = e.is_dir() && e.flags & XMIT_NO_CONTENT_DIR == 0;
                (String::from_utf8_lossy(&e.name).into_owned(), content)
            })
            .collect()
    }

    #[test]
    fn a_gone_name_sweeps_the_directory_that_held_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = |p: &str| dir.path().join(p);
        std::fs::create_dir_all(s("a/b/sub")).unwrap();
        std::fs::write(s("a/b/kept"), b"k").unwrap();
        std::fs::write(s("a/other"), b"o").unwrap();
        let src = Tree::open(dir.path()).unwrap();
        let mut p = Plan::new(&src);
        // A whole tree gone (a/b/gone/deep/x): the topmost missing name is
        // a/b/gone, so a/b is swept; a gone name at the top sweeps the root.
        p.gone(Path::new("a/b/gone/deep/x")).unwrap();
        p.gone(Path::new("a/b/gone")).unwrap();
        p.gone(Path::new("top")).unwrap();
        assert!(p.has_lost());
        assert!(p.entries.is_empty(), "nothing listed before the sweep");
        p.sweep_lost(&[]).unwrap();
        assert!(p.delete);
        assert_eq!(
            listed(&p),
            [
                (".".to_string(), true),
                ("a".to_string(), false),
                ("a/b".to_string(), true),
                ("a/b/kept".to_string(), false),
                ("a/b/sub".to_string(), false),
            ]
        );
        assert_eq!(p.entries[&b".".to_vec()].flags, XMIT_TOP_DIR);
        assert!(p.spared.contains(b"a/b/kept".as_slice()));
        assert!(p.entries.values().all(|e| e.mode != 0));
        assert_eq!(
            p.gone,
            [b"a/b/gone".to_vec(), b"a/b/gone".to_vec(), b"top".to_vec()]
        );
    }

    #[test]
    fn a_sweep_climbs_past_a_directory_gone_since_and_skips_one_swept_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let s = |p: &str| dir.path().join(p);
        std::fs::create_dir_all(s("a/b")).unwrap();
        std::fs::create_dir_all(s("t")).unwrap();
        std::fs::write(s("a/f"), b"f").unwrap();
        let src = Tree::open(dir.path()).unwrap();
        let mut p = Plan::new(&src);
        p.gone(Path::new("a/b/x")).unwrap();
        p.gone(Path::new("t/y")).unwrap();
        std::fs::remove_dir(s("a/b")).unwrap();
        // t is swept by another push (a renamed tree).
        let mut other = Plan::new(&src);
        other.tree(Path::new("t"), None).unwrap();
        p.sweep_lost(&[&other]).unwrap();
        assert_eq!(
            listed(&p),
            [
                (".".to_string(), false),
                ("a".to_string(), true),
                ("a/f".to_string(), false),
            ]
        );
    }

    #[test]
    fn link_names_follow_renames_and_exchanges() {
        let mut l = Links::default();
        for n in ["a/b/c/file", "a/second", "x"] {
            l.learn((1, 7), Path::new(n));
        }
        // a/b and x trade places; then a moves.
        l.exchange(Path::new("a/b"), Path::new("x"));
        assert_eq!(names(&l), ["a/b", "a/second", "x/c/file"]);
        l.rename(Path::new("a"), Path::new("moved"));
        assert_eq!(names(&l), ["moved/b", "moved/second", "x/c/file"]);
    }
}
