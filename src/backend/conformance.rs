//! One conformance suite for every fast-I/O backend on this platform: the
//! same ranges must give byte-identical targets and the same byte counts
//! as the portable reference, through zero-length ranges, ranges past the
//! end, holes, pieces larger than a backend's buffer pool, and errors.
//! It lives in the library, not in tests/, so that it builds and runs on
//! every OS with nothing else of the crate: on Windows (under wine in CI)
//! with IOCP, on macOS with the macOS backend.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};

use crate::error::errno_of;

use super::TEST_NO_RIGHT as NO_RIGHT;
use super::test_backends as backends;

fn write_all_at(f: &mut File, buf: &[u8], offset: u64) {
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(buf).unwrap();
}

/// 5 MiB of data, a hole, then 1 MiB more at 20 MiB: 21 MiB in all.
pub(super) fn source(dir: &std::path::Path) -> (File, Vec<u8>) {
    let mut model = vec![0u8; 21 << 20];
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let (head, tail) = model.split_at_mut(20 << 20);
    for b in head[..5 << 20].iter_mut().chain(tail.iter_mut()) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("src"))
        .unwrap();
    write_all_at(&mut f, &model[..5 << 20], 0);
    write_all_at(&mut f, &model[20 << 20..], 20 << 20);
    (f, model)
}

fn ranges() -> Vec<(u64, u64)> {
    let mut r = vec![
        (0, 0),
        (10, 4106),
        ((1 << 20) - 5, (3 << 20) + 7),
        ((19 << 20) + 1, (20 << 20) + 4096),
        ((20 << 20) + 100, 40 << 20),
    ];
    // 1,000 scattered 4 KiB ranges, some overlapping the above.
    for i in 0..1000u64 {
        let at = (i * 7919 * 4096) % (21 << 20);
        r.push((at, at + 4096));
    }
    r
}

fn expected(model: &[u8], ranges: &[(u64, u64)], dst_len: usize) -> Vec<u8> {
    let mut out = vec![0u8; dst_len];
    for &(s, e) in ranges {
        let e = e.min(model.len() as u64);
        if s < e {
            let (s, e) = (s as usize, e as usize);
            if out.len() < e {
                out.resize(e, 0);
            }
            out[s..e].copy_from_slice(&model[s..e]);
        }
    }
    out
}

#[test]
fn every_backend_matches_the_model_byte_for_byte() {
    let d = tempfile::tempdir().unwrap();
    let (src, model) = source(d.path());
    let ranges = ranges();
    let want = expected(&model, &ranges, 0);
    let mut counts = Vec::new();
    for b in backends() {
        let path = d.path().join(format!("dst-{}", b.name()));
        let dst = File::create(&path).unwrap();
        let n = b.copy_ranges(&src, &dst, &ranges).unwrap();
        drop(dst);
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), want.len(), "{}: size", b.name());
        assert!(got == want, "{}: bytes differ from the model", b.name());
        counts.push((b.name(), n));
    }
    assert!(
        counts.windows(2).all(|w| w[0].1 == w[1].1),
        "byte counts differ: {counts:?}"
    );
    // A copy larger than io_uring's 32 MiB pool in one range.
    let big = vec![(0u64, 64u64 << 20)];
    for b in backends() {
        let path = d.path().join(format!("big-{}", b.name()));
        let dst = File::create(&path).unwrap();
        b.copy_ranges(&src, &dst, &big).unwrap();
        drop(dst);
        assert!(
            std::fs::read(&path).unwrap() == model,
            "{}: whole copy",
            b.name()
        );
    }
}

#[test]
fn errors_are_reported_not_swallowed() {
    let d = tempfile::tempdir().unwrap();
    let (src, _) = source(d.path());
    std::fs::write(d.path().join("ro"), b"").unwrap();
    for b in backends() {
        let ro = File::open(d.path().join("ro")).unwrap();
        let e = b.copy_ranges(&src, &ro, &[(0, 8192)]).unwrap_err();
        assert_eq!(
            errno_of(&e),
            NO_RIGHT,
            "{}: a read-only target: {e}",
            b.name()
        );
        drop(ro);
        // The other way round: a source that cannot be read.
        let wo = OpenOptions::new()
            .write(true)
            .open(d.path().join("src"))
            .unwrap();
        let dst = File::create(d.path().join(format!("dst-{}", b.name()))).unwrap();
        let e = b.copy_ranges(&wo, &dst, &[(0, 8192)]).unwrap_err();
        assert_eq!(
            errno_of(&e),
            NO_RIGHT,
            "{}: a write-only source: {e}",
            b.name()
        );
    }
}

#[test]
fn a_file_that_shrinks_is_copied_up_to_its_new_end() {
    let d = tempfile::tempdir().unwrap();
    let (src, model) = source(d.path());
    src.set_len(3 << 20).unwrap();
    for b in backends() {
        let path = d.path().join(format!("dst-{}", b.name()));
        let dst = File::create(&path).unwrap();
        let n = b.copy_ranges(&src, &dst, &[(0, 10 << 20)]).unwrap();
        assert_eq!(n, 3 << 20, "{}", b.name());
        drop(dst);
        assert!(
            std::fs::read(&path).unwrap() == model[..3 << 20],
            "{}",
            b.name()
        );
    }
}
