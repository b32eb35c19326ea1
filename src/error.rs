//! The library's error type and the one errno mapping.
//!
//! Rules for errors in this crate:
//! - Every error names the thing that was wrong (a path, an option, a URL),
//!   so a bare "No such file or directory" never leaves the user guessing.
//! - Errors keep their cause: wrap, never replace (`.map_err(|_| ENOENT)` is
//!   forbidden, it throws the real cause away).
//! - The filesystem layers speak `io::Error`; the kernel adapters turn it into
//!   an errno in exactly one place, [`errno_of`].

use std::fmt::Display;
use std::io;
use std::path::PathBuf;

/// Errors of configuration and set-up: everything that can go wrong before
/// (or while) a mount goes live. Each maps to exit code 2 in the CLI.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {path}: {source}")]
    Path {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    pub fn path(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Path {
            what,
            path: path.into(),
            source,
        }
    }

    pub fn io(what: impl Display, source: io::Error) -> Self {
        Error::Io {
            what: what.to_string(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Name what could not be reached, keeping the error's kind and OS code
/// reachable through `source()`.
pub fn context(what: impl Display, err: io::Error) -> io::Error {
    let errno = err.raw_os_error();
    match errno {
        // Keep the raw OS error so errno_of() still sees it.
        Some(code) => io::Error::new(
            io::Error::from_raw_os_error(code).kind(),
            Contextual {
                what: what.to_string(),
                code,
            },
        ),
        None => io::Error::new(err.kind(), format!("{what}: {err}")),
    }
}

#[derive(Debug)]
struct Contextual {
    what: String,
    code: i32,
}

impl Display for Contextual {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            self.what,
            io::Error::from_raw_os_error(self.code)
        )
    }
}

impl std::error::Error for Contextual {}

/// The OS error code `err` carries, itself or inside [`context`].
pub fn os_code(err: &io::Error) -> Option<i32> {
    err.raw_os_error().or_else(|| {
        err.get_ref()
            .and_then(|e| e.downcast_ref::<Contextual>())
            .map(|c| c.code)
    })
}

/// The errno to hand back to the kernel for a failed operation. The single
/// place where `io::Error` becomes an errno: the raw OS error when there is
/// one (also through [`context`]), otherwise the closest errno for the kind,
/// and EIO as the last resort.
pub fn errno_of(err: &io::Error) -> i32 {
    if let Some(code) = os_code(err) {
        return code;
    }
    use io::ErrorKind as K;
    match err.kind() {
        K::NotFound => libc::ENOENT,
        K::PermissionDenied => libc::EACCES,
        K::AlreadyExists => libc::EEXIST,
        K::InvalidInput => libc::EINVAL,
        K::Unsupported => libc::EOPNOTSUPP,
        K::OutOfMemory => libc::ENOMEM,
        K::Interrupted => libc::EINTR,
        K::WouldBlock => libc::EAGAIN,
        K::TimedOut => libc::ETIMEDOUT,
        K::StorageFull => libc::ENOSPC,
        K::NotADirectory => libc::ENOTDIR,
        K::IsADirectory => libc::EISDIR,
        K::DirectoryNotEmpty => libc::ENOTEMPTY,
        K::ReadOnlyFilesystem => libc::EROFS,
        K::FileTooLarge => libc::EFBIG,
        K::InvalidFilename => libc::ENAMETOOLONG,
        K::CrossesDevices => libc::EXDEV,
        K::TooManyLinks => libc::EMLINK,
        K::ResourceBusy => libc::EBUSY,
        K::Deadlock => libc::EDEADLK,
        K::ArgumentListTooLong => libc::E2BIG,
        _ => libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_os_errors_pass_through() {
        let e = io::Error::from_raw_os_error(libc::ENOTEMPTY);
        assert_eq!(errno_of(&e), libc::ENOTEMPTY);
    }

    #[test]
    fn context_keeps_the_errno_and_names_the_thing() {
        let e = context("open /x", io::Error::from_raw_os_error(libc::ELOOP));
        assert_eq!(errno_of(&e), libc::ELOOP);
        assert!(e.to_string().starts_with("open /x: "), "{e}");
    }

    #[test]
    fn kinds_without_os_code_map_to_the_closest_errno() {
        let e = io::Error::new(io::ErrorKind::NotFound, "gone");
        assert_eq!(errno_of(&e), libc::ENOENT);
        let e = io::Error::other("weird");
        assert_eq!(errno_of(&e), libc::EIO);
    }
}
