//! A rule's instances: how one is made ([`Recipe`]: instantiate, then
//! `init`), what a live one is ([`Live`]), and the calls that hand a rule's
//! state to its next version (`snapshot`, `restore`).
//!
//! Making an instance runs the rule's own code (`init` may build tables for
//! hundreds of milliseconds), and so does a hand-over: both run on a thread
//! of their own ([`Restart`]), never on the dispatching one, which keeps
//! handing events to the other rules meanwhile.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, TryRecvError};
use wasmtime::Store;
use wasmtime_wasi::WasiCtx;

use super::host::{HostState, Rule, RulePre};
use super::meta::Limits;
use super::watchdog::{self, Watchdog};
use crate::config::WasiGrant;

/// What it takes to make an instance of a rule; shared with the threads
/// that make them.
pub struct Recipe {
    pub id: Arc<str>,
    pub limits: Limits,
    pub config_json: String,
    pub wasi: Option<WasiGrant>,
    pub pre: RulePre<HostState>,
    pub engine: wasmtime::Engine,
    pub watchdog: Arc<Watchdog>,
}

/// Why a call did not complete.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    #[error("exceeded its call deadline of {0:?}")]
    Timeout(Duration),
    #[error("exceeded its memory limit of {0} bytes")]
    Memory(usize),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("{0}")]
    BadOutput(String),
    #[error("quarantined for another {0:?}")]
    Quarantined(Duration),
    #[error("over its CPU budget")]
    Throttled,
    /// Its instance is being made (after a fault, or to take over from its
    /// previous version): the batch can wait.
    #[error("restarting")]
    Restarting,
}

/// A live instance.
pub struct Live {
    pub store: Store<HostState>,
    pub rule: Rule,
}

/// Why no instance could be made.
pub enum InstantiateError {
    /// `init` returned an error (or the WASI grant could not be set up).
    Refused(String),
    Fault(Fault),
}

impl InstantiateError {
    /// As a fault of a running rule (its rebuild failed).
    pub fn into_fault(self) -> Fault {
        match self {
            InstantiateError::Fault(f) => f,
            InstantiateError::Refused(msg) => Fault::Trap(format!("init refused on rebuild: {msg}")),
        }
    }
}

impl Recipe {
    /// The deadline of instantiation, `init`, `snapshot` and `restore`:
    /// one-off calls that may set up tables, so at least 500 ms.
    pub fn init_timeout(&self) -> Duration {
        self.limits.call_timeout.max(Duration::from_millis(500))
    }

    /// A new instance, `init`ed with the rule's config.
    pub fn instantiate(&self) -> Result<Live, InstantiateError> {
        let wasi = match &self.wasi {
            Some(grant) => super::policy::wasi_ctx(grant).map_err(|e| InstantiateError::Refused(e.to_string()))?,
            None => WasiCtx::builder().build(),
        };
        let mut store = new_store(&self.engine, self.id.clone(), self.limits.memory, wasi);
        let _armed = self.watchdog.arm(&mut store, self.init_timeout(), self.limits.deadline_clock);
        let rule = match self.pre.instantiate(&mut store) {
            Ok(r) => r,
            Err(e) => return Err(InstantiateError::Fault(self.classify(&store, e))),
        };
        match rule.vigil_rules_detector().call_init(&mut store, &self.config_json) {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => return Err(InstantiateError::Refused(rule_text(&msg))),
            Err(e) => return Err(InstantiateError::Fault(self.classify(&store, e))),
        }
        Ok(Live { store, rule })
    }

    /// What went wrong in a call into `store`.
    pub fn classify(&self, store: &Store<HostState>, e: wasmtime::Error) -> Fault {
        if store.data().memory_exceeded {
            Fault::Memory(self.limits.memory)
        } else if matches!(e.downcast_ref::<wasmtime::Trap>(), Some(wasmtime::Trap::Interrupt)) {
            Fault::Timeout(self.limits.call_timeout)
        } else {
            // One line for the log: the trap or the host error that caused it.
            tracing::debug!(rule = %self.id, error = ?e, "fault details (wasm backtrace)");
            let cause = match e.downcast_ref::<wasmtime::Trap>() {
                Some(trap) => trap.to_string(),
                None => e.root_cause().to_string(),
            };
            Fault::Trap(cause)
        }
    }

