//! A rule's figures, counted by the rule and read by metrics and logs.

use std::sync::atomic::{AtomicU64, Ordering};

/// A rule's figures, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct RuleStats {
    pub events_in: AtomicU64,
    pub batches: AtomicU64,
    pub alerts_out: AtomicU64,
    pub time_ns: AtomicU64,
    pub timeouts: AtomicU64,
    pub traps: AtomicU64,
    pub memory_faults: AtomicU64,
    /// Calls whose return could not be parsed (counted as faults).
    pub bad_output: AtomicU64,
    /// Alerts beyond the per-call limit, dropped.
    pub alerts_dropped: AtomicU64,
    pub quarantines: AtomicU64,
    /// Events the rule did not see (quarantined, throttled, or more than
    /// could wait while it restarted).
    pub events_skipped: AtomicU64,
    /// Of those, events skipped because the rule was over its CPU budget.
    pub events_throttled: AtomicU64,
    /// CPU time of its calls (the dispatching thread's clock).
    pub cpu_ns: AtomicU64,
    /// Restarts of its instance (after a fault, or to hand its state over).
    pub restarts: AtomicU64,
    /// For the rule files' instance: alerts by the rule (Falco rule, Sigma
    /// title) that raised them.
    pub alerts_by_rule: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl RuleStats {
    pub fn faults(&self) -> u64 {
        self.timeouts.load(Ordering::Relaxed)
            + self.traps.load(Ordering::Relaxed)
            + self.memory_faults.load(Ordering::Relaxed)
            + self.bad_output.load(Ordering::Relaxed)
    }
}
