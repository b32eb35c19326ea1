//! The state dir and the control socket against another local user: a
//! root daemon refuses a state dir others could write into, creates only
//! private files, never writes through a link planted in it, answers its
//! socket only to its owner (and root), bounds its connections, and drops
//! journal records that name paths outside the tree instead of retrying
//! them forever. The attacks run as user nobody.
#![cfg(target_os = "linux")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Dirs, mounted};

const NOBODY: u32 = 65534;

/// Set for the child that [`connect_as_child`] runs: the socket to try.
const CONNECT_ENV: &str = "REPLICAFS_TEST_CONNECT";

fn bin() -> Command {
    common::bin("info")
}

/// Root, FUSE and setpriv are needed; says loudly when they are missing.
fn can_run() -> bool {
    if replicafs::fixture::fuse_available().is_err() {
        common::fixture();
        return false;
    }
    if !common::is_root() {
        eprintln!("SKIPPED: state dir tests act as a second user and need root");
        return false;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("setpriv (util-linux) is required under CI=true");
        }
        eprintln!("SKIPPED: setpriv not installed");
        return false;
    }
    true
}

/// Unmounts (lazily if need be) whatever a test left mounted.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if mounted(&self.0) {
            let ok = bin()
                .args(["unmount", &self.0.to_string_lossy(), "--timeout", "10s"])
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.0).status();
            }
        }
    }
}

