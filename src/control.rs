//! The control socket: how `replicafs sync`, `status` and `unmount` talk
//! to the process serving a mount. A unix socket in the state dir, found
//! through a link named after the mountpoint in the runtime directory
//! (`/run/replicafs` for root, `$XDG_RUNTIME_DIR/replicafs` otherwise).
//!
//! Protocol: one request line (`sync MILLIS`, `status`, `unmount`), one
//! reply line: `ok`, `ok JSON` or `err MESSAGE`. `unmount` asks the
//! serving process to end its mount: how Windows unmounts (a WinFsp volume
//! ends with its process); on Unix the kernel's umount does it instead.
//!
//! The transport is the platform's (`crate::sys`: a unix socket on Unix).
//!
//! Access: the socket is 0600 in the private state dir, and each peer's
//! uid is checked (`SO_PEERCRED`, Linux): only the daemon's own user and
//! root are answered; others are closed at once and logged, rate-limited.
//! A request line must arrive within [`REQUEST_TIMEOUT`], and at most
//! [`MAX_CONNECTIONS`] are served at once (more get an `err` line and are
//! closed), so idle connections cannot pile up threads.

use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::state_dir::StateDir;
use crate::sys::{ControlListener, ControlStream, peer_allowed, runtime_dir};

/// How long a connection may take to send its request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; a slow `sync` holds one.
pub const MAX_CONNECTIONS: usize = 32;
/// At most one warning about refused peers per this long.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

const SOCKET: &str = "control.sock";

/// Answers requests; implemented by the mount.
pub trait Handler: Send + Sync + 'static {
    fn sync(&self, timeout: Duration) -> Result<(), String>;
    fn status_json(&self) -> String;
    /// Ends the mount (the process unmounts, drains and exits).
    fn unmount(&self) -> Result<(), String> {
        Err("this mount is unmounted with umount, not through its process".into())
    }
}

/// The link for a mountpoint: short, whatever the path's length (socket
/// paths are limited to about 100 bytes).
fn link_for(mountpoint: &Path) -> PathBuf {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in crate::sys::mount_key(mountpoint) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    runtime_dir().join(format!("{h:016x}.sock"))
}

/// A running control server; removes its socket and link on drop.
pub struct Server {
    socket: PathBuf,
    link: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Serves `handler` for `mountpoint` on `state_dir/control.sock`.
pub fn serve(
    mountpoint: &Path,
    state_dir: &StateDir,
    handler: Arc<dyn Handler>,
) -> io::Result<Server> {
    let socket = state_dir.path().join(SOCKET);
    state_dir.remove(SOCKET)?;
    let listener = ControlListener::bind(&socket)
        .map_err(|e| crate::error::context(format_args!("listen on {}", socket.display()), e))?;
    // bind(2) applies the umask (0 in the daemon) to 0777; the state dir
    // is private, so nobody else can swap the socket before this.
    state_dir.make_private(SOCKET)?;
    let link = link_for(mountpoint);
    if let Some(dir) = link.parent() {
        // Held to the state dir's rules: in a runtime dir another user
        // controls (say a pre-made /tmp/replicafs-UID), they could point
        // the link at a socket of theirs and answer `sync` for us.
        StateDir::open(dir)?;
    }
    let _ = std::fs::remove_file(&link);
    crate::sys::symlink(&socket, &link)
        .map_err(|e| crate::error::context(format_args!("link {}", link.display()), e))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || accept_loop(listener, handler))?;
    Ok(Server { socket, link })
}

/// Decrements the count of served connections when a connection ends
/// (or its thread could not be started).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Peers refused since the last warning, for rate-limited logging.
#[derive(Default)]
struct Refusals {
    last_warned: Option<Instant>,
    since: u64,
}

impl Refusals {
    fn note(&mut self, why: &str) {
        self.since += 1;
        if self
            .last_warned
            .is_some_and(|t| t.elapsed() < REFUSAL_LOG_EVERY)
        {
            tracing::debug!("control socket: refused: {why}");
            return;
        }
        tracing::warn!(
            refused = self.since,
            "control socket: refused a connection: {why} (only {} are answered)",
            crate::sys::answered_peers()
        );
        self.last_warned = Some(Instant::now());
        self.since = 0;
    }
}

fn accept_loop(listener: ControlListener, handler: Arc<dyn Handler>) {
    let active = Arc::new(AtomicUsize::new(0));
    let mut refusals = Refusals::default();
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, say: do not spin on it.
                tracing::debug!("control socket: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if let Err(why) = peer_allowed(&conn) {
            refusals.note(&why);
            continue;
        }
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            let _ = conn.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = (&conn).write_all(
                format!("err too many control connections ({MAX_CONNECTIONS} open); try again\n")
                    .as_bytes(),
            );
            continue;
        }
        let slot = Slot(Arc::clone(&active));
        let h = Arc::clone(&handler);
        // A slow `sync` must not hold up `status`.
        let spawned = std::thread::Builder::new()
            .name("control-conn".into())
            .spawn(move || {
                let _slot = slot;
                if let Err(e) = answer(conn, h.as_ref()) {
                    tracing::debug!("control connection: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("control socket: cannot start a thread: {e}");
        }
    }
}

fn answer(conn: ControlStream, h: &dyn Handler) -> io::Result<()> {
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    conn.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(&conn).take(4096).read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let reply = match (words.next(), words.next()) {
        (Some("sync"), Some(ms)) => match ms.parse::<u64>() {
            Ok(ms) => match h.sync(Duration::from_millis(ms)) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("err {e}"),
            },
            Err(_) => "err bad timeout".into(),
        },
        (Some("status"), None) => format!("ok {}", h.status_json()),
        (Some("unmount"), None) => match h.unmount() {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("err {e}"),
        },
        _ => format!("err unknown request {:?}", line.trim()),
    };
    (&conn).write_all(format!("{}\n", reply.replace('\n', " ")).as_bytes())
}

use std::io::Read as _;

/// Sends one request to the mount at `mountpoint`; returns the reply's
/// payload, or the error the mount answered with.
pub fn request(
    mountpoint: &Path,
    req: &str,
    timeout: Option<Duration>,
) -> io::Result<Result<String, String>> {
    let link = link_for(mountpoint);
    let conn = ControlStream::connect(&link).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "no replicafs process answers for {} ({}: {e}); was it mounted by this version, as this user?",
                mountpoint.display(),
                link.display()
            ),
        )
    })?;
    // The other end must be a daemon we trust (ours or root's), or its
    // "ok" to a `sync` would mean nothing.
    peer_allowed(&conn).map_err(|who| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is served by {who}, not by this user or root: not asking it",
                link.display()
            ),
        )
    })?;
    conn.set_read_timeout(timeout.map(|t| t + Duration::from_secs(5)))?;
    (&conn).write_all(format!("{req}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    let line = line.trim_end();
    if let Some(rest) = line.strip_prefix("ok") {
        Ok(Ok(rest.trim_start().to_string()))
    } else if let Some(rest) = line.strip_prefix("err ") {
        Ok(Err(rest.to_string()))
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected reply {line:?}"),
        ))
    }
}
