//! Multiplexed I/O: after the handshake every byte either way travels in
//! frames of `u32 LE ((7 + tag) << 24 | len)` + payload. MSG_DATA frames
//! carry the protocol stream; the others are the daemon's messages.
//!
//! A reader thread de-frames the daemon's side at once, whatever the
//! sender is doing, so neither side can block the other (the daemon's
//! generator sends requests and checksums for later files while we still
//! send an earlier one).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::wire::bad;

pub const MSG_DATA: u8 = 0;
pub const MSG_ERROR_XFER: u8 = 1;
pub const MSG_INFO: u8 = 2;
pub const MSG_ERROR: u8 = 3;
pub const MSG_WARNING: u8 = 4;
pub const MSG_IO_ERROR: u8 = 22;
pub const MSG_IO_TIMEOUT: u8 = 33;
pub const MSG_NOOP: u8 = 42;
pub const MSG_ERROR_EXIT: u8 = 86;
pub const MSG_SUCCESS: u8 = 100;
pub const MSG_DELETED: u8 = 101;
pub const MSG_NO_SEND: u8 = 102;

/// Largest frame payload the length field can say.
const MAX_FRAME: usize = 0xFF_FFFF;
/// Messages other than data are short texts; the daemon's own buffer is
/// about 5 KiB. Anything far larger is a broken stream.
const MAX_MESSAGE: usize = 64 * 1024;
/// We send data in frames of this size, as stock rsync does.
const OUT_FRAME: usize = 64 * 1024;
/// Frames of data buffered between the reader thread and the sender: the
/// daemon waits (TCP backpressure) rather than us buffering without end.
const IN_QUEUE: usize = 256;

/// What the daemon said besides data, collected for the session's result
/// and for `status`.
#[derive(Debug, Default)]
pub struct Messages {
    /// MSG_ERROR / MSG_ERROR_XFER texts: the push did not fully succeed.
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// Names the daemon deleted.
    pub deleted: u64,
    /// MSG_ERROR_EXIT's code, if the daemon ended the session with one.
    pub exit: Option<i32>,
    /// MSG_IO_ERROR bits.
    pub io_error: i32,
}

/// The de-framed protocol stream from the daemon.
pub struct DataIn {
    rx: Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    timeout: Duration,
    ended: Option<io::Error>,
    pub messages: Arc<Mutex<Messages>>,
}

impl DataIn {
    /// Starts the reader thread on `sock` (the read half).
    pub fn start(mut sock: impl Read + Send + 'static, timeout: Duration) -> io::Result<Self> {
        let (tx, rx) = sync_channel(IN_QUEUE);
        let messages = Arc::new(Mutex::new(Messages::default()));
        let m = messages.clone();
        std::thread::Builder::new()
            .name("rsync-in".into())
            .spawn(move || {
                let r = read_frames(&mut sock, &tx, &m);
                let _ = tx.send(Err(match r {
                    Ok(()) => io::Error::new(io::ErrorKind::UnexpectedEof, "daemon closed"),
                    Err(e) => e,
                }));
            })?;
        Ok(DataIn {
            rx,
            cur: Vec::new(),
            pos: 0,
            timeout,
            ended: None,
            messages,
        })
    }

    fn fill(&mut self) -> io::Result<()> {
        if let Some(e) = &self.ended {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        match self.rx.recv_timeout(self.timeout) {
            Ok(Ok(chunk)) => {
                self.cur = chunk;
                self.pos = 0;
                Ok(())
            }
            Ok(Err(e)) => {
                let m = self.messages.lock().unwrap_or_else(|e| e.into_inner());
                // The first message says why; the daemon's closing summary
                // ("rsync error: ... (code N)") follows it.
                let texts: Vec<&str> = m.errors.iter().take(3).map(String::as_str).collect();
                let e = match (m.exit, texts.is_empty()) {
                    (_, false) => io::Error::other(format!("daemon: {}", texts.join("; "))),
                    (Some(code), true) => {
                        io::Error::other(format!("daemon ended the session (exit code {code})"))
                    }
                    (None, true) => e,
                };
                drop(m);
                self.ended = Some(io::Error::new(e.kind(), e.to_string()));
                Err(e)
            }
            Err(RecvTimeoutError::Timeout) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("daemon sent nothing for {:?}", self.timeout),
            )),
            Err(RecvTimeoutError::Disconnected) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "daemon closed",
            )),
        }
    }
}

