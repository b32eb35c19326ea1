//! The system calls of the passthrough core that differ per platform,
//! chosen here and nowhere else. Everything else uses rustix directly.

#[cfg(target_os = "linux")]
mod fhandle;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use {fhandle::*, linux::*};

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub use macos::*;
