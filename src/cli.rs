//! The command line, exactly as the design brief's CLI contract gives it.
//! Parsing only: [`crate::config`] turns these raw arguments into a
//! validated configuration.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};

use crate::backend::IoChoice;
use crate::sync::policy::{Consistency, TargetDown};

#[derive(Debug, Parser)]
#[command(
    name = "replicafs",
    version,
    about = "Mount a directory and mirror every change made through the mount to targets",
    long_about = None,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount SOURCE at MOUNTPOINT and replicate every change to each TARGET.
    Mount(MountArgs),
    /// Wait until every change made before this call is durable on every target.
    Sync {
        mountpoint: PathBuf,
        /// Give up after this long (e.g. 30s, 5m).
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<std::time::Duration>,
    },
    /// Show the state of a mount and its targets.
    Status {
        mountpoint: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Compare two trees; exit 0 when identical, 1 with one line per difference.
    Verify { source: PathBuf, target: OsString },
    /// Drain pending changes and unmount.
    Unmount {
        mountpoint: PathBuf,
        /// Give up draining after this long (e.g. 30s, 5m).
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<std::time::Duration>,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct MountArgs {
    /// The directory whose contents the mount shows.
    pub source: PathBuf,
    /// An empty directory to mount on.
    pub mountpoint: PathBuf,
    /// A directory, or rsync://[USER@]HOST[:PORT]/MODULE[/PATH]; repeat for several.
    #[arg(long = "target", required = true, value_name = "TARGET")]
    pub targets: Vec<OsString>,
    /// When writes return relative to the targets.
    #[arg(long, value_parser = consistency_values(), default_value_t = Consistency::Fsync)]
    pub consistency: Consistency,
    /// What fsync (and, in sync mode, every change) does while a target is
    /// down: block (wait, EIO after the barrier timeout), degrade (return
    /// once SOURCE is durable; the target catches up when it is back) or
    /// fail (EIO at once). Default: degrade; block with --consistency sync.
    #[arg(long, value_name = "block|degrade|fail", value_parser = parse_target_down)]
    pub on_target_down: Option<TargetDown>,
    /// In async mode, how far targets may fall behind (e.g. 1s, 500ms).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
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

/// Durations as humans write them: 250ms, 1s, 5m, 1h 30m.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration ({e}); try e.g. 500ms, 2s, 5m"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
    fn bad_duration_names_the_value() {
        let e = Cli::try_parse_from(["replicafs", "sync", "/m", "--timeout", "soon"]).unwrap_err();
        assert!(e.to_string().contains("'soon' is not a duration"), "{e}");
    }
}
