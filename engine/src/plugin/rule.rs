//! One loaded rule: its metadata, its pre-linked component, its live
//! instance, its limits, its health (faults, quarantine) and its figures.
//!
//! A call runs under a deadline (see `watchdog`) and a memory cap. A trap, a timeout or
//! a memory overrun poisons the instance: it is dropped and rebuilt from the
//! pre-linked component on the next call. Repeated faults within a window
//! quarantine the rule with exponential backoff; other rules never notice.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime_wasi::WasiCtx;

use super::PluginError;
use super::host::{HostState, PluginHost, Rule, RulePre, content_hash};
use super::meta::{Limits, RuleMeta, RuleSettingsResolved};
use super::returned::{RuleAlert, parse_alerts, parse_metadata};
use super::warnings::WarnBudget;
use super::watchdog::{self, Watchdog};
use crate::config::WasiGrant;

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
    pub events_skipped: AtomicU64,
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
}

struct Live {
    store: Store<HostState>,
    rule: Rule,
}

#[derive(Debug, Default)]
struct Health {
    recent_faults: Vec<Instant>,
    quarantined_until: Option<Instant>,
    next_backoff: Option<Duration>,
    last_fault: Option<Instant>,
}

/// A rule ready to handle events.
pub struct LoadedRule {
    pub meta: RuleMeta,
    pub path: PathBuf,
    /// sha256 of the `.wasm` file.
    pub hash: String,
    pub stats: Arc<RuleStats>,
    pub limits: Limits,
    config_json: String,
    wasi: Option<WasiGrant>,
    pre: RulePre<HostState>,
    engine: wasmtime::Engine,
    watchdog: Arc<Watchdog>,
    live: Option<Live>,
    health: Health,
    id: Arc<str>,
    /// The host's warnings about this rule, rate-limited.
    warnings: WarnBudget,
}

impl LoadedRule {
    /// Whether one more host warning about this rule may be logged now.
    pub fn may_warn(&mut self) -> bool {
        self.warnings.allow(&self.id, Instant::now())
    }
}

/// Outcome of loading a file.
pub enum Loaded {
    Rule(Box<LoadedRule>),
    /// Valid, but disabled by config.
    Disabled(RuleMeta),
    /// An interpreter of rule files: not a rule by itself (see [`LoadedRule::load_files`]).
    Interpreter(RuleMeta),
}

/// The id of the rule that runs the rule directory's rule files.
pub const RULE_FILES_ID: &str = "rule-files";

/// The shortest call deadline of the rule files' instance: it runs all of
/// them, ~10 µs per event for the bundled set, so a batch of 128 takes ~1 ms;
/// 50 ms keeps a loaded host's preemptions from faulting it.
pub const RULE_FILES_MIN_TIMEOUT: Duration = Duration::from_millis(50);

impl LoadedRule {
    /// Compiles (or loads from cache), validates and instantiates the rule in
    /// `bytes`, then calls its `init`. Nothing of the old rule is touched: on
    /// any error the caller keeps what it had.
    pub fn load(
        host: &PluginHost,
        path: &Path,
        bytes: &[u8],
        hash: &str,
        settings: &dyn Fn(&RuleMeta) -> RuleSettingsResolved,
    ) -> Result<Loaded, PluginError> {
        let (component, cached) = host.compile(bytes, hash)?;
        tracing::debug!(path = %path.display(), cached, "compiled");
        let pre = host.prepare(&component, false)?;

        // Ask the rule who it is, in a throwaway instance with default limits.
        let probe_id: Arc<str> = Arc::from(path.display().to_string());
        let mut store = new_store(host.engine(), probe_id, 64 << 20, WasiCtx::builder().build());
        let json = {
            let _armed = host.watchdog().arm(&mut store, PROBE_TIMEOUT);
            let rule = pre.instantiate(&mut store).map_err(PluginError::Instantiate)?;
            rule.vigil_rules_detector().call_metadata(&mut store).map_err(PluginError::Instantiate)?
        };
        let mut meta = parse_metadata(&json).map_err(PluginError::BadMetadata)?;
        // Only instances the host made from rule files speak for named rules.
        meta.files = None;
        if meta.interprets {
            return Ok(Loaded::Interpreter(meta));
        }

        let resolved = settings(&meta);
        if !resolved.enabled {
            return Ok(Loaded::Disabled(meta));
        }
        let pre = if resolved.settings.wasi.is_some() { host.prepare(&component, true)? } else { pre };
        let wasi = resolved.settings.wasi.clone();
        let loaded = Self::start(host, meta, path, hash.to_string(), resolved.limits, resolved.config_json, wasi, pre)?;
        Ok(Loaded::Rule(Box::new(loaded)))
    }

