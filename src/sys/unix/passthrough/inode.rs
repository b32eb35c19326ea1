//! The inode table: which SOURCE inode each kernel inode number stands for.
//!
//! Inodes are keyed by `(st_dev, st_ino)`, so two names of one file (hard
//! links) are one kernel inode, and a file keeps its identity across
//! renames. The kernel inode number is the SOURCE inode number where that
//! is unambiguous (same device, not taken), so `stat` through the mount
//! shows the numbers SOURCE has and they stay stable across forget/lookup;
//! otherwise a synthetic number is handed out.
//!
//! The kernel forgets inodes only under memory pressure, so a walk of a
//! large tree leaves it remembering every inode it saw. Holding a
//! descriptor for each (as libfuse's `passthrough_hp` does) runs out of
//! descriptors past the process limit. So where the filesystem exports file
//! handles and we may open them (`CAP_DAC_READ_SEARCH`, as virtiofsd's
//! `--inode-file-handles` needs), an inode holds its handle and at most
//! [`InodeTable::cap`] inodes hold a descriptor at once: a clock (second
//! chance) closes the least recently used, and the next use reopens the
//! same inode by handle, or fails with `ESTALE` if it is gone; it never
//! reaches another file by name. Inodes with open files keep theirs. Where
//! handles are unavailable, every inode holds its descriptor for its life.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io;
use std::ops::Deref;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak};

use rustix::fs::{OFlags, Stat};

use super::sys;
use crate::fs::{Ino, ROOT_INO};

/// Identity of a SOURCE inode.
pub type Key = (u64, u64);

/// Synthetic inode numbers start here, far above what filesystems hand out.
const SYNTHETIC_BASE: u64 = 1 << 62;

/// What the page cache of an inode was filled from: mtime and size at the
/// last open or release. An open that finds the same stamp may keep the
/// kernel's cached pages.
pub type CacheStamp = (i64, i64, u64);

fn estale() -> io::Error {
    io::Error::from_raw_os_error(libc::ESTALE)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `/proc/self/fd`, for reopening held descriptors outside the core.
fn proc() -> io::Result<&'static sys::Proc> {
    static PROC: OnceLock<sys::Proc> = OnceLock::new();
    match PROC.get() {
        Some(p) => Ok(p),
        None => {
            let p = sys::Proc::open()?;
            Ok(PROC.get_or_init(|| p))
        }
    }
}

/// One SOURCE inode, independent of its names: how to reach it again, and
/// its descriptor while it holds one. Replication keeps these (as
/// [`crate::fs::Identity`]) to read a file's current bytes and attributes.
pub struct Node {
    /// Reopens the inode once its descriptor was closed. `None`: the
    /// descriptor is held for the node's whole life.
    handle: Option<sys::FileHandle>,
    /// A (non-`O_PATH`) descriptor on the filesystem the handle belongs to.
    mount: Arc<OwnedFd>,
    fd: Mutex<Option<Arc<OwnedFd>>>,
    /// Used since the clock hand last passed it.
    recent: AtomicBool,
    /// Open files and directories of the inode: while there are any, its
    /// descriptor stays (an unlinked file could not be reopened by handle).
    pins: AtomicUsize,
}

impl Node {
    fn held(&self) -> Option<Arc<OwnedFd>> {
        lock(&self.fd).clone()
    }

    fn handle(&self) -> io::Result<&sys::FileHandle> {
        // A node without a handle never drops its descriptor.
        self.handle.as_ref().ok_or_else(estale)
    }

    fn open_node(&self) -> io::Result<OwnedFd> {
        sys::open_node_by_handle(self.mount.as_fd(), self.handle()?)
    }

    /// The inode's attributes (never following a symlink).
    pub fn stat(&self) -> io::Result<Stat> {
        match self.held() {
            Some(fd) => Ok(rustix::fs::fstat(&fd)?),
            None => Ok(rustix::fs::fstat(self.open_node()?)?),
        }
    }

