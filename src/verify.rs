//! `replicafs verify SOURCE TARGET`: compares two trees and reports every
//! difference, one line each: names, file types, sizes, contents, modes,
//! owners, mtimes (files, symlinks and directories), symlink targets,
//! xattrs and hard-link structure. Nothing is followed out of either tree.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::replica::tree::{Tree, is_dir, is_file, is_symlink, mode_of};
use crate::sys::{self, Access, Meta, S_IFMT};

/// Every difference between `a` and `b`, as lines `"path: what"`.
pub fn compare(a: &Path, b: &Path) -> io::Result<Vec<String>> {
    let ta = Tree::open(a)?;
    let tb = Tree::open(b)?;
    let mut out = Vec::new();
    let mut links_a: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut links_b: HashMap<(u64, u64), PathBuf> = HashMap::new();
    walk(
        &ta,
        &tb,
        Path::new(""),
        &mut out,
        &mut links_a,
        &mut links_b,
    )?;
    Ok(out)
}

fn show(rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        ".".into()
    } else {
        rel.display().to_string()
    }
}

fn kind(st: &Meta) -> &'static str {
    match mode_of(st) & S_IFMT {
        0o040000 => "directory",
        0o100000 => "file",
        0o120000 => "symlink",
        0o010000 => "fifo",
        0o140000 => "socket",
        0o020000 => "char device",
        0o060000 => "block device",
        _ => "unknown",
    }
}

fn key(st: &Meta) -> (u64, u64) {
    st.key()
}

fn walk(
    ta: &Tree,
    tb: &Tree,
    rel: &Path,
    out: &mut Vec<String>,
    links_a: &mut HashMap<(u64, u64), PathBuf>,
    links_b: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let (Some(sa), Some(sb)) = (ta.lstat(rel)?, tb.lstat(rel)?) else {
        return Ok(());
    };
    let p = show(rel);
    if kind(&sa) != kind(&sb) {
        out.push(format!(
            "{p}: type differs ({} vs {})",
            kind(&sa),
            kind(&sb)
        ));
        return Ok(());
    }
    if mode_of(&sa) & 0o7777 != mode_of(&sb) & 0o7777 && !is_symlink(&sa) {
        out.push(format!(
            "{p}: mode differs ({:o} vs {:o})",
            mode_of(&sa) & 0o7777,
            mode_of(&sb) & 0o7777
        ));
    }
    if sa.uid != sb.uid || sa.gid != sb.gid {
        out.push(format!(
            "{p}: owner differs ({}:{} vs {}:{})",
            sa.uid, sa.gid, sb.uid, sb.gid
        ));
    }
    if sa.mtime != sb.mtime {
        out.push(format!(
            "{p}: mtime differs ({}.{:09} vs {}.{:09})",
            sa.mtime.sec, sa.mtime.nsec, sb.mtime.sec, sb.mtime.nsec
        ));
    }
    if !is_symlink(&sa) && ta.xattrs(rel)? != tb.xattrs(rel)? {
        out.push(format!("{p}: xattrs differ"));
    }
    if !is_dir(&sa) && (sa.nlink > 1 || sb.nlink > 1) {
        let fa = links_a
            .entry(key(&sa))
            .or_insert_with(|| rel.to_path_buf())
            .clone();
        let fb = links_b
            .entry(key(&sb))
            .or_insert_with(|| rel.to_path_buf())
            .clone();
        if fa != fb {
            out.push(format!(
                "{p}: hard links differ (linked to {} vs {})",
                show(&fa),
                show(&fb)
            ));
        }
    }
    if is_symlink(&sa) {
        let la = ta.readlink(rel)?;
        let lb = tb.readlink(rel)?;
        if la != lb {
            let (la, lb) = (sys::path_from_bytes(&la), sys::path_from_bytes(&lb));
            out.push(format!("{p}: symlink target differs ({la:?} vs {lb:?})"));
        }
    } else if is_file(&sa) {
        if sa.size != sb.size {
            out.push(format!("{p}: size differs ({} vs {})", sa.size, sb.size));
        } else if !same_contents(
            &ta.open_file(rel, Access::Read, None)?,
            &tb.open_file(rel, Access::Read, None)?,
        )? {
            out.push(format!("{p}: contents differ"));
        }
    } else if !is_file(&sa) && !is_dir(&sa) && sa.rdev != sb.rdev {
        out.push(format!("{p}: device number differs"));
    } else if is_dir(&sa) {
        let na: Vec<OsString> = ta.list(rel)?;
        let nb: Vec<OsString> = tb.list(rel)?;
        for n in &na {
            if nb.binary_search(n).is_err() {
                out.push(format!(
                    "{}: only in {}",
                    show(&rel.join(n)),
                    ta.root().display()
                ));
            }
        }
        for n in &nb {
            if na.binary_search(n).is_err() {
                out.push(format!(
                    "{}: only in {}",
                    show(&rel.join(n)),
                    tb.root().display()
                ));
            }
        }
        for n in na.iter().filter(|n| nb.binary_search(n).is_ok()) {
            walk(ta, tb, &rel.join(n), out, links_a, links_b)?;
        }
    }
    Ok(())
}

fn same_contents(a: &File, b: &File) -> io::Result<bool> {
    let mut x = vec![0u8; 1 << 20];
    let mut y = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let n = sys::read_at(a, &mut x, off)?;
        let mut m = 0;
        while m < n {
            let k = sys::read_at(b, &mut y[m..n], off + m as u64)?;
            if k == 0 {
                return Ok(false);
            }
            m += k;
        }
        if x[..n] != y[..n] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(sys::read_at(b, &mut y[..1], off)? == 0);
        }
        off += n as u64;
    }
}
