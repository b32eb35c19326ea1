//! systemd readiness (`Type=notify`), with a test `NOTIFY_SOCKET`: the
//! foreground mount says READY=1 only once the mount answers and the
//! start-up reconcile is done, carries lag and queue depth in STATUS=,
//! pings WATCHDOG=1 while it runs, and says STOPPING=1 on SIGTERM before
//! it drains and exits 0.
#![cfg(target_os = "linux")]

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Dirs, mounted};

/// Every datagram that arrives within `within`, until `until` matches one.
fn receive(sock: &UnixDatagram, within: Duration, until: &str, got: &mut Vec<String>) -> bool {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < within {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = msg.lines().any(|l| l == until);
                got.push(msg);
                if hit {
                    return true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("notify socket: {e}"),
        }
    }
    false
}

#[test]
fn ready_status_watchdog_and_stopping_reach_the_service_manager() {
    if replicafs::fixture::fuse_available().is_err() {
        common::fixture();
        return;
    }
    let d = Dirs::new();
    // SOURCE already holds a tree: READY=1 must wait for the start-up
    // reconcile to have copied it.
    for i in 0..200 {
        std::fs::write(d.p(&format!("src/f{i}")), vec![i as u8; 10_000]).unwrap();
    }
    let sock_path = d.p("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // systemd names the watched process in WATCHDOG_PID: a shell that
    // execs the binary keeps its pid.
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_replicafs"))
        .args(d.mount_args("target", &[]))
        .env_remove("RSYNC_PASSWORD")
        .env("REPLICAFS_LOG", "info")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut got = Vec::new();
    let ready = receive(&sock, Duration::from_secs(30), "READY=1", &mut got);
    // Checked at once: when READY=1 arrives, the mount answers and the
    // target has SOURCE's tree.
    let live = mounted(&d.p("mnt"));
    let copied = (0..200).all(|i| d.p(&format!("target/f{i}")).is_file());
    assert!(ready, "no READY=1 within 30 s; got {got:?}");
    assert!(live, "READY=1 before the mount was live");
    assert!(copied, "READY=1 before the start-up reconcile was done");
    let ready_msg = got.last().unwrap().clone();
    assert!(
        ready_msg.contains("STATUS=in sync: 1 target(s), lag "),
        "{ready_msg}"
    );

    // While it runs: watchdog pings, and the status follows the queue.
    std::fs::write(d.p("mnt/written"), b"through the mount").unwrap();
    let mut more = Vec::new();
    assert!(
        receive(&sock, Duration::from_secs(5), "WATCHDOG=1", &mut more),
        "no WATCHDOG=1 within 5 s: {more:?}"
    );

    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let mut end = Vec::new();
    assert!(
        receive(&sock, Duration::from_secs(10), "STOPPING=1", &mut end),
        "no STOPPING=1 after SIGTERM: {end:?}"
    );
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "exit {status:?}: {err}");
    assert_eq!(
        std::fs::read(d.p("target/written")).unwrap(),
        b"through the mount",
        "the final drain replicated the last write"
    );
}

#[test]
fn without_a_notify_socket_nothing_is_sent() {
    // The unit's own rule: no NOTIFY_SOCKET, no notifications (and no
    // error); covered by every other mount test running without one. Here
    // the status line's shape, which STATUS= carries.
    use replicafs::sync::status::{ReconcileStatus, TargetStatus};
    let t = TargetStatus {
        target: "/backup".into(),
        state: "catching_up".into(),
        lag_seconds: 0.25,
        pending_bytes: 4096,
        pending_ops: 3,
        replicated_bytes: 0,
        last_error: None,
        reconcile: ReconcileStatus::default(),
        degraded: false,
        warnings: Vec::new(),
    };
    assert_eq!(
        replicafs::mount::service_status_line(std::slice::from_ref(&t), true),
        "catching up: 1 target(s), lag 0.2 s, 3 change(s) (4096 bytes) queued"
    );
    let failing = TargetStatus {
        state: "failing".into(),
        last_error: Some("No space left on device".into()),
        ..t.clone()
    };
    assert_eq!(
        replicafs::mount::service_status_line(&[failing], true),
        "target /backup failing: No space left on device"
    );
    assert!(
        replicafs::mount::service_status_line(&[t], false).starts_with("reconciling the targets")
    );
}
