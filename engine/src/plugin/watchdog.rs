//! Call deadlines, watched by a thread that sleeps until the next one is due.
//!
//! Every entry into a rule's code (instantiate, `metadata`, `init`,
//! `on-batch`, `snapshot`, `restore`) goes through [`Watchdog::arm`], which
//! writes the call's deadline into its store and registers it here; the
//! returned [`Armed`] guard unregisters it when the call returns. The
//! watchdog thread sleeps until the earliest registered deadline. If that
//! call is still running then, it advances wasmtime's epoch: every store in
//! a call checks the clock against its own deadline in its epoch callback,
//! and only the overdue one is interrupted.
//!
//! A deadline counts the calling thread's CPU time ([`DeadlineClock::Cpu`],
//! the default) or wall time. On CPU time, a call preempted on a loaded
//! host is not taken for a hang: when its wall deadline passes, the epoch
//! callback compares the thread's CPU clock with the call's budget and lets
//! it run on if it is within. A hard wall limit (ten times the timeout, at
//! least a second more) still stops a call that waits without using CPU.
//!
//! A call that ends in time costs two lock round-trips and no wake-up: under
//! a stream of short calls the watchdog wakes about once per deadline period
//! (10 ms by default), not once per epoch tick. After [`PARK_AFTER`] without
//! a call it parks, and the next call wakes it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

use wasmtime::{Engine, Store, UpdateDeadline};

pub use crate::config::DeadlineClock;

/// When a call must have returned.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// The wall time at which the watchdog first looks: the timeout from
    /// the call's start.
    pub wall: Instant,
    /// On CPU time: the calling thread's CPU clock (ns) the call may reach.
    pub cpu_ns: Option<u64>,
    /// Interrupted then whatever its CPU time.
    pub hard: Instant,
    /// The calling thread's CPU clock (ns) when the deadline was made: the
    /// call's start, for what it costs.
    pub cpu_start_ns: u64,
}

impl Deadline {
    /// `timeout` from now on `clock`. Must be made on the thread that makes
    /// the call: the CPU clock is that thread's.
    pub fn after(timeout: Duration, clock: DeadlineClock) -> Self {
        let now = Instant::now();
        let wall = now + timeout;
        let cpu_start_ns = crate::time::thread_cpu_ns();
        match clock {
            DeadlineClock::Wall => Deadline { wall, cpu_ns: None, hard: wall, cpu_start_ns },
            DeadlineClock::Cpu => Deadline {
                wall,
                cpu_ns: Some(cpu_start_ns + timeout.as_nanos() as u64),
                hard: now + (timeout * 10).max(timeout + Duration::from_secs(1)),
                cpu_start_ns,
            },
        }
    }

    /// Whether the call has run past it. Called on the calling thread.
    fn passed(&self, now: Instant) -> bool {
        now >= self.hard || (now >= self.wall && self.cpu_ns.is_none_or(|cpu| crate::time::thread_cpu_ns() >= cpu))
    }
}

/// The deadline a store's data keeps for the watchdog.
pub trait CallDue: 'static {
    fn call_due(&self) -> Deadline;
    fn set_call_due(&mut self, due: Deadline);
}

/// How long without any call before the watchdog parks.
pub const PARK_AFTER: Duration = Duration::from_millis(200);
/// While a call is overdue (it may be in host code, where wasm cannot be
/// interrupted), the epoch is advanced again this often.
const OVERDUE_RETRY: Duration = Duration::from_millis(1);

#[derive(Default)]
struct State {
    /// Calls in progress: (id, deadline).
    calls: Vec<(u64, Instant)>,
    next_id: u64,
    /// When the watchdog looks next; `None` while it is parked.
    wakes_at: Option<Instant>,
    /// A call was armed since the watchdog last looked.
    entered: bool,
    /// The timeout of the latest call: the watchdog's nap between calls, so
    /// that a call armed during the nap is due after it ends (no wake-up).
    nap: Duration,
    stop: bool,
}

