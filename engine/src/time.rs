//! Clocks.

/// Wall-clock nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC in nanoseconds (what the kernel stamps events with).
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time the calling thread has used, in nanoseconds
/// (CLOCK_THREAD_CPUTIME_ID): what a rule's call costs, whatever else the
/// host runs meanwhile.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Wall-clock time of a CLOCK_MONOTONIC timestamp (approximate: the offset
/// between the clocks is taken now).
pub fn monotonic_to_wall(mono_ns: u64) -> u64 {
    now_ns().saturating_sub(monotonic_ns().saturating_sub(mono_ns))
}

/// CLOCK_BOOTTIME in nanoseconds (what the eBPF programs stamp events with).
pub fn boottime_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}
