//! The file list a push sends: entries, the receiver's sort order, and
//! their encoding (protocol 30–32 with varint flags, no incremental
//! recursion, numeric ids).

use std::cmp::Ordering;
use std::io;

use super::wire::{
    bad, get_i32, get_u8, get_varint, get_varlong, put_i32, put_varint, put_varlong,
};

pub const XMIT_TOP_DIR: u32 = 0x0001;
pub const XMIT_SAME_MODE: u32 = 0x0002;
pub const XMIT_EXTENDED_FLAGS: u32 = 0x0004;
pub const XMIT_SAME_UID: u32 = 0x0008;
pub const XMIT_SAME_GID: u32 = 0x0010;
pub const XMIT_SAME_NAME: u32 = 0x0020;
pub const XMIT_LONG_NAME: u32 = 0x0040;
pub const XMIT_NO_CONTENT_DIR: u32 = 0x0100;
pub const XMIT_HLINKED: u32 = 0x0200;
pub const XMIT_HLINK_FIRST: u32 = 0x1000;
pub const XMIT_MOD_NSEC: u32 = 0x2000;
pub const XMIT_SAME_TIME: u32 = 0x0080;

pub const S_IFMT: u32 = 0o170000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFBLK: u32 = 0o060000;

/// One file-list entry. `name` is relative to the transfer root, `/`
/// separated, `.` for the root itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    /// Raw `st_mode`. Never 0: a name that is gone is not listed (an
    /// entry with mode 0 is what `--delete-missing-args` sends, and
    /// receivers with the 2026 security fixes refuse it); the directory
    /// that held it is swept instead.
    pub mode: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: (u32, u32),
    pub link: Option<Vec<u8>>,
    /// XMIT_TOP_DIR / XMIT_NO_CONTENT_DIR.
    pub flags: u32,
    /// SOURCE's (dev, ino) of a non-directory with more than one name:
    /// names of one inode are sent as hard links of each other.
    pub inode: Option<(u64, u64)>,
    /// Set when the list is final: the index of the first listed name of
    /// this entry's inode (its own index for the first).
    pub hlink: Option<u32>,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }

    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }

    /// An entry with only a name (mode 0: fill in the rest before it is
    /// encoded).
    pub fn missing(name: Vec<u8>) -> Self {
        Entry {
            name,
            mode: 0,
            size: 0,
            mtime: 0,
            mtime_nsec: 0,
            uid: 0,
            gid: 0,
            rdev: (0, 0),
            link: None,
            flags: 0,
            inode: None,
            hlink: None,
        }
    }
}

/// The receiver's order (flist.c `f_name_cmp`, protocol ≥ 29): `.` first;
/// in each directory its non-directories by name, then its directories by
/// `name + "/"`, each followed by what is inside it.
pub fn cmp(a: &Entry, b: &Entry) -> Ordering {
    sort_key(a).cmp(&sort_key(b))
}

fn sort_key(e: &Entry) -> Vec<(u8, Vec<u8>)> {
    if e.name == b"." {
        return Vec::new();
    }
    let parts: Vec<&[u8]> = e.name.split(|&c| c == b'/').collect();
    let last = parts.len() - 1;
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i < last || e.is_dir() {
                let mut d = p.to_vec();
                d.push(b'/');
                (1, d)
            } else {
                (0, p.to_vec())
            }
        })
        .collect()
}

/// Gives every name of a multiply-linked inode the index of the inode's
/// first name in the (sorted) list.
pub fn link_groups(entries: &mut [Entry]) {
    let mut first = std::collections::HashMap::new();
    for (i, e) in entries.iter_mut().enumerate() {
        if let Some(ino) = e.inode {
            e.hlink = Some(*first.entry(ino).or_insert(i as u32));
        }
    }
}

