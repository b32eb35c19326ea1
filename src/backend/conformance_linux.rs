//! The conformance case only Linux can set up here: a full target (a
//! small tmpfs) is an error from every backend, never a short copy
//! reported as done.

use std::fs::File;

use super::conformance::source;
use super::test_backends as backends;

#[test]
fn a_full_target_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let (src, _) = source(d.path());
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED ENOSPC case: mounting a small tmpfs needs root");
        return;
    }
    let small = d.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount tmpfs");
    for b in backends() {
        let dst = File::create(small.join(b.name())).unwrap();
        let e = b.copy_ranges(&src, &dst, &[(0, 4 << 20)]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{}: {e}", b.name());
        drop(dst);
        std::fs::remove_file(small.join(b.name())).unwrap();
    }
    std::process::Command::new("umount")
        .arg(&small)
        .status()
        .unwrap();
}
