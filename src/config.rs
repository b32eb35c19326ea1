//! Raw command-line arguments → a validated configuration. Every check
//! happens here, before anything is mounted or created, and every error
//! names the argument that was wrong.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::backend::IoChoice;
use crate::cli::MountArgs;
use crate::error::{Error, Result};
use crate::replica::rsync::{RsyncUrl, remote_target};
use crate::sync::policy::Consistency;
use crate::sync::policy::TargetDown;

/// A validated `replicafs mount`.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Canonical, an existing directory.
    pub source: PathBuf,
    /// Canonical, an existing empty directory that is not a mount.
    pub mountpoint: PathBuf,
    pub targets: Vec<Target>,
    pub consistency: Consistency,
    pub on_target_down: TargetDown,
    pub max_lag: Duration,
    pub io: IoChoice,
    pub state_dir: PathBuf,
    pub password_file: Option<PathBuf>,
    pub daemon: bool,
    /// Directory targets that do not exist may be created (`--create-target`).
    pub create_target: bool,
    pub fuse: FuseMountOptions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A local directory (absolute; it may not exist yet, with
    /// `--create-target`).
    Dir(PathBuf),
    Rsync(RsyncUrl),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Dir(p) => write!(f, "{}", p.display()),
            Target::Rsync(u) => write!(f, "{u}"),
        }
    }
}

/// FUSE options from `-o`, checked against what we support.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FuseMountOptions {
    pub allow_other: bool,
    pub allow_root: bool,
    pub read_only: bool,
    pub writeback_cache: bool,
    /// Writes go through the kernel's page cache instead of straight to us.
    pub cached_writes: bool,
    /// Session threads serving requests.
    pub threads: Option<usize>,
    /// At most this many SOURCE inodes hold a descriptor at once.
    pub inode_fds: Option<usize>,
    /// The open-file limit to set at start (0: leave it as it is).
    pub rlimit_nofile: Option<u64>,
    /// At most about this many inodes held by the kernel (0: no bound).
    pub max_inodes: Option<usize>,
    pub fsname: Option<String>,
    /// Plain mount flags passed to the kernel as they are.
    pub flags: Vec<MountFlag>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountFlag {
    NoAtime,
    Atime,
    NoDev,
    Dev,
    NoSuid,
    Suid,
    NoExec,
    Exec,
    DirSync,
}

pub const KNOWN_OPTIONS: &str = "allow_other, allow_root, default_permissions, ro, rw, noatime, \
     atime, nodev, dev, nosuid, suid, noexec, exec, dirsync, fsname=NAME, cached_writes, writeback_cache, threads=N, inode_fds=N, \
     rlimit_nofile=N, max_inodes=N";

/// Inodes the kernel may hold before it is asked to forget unused ones,
/// when `-o max_inodes=` is not given: about 120 MiB of our tables.
pub const DEFAULT_MAX_INODES: usize = 200_000;

impl FuseMountOptions {
    /// The bound on inodes the kernel holds (0: none).
    pub fn max_inodes(&self) -> usize {
        self.max_inodes.unwrap_or(DEFAULT_MAX_INODES)
    }