struct Shared {
    engine: Engine,
    state: Mutex<State>,
    /// Epoch increments (each one interrupts whatever call is overdue).
    interrupts: AtomicU64,
    /// Times the watchdog looked at the calls (for tests).
    wakes: AtomicU64,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind: carry on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Owns the watchdog thread; stops it when dropped.
pub struct Watchdog {
    shared: Arc<Shared>,
    thread: Thread,
}

/// One call in progress; unregisters it when dropped.
#[must_use = "the call is watched only while the guard lives: hold it until the call returns"]
pub struct Armed<'a> {
    shared: &'a Shared,
    id: u64,
    cpu_start_ns: u64,
}

impl Armed<'_> {
    /// The calling thread's CPU clock (ns) when the call was armed.
    pub fn cpu_start_ns(&self) -> u64 {
        self.cpu_start_ns
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        let mut st = self.shared.state();
        if let Some(i) = st.calls.iter().position(|c| c.0 == self.id) {
            st.calls.swap_remove(i);
        }
    }
}

/// Makes `store` interruptible by the watchdog: when the epoch moves past
/// its deadline, the call in progress traps if its own deadline has passed,
/// and otherwise runs on until the next move. Call once per store.
pub fn watch<T: CallDue>(store: &mut Store<T>) {
    store.epoch_deadline_callback(|ctx| {
        Ok(if ctx.data().call_due().passed(Instant::now()) {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Continue(1)
        })
    });
}

impl Watchdog {
    pub fn start(engine: Engine) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            engine,
            // Awake until its first look, which finds nothing and parks.
            state: Mutex::new(State {
                wakes_at: Some(Instant::now()),
                nap: Duration::from_millis(10),
                ..State::default()
            }),
            interrupts: AtomicU64::new(0),
            wakes: AtomicU64::new(0),
        });
        let s = shared.clone();
        let handle = std::thread::Builder::new().name("vigil-watchdog".into()).spawn(move || s.run())?;
        Ok(Watchdog { shared, thread: handle.thread().clone() })
    }

    /// Gives the next call into `store` `timeout` from now on `clock`, and
    /// watches it until the guard drops. The store must have been passed to
    /// [`watch`]; the call must be made on this thread.
    pub fn arm<'a, T: CallDue>(&'a self, store: &mut Store<T>, timeout: Duration, clock: DeadlineClock) -> Armed<'a> {
        let deadline = Deadline::after(timeout, clock);
        let (due, cpu_start_ns) = (deadline.wall, deadline.cpu_start_ns);
        store.data_mut().set_call_due(deadline);
        store.set_epoch_deadline(1);
        let mut st = self.shared.state();
        let id = st.next_id;
        st.next_id += 1;
        st.calls.push((id, due));
        st.entered = true;
        st.nap = timeout;
        let wake = st.wakes_at.is_none_or(|at| due < at);
        if wake {
            st.wakes_at = Some(due);
        }
        drop(st);
        if wake {
            self.thread.unpark();
        }
        Armed { shared: &self.shared, id, cpu_start_ns }
    }

    /// Epoch increments so far: one per look that found a call overdue.
    pub fn interrupts(&self) -> u64 {
        self.shared.interrupts.load(Relaxed)
    }

    /// Times the watchdog has looked at the calls in progress.
    pub fn wakes(&self) -> u64 {
        self.shared.wakes.load(Relaxed)
    }

    /// True while the watchdog sleeps for want of calls.
    pub fn is_parked(&self) -> bool {
        self.shared.state().wakes_at.is_none()
    }
}

