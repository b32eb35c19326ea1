//! Journal records: what changed, by path relative to the root, in a
//! checksummed binary frame. The bytes of a write are not recorded: SOURCE
//! holds them; the record says which range is dirty.
//!
//! Frame: `len: u32 LE` (of what follows the checksum), `crc32: u32 LE` (of
//! those bytes), then `seq: u64 LE`, `tag: u8`, and the op's fields. Byte
//! strings are `len: u32 LE` + bytes. See docs/journal.md.

use std::io;
use std::path::{Path, PathBuf};

/// Largest frame a reader accepts; anything bigger is a torn or corrupt tail.
pub const MAX_FRAME: u32 = 1 << 20;

/// What kind of node a create made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    File,
    Dir,
    Fifo,
    Socket,
    CharDevice(u64),
    BlockDevice(u64),
}

/// One change made through the mount. Paths are relative to the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Create {
        path: PathBuf,
        kind: NodeKind,
        mode: u32,
    },
    Symlink {
        path: PathBuf,
        target: PathBuf,
    },
    Link {
        from: PathBuf,
        to: PathBuf,
    },
    Unlink {
        path: PathBuf,
    },
    Rmdir {
        path: PathBuf,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
        flags: u32,
    },
    /// chmod/chown/utimens: the values are taken from SOURCE when applied.
    Attr {
        path: PathBuf,
    },
    Truncate {
        path: PathBuf,
        size: u64,
    },
    Write {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
    Fallocate {
        path: PathBuf,
        mode: i32,
        offset: u64,
        len: u64,
    },
    SetXattr {
        path: PathBuf,
        name: Vec<u8>,
        value: Vec<u8>,
        flags: i32,
    },
    RemoveXattr {
        path: PathBuf,
        name: Vec<u8>,
    },
    /// SOURCE changed at `path` outside the mount: compare and copy.
    Resync {
        path: PathBuf,
    },
}