    pub fn parse(values: &[String]) -> Result<Self> {
        let mut o = FuseMountOptions::default();
        for opt in values.iter().flat_map(|v| v.split(',')).map(str::trim) {
            match opt {
                "" => {}
                "allow_other" => o.allow_other = true,
                "allow_root" => o.allow_root = true,
                // Always on: the kernel checks SOURCE's modes for every caller.
                "default_permissions" => {}
                "ro" => o.read_only = true,
                "rw" => o.read_only = false,
                "writeback_cache" => o.writeback_cache = true,
                "cached_writes" => o.cached_writes = true,
                "noatime" => o.flags.push(MountFlag::NoAtime),
                "atime" => o.flags.push(MountFlag::Atime),
                "nodev" => o.flags.push(MountFlag::NoDev),
                "dev" => o.flags.push(MountFlag::Dev),
                "nosuid" => o.flags.push(MountFlag::NoSuid),
                "suid" => o.flags.push(MountFlag::Suid),
                "noexec" => o.flags.push(MountFlag::NoExec),
                "exec" => o.flags.push(MountFlag::Exec),
                "dirsync" => o.flags.push(MountFlag::DirSync),
                _ => {
                    if let Some(name) = opt.strip_prefix("fsname=") {
                        if name.is_empty() || name.contains(char::is_whitespace) {
                            return Err(Error::invalid(format!(
                                "-o {opt}: fsname must be non-empty without spaces"
                            )));
                        }
                        o.fsname = Some(name.to_string());
                    } else if let Some(n) = opt.strip_prefix("threads=") {
                        let n = n.parse::<usize>().ok().filter(|n| (1..=256).contains(n));
                        o.threads = Some(n.ok_or_else(|| {
                            Error::invalid(format!(
                                "-o {opt}: threads must be a number from 1 to 256"
                            ))
                        })?);
                    } else if let Some(n) = opt.strip_prefix("inode_fds=") {
                        let n = n.parse::<usize>().ok().filter(|n| *n >= 16);
                        o.inode_fds = Some(n.ok_or_else(|| {
                            Error::invalid(format!(
                                "-o {opt}: inode_fds must be a number of 16 or more"
                            ))
                        })?);
                    } else if let Some(n) = opt.strip_prefix("max_inodes=") {
                        let n = n.parse::<usize>().ok().filter(|n| *n == 0 || *n >= 100);
                        o.max_inodes = Some(n.ok_or_else(|| {
                            Error::invalid(format!(
                                "-o {opt}: max_inodes must be 0 (no bound) or a number of 100 or more"
                            ))
                        })?);
                    } else if let Some(n) = opt.strip_prefix("rlimit_nofile=") {
                        let n = n.parse::<u64>().ok().filter(|n| *n == 0 || *n >= 64);
                        o.rlimit_nofile = Some(n.ok_or_else(|| {
                            Error::invalid(format!(
                                "-o {opt}: rlimit_nofile must be 0 (leave the limit as it is) \
                                 or a number of 64 or more"
                            ))
                        })?);
                    } else {
                        return Err(Error::invalid(format!(
                            "-o: unknown mount option '{opt}' (known: {KNOWN_OPTIONS})"
                        )));
                    }
                }
            }
        }
        if o.allow_other && o.allow_root {
            return Err(Error::invalid(
                "-o: allow_other and allow_root exclude each other",
            ));
        }
        Ok(o)
    }
}

impl MountConfig {
    /// Validates `mount` arguments against the filesystem as it is now.
    pub fn from_args(args: &MountArgs) -> Result<Self> {
        let source = existing_dir("source", &args.source)?;
        let mountpoint = mountpoint(&args.mountpoint)?;
        if mountpoint == source {
            return Err(Error::invalid(format!(
                "mountpoint {} is the source itself: mount somewhere else",
                mountpoint.display()
            )));
        }
        if mountpoint.starts_with(&source) {
            return Err(Error::invalid(format!(
                "mountpoint {} is inside the source {}: the mount would contain itself",
                mountpoint.display(),
                source.display()
            )));
        }
        let mut targets = Vec::new();
        for raw in &args.targets {
            let t = target(raw, &source, &mountpoint)?;
            if targets.contains(&t) {
                return Err(Error::invalid(format!("target {t} is given twice")));
            }
            targets.push(t);
        }
        if args.max_lag.is_some() && args.consistency != Consistency::Async {
            return Err(Error::invalid(
                "--max-lag only applies with --consistency async",
            ));
        }
        if let Some(pf) = &args.password_file {
            password_file_ok(pf)?;
        }
        let fuse = FuseMountOptions::parse(&args.options)?;
        if fuse.writeback_cache && args.consistency == Consistency::Sync {
            return Err(Error::invalid(
                "-o writeback_cache cannot be used with --consistency sync: the kernel would \
                 acknowledge writes before any target has them",
            ));
        }
        let state_dir = match &args.state_dir {
            Some(d) => absolute("state dir", d)?,
            None => default_state_dir(&mountpoint),
        };
        if state_dir.starts_with(&source) || state_dir.starts_with(&mountpoint) {
            return Err(Error::invalid(format!(
                "state dir {} is inside the source or the mountpoint",
                state_dir.display()
            )));
        }
        // Last, so that any other mistake is named first: a missing
        // directory target is made only when asked, never by surprise.
        if !args.create_target {
            for (raw, t) in args.targets.iter().zip(&targets) {
                if matches!(t, Target::Dir(p) if !p.exists()) {
                    return Err(Error::invalid(format!(
                        "target {} does not exist (create it, or give --create-target)",
                        Path::new(raw).display()
                    )));
                }
            }
        }
        Ok(MountConfig {
            source,
            mountpoint,
            targets,
            consistency: args.consistency,
            on_target_down: args.on_target_down.unwrap_or(TargetDown::default_for(
                args.consistency == Consistency::Sync,
            )),
            max_lag: args.max_lag.unwrap_or(Duration::from_secs(1)),
            io: args.io,
            state_dir,
            password_file: args.password_file.clone(),
            daemon: args.daemon,
            create_target: args.create_target,
            fuse,
        })
    }
}

