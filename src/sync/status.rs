//! What `replicafs status` reports, as the CLI contract names it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub mountpoint: String,
    pub source: String,
    pub consistency: String,
    pub io_backend: String,
    /// `--on-target-down`: block, degrade or fail.
    #[serde(default)]
    pub on_target_down: String,
    pub pid: u32,
    /// Journal records (or queued changes) naming a path outside the tree,
    /// dropped instead of retried: a corrupt or crafted journal.
    #[serde(default)]
    pub invalid_records_dropped: u64,
    pub targets: Vec<TargetStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetStatus {
    pub target: String,
    /// "in_sync", "catching_up" or "failing".
    pub state: String,
    pub lag_seconds: f64,
    pub pending_bytes: u64,
    pub pending_ops: u64,
    pub replicated_bytes: u64,
    pub last_error: Option<String>,
    pub reconcile: ReconcileStatus,
    /// Writers' barriers stopped waiting for this target while it was
    /// down (policy `degrade`): it lacks changes whose fsync returned,
    /// until it has caught up.
    #[serde(default)]
    pub degraded: bool,
    /// Ways in which the target is known not to keep what SOURCE has.
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReconcileStatus {
    pub running: bool,
    pub entries_scanned: u64,
    pub entries_fixed: u64,
    pub bytes_copied: u64,
}

impl Status {
    /// The human-readable form of `replicafs status`.
    pub fn text(&self) -> String {
        let mut s = format!(
            "{} (source {}): consistency {}, on target down {}, io {}, pid {}\n",
            self.mountpoint,
            self.source,
            self.consistency,
            self.on_target_down,
            self.io_backend,
            self.pid
        );
        if self.invalid_records_dropped > 0 {
            s.push_str(&format!(
                "  {} journal record(s) naming paths outside the tree were dropped (see the log)\n",
                self.invalid_records_dropped
            ));
        }
        for t in &self.targets {
            s.push_str(&format!(
                "  {}: {}, lag {:.3}s, pending {} ops / {} bytes, replicated {} bytes",
                t.target,
                t.state,
                t.lag_seconds,
                t.pending_ops,
                t.pending_bytes,
                t.replicated_bytes
            ));
            if t.degraded {
                s.push_str(", degraded");
            }
            if t.reconcile.running {
                s.push_str(&format!(
                    ", reconciling ({} entries scanned, {} fixed)",
                    t.reconcile.entries_scanned, t.reconcile.entries_fixed
                ));
            }
            if let Some(e) = &t.last_error {
                s.push_str(&format!(", last error: {e}"));
            }
            s.push('\n');
            for w in &t.warnings {
                s.push_str(&format!("    warning: {w}\n"));
            }
        }
        s
    }
}
