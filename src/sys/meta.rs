//! The platform-neutral shapes of what the per-OS directory and file calls
//! return: a node's attributes ([`Meta`]), how a file is opened
//! ([`Access`]) and the OS errors the layers above tell apart ([`Errno`],
//! whose tests are per OS).

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Unknown,
}

impl Kind {
    /// The kind of a POSIX `st_mode` (its `S_IFMT` bits).
    pub fn of_mode(mode: u32) -> Kind {
        match mode & S_IFMT {
            0o100000 => Kind::File,
            0o040000 => Kind::Dir,
            0o120000 => Kind::Symlink,
            0o010000 => Kind::Fifo,
            0o140000 => Kind::Socket,
            0o020000 => Kind::CharDevice,
            0o060000 => Kind::BlockDevice,
            _ => Kind::Unknown,
        }
    }
}

/// The file-type bits of a POSIX mode.
pub const S_IFMT: u32 = 0o170000;

/// A point in time as seconds and nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

/// A node's attributes, as `lstat` reports them (never following a final
/// symlink).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// The POSIX `st_mode`: file-type bits and permission bits (on Windows,
    /// made up from the kind and the read-only attribute).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    pub nlink: u64,
    pub dev: u64,
    pub ino: u64,
    /// The device a device node stands for.
    pub rdev: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
}

impl Meta {
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }

    pub fn is_file(&self) -> bool {
        self.kind == Kind::File
    }

    pub fn is_symlink(&self) -> bool {
        self.kind == Kind::Symlink
    }

    /// The permission bits (with set-id and sticky).
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }

    /// `(dev, ino)`: the node itself, across its names.
    pub fn key(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
}

/// How a file is opened (never through a final symlink).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

/// The OS errors the replicas tell apart. `Errno::X.is(&e)` tests an
/// error, `Errno::X.error()` makes one (both per OS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Errno {
    /// EEXIST: the name is taken.
    Exist,
    /// ELOOP: a symlink where none may be followed.
    Loop,
    /// EISDIR
    IsDir,
    /// ENOENT
    NoEnt,
    /// ENOTDIR
    NotDir,
    /// ENOTEMPTY
    NotEmpty,
    /// ESTALE: the inode is gone.
    Stale,
    /// EOPNOTSUPP/ENOTSUP: the file system cannot.
    NotSup,
    /// ENODATA (ENOATTR): no such extended attribute.
    NoData,
}

/// What a mount point must be before mounting: FUSE mounts over an
/// existing empty directory; WinFsp takes a free drive letter (`X:`) or
/// makes the directory itself, which must not exist yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountpointRule {
    ExistingEmptyDir,
    FreeDriveOrNewDir,
}
