//! Fast-I/O backends head to head, source file → target file, in one run:
//! 1 GiB made of scattered 1 MiB ranges (every other MiB of a 2 GiB file),
//! and 100,000 scattered 4 KiB ranges, with `portable`, `uring` and
//! `copy_file_range`; the page cache is dropped before each run (root).
//!
//! Run: `cargo bench --bench fastio` (results: docs/benchmarks.md).

#[cfg(target_os = "linux")]
mod linux {
    use std::fs::{File, OpenOptions};
    use std::os::unix::fs::FileExt;
    use std::path::Path;
    use std::time::Instant;

    use replicafs::backend::{CopyRange, FastIo, Portable, Uring};

    const SRC_SIZE: u64 = 2 << 30;

    fn drop_caches() -> bool {
        rustix::fs::sync();
        std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
    }

    fn make_source(path: &Path) -> File {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        if f.metadata().unwrap().len() != SRC_SIZE {
            let chunk: Vec<u8> = (0..1 << 20).map(|i| (i * 31 % 251) as u8).collect();
            for i in 0..(SRC_SIZE >> 20) {
                f.write_all_at(&chunk, i << 20).unwrap();
            }
            f.sync_all().unwrap();
        }
        f
    }

    fn run(
        b: &dyn FastIo,
        src: &File,
        dir: &Path,
        ranges: &[(u64, u64)],
        cold: bool,
    ) -> (f64, u64) {
        let dst_path = dir.join(format!("dst-{}", b.name()));
        let _ = std::fs::remove_file(&dst_path);
        let dst = File::create(&dst_path).unwrap();
        if cold {
            drop_caches();
        }
        let t = Instant::now();
        let n = b.copy_ranges(src, &dst, ranges).unwrap();
        dst.sync_all().unwrap();
        (t.elapsed().as_secs_f64(), n)
    }

    pub fn main() {
        let dir = std::env::var_os("FASTIO_DIR")
            .map(Into::into)
            .unwrap_or_else(|| std::path::PathBuf::from("/var/tmp/replicafs-fastio"));
        std::fs::create_dir_all(&dir).unwrap();
        let src = make_source(&dir.join("src"));
        let big: Vec<(u64, u64)> = (0..1024u64)
            .map(|i| ((i * 2) << 20, (i * 2 + 1) << 20))
            .collect();
        let small: Vec<(u64, u64)> = (0..100_000u64)
            .map(|i| {
                let block = (i * 5) % (SRC_SIZE / 4096);
                (block * 4096, block * 4096 + 4096)
            })
            .collect();
        let mut backends: Vec<Box<dyn FastIo>> =
            vec![Box::new(Portable::new()), Box::new(CopyRange)];
        match Uring::new() {
            Ok(u) => backends.push(Box::new(u)),
            Err(why) => println!("uring unavailable: {why}"),
        }
        let cold = drop_caches();
        println!(
            "| workload | backend | cold (page cache dropped{}) | warm |\n|---|---|---|---|",
            if cold { "" } else { ": not permitted, so warm" }
        );
        for (name, ranges, bytes) in [
            ("1 GiB in scattered 1 MiB ranges", &big, 1u64 << 30),
            ("100,000 scattered 4 KiB ranges", &small, 100_000 * 4096),
        ] {
            for b in &backends {
                let mut c = Vec::new();
                let mut w = Vec::new();
                for _ in 0..3 {
                    let (t, n) = run(b.as_ref(), &src, &dir, ranges, true);
                    assert_eq!(n, bytes);
                    c.push(t);
                    let (t, _) = run(b.as_ref(), &src, &dir, ranges, false);
                    w.push(t);
                }
                c.sort_by(f64::total_cmp);
                w.sort_by(f64::total_cmp);
                let mbps = |t: f64| bytes as f64 / t / 1e6;
                println!(
                    "| {name} | {} | {:.0} MB/s ({:.3} s) | {:.0} MB/s ({:.3} s) |",
                    b.name(),
                    mbps(c[1]),
                    c[1],
                    mbps(w[1]),
                    w[1]
                );
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the fast-I/O benchmark covers the Linux backends");
}
