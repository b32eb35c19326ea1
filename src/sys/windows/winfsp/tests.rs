//! The adapter's translation, driven directly with real files (WinFsp's
//! driver cannot run under wine, its DLL can): each request becomes the
//! `Vfs` calls it should, and errors the NTSTATUS they should.

use std::path::Path;

use super::*;
use crate::sys::passthrough::Passthrough;

fn adapter() -> (tempfile::TempDir, WinFspAdapter<Passthrough>) {
    // The directory buffers live in WinFsp's DLL (user mode; it loads
    // under wine beside the test executable, as CI puts it there).
    crate::sys::load_winfsp().expect("winfsp-x64.dll beside the test executable");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    let core = Passthrough::new(&dir.path().join("src")).unwrap();
    (dir, WinFspAdapter::new(Arc::new(core)))
}

fn p(s: &str) -> winfsp::U16CString {
    wide_path(s)
}

fn code(r: winfsp::Result<impl Sized>) -> i32 {
    match r {
        Err(FspError::NTSTATUS(c)) => c,
        Err(e) => panic!("not an NTSTATUS: {e:?}"),
        Ok(_) => 0,
    }
}

const WRITE: u32 = FILE_WRITE_DATA;

#[test]
fn create_write_read_and_sizes() {
    let (dir, a) = adapter();
    let src = dir.path().join("src");
    let (d, _) = a.create_path(&p("\\d"), FILE_DIRECTORY_FILE, 0).unwrap();
    assert!(src.join("d").is_dir());
    a.close_ctx(d);
    let (f, attr) = a
        .create_path(&p("\\d\\f.txt"), 0, FILE_ATTRIBUTE_NORMAL)
        .unwrap();
    assert_eq!(attr.size, 0);
    let mut info = FileInfo::default();
    assert_eq!(
        a.write(&f, b"hello", 0, false, false, &mut info).unwrap(),
        5
    );
    assert_eq!(info.file_size, 5);
    // Appending (write to end of file) lands after what is there.
    assert_eq!(
        a.write(&f, b" world", 0, true, false, &mut info).unwrap(),
        6
    );
    // Paging I/O never extends the file.
    assert_eq!(
        a.write(&f, b"XXXXXXXX", 8, false, true, &mut info).unwrap(),
        3
    );
    assert_eq!(std::fs::read(src.join("d/f.txt")).unwrap(), b"hello woXXX");
    let mut buf = [0u8; 64];
    assert_eq!(a.read(&f, &mut buf, 6).unwrap(), 5);
    assert_eq!(&buf[..5], b"woXXX");
    assert_eq!(code(a.read(&f, &mut buf, 100)), STATUS_END_OF_FILE);
    a.set_file_size(&f, 4, false, &mut info).unwrap();
    assert_eq!(info.file_size, 4);
    // A larger allocation changes nothing; a smaller one cuts the file.
    a.set_file_size(&f, 1 << 20, true, &mut info).unwrap();
    assert_eq!(info.file_size, 4);
    a.set_file_size(&f, 2, true, &mut info).unwrap();
    assert_eq!(std::fs::read(src.join("d/f.txt")).unwrap(), b"he");
    a.flush(Some(&f), &mut info).unwrap();
    a.close_ctx(f);

    // Opening again, and overwrite (truncate on open).
    let (f, attr) = a.open_path(&p("\\D\\F.TXT"), WRITE).unwrap();
    assert_eq!(attr.size, 2, "names are case-insensitive");
    a.overwrite(&f, FILE_ATTRIBUTE_NORMAL, false, 0, None, &mut info)
        .unwrap();
    assert_eq!(info.file_size, 0);
    a.close_ctx(f);
    assert_eq!(std::fs::read(src.join("d/f.txt")).unwrap(), b"");
    assert_eq!(a.vfs().inode_count(), 1, "every lookup was given back");
}

#[test]
fn names_and_paths_map_to_their_statuses() {
    let (_dir, a) = adapter();
    assert_eq!(
        code(a.open_path(&p("\\missing"), 0).map_err(|e| status(&e))),
        STATUS_OBJECT_NAME_NOT_FOUND
    );
    assert_eq!(
        code(a.open_path(&p("\\missing\\x"), 0).map_err(|e| status(&e))),
        STATUS_OBJECT_PATH_NOT_FOUND
    );
    for bad in ["\\..\\outside", "\\f:stream", "\\.\\x"] {
        assert_eq!(
            code(a.create_path(&p(bad), 0, 0).map_err(|e| status(&e))),
            STATUS_OBJECT_NAME_INVALID,
            "{bad}"
        );
    }
    let (f, _) = a.create_path(&p("\\f"), 0, 0).unwrap();
    assert_eq!(
        code(a.create_path(&p("\\f"), 0, 0).map_err(|e| status(&e))),
        STATUS_OBJECT_NAME_COLLISION
    );
    a.close_ctx(f);
    // The one mapping function, on raw codes and on kinds.
    let of = |e: io::Error| ntstatus_of(&e);
    assert_eq!(
        of(io::Error::from_raw_os_error(145)),
        STATUS_DIRECTORY_NOT_EMPTY
    );
    assert_eq!(
        of(io::Error::from_raw_os_error(32)),
        STATUS_SHARING_VIOLATION
    );
    assert_eq!(
        of(crate::error::context("x", io::Error::from_raw_os_error(5))),
        STATUS_ACCESS_DENIED
    );
    assert_eq!(
        of(io::Error::from(io::ErrorKind::Unsupported)),
        STATUS_NOT_SUPPORTED
    );
    assert_eq!(of(io::Error::other("journal")), STATUS_UNEXPECTED_IO_ERROR);
    assert_eq!(a.vfs().inode_count(), 1);
}