impl Shared {
    fn run(&self) {
        let mut last_call: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let mut st = self.state();
            if st.stop {
                return;
            }
            self.wakes.fetch_add(1, Relaxed);
            let next_due = st.calls.iter().map(|c| c.1).min();
            let overdue = next_due.is_some_and(|due| due <= now);
            if overdue {
                self.engine.increment_epoch();
                self.interrupts.fetch_add(1, Relaxed);
            }
            if std::mem::take(&mut st.entered) || next_due.is_some() {
                last_call = Some(now);
            }
            let wake_at = match next_due {
                Some(_) if overdue => Some(now + OVERDUE_RETRY),
                Some(due) => Some(due),
                None if last_call.is_some_and(|t| now.duration_since(t) < PARK_AFTER) => Some(now + st.nap),
                None => None,
            };
            st.wakes_at = wake_at;
            if wake_at.is_none() {
                // Logged under the lock: nothing between here and `park` may
                // take the wake-up token an `arm` leaves.
                tracing::trace!("watchdog parks: no rule call for a while");
            }
            drop(st);
            match wake_at {
                Some(at) => std::thread::park_timeout(at.saturating_duration_since(now)),
                None => std::thread::park(),
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.state().stop = true;
        self.thread.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store's data that only keeps the deadline.
    struct Due(Deadline);

    impl CallDue for Due {
        fn call_due(&self) -> Deadline {
            self.0
        }
        fn set_call_due(&mut self, due: Deadline) {
            self.0 = due;
        }
    }

    fn due() -> Due {
        Due(Deadline::after(Duration::ZERO, DeadlineClock::Wall))
    }

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn setup() -> (Watchdog, Store<Due>) {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).unwrap();
        let mut store = Store::new(&engine, due());
        watch(&mut store);
        (Watchdog::start(engine).unwrap(), store)
    }

    #[test]
    fn calls_that_end_in_time_are_never_interrupted_and_an_idle_watchdog_parks() {
        let (dog, mut store) = setup();
        wait_until("the idle watchdog parks", || dog.is_parked());
        let wakes_before = dog.wakes();
        std::thread::sleep(PARK_AFTER);
        assert_eq!(dog.wakes(), wakes_before, "a parked watchdog does not wake");

        let calls = 2_000;
        for _ in 0..calls {
            let _armed = dog.arm(&mut store, Duration::from_millis(500), DeadlineClock::Wall);
            std::thread::sleep(Duration::from_micros(20));
        }
        assert_eq!(dog.interrupts(), 0, "no call was overdue");
        // It looked when the first call woke it, and not once per call.
        assert!(dog.wakes() - wakes_before < calls / 10, "{} wakes for {calls} calls", dog.wakes() - wakes_before);
        wait_until("it parks again after the calls", || dog.is_parked());
    }

    #[test]
    fn a_cpu_deadline_counts_the_calling_threads_cpu_time_not_its_waits() {
        let d = Deadline::after(Duration::from_millis(20), DeadlineClock::Cpu);
        std::thread::sleep(Duration::from_millis(40));
        assert!(!d.passed(Instant::now()), "preempted (here: asleep) is not running");
        let spun = Instant::now();
        while !d.passed(Instant::now()) {
            assert!(spun.elapsed() < Duration::from_secs(5), "20 ms of CPU pass it");
            std::hint::spin_loop();
        }
        assert!(d.passed(d.hard), "the hard limit stops a call whatever its CPU time");
        assert!(d.hard >= d.wall + Duration::from_secs(1));
        let wall = Deadline::after(Duration::from_millis(20), DeadlineClock::Wall);
        std::thread::sleep(Duration::from_millis(30));
        assert!(wall.passed(Instant::now()), "on wall time, waiting counts");
    }

    #[test]
    fn an_overdue_call_moves_the_epoch_after_its_deadline_until_it_returns() {
        let (dog, mut store) = setup();
        let armed_at = Instant::now();
        let armed = dog.arm(&mut store, Duration::from_millis(30), DeadlineClock::Wall);
        wait_until("the overdue call is interrupted", || dog.interrupts() > 0);
        assert!(armed_at.elapsed() >= Duration::from_millis(30), "not before its deadline");
        // The call has not returned (it may be in host code): keep at it.
        let first = dog.interrupts();
        wait_until("it interrupts again", || dog.interrupts() > first);
        drop(armed);
        std::thread::sleep(Duration::from_millis(20));
        let after = dog.interrupts();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(dog.interrupts(), after, "nothing to interrupt once the call returned");
    }

    #[test]
    fn a_shorter_deadline_armed_during_a_longer_one_wakes_the_watchdog() {
        let (dog, mut store) = setup();
        let mut other = Store::new(store.engine(), due());
        watch(&mut other);
        let _long = dog.arm(&mut store, Duration::from_secs(60), DeadlineClock::Wall);
        let short_at = Instant::now();
        let _short = dog.arm(&mut other, Duration::from_millis(20), DeadlineClock::Wall);
        wait_until("the short call is interrupted", || dog.interrupts() > 0);
        assert!(short_at.elapsed() < Duration::from_secs(30), "it did not wait for the long deadline");
    }
}
