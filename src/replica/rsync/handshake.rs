//! Connecting to a daemon: greeting, module, authentication, the server's
//! argument list, compat flags, checksum negotiation and the seed. What
//! comes after is multiplexed (see `mux`).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::mux::{DataIn, DataOut};
use super::sums::{AUTH_DIGESTS, Checksum, OUR_CHECKSUMS, auth_response};
use super::url::RsyncUrl;
use super::wire::{bad, get_i32, get_varint, get_vstring, put_vstring};

/// The newest protocol we speak, and the oldest.
pub const PROTOCOL: u32 = 32;
pub const MIN_PROTOCOL: u32 = 30;

pub const CF_INC_RECURSE: i32 = 0x001;
pub const CF_VARINT_FLIST_FLAGS: i32 = 0x080;
pub const CF_ID0_NAMES: i32 = 0x100;

/// Longest text line we accept before multiplexing starts.
const MAX_LINE: usize = 4096;

/// An open, negotiated session with the daemon's receiver.
pub struct Connection {
    pub protocol: u32,
    pub compat: i32,
    pub checksum: Checksum,
    pub seed: i32,
    pub input: DataIn,
    pub output: DataOut,
    /// Bytes received from the daemon so far, frame headers included.
    pub received: Arc<AtomicU64>,
}

/// How to reach and log in to a module.
pub struct Login<'a> {
    pub url: &'a RsyncUrl,
    /// The module password, if one was given (`--password-file` or
    /// `RSYNC_PASSWORD`).
    pub password: Option<&'a [u8]>,
    pub timeout: Duration,
}

fn err(kind: io::ErrorKind, url: &RsyncUrl, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(kind, format!("{url}: {what}"))
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        if r.read(&mut b)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection",
            ));
        }
        match b[0] {
            b'\n' => break,
            b'\r' => {}
            0 => return Err(bad("NUL byte in a text line")),
            c => line.push(c),
        }
        if line.len() > MAX_LINE {
            return Err(bad("text line longer than 4 KiB"));
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn connect_tcp(url: &RsyncUrl, timeout: Duration) -> io::Result<TcpStream> {
    let addrs = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| err(e.kind(), url, format_args!("cannot resolve host: {e}")))?;
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"));
    Err(err(e.kind(), url, format_args!("cannot connect: {e}")))
}

/// Connects and reads the daemon's greeting, then hangs up: whether a
/// daemon answers at all, without starting a session (nothing is logged
/// in, the daemon only sees a connection close).
///
/// # Errors
///
/// The connection's error, or what the peer said instead of a greeting.
pub fn probe(url: &RsyncUrl, timeout: Duration) -> io::Result<()> {
    let sock = connect_tcp(url, timeout)?;
    sock.set_read_timeout(Some(timeout))?;
    let greeting = read_line(&mut BufReader::new(&sock))
        .map_err(|e| err(e.kind(), url, format_args!("no greeting: {e}")))?;
    if !greeting.starts_with("@RSYNCD: ") {
        return Err(err(
            io::ErrorKind::InvalidData,
            url,
            format_args!("not an rsync daemon (it said {greeting:?})"),
        ));
    }
    Ok(())
}

/// Connects, logs in and starts the server with `args` (after
/// `--server`, before `.` and the destination path).
pub fn connect(login: &Login<'_>, args: &[String]) -> io::Result<Connection> {
    connect_at(login, args, b"")
}

