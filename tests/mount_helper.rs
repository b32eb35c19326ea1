//! The mount(8) helper `mount/mount.fuse.replicafs`, run as mount(8) runs
//! it: `SOURCE MOUNTPOINT -o OPTIONS`. Its options become `replicafs mount`
//! flags (mount(8)/systemd ones are dropped), it returns only once the mount
//! is live, and a missing `target=` is refused by name.
#![cfg(target_os = "linux")]
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_replicafs");

fn helper_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mount/mount.fuse.replicafs")
}

/// The helper with `REPLICAFS_BIN` pointing at `bin`.
fn helper(bin: &Path) -> Command {
    let mut c = Command::new(helper_path());
    c.env("REPLICAFS_BIN", bin)
        .env("REPLICAFS_LOG", "warn")
        .env_remove("RSYNC_PASSWORD");
    c
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` with its output in files under `dir` (a daemon it starts
/// cannot hold a pipe open), killing it after `limit`: a helper that forgot
/// `--daemon` would otherwise hang the test in the foreground.
fn run_bounded(cmd: &mut Command, dir: &Path, limit: Duration) -> Output {
    let out_path = dir.join("helper.stdout");
    let err_path = dir.join("helper.stderr");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status: ExitStatus = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the helper did not return within {limit:?}; stderr: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: std::fs::read(&err_path).unwrap(),
    }
}

/// A fresh temporary directory, canonical (the mount table shows real paths).
fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::Builder::new()
        .prefix("replicafs-helper")
        .tempdir()
        .unwrap();
    let root = tmp.path().canonicalize().unwrap();
    (tmp, root)
}

fn mkdirs(root: &Path, names: &[&str]) {
    for n in names {
        std::fs::create_dir(root.join(n)).unwrap();
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// `\040`-style octal escapes, as in /proc/self/mountinfo and fstab.
fn unescape_octal(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let d = &b[i + 1..i + 4];
            if d.iter().all(|c| (b'0'..=b'7').contains(c)) {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The filesystem type mounted at `mountpoint` (the topmost mount), if any.
fn mounted_fstype(mountpoint: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines().rev().find_map(|line| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        let (left, right) = line.split_once(" - ")?;
        let mp = unescape_octal(left.split(' ').nth(4)?);
        let fstype = right.split(' ').next()?.to_string();
        (Path::new(&mp) == mountpoint).then_some(fstype)
    })
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn in_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(cmd).is_file()))
}

/// Why this process cannot make the test's FUSE mount, if it cannot.
fn fuse_unusable() -> Option<String> {
    let dev = Path::new("/dev/fuse");
    if !dev.exists() {
        return Some("/dev/fuse does not exist".into());
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        return Some(format!("cannot open /dev/fuse: {e}"));
    }
    if effective_uid() != Some(0) {
        if !in_path("fusermount3") {
            return Some("not root and fusermount3 is not in PATH (apt install fuse3)".into());
        }
        let conf = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
        if !conf.lines().any(|l| l.trim() == "user_allow_other") {
            return Some(
                "not root and /etc/fuse.conf lacks user_allow_other (the test mounts with allow_other)"
                    .into(),
            );
        }
    }
    None
}

/// Returns true (after printing why) when the test must be skipped; under
/// CI=true a machine that cannot mount is a failure instead.
fn skip_without_fuse() -> bool {
    let Some(why) = fuse_unusable() else {
        return false;
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("FUSE is required under CI=true: {why}");
    }
    eprintln!("SKIPPED: cannot mount FUSE here: {why}");
    true
}

/// Unmounts on drop if the test did not get that far (e.g. it panicked).
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        if mounted_fstype(&self.0).is_none() {
            return;
        }
        let ok = Command::new(BIN)
            .arg("unmount")
            .arg(&self.0)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            // Last resort, so a failed test does not leave a dead mount.
            let _ = Command::new("umount").arg("-l").arg(&self.0).output();
            let _ = Command::new("fusermount3").arg("-uz").arg(&self.0).output();
        }
    }
}

#[test]
fn helper_mounts_live_and_unmounts() {
    if skip_without_fuse() {
        return;
    }
    let (_tmp, root) = tempdir();
    mkdirs(&root, &["source", "mnt", "target", "state"]);
    let (source, mnt) = (root.join("source"), root.join("mnt"));
    let opts = format!(
        "target={},state_dir={},allow_other,noauto,x-systemd.automount,defaults",
        s(&root.join("target")),
        s(&root.join("state"))
    );

    // Declared after the temporary directory, so dropped before it.
    let _guard = MountGuard(mnt.clone());
    let out = run_bounded(
        helper(Path::new(BIN))
            .arg(&source)
            .arg(&mnt)
            .arg("-o")
            .arg(&opts),
        &root,
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "helper failed: {}", show(&out));

    // Live the moment the helper returns: no waiting, no retries.
    assert_eq!(
        mounted_fstype(&mnt).as_deref(),
        Some("fuse.replicafs"),
        "{} is not a fuse.replicafs mount after the helper returned; {}",
        mnt.display(),
        show(&out)
    );
    std::fs::write(mnt.join("through-the-mount"), b"hello via mount(8)\n").unwrap();
    assert_eq!(
        std::fs::read(source.join("through-the-mount")).unwrap(),
        b"hello via mount(8)\n",
        "a file written through the mount is not in SOURCE"
    );

    let un = Command::new(BIN).arg("unmount").arg(&mnt).output().unwrap();
    assert!(un.status.success(), "replicafs unmount: {}", show(&un));
    assert_eq!(mounted_fstype(&mnt), None, "still mounted after unmount");
    assert_eq!(
        std::fs::read(source.join("through-the-mount")).unwrap(),
        b"hello via mount(8)\n"
    );
}

#[test]
fn missing_target_is_refused_by_name() {
    let (_tmp, root) = tempdir();
    mkdirs(&root, &["source", "mnt"]);
    let out = helper(Path::new(BIN))
        .arg(root.join("source"))
        .arg(root.join("mnt"))
        .args(["-o", "allow_other,noauto,defaults"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "accepted without target=: {}",
        show(&out)
    );
    assert!(
        err.contains("target="),
        "does not name target=: {}",
        show(&out)
    );
    assert_eq!(mounted_fstype(&root.join("mnt")), None);
}

/// A stand-in binary that records its arguments, one per line.
fn recorder(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let log = dir.join("argv");
    let bin = dir.join("fake-replicafs");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > '{}'\n",
            s(&log)
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (bin, log)
}

#[test]
fn options_become_flags() {
    let (_tmp, root) = tempdir();
    let (bin, log) = recorder(&root);
    let out = helper(&bin)
        .args(["/srv/data", "/mnt/data", "-n", "-s", "-o"])
        .arg(concat!(
            r"target=/backup/one\040two,defaults,consistency=async,max_lag=2s,",
            r#"target="/backup/a,b",io=portable,state_dir=/var/lib/x,password_file=/etc/pw,create_target,"#,
            r"allow_other,noauto,nofail,_netdev,user,comment=hi,x-systemd.automount,noatime"
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let argv = std::fs::read_to_string(&log).unwrap();
    let want = [
        "mount",
        "/srv/data",
        "/mnt/data",
        "--target",
        "/backup/one two",
        "--consistency",
        "async",
        "--max-lag",
        "2s",
        "--target",
        "/backup/a,b",
        "--io",
        "portable",
        "--state-dir",
        "/var/lib/x",
        "--password-file",
        "/etc/pw",
        "--create-target",
        "-o",
        "allow_other,noatime",
        "--daemon",
    ];
    assert_eq!(argv.lines().collect::<Vec<_>>(), want);
}

#[test]
fn password_option_is_refused_without_echoing_it() {
    let (_tmp, root) = tempdir();
    let (bin, log) = recorder(&root);
    let out = helper(&bin)
        .args(["/srv/data", "/mnt/data", "-o", "target=/b,password=hunter2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(err.contains("password_file="), "{}", show(&out));
    assert!(!err.contains("hunter2"), "the password was echoed: {err}");
    assert!(!log.exists(), "the binary ran");
}