impl Op {
    /// Every path the op touches (both names of a rename or link).
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            Op::Create { path, .. }
            | Op::Symlink { path, .. }
            | Op::Unlink { path }
            | Op::Rmdir { path }
            | Op::Attr { path }
            | Op::Truncate { path, .. }
            | Op::Write { path, .. }
            | Op::Fallocate { path, .. }
            | Op::SetXattr { path, .. }
            | Op::RemoveXattr { path, .. }
            | Op::Resync { path } => vec![path],
            Op::Link { from, to } | Op::Rename { from, to, .. } => vec![from, to],
        }
    }

    /// The first path of the op that does not stay inside the tree: an
    /// absolute one, or one with a `..` component. The recording layer
    /// never makes such records; a journal holding one is corrupt or
    /// crafted, and the op can never be applied.
    pub fn invalid_path(&self) -> Option<&Path> {
        use std::path::Component;
        self.paths().into_iter().find(|p| {
            p.components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub op: Op,
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_path(out: &mut Vec<u8>, p: &Path) {
    put_bytes(out, p.as_os_str().as_encoded_bytes());
}

/// Appends the framed record to `out`.
pub fn encode(rec: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&rec.seq.to_le_bytes());
    let u64s = |out: &mut Vec<u8>, v: &[u64]| {
        v.iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
    };
    match &rec.op {
        Op::Create { path, kind, mode } => {
            out.push(1);
            put_path(out, path);
            let (k, dev) = match kind {
                NodeKind::File => (0u8, 0),
                NodeKind::Dir => (1, 0),
                NodeKind::Fifo => (2, 0),
                NodeKind::Socket => (3, 0),
                NodeKind::CharDevice(d) => (4, *d),
                NodeKind::BlockDevice(d) => (5, *d),
            };
            out.push(k);
            u64s(out, &[dev, u64::from(*mode)]);
        }
        Op::Symlink { path, target } => {
            out.push(2);
            put_path(out, path);
            put_path(out, target);
        }
        Op::Link { from, to } => {
            out.push(3);
            put_path(out, from);
            put_path(out, to);
        }
        Op::Unlink { path } => {
            out.push(4);
            put_path(out, path);
        }
        Op::Rmdir { path } => {
            out.push(5);
            put_path(out, path);
        }
        Op::Rename { from, to, flags } => {
            out.push(6);
            put_path(out, from);
            put_path(out, to);
            u64s(out, &[u64::from(*flags)]);
        }
        Op::Attr { path } => {
            out.push(7);
            put_path(out, path);
        }
        Op::Truncate { path, size } => {
            out.push(8);
            put_path(out, path);
            u64s(out, &[*size]);
        }
        Op::Write { path, offset, len } => {
            out.push(9);
            put_path(out, path);
            u64s(out, &[*offset, *len]);
        }
        Op::Fallocate {
            path,
            mode,
            offset,
            len,
        } => {
            out.push(10);
            put_path(out, path);
            u64s(out, &[*mode as u32 as u64, *offset, *len]);
        }
        Op::SetXattr {
            path,
            name,
            value,
            flags,
        } => {
            out.push(11);
            put_path(out, path);
            put_bytes(out, name);
            put_bytes(out, value);
            u64s(out, &[*flags as u32 as u64]);
        }
        Op::RemoveXattr { path, name } => {
            out.push(12);
            put_path(out, path);
            put_bytes(out, name);
        }
        Op::Resync { path } => {
            out.push(13);
            put_path(out, path);
        }
    }
    let body = &out[start + 8..];
    let len = body.len() as u32;
    let crc = crc32fast::hash(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.b.len() < n {
            return Err(bad("record field runs past the frame"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> io::Result<Vec<u8>> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn path(&mut self) -> io::Result<PathBuf> {
        let b = self.bytes()?;
        Ok(PathBuf::from(crate::sys::os_from_bytes(b)))
    }
}

/// Decodes one frame from the front of `buf`. `Ok(None)` means `buf` ends
/// before a whole valid frame does: a torn tail (or the end).
pub fn decode(buf: &[u8]) -> io::Result<Option<(Record, usize)>> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len > MAX_FRAME || buf.len() < 8 + len as usize {
        return Ok(None);
    }
    let body = &buf[8..8 + len as usize];
    if crc32fast::hash(body) != crc {
        return Ok(None);
    }
    let mut r = Reader { b: body };
    let seq = r.u64()?;
    let op = match r.u8()? {
        1 => {
            let path = r.path()?;
            let k = r.u8()?;
            let dev = r.u64()?;
            let mode = r.u64()? as u32;
            let kind = match k {
                0 => NodeKind::File,
                1 => NodeKind::Dir,
                2 => NodeKind::Fifo,
                3 => NodeKind::Socket,
                4 => NodeKind::CharDevice(dev),
                5 => NodeKind::BlockDevice(dev),
                _ => return Err(bad("unknown node kind")),
            };
            Op::Create { path, kind, mode }
        }
        2 => Op::Symlink {
            path: r.path()?,
            target: r.path()?,
        },
        3 => Op::Link {
            from: r.path()?,
            to: r.path()?,
        },
        4 => Op::Unlink { path: r.path()? },
        5 => Op::Rmdir { path: r.path()? },
        6 => Op::Rename {
            from: r.path()?,
            to: r.path()?,
            flags: r.u64()? as u32,
        },
        7 => Op::Attr { path: r.path()? },
        8 => Op::Truncate {
            path: r.path()?,
            size: r.u64()?,
        },
        9 => Op::Write {
            path: r.path()?,
            offset: r.u64()?,
            len: r.u64()?,
        },
        10 => Op::Fallocate {
            path: r.path()?,
            mode: r.u64()? as u32 as i32,
            offset: r.u64()?,
            len: r.u64()?,
        },
        11 => Op::SetXattr {
            path: r.path()?,
            name: r.bytes()?,
            value: r.bytes()?,
            flags: r.u64()? as u32 as i32,
        },
        12 => Op::RemoveXattr {
            path: r.path()?,
            name: r.bytes()?,
        },
        13 => Op::Resync { path: r.path()? },
        _ => return Err(bad("unknown record tag")),
    };
    if !r.b.is_empty() {
        return Err(bad("trailing bytes in record"));
    }
    Ok(Some((Record { seq, op }, 8 + len as usize)))
}

/// Decodes every whole record of `buf`; returns them and the length of the
/// valid prefix (what follows is a torn tail to cut off).
pub fn decode_all(buf: &[u8]) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(Some((rec, n))) = decode(&buf[at..]) {
        out.push(rec);
        at += n;
    }
    (out, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths_outside_the_tree_are_invalid() {
        let w = |p: &str| Op::Write {
            path: p.into(),
            offset: 0,
            len: 1,
        };
        for ok in ["a", "a/b c", "./a", ""] {
            assert_eq!(w(ok).invalid_path(), None, "{ok:?}");
        }
        for bad in ["../x", "a/../../x", "/etc/shadow", "a/.."] {
            assert!(w(bad).invalid_path().is_some(), "{bad:?}");
        }
        let r = Op::Rename {
            from: "a".into(),
            to: "../b".into(),
            flags: 0,
        };
        assert_eq!(r.invalid_path(), Some(Path::new("../b")));
    }

    fn arb_path() -> impl Strategy<Value = PathBuf> {
        "[a-z]{1,6}(/[a-z ]{1,6}){0,3}".prop_map(PathBuf::from)
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (arb_path(), 0u8..6, any::<u64>(), any::<u32>()).prop_map(|(path, k, d, mode)| {
                Op::Create {
                    path,
                    kind: match k {
                        0 => NodeKind::File,
                        1 => NodeKind::Dir,
                        2 => NodeKind::Fifo,
                        3 => NodeKind::Socket,
                        4 => NodeKind::CharDevice(d),
                        _ => NodeKind::BlockDevice(d),
                    },
                    mode,
                }
            }),
            (arb_path(), arb_path()).prop_map(|(path, target)| Op::Symlink { path, target }),
            (arb_path(), arb_path()).prop_map(|(from, to)| Op::Link { from, to }),
            arb_path().prop_map(|path| Op::Unlink { path }),
            arb_path().prop_map(|path| Op::Rmdir { path }),
            (arb_path(), arb_path(), any::<u32>()).prop_map(|(from, to, flags)| Op::Rename {
                from,
                to,
                flags
            }),
            arb_path().prop_map(|path| Op::Attr { path }),
            (arb_path(), any::<u64>()).prop_map(|(path, size)| Op::Truncate { path, size }),
            (arb_path(), any::<u64>(), any::<u64>()).prop_map(|(path, offset, len)| Op::Write {
                path,
                offset,
                len
            }),
            (arb_path(), any::<i32>(), any::<u64>(), any::<u64>()).prop_map(
                |(path, mode, offset, len)| Op::Fallocate {
                    path,
                    mode,
                    offset,
                    len
                }
            ),
            (
                arb_path(),
                proptest::collection::vec(any::<u8>(), 0..20),
                proptest::collection::vec(any::<u8>(), 0..50),
                any::<i32>()
            )
                .prop_map(|(path, name, value, flags)| Op::SetXattr {
                    path,
                    name,
                    value,
                    flags
                }),
            (arb_path(), proptest::collection::vec(any::<u8>(), 0..20))
                .prop_map(|(path, name)| Op::RemoveXattr { path, name }),
            arb_path().prop_map(|path| Op::Resync { path }),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(ops in proptest::collection::vec(arb_op(), 0..20)) {
            let mut buf = Vec::new();
            let recs: Vec<Record> = ops.into_iter().enumerate().map(|(i, op)| Record { seq: i as u64 + 1, op }).collect();
            for r in &recs {
                encode(r, &mut buf);
            }
            let (back, valid) = decode_all(&buf);
            prop_assert_eq!(valid, buf.len());
            prop_assert_eq!(back, recs);
        }

        #[test]
        fn a_torn_tail_loses_only_the_torn_record(ops in proptest::collection::vec(arb_op(), 1..10), cut in 1usize..40) {
            let mut buf = Vec::new();
            let mut ends = Vec::new();
            for (i, op) in ops.into_iter().enumerate() {
                encode(&Record { seq: i as u64, op }, &mut buf);
                ends.push(buf.len());
            }
            let cut_at = buf.len().saturating_sub(cut);
            let (back, valid) = decode_all(&buf[..cut_at]);
            let whole = ends.iter().filter(|&&e| e <= cut_at).count();
            prop_assert_eq!(back.len(), whole);
            prop_assert_eq!(valid, if whole == 0 { 0 } else { ends[whole - 1] });
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_all(&bytes);
        }
    }

    #[test]
    fn a_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        encode(
            &Record {
                seq: 7,
                op: Op::Unlink { path: "a/b".into() },
            },
            &mut buf,
        );
        buf[12] ^= 1;
        assert_eq!(decode_all(&buf).0.len(), 0);
    }
}
