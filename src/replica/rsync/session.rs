//! One push: connect, send the file list, answer the daemon's requests
//! with deltas, run the phase protocol to the goodbye.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};

use super::delta::{self, Sent, Sink, SumHead, Sums};
use super::flist::{self, Entry};
use super::handshake::{Connection, Login, connect};
use super::mux::{DataOut, MSG_NO_SEND};
use super::wire::{
    NDX_DEL_STATS, NDX_DONE, NdxState, bad, get_i32, get_u8, get_u16, get_varint, get_vstring,
    put_i32, put_u16,
};

const ITEM_TRANSFER: u16 = 0x8000;
const ITEM_BASIS_TYPE_FOLLOWS: u16 = 0x0800;
const ITEM_XNAME_FOLLOWS: u16 = 0x1000;
const IOERR_VANISHED: i32 = 2;

/// Block counts beyond this are not a real basis (2^22 blocks of the
/// largest block size is 512 GiB).
const MAX_BLOCKS: i32 = 1 << 22;
const MAX_BLOCK_LEN: i32 = 1 << 17;

/// How a listed file's data is sent when the daemon asks for it.
#[derive(Clone, Debug)]
pub enum Data {
    /// Only these ranges differ from the daemon's copy (the journal says
    /// so): match every other block without searching.
    Known(Vec<(u64, u64)>),
    /// Unknown: search the daemon's blocks (rsync's delta).
    Search,
}

/// Opens a listed regular file of SOURCE for reading.
pub type Opener = Box<dyn Fn(&Entry) -> io::Result<File> + Send>;

impl Data {
    /// What is known after both: the union of known ranges, or a search.
    pub fn merge(&mut self, other: &Data) {
        match (&mut *self, other) {
            (Data::Known(a), Data::Known(b)) => {
                a.extend_from_slice(b);
                a.sort_unstable();
                let mut merged: Vec<(u64, u64)> = Vec::with_capacity(a.len());
                for &(s, e) in a.iter() {
                    match merged.last_mut() {
                        Some(last) if s <= last.1 => last.1 = last.1.max(e),
                        _ => merged.push((s, e)),
                    }
                }
                *a = merged;
            }
            (s, _) => *s = Data::Search,
        }
    }
}

/// What to push in one session.
pub struct Push {
    /// Sorted with `flist::cmp`, no duplicate names.
    pub entries: Vec<Entry>,
    /// For regular files, by index in `entries`.
    pub data: HashMap<usize, Data>,
    /// Opens a listed regular file of SOURCE for reading.
    pub open: Opener,
    /// Send `--delete`: listed directories without XMIT_NO_CONTENT_DIR
    /// lose what they do not list.
    pub delete: bool,
    /// Send `--ignore-times`: every listed file is compared block by block,
    /// not skipped because size and mtime agree.
    pub ignore_times: bool,
    /// Names (relative to the root) a `--delete` sweep must leave alone:
    /// sent as protect rules.
    pub protect: Vec<Vec<u8>>,
    /// The names gone from SOURCE that the sweeps of this push delete
    /// (not listed: they are what the swept directories do not list).
    pub gone: Vec<Vec<u8>>,
    /// Entries (by index) listed only so that a sweep spares them, not
    /// because they changed: the daemon quick-checks them, and its hard
    /// links among them stay as they are.
    pub spared: HashSet<usize>,
    /// Send `--fuzzy`: a file new under its name is built against a similar
    /// file of its directory (same size and mtime first) when there is one.
    pub fuzzy: bool,
    /// Send `--inplace`: the daemon rewrites changed blocks of the file it
    /// has instead of building a new file and renaming it over. Only right
    /// when the daemon's file is the same file as ours (its other hard-
    /// linked names must change with it).
    pub inplace: bool,
}

/// The daemon rejected these files' checksums even after a full delta.
#[derive(Debug)]
pub struct VerifyFailed {
    pub names: Vec<String>,
    text: String,
}

impl std::fmt::Display for VerifyFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for VerifyFailed {}

/// What one session did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    pub files: u64,
    pub literal: u64,
    pub matched: u64,
    pub deleted: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

struct Tokens<'a> {
    out: &'a mut DataOut,
}

impl Sink for Tokens<'_> {
    fn literal(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.data(&(data.len() as i32).to_le_bytes())?;
        self.out.data(data)
    }

    fn matched(&mut self, block: u32) -> io::Result<()> {
        self.out.data(&(-(block as i32) - 1).to_le_bytes())
    }
}

