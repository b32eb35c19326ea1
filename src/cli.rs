//! The command line, exactly as the design brief's CLI contract gives it.
//! Parsing only: [`crate::config`] turns these raw arguments into a
//! validated configuration.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{CommandFactory, Parser, Subcommand};

use crate::backend::IoChoice;
use crate::sync::policy::{Consistency, TargetDown};

#[derive(Debug, Parser)]
#[command(
    name = "replicafs",
    version,
    about = "Mount a directory and mirror every change made through the mount to targets",
    long_about = None,
    propagate_version = true,
    after_help = ENVIRONMENT
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The environment variables replicafs reads, for the end of `--help`
/// and the man pages.
pub const ENVIRONMENT: &str = "\
Environment:
  RSYNC_PASSWORD             password for rsync:// targets when --password-file is not given
  REPLICAFS_LOG              log filter (error, warn, info, debug, trace, or tracing's
                             EnvFilter syntax); default info. RUST_LOG is not read
  REPLICAFS_IO               auto|uring|portable: overrides --io (a kill switch for io_uring)
  REPLICAFS_NO_WATCH=1       do not watch SOURCE for changes made outside the mount
  REPLICAFS_BARRIER_TIMEOUT  how long fsync waits for a down target with
                             --on-target-down block (default 30s)
  XDG_STATE_HOME, HOME       where the default state dir is, for users other than root
  XDG_RUNTIME_DIR            where the control socket is, for users other than root
  USER, LOGNAME              the rsync user name when a target gives none
  REPLICAFS_DETACHED         internal: set by --daemon in the background process";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount SOURCE at MOUNTPOINT and replicate every change to each TARGET.
    #[command(after_help = ENVIRONMENT)]
    Mount(MountArgs),
    /// Wait until every change made before this call is durable on every target.
    Sync {
        /// The mountpoint of a running replicafs mount.
        mountpoint: PathBuf,
        /// Give up after this long (e.g. 30s, 5m; default 60s).
        #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
        timeout: Option<std::time::Duration>,
    },
    /// Show the state of a mount and its targets.
    Status {
        /// The mountpoint of a running replicafs mount.
        mountpoint: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Compare two trees; exit 0 when identical, 1 with one line per difference.
    Verify {
        /// The directory to compare (usually a mount's SOURCE).
        source: PathBuf,
        /// The directory to compare it with (usually one of its targets).
        target: OsString,
    },
    /// Drain pending changes and unmount.
    Unmount {
        /// The mountpoint of a running replicafs mount.
        mountpoint: PathBuf,
        /// Give up draining after this long (e.g. 30s, 5m; default 60s).
        #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
        timeout: Option<std::time::Duration>,
    },
    /// Print the completion script for SHELL to stdout.
    Completions {
        /// The shell the script is for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (replicafs.1, replicafs-mount.1, ...) into DIR.
    #[command(hide = true)]
    Man {
        /// An existing directory to write the pages into.
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct MountArgs {
    /// The directory whose contents the mount shows.
    pub source: PathBuf,
    /// An empty directory to mount on.
    pub mountpoint: PathBuf,
    /// A directory, rsync://[USER@]HOST[:PORT]/MODULE[/PATH] or
    /// [USER@]HOST::MODULE[/PATH]; repeat for several.
    #[arg(long = "target", required = true, value_name = "TARGET")]
    pub targets: Vec<OsString>,
    /// Create a directory TARGET that does not exist yet (else it is refused).
    #[arg(long)]
    pub create_target: bool,
    /// When writes return relative to the targets.
    #[arg(long, value_parser = consistency_values(), default_value_t = Consistency::Fsync)]
    pub consistency: Consistency,
    /// What fsync (and, in sync mode, every change) does while a target is
    /// down: block (wait, EIO after the barrier timeout), degrade (return
    /// once SOURCE is durable; the target catches up when it is back) or
    /// fail (EIO at once). Default: degrade; block with --consistency sync.
    #[arg(long, value_name = "block|degrade|fail", value_parser = parse_target_down)]
    pub on_target_down: Option<TargetDown>,
    /// In async mode, how far targets may fall behind (e.g. 1s, 500ms; default 1s).
    #[arg(
        long,
        value_parser = parse_duration,
        value_name = "DURATION",
        allow_hyphen_values = true
    )]
    pub max_lag: Option<std::time::Duration>,
    /// Fast-I/O backend for moving data to targets.
    #[arg(long, value_parser = io_values(), default_value_t = IoChoice::Auto)]
    pub io: IoChoice,
    /// Where the journal, log and control socket live.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Password for rsync:// targets (else RSYNC_PASSWORD).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Detach; exit 0 only once the mount is live.
    #[arg(long)]
    pub daemon: bool,
    /// FUSE options, comma separated (allow_other, default_permissions, ro, ...).
    #[arg(short = 'o', value_name = "OPTION[,OPTION...]")]
    pub options: Vec<String>,
}

/// `--consistency`: one possible value per mode, with its help line.
fn consistency_values() -> impl TypedValueParser<Value = Consistency> {
    PossibleValuesParser::new(
        Consistency::ALL.map(|c| PossibleValue::new(c.as_str()).help(c.help())),
    )
    .try_map(|s| s.parse::<Consistency>())
}

/// `--io`: one possible value per backend choice, with its help line.
fn io_values() -> impl TypedValueParser<Value = IoChoice> {
    PossibleValuesParser::new(IoChoice::ALL.map(|c| PossibleValue::new(c.as_str()).help(c.help())))
        .try_map(|s| s.parse::<IoChoice>())
}

fn parse_target_down(s: &str) -> Result<TargetDown, String> {
    s.parse()
}

/// Durations as humans write them: 250ms, 1s, 5m, 1h 30m. A negative one
/// is refused as such (its arguments accept a leading `-` so that this
/// message, not clap's "unexpected argument", is what the user sees).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim_start();
    if t.starts_with('-') && t[1..].starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "'{s}' is a negative duration; give how long, e.g. 500ms, 2s, 5m"
        ));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration ({e}); try e.g. 500ms, 2s, 5m"))
}

