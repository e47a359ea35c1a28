//! How the kernel schedules the daemon's latency-bound threads.
//!
//! On a host whose CPUs are saturated (an exec storm is the case that
//! matters), a thread woken by a batch of events waits for the
//! running task's time slice to end: up to a few milliseconds with EEVDF's
//! default slice. Linux 6.12 and later let a normal (`SCHED_OTHER`) thread ask
//! for a shorter slice through `sched_setattr`'s `sched_runtime`: it then gets
//! an earlier deadline and preempts on wake-up, without more CPU share (its
//! weight, its nice value, is unchanged) and without privileges. Older
//! kernels ignore the request; the thread keeps the default.
//!
//! The opposite lever is `SCHED_BATCH`: the same fair class and weight, but a
//! woken thread never preempts the running task; it runs when that task
//! blocks or its slice ends. Every preemption costs the task it interrupts a
//! context switch and its caches: on a host whose work blocks often (an exec
//! storm blocks in every fork and wait), not preempting costs little latency.

use std::io;
use std::time::Duration;

/// The kernel accepts slices from 100 µs to 100 ms.
pub const MIN_SLICE: Duration = Duration::from_micros(100);
pub const MAX_SLICE: Duration = Duration::from_millis(100);

/// `struct sched_attr` (SCHED_ATTR_SIZE_VER1).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

/// Puts the calling thread under `policy` with a time slice of `slice`
/// (clamped to what the kernel accepts; zero is the kernel's), keeping its
/// nice value. Threads it starts afterwards inherit both. `SCHED_OTHER` with
/// a zero `slice` does nothing.
pub fn request_policy(policy: Policy, slice: Duration) -> io::Result<()> {
    if slice.is_zero() && policy == Policy::Other {
        return Ok(());
    }
    let slice = if slice.is_zero() { slice } else { slice.clamp(MIN_SLICE, MAX_SLICE) };
    // SAFETY: getpriority has no memory arguments; errno is reset first
    // because -1 is also a valid nice value.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, 0)
    };
    if nice == -1 && io::Error::last_os_error().raw_os_error() != Some(0) {
        return Err(io::Error::last_os_error());
    }
    let attr = SchedAttr {
        size: size_of::<SchedAttr>() as u32,
        sched_policy: match policy {
            Policy::Other => libc::SCHED_OTHER,
            Policy::Batch => libc::SCHED_BATCH,
        } as u32,
        sched_nice: nice,
        sched_runtime: slice.as_nanos() as u64,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid sched_attr of the size it declares; pid 0
    // is the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A scheduling policy of the fair class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// `SCHED_OTHER`: a woken thread may preempt the running task.
    Other,
    /// `SCHED_BATCH`: it never preempts on wake-up.
    Batch,
}

/// How the thread that dispatches asks to be scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    /// Its nice value (0: the default; lower runs sooner when woken).
    pub nice: i32,
    /// Its time slice ([`request_policy`]; zero keeps the kernel's).
    pub slice: Duration,
    pub policy: Policy,
}

/// Gives the calling thread `priority`: its nice value first, then the
/// policy and slice (which keep the nice value). A refusal (no `CAP_SYS_NICE` for a
/// negative nice, a kernel without custom slices) only costs latency: it is
/// logged, not an error. Threads started afterwards inherit both.
pub fn use_priority(thread: &str, priority: Priority) {
    if priority.nice != 0 {
        // SAFETY: no memory arguments; who 0 is the calling thread.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, priority.nice) } != 0 {
            tracing::warn!(
                thread, nice = priority.nice, error = %io::Error::last_os_error(),
                "cannot set the thread's nice value (CAP_SYS_NICE?); latency under load may be higher"
            );
        }
    }
    match request_policy(priority.policy, priority.slice) {
        Ok(()) => tracing::debug!(thread, slice = ?priority.slice, policy = ?priority.policy, "scheduling requested"),
        Err(e) => tracing::warn!(
            thread, slice = ?priority.slice, policy = ?priority.policy, error = %e,
            "the kernel refused the time slice or policy; latency under load may be higher"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's time slice as the kernel reports it (`sched_runtime`
    /// of `sched_getattr`), as the kernel reports it.
    fn current_slice() -> io::Result<Duration> {
        let mut attr = SchedAttr::default();
        // SAFETY: `attr` is writable and its size is passed.
        let rc = unsafe {
            libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut SchedAttr, size_of::<SchedAttr>() as u32, 0)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Duration::from_nanos(attr.sched_runtime))
    }

    fn kernel_at_least(major: u32, minor: u32) -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
    }

    #[test]
    fn a_thread_gets_its_nice_value_and_keeps_it_with_a_slice() {
        std::thread::spawn(|| {
            // SAFETY: no memory arguments.
            let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            // Raising nice needs no privilege; lowering it does (root in CI).
            let nice = before + 1;
            use_priority("test", Priority { nice, slice: Duration::from_micros(200), policy: Policy::Other });
            // SAFETY: as above.
            assert_eq!(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }, nice);
            if kernel_at_least(6, 12) {
                assert_eq!(current_slice().unwrap(), Duration::from_micros(200));
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_gets_the_slice_it_asks_for_and_keeps_its_nice_value() {
        std::thread::spawn(|| {
            // SAFETY: no memory arguments.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            let before = current_slice().unwrap();
            request_policy(Policy::Other, Duration::from_micros(200)).unwrap();
            if kernel_at_least(6, 12) {
                assert_eq!(current_slice().unwrap(), Duration::from_micros(200), "slice before: {before:?}");
                request_policy(Policy::Other, Duration::from_micros(10)).unwrap();
                assert_eq!(current_slice().unwrap(), MIN_SLICE, "clamped to the kernel's minimum");
            } else {
                eprintln!("kernel before 6.12: no custom slices for SCHED_OTHER; only the call is checked");
            }
            // SAFETY: as above.
            assert_eq!(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }, nice);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_can_give_up_wakeup_preemption_and_keep_its_nice_value() {
        std::thread::spawn(|| {
            // SAFETY: no memory arguments.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) } + 1;
            use_priority("test", Priority { nice, slice: Duration::ZERO, policy: Policy::Batch });
            // SAFETY: as above; 0 is the calling thread.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_BATCH);
            assert_eq!(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }, nice);
        })
        .join()
        .unwrap();
    }
}
