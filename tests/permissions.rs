//! Permissions as another user: with `-o allow_other`, a non-root user
//! gets through the mount exactly the access SOURCE's modes give them on a
//! plain directory, and what they create is theirs. Each case runs as user
//! nobody (via setpriv) in a plain directory and in the mount; output,
//! exit status and the resulting trees must be identical.
#![cfg(target_os = "linux")]

mod common;

use std::os::unix::fs::{PermissionsExt, chown};
use std::path::Path;
use std::process::Command;

use replicafs::fixture::Fixture;

const NOBODY: u32 = 65534;
/// A group nobody is given as a supplementary group in some cases.
const USERS: u32 = 100;

/// Lays out the same starting tree (as root) under `root`.
fn setup(root: &Path) {
    let mode = |p: &str, m: u32| {
        std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(m)).unwrap()
    };
    for (name, m) in [
        ("secret", 0o600),
        ("public", 0o644),
        ("world", 0o666),
        ("exec", 0o755),
    ] {
        std::fs::write(root.join(name), format!("{name}\n")).unwrap();
        mode(name, m);
    }
    for (name, m) in [
        ("ro_dir", 0o755),
        ("shared", 0o777),
        ("sticky", 0o1777),
        ("private", 0o700),
        ("sgid", 0o2777),
        ("group_dir", 0o770),
    ] {
        std::fs::create_dir(root.join(name)).unwrap();
        mode(name, m);
    }
    std::fs::write(root.join("ro_dir/f"), "f\n").unwrap();
    std::fs::write(root.join("private/f"), "f\n").unwrap();
    std::fs::write(root.join("sticky/roots"), "r\n").unwrap();
    mode("sticky/roots", 0o666);
    chown(root.join("sgid"), None, Some(USERS)).unwrap();
    chown(root.join("group_dir"), None, Some(USERS)).unwrap();
    // A file nobody owns, for owner-only operations.
    std::fs::write(root.join("mine"), "mine\n").unwrap();
    chown(root.join("mine"), Some(NOBODY), Some(NOBODY)).unwrap();
    mode("mine", 0o644);
}

/// Shell commands run as nobody, one at a time; each line's output and
/// exit status are recorded.
const CASES: &[&str] = &[
    "cat secret",
    "cat public",
    "echo x >> public",
    "echo x >> world && cat world",
    "./exec --help >/dev/null 2>&1; echo ran",
    "ls ro_dir && cat ro_dir/f",
    "touch ro_dir/new",
    "rm ro_dir/f",
    "ls private",
    "cat private/f",
    "touch shared/made && stat -c '%U:%G %a' shared/made",
    "mkdir shared/dir && stat -c '%U:%G %a' shared/dir",
    "mkdir -m 0700 shared/priv && stat -c '%a' shared/priv",
    "ln -s ../public shared/link && stat -c '%U:%G' -L shared/link && readlink shared/link",
    "ln public shared/hard",
    "ln mine shared/hard_mine && stat -c '%h' mine",
    "mkfifo shared/fifo && stat -c '%U:%G %F' shared/fifo",
    "mv shared/made shared/moved && ls shared",
    "rm sticky/roots",
    "echo y >> sticky/roots && cat sticky/roots",
    "touch sticky/own && rm sticky/own && echo removed",
    "touch sgid/f && stat -c '%U:%G' sgid/f",
    "mkdir sgid/d && stat -c '%U:%G %A' sgid/d",
    "touch group_dir/f && stat -c '%U:%G' group_dir/f",
    "chmod 600 public",
    "chmod 4755 mine && stat -c '%a' mine",
    "chmod 2755 mine && stat -c '%a' mine",
    "chmod 644 mine && stat -c '%a' mine",
    "chown root mine",
    "chgrp users mine",
    "touch -d @1000000000 public",
    "touch -d @1000000000 mine && stat -c '%Y' mine",
    "touch world && echo touched",
    "truncate -s 0 public",
    "truncate -s 3 world && cat world",
    "setfattr -n user.x -v 1 public",
    "setfattr -n user.x -v 1 mine && getfattr -n user.x --only-values mine",
    "setfattr -n trusted.x -v 1 mine",
    "rm public",
    "rmdir ro_dir",
    "umask 077 && touch shared/masked && stat -c '%a' shared/masked",
    "umask 000 && mkdir shared/open && stat -c '%a' shared/open",
    "test -r secret; echo r=$?; test -w world; echo w=$?; test -x exec; echo x=$?",
];

fn run_as_nobody(root: &Path, script: &str, groups: &str) -> String {
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            groups,
            "--",
            "sh",
            "-c",
            script,
        ])
        .current_dir(root)
        .env("LC_ALL", "C")
        .output()
        .expect("run setpriv");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s.push_str(&format!("[exit {}]", out.status.code().unwrap_or(-1)));
    s
}

#[test]
fn other_users_get_exactly_the_source_modes() {
    if !common::is_root() {
        eprintln!("SKIPPED: permission tests switch users and need root");
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("setpriv (util-linux) is required under CI=true");
        }
        eprintln!("SKIPPED: setpriv not installed");
        return;
    }
    let Some(fx) = common::mount(
        Fixture::builder()
            .options("allow_other")
            .unwrap()
            .world_traversable(),
    ) else {
        return;
    };
    let plain = tempfile::tempdir().unwrap();
    std::fs::set_permissions(plain.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    setup(plain.path());
    setup(fx.mnt());
    // The cases must really run as nobody, or the comparison proves nothing.
    let denied = run_as_nobody(plain.path(), "cat secret", "--clear-groups");
    assert!(denied.contains("Permission denied"), "{denied}");
    let mut diffs = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        // Alternate: with and without a supplementary group.
        let groups = if i % 2 == 0 {
            "--clear-groups"
        } else {
            "--groups=100"
        };
        let groups = if case.contains("group_dir") {
            "--groups=100"
        } else {
            groups
        };
        let want = run_as_nobody(plain.path(), case, groups);
        let got = run_as_nobody(fx.mnt(), case, groups);
        if want != got {
            diffs.push(format!("$ {case}\n  plain: {want:?}\n  mount: {got:?}"));
        }
    }
    assert!(diffs.is_empty(), "as user nobody:\n{}", diffs.join("\n"));
    let owned = std::fs::symlink_metadata(fx.source().join("shared/dir")).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&owned),
            std::os::unix::fs::MetadataExt::gid(&owned)
        ),
        (NOBODY, NOBODY),
        "a directory nobody made through the mount must be nobody's in SOURCE"
    );
    common::assert_same_tree(
        "SOURCE vs plain directory after the user's changes",
        &common::snapshot(plain.path(), false),
        &common::snapshot(fx.source(), false),
    );
}