/// Writes the completion script for `shell` to `out`.
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn io::Write) {
    clap_complete::generate(shell, &mut Cli::command(), "replicafs", out);
}

/// Writes the man pages into `dir`, which must exist: `replicafs.1` and one
/// page per visible subcommand (`replicafs-mount.1`, ...). Returns the
/// files written.
///
/// # Errors
///
/// Writing a page failed; the error names the file.
pub fn write_man_pages(dir: &Path) -> io::Result<Vec<PathBuf>> {
    fn pages(cmd: &clap::Command, out: &mut Vec<clap::Command>) {
        out.push(cmd.clone());
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            pages(sub, out);
        }
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut all = Vec::new();
    pages(&cmd, &mut all);
    let mut written = Vec::new();
    for page in all {
        let man = clap_mangen::Man::new(page);
        let path = dir.join(man.get_filename());
        let mut text = Vec::new();
        man.render(&mut text)?;
        std::fs::write(&path, text)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn mount_parses_the_contract() {
        let cli = Cli::try_parse_from([
            "replicafs",
            "mount",
            "/s",
            "/m",
            "--target",
            "/t",
            "--target",
            "rsync://u@h:873/mod/p",
            "--consistency",
            "async",
            "--max-lag",
            "250ms",
            "--io",
            "portable",
            "--state-dir",
            "/st",
            "--daemon",
            "-o",
            "allow_other,ro",
        ])
        .unwrap();
        let Command::Mount(m) = cli.command else {
            panic!("not mount")
        };
        assert_eq!(m.targets.len(), 2);
        assert_eq!(m.consistency, Consistency::Async);
        assert_eq!(m.max_lag, Some(std::time::Duration::from_millis(250)));
        assert_eq!(m.io, IoChoice::Portable);
        assert!(m.daemon);
        assert_eq!(m.options, vec!["allow_other,ro"]);
    }

    #[test]
    fn on_target_down_parses_into_the_policy() {
        let m = |extra: &[&str]| {
            let mut a = vec!["replicafs", "mount", "/s", "/m", "--target", "/t"];
            a.extend_from_slice(extra);
            Cli::try_parse_from(a).map(|c| match c.command {
                Command::Mount(m) => m.on_target_down,
                _ => panic!("not mount"),
            })
        };
        assert_eq!(m(&[]).unwrap(), None);
        assert_eq!(
            m(&["--on-target-down", "fail"]).unwrap(),
            Some(TargetDown::Fail)
        );
        let e = m(&["--on-target-down", "wait"]).unwrap_err().to_string();
        assert!(e.contains("'wait' is not a target-down policy"), "{e}");
    }

    #[test]
    fn negative_duration_says_so() {
        let e = Cli::try_parse_from([
            "replicafs",
            "mount",
            "/s",
            "/m",
            "--target",
            "/t",
            "--max-lag",
            "-1s",
        ])
        .unwrap_err();
        assert!(
            e.to_string().contains("'-1s' is a negative duration"),
            "{e}"
        );
    }

    #[test]
    fn bad_duration_names_the_value() {
        let e = Cli::try_parse_from(["replicafs", "sync", "/m", "--timeout", "soon"]).unwrap_err();
        assert!(e.to_string().contains("'soon' is not a duration"), "{e}");
    }
}
