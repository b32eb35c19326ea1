//! O_DIRECT through the mount: databases and VM images (qemu `cache=none`)
//! open their files with O_DIRECT and use aligned buffers, offsets and
//! lengths. Their I/O must succeed through the mount, land in SOURCE and be
//! replicated like any other write.
#![cfg(target_os = "linux")]

mod common;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;

const PAGE: usize = 4096;

/// `len` bytes at a page-aligned address, as O_DIRECT wants, carved out of
/// a larger vector (its heap buffer never moves: it is never grown).
struct Aligned {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let buf = vec![0u8; len + PAGE];
        let start = buf.as_ptr().align_offset(PAGE);
        assert!(start < PAGE, "cannot align a heap buffer");
        Aligned { buf, start, len }
    }

    fn with(data: &[u8]) -> Self {
        let mut a = Aligned::new(data.len());
        a.bytes_mut().copy_from_slice(data);
        a
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// Bytes that differ per seed and position, so a misplaced block shows.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn open_direct(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

fn write_direct(f: &File, offset: u64, data: &[u8], model: &mut Vec<u8>) {
    let buf = Aligned::with(data);
    f.write_all_at(buf.bytes(), offset)
        .unwrap_or_else(|e| panic!("O_DIRECT write of {} bytes at {offset}: {e}", data.len()));
    let end = offset as usize + data.len();
    if model.len() < end {
        model.resize(end, 0);
    }
    model[offset as usize..end].copy_from_slice(data);
}

fn read_direct(f: &File, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = Aligned::new(len);
    let mut done = 0;
    while done < len {
        let n = f
            .read_at(&mut buf.bytes_mut()[done..], offset + done as u64)
            .unwrap_or_else(|e| panic!("O_DIRECT read of {len} bytes at {offset}: {e}"));
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.bytes()[..done].to_vec()
}

/// Reads the whole file through a fresh O_DIRECT descriptor.
fn read_all_direct(path: &Path) -> Vec<u8> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} O_RDONLY|O_DIRECT: {e}", path.display()));
    let mut out = Vec::new();
    loop {
        let chunk = read_direct(&f, out.len() as u64, 1 << 20);
        if chunk.is_empty() {
            return out;
        }
        out.extend_from_slice(&chunk);
    }
}

const SIZES: [usize; 4] = [512, 4096, 64 << 10, 1 << 20];
const OFFSETS: [u64; 5] = [0, 512, 4096, 3 * 4096 + 512, (1 << 20) + 4096];

fn check_file(fx: &replicafs::fixture::Fixture, name: &str, model: &[u8]) {
    let path = fx.mnt().join(name);
    assert!(
        read_all_direct(&path) == model,
        "{name}: O_DIRECT read through the mount differs from what was written"
    );
    let f = open_direct(&path, false).unwrap();
    for &size in &SIZES {
        for &off in &OFFSETS {
            let want =
                &model[(off as usize).min(model.len())..(off as usize + size).min(model.len())];
            assert!(
                read_direct(&f, off, size) == want,
                "{name}: O_DIRECT read of {size} bytes at {off} differs"
            );
        }
    }
    assert!(
        std::fs::read(fx.source().join(name)).unwrap() == model,
        "{name}: SOURCE differs from what was written"
    );
}

#[test]
fn direct_writes_and_reads_at_alignments_and_sizes() {
    let Some(fx) = common::fixture() else { return };
    alignments_and_sizes(&fx);
}

/// With `cached_writes` only the O_DIRECT opens bypass the kernel's page
/// cache; with `writeback_cache` the kernel would otherwise cache writes.
#[test]
fn direct_io_with_cached_writes_and_writeback_cache() {
    for opts in ["cached_writes", "writeback_cache"] {
        let builder = replicafs::fixture::Fixture::builder()
            .options(opts)
            .unwrap();
        let Some(fx) = common::mount(builder) else {
            return;
        };
        alignments_and_sizes(&fx);
    }
}

