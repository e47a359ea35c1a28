//! `[dispatch]`: how rules are called (batching, deadlines, budgets, limits, fault policy).

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// Most events handed to a rule in one call.
    pub batch_size: usize,
    /// Deadline of one call into a rule (one batch).
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// What `call_timeout` counts: "cpu" (the default; the CPU time of the
    /// calling thread, so a call preempted on a loaded host is not taken
    /// for a hang; a call still running at ten times its timeout, at least
    /// a second more, is stopped whatever its CPU time) or "wall" (elapsed
    /// time). Measurements in BENCHMARKS.md.
    pub deadline_clock: DeadlineClock,
    /// CPU time each rule may use per second, on average over a few
    /// seconds: a rule over it is throttled (its events are skipped,
    /// counted, and reported to it as `events-lost`, reason
    /// `rule-throttled`) instead of slowing the other rules and the source.
    /// The rule files' instance, which runs every rule file, gets at least
    /// 750ms. "0s": no budget (what a replay without `--realtime` runs
    /// with: as fast as it reads, the alerts must not depend on the
    /// machine's speed).
    #[serde(with = "humantime_serde")]
    pub cpu_budget: Duration,
    /// Alerts each rule may raise per second (a burst of as many is
    /// allowed): past it its alerts are dropped before they are built, and
    /// counted. A safety valve against a rule that floods; shaping
    /// (`[alerts]`) is where alert rates are tuned.
    pub max_alerts_per_sec: u32,
    /// Memory cap of each rule instance.
    pub memory_limit: ByteSize,
    /// Faults (traps, timeouts, memory) within `fault_window` that quarantine a rule.
    pub max_faults: u32,
    /// The window `max_faults` are counted in.
    #[serde(with = "humantime_serde")]
    pub fault_window: Duration,
    /// First quarantine; each next one doubles, up to `quarantine_max`.
    #[serde(with = "humantime_serde")]
    pub quarantine_initial: Duration,
    /// The longest quarantine: each one doubles from `quarantine_initial`
    /// up to this.
    #[serde(with = "humantime_serde")]
    pub quarantine_max: Duration,
    /// The time slice the thread that dispatches (the eBPF source's reader
    /// with `inline_dispatch`, else the pipeline's) asks the kernel for
    /// (Linux 6.12+, EEVDF): a short one lets a SCHED_OTHER thread preempt,
    /// on a saturated host, as soon as it is woken, instead of waiting out a
    /// busy task's slice; it gets no more CPU share. 0 (the default) keeps
    /// the kernel's (figures in BENCHMARKS.md).
    #[serde(with = "humantime_serde")]
    pub thread_slice: Duration,
    /// The nice value of that thread (-20..=19; needs CAP_SYS_NICE below
    /// 0). It does little work but is latency-bound: at -5 its larger share
    /// gets it onto a saturated CPU sooner once it may run, as auditd's
    /// `priority_boost` does.
    /// 0 keeps the default.
    pub thread_nice: i32,
    /// Its scheduling policy: "batch" (the default; SCHED_BATCH: its nice
    /// value's share, but when woken it waits for the running task to block
    /// or use up its slice, so it never preempts the host's work) or "other"
    /// (SCHED_OTHER: preempts when woken, as its nice value and slice allow).
    /// On 2 cores under an exec storm "batch" cost ~90 µs of exec p99 (still
    /// under 1 ms) and 3-5 points less storm slowdown (BENCHMARKS.md).
    pub thread_policy: crate::sched::Policy,
    /// Ignored, with a warning: call deadlines are no longer counted in
    /// epoch ticks (until 2026-12-06 the granularity of deadlines).
    #[serde(with = "humantime_serde")]
    pub epoch_tick: Option<Duration>,
}

/// What a call deadline counts (`dispatch.deadline_clock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeadlineClock {
    /// The CPU time of the thread making the call.
    Cpu,
    /// Elapsed time.
    Wall,
}

impl DispatchConfig {
    /// How the dispatching thread asks to be scheduled.
    pub fn priority(&self) -> crate::sched::Priority {
        crate::sched::Priority { nice: self.thread_nice, slice: self.thread_slice, policy: self.thread_policy }
    }
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            batch_size: 128,
            call_timeout: Duration::from_millis(10),
            deadline_clock: DeadlineClock::Cpu,
            cpu_budget: Duration::from_millis(500),
            max_alerts_per_sec: 50_000,
            memory_limit: ByteSize::mib(64),
            max_faults: 3,
            fault_window: Duration::from_secs(60),
            quarantine_initial: Duration::from_secs(10),
            quarantine_max: Duration::from_secs(600),
            thread_slice: Duration::ZERO,
            thread_nice: -5,
            thread_policy: crate::sched::Policy::Batch,
            epoch_tick: None,
        }
    }
}
