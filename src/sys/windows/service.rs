//! Service-manager notifications: systemd's protocol has no Windows
//! counterpart here (a Windows service reports through the SCM, which the
//! WinFsp launcher does for its instances), so every call does nothing.

use std::time::Duration;

pub fn service_managed() -> bool {
    false
}

pub fn service_ready(_status: &str) {}

pub fn service_status(_status: &str) {}

pub fn service_stopping(_status: &str) {}

pub fn service_watchdog() {}

pub fn service_watchdog_interval() -> Option<Duration> {
    None
}
