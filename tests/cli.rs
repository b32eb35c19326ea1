//! The command line: every invalid invocation is refused with exit 2 and
//! one line naming the problem, never a panic; `mount --daemon`, foreground
//! mounts, signals and `unmount` work end to end with the real binary.
#![cfg(target_os = "linux")]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Dirs, mounted};

fn bin() -> Command {
    common::bin("warn")
}

/// Runs `args`, expects exit 2 and a single stderr line containing `needle`.
fn refused(args: &[&str], needle: &str) {
    let out = bin().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?}: exit {:?}, stderr {err}",
        out.status
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: stderr does not name the problem ({needle:?}):\n{err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: not one line:\n{err}"
    );
    assert!(err.starts_with("replicafs"), "{args:?}: {err}");
}

#[test]
fn invalid_invocations_exit_2_naming_the_problem() {
    let d = Dirs::new();
    let (src, mnt, state) = (d.s("src"), d.s("mnt"), d.s("state"));
    std::fs::write(d.root.join("file"), b"x").unwrap();
    let file = d.s("file");
    let replica = d.s("replica");
    let m = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["mount".into()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            m(&["/nonexistent/src", &mnt, "--target", &replica]),
            "source /nonexistent/src does not exist",
        ),
        (
            m(&[&file, &mnt, "--target", &replica]),
            "is not a directory",
        ),
        (
            m(&[&src, "/nonexistent/mnt", "--target", &replica]),
            "mountpoint /nonexistent/mnt does not exist",
        ),
        (m(&[&src, &file, "--target", &replica]), "mountpoint"),
        (
            m(&[&src, &mnt, "--target", &format!("{src}/inner")]),
            "is inside the source",
        ),
        (m(&[&src, &mnt, "--target", &src]), "is the source itself"),
        (
            m(&[&src, &mnt, "--target", &d.s("")]),
            "contains the source",
        ),
        (
            m(&[&src, &mnt, "--target", &format!("{mnt}/x")]),
            "inside the mountpoint",
        ),
        (
            m(&[&src, &mnt, "--target", &file]),
            "exists and is not a directory",
        ),
        (
            m(&[&src, &mnt, "--target", &replica, "--target", &replica]),
            "given twice",
        ),
        (
            m(&[&src, &mnt, "--target", &replica, "-o", "allow_other,bogus"]),
            "unknown mount option 'bogus'",
        ),
        (
            m(&[&src, &mnt, "--target", &replica, "-o", "threads=0"]),
            "threads",
        ),
        (m(&[&src, &mnt, "--target", "rsync://host"]), "no module"),
        (
            m(&[&src, &mnt, "--target", "rsync://host/../etc"]),
            "module '..' is not a module name",
        ),
        (
            m(&[&src, &mnt, "--target", "rsync://host/./x"]),
            "module '.' is not a module name",
        ),
        (
            m(&[&src, &mnt, "--target", "rsync://host:70000/mod"]),
            "port '70000'",
        ),
        (
            m(&[&src, &mnt, "--target", &replica, "--max-lag", "soon"]),
            "'soon' is not a duration",
        ),
        (
            m(&[&src, &mnt, "--target", &replica, "--max-lag", "1s"]),
            "--max-lag only applies",
        ),
        (
            m(&[
                &src,
                &mnt,
                "--target",
                &replica,
                "--consistency",
                "sometimes",
            ]),
            "sometimes",
        ),
        (
            m(&[&src, &mnt, "--target", &replica, "--io", "magic"]),
            "magic",
        ),
        (
            m(&[
                &src,
                &mnt,
                "--target",
                &replica,
                "--consistency",
                "sync",
                "-o",
                "writeback_cache",
            ]),
            "writeback_cache",
        ),
        (
            m(&[
                &src,
                &mnt,
                "--target",
                &replica,
                "--password-file",
                "/nonexistent/pw",
            ]),
            "password file /nonexistent/pw",
        ),
        (m(&[&src, &mnt]), "--target"),
        (
            m(&[
                &src,
                &mnt,
                "--target",
                &replica,
                "--state-dir",
                &format!("{src}/st"),
            ]),
            "state dir",
        ),
        (vec!["sync".into(), src.clone()], "is not mounted"),
        (
            vec!["sync".into(), "/nonexistent".into()],
            "mountpoint /nonexistent",
        ),
        (
            vec!["status".into(), src.clone(), "--json".into()],
            "is not mounted",
        ),
        (vec!["unmount".into(), src.clone()], "is not mounted"),
        (
            vec!["unmount".into(), "/proc".into()],
            "not a replicafs mount",
        ),
        (vec!["verify".into(), file.clone(), src.clone()], "source"),
        (
            vec!["verify".into(), src.clone(), "rsync://h".into()],
            "no module",
        ),
        (
            vec!["verify".into(), src.clone(), "rsync://h/..".into()],
            "module '..' is not a module name",
        ),
        (vec!["bogus".into()], "bogus"),
        (vec![], "no command given"),
    ];
    // Mountpoint inside the source, and a non-empty mountpoint.
    std::fs::create_dir(d.root.join("src/inner_mnt")).unwrap();
    let inner = d.s("src/inner_mnt");
    refused(
        &["mount", &src, &inner, "--target", &replica],
        "is inside the source",
    );
    let full = d.s("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(d.root.join("full/x"), b"").unwrap();
    refused(
        &["mount", &src, &full, "--target", &replica],
        "is not empty",
    );
    // A password file others can read.
    let pw = d.root.join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    refused(
        &[
            "mount",
            &src,
            &mnt,
            "--target",
            "rsync://h/m",
            "--password-file",
            &pw.to_string_lossy(),
            "--state-dir",
            &state,
        ],
        "must not be accessible by group or others",
    );
    for (args, needle) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&args, needle);
    }
    assert!(
        !Path::new(&replica).exists(),
        "a refused mount created the target"
    );
}

