//! Mounting and unmounting: builds the filesystem stack for a validated
//! configuration, runs the FUSE session, waits for it to go live, and
//! takes it down on a signal or on `replicafs unmount`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{FuseMountOptions, MountFlag};
use crate::error::context;
use crate::fs::fuse::{FuseAdapter, FuseOptions, FuseStats};
use crate::fs::passthrough::{Options, Passthrough};

/// Session threads when `-o threads=` is not given: enough that a slow
/// SOURCE call does not stall every other request.
pub const DEFAULT_THREADS: usize = 4;

/// What to mount where. The CLI's [`crate::config::MountConfig`] and the
/// test fixture both reduce to this.
#[derive(Debug, Clone)]
pub struct MountSpec {
    pub source: PathBuf,
    pub mountpoint: PathBuf,
    pub fuse: FuseMountOptions,
}

/// The filesystem stack for a spec, ready to hand to a FUSE session.
pub fn build(spec: &MountSpec) -> io::Result<(FuseAdapter<Passthrough>, Arc<FuseStats>)> {
    let core = Passthrough::new(
        &spec.source,
        Options {
            writeback_cache: spec.fuse.writeback_cache,
        },
    )?;
    let adapter = FuseAdapter::new(
        Arc::new(core),
        FuseOptions {
            writeback_cache: spec.fuse.writeback_cache,
            direct_writes: !spec.fuse.cached_writes && !spec.fuse.writeback_cache,
            ..FuseOptions::default()
        },
    );
    let stats = adapter.stats();
    Ok((adapter, stats))
}

/// The session configuration: our mount options plus the user's.
pub fn session_config(spec: &MountSpec) -> fuser::Config {
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
    let (adapter, stats) = build(spec)?;
    let session = fuser::Session::new(adapter, &spec.mountpoint, &session_config(spec))
        .map_err(|e| context(format_args!("mount {}", spec.mountpoint.display()), e))?;
    let session = session.spawn()?;
    wait_live(&spec.mountpoint, Duration::from_secs(10), || Ok(true))?;
    Ok(Mounted {
        session: Some(session),
        mountpoint: spec.mountpoint.clone(),
        stats,
    })
}

/// A mount served by this process; unmounted on drop.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    stats: Arc<FuseStats>,
}

impl Mounted {
    pub fn stats(&self) -> &FuseStats {
        &self.stats
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
        match session.umount_and_join() {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!("unmount {}: {e}; detaching", self.mountpoint.display());
                detach(&self.mountpoint)
            }
        }
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
    let (adapter, stats) = build(spec)?;
    let mut session = fuser::Session::new(adapter, &spec.mountpoint, &session_config(spec))
        .map_err(|e| context(format_args!("mount {}", spec.mountpoint.display()), e))?;
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
    let result = session.run();
    signal_handle.close();
    let _ = watcher.join();
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

/// Polls until `mountpoint` is one of our mounts and answers a request.
/// `alive` is asked between polls whether the process serving it is still
/// there, so a failed start is reported at once instead of at the timeout.
pub fn wait_live(
    mountpoint: &Path,
    timeout: Duration,
    mut alive: impl FnMut() -> io::Result<bool>,
) -> io::Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let ours = crate::mountinfo::find(mountpoint)?
            .is_some_and(|m| m.fstype == crate::mountinfo::FSTYPE || m.fstype.is_empty());
        // stat goes through the kernel to the session: it answers only
        // once the session serves requests.
        if ours && std::fs::metadata(mountpoint).is_ok() {
            return Ok(());
        }
        if !alive()? {
            return Err(io::Error::other(format!(
                "the filesystem process exited before {} was mounted",
                mountpoint.display()
            )));
        }
        if start.elapsed() > timeout {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} did not become a live mount within {timeout:?}",
                    mountpoint.display()
                ),
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Unmounts our mount at `mountpoint`: umount(2) as root, fusermount3
/// otherwise. Refuses anything that is not a replicafs mount.
pub fn unmount(mountpoint: &Path) -> io::Result<()> {
    let canon = mountpoint
        .canonicalize()
        .map_err(|e| context(format_args!("mountpoint {}", mountpoint.display()), e))?;
    match crate::mountinfo::find(&canon)? {
        None => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not mounted", mountpoint.display()),
            ));
        }
        Some(m) if m.fstype != crate::mountinfo::FSTYPE => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is a {} mount, not a replicafs mount",
                    mountpoint.display(),
                    m.fstype
                ),
            ));
        }
        Some(_) => {}
    }
    umount(&canon)
}

#[cfg(target_os = "linux")]
fn umount(path: &Path) -> io::Result<()> {
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
fn umount(path: &Path) -> io::Result<()> {
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