    /// A rule from its parts, instantiated and `init`ed.
    #[allow(clippy::too_many_arguments)]
    fn start(
        host: &PluginHost,
        meta: RuleMeta,
        path: &Path,
        hash: String,
        limits: Limits,
        config_json: String,
        wasi: Option<WasiGrant>,
        pre: RulePre<HostState>,
    ) -> Result<LoadedRule, PluginError> {
        let mut loaded = LoadedRule {
            id: Arc::from(meta.id.as_str()),
            meta,
            path: path.to_path_buf(),
            hash,
            stats: Arc::new(RuleStats::default()),
            limits,
            config_json,
            wasi,
            pre,
            engine: host.engine().clone(),
            watchdog: host.watchdog().clone(),
            live: None,
            health: Health::default(),
            warnings: WarnBudget::default(),
        };
        loaded.instantiate().map_err(|e| match e {
            InstantiateError::Refused(msg) => PluginError::InitRefused(msg),
            InstantiateError::Fault(f) => PluginError::InitFault(f.to_string()),
        })?;
        Ok(loaded)
    }

    /// Instantiates the interpreter component in `bytes` with the rule
    /// files `files` as its input, under the id [`RULE_FILES_ID`] and the
    /// key `key` (the rule directory's rule files as one rule). `init`
    /// compiles them; `metadata`, asked again, reports what loaded.
    pub fn load_files(
        host: &PluginHost,
        key: &Path,
        bytes: &[u8],
        hash: &str,
        files: &[vigil_rulelang::SourceFile],
        settings: &dyn Fn(&RuleMeta) -> RuleSettingsResolved,
    ) -> Result<Loaded, PluginError> {
        let (component, _) = host.compile(bytes, hash)?;
        let pre = host.prepare(&component, false)?;
        let provisional = RuleMeta {
            id: RULE_FILES_ID.into(),
            subscriptions: [vigil_event::EventKind::ProcessExec].into_iter().collect(),
            ..Default::default()
        };
        let resolved = settings(&provisional);
        if !resolved.enabled {
            return Ok(Loaded::Disabled(provisional));
        }
        let config_json = serde_json::json!({ "id": RULE_FILES_ID, "files": files }).to_string();
        // One instance runs every rule file: give a batch the time of many rules.
        let mut limits = resolved.limits;
        limits.call_timeout = limits.call_timeout.max(RULE_FILES_MIN_TIMEOUT);
        let hash = content_hash(config_json.as_bytes());
        let mut loaded = Self::start(host, provisional, key, hash, limits, config_json, None, pre)?;
        let timeout = loaded.init_timeout();
        let live = loaded.live.as_mut().expect("instantiated above");
        let json = {
            let _armed = loaded.watchdog.arm(&mut live.store, timeout);
            live.rule.vigil_rules_detector().call_metadata(&mut live.store).map_err(PluginError::Instantiate)?
        };
        let meta = parse_metadata(&json).map_err(PluginError::BadMetadata)?;
        // The report must be about the files given, in their order.
        let reported: Option<Vec<&str>> =
            meta.files.as_ref().map(|f| f.report.files.iter().map(|f| f.name.as_str()).collect());
        let given: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        if meta.id != RULE_FILES_ID || reported.as_ref() != Some(&given) {
            return Err(PluginError::BadMetadata(format!(
                "{} is not an interpreter of rule files (it did not report on the files it was given)",
                key.display()
            )));
        }
        loaded.meta = meta;
        Ok(Loaded::Rule(Box::new(loaded)))
    }

