//! The `replicafs` command: arguments → validated configuration → run.
//! Exit codes: 0 ok, 1 differences or a failed barrier, 2 usage or
//! environment error; every error is one line naming what was wrong.

use std::process::ExitCode;

#[cfg(unix)]
#[path = "main_unix.rs"]
mod unix;

#[cfg(unix)]
fn main() -> ExitCode {
    unix::main()
}

/// The mount on Windows is a WinFsp adapter that does not exist yet; the
/// library (the fast-I/O backends) already builds and is tested there.
#[cfg(not(unix))]
fn main() -> ExitCode {
    eprintln!("replicafs: the Windows mount (WinFsp) is not built yet");
    ExitCode::from(2)
}
