//! The Windows core against real files (run under wine here): names are
//! resolved one component at a time below SOURCE and never past it.

use std::ffi::OsStr;
use std::path::Path;

use super::*;

const CTX: Ctx = Ctx {
    uid: 0,
    gid: 0,
    pid: 0,
};

fn core() -> (tempfile::TempDir, Passthrough) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    let p = Passthrough::new(&dir.path().join("src")).unwrap();
    (dir, p)
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn names(p: &Passthrough, ino: Ino) -> Vec<String> {
    let o = p.opendir(&CTX, ino, 0).unwrap();
    let mut out = Vec::new();
    p.readdir(&CTX, ino, o.fh, 0, &mut |e| {
        out.push(e.name.to_string_lossy().into_owned());
        false
    })
    .unwrap();
    p.releasedir(&CTX, ino, o.fh).unwrap();
    out.sort();
    out
}

#[test]
fn names_that_leave_the_directory_are_refused() {
    let (dir, p) = core();
    std::fs::write(dir.path().join("outside"), b"secret").unwrap();
    for bad in [
        "..",
        ".",
        "",
        "..\\outside",
        "../outside",
        "a/b",
        "f:stream",
        "nul\0",
    ] {
        let e = p.lookup(&CTX, ROOT_INO, os(bad)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(ERROR_INVALID_NAME), "{bad:?}: {e}");
        let e = p
            .create(&CTX, ROOT_INO, os(bad), 0o644, libc::O_WRONLY)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(ERROR_INVALID_NAME), "{bad:?}: {e}");
    }
    let f = p.mknod(&CTX, ROOT_INO, os("f"), 0o100644, 0).unwrap();
    for bad in ["..\\x", "x:y"] {
        let e = p
            .rename(&CTX, ROOT_INO, os("f"), ROOT_INO, os(bad), 0)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(ERROR_INVALID_NAME), "{bad:?}: {e}");
        let e = p.link(&CTX, f.ino(), ROOT_INO, os(bad)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(ERROR_INVALID_NAME), "{bad:?}: {e}");
    }
    assert!(!dir.path().join("x").exists());
    assert_eq!(names(&p, ROOT_INO), [".", "..", "f"]);
}

#[test]
fn files_are_created_written_read_renamed_and_removed() {
    let (dir, p) = core();
    let src = dir.path().join("src");
    let d = p.mkdir(&CTX, ROOT_INO, os("d"), 0o755).unwrap();
    assert_eq!(d.attr.kind, FileKind::Dir);
    let (e, o) = p
        .create(&CTX, d.ino(), os("f"), 0o644, libc::O_RDWR | libc::O_EXCL)
        .unwrap();
    assert!(o.created);
    assert_eq!(p.write(&CTX, e.ino(), o.fh, 0, b"hello").unwrap(), 5);
    assert_eq!(p.write(&CTX, e.ino(), o.fh, 10, b"world").unwrap(), 5);
    let mut buf = [0u8; 32];
    let n = p.read(&CTX, e.ino(), o.fh, 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello\0\0\0\0\0world");
    assert_eq!(p.getattr(&CTX, e.ino(), Some(o.fh)).unwrap().size, 15);
    p.release(&CTX, e.ino(), o.fh).unwrap();
    assert_eq!(
        std::fs::read(src.join("d/f")).unwrap(),
        b"hello\0\0\0\0\0world"
    );

    // O_EXCL on an existing name fails; without it the file is opened.
    assert!(
        p.create(&CTX, d.ino(), os("f"), 0o644, libc::O_RDWR | libc::O_EXCL)
            .is_err()
    );
    let (again, o) = p
        .create(&CTX, d.ino(), os("f"), 0o644, libc::O_RDWR)
        .unwrap();
    assert!(!o.created);
    assert_eq!(again.ino(), e.ino(), "one file, one inode");
    p.release(&CTX, e.ino(), o.fh).unwrap();

    // Truncate through setattr, then times.
    let when = UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    let a = p
        .setattr(
            &CTX,
            e.ino(),
            None,
            &SetAttr {
                size: Some(3),
                mtime: Some(SetTime::At(when)),
                ..SetAttr::default()
            },
        )
        .unwrap();
    assert_eq!(a.size, 3);
    assert_eq!(a.mtime, when);
    assert_eq!(std::fs::read(src.join("d/f")).unwrap(), b"hel");

    // Rename across directories, over an existing name, and refused with
    // NOREPLACE.
    std::fs::write(src.join("g"), b"old").unwrap();
    p.rename(&CTX, d.ino(), os("f"), ROOT_INO, os("moved"), 0)
        .unwrap();
    assert!(!src.join("d/f").exists());
    p.rename(&CTX, ROOT_INO, os("moved"), ROOT_INO, os("g"), 0)
        .unwrap();
    assert_eq!(std::fs::read(src.join("g")).unwrap(), b"hel");
    std::fs::write(src.join("h"), b"h").unwrap();
    assert!(
        p.rename(&CTX, ROOT_INO, os("g"), ROOT_INO, os("h"), RENAME_NOREPLACE)
            .is_err()
    );
    assert_eq!(std::fs::read(src.join("h")).unwrap(), b"h");
    // The inode kept its identity through the renames.
    let g = p.lookup(&CTX, ROOT_INO, os("g")).unwrap();
    assert_eq!(g.ino(), e.ino());

    // Hard links are one inode with two links (a file not renamed since
    // its lookup: wine links by the path a handle was opened under).
    std::fs::write(src.join("k"), b"k").unwrap();
    let k = p.lookup(&CTX, ROOT_INO, os("k")).unwrap();
    let l = p.link(&CTX, k.ino(), d.ino(), os("link")).unwrap();
    assert_eq!(l.ino(), k.ino());
    assert_eq!(l.attr.nlink, 2);
    assert_eq!(std::fs::read(src.join("d/link")).unwrap(), b"k");

    assert_eq!(names(&p, ROOT_INO), [".", "..", "d", "g", "h", "k"]);
    assert!(p.rmdir(&CTX, ROOT_INO, os("d")).is_err(), "not empty");
    p.unlink(&CTX, d.ino(), os("link")).unwrap();
    // Wine removes a deleted name only once every handle on the file is
    // closed (Windows's POSIX-semantics delete does it at once): let the
    // inode go first, as the adapter does when a file's last open ends.
    p.forget(k.ino(), 2);
    p.forget(d.ino(), 1);
    p.rmdir(&CTX, ROOT_INO, os("d")).unwrap();
    // Looked up three times (create twice, lookup once).
    p.forget(e.ino(), 3);
    p.unlink(&CTX, ROOT_INO, os("g")).unwrap();
    assert!(p.unlink(&CTX, ROOT_INO, os("g")).is_err());
    assert_eq!(p.inode_count(), 1, "only the root is left");
    assert_eq!(names(&p, ROOT_INO), [".", "..", "h", "k"]);
}

#[test]
fn names_match_case_insensitively_and_identity_follows_the_file() {
    let (dir, p) = core();
    let src = dir.path().join("src");
    std::fs::write(src.join("ReadMe.txt"), b"abc").unwrap();
    let a = p.lookup(&CTX, ROOT_INO, os("ReadMe.txt")).unwrap();
    let b = p.lookup(&CTX, ROOT_INO, os("README.TXT")).unwrap();
    assert_eq!(a.ino(), b.ino());
    let id = p.identity(a.ino()).unwrap();
    let read = |id: &crate::sys::Identity| {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut crate::sys::identity_open(id)?, &mut s)?;
        Ok::<_, std::io::Error>(s)
    };
    assert_eq!(read(&id).unwrap(), "abc");
    p.rename(&CTX, ROOT_INO, os("readme.txt"), ROOT_INO, os("other"), 0)
        .unwrap();
    // The engine's handle reads the file under its new name: Windows
    // reopens the file object, whatever its name now. Wine reopens by the
    // Unix path the handle was opened under, which the rename (made
    // through another handle) left stale.
    match read(&id) {
        Ok(s) => assert_eq!(s, "abc"),
        Err(e) => assert!(
            under_wine() && e.kind() == std::io::ErrorKind::NotFound,
            "reopen after a rename: {e}"
        ),
    }
    let m = crate::sys::identity_stat(&id).unwrap().unwrap();
    assert_eq!(m.size, 3);
    assert!(m.is_file());
    p.unlink(&CTX, ROOT_INO, os("other")).unwrap();
    // Windows counts the links of the file object; wine answers from the
    // (stale) path the handle was opened under, which still shows one.
    let gone = crate::sys::identity_stat(&id).unwrap();
    assert!(
        gone.is_none() || under_wine(),
        "a deleted file has no name left"
    );
    // forget drops the inode; a later lookup makes a new one.
    p.forget(a.ino(), 2);
    assert_eq!(p.inode_count(), 1, "only the root is left");
}

