//! Mounting and unmounting: the replication half of a mount (journal,
//! engine, replicas, control socket) for a validated configuration,
//! waiting for a mount to go live, and `replicafs unmount`. The kernel
//! session itself (building the filesystem stack over the platform's
//! passthrough core, serving it, taking it down on a signal) is the
//! platform's: [`spawn`], [`run_foreground`] and [`Mounted`] come from
//! `crate::sys` (FUSE on Unix).

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::IoChoice;
use crate::config::{FuseMountOptions, Target as TargetSpec};
use crate::error::context;
use crate::journal::Journal;
use crate::replica::Replica;
use crate::state_dir::StateDir;
use crate::sync::policy::Consistency;
use crate::sync::policy::TargetDown;
use crate::sync::status::Status;
use crate::sync::{Engine, Startup};
pub use crate::sys::{Mounted, detach, run_foreground, spawn};

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
    /// An `unmount` came through the control channel.
    unmount: Arc<std::sync::atomic::AtomicBool>,
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
        match crate::sys::try_lock(&f) {
            Ok(true) => return Ok(f),
            Ok(false) if start.elapsed() < Duration::from_secs(15) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(false) => {
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
                    e,
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
    /// Set by an `unmount` request; the session polls it where the OS has
    /// no unmount of its own that reaches this process (Windows).
    unmount: Arc<std::sync::atomic::AtomicBool>,
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

    fn unmount(&self) -> Result<(), String> {
        tracing::info!("unmount requested through the control channel");
        self.unmount
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
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
        // On Unix the encoded bytes are the variable's own bytes.
        None => Ok(std::env::var_os("RSYNC_PASSWORD").map(|v| v.as_encoded_bytes().to_vec())),
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
        let unmount = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let control = crate::control::serve(
            &spec.mountpoint,
            &state,
            Arc::new(ControlHandler {
                engine: Arc::clone(&engine),
                unmount: Arc::clone(&unmount),
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
            unmount,
            handles: Mutex::new(handles),
            _control: control,
            _lock: lock,
            _watch: watch,
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Whether `replicafs unmount` asked this process to end its mount.
    pub fn unmount_requested(&self) -> bool {
        self.unmount.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits until every target has everything recorded so far.
    pub fn drain(&self, timeout: Duration) -> Result<(), String> {
        self.engine.barrier(timeout)
    }

    /// After the mount is gone: waits up to `timeout` for every target to
    /// have what was recorded (what is left stays in the journal for the
    /// next mount, and the log says so), then stops the workers.
    pub fn finish(&self, timeout: Duration) {
        match self.drain(timeout) {
            Ok(()) => tracing::info!("every target has every change"),
            Err(e) => tracing::warn!(
                "stopping with changes pending (kept in the journal for the next mount): {e}"
            ),
        }
        self.stop();
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

/// The service manager's status line for the targets' state: the
/// start-up reconcile while it runs, then lag and queue depth.
pub fn service_status_line(targets: &[crate::sync::status::TargetStatus], started: bool) -> String {
    if !started {
        let (scanned, fixed) = targets.iter().fold((0, 0), |(s, f), t| {
            (
                s + t.reconcile.entries_scanned,
                f + t.reconcile.entries_fixed,
            )
        });
        return format!(
            "reconciling the targets with SOURCE: {scanned} entries scanned, {fixed} fixed"
        );
    }
    if let Some(t) = targets.iter().find(|t| t.state == "failing") {
        return format!(
            "target {} failing: {}",
            t.target,
            t.last_error.as_deref().unwrap_or("unknown error")
        );
    }
    let lag = targets.iter().map(|t| t.lag_seconds).fold(0.0, f64::max);
    let ops: u64 = targets.iter().map(|t| t.pending_ops).sum();
    let bytes: u64 = targets.iter().map(|t| t.pending_bytes).sum();
    let state = if targets.iter().all(|t| t.state == "in_sync") {
        "in sync"
    } else {
        "catching up"
    };
    format!(
        "{state}: {} target(s), lag {lag:.1} s, {ops} change(s) ({bytes} bytes) queued",
        targets.len()
    )
}

/// Tells a service manager (systemd `Type=notify`; nothing without one)
/// how the mount is doing: `STATUS=` every second, `READY=1` once
/// `live()` says the mount answers and every target finished its
/// start-up reconcile, and `WATCHDOG=1` at half the watchdog interval for
/// as long as the engine answers (a wedged engine stops the pings, and the
/// manager restarts the service). Runs until the engine is gone.
pub fn tell_service(engine: &Arc<Engine>, live: impl Fn() -> bool + Send + 'static) {
    if !crate::sys::service_managed() {
        return;
    }
    let engine = Arc::downgrade(engine);
    let watchdog = crate::sys::service_watchdog_interval();
    let tick = watchdog
        .map(|w| (w / 2).min(Duration::from_secs(1)))
        .unwrap_or(Duration::from_secs(1));
    let spawned = std::thread::Builder::new()
        .name("service-notify".into())
        .spawn(move || {
            let mut ready = false;
            let mut last = String::new();
            let mut last_sent = Instant::now();
            loop {
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                let started = engine.started();
                let line = service_status_line(&engine.target_status(), started);
                drop(engine);
                if !ready && started && live() {
                    ready = true;
                    crate::sys::service_ready(&line);
                    tracing::info!("told the service manager: ready ({line})");
                    last = line;
                    last_sent = Instant::now();
                } else if line != last || last_sent.elapsed() >= Duration::from_secs(10) {
                    crate::sys::service_status(&line);
                    last = line;
                    last_sent = Instant::now();
                }
                if watchdog.is_some() {
                    crate::sys::service_watchdog();
                }
                std::thread::sleep(tick);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the service notifier: {e}");
    }
}

/// On a terminal: a one-line progress display while targets reconcile.
pub fn show_reconcile_progress(engine: Arc<Engine>) {
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
/// otherwise; where the OS has no unmount for it (Windows), the serving
/// process is asked through its control channel. Refuses anything that is
/// not a replicafs mount.
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
    match crate::sys::umount(&canon) {
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            crate::control::request(&canon, "unmount", Some(Duration::from_secs(10)))?
                .map(|_| ())
                .map_err(io::Error::other)
        }
        r => r,
    }
}