impl Read for DataIn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            self.fill()?;
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn read_frames(
    sock: &mut impl Read,
    tx: &SyncSender<io::Result<Vec<u8>>>,
    messages: &Mutex<Messages>,
) -> io::Result<()> {
    loop {
        let mut h = [0u8; 4];
        match sock.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let v = u32::from_le_bytes(h);
        let len = (v & 0xFF_FFFF) as usize;
        let tag = (v >> 24)
            .checked_sub(7)
            .ok_or_else(|| bad(format!("frame header {v:#010x}")))? as u8;
        if tag != MSG_DATA && len > MAX_MESSAGE {
            return Err(bad(format!("message {tag} of {len} bytes")));
        }
        let mut payload = vec![0u8; len];
        sock.read_exact(&mut payload)?;
        let m = || messages.lock().unwrap_or_else(|e| e.into_inner());
        let text = || String::from_utf8_lossy(&payload).trim_end().to_string();
        match tag {
            MSG_DATA => {
                if !payload.is_empty() && tx.send(Ok(payload)).is_err() {
                    return Ok(());
                }
            }
            MSG_ERROR | MSG_ERROR_XFER => {
                tracing::warn!("rsync daemon: {}", text());
                m().errors.push(text());
            }
            MSG_WARNING => {
                tracing::warn!("rsync daemon: {}", text());
                m().warnings.push(text());
            }
            MSG_INFO => tracing::info!("rsync daemon: {}", text()),
            MSG_DELETED => {
                tracing::debug!("rsync daemon deleted {}", text());
                m().deleted += 1;
            }
            MSG_IO_ERROR => {
                let bits = payload
                    .get(..4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                m().io_error |= bits;
            }
            MSG_ERROR_EXIT => {
                let code = payload
                    .get(..4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                m().exit = Some(code);
                return Ok(());
            }
            MSG_IO_TIMEOUT | MSG_NOOP | MSG_SUCCESS | MSG_NO_SEND => {}
            other => return Err(bad(format!("unexpected message tag {other}"))),
        }
    }
}

/// The framed writer: protocol data is buffered and sent in MSG_DATA
/// frames; `msg` sends other tags.
pub struct DataOut {
    sock: TcpStream,
    buf: Vec<u8>,
    /// Bytes put on the wire, frame headers included.
    pub sent: u64,
}

impl DataOut {
    pub fn new(sock: TcpStream) -> Self {
        DataOut {
            sock,
            buf: Vec::with_capacity(OUT_FRAME + 8),
            sent: 0,
        }
    }

    pub fn data(&mut self, b: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= OUT_FRAME {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends what is buffered.
    pub fn flush(&mut self) -> io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        for chunk in buf.chunks(MAX_FRAME) {
            self.frame(MSG_DATA, chunk)?;
        }
        self.buf = buf;
        self.buf.clear();
        Ok(())
    }

    pub fn msg(&mut self, tag: u8, payload: &[u8]) -> io::Result<()> {
        self.flush()?;
        self.frame(tag, payload)
    }

    fn frame(&mut self, tag: u8, payload: &[u8]) -> io::Result<()> {
        let h = ((u32::from(tag) + 7) << 24) | payload.len() as u32;
        let mut f = Vec::with_capacity(4 + payload.len());
        f.extend_from_slice(&h.to_le_bytes());
        f.extend_from_slice(payload);
        self.sock.write_all(&f)?;
        self.sent += f.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(parts: &[(u8, &[u8])]) -> Vec<u8> {
        let mut o = Vec::new();
        for (tag, p) in parts {
            o.extend_from_slice(&(((u32::from(*tag) + 7) << 24) | p.len() as u32).to_le_bytes());
            o.extend_from_slice(p);
        }
        o
    }

    #[test]
    fn data_is_one_stream_and_messages_are_collected() {
        let wire = frames(&[
            (MSG_DATA, b"ab"),
            (MSG_DATA, b""),
            (MSG_WARNING, b"careful\n"),
            (MSG_DATA, b"cd"),
            (MSG_ERROR_XFER, b"oops\n"),
            (MSG_DELETED, b"x\0"),
        ]);
        let mut d = DataIn::start(std::io::Cursor::new(wire), Duration::from_secs(5)).unwrap();
        let mut s = [0u8; 4];
        d.read_exact(&mut s).unwrap();
        assert_eq!(&s, b"abcd");
        let e = d.read_exact(&mut s).unwrap_err();
        assert!(e.to_string().contains("oops"), "{e}");
        let m = d.messages.lock().unwrap();
        assert_eq!(m.warnings, ["careful"]);
        assert_eq!(m.deleted, 1);
    }

    #[test]
    fn error_exit_ends_the_stream_with_its_code() {
        let wire = frames(&[(MSG_DATA, b"a"), (MSG_ERROR_EXIT, &4i32.to_le_bytes())]);
        let mut d = DataIn::start(std::io::Cursor::new(wire), Duration::from_secs(5)).unwrap();
        let mut s = [0u8; 2];
        let e = d.read_exact(&mut s).unwrap_err();
        assert!(e.to_string().contains("exit code 4"), "{e}");
    }

    proptest! {
        #[test]
        fn hostile_frames_end_in_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut d = DataIn::start(std::io::Cursor::new(bytes), Duration::from_secs(5)).unwrap();
            let mut sink = Vec::new();
            prop_assert!(d.read_to_end(&mut sink).is_err());
        }
    }
}