    pub fn id(&self) -> &str {
        &self.meta.id
    }

    /// The deadline of instantiation, `init`, `snapshot` and `restore`:
    /// one-off calls that may set up tables, so at least 500 ms.
    fn init_timeout(&self) -> Duration {
        self.limits.call_timeout.max(Duration::from_millis(500))
    }

    fn instantiate(&mut self) -> Result<(), InstantiateError> {
        let wasi = match &self.wasi {
            Some(grant) => super::policy::wasi_ctx(grant).map_err(|e| InstantiateError::Refused(e.to_string()))?,
            None => WasiCtx::builder().build(),
        };
        let mut store = new_store(&self.engine, self.id.clone(), self.limits.memory, wasi);
        let _armed = self.watchdog.arm(&mut store, self.init_timeout());
        let rule = match self.pre.instantiate(&mut store) {
            Ok(r) => r,
            Err(e) => return Err(InstantiateError::Fault(self.classify(&store, e))),
        };
        match rule.vigil_rules_detector().call_init(&mut store, &self.config_json) {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => return Err(InstantiateError::Refused(rule_text(&msg))),
            Err(e) => return Err(InstantiateError::Fault(self.classify(&store, e))),
        }
        self.live = Some(Live { store, rule });
        Ok(())
    }

    fn classify(&self, store: &Store<HostState>, e: wasmtime::Error) -> Fault {
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

    /// Hands `batch` (packed, `events` of them) to the rule. (`&Vec` because
    /// that is what the generated binding takes.)
    #[allow(clippy::ptr_arg)]
    pub fn on_batch(&mut self, batch: &Vec<u8>, events: usize) -> Result<Vec<RuleAlert>, Fault> {
        let now = Instant::now();
        if let Some(until) = self.health.quarantined_until {
            if now < until {
                self.stats.events_skipped.fetch_add(events as u64, Ordering::Relaxed);
                return Err(Fault::Quarantined(until - now));
            }
            self.health.quarantined_until = None;
            tracing::info!(rule = %self.id, "quarantine over; rule runs again");
        }
        if self.live.is_none()
            && let Err(e) = self.instantiate()
        {
            let fault = match e {
                InstantiateError::Fault(f) => f,
                InstantiateError::Refused(msg) => Fault::Trap(format!("init refused on rebuild: {msg}")),
            };
            self.record_fault(&fault, now, events);
            return Err(fault);
        }
        let live = self.live.as_mut().expect("instantiated above");
        let armed = self.watchdog.arm(&mut live.store, self.limits.call_timeout);
        let result = live.rule.vigil_rules_detector().call_on_batch(&mut live.store, batch);
        drop(armed);
        // Parsing what it returned is the rule's time too.
        let result = result.map(|json| parse_alerts(&json, events));
        self.stats.time_ns.fetch_add(now.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.stats.events_in.fetch_add(events as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(Ok((alerts, dropped))) => {
                self.stats.alerts_out.fetch_add(alerts.len() as u64, Ordering::Relaxed);
                if let Some(files) = &self.meta.files
                    && !alerts.is_empty()
                {
                    let mut by_rule = self.stats.alerts_by_rule.lock().unwrap_or_else(|e| e.into_inner());
                    for a in &alerts {
                        // Names the report does not list count under the instance's id.
                        let name = if files.names.contains(&a.rule) { a.rule.as_str() } else { RULE_FILES_ID };
                        *by_rule.entry(name.to_string()).or_default() += 1;
                    }
                }
                if dropped > 0 {
                    self.stats.alerts_dropped.fetch_add(dropped as u64, Ordering::Relaxed);
                    if self.warnings.allow(&self.id, now) {
                        tracing::warn!(rule = %self.id, dropped, "rule raised more alerts in one batch than the limit; the rest were dropped");
                    }
                }
                Ok(alerts)
            }
            Ok(Err(msg)) => {
                let fault = Fault::BadOutput(msg);
                self.record_fault(&fault, now, events);
                Err(fault)
            }
            Err(e) => {
                let live = self.live.take().expect("live above");
                let fault = self.classify(&live.store, e);
                self.record_fault(&fault, now, events);
                Err(fault)
            }
        }
    }

    fn record_fault(&mut self, fault: &Fault, now: Instant, events: usize) {
        let counter = match fault {
            Fault::Timeout(_) => &self.stats.timeouts,
            Fault::Memory(_) => &self.stats.memory_faults,
            Fault::BadOutput(_) => &self.stats.bad_output,
            Fault::Trap(_) | Fault::Quarantined(_) => &self.stats.traps,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(rule = %self.id, events, fault = %fault, "rule faulted; its instance is rebuilt and its state reset");
        let h = &mut self.health;
        // A long quiet spell resets the backoff.
        if h.last_fault.is_some_and(|t| now.duration_since(t) > self.limits.quarantine_max * 2) {
            h.next_backoff = None;
        }
        h.last_fault = Some(now);
        h.recent_faults.retain(|t| now.duration_since(*t) < self.limits.fault_window);
        h.recent_faults.push(now);
        if h.recent_faults.len() as u32 >= self.limits.max_faults {
            let backoff = h.next_backoff.unwrap_or(self.limits.quarantine_initial);
            h.quarantined_until = Some(now + backoff);
            h.next_backoff = Some((backoff * 2).min(self.limits.quarantine_max));
            h.recent_faults.clear();
            self.stats.quarantines.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                rule = %self.id,
                faults = self.limits.max_faults,
                window = ?self.limits.fault_window,
                quarantine = ?backoff,
                "rule quarantined after repeated faults; its events are skipped until the quarantine ends"
            );
        }
    }

    /// The rule's state, for its successor. Errors are logged; `None` then.
    pub fn snapshot(&mut self) -> Option<Vec<u8>> {
        let init_timeout = self.init_timeout();
        let live = self.live.as_mut()?;
        let armed = self.watchdog.arm(&mut live.store, init_timeout);
        let result = live.rule.vigil_rules_detector().call_snapshot(&mut live.store);
        drop(armed);
        match result {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(rule = %self.id, error = %e, "snapshot failed; the new version starts fresh");
                self.live = None;
                None
            }
        }
    }

    /// Hands `state` from the previous version to this one.
    #[allow(clippy::ptr_arg)] // the generated binding takes &Vec
    pub fn restore(&mut self, state: &Vec<u8>) {
        let init_timeout = self.init_timeout();
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let armed = self.watchdog.arm(&mut live.store, init_timeout);
        let result = live.rule.vigil_rules_detector().call_restore(&mut live.store, state);
        drop(armed);
        match result {
            Ok(Ok(())) => tracing::debug!(rule = %self.id, bytes = state.len(), "state restored"),
            Ok(Err(msg)) => {
                tracing::warn!(rule = %self.id, error = %rule_text(&msg), "new version refused the old state; starting fresh")
            }
            Err(e) => {
                tracing::warn!(rule = %self.id, error = %e, "restore trapped; starting fresh");
                self.live = None;
            }
        }
    }
}

/// Longest text a rule supplies (an error message) that the host keeps.
const MAX_RULE_TEXT: usize = 1024;

/// Text a rule supplied, for the daemon's log and errors: cut to
/// [`MAX_RULE_TEXT`] and with its control characters escaped.
fn rule_text(text: &str) -> String {
    let mut end = text.len().min(MAX_RULE_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = if end < text.len() { "… (cut)" } else { "" };
    format!("{}{cut}", crate::escape_controls(&text[..end]))
}

enum InstantiateError {
    Refused(String),
    Fault(Fault),
}

fn new_store(engine: &wasmtime::Engine, id: Arc<str>, memory: usize, wasi: WasiCtx) -> Store<HostState> {
    let mut store = Store::new(engine, HostState::new(id, memory, wasi));
    store.limiter(|s| s);
    watchdog::watch(&mut store);
    store
}

/// The deadline of the metadata probe (instantiate, then `metadata`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
