//! Mounting and unmounting: builds the filesystem stack for a validated
//! configuration, runs the FUSE session, waits for it to go live, and
//! takes it down on a signal or on `replicafs unmount`.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::IoChoice;
use crate::config::{FuseMountOptions, MountFlag, Target as TargetSpec};
use crate::error::context;
use crate::fs::recording::Recording;
use crate::journal::Journal;
use crate::replica::Replica;
use crate::state_dir::StateDir;
use crate::sync::policy::Consistency;
use crate::sync::policy::TargetDown;
use crate::sync::status::Status;
use crate::sync::{Engine, Startup};
use crate::sys::fuse::{FuseAdapter, FuseOptions, FuseStats};
use crate::sys::passthrough::{Options, Passthrough};

/// Session threads when `-o threads=` is not given: enough that a slow
/// SOURCE call does not stall every other request.
pub const DEFAULT_THREADS: usize = 4;

/// How long unmounting waits for the targets by default.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// What to mount where, and where to replicate. The CLI's
/// [`crate::config::MountConfig`] and the test fixture both reduce to this.
#[derive(Debug, Clone)]
pub struct MountSpec {
    pub source: PathBuf,
    pub mountpoint: PathBuf,
    pub fuse: FuseMountOptions,
    pub targets: Vec<TargetSpec>,
    pub consistency: Consistency,
    /// What writers' barriers do while a target is down.
    pub on_target_down: TargetDown,
    pub io: IoChoice,
    pub state_dir: PathBuf,
    /// The rsync module password's file (else RSYNC_PASSWORD); the
    /// password itself is read when the target opens, never kept here.
    pub password_file: Option<PathBuf>,
}

/// The replication half of a mount: journal, engine, workers, control
/// socket.
pub struct Replication {
    engine: Arc<Engine>,
    handles: Mutex<Vec<std::thread::JoinHandle<()>>>,
    _control: Option<crate::control::Server>,
    /// Held for the life of the process: one process per state dir.
    _lock: std::fs::File,
    /// Set once the watch is up (it is set up in the background).
    _watch: Arc<Mutex<Option<crate::watch::Watch>>>,
}

/// Takes the state dir's lock, waiting a little for a previous process
/// that is still finishing (draining, checkpointing) to let go.
fn lock_state_dir(dir: &StateDir) -> io::Result<std::fs::File> {
    let f = dir.open_lock("lock")?;
    let start = Instant::now();
    loop {
        match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(f),
            Err(rustix::io::Errno::WOULDBLOCK) if start.elapsed() < Duration::from_secs(15) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!(
                        "state dir {} is in use by another replicafs process",
                        dir.path().display()
                    ),
                ));
            }
            Err(e) => {
                return Err(context(
                    format_args!("lock {}", dir.path().join("lock").display()),
                    e.into(),
                ));
            }
        }
    }
}

/// Splits off recovered records naming a path outside the tree (a
/// corrupt or crafted journal): they can never apply, and retrying them
/// would keep the target failing forever. One error for all of them (each
/// at debug level); returns how many were dropped.
fn drop_invalid_records(records: &mut Vec<crate::journal::record::Record>) -> u64 {
    let mut first = None;
    let before = records.len();
    records.retain(|r| match r.op.invalid_path() {
        None => true,
        Some(p) => {
            tracing::debug!(seq = r.seq, op = ?r.op, "invalid journal record dropped");
            first.get_or_insert_with(|| format!("seq {}: {}", r.seq, p.display()));
            false
        }
    });
    let dropped = (before - records.len()) as u64;
    if let Some(first) = first {
        tracing::error!(
            dropped,
            "journal records naming a path outside the tree (first: {first}) dropped, \
             not replayed: the journal is corrupt or was tampered with"
        );
    }
    dropped
}

struct ControlHandler {
    engine: Arc<Engine>,
    mountpoint: String,
    source: String,
    consistency: Consistency,
}

impl ControlHandler {
    fn status(&self) -> Status {
        Status {
            mountpoint: self.mountpoint.clone(),
            source: self.source.clone(),
            consistency: format!("{:?}", self.consistency).to_lowercase(),
            io_backend: self.engine.io_backend().into(),
            on_target_down: self.engine.on_target_down().to_string(),
            pid: std::process::id(),
            invalid_records_dropped: self.engine.invalid_records_dropped(),
            targets: self.engine.target_status(),
        }
    }
}