fn mount_args(d: &Dirs, state: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "mount".to_string(),
        d.s("src"),
        d.s("mnt"),
        "--target".into(),
        d.s("target"),
        "--state-dir".into(),
        state.to_string_lossy().into_owned(),
        "--daemon".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn mount(d: &Dirs, state: &Path) -> Output {
    bin().args(mount_args(d, state, &[])).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn mount_ok(d: &Dirs, state: &Path) {
    let out = mount(d, state);
    assert!(out.status.success(), "mount failed: {}", text(&out));
}

fn run_ok(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn unmount(d: &Dirs) {
    run_ok(&["unmount", &d.s("mnt")]);
}

/// A mount that must be refused: exit 2, stderr naming `needles`.
fn assert_refused(out: &Output, needles: &[&str]) {
    let all = text(out);
    assert_eq!(out.status.code(), Some(2), "not refused: {all}");
    for n in needles {
        assert!(all.contains(n), "the error does not say {n:?}: {all}");
    }
}

fn status_json(d: &Dirs) -> serde_json::Value {
    serde_json::from_str(&run_ok(&["status", &d.s("mnt"), "--json"])).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn set_mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// The test root and `state` reachable by every user, as a state dir
/// made by hand with `mkdir` is.
fn world_traversable(d: &Dirs) {
    set_mode(&d.root, 0o755);
    set_mode(&d.p("state"), 0o755);
}

#[test]
fn a_state_dir_owned_by_another_user_is_refused() {
    if !can_run() {
        return;
    }
    let d = Dirs::new();
    let _c = Cleanup(d.p("mnt"));
    world_traversable(&d);
    chown(d.p("state"), Some(NOBODY), Some(NOBODY)).unwrap();
    let out = mount(&d, &d.p("state"));
    assert_refused(&out, &[&d.s("state"), "belongs to uid 65534", "chown"]);
    assert!(!d.p("state/journal").exists());
}

#[test]
fn a_state_dir_or_journal_writable_by_others_is_refused() {
    if !can_run() {
        return;
    }
    let d = Dirs::new();
    let _c = Cleanup(d.p("mnt"));
    world_traversable(&d);
    set_mode(&d.p("state"), 0o777);
    let out = mount(&d, &d.p("state"));
    assert_refused(&out, &[&d.s("state"), "writable by", "chmod 700"]);
    // Group-writable is as bad; a sticky bit does not help a state dir.
    set_mode(&d.p("state"), 0o1775);
    assert_refused(&mount(&d, &d.p("state")), &["writable by"]);
    // The journal directory in an accepted state dir is held to the same.
    set_mode(&d.p("state"), 0o755);
    std::fs::create_dir(d.p("state/journal")).unwrap();
    set_mode(&d.p("state/journal"), 0o777);
    assert_refused(
        &mount(&d, &d.p("state")),
        &[&d.s("state/journal"), "chmod 700"],
    );
}

/// Every entry under `dir`: (path, mode, is a directory, is a socket).
fn entries(dir: &Path, out: &mut Vec<(PathBuf, u32, bool, bool)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        out.push((
            p.clone(),
            m.mode() & 0o7777,
            ft.is_dir(),
            std::os::unix::fs::FileTypeExt::is_socket(&ft),
        ));
        if ft.is_dir() {
            entries(&p, out);
        }
    }
}

/// Modes of everything in `state`; with `stopped`, also which files are
/// there (while the daemon runs, a temporary may stand for one).
fn assert_private(state: &Path, stopped: bool) {
    assert_eq!(mode(state), 0o700, "{}", state.display());
    let mut all = Vec::new();
    entries(state, &mut all);
    let mut bad = Vec::new();
    for (p, m, dir, _) in &all {
        let want = if *dir { 0o700 } else { 0o600 };
        if *m != want {
            bad.push(format!("{} is {m:04o}, not {want:04o}", p.display()));
        }
    }
    assert!(bad.is_empty(), "loose state files:\n{}", bad.join("\n"));
    let names: Vec<String> = all
        .iter()
        .map(|(p, ..)| p.strip_prefix(state).unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "journal/boot_id"), "{names:?}");
    if stopped {
        for f in [
            "journal",
            "journal/checkpoint",
            "lock",
            "targets",
            "replicafs.log",
        ] {
            assert!(names.iter().any(|n| n == f), "no {f} in {names:?}");
        }
    }
    assert_eq!(
        all.iter().any(|(.., sock)| *sock),
        !stopped,
        "control socket in {names:?}"
    );
}

#[test]
fn everything_the_daemon_creates_in_the_state_dir_is_private() {
    if !can_run() {
        return;
    }
    let d = Dirs::new();
    let _c = Cleanup(d.p("mnt"));
    // A state dir that does not exist yet, under a missing parent.
    let state = d.p("new/state");
    mount_ok(&d, &state);
    std::fs::write(d.p("mnt/f"), b"data").unwrap();
    run_ok(&["sync", &d.s("mnt")]);
    assert_private(&state, false);
    unmount(&d);
    assert_private(&state, true);
}

/// A root-owned 0600 file outside the state dir, for links to point at.
fn victim(d: &Dirs, name: &str) -> PathBuf {
    let p = d.p(name);
    std::fs::write(&p, format!("{name}: precious\n")).unwrap();
    set_mode(&p, 0o600);
    p
}

fn assert_untouched(v: &Path) {
    let name = v.file_name().unwrap().to_string_lossy();
    assert_eq!(
        std::fs::read_to_string(v).unwrap(),
        format!("{name}: precious\n"),
        "{} was written through a link",
        v.display()
    );
    assert_eq!(mode(v), 0o600, "{} changed mode", v.display());
}

fn plant(link: &Path, to: &Path) {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(to, link).unwrap();
}

#[test]
fn links_planted_as_temporary_files_are_not_written_through() {
    if !can_run() {
        return;
    }
    // Planted in a state dir the daemon accepts: O_NOFOLLOW and O_EXCL
    // hold even then (say a link left from before the dir was tightened).
    let d = Dirs::new();
    let _c = Cleanup(d.p("mnt"));
    let state = d.p("state");
    mount_ok(&d, &state);
    unmount(&d);
    let plants = [
        ("journal/boot_id.tmp", victim(&d, "v-boot")),
        ("journal/checkpoint.tmp", victim(&d, "v-checkpoint")),
        ("journal/clean.tmp", victim(&d, "v-clean")),
        ("targets.tmp", victim(&d, "v-targets")),
    ];
    for (name, v) in &plants {
        plant(&state.join(name), v);
    }
    mount_ok(&d, &state);
    std::fs::write(d.p("mnt/f"), b"data").unwrap();
    run_ok(&["sync", &d.s("mnt")]);
    unmount(&d);
    for (_, v) in &plants {
        assert_untouched(v);
    }
    // These two are written at every start (the others only when the
    // checkpoint moves or the stop was clean): the links were replaced.
    for name in ["journal/boot_id.tmp", "targets.tmp"] {
        assert!(
            !state.join(name).is_symlink(),
            "{name} is still a link after the run; log:\n{}",
            std::fs::read_to_string(state.join("replicafs.log")).unwrap_or_default()
        );
    }
    assert_eq!(std::fs::read(d.p("target/f")).unwrap(), b"data");
}

fn checkpoint(state: &Path) -> u64 {
    std::fs::read_to_string(state.join("journal/checkpoint"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn links_planted_as_segments_or_the_lock_are_refused() {
    if !can_run() {
        return;
    }
    let d = Dirs::new();
    let _c = Cleanup(d.p("mnt"));
    let state = d.p("state");
    mount_ok(&d, &state);
    std::fs::write(d.p("mnt/f"), b"data").unwrap();
    unmount(&d);
    let next = format!("journal/seg-{:020}.log", checkpoint(&state) + 1);
    for name in [
        // The segment the next run appends to.
        next.as_str(),
        // An old segment: its "torn tail" (the victim's bytes) would be cut.
        "journal/seg-00000000000000000000.log",
        "lock",
        "journal/checkpoint",
    ] {
        let v = victim(&d, "v");
        let link = state.join(name);
        let saved = std::fs::read(&link).ok();
        plant(&link, &v);
        let out = mount(&d, &state);
        assert_refused(&out, &[name, "symbolic link"]);
        assert_untouched(&v);
        std::fs::remove_file(&link).unwrap();
        if let Some(data) = saved {
            std::fs::write(&link, data).unwrap();
            set_mode(&link, 0o600);
        }
    }
    // Without the links the state dir works again.
    mount_ok(&d, &state);
    unmount(&d);
}

#[test]
fn another_user_cannot_hold_the_lock() {
    if !can_run() {
        return;
    }
    let d = Dirs::new();
    let _c = Cleanup(d.p("mnt"));
    world_traversable(&d);
    mount_ok(&d, &d.p("state"));
    unmount(&d);
    // nobody tries to take the lock and keep it.
    let mut holder = Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
            "flock",
            "-n",
            &d.s("state/lock"),
            "-c",
            "echo locked; exec sleep 60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let out = mount(&d, &d.p("state"));
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(line, "", "user nobody could take the state dir's lock");
    assert!(out.status.success(), "mount failed: {}", text(&out));
    unmount(&d);
}

/// Child half of [`connect_as`]: when run with [`CONNECT_ENV`] set, sends
/// `status` to that socket and prints what came back; otherwise nothing.
#[test]
fn connect_as_child() {
    let Some(path) = std::env::var_os(CONNECT_ENV) else {
        return;
    };
    match UnixStream::connect(&path) {
        Err(e) => println!("RESULT connect failed: {e}"),
        Ok(mut s) => {
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let _ = s.write_all(b"status\n");
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
            println!("RESULT reply: {:?}", reply.trim());
        }
    }
}

/// Connects to `socket` as `uid` from a child process and returns what it
/// saw.
fn connect_as(uid: u32, socket: &Path) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "connect_as_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CONNECT_ENV, socket)
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap();
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    all.lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r.to_string()))
        .unwrap_or_else(|| panic!("the child said nothing: {}", text(&out)))
}

#[test]
fn another_user_cannot_use_the_control_socket() {
    if !can_run() {
        return;
    }
    let d = Dirs::new();
    let _c = Cleanup(d.p("mnt"));
    world_traversable(&d);
    mount_ok(&d, &d.p("state"));
    let socket = d.p("state/control.sock");
    // The owner (root here) is answered.
    let mine = connect_as(0, &socket);
    assert!(mine.starts_with("reply: \"ok {"), "{mine}");
    // Others cannot connect: the socket is 0600.
    let theirs = connect_as(NOBODY, &socket);
    assert!(!theirs.contains("ok"), "nobody was answered: {theirs}");
    // Even through a loosened socket, the peer's uid is checked.
    set_mode(&socket, 0o666);
    let theirs = connect_as(NOBODY, &socket);
    assert!(
        theirs.starts_with("reply:") && !theirs.contains("ok"),
        "nobody was answered (or could not connect at all): {theirs}"
    );
    let mine = connect_as(0, &socket);
    assert!(mine.starts_with("reply: \"ok {"), "{mine}");
    unmount(&d);
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

#[test]
fn idle_control_connections_are_capped_and_time_out() {
    if !can_run() {
        return;
    }
    let d = Dirs::new();
    let _c = Cleanup(d.p("mnt"));
    mount_ok(&d, &d.p("state"));
    let pid = status_json(&d)["pid"].as_u64().unwrap() as u32;
    let socket = d.p("state/control.sock");
    let before = threads(pid);
    let idle: Vec<UnixStream> = (0..300)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    // Let the daemon accept them all.
    std::thread::sleep(Duration::from_millis(500));
    let during = threads(pid);
    assert!(
        during <= before + 40,
        "300 idle connections made {} threads ({before} before)",
        during - before
    );
    // One over the cap is told so at once.
    let mut extra = UnixStream::connect(&socket).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reply = String::new();
    let _ = extra.read_to_string(&mut reply);
    assert!(reply.starts_with("err "), "{reply:?}");
    // An idle connection is closed by the daemon after its read timeout.
    let start = Instant::now();
    let mut first = &idle[0];
    first
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = first.read_to_end(&mut buf);
    let waited = start.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "an idle connection stayed open {waited:?}"
    );
    drop(idle);
    // Once they are gone, the owner is answered again.
    let start = Instant::now();
    loop {
        let out = bin()
            .args(["status", &d.s("mnt"), "--json"])
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{}", text(&out));
        std::thread::sleep(Duration::from_millis(50));
    }
    let start = Instant::now();
    while threads(pid) > before + 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} threads",
            threads(pid)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    unmount(&d);
}

/// Appends records to the newest segment, as a crafted journal would.
fn append_records(state: &Path, ops: &[replicafs::journal::record::Op]) {
    let journal = state.join("journal");
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    segs.sort();
    // Past anything the last run may have left after its checkpoint.
    let first = checkpoint(state) + 1000;
    let mut buf = Vec::new();
    for (seq, op) in (first..).zip(ops) {
        replicafs::journal::record::encode(
            &replicafs::journal::record::Record {
                seq,
                op: op.clone(),
            },
            &mut buf,
        );
    }
    std::fs::OpenOptions::new()
        .append(true)
        .open(segs.last().unwrap())
        .unwrap()
        .write_all(&buf)
        .unwrap();
}

#[test]
fn a_journal_record_outside_the_tree_is_dropped_not_retried() {
    if !can_run() {
        return;
    }
    use replicafs::journal::record::{NodeKind, Op};
    let d = Dirs::new();
    let _c = Cleanup(d.p("mnt"));
    let state = d.p("state");
    mount_ok(&d, &state);
    std::fs::write(d.p("mnt/a"), b"a").unwrap();
    unmount(&d);
    // As after a crash in this boot (no clean marker), with two records
    // naming paths outside the tree after the checkpoint. (The marker may
    // be missing already: a late watch event for our own write can come
    // after the final drain.)
    let _ = std::fs::remove_file(state.join("journal/clean"));
    append_records(
        &state,
        &[
            Op::Write {
                path: "../outside/x".into(),
                offset: 0,
                len: 1,
            },
            Op::Create {
                path: "/etc/replicafs-test".into(),
                kind: NodeKind::File,
                mode: 0o644,
            },
            Op::Attr { path: "a".into() },
        ],
    );
    mount_ok(&d, &state);
    run_ok(&["sync", &d.s("mnt"), "--timeout", "20s"]);
    let v = status_json(&d);
    assert_eq!(v["invalid_records_dropped"], 2, "{v}");
    std::fs::write(d.p("mnt/b"), b"later").unwrap();
    run_ok(&["sync", &d.s("mnt"), "--timeout", "20s"]);
    assert_eq!(std::fs::read(d.p("target/b")).unwrap(), b"later");
    let start = Instant::now();
    while status_json(&d)["targets"][0]["state"] != "in_sync" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}",
            status_json(&d)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    unmount(&d);
    let log = std::fs::read_to_string(state.join("replicafs.log")).unwrap();
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("outside the tree"))
        .collect();
    assert_eq!(
        said.len(),
        1,
        "not one error for the dropped records:\n{log}"
    );
    assert!(said[0].contains("dropped=2"), "{}", said[0]);
    assert!(!d.p("outside").exists());
    assert!(!Path::new("/etc/replicafs-test").exists());
    // The next mount does not meet them again.
    mount_ok(&d, &state);
    run_ok(&["sync", &d.s("mnt"), "--timeout", "20s"]);
    unmount(&d);
}