    /// Opens the inode for I/O with open(2) `flags`, whatever its name is
    /// now; `ESTALE` if it no longer exists.
    pub fn open(&self, flags: OFlags) -> io::Result<File> {
        match self.held() {
            Some(fd) => sys::reopen(proc()?, fd.as_fd(), flags),
            None => {
                let flags = flags - (OFlags::CREATE | OFlags::EXCL | OFlags::NOCTTY);
                Ok(File::from(sys::open_by_handle(
                    self.mount.as_fd(),
                    self.handle()?,
                    flags,
                )?))
            }
        }
    }

    /// Keeps the descriptor while the returned guard lives.
    pub fn pin(self: &Arc<Self>) -> Pin {
        self.pins.fetch_add(1, Ordering::AcqRel);
        Pin(Arc::clone(self))
    }
}

/// An open file or directory's hold on its inode's descriptor.
pub struct Pin(Arc<Node>);

impl Drop for Pin {
    fn drop(&mut self) {
        self.0.pins.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct Inode {
    pub node: Arc<Node>,
    pub key: Key,
    nlookup: AtomicU64,
    pub cache_stamp: Mutex<Option<CacheStamp>>,
}

/// An inode with its descriptor held for the length of one operation.
pub struct Live {
    inode: Arc<Inode>,
    fd: Arc<OwnedFd>,
}

impl Live {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Deref for Live {
    type Target = Inode;
    fn deref(&self) -> &Inode {
        &self.inode
    }
}

struct Maps {
    by_ino: HashMap<Ino, Arc<Inode>>,
    by_key: HashMap<Key, Ino>,
    next_synthetic: u64,
}

pub struct InodeTable {
    maps: RwLock<Maps>,
    root_dev: u64,
    /// Where handles are opened: a descriptor of SOURCE's root.
    mount: Arc<OwnedFd>,
    /// The mount whose inodes are reopened by handle; `None`: handles are
    /// unavailable and every inode holds its descriptor.
    handle_mount: Option<i32>,
    cap: usize,
    /// Descriptors held by inodes that have a handle.
    held: AtomicUsize,
    /// Inodes that hold a descriptor and could drop it, oldest first.
    clock: Mutex<VecDeque<Weak<Node>>>,
}

impl InodeTable {
    /// The table for SOURCE's root. `cap` bounds the descriptors held by
    /// inodes that can be reopened by handle.
    pub fn new(root_fd: OwnedFd, root_key: Key, cap: usize) -> Self {
        // open_by_handle_at wants a real descriptor on the filesystem, not
        // an O_PATH one.
        let mount = rustix::fs::openat(
            &root_fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(io::Error::from)
        .and_then(|mount| {
            let id = sys::probe(mount.as_fd()).map_err(io::Error::other)?;
            Ok((mount, id))
        });
        let handles = match mount {
            Ok((mount, id)) => {
                tracing::info!("inodes are reopened by file handle; at most {cap} held open");
                Some((Arc::new(mount), id))
            }
            Err(why) => {
                tracing::warn!(
                    "{why}: every inode the kernel remembers holds a descriptor \
                     (as many as the open-file limit allows)"
                );
                None
            }
        };
        Self::with_handles(root_fd, root_key, cap, handles)
    }

    /// `handles`: a descriptor to open handles on, and the id of the mount
    /// whose inodes are reopened by handle.
    fn with_handles(
        root_fd: OwnedFd,
        root_key: Key,
        cap: usize,
        handles: Option<(Arc<OwnedFd>, i32)>,
    ) -> Self {
        let root_fd = Arc::new(root_fd);
        let (mount, handle_mount) = match handles {
            Some((mount, id)) => (mount, Some(id)),
            None => (Arc::clone(&root_fd), None),
        };
        let root = Arc::new(Inode {
            node: Arc::new(Node {
                handle: None,
                mount: Arc::clone(&mount),
                fd: Mutex::new(Some(Arc::clone(&root_fd))),
                recent: AtomicBool::new(false),
                pins: AtomicUsize::new(0),
            }),
            key: root_key,
            // The root is never forgotten: it is not counted.
            nlookup: AtomicU64::new(1),
            cache_stamp: Mutex::new(None),
        });
        let mut maps = Maps {
            by_ino: HashMap::new(),
            by_key: HashMap::new(),
            next_synthetic: SYNTHETIC_BASE,
        };
        maps.by_ino.insert(ROOT_INO, root);
        maps.by_key.insert(root_key, ROOT_INO);
        InodeTable {
            maps: RwLock::new(maps),
            root_dev: root_key.0,
            mount,
            handle_mount,
            cap: cap.max(1),
            held: AtomicUsize::new(0),
            clock: Mutex::new(VecDeque::new()),
        }
    }

    /// The inode numbered `ino` with its descriptor, reopened by handle if
    /// it was closed; `ESTALE` for an unknown number or a vanished inode.
    pub fn get(&self, ino: Ino) -> io::Result<Live> {
        let inode = {
            let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
            maps.by_ino.get(&ino).cloned().ok_or_else(estale)?
        };
        let fd = match inode.node.held() {
            Some(fd) => {
                inode.node.recent.store(true, Ordering::Relaxed);
                fd
            }
            None => {
                let fd = inode.node.open_node()?;
                self.fill(&inode.node, fd)
            }
        };
        Ok(Live { inode, fd })
    }

    /// The node of inode `ino`, without taking a descriptor for it.
    pub fn node(&self, ino: Ino) -> Option<Arc<Node>> {
        let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
        maps.by_ino.get(&ino).map(|i| Arc::clone(&i.node))
    }

    /// Records one more kernel reference to the inode behind `fd` and
    /// returns its number.
    pub fn reference(&self, fd: OwnedFd, key: Key) -> Ino {
        if let Some((ino, node)) = self.known(key) {
            if node.handle.is_some() {
                // A fresh descriptor of the same inode: keep it if the
                // inode had dropped its own.
                self.fill(&node, fd);
            }
            return ino;
        }
        let handle = self
            .handle_mount
            .and_then(|mount| match sys::name_to_handle(fd.as_fd()) {
                Ok((h, m)) if m == mount => Some(h),
                _ => None,
            });
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&ino) = maps.by_key.get(&key) {
            // Another thread registered it meanwhile.
            maps.by_ino[&ino].nlookup.fetch_add(1, Ordering::Relaxed);
            return ino;
        }
        let natural = key.1;
        let ino = if key.0 == self.root_dev
            && natural > ROOT_INO
            && natural < SYNTHETIC_BASE
            && !maps.by_ino.contains_key(&natural)
        {
            natural
        } else {
            let n = maps.next_synthetic;
            maps.next_synthetic += 1;
            n
        };
        let evictable = handle.is_some();
        let node = Arc::new(Node {
            handle,
            mount: Arc::clone(&self.mount),
            fd: Mutex::new(Some(Arc::new(fd))),
            recent: AtomicBool::new(true),
            pins: AtomicUsize::new(0),
        });
        maps.by_ino.insert(
            ino,
            Arc::new(Inode {
                node: Arc::clone(&node),
                key,
                nlookup: AtomicU64::new(1),
                cache_stamp: Mutex::new(None),
            }),
        );
        maps.by_key.insert(key, ino);
        drop(maps);
        if evictable {
            self.admit(&node);
        }
        ino
    }

    /// A known inode's number and node, its lookup count raised by one.
    fn known(&self, key: Key) -> Option<(Ino, Arc<Node>)> {
        let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
        let &ino = maps.by_key.get(&key)?;
        let inode = &maps.by_ino[&ino];
        inode.nlookup.fetch_add(1, Ordering::Relaxed);
        Some((ino, Arc::clone(&inode.node)))
    }

    /// Gives `node` the descriptor `fd` unless it holds one already;
    /// returns the one it holds.
    fn fill(&self, node: &Arc<Node>, fd: OwnedFd) -> Arc<OwnedFd> {
        let fd = {
            let mut slot = lock(&node.fd);
            if let Some(have) = slot.as_ref() {
                return Arc::clone(have);
            }
            let fd = Arc::new(fd);
            *slot = Some(Arc::clone(&fd));
            fd
        };
        node.recent.store(true, Ordering::Relaxed);
        self.admit(node);
        fd
    }

    /// Counts a descriptor `node` just took and, past the cap, closes the
    /// least recently used ones (second chance; pinned inodes keep theirs).
    fn admit(&self, node: &Arc<Node>) {
        self.held.fetch_add(1, Ordering::AcqRel);
        let mut clock = lock(&self.clock);
        clock.push_back(Arc::downgrade(node));
        let mut budget = 2 * clock.len();
        while self.held.load(Ordering::Acquire) > self.cap && budget > 0 {
            budget -= 1;
            let Some(weak) = clock.pop_front() else { break };
            let Some(n) = weak.upgrade() else { continue };
            let mut slot = lock(&n.fd);
            if slot.is_none() {
                continue; // forgotten, or already evicted: a stale entry
            }
            if n.pins.load(Ordering::Acquire) > 0 || n.recent.swap(false, Ordering::Relaxed) {
                drop(slot);
                clock.push_back(weak);
                continue;
            }
            *slot = None;
            self.held.fetch_sub(1, Ordering::AcqRel);
        }
        // Forgotten inodes and refills leave stale or repeated entries;
        // keep the ring proportional to what it tracks.
        if clock.len() > 2 * self.cap + 64 {
            let mut seen = HashSet::new();
            clock.retain(|w| {
                w.upgrade()
                    .is_some_and(|n| lock(&n.fd).is_some() && seen.insert(Arc::as_ptr(&n) as usize))
            });
        }
    }

    /// Drops `n` kernel references; with the last, the inode leaves the
    /// table and closes its descriptor (unless replication still holds the
    /// node of one that cannot be reopened).
    pub fn forget(&self, ino: Ino, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        let Some(inode) = maps.by_ino.get(&ino) else {
            return;
        };
        let before = inode.nlookup.load(Ordering::Relaxed);
        let after = before.saturating_sub(n);
        inode.nlookup.store(after, Ordering::Relaxed);
        if after == 0 {
            let key = inode.key;
            if let Some(inode) = maps.by_ino.remove(&ino) {
                if inode.node.handle.is_some() && lock(&inode.node.fd).take().is_some() {
                    self.held.fetch_sub(1, Ordering::AcqRel);
                }
            }
            maps.by_key.remove(&key);
        }
    }

    /// At most `max` inodes not used since the last call, none with open
    /// files; the others' use marks are cleared on the way (a clock hand
    /// over the whole table).
    pub fn cold(&self, max: usize) -> Vec<Ino> {
        let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (&ino, inode) in &maps.by_ino {
            if out.len() >= max {
                break;
            }
            let node = &inode.node;
            if ino == ROOT_INO
                || node.pins.load(Ordering::Acquire) > 0
                || node.recent.swap(false, Ordering::Relaxed)
            {
                continue;
            }
            out.push(ino);
        }
        out
    }

    /// Number of inodes known (the root included).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.maps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_ino
            .len()
    }

    /// Descriptors held by inodes that can be reopened by handle (at most
    /// the cap, plus those pinned by open files).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Whether inodes are reopened by handle.
    pub fn by_handle(&self) -> bool {
        self.handle_mount.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> OwnedFd {
        OwnedFd::from(std::fs::File::open("/").unwrap())
    }

    #[test]
    fn same_key_is_one_inode_and_forget_counts_references() {
        let t = InodeTable::with_handles(fd(), (1, 2), 16, None);
        let a = t.reference(fd(), (1, 100));
        let b = t.reference(fd(), (1, 100));
        assert_eq!(a, 100);
        assert_eq!(a, b);
        t.forget(a, 1);
        assert!(t.get(a).is_ok());
        t.forget(a, 1);
        assert!(t.get(a).is_err());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn other_devices_and_collisions_get_synthetic_numbers() {
        let t = InodeTable::with_handles(fd(), (1, 2), 16, None);
        let other_dev = t.reference(fd(), (9, 100));
        assert!(other_dev >= SYNTHETIC_BASE);
        let one = t.reference(fd(), (1, 1));
        assert!(one >= SYNTHETIC_BASE, "ino 1 is the root's number");
        let natural = t.reference(fd(), (1, 100));
        assert_eq!(natural, 100);
    }

    #[test]
    fn root_is_never_forgotten() {
        let t = InodeTable::with_handles(fd(), (1, 2), 16, None);
        t.forget(ROOT_INO, 1000);
        assert!(t.get(ROOT_INO).is_ok());
    }

    /// A real directory of `n` files, each registered as the core would.
    fn table_over(dir: &std::path::Path, n: usize, cap: usize) -> Option<(InodeTable, Vec<Ino>)> {
        let root = sys::open_root(dir).unwrap();
        let st = rustix::fs::fstat(&root).unwrap();
        let t = InodeTable::new(root, super::super::key_of(&st), cap);
        if !t.by_handle() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "file handles unavailable"
            );
            eprintln!("SKIPPED: file handles unavailable here");
            return None;
        }
        let dirfd = sys::open_root(dir).unwrap();
        let inos = (0..n)
            .map(|i| {
                let name = format!("f{i}");
                std::fs::write(dir.join(&name), name.as_bytes()).unwrap();
                let node = sys::open_node(dirfd.as_fd(), name.as_ref()).unwrap();
                let st = rustix::fs::fstat(&node).unwrap();
                t.reference(node, super::super::key_of(&st))
            })
            .collect();
        Some((t, inos))
    }

    #[test]
    fn descriptors_stay_under_the_cap_and_evicted_inodes_reopen_as_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let Some((t, inos)) = table_over(dir.path(), 200, 8) else {
            return;
        };
        assert!(t.held() <= 8, "held {}", t.held());
        for (i, &ino) in inos.iter().enumerate() {
            let live = t.get(ino).unwrap();
            let f = sys::reopen(proc().unwrap(), live.fd(), OFlags::RDONLY).unwrap();
            assert_eq!(std::io::read_to_string(f).unwrap(), format!("f{i}"));
            assert!(t.held() <= 8, "held {}", t.held());
        }
        // An identity outlives the table's descriptor.
        let node = Arc::clone(&t.get(inos[0]).unwrap().node);
        for &ino in &inos[1..] {
            t.get(ino).unwrap();
        }
        assert!(node.held().is_none(), "evicted by now");
        assert_eq!(
            std::io::read_to_string(node.open(OFlags::RDONLY).unwrap()).unwrap(),
            "f0"
        );
        assert!(node.stat().is_ok());
    }

    #[test]
    fn a_vanished_inode_is_stale_never_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let Some((t, inos)) = table_over(dir.path(), 20, 4) else {
            return;
        };
        // f0 was evicted long ago; replace it by a new file of that name.
        std::fs::remove_file(dir.path().join("f0")).unwrap();
        std::fs::write(dir.path().join("f0"), b"impostor").unwrap();
        let err = t.get(inos[0]).err().expect("the old f0 is gone");
        assert_eq!(err.raw_os_error(), Some(libc::ESTALE));
    }

    #[test]
    fn pinned_inodes_keep_their_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let Some((t, inos)) = table_over(dir.path(), 4, 2) else {
            return;
        };
        let pinned = Arc::clone(&t.get(inos[0]).unwrap().node);
        let _pin = pinned.pin();
        for _ in 0..3 {
            for &ino in &inos[1..] {
                t.get(ino).unwrap();
            }
        }
        assert!(pinned.held().is_some());
    }

    #[test]
    fn forgetting_closes_the_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let Some((t, inos)) = table_over(dir.path(), 4, 100) else {
            return;
        };
        assert_eq!(t.held(), 4);
        for &ino in &inos {
            t.forget(ino, 1);
        }
        assert_eq!(t.held(), 0);
        assert_eq!(t.len(), 1);
    }
}
