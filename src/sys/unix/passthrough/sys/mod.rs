//! The system calls of the passthrough core that differ per platform,
//! chosen here and nowhere else. Everything else uses rustix directly.
//! Where only the raw calls differ, the logic around them is written once
//! over the platform module (`os`): the xattr calls in `xattr.rs`.

#[cfg(target_os = "linux")]
mod fhandle;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as os;
#[cfg(target_os = "linux")]
pub use {fhandle::*, linux::*};

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as os;
#[cfg(target_os = "macos")]
pub use macos::*;

mod xattr;
pub use xattr::*;
