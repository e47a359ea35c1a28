//! What a rule may spend, as token buckets: CPU time per second of wall
//! time, and alerts per second.
//!
//! A rule over its CPU budget is throttled while the dispatching thread is
//! under pressure ([`Pressure`]: busy most of the time, so one rule's time
//! is taken from the others and from the source): its batches are skipped
//! (and reported to it as lost) until the bucket has refilled a tenth of a
//! second's budget, so one slow rule costs the dispatching thread at most
//! its budget and the other rules and the source keep their pace. Without
//! pressure, a rule over its budget takes only time no one needed, and runs.
//! The bucket holds two seconds of budget: a burst (a storm, a rule's first
//! batches while its caches warm) is absorbed.

use std::time::{Duration, Instant};

/// Seconds of budget a bucket holds.
const BURST_SECS: u32 = 2;

/// A rule's CPU time budget.
#[derive(Debug)]
pub struct CpuBudget {
    per_sec_ns: i64,
    tokens_ns: i64,
    last: Instant,
    throttled: bool,
}

/// What [`CpuBudget::may_run`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Throttle {
    /// Within budget.
    Run,
    /// Over budget, and was not before: a new throttling spell.
    Began,
    /// Over budget, as before.
    Still,
}

impl CpuBudget {
    pub fn new(per_sec: Duration) -> Self {
        let per_sec_ns = per_sec.as_nanos().min(i64::MAX as u128) as i64;
        CpuBudget { per_sec_ns, tokens_ns: per_sec_ns * BURST_SECS as i64, last: Instant::now(), throttled: false }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_nanos().min(i64::MAX as u128) as i64;
        self.last = now;
        let earned = (elapsed as i128 * self.per_sec_ns as i128 / 1_000_000_000) as i64;
        self.tokens_ns = self.tokens_ns.saturating_add(earned).min(self.per_sec_ns * BURST_SECS as i64);
    }

    /// Whether the rule may be called now: always with a budget of 0, and
    /// while the dispatching thread is not `pressed` (its debt is then
    /// forgiven: what it took, no one needed).
    pub fn may_run(&mut self, now: Instant, pressed: bool) -> Throttle {
        if self.per_sec_ns == 0 {
            return Throttle::Run;
        }
        self.refill(now);
        if !pressed {
            self.throttled = false;
            self.tokens_ns = self.tokens_ns.max(0);
            return Throttle::Run;
        }
        if self.throttled {
            // Resume with a tenth of a second's budget in hand, not at the
            // first nanosecond: a throttled rule runs in spells, not every
            // other batch.
            if self.tokens_ns >= self.per_sec_ns / 10 {
                self.throttled = false;
                return Throttle::Run;
            }
            return Throttle::Still;
        }
        if self.tokens_ns <= 0 {
            self.throttled = true;
            return Throttle::Began;
        }
        Throttle::Run
    }

    /// Takes a call's CPU time from the bucket (it may go into debt: a call
    /// is never cut short for its budget, only the next ones wait).
    pub fn charge(&mut self, cpu_ns: u64) {
        self.tokens_ns = self.tokens_ns.saturating_sub(cpu_ns.min(i64::MAX as u64) as i64);
    }
}

/// Whether the dispatching thread is under pressure: busy more than
/// [`Pressure::ON`] of the wall time over a quarter of a second, until it is
/// busy less than [`Pressure::OFF`] (the gap keeps a throttled rule from
/// running again as soon as its throttling has relieved the thread).
#[derive(Debug)]
pub struct Pressure {
    window_start: Instant,
    busy_ns: u64,
    pressed: bool,
}

impl Default for Pressure {
    fn default() -> Self {
        Pressure { window_start: Instant::now(), busy_ns: 0, pressed: false }
    }
}

impl Pressure {
    pub const ON: f64 = 0.8;
    pub const OFF: f64 = 0.5;
    const WINDOW: Duration = Duration::from_millis(250);

    /// Whether the thread is under pressure.
    pub fn pressed(&self) -> bool {
        self.pressed
    }