/// Appends entry number `ndx`. `nsec`: the protocol carries nanoseconds
/// (31+).
pub fn encode(out: &mut Vec<u8>, ndx: u32, e: &Entry, nsec: bool, ids: bool) -> io::Result<()> {
    let mut x = e.flags;
    let first_link = e.hlink.filter(|&f| f != ndx);
    if let Some(f) = e.hlink {
        x |= XMIT_HLINKED;
        if f == ndx {
            x |= XMIT_HLINK_FIRST;
        }
    }
    if e.name.len() > 255 {
        x |= XMIT_LONG_NAME;
    }
    if nsec && e.mtime_nsec != 0 {
        x |= XMIT_MOD_NSEC;
    }
    if x == 0 {
        // Zero would end the list.
        x = XMIT_EXTENDED_FLAGS;
    }
    if e.name.is_empty() || e.name.len() > 4096 {
        return Err(bad(format!("file name of {} bytes", e.name.len())));
    }
    if e.mode == 0 {
        return Err(bad(format!(
            "{}: an entry without a mode",
            String::from_utf8_lossy(&e.name)
        )));
    }
    put_varint(out, x as i32);
    if x & XMIT_LONG_NAME != 0 {
        put_varint(out, e.name.len() as i32);
    } else {
        out.push(e.name.len() as u8);
    }
    out.extend_from_slice(&e.name);
    if let Some(f) = first_link {
        // A later name of an inode: everything else is the first's.
        put_varint(out, f as i32);
        return Ok(());
    }
    put_varlong(out, e.size as i64, 3);
    put_varlong(out, e.mtime, 4);
    if x & XMIT_MOD_NSEC != 0 {
        put_varint(out, e.mtime_nsec as i32);
    }
    put_i32(out, e.mode as i32);
    if ids {
        put_varint(out, e.uid as i32);
        put_varint(out, e.gid as i32);
    }
    let t = e.mode & S_IFMT;
    if t == S_IFCHR || t == S_IFBLK {
        put_varint(out, e.rdev.0 as i32);
        put_varint(out, e.rdev.1 as i32);
    }
    if let Some(l) = &e.link {
        put_varint(out, l.len() as i32);
        out.extend_from_slice(l);
    }
    Ok(())
}

/// Reads one entry of a list the daemon sends (it is the sender: a
/// listing), for a session with `-l` and none of `-o -g -D -H`; `prev` is
/// the entry before, whose name and fields later ones may share. `None`
/// at the end of the list.
///
/// # Errors
///
/// The stream's error, or a malformed entry (never a panic).
pub fn decode(r: &mut impl io::Read, prev: &mut Entry, nsec: bool) -> io::Result<Option<Entry>> {
    let x = get_varint(r)? as u32;
    if x == 0 {
        let _io_error = get_varint(r)?;
        return Ok(None);
    }
    if x & XMIT_HLINKED != 0 {
        return Err(bad("hard-link data in a list sent without -H"));
    }
    let keep = if x & XMIT_SAME_NAME != 0 {
        usize::from(get_u8(r)?)
    } else {
        0
    };
    let len = if x & XMIT_LONG_NAME != 0 {
        usize::try_from(get_varint(r)?).map_err(|_| bad("negative name length"))?
    } else {
        usize::from(get_u8(r)?)
    };
    if keep > prev.name.len() || keep + len > 4096 {
        return Err(bad(format!("file name of {} bytes", keep + len)));
    }
    let mut name = prev.name[..keep].to_vec();
    let mut rest = vec![0u8; len];
    r.read_exact(&mut rest)?;
    name.extend_from_slice(&rest);
    let size = get_varlong(r, 3)?;
    let mtime = if x & XMIT_SAME_TIME != 0 {
        prev.mtime
    } else {
        get_varlong(r, 4)?
    };
    let mtime_nsec = if nsec && x & XMIT_MOD_NSEC != 0 {
        get_varint(r)? as u32
    } else {
        0
    };
    let mode = if x & XMIT_SAME_MODE != 0 {
        prev.mode
    } else {
        get_i32(r)? as u32
    };
    let link = if mode & S_IFMT == S_IFLNK {
        let n = usize::try_from(get_varint(r)?)
            .ok()
            .filter(|&n| n <= 4096)
            .ok_or_else(|| bad("bad symlink length"))?;
        let mut l = vec![0u8; n];
        r.read_exact(&mut l)?;
        Some(l)
    } else {
        None
    };
    let e = Entry {
        name,
        mode,
        size: u64::try_from(size).map_err(|_| bad("negative size"))?,
        mtime,
        mtime_nsec,
        link,
        ..Entry::missing(Vec::new())
    };
    *prev = e.clone();
    Ok(Some(e))
}