fn existing_dir(what: &'static str, p: &Path) -> Result<PathBuf> {
    let canon = p.canonicalize().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::invalid(format!("{what} {} does not exist", p.display()))
        } else {
            Error::path(what, p, e)
        }
    })?;
    if !canon.is_dir() {
        return Err(Error::invalid(format!(
            "{what} {} is not a directory",
            p.display()
        )));
    }
    Ok(canon)
}

/// A drive letter and its colon, `X:`.
fn is_drive(p: &Path) -> bool {
    let s = p.as_os_str().as_encoded_bytes();
    s.len() == 2 && s[0].is_ascii_alphabetic() && s[1] == b':'
}

fn mountpoint(p: &Path) -> Result<PathBuf> {
    if crate::sys::MOUNTPOINT_RULE == crate::sys::MountpointRule::FreeDriveOrNewDir {
        if is_drive(p) {
            let root = PathBuf::from(format!("{}\\", p.display()));
            if root.exists() {
                return Err(Error::invalid(format!(
                    "mountpoint {} is a drive in use: choose a free drive letter",
                    p.display()
                )));
            }
            return Ok(p.to_path_buf());
        }
        let abs = absolute("mountpoint", p)?;
        if abs.exists() {
            return Err(Error::invalid(format!(
                "mountpoint {} exists: give a free drive letter (X:) or a directory \
                 that does not exist yet (the mount creates it)",
                p.display()
            )));
        }
        if !abs.parent().is_some_and(Path::is_dir) {
            return Err(Error::invalid(format!(
                "mountpoint {}: its parent directory does not exist",
                p.display()
            )));
        }
        return Ok(abs);
    }
    let canon = existing_dir("mountpoint", p)?;
    if crate::mountinfo::is_mountpoint(&canon).map_err(|e| Error::path("mountpoint", p, e))? {
        return Err(Error::invalid(format!(
            "mountpoint {} is already a mount (unmount it first)",
            p.display()
        )));
    }
    let mut entries =
        std::fs::read_dir(&canon).map_err(|e| Error::path("read mountpoint", p, e))?;
    if entries.next().is_some() {
        return Err(Error::invalid(format!(
            "mountpoint {} is not empty: mounting would hide its contents",
            p.display()
        )));
    }
    Ok(canon)
}

fn target(raw: &OsString, source: &Path, mountpoint: &Path) -> Result<Target> {
    if let Some(remote) = raw.to_str().and_then(remote_target) {
        return remote.map(Target::Rsync);
    }
    let p = absolute("target", Path::new(raw))?;
    let shown = Path::new(raw).display();
    if p == source {
        return Err(Error::invalid(format!(
            "target {shown} is the source itself"
        )));
    }
    if p.starts_with(source) {
        return Err(Error::invalid(format!(
            "target {shown} is inside the source {}: the replica would replicate itself",
            source.display()
        )));
    }
    if source.starts_with(&p) {
        return Err(Error::invalid(format!(
            "target {shown} contains the source {}: mirroring would overwrite the source",
            source.display()
        )));
    }
    if p.starts_with(mountpoint) {
        return Err(Error::invalid(format!(
            "target {shown} is inside the mountpoint {}",
            mountpoint.display()
        )));
    }
    if p.exists() && !p.is_dir() {
        return Err(Error::invalid(format!(
            "target {shown} exists and is not a directory"
        )));
    }
    Ok(Target::Dir(p))
}