#[test]
fn three_targets_checkpoint_without_errors() {
    if replicafs::fixture::fuse_available().is_err() {
        common::fixture();
        return;
    }
    let d = Dirs::new();
    let _c = Cleanup(d.p("mnt"));
    let state = d.p("state");
    let mut args = mount_args(&d, &state, &["--create-target"]);
    for t in ["t2", "t3"] {
        args.extend(["--target".to_string(), d.s(t)]);
    }
    let out = bin().args(&args).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for round in 0..30 {
        for i in 0..20 {
            std::fs::write(d.p(&format!("mnt/f{i}")), format!("{round}:{i}")).unwrap();
        }
        run_ok(&["sync", &d.s("mnt")]);
    }
    unmount(&d);
    for t in ["target", "t2", "t3"] {
        assert_eq!(
            std::fs::read_to_string(d.p(&format!("{t}/f7"))).unwrap(),
            "29:7"
        );
    }
    let log = std::fs::read_to_string(state.join("replicafs.log")).unwrap();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "errors logged:\n{}", errors.join("\n"));
}

#[test]
fn a_sync_that_gives_up_says_why() {
    if replicafs::fixture::fuse_available().is_err() {
        common::fixture();
        return;
    }
    let d = Dirs::new();
    let _c = Cleanup(d.p("mnt"));
    mount_ok(&d, &d.p("state"));
    run_ok(&["sync", &d.s("mnt")]);
    // The target goes away: what is written now cannot reach it.
    std::fs::rename(d.p("target"), d.p("target.away")).unwrap();
    std::fs::write(d.p("mnt/f"), b"stuck").unwrap();
    let start = Instant::now();
    let out = bin()
        .args(["sync", &d.s("mnt"), "--timeout", "2s"])
        .output()
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(15));
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    for needle in [
        "gave up after 2s",
        &format!("target {}: failing", d.s("target")),
        "pending ops",
        "last error: ",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    std::fs::rename(d.p("target.away"), d.p("target")).unwrap();
    run_ok(&["sync", &d.s("mnt")]);
    unmount(&d);
}
