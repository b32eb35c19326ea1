//! The FUSE session: the filesystem stack over the Unix passthrough core,
//! served by fuser in this process (in the background for fixtures, in the
//! foreground for the daemon), taken down on a signal, and unmounting.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::fuse::FuseAdapter;
use super::fuse::FuseOptions;
use super::passthrough::{Options, Passthrough};
use crate::config::MountFlag;
use crate::error::context;
use crate::fs::MountStats;
use crate::fs::recording::Recording;
use crate::mount::{DEFAULT_THREADS, DRAIN_TIMEOUT, MountSpec, Replication, wait_live};

type Stack = FuseAdapter<Recording<Passthrough>>;

/// The open-file limit asked for when `-o rlimit_nofile=` is not given
/// (virtiofsd's default): as many as the kernel allows, up to a million.
const DEFAULT_NOFILE: u64 = 1_000_000;

/// Sets the process's open-file limit: `want` (0: leave it), by default
/// as high as the kernel allows (`fs.nr_open`). Unprivileged, only the
/// soft limit can rise, up to the hard one. Returns the soft limit now in
/// force.
fn set_nofile_limit(want: Option<u64>) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let soft = |r: &Rlimit| r.current.unwrap_or(u64::MAX);
    let want = match want {
        Some(0) => return soft(&before),
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map_or(DEFAULT_NOFILE, |max| max.min(DEFAULT_NOFILE)),
    };
    let exact = Rlimit {
        current: Some(want),
        maximum: Some(want),
    };
    if setrlimit(Resource::Nofile, exact).is_err() {
        // Not allowed to move the hard limit: the soft one goes as high as
        // it may.
        let hard = before.maximum.unwrap_or(u64::MAX);
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want.min(hard)),
                maximum: before.maximum,
            },
        );
    }
    let now = soft(&getrlimit(Resource::Nofile));
    if now != soft(&before) {
        tracing::info!("open-file limit set from {} to {now}", soft(&before));
    }
    now
}

/// How many SOURCE inodes may hold a descriptor at once by default: a
/// quarter of the open-file limit, leaving the rest to open files,
/// directory walks, the journal and the targets.
fn default_inode_fds(nofile: u64) -> usize {
    usize::try_from(nofile / 4)
        .unwrap_or(usize::MAX)
        .clamp(32, 65_536)
}

/// The filesystem stack for a spec, ready to hand to a FUSE session.
fn build(spec: &MountSpec) -> io::Result<(Stack, Arc<MountStats>, Replication)> {
    let nofile = set_nofile_limit(spec.fuse.rlimit_nofile);
    let core = Passthrough::new(
        &spec.source,
        Options {
            writeback_cache: spec.fuse.writeback_cache,
            inode_fds: spec
                .fuse
                .inode_fds
                .unwrap_or_else(|| default_inode_fds(nofile)),
        },
    )?;
    let replication = Replication::start(spec)?;
    let recording = Recording::new(core, Arc::clone(replication.engine()), spec.consistency);
    let adapter = FuseAdapter::new(
        Arc::new(recording),
        FuseOptions {
            writeback_cache: spec.fuse.writeback_cache,
            direct_writes: !spec.fuse.cached_writes && !spec.fuse.writeback_cache,
            ..FuseOptions::default()
        },
    );
    let stats = adapter.stats();
    Ok((adapter, stats, replication))
}