    /// Counts `busy` (time spent dispatching) ending at `now`; returns the
    /// new state when it changed.
    pub fn record(&mut self, busy: Duration, now: Instant) -> Option<bool> {
        self.busy_ns += busy.as_nanos() as u64;
        let window = now.saturating_duration_since(self.window_start);
        if window < Self::WINDOW {
            return None;
        }
        let share = self.busy_ns as f64 / window.as_nanos() as f64;
        let was = self.pressed;
        self.pressed = if was { share >= Self::OFF } else { share > Self::ON };
        self.window_start = now;
        self.busy_ns = 0;
        (self.pressed != was).then_some(self.pressed)
    }
}

/// A rule's alerts per second.
#[derive(Debug)]
pub struct AlertRate {
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl AlertRate {
    pub fn new(per_sec: u32) -> Self {
        AlertRate { per_sec: per_sec as f64, tokens: per_sec as f64, last: Instant::now() }
    }

    /// How many of `n` alerts may be raised now (taken from the bucket).
    pub fn take(&mut self, n: usize, now: Instant) -> usize {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.per_sec);
        let allowed = (self.tokens.floor() as usize).min(n);
        self.tokens -= allowed as f64;
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_rule_over_its_cpu_budget_is_throttled_until_a_tenth_of_a_second_is_earned_back() {
        let t0 = Instant::now();
        let mut b = CpuBudget::new(100 * MS);
        // Two seconds of budget in the bucket: a burst runs.
        assert_eq!(b.may_run(t0, true), Throttle::Run);
        b.charge(200_000_000);
        assert_eq!(b.may_run(t0, true), Throttle::Began);
        assert_eq!(b.may_run(t0 + 50 * MS, true), Throttle::Still, "5 ms earned back, 10 needed");
        assert_eq!(b.may_run(t0 + 100 * MS, true), Throttle::Run);
        b.charge(1_000_000_000);
        assert_eq!(b.may_run(t0 + 100 * MS, false), Throttle::Run, "no pressure: it takes only idle time");
        assert_eq!(b.may_run(t0 + 200 * MS, true), Throttle::Run, "its debt forgiven, it earns from zero");
        // Steady use of 6 ms every 10 ms (60%) against a 10% budget: it
        // runs about a sixth of the time.
        let mut b = CpuBudget::new(100 * MS);
        b.charge(200_000_000);
        let (mut ran, mut t) = (0, t0);
        for _ in 0..1000 {
            t += 10 * MS;
            if b.may_run(t, true) == Throttle::Run {
                b.charge(6_000_000);
                ran += 1;
            }
        }
        assert!((150..=190).contains(&ran), "ran {ran} of 1000");
        let mut none = CpuBudget::new(Duration::ZERO);
        none.charge(u64::MAX);
        assert_eq!(none.may_run(t0, true), Throttle::Run, "0: no budget");
    }

    #[test]
    fn pressure_starts_above_four_fifths_busy_and_ends_below_half() {
        let t0 = Instant::now();
        let mut p = Pressure { window_start: t0, busy_ns: 0, pressed: false };
        assert_eq!(p.record(200 * MS, t0 + 260 * MS), None, "77% busy");
        assert_eq!(p.record(240 * MS, t0 + 520 * MS), Some(true), "92% busy");
        assert_eq!(p.record(150 * MS, t0 + 780 * MS), None, "58% busy: still");
        assert!(p.pressed());
        assert_eq!(p.record(100 * MS, t0 + 1040 * MS), Some(false), "38% busy: over");
    }

    #[test]
    fn alerts_beyond_the_rate_are_refused_and_the_rate_refills() {
        let t0 = Instant::now();
        let mut r = AlertRate::new(100);
        assert_eq!(r.take(60, t0), 60);
        assert_eq!(r.take(60, t0), 40);
        assert_eq!(r.take(10, t0), 0);
        assert_eq!(r.take(100, t0 + 500 * MS), 50);
        assert_eq!(r.take(1000, t0 + 10_000 * MS), 100, "the bucket holds one second");
    }
}
