//! A real `rsync --daemon` on 127.0.0.1 for the rsync target's tests:
//! a module without authentication (`push`), one with (`auth`, user
//! `testuser`, password `testpass123`) and a read-only one (`ro`). Killed
//! on drop.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "testuser";
pub const PASSWORD: &str = "testpass123";

pub struct Daemon {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// Whether the rsync binary is here; under `CI=true` it must be.
pub fn available() -> bool {
    let ok = Command::new("rsync")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("rsync is required under CI=true (apt install rsync)");
        }
        eprintln!("SKIPPED: no rsync binary to run a daemon with");
    }
    ok
}

impl Daemon {
    pub fn start() -> Option<Daemon> {
        if !available() {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("replicafs-rsyncd")
            .tempdir()
            .unwrap();
        for m in ["push", "auth", "ro", "munged"] {
            std::fs::create_dir(dir.path().join(m)).unwrap();
        }
        let secrets = dir.path().join("secrets");
        std::fs::write(&secrets, format!("{USER}:{PASSWORD}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut d = Daemon {
            child: None,
            port: 0,
            dir,
        };
        d.port = free_port();
        d.write_config(&secrets);
        d.restart();
        Some(d)
    }

    fn write_config(&self, secrets: &Path) {
        let root = self.dir.path();
        let conf = format!(
            "pid file = {root}/rsyncd.pid\n\
             log file = {root}/rsyncd.log\n\
             address = 127.0.0.1\n\
             port = {port}\n\
             use chroot = yes\n\
             munge symlinks = no\n\
             numeric ids = yes\n\
             transfer logging = yes\n\
             log format = %o %i %n%L %l\n\
             uid = root\n\
             gid = root\n\
             read only = no\n\
             [push]\n\
             path = {root}/push\n\
             [munged]\n\
             path = {root}/munged\n\
             use chroot = no\n\
             munge symlinks = yes\n\
             [ro]\n\
             path = {root}/ro\n\
             read only = yes\n\
             [auth]\n\
             path = {root}/auth\n\
             auth users = {USER}\n\
             secrets file = {secrets}\n",
            root = root.display(),
            port = self.port,
            secrets = secrets.display(),
        );
        std::fs::write(root.join("rsyncd.conf"), conf).unwrap();
    }

    /// Starts the daemon (again, after `stop`) and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let root = self.dir.path();
        let _ = std::fs::remove_file(root.join("rsyncd.pid"));
        let child = Command::new("rsync")
            .args(["--daemon", "--no-detach"])
            .arg(format!("--config={}", root.join("rsyncd.conf").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rsync --daemon");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "rsync daemon did not start listening on port {}; log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the daemon (and, with it, the sessions it is serving).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Per-connection daemon processes outlive the listener: end them
        // too, as a crash or a restart of the service would.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", "--"])
            .arg(format!(
                "--config={}",
                self.dir.path().join("rsyncd.conf").display()
            ))
            .status();
    }

    pub fn module_dir(&self, module: &str) -> PathBuf {
        self.dir.path().join(module)
    }

    pub fn url(&self, module: &str) -> String {
        match module {
            "auth" => format!("rsync://{USER}@127.0.0.1:{}/{module}", self.port),
            _ => format!("rsync://127.0.0.1:{}/{module}", self.port),
        }
    }

    /// A password file (mode 0600) holding `password`.
    pub fn password_file(&self, password: &str) -> PathBuf {
        let p = self.dir.path().join(format!("pw-{}", password.len()));
        std::fs::write(&p, format!("{password}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rsyncd.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            // Keep the daemon's log and module for the post-mortem.
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
            eprintln!("rsync daemon files kept in {}", kept.display());
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}