#[test]
fn read_only_attribute_is_the_write_bits() {
    let (dir, p) = core();
    let (e, o) = p
        .create(&CTX, ROOT_INO, os("ro"), 0o444, libc::O_RDWR)
        .unwrap();
    p.release(&CTX, e.ino(), o.fh).unwrap();
    assert_eq!(e.attr.perm, 0o444);
    assert!(
        std::fs::metadata(dir.path().join("src/ro"))
            .unwrap()
            .permissions()
            .readonly()
    );
    let a = p
        .setattr(
            &CTX,
            e.ino(),
            None,
            &SetAttr {
                mode: Some(0o644),
                ..SetAttr::default()
            },
        )
        .unwrap();
    assert_eq!(a.perm, 0o644);
    let e = p
        .setattr(
            &CTX,
            e.ino(),
            None,
            &SetAttr {
                uid: Some(1),
                ..SetAttr::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(ERROR_NOT_SUPPORTED));
}

/// Whether this runs under wine (ntdll exports `wine_get_version`): where
/// wine's emulation differs from Windows, the tests say so.
fn under_wine() -> bool {
    nt::is_wine()
}

#[test]
fn a_symlink_is_never_traversed() {
    let (dir, p) = core();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"s").unwrap();
    let link = dir.path().join("src/out");
    if let Err(e) = std::os::windows::fs::symlink_dir(&outside, &link) {
        // Creating symlinks needs a privilege on Windows; nothing to
        // check without one.
        eprintln!("skipped: cannot create a symlink here: {e}");
        return;
    }
    match p.lookup(&CTX, ROOT_INO, os("out")) {
        // Wine cannot open a Unix symlink itself (FILE_OPEN_REPARSE_POINT):
        // the link is unreachable, so nothing goes through it either.
        Err(e) => assert!(under_wine(), "lookup of the link itself: {e}"),
        Ok(l) => {
            let through = p.lookup(&CTX, l.ino(), os("secret"));
            assert!(through.is_err(), "looked up through a reparse point");
            assert!(p.opendir(&CTX, l.ino(), 0).is_err());
            assert_eq!(l.attr.kind, FileKind::Symlink);
            let target = p.readlink(&CTX, l.ino()).unwrap();
            let target = String::from_utf8_lossy(&target).into_owned();
            assert!(Path::new(&target).ends_with("outside"), "{target}");
        }
    }
}
