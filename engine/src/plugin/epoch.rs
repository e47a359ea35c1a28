//! The epoch ticker: call deadlines are counted in epoch ticks, so while a
//! rule runs a thread must advance the engine's epoch every tick. It parks
//! once no call has run for [`PARK_AFTER`], and the next call wakes it: an
//! idle daemon does not wake a thousand times a second for nothing.
//!
//! Every entry into a rule's code (instantiate, `init`, `on-batch`,
//! `snapshot`, `restore`, `metadata`) holds an [`Armed`] guard for its
//! duration. A call that runs while the ticker sleeps gets its full
//! deadline: the epoch does not move until the ticker is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::Engine;

/// How long without any call before the ticker parks.
pub const PARK_AFTER: Duration = Duration::from_millis(200);

#[derive(Default)]
struct Shared {
    /// Calls in progress.
    active: AtomicUsize,
    /// A call began since the ticker last looked.
    entered: AtomicBool,
    parked: AtomicBool,
    stop: AtomicBool,
    /// Epoch increments so far (for tests and debugging).
    ticks: AtomicU64,
}

/// Owns the ticker thread; stops it when dropped.
pub struct EpochTicker {
    shared: Arc<Shared>,
    thread: Thread,
}

/// Keeps the ticker running while a rule's code runs.
#[must_use = "the ticker may park while the call runs: hold the guard until the call returns"]
pub struct Armed<'a>(&'a Shared);

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, SeqCst);
    }
}

impl EpochTicker {
    pub fn start(engine: Engine, tick: Duration) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let idle_ticks_to_park = (PARK_AFTER.as_nanos() / tick.as_nanos().max(1)).max(1) as u64;
        let s = shared.clone();
        let handle = std::thread::Builder::new().name("vigil-epoch".into()).spawn(move || {
            let mut idle = 0u64;
            while !s.stop.load(SeqCst) {
                std::thread::sleep(tick);
                engine.increment_epoch();
                s.ticks.fetch_add(1, SeqCst);
                let busy = s.entered.swap(false, SeqCst) || s.active.load(SeqCst) > 0;
                idle = if busy { 0 } else { idle + 1 };
                if idle >= idle_ticks_to_park {
                    // Announce first, then look: a caller that armed before
                    // this store is seen here; one after it sees `parked`
                    // and unparks (a token that makes park return at once).
                    s.parked.store(true, SeqCst);
                    if s.active.load(SeqCst) == 0 && !s.stop.load(SeqCst) {
                        tracing::trace!("epoch ticker parked: no rule call for a while");
                        std::thread::park();
                    }
                    s.parked.store(false, SeqCst);
                    idle = 0;
                }
            }
        })?;
        Ok(EpochTicker { shared, thread: handle.thread().clone() })
    }

    /// Marks a call into a rule as in progress until the guard drops.
    #[must_use = "the ticker may park while the call runs: hold the guard until the call returns"]
    pub fn arm(&self) -> Armed<'_> {
        let s = &*self.shared;
        s.active.fetch_add(1, SeqCst);
        s.entered.store(true, SeqCst);
        if s.parked.load(SeqCst) {
            self.thread.unpark();
        }
        Armed(s)
    }

    /// Epoch increments so far.
    pub fn ticks(&self) -> u64 {
        self.shared.ticks.load(SeqCst)
    }

    /// True while the ticker sleeps for want of calls.
    pub fn is_parked(&self) -> bool {
        self.shared.parked.load(SeqCst)
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        self.thread.unpark();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn parks_when_idle_ticks_while_a_call_runs_and_parks_again_after() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).unwrap();
        let ticker = EpochTicker::start(engine, Duration::from_millis(1)).unwrap();
        wait_until("the idle ticker parks", || ticker.is_parked());
        let parked_at = ticker.ticks();
        std::thread::sleep(PARK_AFTER * 2);
        assert_eq!(ticker.ticks(), parked_at, "a parked ticker does not tick");

        let armed = ticker.arm();
        wait_until("a call makes it tick", || ticker.ticks() >= parked_at + 5);
        // However long the call, the ticker keeps ticking (its deadline must fire).
        std::thread::sleep(PARK_AFTER * 2);
        assert!(!ticker.is_parked(), "never parked during a call");
        let during = ticker.ticks();
        wait_until("it keeps ticking", || ticker.ticks() > during);
        drop(armed);
        wait_until("it parks again after the call", || ticker.is_parked());
    }
}