/// As [`connect`], naming `rel` under the URL's path instead of the
/// directory itself (a listing of one name, with `--sender` in `args`).
pub fn connect_at(login: &Login<'_>, args: &[String], rel: &[u8]) -> io::Result<Connection> {
    let url = login.url;
    let sock = connect_tcp(url, login.timeout)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(login.timeout))?;
    sock.set_write_timeout(Some(login.timeout))?;
    let mut w = sock.try_clone()?;
    let received = Arc::new(AtomicU64::new(0));
    let mut r = BufReader::new(Counting {
        inner: sock.try_clone()?,
        count: received.clone(),
    });

    w.write_all(format!("@RSYNCD: {PROTOCOL}.0 {}\n", AUTH_DIGESTS.join(" ")).as_bytes())?;
    let greeting =
        read_line(&mut r).map_err(|e| err(e.kind(), url, format_args!("no greeting: {e}")))?;
    let rest = greeting.strip_prefix("@RSYNCD: ").ok_or_else(|| {
        err(
            io::ErrorKind::InvalidData,
            url,
            format_args!("not an rsync daemon (it said {greeting:?})"),
        )
    })?;
    let mut words = rest.split_whitespace();
    let version = words.next().unwrap_or("");
    let theirs: u32 = version
        .split('.')
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            err(
                io::ErrorKind::InvalidData,
                url,
                format_args!("bad greeting {greeting:?}"),
            )
        })?;
    let protocol = theirs.min(PROTOCOL);
    if protocol < MIN_PROTOCOL {
        return Err(err(
            io::ErrorKind::Unsupported,
            url,
            format_args!(
                "the daemon speaks protocol {theirs}; {MIN_PROTOCOL} or newer (rsync 3.0+) is needed"
            ),
        ));
    }
    let their_digests: Vec<&str> = words.collect();

    w.write_all(format!("{}\n", url.module).as_bytes())?;
    loop {
        let line = read_line(&mut r)?;
        if line == "@RSYNCD: OK" {
            break;
        } else if let Some(challenge) = line.strip_prefix("@RSYNCD: AUTHREQD ") {
            let password = login.password.ok_or_else(|| {
                err(
                    io::ErrorKind::PermissionDenied,
                    url,
                    format_args!(
                        "module '{}' needs a password: give --password-file or set RSYNC_PASSWORD",
                        url.module
                    ),
                )
            })?;
            let digest = if their_digests.is_empty() {
                "md5"
            } else {
                AUTH_DIGESTS
                    .iter()
                    .copied()
                    .find(|d| their_digests.contains(d))
                    .ok_or_else(|| {
                        err(
                            io::ErrorKind::Unsupported,
                            url,
                            format_args!(
                                "no common authentication digest (daemon offers {their_digests:?})"
                            ),
                        )
                    })?
            };
            let user = url
                .user
                .clone()
                .or_else(|| std::env::var("USER").ok())
                .or_else(|| std::env::var("LOGNAME").ok())
                .unwrap_or_else(|| "nobody".into());
            let response = auth_response(digest, password, challenge.trim())
                .ok_or_else(|| bad("auth digest"))?;
            w.write_all(format!("{user} {response}\n").as_bytes())?;
        } else if let Some(e) = line.strip_prefix("@ERROR") {
            let e = e.trim_start_matches(':').trim();
            let kind = if e.contains("auth failed") {
                io::ErrorKind::PermissionDenied
            } else if e.contains("Unknown module") {
                io::ErrorKind::NotFound
            } else {
                io::ErrorKind::ConnectionRefused
            };
            return Err(err(kind, url, format_args!("daemon refused: {e}")));
        } else if line == "@RSYNCD: EXIT" {
            return Err(err(
                io::ErrorKind::ConnectionRefused,
                url,
                "the daemon ended the session before accepting the module",
            ));
        } else if !line.is_empty() {
            tracing::info!(target_url = %url, "daemon: {line}");
        }
    }

    let mut argv: Vec<u8> = Vec::new();
    let mut dest = if url.path.is_empty() {
        format!("{}/", url.module).into_bytes()
    } else {
        format!("{}/{}/", url.module, url.path).into_bytes()
    };
    dest.extend_from_slice(rel);
    for a in ["--server"]
        .into_iter()
        .chain(args.iter().map(String::as_str))
        .chain(["."])
    {
        argv.extend_from_slice(a.as_bytes());
        argv.push(0);
    }
    argv.extend_from_slice(&dest);
    argv.push(0);
    argv.push(0);
    w.write_all(&argv)?;

    let compat = get_varint(&mut r)?;
    if compat & CF_VARINT_FLIST_FLAGS == 0 {
        return Err(err(
            io::ErrorKind::Unsupported,
            url,
            "the daemon does not offer varint file lists (rsync 3.2 or newer is needed)",
        ));
    }
    if compat & CF_INC_RECURSE != 0 {
        return Err(bad(
            "the daemon turned on incremental recursion, which we did not offer",
        ));
    }
    let ours: Vec<&str> = OUR_CHECKSUMS.iter().map(|c| c.name()).collect();
    let mut list = Vec::new();
    put_vstring(&mut list, ours.join(" ").as_bytes())?;
    w.write_all(&list)?;
    let theirs = get_vstring(&mut r, 1024)?;
    let theirs = String::from_utf8_lossy(&theirs).into_owned();
    let offered: Vec<&str> = theirs.split_whitespace().collect();
    let checksum = OUR_CHECKSUMS
        .iter()
        .copied()
        .find(|c| offered.contains(&c.name()))
        .ok_or_else(|| {
            err(
                io::ErrorKind::Unsupported,
                url,
                format_args!("no common transfer checksum (daemon offers {theirs:?})"),
            )
        })?;
    let seed = get_i32(&mut r)?;
    tracing::debug!(target_url = %url, protocol, compat, checksum = checksum.name(), "rsync session");
    Ok(Connection {
        protocol,
        compat,
        checksum,
        seed,
        input: DataIn::start(r, login.timeout)?,
        output: DataOut::new(w),
        received,
    })
}

/// Counts the bytes read from the socket, for the bytes-on-the-wire
/// figures in `status` and the benchmarks; and acknowledges them at once.
///
/// The daemon writes small pieces (its checksum list, then the 4-byte
/// seed; a phase marker, then the next) with Nagle's algorithm on, so
/// each piece waits until the previous one is acknowledged; a delayed ACK
/// from us would stall every session by 40 ms. TCP_QUICKACK is not
/// sticky, so it is set again after each read.
struct Counting {
    inner: TcpStream,
    count: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        let _ = crate::sys::set_tcp_quickack(&self.inner);
        Ok(n)
    }
}
