//! The control socket: how `replicafs sync`, `status` and `unmount` talk
//! to the process serving a mount. A unix socket in the state dir, found
//! through a link named after the mountpoint in the runtime directory
//! (`/run/replicafs` for root, `$XDG_RUNTIME_DIR/replicafs` otherwise).
//!
//! Protocol: one request line (`sync MILLIS`, `status`), one reply line:
//! `ok`, `ok JSON` or `err MESSAGE`.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Answers requests; implemented by the mount.
pub trait Handler: Send + Sync + 'static {
    fn sync(&self, timeout: Duration) -> Result<(), String>;
    fn status_json(&self) -> String;
}

fn runtime_dir() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        PathBuf::from("/run/replicafs")
    } else if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        PathBuf::from(x).join("replicafs")
    } else {
        std::env::temp_dir().join(format!("replicafs-{}", rustix::process::geteuid().as_raw()))
    }
}

/// The link for a mountpoint: short, whatever the path's length (socket
/// paths are limited to about 100 bytes).
fn link_for(mountpoint: &Path) -> PathBuf {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in mountpoint.as_os_str().as_encoded_bytes() {
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
pub fn serve(mountpoint: &Path, state_dir: &Path, handler: Arc<dyn Handler>) -> io::Result<Server> {
    let socket = state_dir.join("control.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .map_err(|e| crate::error::context(format_args!("listen on {}", socket.display()), e))?;
    let link = link_for(mountpoint);
    if let Some(dir) = link.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&socket, &link)
        .map_err(|e| crate::error::context(format_args!("link {}", link.display()), e))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let h = Arc::clone(&handler);
                // A slow `sync` must not hold up `status`.
                let _ = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || {
                        if let Err(e) = answer(conn, h.as_ref()) {
                            tracing::debug!("control connection: {e}");
                        }
                    });
            }
        })?;
    Ok(Server { socket, link })
}

fn answer(conn: UnixStream, h: &dyn Handler) -> io::Result<()> {
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
    let conn = UnixStream::connect(&link).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "no replicafs process answers for {} ({}: {e}); was it mounted by this version, as this user?",
                mountpoint.display(),
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