/// Whether to send `--sparse`: the daemon then seeks over zero runs of
/// the data it writes, so SOURCE's holes (sent as zeros) stay holes, and
/// in place (rsync 3.2 takes the pair) it punches the runs it rewrites.
/// Except a run at the very end of a file rewritten in place: rsync 3.2.7
/// then only writes the last byte and leaves the daemon's old bytes before
/// it (seen in the randomized test, seed 1796611371361438947). So an
/// in-place push goes without `--sparse` when a file it lists ends in a
/// zero byte now (or cannot be read to tell).
fn sparse_is_safe(p: &Push) -> bool {
    if !p.inplace {
        return true;
    }
    p.entries.iter().enumerate().all(|(i, e)| {
        if !e.is_file() || !p.data.contains_key(&i) || e.size == 0 {
            return true;
        }
        let mut last = [0u8; 1];
        (p.open)(e)
            .and_then(|f| {
                let size = f.metadata()?.len();
                if size == 0 {
                    return Ok(true);
                }
                crate::sys::read_exact_at(&f, &mut last, size - 1)?;
                Ok(last[0] != 0)
            })
            .unwrap_or(false)
    })
}

fn args(p: &Push) -> Vec<String> {
    // r: recursive; l: symlinks; t: mtimes; p: perms; D: devices and
    // specials; H: hard links; o/g: owner and group (applied by a root daemon).
    // The client info after `e`: release build, no incremental recursion,
    // varint lists and checksum negotiation (see PROTOCOL notes).
    let mut cluster = String::from("-rltpDHog");
    if sparse_is_safe(p) {
        cluster.push('S');
    }
    if p.ignore_times {
        cluster.push('I');
    }
    cluster.push_str("e.LsfxCIvu");
    // --modify-window=-1: times compare to the nanosecond (the default
    // compares whole seconds, so a change within the same second would
    // leave the daemon's time behind).
    let mut a = vec![cluster, "--modify-window=-1".into()];
    if p.inplace {
        a.push("--inplace".into());
    } else {
        // A name that held a directory may now hold a file: the daemon
        // removes the directory, contents and all.
        a.push("--force".into());
    }
    if p.fuzzy {
        a.push("--fuzzy".into());
    }
    a.push("--numeric-ids".into());
    if p.delete {
        a.push("--delete".into());
    }
    a
}

/// Runs one push. An error leaves the daemon's tree partly updated but
/// consistent per file (the daemon checks every file's checksum); the
/// caller keeps its changes and pushes them again.
pub fn run(login: &Login<'_>, p: &Push) -> io::Result<Outcome> {
    let mut c = connect(login, &args(p))?;
    let r = transfer(&mut c, p);
    let m = c.input.messages.lock().unwrap_or_else(|e| e.into_inner());
    let mut outcome = r?;
    if let Some(e) = m.errors.first() {
        let more = m.errors.len() - 1;
        let text = if more > 0 {
            format!("daemon: {e} (and {more} more errors)")
        } else {
            format!("daemon: {e}")
        };
        // A file that changed while it was read fails the daemon's
        // checksum twice; so does one whose copy on the daemon shares its
        // inode with another name we write (a hard link SOURCE no longer
        // has). Either way it is sent again, as a new file.
        let names: Vec<String> = m
            .errors
            .iter()
            .filter_map(|e| {
                e.strip_prefix("ERROR: ")
                    .and_then(|r| r.split_once(" failed verification"))
                    .map(|(name, _)| name.to_string())
            })
            .collect();
        if names.len() == m.errors.len() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                VerifyFailed { names, text },
            ));
        }
        return Err(io::Error::other(text));
    }
    outcome.deleted = m.deleted;
    outcome.bytes_sent = c.output.sent;
    outcome.bytes_received = c.received.load(std::sync::atomic::Ordering::Relaxed);
    Ok(outcome)
}