    /// `live`'s state for its successor; `None` (logged) if it has none or
    /// the call failed.
    fn snapshot(&self, live: &mut Live) -> Option<Vec<u8>> {
        let _armed = self.watchdog.arm(&mut live.store, self.init_timeout(), self.limits.deadline_clock);
        match live.rule.vigil_rules_detector().call_snapshot(&mut live.store) {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(rule = %self.id, error = %e, "snapshot failed; the new version starts fresh");
                None
            }
        }
    }

    /// Hands `state` to `live`; false if the call trapped (the instance is
    /// then unusable).
    #[allow(clippy::ptr_arg)] // the generated binding takes &Vec
    fn restore(&self, live: &mut Live, state: &Vec<u8>) -> bool {
        let _armed = self.watchdog.arm(&mut live.store, self.init_timeout(), self.limits.deadline_clock);
        match live.rule.vigil_rules_detector().call_restore(&mut live.store, state) {
            Ok(Ok(())) => tracing::debug!(rule = %self.id, bytes = state.len(), "state restored"),
            Ok(Err(msg)) => {
                tracing::warn!(rule = %self.id, error = %rule_text(&msg), "new version refused the old state; starting fresh")
            }
            Err(e) => {
                tracing::warn!(rule = %self.id, error = %e, "restore trapped; starting fresh");
                return false;
            }
        }
        true
    }
}

/// An instance being made on a thread of its own.
pub struct Restart {
    result: Receiver<Result<Live, InstantiateError>>,
}

/// Where a [`Restart`] is.
pub enum Restarted {
    Pending,
    Done(Result<Live, InstantiateError>),
}

/// Stack of the threads that run a rule's `init`, `snapshot` and `restore`
/// (wasm runs on the calling thread's stack).
const RESTART_STACK: usize = 8 << 20;

impl Restart {
    /// A new instance of `recipe`.
    pub fn rebuild(recipe: Arc<Recipe>) -> Restart {
        Self::spawn(&recipe.id.clone(), move || recipe.instantiate())
    }

    /// `new` (live already, from loading) takes over from `old`: `old`'s
    /// state is snapshotted and restored into `new`. If the restore traps,
    /// a fresh instance of `new` is made instead.
    pub fn hand_over(old: Option<(Arc<Recipe>, Live)>, new: Arc<Recipe>, live: Live) -> Restart {
        Self::spawn(&new.id.clone(), move || {
            let mut live = live;
            let state = old.and_then(|(recipe, mut old)| recipe.snapshot(&mut old));
            if let Some(state) = state
                && !new.restore(&mut live, &state)
            {
                return new.instantiate();
            }
            Ok(live)
        })
    }

    fn spawn(id: &str, job: impl FnOnce() -> Result<Live, InstantiateError> + Send + 'static) -> Restart {
        type Job = Box<dyn FnOnce() -> Result<Live, InstantiateError> + Send>;
        let (tx, rx) = crossbeam_channel::bounded(1);
        let slot: Arc<Mutex<Option<Job>>> = Arc::new(Mutex::new(Some(Box::new(job))));
        let spawned = std::thread::Builder::new().name("vigil-restart".into()).stack_size(RESTART_STACK).spawn({
            let (slot, tx) = (slot.clone(), tx.clone());
            move || {
                let job = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(job) = job {
                    let _ = tx.send(job());
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(rule = %id, error = %e, "cannot start a thread to restart the rule; it is restarted inline");
            let job = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(job) = job {
                let _ = tx.send(job());
            }
        }
        Restart { result: rx }
    }

    /// Whether the instance is ready.
    pub fn poll(&self) -> Restarted {
        match self.result.try_recv() {
            Ok(r) => Restarted::Done(r),
            Err(TryRecvError::Empty) => Restarted::Pending,
            Err(TryRecvError::Disconnected) => {
                Restarted::Done(Err(InstantiateError::Fault(Fault::Trap("the restart thread panicked".into()))))
            }
        }
    }

    /// Waits for the instance.
    pub fn wait(self) -> Result<Live, InstantiateError> {
        self.result
            .recv()
            .unwrap_or_else(|_| Err(InstantiateError::Fault(Fault::Trap("the restart thread panicked".into()))))
    }
}

pub fn new_store(engine: &wasmtime::Engine, id: Arc<str>, memory: usize, wasi: WasiCtx) -> Store<HostState> {
    let mut store = Store::new(engine, HostState::new(id, memory, wasi));
    store.limiter(|s| s);
    watchdog::watch(&mut store);
    store
}

/// Longest text a rule supplies (an error message) that the host keeps.
const MAX_RULE_TEXT: usize = 1024;

/// Text a rule supplied, for the daemon's log and errors: cut to
/// [`MAX_RULE_TEXT`] and with its control characters escaped.
pub fn rule_text(text: &str) -> String {
    let mut end = text.len().min(MAX_RULE_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = if end < text.len() { "… (cut)" } else { "" };
    format!("{}{cut}", crate::escape_controls(&text[..end]))
}
