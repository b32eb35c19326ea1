//! Telling a service manager how the mount is doing: systemd's notify
//! protocol (`Type=notify`: a datagram to `$NOTIFY_SOCKET`), through the
//! `sd-notify` crate. Without `NOTIFY_SOCKET` every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

/// Whether a service manager is listening (systemd set `NOTIFY_SOCKET`).
pub fn service_managed() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty())
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!("service notification: {e}");
    }
}

/// `READY=1` with a status line.
pub fn service_ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STATUS=` alone.
pub fn service_status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// `STOPPING=1` with a status line.
pub fn service_stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// `WATCHDOG=1`: the process is alive.
pub fn service_watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often the manager expects `WATCHDOG=1` (`WatchdogSec=`), if it
/// watches this process.
pub fn service_watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}