fn transfer(c: &mut Connection, p: &Push) -> io::Result<Outcome> {
    let nsec = c.protocol >= 31;
    let mut head = Vec::new();
    if p.delete {
        for name in &p.protect {
            let mut rule = b"P /".to_vec();
            rule.extend_from_slice(name);
            put_i32(&mut head, rule.len() as i32);
            head.extend_from_slice(&rule);
        }
        put_i32(&mut head, 0); // end of the filter rules
    }
    for (i, e) in p.entries.iter().enumerate() {
        tracing::trace!(
            ndx = i,
            name = %String::from_utf8_lossy(&e.name),
            mode = format_args!("{:o}", e.mode),
            flags = e.flags,
            hlink = ?e.hlink,
            data = ?p.data.get(&i),
            "list"
        );
        flist::encode(&mut head, i as u32, e, nsec, true)?;
        if head.len() >= 64 * 1024 {
            c.output.data(&head)?;
            head.clear();
        }
    }
    flist::encode_end(&mut head, 0);
    c.output.data(&head)?;
    c.output.flush()?;

    let mut outcome = Outcome::default();
    let mut ins = NdxState::default();
    let mut outs = NdxState::default();
    let mut phase = 0;
    let mut io_error = 0i32;
    loop {
        let ndx = ins.get(&mut c.input)?;
        if ndx == NDX_DONE {
            phase += 1;
            let mut b = Vec::new();
            outs.put(&mut b, NDX_DONE);
            if phase > 2 && io_error != 0 {
                c.output
                    .msg(super::mux::MSG_IO_ERROR, &io_error.to_le_bytes())?;
            }
            c.output.data(&b)?;
            c.output.flush()?;
            if phase > 2 {
                break;
            }
            continue;
        }
        if ndx == NDX_DEL_STATS {
            del_stats(&mut c.input)?;
            continue;
        }
        let entry = usize::try_from(ndx)
            .ok()
            .and_then(|i| p.entries.get(i))
            .ok_or_else(|| {
                bad(format!(
                    "daemon asked for file {ndx} of {}",
                    p.entries.len()
                ))
            })?;
        let iflags = get_u16(&mut c.input)?;
        let mut extra = Vec::new();
        if iflags & ITEM_BASIS_TYPE_FOLLOWS != 0 {
            extra.push(get_u8(&mut c.input)?);
        }
        if iflags & ITEM_XNAME_FOLLOWS != 0 {
            let x = get_vstring(&mut c.input, 4096)?;
            super::wire::put_vstring(&mut extra, &x)?;
        }
        // Built only when it is sent: the index is encoded as the
        // difference from the last one sent, so the state must not move
        // for a file that is not (MSG_NO_SEND), or every later index the
        // daemon reads is wrong.
        let echo = |outs: &mut NdxState| {
            let mut echo = Vec::new();
            outs.put(&mut echo, ndx);
            put_u16(&mut echo, iflags);
            echo.extend_from_slice(&extra);
            echo
        };
        if iflags & ITEM_TRANSFER == 0 {
            c.output.data(&echo(&mut outs))?;
            continue;
        }
        if !entry.is_file() {
            return Err(bad(format!(
                "daemon asked for the data of {}, which is not a regular file",
                String::from_utf8_lossy(&entry.name)
            )));
        }
        let plan = if phase == 0 {
            p.data.get(&(ndx as usize)).cloned().unwrap_or(Data::Search)
        } else {
            // A redo: the daemon's copy was not what we believed.
            tracing::info!(
                "rsync: {} did not match on the daemon; sending a full delta",
                String::from_utf8_lossy(&entry.name)
            );
            Data::Search
        };
        let sums = read_sums(
            &mut c.input,
            matches!(plan, Data::Search),
            c.checksum.digest_len(),
        )?;
        let f = match (p.open)(entry) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(
                    "rsync: cannot open {}: {e}",
                    String::from_utf8_lossy(&entry.name)
                );
                c.output.msg(MSG_NO_SEND, &ndx.to_le_bytes())?;
                io_error |= IOERR_VANISHED;
                continue;
            }
        };
        let size = f.metadata()?.len().min(entry.size);
        c.output.data(&echo(&mut outs))?;
        let h = sums.head;
        for v in [h.count, h.blength, h.s2length, h.remainder] {
            c.output.data(&v.to_le_bytes())?;
        }
        let mut sink = Tokens { out: &mut c.output };
        let (sum, sent): (Vec<u8>, Sent) = match &plan {
            Data::Known(dirty) => delta::known(&f, size, h, dirty, c.checksum, &mut sink)?,
            Data::Search => delta::search(&f, size, &sums, c.checksum, c.seed, &mut sink)?,
        };
        c.output.data(&0i32.to_le_bytes())?;
        c.output.data(&sum)?;
        outcome.files += 1;
        outcome.literal += sent.literal;
        outcome.matched += sent.matched;
    }
    // The goodbye: NDX_DONE, echoed (protocol 31+), NDX_DONE.
    goodbye(&mut ins, &mut c.input)?;
    if c.protocol >= 31 {
        let mut b = Vec::new();
        outs.put(&mut b, NDX_DONE);
        c.output.data(&b)?;
        c.output.flush()?;
        goodbye(&mut ins, &mut c.input)?;
    }
    Ok(outcome)
}