fn alignments_and_sizes(fx: &replicafs::fixture::Fixture) {
    let mut seed = 1;
    for &size in &SIZES {
        // Created with O_CREAT|O_DIRECT, then reopened with O_DIRECT.
        let name = format!("created-{size}");
        let path = fx.mnt().join(&name);
        let mut model = Vec::new();
        let f = open_direct(&path, true)
            .unwrap_or_else(|e| panic!("create {name} with O_CREAT|O_DIRECT: {e}"));
        for &off in &OFFSETS {
            seed += 1;
            write_direct(&f, off, &pattern(seed, size), &mut model);
        }
        drop(f);
        let f = open_direct(&path, false).unwrap();
        seed += 1;
        write_direct(&f, 512, &pattern(seed, size), &mut model);
        drop(f);
        check_file(fx, &name, &model);

        // An existing file written the ordinary way, then overwritten and
        // extended with O_DIRECT.
        let name = format!("existing-{size}");
        let path = fx.mnt().join(&name);
        seed += 1;
        let mut model = pattern(seed, 3 << 20);
        std::fs::write(&path, &model).unwrap();
        let f = open_direct(&path, false)
            .unwrap_or_else(|e| panic!("open existing {name} with O_DIRECT: {e}"));
        for &off in OFFSETS.iter().chain(&[3 << 20]) {
            seed += 1;
            write_direct(&f, off, &pattern(seed, size), &mut model);
        }
        drop(f);
        check_file(fx, &name, &model);
    }
    common::assert_replicated(fx, "O_DIRECT writes");
}

/// Several threads overwriting one file with O_DIRECT at once (the kernel
/// lets such writes run in parallel): every block lands, and the target
/// matches.
#[test]
fn parallel_direct_writers_on_one_file() {
    let Some(fx) = common::fixture() else { return };
    let path = fx.mnt().join("parallel");
    let blocks = 1024;
    let mut model = pattern(41, blocks * PAGE);
    std::fs::write(&path, &model).unwrap();
    let threads = 8;
    std::thread::scope(|s| {
        for t in 0..threads {
            let path = &path;
            s.spawn(move || {
                let f = open_direct(path, false).unwrap();
                let mut ignored = Vec::new();
                for b in (t..blocks).step_by(threads) {
                    let data = pattern(1000 + b as u64, PAGE);
                    write_direct(&f, (b * PAGE) as u64, &data, &mut ignored);
                }
            });
        }
    });
    for b in 0..blocks {
        model[b * PAGE..(b + 1) * PAGE].copy_from_slice(&pattern(1000 + b as u64, PAGE));
    }
    assert!(
        read_all_direct(&path) == model,
        "a block written in parallel is missing"
    );
    common::assert_replicated(&fx, "parallel O_DIRECT writers");
}

/// A descriptor that cached the file's pages sees what an O_DIRECT writer
/// wrote, as on a local file system.
#[test]
fn direct_write_is_seen_by_a_buffered_reader() {
    let Some(fx) = common::fixture() else { return };
    let path = fx.mnt().join("shared");
    let mut model = pattern(7, 256 << 10);
    std::fs::write(&path, &model).unwrap();
    let reader = File::open(&path).unwrap();
    let mut cached = vec![0u8; model.len()];
    reader.read_exact_at(&mut cached, 0).unwrap();
    assert!(cached == model);

    let f = open_direct(&path, false).unwrap();
    write_direct(&f, 64 << 10, &pattern(8, 64 << 10), &mut model);
    drop(f);

    reader.read_exact_at(&mut cached, 0).unwrap();
    assert!(
        cached == model,
        "a descriptor opened before still shows old pages"
    );
    assert!(
        std::fs::read(&path).unwrap() == model,
        "a new open shows old pages"
    );
    common::assert_replicated(&fx, "O_DIRECT over cached pages");
}

/// O_DIRECT switched on and off with fcntl(F_SETFL) on an open descriptor.
#[test]
fn direct_io_switched_on_with_fcntl() {
    let Some(fx) = common::fixture() else { return };
    let path = fx.mnt().join("setfl");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    let mut model = Vec::new();
    let flags = rustix::fs::fcntl_getfl(&f).unwrap();
    rustix::fs::fcntl_setfl(&f, flags | rustix::fs::OFlags::DIRECT).unwrap();
    write_direct(&f, 0, &pattern(11, 8192), &mut model);
    assert!(read_direct(&f, 0, 8192) == model);
    rustix::fs::fcntl_setfl(&f, flags).unwrap();
    // Unaligned again, as a buffered descriptor may be.
    f.write_all_at(b"tail", 8192).unwrap();
    model.extend_from_slice(b"tail");
    drop(f);
    assert!(read_all_direct(&path) == model);
    assert!(std::fs::read(fx.source().join("setfl")).unwrap() == model);
    common::assert_replicated(&fx, "O_DIRECT by fcntl");
}

