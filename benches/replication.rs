//! Replication latency and memory, measured in-process with the mounted
//! fixture (a real FUSE mount with a local directory target):
//!
//! - `overwrite`: a 4 KiB overwrite in the middle of a 1 GiB file, timed
//!   from the write's return until the target holds the new bytes;
//! - `small-files`: 10,000 × 4 KiB files created through the mount until
//!   all are on the target (barrier), against creating them natively;
//! - `extents`: 1,000,000 scattered small writes to one file, reporting the
//!   process's peak RSS (the dirty-extent set is capped, so it stays bounded).
//!
//! Run: `cargo bench --bench replication -- [overwrite|small-files|extents]...`
//! (all three by default; root, /dev/fuse). Results: docs/benchmarks.md.

#[cfg(target_os = "linux")]
mod linux {
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use replicafs::fixture::Fixture;

    fn median(v: &mut [f64]) -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    }

    fn peak_rss_mib() -> f64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
            / 1024.0
    }

    /// Waits until `target` holds `want` at `offset`; returns how long it took.
    fn until_on_target(target: &Path, offset: u64, want: &[u8], limit: Duration) -> Duration {
        let start = Instant::now();
        let mut buf = vec![0u8; want.len()];
        loop {
            if let Ok(f) = File::open(target) {
                if f.read_at(&mut buf, offset).is_ok_and(|n| n == want.len()) && buf == want {
                    return start.elapsed();
                }
            }
            if start.elapsed() > limit {
                panic!("the target did not get the change within {limit:?}");
            }
            std::hint::spin_loop();
        }
    }

    fn overwrite() {
        let fx = Fixture::new().expect("mount (needs root and /dev/fuse)");
        let size: u64 = 1 << 30;
        let path = fx.mnt().join("big");
        let f = File::create(&path).unwrap();
        let chunk = vec![0x5au8; 1 << 20];
        for i in 0..(size >> 20) {
            f.write_all_at(&chunk, i << 20).unwrap();
        }
        fx.sync().unwrap();
        let mut to_target = Vec::new();
        let mut with_sync = Vec::new();
        for rep in 0..20u64 {
            let data = vec![rep as u8 ^ 0xa5; 4096];
            let off = size / 2 + rep * 8192;
            f.write_all_at(&data, off).unwrap();
            to_target.push(
                until_on_target(
                    &fx.target().join("big"),
                    off,
                    &data,
                    Duration::from_secs(60),
                )
                .as_secs_f64()
                    * 1e3,
            );
            let data = vec![rep as u8 ^ 0x3c; 4096];
            f.write_all_at(&data, off + 4096).unwrap();
            let t = Instant::now();
            fx.sync().unwrap();
            with_sync.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let diffs = fx.verify().unwrap();
        assert!(diffs.is_empty(), "{diffs:?}");
        println!(
            "overwrite: 4 KiB in a 1 GiB file: on the target after {:.3} ms (median of 20, max {:.3} ms); \
         write + barrier (fsync'd on the target) {:.3} ms median",
            median(&mut to_target.clone()),
            to_target.iter().cloned().fold(0.0, f64::max),
            median(&mut with_sync)
        );
    }

    fn small_files() {
        let n = 10_000;
        let data = vec![7u8; 4096];
        let plain = tempfile::tempdir().unwrap();
        let t = Instant::now();
        for i in 0..n {
            std::fs::write(plain.path().join(format!("f{i:05}")), &data).unwrap();
        }
        let native = t.elapsed().as_secs_f64();
        let fx = Fixture::new().expect("mount (needs root and /dev/fuse)");
        let t = Instant::now();
        for i in 0..n {
            std::fs::write(fx.mnt().join(format!("f{i:05}")), &data).unwrap();
        }
        let written = t.elapsed().as_secs_f64();
        fx.sync().unwrap();
        let replicated = t.elapsed().as_secs_f64();
        assert_eq!(std::fs::read_dir(fx.target()).unwrap().count(), n);
        println!(
            "small-files: {n} x 4 KiB: native {native:.3} s; through the mount {written:.3} s, \
         all on the target (fsync'd) after {replicated:.3} s"
        );
    }

    fn extents() {
        let n: u64 = std::env::var("EXTENTS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000_000);
        let fx = Fixture::new().expect("mount (needs root and /dev/fuse)");
        let f = File::create(fx.mnt().join("scattered")).unwrap();
        let before = peak_rss_mib();
        let t = Instant::now();
        // Every other 4 KiB block of an 8 GiB sparse file, in a shuffled order,
        // so no two writes coalesce.
        let blocks = n;
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for i in 0..blocks {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = (i.wrapping_mul(0x9e3779b1) ^ (x & 0xff)) % blocks;
            f.write_all_at(b"x", b * 8192).unwrap();
        }
        let wrote = t.elapsed().as_secs_f64();
        fx.sync().unwrap();
        println!(
            "extents: {n} scattered 1-byte writes in {wrote:.1} s; peak RSS of the process (test + mount + engine) \
         {:.1} MiB (before {before:.1} MiB)",
            peak_rss_mib()
        );
    }

    pub fn main() {
        let args: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect();
        let all = args.is_empty();
        let want = |name: &str| all || args.iter().any(|a| a == name);
        if want("overwrite") {
            overwrite();
        }
        if want("small-files") {
            small_files();
        }
        if want("extents") {
            extents();
        }
    }
}

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the replication benchmark needs Linux (FUSE with a directory target)");
}