/// The session configuration: our mount options plus the user's.
fn session_config(spec: &MountSpec) -> fuser::Config {
    use fuser::MountOption as M;
    let o = &spec.fuse;
    let mut opts = vec![
        M::FSName(
            o.fsname
                .clone()
                .unwrap_or_else(|| spec.source.to_string_lossy().replace([' ', ','], "_")),
        ),
        M::Subtype("replicafs".into()),
        // As root, fuser calls mount(2) itself with type "fuse" and leaves
        // the subtype to fusermount3; the kernel takes it as an option, and
        // it is how `replicafs unmount` and `status` recognise our mounts.
        // The kernel checks SOURCE's permission bits for every caller; we
        // act as root on SOURCE, so this is what keeps users apart.
        M::DefaultPermissions,
    ];
    if rustix::process::geteuid().is_root() {
        opts.push(M::CUSTOM("subtype=replicafs".into()));
    }
    opts.push(if o.read_only { M::RO } else { M::RW });
    for f in &o.flags {
        opts.push(match f {
            MountFlag::NoAtime => M::NoAtime,
            MountFlag::Atime => M::Atime,
            MountFlag::NoDev => M::NoDev,
            MountFlag::Dev => M::Dev,
            MountFlag::NoSuid => M::NoSuid,
            MountFlag::Suid => M::Suid,
            MountFlag::NoExec => M::NoExec,
            MountFlag::Exec => M::Exec,
            MountFlag::DirSync => M::DirSync,
        });
    }
    let mut config = fuser::Config::default();
    config.mount_options = opts;
    config.acl = if o.allow_other {
        fuser::SessionACL::All
    } else if o.allow_root {
        fuser::SessionACL::RootAndOwner
    } else {
        fuser::SessionACL::Owner
    };
    let threads = o.threads.unwrap_or(DEFAULT_THREADS);
    config.n_threads = Some(if cfg!(target_os = "linux") {
        threads
    } else {
        1
    });
    config.clone_fd = cfg!(target_os = "linux") && threads > 1;
    config
}

/// Mounts in this process with the session on background threads; the
/// mount is live (it answers requests) when this returns.
pub fn spawn(spec: &MountSpec) -> io::Result<Mounted> {
    let (adapter, stats, replication) = build(spec)?;
    let trim = adapter.trimmer();
    let inodes = Box::new(adapter.inode_counter());
    let session = fuser::Session::new(adapter, &spec.mountpoint, &session_config(spec))
        .map_err(|e| context(format_args!("mount {}", spec.mountpoint.display()), e))?;
    trim(session.notifier(), spec.fuse.max_inodes())?;
    let session = session.spawn()?;
    wait_live(&spec.mountpoint, Duration::from_secs(10), || Ok(true))?;
    Ok(Mounted {
        session: Some(session),
        inodes,
        mountpoint: spec.mountpoint.clone(),
        stats,
        replication,
        drain_timeout: DRAIN_TIMEOUT,
    })
}

/// A mount served by this process; unmounted on drop.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    /// How many inodes the kernel holds.
    inodes: Box<dyn Fn() -> usize + Send + Sync>,
    mountpoint: PathBuf,
    stats: Arc<MountStats>,
    replication: Replication,
    /// How long unmounting waits for the targets to take what is pending.
    drain_timeout: Duration,
}

impl Mounted {
    /// How long unmounting waits for the targets (default one minute);
    /// what they have not taken by then stays in the journal.
    pub fn set_drain_timeout(&mut self, d: Duration) {
        self.drain_timeout = d;
    }

    pub fn stats(&self) -> &MountStats {
        &self.stats
    }

    /// Inodes the kernel holds references to (0 once unmounted).
    pub fn inode_count(&self) -> usize {
        (self.inodes)()
    }

    pub fn replication(&self) -> &Replication {
        &self.replication
    }

    /// Unmounts and waits for the session to end. A busy mount is detached
    /// lazily (it disappears once the last user lets go).
    pub fn unmount(mut self) -> io::Result<()> {
        self.take_down()
    }

    fn take_down(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let r = match ended(session.umount_and_join()) {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!("unmount {}: {e}; detaching", self.mountpoint.display());
                detach(&self.mountpoint)
            }
        };
        self.replication.finish(self.drain_timeout);
        r
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.take_down() {
            tracing::error!("unmount {}: {e}", self.mountpoint.display());
        }
    }
}

