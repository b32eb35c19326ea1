//! The inode table: which SOURCE inode each kernel inode number stands for.
//!
//! Inodes are keyed by `(st_dev, st_ino)` and hold an open inode handle, so
//! two names of one file (hard links) are one kernel inode, and a file keeps
//! its identity across renames. The kernel inode number is the SOURCE inode
//! number where that is unambiguous (same device, not taken), so `stat`
//! through the mount shows the numbers SOURCE has and they stay stable
//! across forget/lookup; otherwise a synthetic number is handed out.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::fs::{Ino, ROOT_INO};

/// Identity of a SOURCE inode.
pub type Key = (u64, u64);

/// Synthetic inode numbers start here, far above what filesystems hand out.
const SYNTHETIC_BASE: u64 = 1 << 62;

/// What the page cache of an inode was filled from: mtime and size at the
/// last open or release. An open that finds the same stamp may keep the
/// kernel's cached pages.
pub type CacheStamp = (i64, i64, u64);

pub struct Inode {
    fd: Arc<OwnedFd>,
    pub key: Key,
    nlookup: AtomicU64,
    pub cache_stamp: Mutex<Option<CacheStamp>>,
}

impl Inode {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn identity(&self) -> Arc<OwnedFd> {
        Arc::clone(&self.fd)
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
}

impl InodeTable {
    pub fn new(root_fd: OwnedFd, root_key: Key) -> Self {
        let root = Arc::new(Inode {
            fd: Arc::new(root_fd),
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
        }
    }

    pub fn get(&self, ino: Ino) -> io::Result<Arc<Inode>> {
        let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
        maps.by_ino
            .get(&ino)
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESTALE))
    }

    /// Records one more kernel reference to the inode behind `fd` and
    /// returns its number. `fd` is dropped when the inode is already known.
    pub fn reference(&self, fd: OwnedFd, key: Key) -> Ino {
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&ino) = maps.by_key.get(&key) {
            let inode = &maps.by_ino[&ino];
            inode.nlookup.fetch_add(1, Ordering::Relaxed);
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
        let inode = Arc::new(Inode {
            fd: Arc::new(fd),
            key,
            nlookup: AtomicU64::new(1),
            cache_stamp: Mutex::new(None),
        });
        maps.by_ino.insert(ino, inode);
        maps.by_key.insert(key, ino);
        ino
    }

    /// Drops `n` kernel references; the inode handle closes with the last.
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
            maps.by_ino.remove(&ino);
            maps.by_key.remove(&key);
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> OwnedFd {
        OwnedFd::from(std::fs::File::open("/").unwrap())
    }

    #[test]
    fn same_key_is_one_inode_and_forget_counts_references() {
        let t = InodeTable::new(fd(), (1, 2));
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
        let t = InodeTable::new(fd(), (1, 2));
        let other_dev = t.reference(fd(), (9, 100));
        assert!(other_dev >= SYNTHETIC_BASE);
        let one = t.reference(fd(), (1, 1));
        assert!(one >= SYNTHETIC_BASE, "ino 1 is the root's number");
        let natural = t.reference(fd(), (1, 100));
        assert_eq!(natural, 100);
    }

    #[test]
    fn root_is_never_forgotten() {
        let t = InodeTable::new(fd(), (1, 2));
        t.forget(ROOT_INO, 1000);
        assert!(t.get(ROOT_INO).is_ok());
    }
}
