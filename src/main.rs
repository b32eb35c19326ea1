//! The `replicafs` command: arguments → validated configuration → run.
//! Exit codes: 0 ok, 1 differences or a failed barrier, 2 usage or
//! environment error; every error is one line naming what was wrong.
//! The same on every OS: what differs (the mount itself, the daemon's
//! session) comes from `replicafs::sys`.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;

use replicafs::cli::{Cli, Command, MountArgs};
use replicafs::config::{MountConfig, Target};

/// Set in the environment of the background process `--daemon` starts.
const DETACHED_ENV: &str = "REPLICAFS_DETACHED";

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!(
                "replicafs: {} (try 'replicafs --help')",
                usage_error_line(&e)
            );
            return ExitCode::from(2);
        }
    };
    init_logging();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("replicafs: {}", error_line(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, each cause once: a library error
/// that already shows its cause (`password file /x: No such file or
/// directory`) keeps it as its `source()` too, and printing the chain as it
/// is would say it twice.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Clap's error as one line: its first line without the "error: " prefix.
fn usage_error_line(e: &clap::Error) -> String {
    use clap::error::ErrorKind;
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "no command given".into();
    }
    // The message runs until the blank line before "Usage:".
    let text = e.render().to_string();
    let message: Vec<&str> = text
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let line = message.join(" ");
    let line = line.trim_start_matches("error: ");
    if line.is_empty() {
        "invalid arguments".into()
    } else {
        line.to_string()
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("REPLICAFS_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,fuser=error"));
    let detached = std::env::var_os(DETACHED_ENV).is_some();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!detached && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Completions { shell } => {
            replicafs::cli::write_completions(shell, &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => {
            if !dir.is_dir() {
                bail!("man page directory {} is not a directory", dir.display());
            }
            for page in replicafs::cli::write_man_pages(&dir).context("write the man pages")? {
                println!("{}", page.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Mount(args) => mount(&args),
        Command::Unmount {
            mountpoint,
            timeout,
        } => {
            let canon = require_our_mount(&mountpoint)?;
            let timeout = timeout.unwrap_or(replicafs::mount::DRAIN_TIMEOUT);
            let pid = daemon_pid(&canon);
            let drained = drain(&canon, timeout);
            replicafs::mount::unmount(&mountpoint)?;
            // The mount's process goes on draining after the unmount, so a
            // barrier that gave up before it may still be met: ask again
            // while it finishes, and report what really happened.
            let drained = match (drained, pid) {
                (Err(first), Some(_)) => match drain(&canon, timeout) {
                    Ok(()) => {
                        eprintln!(
                            "replicafs: {}: the targets caught up after the unmount ({first} before it)",
                            mountpoint.display()
                        );
                        Ok(())
                    }
                    Err(_) => Err(first),
                },
                (drained, _) => drained,
            };
            if let Some(pid) = pid {
                wait_exit(pid, timeout);
            }
            match drained {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!(
                        "replicafs: unmounted {}, but {e}; the journal keeps the pending changes for the next mount",
                        mountpoint.display()
                    );
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Sync {
            mountpoint,
            timeout,
        } => {
            let canon = require_our_mount(&mountpoint)?;
            let timeout = timeout.unwrap_or(SYNC_TIMEOUT);
            match drain(&canon, timeout) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    // The status says more than the barrier's error (every
                    // target behind, and its pending ops) when it answers.
                    let why = behind(&canon);
                    let why = if why.is_empty() { e } else { why };
                    eprintln!(
                        "replicafs sync: gave up after {}: {why}",
                        humantime::format_duration(timeout)
                    );
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Status { mountpoint, json } => {
            let canon = require_our_mount(&mountpoint)?;
            let reply =
                replicafs::control::request(&canon, "status", Some(Duration::from_secs(10)))?
                    .map_err(|e| anyhow::anyhow!("status: {e}"))?;
            if json {
                println!("{reply}");
            } else {
                let st: replicafs::sync::status::Status =
                    serde_json::from_str(&reply).context("status reply")?;
                print!("{}", st.text());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { source, target } => {
            if !source.is_dir() {
                bail!("source {} is not a directory", source.display());
            }
            if check_verify_target(&target)? {
                bail!("verify against rsync:// targets is not available in this version yet");
            }
            let diffs = compare_trees(&source, Path::new(&target)).with_context(|| {
                format!(
                    "compare {} with {}",
                    source.display(),
                    Path::new(&target).display()
                )
            })?;
            for d in &diffs {
                println!("{d}");
            }
            Ok(if diffs.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn compare_trees(a: &Path, b: &Path) -> std::io::Result<Vec<String>> {
    replicafs::verify::compare(a, b)
}

/// The pid of the process serving the mount, from its status.
fn daemon_pid(mountpoint: &Path) -> Option<u32> {
    let reply = replicafs::control::request(mountpoint, "status", Some(Duration::from_secs(10)))
        .ok()?
        .ok()?;
    let st: replicafs::sync::status::Status = serde_json::from_str(&reply).ok()?;
    (st.pid != std::process::id()).then_some(st.pid)
}

/// Waits (bounded) for the mount's process to finish its shutdown, so the
/// state dir is free for the next mount when `unmount` returns.
fn wait_exit(pid: u32, timeout: Duration) {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if !replicafs::sys::process_running(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("replicafs: the process of the mount (pid {pid}) is still finishing");
}

/// How long `replicafs sync` waits by default (as long as unmounting
/// waits for the targets).
const SYNC_TIMEOUT: Duration = replicafs::mount::DRAIN_TIMEOUT;

/// What the targets that are not in sync are doing, for a barrier that
/// gave up: state, pending operations, last error.
fn behind(mountpoint: &Path) -> String {
    let Ok(Ok(reply)) =
        replicafs::control::request(mountpoint, "status", Some(Duration::from_secs(5)))
    else {
        return String::new();
    };
    let Ok(st) = serde_json::from_str::<replicafs::sync::status::Status>(&reply) else {
        return String::new();
    };
    st.targets
        .iter()
        .filter(|t| t.state != "in_sync")
        .map(|t| {
            format!(
                "target {}: {}, {} pending ops, last error: {}",
                t.target,
                t.state,
                t.pending_ops,
                t.last_error.as_deref().unwrap_or("none")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Asks the mount's process to wait until every target has everything.
fn drain(mountpoint: &Path, timeout: Duration) -> Result<(), String> {
    let ms = timeout.as_millis().min(u128::from(u64::MAX)) as u64;
    match replicafs::control::request(mountpoint, &format!("sync {ms}"), Some(timeout)) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(e.to_string()),
    }
}

fn require_our_mount(mountpoint: &Path) -> Result<std::path::PathBuf> {
    let canon = mountpoint
        .canonicalize()
        .with_context(|| format!("mountpoint {}", mountpoint.display()))?;
    match replicafs::mountinfo::find(&canon)? {
        Some(m) if m.fstype == replicafs::mountinfo::FSTYPE => Ok(canon),
        Some(m) => bail!(
            "{} is a {} mount, not a replicafs mount",
            mountpoint.display(),
            m.fstype
        ),
        None => bail!("{} is not mounted", mountpoint.display()),
    }
}

/// Checks the TARGET of `verify`: true when it is an rsync daemon.
fn check_verify_target(target: &std::ffi::OsStr) -> Result<bool> {
    match target
        .to_str()
        .and_then(replicafs::replica::rsync::remote_target)
    {
        Some(url) => {
            url?;
            Ok(true)
        }
        None => {
            let p = Path::new(target);
            if !p.is_dir() {
                bail!("target {} is not a directory", p.display());
            }
            Ok(false)
        }
    }
}

fn mount(args: &MountArgs) -> Result<ExitCode> {
    let cfg = MountConfig::from_args(args)?;
    // Checked here too, not only by the mount: the log of `--daemon` goes
    // into it, and the refusal should reach the terminal.
    let state = replicafs::state_dir::StateDir::open(&cfg.state_dir)?;
    // The configuration let a missing directory target through only with
    // --create-target.
    for t in &cfg.targets {
        if let Target::Dir(d) = t {
            if !d.exists() {
                std::fs::create_dir_all(d)
                    .with_context(|| format!("create target {}", d.display()))?;
                tracing::info!("created target {}", d.display());
            }
        }
    }
    let detached = std::env::var_os(DETACHED_ENV).is_some();
    if cfg.daemon && !detached {
        return start_daemon(&cfg, &state);
    }
    if detached {
        // Leave the caller's session and working directory: the daemon must
        // not hold a terminal or keep a directory busy.
        replicafs::sys::leave_session();
        let _ = std::env::set_current_dir("/");
    }
    // Created files get exactly the mode the caller asked for: the kernel
    // already applied the caller's umask. (State files are created with
    // their own exact modes, 0600 and 0700, whatever the umask.)
    replicafs::sys::clear_umask();
    let spec = replicafs::mount::MountSpec {
        source: cfg.source.clone(),
        mountpoint: cfg.mountpoint.clone(),
        fuse: cfg.fuse.clone(),
        targets: cfg.targets.clone(),
        consistency: cfg.consistency,
        on_target_down: cfg.on_target_down,
        io: cfg.io,
        state_dir: cfg.state_dir.clone(),
        password_file: cfg.password_file.clone(),
    };
    replicafs::mount::run_foreground(&spec)?;
    Ok(ExitCode::SUCCESS)
}

/// Starts this same command again in the background, without `--daemon`,
/// logging to the state dir, and returns once its mount answers requests.
fn start_daemon(cfg: &MountConfig, state: &replicafs::state_dir::StateDir) -> Result<ExitCode> {
    let log_path = cfg.state_dir.join("replicafs.log");
    let log = state.open_append("replicafs.log").context("open the log")?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let args: Vec<OsString> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--daemon")
        .collect();
    let exe = std::env::current_exe().context("find the replicafs executable")?;
    let mut child = std::process::Command::new(exe)
        .args(&args)
        .env(DETACHED_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start the background process")?;
    let live = replicafs::mount::wait_live(&cfg.mountpoint, Duration::from_secs(30), || {
        Ok(child.try_wait()?.is_none())
    });
    if let Err(e) = live {
        let _ = child.kill();
        let _ = child.wait();
        let tail = log_tail(&log_path, log_start);
        bail!("{e}; log {}:{tail}", log_path.display());
    }
    eprintln!(
        "replicafs: {} mounted at {} (pid {}, log {})",
        cfg.source.display(),
        cfg.mountpoint.display(),
        child.id(),
        log_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// What the background process wrote since `from`, on one line.
fn log_tail(path: &Path, from: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(text.len());
    let s = String::from_utf8_lossy(&text[start..]);
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    let last: Vec<&str> = lines.iter().rev().take(3).rev().copied().collect();
    if last.is_empty() {
        " (empty)".into()
    } else {
        format!(" {}", last.join(" | "))
    }
}