#[test]
fn mounting_on_an_existing_mount_is_refused() {
    let Some(fx) = common::fixture() else { return };
    let d = Dirs::new();
    refused(
        &[
            "mount",
            &d.s("src"),
            &fx.mnt().to_string_lossy(),
            "--target",
            &d.s("replica"),
        ],
        "is already a mount",
    );
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn daemon_mount_is_live_on_return_and_unmount_takes_it_down() {
    if replicafs::fixture::fuse_available().is_err() {
        common::fixture(); // prints the reason, or fails under CI
        return;
    }
    let d = Dirs::new();
    std::fs::write(d.root.join("src/hello"), b"hello\n").unwrap();
    let out = ok(bin()
        .args(d.mount_args("replica", &["--daemon", "--create-target"]))
        .output()
        .unwrap());
    // Live on return: no polling here.
    assert!(mounted(&d.root.join("mnt")));
    assert_eq!(std::fs::read(d.root.join("mnt/hello")).unwrap(), b"hello\n");
    std::fs::write(d.root.join("mnt/new"), b"through the mount").unwrap();
    assert_eq!(
        std::fs::read(d.root.join("src/new")).unwrap(),
        b"through the mount"
    );
    assert!(
        d.root.join("replica").is_dir(),
        "the directory target is created with --create-target"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("mounted at"));
    let entry = replicafs::mountinfo::find(&d.root.join("mnt"))
        .unwrap()
        .unwrap();
    assert_eq!(entry.fstype, "fuse.replicafs");
    assert_eq!(entry.source, d.s("src"));
    // Commands that need the mount see it as ours.
    let st = bin().args(["status", &d.s("mnt")]).output().unwrap();
    assert!(!String::from_utf8_lossy(&st.stderr).contains("not mounted"));
    ok(bin().args(["unmount", &d.s("mnt")]).output().unwrap());
    assert!(!mounted(&d.root.join("mnt")));
    assert!(
        std::fs::read_dir(d.root.join("mnt"))
            .unwrap()
            .next()
            .is_none()
    );
    assert!(
        d.root.join("state/replicafs.log").is_file(),
        "the daemon logs to the state dir"
    );
}

#[test]
fn foreground_mount_unmounts_cleanly_on_sigterm_and_sigint() {
    if replicafs::fixture::fuse_available().is_err() {
        common::fixture();
        return;
    }
    for (sig, busy) in [
        (rustix::process::Signal::TERM, false),
        (rustix::process::Signal::INT, false),
        (rustix::process::Signal::TERM, true),
    ] {
        let d = Dirs::new();
        let mut child = bin()
            .args(d.mount_args("replica", &["--create-target"]))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mnt = d.root.join("mnt");
        wait_until("the mount", Duration::from_secs(10), || mounted(&mnt));
        std::fs::write(mnt.join("f"), b"x").unwrap();
        // A file held open keeps a plain unmount from succeeding: the mount
        // is then detached and the process ends when the file is closed.
        let held = busy.then(|| std::fs::File::open(mnt.join("f")).unwrap());
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
        wait_until("the unmount", Duration::from_secs(10), || !mounted(&mnt));
        drop(held);
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "mount process did not exit after {sig:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(
            status.success(),
            "{sig:?} busy={busy}: exit {status:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(std::fs::read(d.root.join("src/f")).unwrap(), b"x");
    }
}

#[test]
fn help_and_version_exit_0() {
    for args in [&["--help"][..], &["--version"], &["mount", "--help"]] {
        let out = bin().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
}

/// Everything under `root`, relative, sorted: to see that a refused
/// command created nothing.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Inputs that used to be taken silently, or refused in words that did not
/// say what was wrong: each is refused with exit 2 and one line naming the
/// mistake, and creates nothing (no target, no state dir, no directory
/// named after a mistyped URL in the working directory).
#[test]
fn bad_inputs_are_named_and_create_nothing() {
    let d = Dirs::new();
    let (src, mnt) = (d.s("src"), d.s("mnt"));
    let state = d.s("new-state");
    let missing = d.s("new-replica");
    let pw = d.s("no-such-password-file");
    let mount = |target: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "mount",
            &src,
            &mnt,
            "--target",
            target,
            "--state-dir",
            &state,
        ]
        .map(String::from)
        .to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (mount("rsync:/host/mod", &[]), "write rsync://host/mod"),
        (mount("rsync:host/mod", &[]), "write rsync://host/mod"),
        (mount("backup:/srv/data", &[]), "HOST:PATH"),
        (mount("nas::", &[]), "no module"),
        (mount("nas::../x", &[]), "module '..' is not a module name"),
        (
            mount(&missing, &[]),
            "does not exist (create it, or give --create-target)",
        ),
        (
            mount("rsync://h/m", &["--password-file", &pw]),
            "password file",
        ),
        (
            mount(&missing, &["--consistency", "async", "--max-lag", "-1s"]),
            "'-1s' is a negative duration",
        ),
        (
            vec!["sync".into(), mnt.clone(), "--timeout".into(), "-5m".into()],
            "'-5m' is a negative duration",
        ),
        (
            vec!["verify".into(), src.clone(), "rsync:/host/mod".into()],
            "write rsync://host/mod",
        ),
    ];
    let before = tree(&d.root);
    for (args, needle) in &cases {
        let out = bin().args(args).current_dir(&d.root).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: not one line:\n{err}"
        );
        assert!(
            err.contains(needle),
            "{args:?}: does not say {needle:?}:\n{err}"
        );
        assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
        assert_eq!(tree(&d.root), before, "{args:?} created something");
    }
    // The OS error of a bad password file is said once.
    let out = bin()
        .args(mount("rsync://h/m", &["--password-file", &pw]))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    // rsync's own HOST::MODULE form is an rsync target.
    let out = bin()
        .args(["verify", &src, "nas::mirror/data"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("verify against rsync:// targets"), "{err}");
}