fn dd(args: &[String]) {
    let out = Command::new("dd")
        .args(args)
        .output()
        .expect("run dd (coreutils)");
    assert!(
        out.status.success(),
        "dd {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The reproduction, and dd as a real program reading and writing
/// with O_DIRECT (including its final partial block, for which dd turns
/// O_DIRECT off with fcntl).
#[test]
fn dd_with_oflag_and_iflag_direct() {
    let Some(fx) = common::fixture() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let mnt = |name: &str| fx.mnt().join(name).to_string_lossy().into_owned();
    let here = |name: &str| scratch.path().join(name).to_string_lossy().into_owned();

    dd(&[
        "if=/dev/zero".into(),
        format!("of={}", mnt("zero")),
        "bs=4k".into(),
        "count=1".into(),
        "oflag=direct".into(),
    ]);
    assert_eq!(
        std::fs::read(fx.mnt().join("zero")).unwrap(),
        vec![0u8; 4096]
    );

    let input = pattern(21, (2 << 20) + 1000);
    std::fs::write(here("input"), &input).unwrap();
    dd(&[
        format!("if={}", here("input")),
        format!("of={}", mnt("image")),
        "bs=64k".into(),
        "oflag=direct".into(),
    ]);
    // Overwrite blocks 10..13 of the existing file in place.
    let patch = pattern(22, 3 * 4096);
    std::fs::write(here("patch"), &patch).unwrap();
    dd(&[
        format!("if={}", here("patch")),
        format!("of={}", mnt("image")),
        "bs=4k".into(),
        "seek=10".into(),
        "conv=notrunc".into(),
        "oflag=direct".into(),
    ]);
    let mut model = input;
    model[10 * 4096..13 * 4096].copy_from_slice(&patch);
    // O_DIRECT|O_DSYNC, as databases open their logs.
    dd(&[
        format!("if={}", here("patch")),
        format!("of={}", mnt("image")),
        "bs=4k".into(),
        "seek=100".into(),
        "conv=notrunc".into(),
        "oflag=direct,dsync".into(),
    ]);
    model[100 * 4096..103 * 4096].copy_from_slice(&patch);

    dd(&[
        format!("if={}", mnt("image")),
        format!("of={}", here("out")),
        "bs=64k".into(),
        "iflag=direct".into(),
    ]);
    assert!(
        std::fs::read(here("out")).unwrap() == model,
        "dd iflag=direct read other bytes"
    );
    dd(&[
        format!("if={}", mnt("zero")),
        format!("of={}", here("zero")),
        "bs=512".into(),
        "iflag=direct".into(),
    ]);
    assert_eq!(std::fs::read(here("zero")).unwrap(), vec![0u8; 4096]);
    assert!(std::fs::read(fx.source().join("image")).unwrap() == model);
    common::assert_replicated(&fx, "dd with O_DIRECT");
}

/// Bytes of `path` in the page cache, from util-linux's fincore.
fn resident(path: &Path) -> Option<u64> {
    let out = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// O_DIRECT reads through the mount do not leave a second copy of the data
/// in SOURCE's page cache, where SOURCE's file system can read uncached.
#[test]
fn direct_reads_leave_no_pages_in_source_cache() {
    let Some(fx) = common::fixture() else { return };
    let path = fx.mnt().join("cold");
    let data = pattern(31, 8 << 20);
    std::fs::write(&path, &data).unwrap();
    common::assert_replicated(&fx, "before reading");

    let source = File::open(fx.source().join("cold")).unwrap();
    let mut probe = [0u8; 4096];
    match rustix::io::preadv2(
        &source,
        &mut [io::IoSliceMut::new(&mut probe)],
        0,
        rustix::io::ReadWriteFlags::from_bits_retain(0x80),
    ) {
        Err(rustix::io::Errno::OPNOTSUPP) => {
            eprintln!("SKIPPED: this kernel or file system has no RWF_DONTCACHE");
            return;
        }
        r => {
            r.unwrap();
        }
    }
    source.sync_all().unwrap();
    rustix::fs::fadvise(&source, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    let Some(before) = resident(&fx.source().join("cold")) else {
        eprintln!("SKIPPED: no fincore (util-linux) to count cached pages");
        return;
    };
    assert_eq!(before, 0, "could not empty SOURCE's page cache of the file");

    assert!(read_all_direct(&path) == data);
    let after = resident(&fx.source().join("cold")).unwrap();
    assert!(
        after <= 1 << 20,
        "O_DIRECT reads left {after} bytes of the file in SOURCE's page cache"
    );
}