#[test]
fn rename_replace_delete_and_attributes() {
    let (dir, a) = adapter();
    let src = dir.path().join("src");
    let mut info = FileInfo::default();
    for name in ["\\a", "\\b"] {
        let (f, _) = a.create_path(&p(name), 0, 0).unwrap();
        a.write(&f, name.as_bytes(), 0, false, false, &mut info)
            .unwrap();
        a.close_ctx(f);
    }
    let (sub, _) = a.create_path(&p("\\sub"), FILE_DIRECTORY_FILE, 0).unwrap();
    a.close_ctx(sub);

    let (f, _) = a.open_path(&p("\\a"), 0).unwrap();
    assert_eq!(
        code(a.rename(&f, &p("\\a"), &p("\\b"), false)),
        STATUS_OBJECT_NAME_COLLISION
    );
    a.rename(&f, &p("\\a"), &p("\\sub\\a2"), false).unwrap();
    assert!(src.join("sub/a2").is_file());
    a.close_ctx(f);
    let (f, _) = a.open_path(&p("\\sub\\a2"), 0).unwrap();
    a.rename(&f, &p("\\sub\\a2"), &p("\\b"), true).unwrap();
    a.close_ctx(f);
    assert_eq!(std::fs::read(src.join("b")).unwrap(), b"\\a");

    // Times and the read-only attribute.
    let (f, _) = a.open_path(&p("\\b"), WRITE).unwrap();
    let when = 133_000_000_000_000_000u64; // 2022-06-19
    a.set_basic_info(&f, FILE_ATTRIBUTE_READONLY, 0, when, when, 0, &mut info)
        .unwrap();
    assert_eq!(info.last_write_time, when);
    assert_ne!(info.file_attributes & FILE_ATTRIBUTE_READONLY, 0);
    let m = std::fs::metadata(src.join("b")).unwrap();
    assert!(m.permissions().readonly());
    assert_eq!(filetime(m.modified().unwrap()), when);
    a.set_basic_info(&f, FILE_ATTRIBUTE_NORMAL, 0, 0, 0, 0, &mut info)
        .unwrap();
    assert!(
        !std::fs::metadata(src.join("b"))
            .unwrap()
            .permissions()
            .readonly()
    );
    a.close_ctx(f);

    // A directory with entries cannot be marked for deletion; a file is
    // deleted at cleanup.
    let (f, _) = a.create_path(&p("\\sub\\x"), 0, 0).unwrap();
    a.close_ctx(f);
    let (sub, _) = a.open_path(&p("\\sub"), 0).unwrap();
    assert_eq!(
        code(a.set_delete(&sub, &p("\\sub"), true)),
        STATUS_DIRECTORY_NOT_EMPTY
    );
    let (x, _) = a.open_path(&p("\\sub\\x"), 0).unwrap();
    a.set_delete(&x, &p("\\sub\\x"), true).unwrap();
    a.cleanup(
        &x,
        Some(&p("\\sub\\x")),
        FspCleanupFlags::FspCleanupDelete as u32,
    );
    a.close_ctx(x);
    a.set_delete(&sub, &p("\\sub"), true).unwrap();
    a.cleanup(
        &sub,
        Some(&p("\\sub")),
        FspCleanupFlags::FspCleanupDelete as u32,
    );
    a.close_ctx(sub);
    assert!(!src.join("sub").exists());
    assert_eq!(a.vfs().inode_count(), 1);
}

#[test]
fn directories_list_with_attributes() {
    let (dir, a) = adapter();
    let src = dir.path().join("src");
    std::fs::create_dir(src.join("d")).unwrap();
    std::fs::write(src.join("d/one"), b"1").unwrap();
    std::fs::write(src.join("d/two"), b"22").unwrap();
    let (root, _) = a.open_path(&p("\\"), 0).unwrap();
    let names: Vec<String> = a
        .entries(&root)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n.to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["d"], "no . and .. at the root");
    let (d, _) = a.open_path(&p("\\d"), 0).unwrap();
    let mut e = a.entries(&d).unwrap();
    e.sort_by(|x, y| x.0.cmp(&y.0));
    let sizes: Vec<(String, u64)> = e
        .iter()
        .map(|(n, at)| (n.to_string_lossy().into_owned(), at.size))
        .collect();
    assert_eq!(sizes[2..], [("one".into(), 1), ("two".into(), 2)]);
    a.close_ctx(d);
    a.close_ctx(root);
    assert!(Path::new(&src).is_dir());
    assert_eq!(a.vfs().inode_count(), 1);
}