/// Reads one goodbye NDX_DONE; deletion statistics may come first.
fn goodbye(ins: &mut NdxState, r: &mut impl Read) -> io::Result<()> {
    loop {
        match ins.get(r)? {
            NDX_DONE => return Ok(()),
            NDX_DEL_STATS => del_stats(r)?,
            n => return Err(bad(format!("expected the goodbye, got index {n}"))),
        }
    }
}

fn del_stats(r: &mut impl Read) -> io::Result<()> {
    for _ in 0..5 {
        get_varint(r)?;
    }
    Ok(())
}

/// Reads a sum head and its block sums; keeps the sums only when the
/// search needs them.
fn read_sums(r: &mut impl Read, keep: bool, digest_len: usize) -> io::Result<Sums> {
    let head = SumHead {
        count: get_i32(r)?,
        blength: get_i32(r)?,
        s2length: get_i32(r)?,
        remainder: get_i32(r)?,
    };
    let ok = (0..=MAX_BLOCKS).contains(&head.count)
        && (0..=MAX_BLOCK_LEN).contains(&head.blength)
        && (0..=digest_len.min(16) as i32).contains(&head.s2length)
        && (0..=head.blength).contains(&head.remainder)
        && (head.count == 0 || head.blength > 0);
    if !ok {
        return Err(bad(format!("sum head {head:?}")));
    }
    let s2 = head.s2length as usize;
    let mut sums = Sums {
        head,
        sum1: Vec::new(),
        sum2: Vec::new(),
    };
    let mut strong = [0u8; 16];
    for _ in 0..head.count {
        let s1 = get_i32(r)? as u32;
        r.read_exact(&mut strong[..s2])?;
        if keep {
            sums.sum1.push(s1);
            sums.sum2.extend_from_slice(&strong[..s2]);
        }
    }
    Ok(sums)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::rsync::RsyncUrl;
    use proptest::prelude::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::Duration;

    /// A "daemon" that answers the handshake properly, then sends `tail`
    /// (already framed or not) and hangs up; it swallows what we send.
    fn hostile_daemon(prefix: bool, tail: Vec<u8>) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut r = s.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut sink = [0u8; 4096];
                while matches!(r.read(&mut sink), Ok(n) if n > 0) {}
            });
            let mut out = Vec::new();
            if prefix {
                out.extend_from_slice(b"@RSYNCD: 32.0 sha512\n@RSYNCD: OK\n");
                super::super::wire::put_varint(&mut out, 0x1fe);
                super::super::wire::put_vstring(&mut out, b"xxh128 md5").unwrap();
                out.extend_from_slice(&7i32.to_le_bytes());
            }
            out.extend_from_slice(&tail);
            let _ = s.write_all(&out);
            let _ = s.shutdown(std::net::Shutdown::Write);
        });
        port
    }

    fn push_one_file() -> Push {
        let mut e = Entry::missing(b"f".to_vec());
        e.mode = 0o100644;
        e.size = 10;
        Push {
            entries: vec![e],
            data: HashMap::new(),
            open: Box::new(|_| tempfile::tempfile()),
            delete: false,
            protect: Vec::new(),
            gone: Vec::new(),
            spared: HashSet::new(),
            ignore_times: true,
            inplace: true,
            fuzzy: false,
        }
    }

    fn run_against(port: u16) -> io::Result<Outcome> {
        let url = RsyncUrl::parse(&format!("rsync://127.0.0.1:{port}/m")).unwrap();
        let login = Login {
            url: &url,
            password: Some(b"pw"),
            timeout: Duration::from_secs(5),
        };
        run(&login, &push_one_file())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Garbage instead of a greeting: an error, never a panic.
        #[test]
        fn hostile_handshakes_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert!(run_against(hostile_daemon(false, bytes)).is_err());
        }

        /// A proper handshake, then garbage in data frames: requests for
        /// files that do not exist, huge sum heads, bad indices.
        #[test]
        fn hostile_transfer_streams_fail_cleanly(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            framed in any::<bool>(),
        ) {
            let tail = if framed {
                let mut t = ((7u32 << 24) | bytes.len() as u32).to_le_bytes().to_vec();
                t.extend_from_slice(&bytes);
                t
            } else {
                bytes
            };
            prop_assert!(run_against(hostile_daemon(true, tail)).is_err());
        }
    }

    #[test]
    fn a_huge_sum_head_is_refused_before_allocating() {
        let mut b = Vec::new();
        for v in [i32::MAX, 1 << 17, 16, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let e = read_sums(&mut &b[..], true, 16).unwrap_err();
        assert!(e.to_string().contains("sum head"), "{e}");
    }
}