/// The end of the list: flags 0, then the io_error bits.
pub fn encode_end(out: &mut Vec<u8>, io_error: i32) {
    put_varint(out, 0);
    put_varint(out, io_error);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, mode: u32) -> Entry {
        Entry {
            mode,
            ..Entry::missing(name.as_bytes().to_vec())
        }
    }

    #[test]
    fn decodes_what_it_encodes() {
        let mut a = e("dir/link", S_IFLNK | 0o777);
        a.size = 29;
        a.mtime = 1_700_000_000;
        a.mtime_nsec = 5;
        a.link = Some(b"/rsyncd-munged/target".to_vec());
        let mut b = e("dir/file", S_IFREG | 0o644);
        b.size = 1 << 40;
        let mut out = Vec::new();
        encode(&mut out, 0, &a, true, false).unwrap();
        encode(&mut out, 1, &b, true, false).unwrap();
        encode_end(&mut out, 0);
        let mut r = &out[..];
        let mut prev = Entry::missing(Vec::new());
        assert_eq!(decode(&mut r, &mut prev, true).unwrap(), Some(a));
        assert_eq!(decode(&mut r, &mut prev, true).unwrap(), Some(b));
        assert_eq!(decode(&mut r, &mut prev, true).unwrap(), None);
        // Truncated or hostile input is an error.
        for cut in 1..out.len() - 2 {
            let mut r = &out[..cut];
            let mut prev = Entry::missing(Vec::new());
            let _ = decode(&mut r, &mut prev, true).and_then(|_| decode(&mut r, &mut prev, true));
        }
    }

    #[test]
    fn sorted_like_the_receiver() {
        let mut v = vec![
            e("sub", S_IFDIR),
            e("a/x", S_IFREG),
            e("link", S_IFLNK),
            e("a.b", S_IFDIR),
            e("z.txt", S_IFREG),
            e(".", S_IFDIR),
            e("a", S_IFDIR),
            e("sub/c.txt", S_IFREG),
            e("a.txt", S_IFREG),
        ];
        v.sort_by(cmp);
        let names: Vec<&str> = v
            .iter()
            .map(|e| std::str::from_utf8(&e.name).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                ".",
                "a.txt",
                "link",
                "z.txt",
                "a.b",
                "a",
                "a/x",
                "sub",
                "sub/c.txt"
            ]
        );
    }

    /// The entries of capture c2_delete_noinc, byte for byte.
    #[test]
    fn encodes_like_stock_rsync() {
        let mut out = Vec::new();
        let dot = Entry {
            size: 4096,
            mtime: 1704067200,
            flags: XMIT_TOP_DIR,
            ..e(".", 0o040755)
        };
        encode(&mut out, 0, &dot, true, true).unwrap();
        assert_eq!(
            out,
            [
                0x01, 0x01, 0x2e, 0x00, 0x00, 0x10, 0x65, 0x80, 0x00, 0x92, 0xed, 0x41, 0x00, 0x00,
                0x00, 0x00
            ]
        );
        let mut out = Vec::new();
        let link = Entry {
            size: 5,
            mtime: 1704067200,
            link: Some(b"a.txt".to_vec()),
            ..e("link", 0o120777)
        };
        encode(&mut out, 1, &link, true, false).unwrap();
        assert_eq!(
            out,
            [
                0x04, 0x04, b'l', b'i', b'n', b'k', 0x00, 0x05, 0x00, 0x65, 0x80, 0x00, 0x92, 0xff,
                0xa1, 0x00, 0x00, 0x05, b'a', b'.', b't', b'x', b't'
            ]
        );
    }
}