impl crate::control::Handler for ControlHandler {
    fn sync(&self, timeout: Duration) -> Result<(), String> {
        let r = self.engine.barrier(timeout);
        tracing::debug!(ok = r.is_ok(), "barrier for `replicafs sync`");
        r
    }

    fn status_json(&self) -> String {
        serde_json::to_string(&self.status()).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

fn open_target(t: &TargetSpec, spec: &MountSpec) -> io::Result<Box<dyn Replica>> {
    match t {
        TargetSpec::Dir(p) => crate::replica::open_dir(p),
        TargetSpec::Rsync(u) => crate::replica::open_rsync(u, rsync_password(spec)?, &spec.source),
    }
}

/// The module password: the first line of the password file, else
/// RSYNC_PASSWORD, else none (a module without `auth users`).
fn rsync_password(spec: &MountSpec) -> io::Result<Option<Vec<u8>>> {
    match &spec.password_file {
        Some(p) => {
            let text = std::fs::read(p)
                .map_err(|e| context(format_args!("password file {}", p.display()), e))?;
            let line = text.split(|&b| b == b'\n').next().unwrap_or(&[]);
            Ok(Some(line.strip_suffix(b"\r").unwrap_or(line).to_vec()))
        }
        None => Ok(std::env::var_os("RSYNC_PASSWORD").map(|v| {
            use std::os::unix::ffi::OsStrExt;
            v.as_bytes().to_vec()
        })),
    }
}

impl Replication {
    /// Opens the journal and the targets, decides what the start-up
    /// reconcile covers, and starts the workers and the control socket.
    pub fn start(spec: &MountSpec) -> io::Result<Replication> {
        let state = StateDir::open(&spec.state_dir)?;
        let lock = lock_state_dir(&state)?;
        let targets = spec
            .targets
            .iter()
            .map(|t| open_target(t, spec))
            .collect::<io::Result<Vec<_>>>()?;
        let (journal, mut rec) = Journal::open(state.subdir("journal")?)?;
        let invalid = drop_invalid_records(&mut rec.records);
        let names: String = spec.targets.iter().map(|t| format!("{t}\n")).collect();
        let same_targets = crate::state_dir::read_optional(&state, "targets")?
            .is_some_and(|s| s == names.as_bytes());
        let startup = if rec.existed && same_targets && rec.same_boot && !rec.clean {
            let paths: BTreeSet<PathBuf> = rec
                .records
                .iter()
                .flat_map(|r| r.op.paths().into_iter().map(Path::to_path_buf))
                .collect();
            tracing::info!(
                records = rec.records.len(),
                paths = paths.len(),
                torn_bytes = rec.torn_bytes,
                checkpoint = rec.checkpoint,
                "recovery after an unclean stop: reconciling only the paths the journal names"
            );
            for r in &rec.records {
                tracing::debug!(seq = r.seq, op = ?r.op, "recovering");
            }
            if paths.contains(&PathBuf::new()) {
                // A change was recorded without a path: walk everything.
                Startup::Full
            } else {
                Startup::Paths(paths.into_iter().collect())
            }
        } else {
            let why = if !rec.existed {
                "first mount with this state dir"
            } else if !same_targets {
                "the targets changed"
            } else if !rec.same_boot && !rec.clean {
                "unclean stop in an earlier boot: the journal may have lost its tail"
            } else {
                "SOURCE may have changed while unmounted"
            };
            tracing::info!("reconciling every target with SOURCE: {why}");
            Startup::Full
        };
        crate::state_dir::write_atomic(&state, "targets", names.as_bytes())?;
        let io = crate::backend::select(spec.io);
        tracing::info!(
            io_backend = io.name(),
            "replicating to {} target(s)",
            spec.targets.len()
        );
        let engine = Engine::new(&spec.source, journal, targets, io, spec.on_target_down);
        engine.count_invalid_records(invalid);
        let handles = engine.start(startup)?;
        let control = crate::control::serve(
            &spec.mountpoint,
            &state,
            Arc::new(ControlHandler {
                engine: Arc::clone(&engine),
                mountpoint: spec.mountpoint.display().to_string(),
                source: spec.source.display().to_string(),
                consistency: spec.consistency,
            }),
        )
        .map_err(|e| {
            tracing::warn!("control socket: {e}");
            e
        })
        .ok();
        // Setting up a recursive watch visits the whole tree (seconds on a
        // large one): past a second it goes on beside the mount, which is
        // live meanwhile.
        let watch = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&watch);
        let (done, set_up) = std::sync::mpsc::channel::<()>();
        let source = spec.source.clone();
        let watched = Arc::clone(&engine);
        std::thread::Builder::new()
            .name("watch-setup".into())
            .spawn(move || {
                let started = std::env::var_os("REPLICAFS_NO_WATCH")
                    .map(|_| Err(notify::Error::generic("disabled by REPLICAFS_NO_WATCH")))
                    .unwrap_or_else(|| crate::watch::start(&source, watched));
                match started {
                    Ok(w) => *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(w),
                    Err(e) => tracing::warn!(
                        "cannot watch {} for changes made outside the mount ({e}); \
                         they reach the targets at the next mount's reconcile",
                        source.display()
                    ),
                }
                let _ = done.send(());
            })?;
        if set_up.recv_timeout(Duration::from_secs(1)).is_err() {
            tracing::info!(
                "watching {} for changes made outside the mount: still setting up",
                spec.source.display()
            );
        }
        Ok(Replication {
            engine,
            handles: Mutex::new(handles),
            _control: control,
            _lock: lock,
            _watch: watch,
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Waits until every target has everything recorded so far.
    pub fn drain(&self, timeout: Duration) -> Result<(), String> {
        self.engine.barrier(timeout)
    }

    /// Stops the workers; records a clean shutdown when nothing is pending.
    pub fn stop(&self) {
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        if !handles.is_empty() {
            self.engine.shutdown(handles);
        }
    }
}

impl Drop for Replication {
    fn drop(&mut self) {
        self.stop();
    }
}

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
pub fn build(spec: &MountSpec) -> io::Result<(Stack, Arc<FuseStats>, Replication)> {
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
    stats: Arc<FuseStats>,
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

    pub fn stats(&self) -> &FuseStats {
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
        let r = match session.umount_and_join() {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!("unmount {}: {e}; detaching", self.mountpoint.display());
                detach(&self.mountpoint)
            }
        };
        if let Err(e) = self.replication.drain(self.drain_timeout) {
            tracing::warn!("unmounted with changes still pending (kept in the journal): {e}");
        }
        self.replication.stop();
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
        show_reconcile_progress(Arc::clone(replication.engine()));
    }
    let result = session.run();
    signal_handle.close();
    let _ = watcher.join();
    // The mount is gone; what was recorded still goes to the targets.
    match replication.drain(DRAIN_TIMEOUT) {
        Ok(()) => tracing::info!("every target has every change"),
        Err(e) => tracing::warn!(
            "stopping with changes pending (kept in the journal for the next mount): {e}"
        ),
    }
    replication.stop();
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

/// On a terminal: a one-line progress display while targets reconcile.
fn show_reconcile_progress(engine: Arc<Engine>) {
    let _ = std::thread::Builder::new()
        .name("progress".into())
        .spawn(move || {
            use std::io::Write;
            let mut shown = false;
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let st = engine.target_status();
                let running: Vec<_> = st.iter().filter(|t| t.reconcile.running).collect();
                let mut err = std::io::stderr().lock();
                if running.is_empty() {
                    if shown {
                        let _ = writeln!(err, "\r\x1b[Kreconcile finished");
                    }
                    return;
                }
                let line: Vec<String> = running
                    .iter()
                    .map(|t| {
                        format!(
                            "{}: {} entries checked, {} fixed, {:.1} MB copied",
                            t.target,
                            t.reconcile.entries_scanned,
                            t.reconcile.entries_fixed,
                            t.reconcile.bytes_copied as f64 / 1e6
                        )
                    })
                    .collect();
                let _ = write!(err, "\r\x1b[Kreconciling {}", line.join("; "));
                let _ = err.flush();
                shown = true;
            }
        });
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