/// An absolute path with symlinks resolved as far as the path exists, so
/// that "inside" checks compare real locations; the part that does not
/// exist yet is appended as written (without `..`).
fn absolute(what: &'static str, p: &Path) -> Result<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("current directory", e))?
            .join(p)
    };
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(c) => {
                let mut out = c;
                for comp in rest.iter().rev() {
                    out.push(comp);
                }
                return Ok(out);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let name = match existing.components().next_back() {
                    Some(Component::Normal(n)) => n.to_os_string(),
                    _ => {
                        return Err(Error::invalid(format!(
                            "{what} {}: cannot resolve '..' in a path that does not exist",
                            p.display()
                        )));
                    }
                };
                rest.push(name);
                existing = existing.parent().ok_or_else(|| {
                    Error::invalid(format!("{what} {}: no existing parent", p.display()))
                })?;
            }
            Err(e) => return Err(Error::path(what, p, e)),
        }
    }
}

/// rsync refuses a password file others can read; so do we.
fn password_file_ok(p: &Path) -> Result<()> {
    let meta = std::fs::metadata(p).map_err(|e| Error::path("password file", p, e))?;
    if !meta.is_file() {
        return Err(Error::invalid(format!(
            "password file {} is not a file",
            p.display()
        )));
    }
    if crate::sys::others_can_read(&meta) {
        return Err(Error::invalid(format!(
            "password file {} must not be accessible by group or others (chmod 600 it)",
            p.display()
        )));
    }
    Ok(())
}

/// One folder per mountpoint under the platform's state home
/// (`/var/lib/replicafs` for root, the XDG state directory otherwise;
/// `%LOCALAPPDATA%\replicafs\state` on Windows).
pub fn default_state_dir(mountpoint: &Path) -> PathBuf {
    crate::sys::state_home().join(escape_path(mountpoint))
}

/// A path as one file name, reversibly: `/mnt/a-b` → `mnt-a%2Db`,
/// `X:` → `X%3A`.
fn escape_path(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::new();
    for c in s.trim_start_matches(['/', '\\']).chars() {
        match c {
            '/' | '\\' => out.push('-'),
            ':' => out.push_str("%3A"),
            '-' | '%' => out.push_str(&format!("%{:02X}", c as u32)),
            c if c.is_control() => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options() {
        let o = FuseMountOptions::parse(&["allow_other,ro".into(), "threads=8".into()]).unwrap();
        assert!(o.allow_other && o.read_only);
        assert_eq!(o.threads, Some(8));
        let e = FuseMountOptions::parse(&["bogus".into()]).unwrap_err();
        assert!(
            e.to_string().contains("unknown mount option 'bogus'"),
            "{e}"
        );
        assert!(FuseMountOptions::parse(&["threads=0".into()]).is_err());
        let o = FuseMountOptions::parse(&["inode_fds=256,rlimit_nofile=1024".into()]).unwrap();
        assert_eq!((o.inode_fds, o.rlimit_nofile), (Some(256), Some(1024)));
        assert!(FuseMountOptions::parse(&["inode_fds=3".into()]).is_err());
        assert!(FuseMountOptions::parse(&["rlimit_nofile=lots".into()]).is_err());
        assert!(FuseMountOptions::parse(&["allow_other,allow_root".into()]).is_err());
    }

    #[test]
    fn escape_is_one_name() {
        assert_eq!(escape_path(Path::new("/mnt/a-b/c")), "mnt-a%2Db-c");
        assert_eq!(escape_path(Path::new("/")), "-");
    }

    #[test]
    fn absolute_keeps_missing_tail() {
        let d = tempfile::tempdir().unwrap();
        let p = absolute("t", &d.path().join("x/y")).unwrap();
        assert_eq!(p, d.path().canonicalize().unwrap().join("x/y"));
    }
}