/// Runs the session in the foreground until the filesystem is unmounted
/// (by `replicafs unmount`, umount(8), or SIGINT/SIGTERM/SIGHUP here).
pub fn run_foreground(spec: &MountSpec) -> io::Result<()> {
    let (adapter, stats, replication) = build(spec)?;
    let trim = adapter.trimmer();
    let mut session = fuser::Session::new(adapter, &spec.mountpoint, &session_config(spec))
        .map_err(|e| context(format_args!("mount {}", spec.mountpoint.display()), e))?;
    trim(session.notifier(), spec.fuse.max_inodes())?;
    let mut unmounter = session.unmount_callable();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])?;
    let signal_handle = signals.handle();
    let mountpoint = spec.mountpoint.clone();
    let watcher = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!("signal {sig}: unmounting {}", mountpoint.display());
                crate::sys::service_stopping(&format!("signal {sig}: unmounting"));
                if let Err(e) = unmounter.unmount() {
                    tracing::warn!("unmount {}: {e}; detaching", mountpoint.display());
                    if let Err(e) = detach(&mountpoint) {
                        tracing::error!("detach {}: {e}", mountpoint.display());
                    }
                }
            }
        })?;
    tracing::info!(
        "mounted {} at {}",
        spec.source.display(),
        spec.mountpoint.display()
    );
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        crate::mount::show_reconcile_progress(Arc::clone(replication.engine()));
    }
    let live_at = spec.mountpoint.clone();
    crate::mount::tell_service(replication.engine(), move || {
        crate::sys::mountinfo::find(&live_at)
            .ok()
            .flatten()
            .is_some_and(|m| m.fstype == crate::sys::mountinfo::FSTYPE || m.fstype.is_empty())
            && std::fs::metadata(&live_at).is_ok()
    });
    let result = ended(session.run());
    crate::sys::service_stopping("unmounted: draining the changes still queued to the targets");
    signal_handle.close();
    let _ = watcher.join();
    // The mount is gone; what was recorded still goes to the targets.
    replication.finish(DRAIN_TIMEOUT);
    tracing::info!(
        largest_write = stats
            .largest_write
            .load(std::sync::atomic::Ordering::Relaxed),
        largest_read = stats
            .largest_read
            .load(std::sync::atomic::Ordering::Relaxed),
        "unmounted {}",
        spec.mountpoint.display()
    );
    result
}

/// umount(2), or fusermount3 without the privilege for it.
#[cfg(target_os = "linux")]
pub fn umount(path: &Path) -> io::Result<()> {
    use rustix::mount::UnmountFlags;
    match rustix::mount::unmount(path, UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::PERM) => fusermount_u(path),
        Err(rustix::io::Errno::BUSY) => Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!(
                "{} is busy: a process has a file or directory open in it (see `fuser -vm {}`)",
                path.display(),
                path.display()
            ),
        )),
        Err(e) => Err(context(
            format_args!("unmount {}", path.display()),
            e.into(),
        )),
    }
}

#[cfg(not(target_os = "linux"))]
pub fn umount(path: &Path) -> io::Result<()> {
    let status = std::process::Command::new("umount").arg(path).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "umount {} failed: {status}",
            path.display()
        )))
    }
}

#[cfg(target_os = "linux")]
fn fusermount_u(path: &Path) -> io::Result<()> {
    let out = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(path)
        .output()
        .map_err(|e| context("run fusermount3 (install fuse3)", e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "fusermount3 -u {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// How a session's end reads. When the connection goes down while one of
/// the reader threads holds a request it just took (the kernel's teardown
/// at unmount, which can race with a last FLUSH or RELEASE), that thread's
/// read fails with ECONNABORTED instead of ENODEV. The mount is gone either
/// way, and nothing that was recorded is lost, so that is an ordinary end.
fn ended(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {
            tracing::debug!("the kernel ended the FUSE connection during a request: {e}");
            Ok(())
        }
        r => r,
    }
}

/// Lazy unmount: the mount leaves the namespace now and goes away when
/// its last user does.
#[cfg(target_os = "linux")]
pub fn detach(path: &Path) -> io::Result<()> {
    use rustix::mount::UnmountFlags;
    match rustix::mount::unmount(path, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) => Ok(()),
        Err(rustix::io::Errno::PERM) => {
            let st = std::process::Command::new("fusermount3")
                .arg("-uz")
                .arg(path)
                .status()?;
            if st.success() {
                Ok(())
            } else {
                Err(io::Error::other(format!(
                    "fusermount3 -uz {}: {st}",
                    path.display()
                )))
            }
        }
        Err(e) => Err(context(format_args!("detach {}", path.display()), e.into())),
    }
}

#[cfg(not(target_os = "linux"))]
pub fn detach(path: &Path) -> io::Result<()> {
    umount(path)
}
