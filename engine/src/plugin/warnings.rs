//! The host's warnings about one rule, rate-limited: a rule that returns
//! garbage on every call makes one line a second, not one per alert.

use std::time::{Duration, Instant};

/// Warnings the host logs about one rule (what it returned, how it
/// failed): at most [`WARNINGS_PER_SEC`] a second, the rest counted and
/// said in one line, so a rule cannot flood the daemon's log.
#[derive(Debug)]
pub struct WarnBudget {
    window_start: Instant,
    left: u32,
    suppressed: u64,
}

/// Host warnings per second per rule.
pub const WARNINGS_PER_SEC: u32 = 10;

impl Default for WarnBudget {
    fn default() -> Self {
        WarnBudget { window_start: Instant::now(), left: WARNINGS_PER_SEC, suppressed: 0 }
    }
}

impl WarnBudget {
    /// Whether one more warning about `rule` may be logged now (at `now`);
    /// when a new second starts, first says how many were suppressed.
    pub fn allow(&mut self, rule: &str, now: Instant) -> bool {
        if now.duration_since(self.window_start) >= Duration::from_secs(1) {
            if self.suppressed > 0 {
                tracing::warn!(rule, suppressed = self.suppressed, "more warnings about this rule were suppressed");
            }
            *self = WarnBudget { window_start: now, left: WARNINGS_PER_SEC, suppressed: 0 };
        }
        if self.left == 0 {
            self.suppressed += 1;
            return false;
        }
        self.left -= 1;
        true
    }

    /// Warnings not logged in the current second.
    #[cfg(test)]
    fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_budget_per_second_the_rest_counted() {
        let start = Instant::now();
        let mut w = WarnBudget::default();
        let allowed = (0..1000).filter(|_| w.allow("r", start)).count();
        assert_eq!(allowed, WARNINGS_PER_SEC as usize);
        assert_eq!(w.suppressed(), 1000 - u64::from(WARNINGS_PER_SEC));
        // The next second: a fresh budget.
        assert!(w.allow("r", start + Duration::from_millis(1100)));
        assert_eq!(w.suppressed(), 0);
    }
}
