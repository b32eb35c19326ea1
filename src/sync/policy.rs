//! When writers wait for the replicas ([`Consistency`]), and what a
//! writer's barrier (`fsync` through the mount, every change in `sync`
//! mode) does when a target is down ([`TargetDown`]). The command line and
//! the config parse into these.

use std::fmt;
use std::str::FromStr;

/// `--consistency`: when a write through the mount returns, relative to
/// the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// A write returns once every target applied it.
    Sync,
    /// Writes return at once; fsync and `replicafs sync` are barriers.
    Fsync,
    /// Never block writers; lag bounded by --max-lag.
    Async,
}

impl Consistency {
    pub const ALL: [Consistency; 3] = [Consistency::Sync, Consistency::Fsync, Consistency::Async];

    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Sync => "sync",
            Consistency::Fsync => "fsync",
            Consistency::Async => "async",
        }
    }

    /// One line for `--help`.
    pub fn help(self) -> &'static str {
        match self {
            Consistency::Sync => "A write returns once every target applied it",
            Consistency::Fsync => "Writes return at once; fsync and `replicafs sync` are barriers",
            Consistency::Async => "Never block writers; lag bounded by --max-lag",
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Consistency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("'{s}' is not a consistency mode (one of sync, fsync, async)"))
    }
}

/// `--on-target-down`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetDown {
    /// Wait for the target, up to the barrier timeout, then EIO.
    Block,
    /// Return once SOURCE is durable: the target is marked degraded and
    /// catches up when it is back. A slow target that misses the barrier
    /// timeout is degraded the same way instead of failing the writer.
    Degrade,
    /// EIO at once while a target is failing.
    Fail,
}

impl TargetDown {
    pub const NAMES: [&'static str; 3] = ["block", "degrade", "fail"];

    /// Without `--on-target-down`: `block` in `sync` mode (whose writers
    /// asked to wait for the targets), `degrade` otherwise.
    pub fn default_for(sync_mode: bool) -> Self {
        if sync_mode {
            TargetDown::Block
        } else {
            TargetDown::Degrade
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TargetDown::Block => "block",
            TargetDown::Degrade => "degrade",
            TargetDown::Fail => "fail",
        }
    }
}

impl fmt::Display for TargetDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TargetDown {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "block" => Ok(TargetDown::Block),
            "degrade" => Ok(TargetDown::Degrade),
            "fail" => Ok(TargetDown::Fail),
            _ => Err(format!(
                "'{s}' is not a target-down policy (one of {})",
                Self::NAMES.join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in TargetDown::NAMES {
            assert_eq!(n.parse::<TargetDown>().unwrap().as_str(), n);
        }
        assert!("wait".parse::<TargetDown>().unwrap_err().contains("'wait'"));
        for c in Consistency::ALL {
            assert_eq!(c.as_str().parse::<Consistency>(), Ok(c));
        }
        assert!("eventual".parse::<Consistency>().is_err());
    }
}
