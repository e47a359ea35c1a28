//! One loaded rule: its metadata, its pre-linked component, its live
//! instance, its limits, its health (faults, quarantine) and its figures.
//!
//! A call runs under a deadline (see `watchdog`) and a memory cap. A trap, a timeout or
//! a memory overrun poisons the instance: it is dropped and rebuilt from the
//! pre-linked component on the next call. Repeated faults within a window
//! quarantine the rule with exponential backoff; other rules never notice.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wasmtime_wasi::WasiCtx;

use super::PluginError;
use super::budget::{AlertRate, CpuBudget, Throttle};
use super::host::{HostState, PluginHost, RulePre, content_hash};
use super::instance::{InstantiateError, Live, Recipe, Restart, Restarted, new_store};
use super::meta::{Limits, RuleMeta, RuleSettingsResolved};
use super::returned::{RuleAlert, parse_alerts, parse_metadata};
use super::warnings::WarnBudget;
use crate::config::{DeadlineClock, WasiGrant};

pub use super::stats::RuleStats;

pub use super::instance::Fault;

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
    recipe: Arc<Recipe>,
    live: Option<Live>,
    /// The instance being made on another thread.
    restart: Option<Restart>,
    /// Batches that arrived while it restarted (see [`super::backlog`]).
    pub backlog: super::backlog::Backlog,
    health: Health,
    id: Arc<str>,
    /// The host's warnings about this rule, rate-limited.
    warnings: WarnBudget,
    cpu: CpuBudget,
    alert_rate: AlertRate,
    /// Events it did not see, by reason, not yet reported to it.
    owed_lost: Vec<(&'static str, u64)>,
    /// Set when the rule was quarantined: taken by the dispatcher, which
    /// raises an alert about it.
    quarantined_now: Option<String>,
    /// Whether the dispatching thread is under pressure (see [`super::budget`]).
    pressed: bool,
}

/// Why a rule did not see events, as its `events-lost` event says.
pub mod lost_reason {
    pub const QUARANTINED: &str = "rule-quarantined";
    pub const THROTTLED: &str = "rule-throttled";
    pub const RESTARTING: &str = "rule-restarting";
}

impl LoadedRule {
    /// Whether one more host warning about this rule may be logged now.
    pub fn may_warn(&mut self) -> bool {
        self.warnings.allow(&self.id, Instant::now())
    }

    pub fn limits(&self) -> &Limits {
        &self.recipe.limits
    }

    /// Counts `events` the rule did not see, to report to it as lost.
    pub fn skip(&mut self, events: usize, reason: &'static str) {
        self.stats.events_skipped.fetch_add(events as u64, Ordering::Relaxed);
        match self.owed_lost.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += events as u64,
            None => self.owed_lost.push((reason, events as u64)),
        }
    }

    /// The events it did not see since it was last told, by reason.
    pub fn take_owed_lost(&mut self) -> Vec<(&'static str, u64)> {
        std::mem::take(&mut self.owed_lost)
    }

    /// Whether the dispatching thread is under pressure: a rule over its CPU
    /// budget is throttled only then.
    pub fn set_pressed(&mut self, pressed: bool) {
        self.pressed = pressed;
    }

    /// Why it was quarantined, once, after it was.
    pub fn take_quarantine(&mut self) -> Option<String> {
        self.quarantined_now.take()
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

/// The smallest CPU budget of the rule files' instance: it is many rules.
pub const RULE_FILES_MIN_CPU_BUDGET: Duration = Duration::from_millis(750);

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
            let _armed = host.watchdog().arm(&mut store, PROBE_TIMEOUT, DeadlineClock::Cpu);
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
        let id: Arc<str> = Arc::from(meta.id.as_str());
        let recipe = Recipe {
            id: id.clone(),
            limits,
            config_json,
            wasi,
            pre,
            engine: host.engine().clone(),
            watchdog: host.watchdog().clone(),
        };
        let live = recipe.instantiate().map_err(|e| match e {
            InstantiateError::Refused(msg) => PluginError::InitRefused(msg),
            InstantiateError::Fault(f) => PluginError::InitFault(f.to_string()),
        })?;
        Ok(LoadedRule {
            id,
            meta,
            path: path.to_path_buf(),
            hash,
            stats: Arc::new(RuleStats::default()),
            cpu: CpuBudget::new(recipe.limits.cpu_budget),
            alert_rate: AlertRate::new(recipe.limits.max_alerts_per_sec),
            recipe: Arc::new(recipe),
            live: Some(live),
            restart: None,
            backlog: Default::default(),
            health: Health::default(),
            warnings: WarnBudget::default(),
            owed_lost: Vec::new(),
            quarantined_now: None,
            pressed: false,
        })
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
        if !limits.cpu_budget.is_zero() {
            limits.cpu_budget = limits.cpu_budget.max(RULE_FILES_MIN_CPU_BUDGET);
        }
        let hash = content_hash(config_json.as_bytes());
        let mut loaded = Self::start(host, provisional, key, hash, limits, config_json, None, pre)?;
        let (timeout, clock) = (loaded.recipe.init_timeout(), loaded.recipe.limits.deadline_clock);
        let live = loaded.live.as_mut().expect("instantiated above");
        let json = {
            let _armed = loaded.recipe.watchdog.arm(&mut live.store, timeout, clock);
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

    /// Hands `batch` (packed, `events` of them) to the rule. A batch it
    /// cannot take now is either skipped (counted, and owed to it as lost:
    /// quarantined, throttled) or refused with [`Fault::Restarting`], for
    /// the caller to keep until its instance is ready. (`&Vec` because that
    /// is what the generated binding takes.)
    #[allow(clippy::ptr_arg)]
    pub fn on_batch(&mut self, batch: &Vec<u8>, events: usize) -> Result<Vec<RuleAlert>, Fault> {
        self.admit(events)?;
        self.run(batch, events)
    }

    /// Whether the rule takes a batch of `events` now: an error if it is
    /// quarantined or over its CPU budget (the events are then counted as
    /// skipped and owed to it as lost) or restarting (the batch can wait).
    pub fn admit(&mut self, events: usize) -> Result<(), Fault> {
        let now = Instant::now();
        if let Some(until) = self.health.quarantined_until {
            if now < until {
                self.skip(events, lost_reason::QUARANTINED);
                return Err(Fault::Quarantined(until - now));
            }
            self.health.quarantined_until = None;
            tracing::info!(rule = %self.id, "quarantine over; rule runs again");
        }
        if self.live.is_none() {
            let restart = self.restart.get_or_insert_with(|| {
                self.stats.restarts.fetch_add(1, Ordering::Relaxed);
                Restart::rebuild(self.recipe.clone())
            });
            match restart.poll() {
                Restarted::Pending => return Err(Fault::Restarting),
                Restarted::Done(Ok(live)) => {
                    self.restart = None;
                    self.live = Some(live);
                }
                Restarted::Done(Err(e)) => {
                    self.restart = None;
                    let fault = e.into_fault();
                    self.record_fault(&fault, now, events);
                    return Err(fault);
                }
            }
        }
        match self.cpu.may_run(now, self.pressed) {
            Throttle::Run => {}
            throttle => {
                if throttle == Throttle::Began && self.warnings.allow(&self.id, now) {
                    tracing::warn!(
                        rule = %self.id,
                        budget = ?self.recipe.limits.cpu_budget,
                        "rule is over its CPU budget per second; its events are skipped until it is back within it"
                    );
                }
                self.stats.events_throttled.fetch_add(events as u64, Ordering::Relaxed);
                self.skip(events, lost_reason::THROTTLED);
                return Err(Fault::Throttled);
            }
        }
        Ok(())
    }

    /// Calls the rule with `batch` (admitted by [`Self::admit`]).
    #[allow(clippy::ptr_arg)]
    pub fn run(&mut self, batch: &Vec<u8>, events: usize) -> Result<Vec<RuleAlert>, Fault> {
        let now = Instant::now();
        let Some(live) = self.live.as_mut() else {
            return Err(Fault::Restarting);
        };
        let armed = self.recipe.watchdog.arm(
            &mut live.store,
            self.recipe.limits.call_timeout,
            self.recipe.limits.deadline_clock,
        );
        let result = live.rule.vigil_rules_detector().call_on_batch(&mut live.store, batch);
        let cpu_start = armed.cpu_start_ns();
        drop(armed);
        // Parsing what it returned is the rule's time too.
        let result = result.map(|json| parse_alerts(&json, events));
        let cpu = crate::time::thread_cpu_ns().saturating_sub(cpu_start);
        self.cpu.charge(cpu);
        self.stats.cpu_ns.fetch_add(cpu, Ordering::Relaxed);
        self.stats.time_ns.fetch_add(now.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.stats.events_in.fetch_add(events as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(Ok((mut alerts, mut dropped))) => {
                let allowed = self.alert_rate.take(alerts.len(), now);
                if allowed < alerts.len() {
                    dropped += alerts.len() - allowed;
                    alerts.truncate(allowed);
                }
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
                        tracing::warn!(
                            rule = %self.id,
                            dropped,
                            per_sec = self.recipe.limits.max_alerts_per_sec,
                            "rule raised more alerts than a batch can explain or than its rate allows; the rest were dropped"
                        );
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
                let fault = self.recipe.classify(&live.store, e);
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
            Fault::Trap(_) | Fault::Quarantined(_) | Fault::Throttled | Fault::Restarting => &self.stats.traps,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if self.warnings.allow(&self.id, now) {
            tracing::warn!(rule = %self.id, events, fault = %fault, "rule faulted; its instance is rebuilt and its state reset");
        }
        let h = &mut self.health;
        // A long quiet spell resets the backoff.
        let limits = &self.recipe.limits;
        if h.last_fault.is_some_and(|t| now.duration_since(t) > limits.quarantine_max * 2) {
            h.next_backoff = None;
        }
        h.last_fault = Some(now);
        h.recent_faults.retain(|t| now.duration_since(*t) < limits.fault_window);
        h.recent_faults.push(now);
        if h.recent_faults.len() as u32 >= limits.max_faults {
            let backoff = h.next_backoff.unwrap_or(limits.quarantine_initial);
            h.quarantined_until = Some(now + backoff);
            h.next_backoff = Some((backoff * 2).min(limits.quarantine_max));
            h.recent_faults.clear();
            self.stats.quarantines.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                rule = %self.id,
                faults = limits.max_faults,
                window = ?limits.fault_window,
                quarantine = ?backoff,
                last_fault = %fault,
                "rule quarantined after repeated faults; its events are skipped until the quarantine ends"
            );
            self.quarantined_now = Some(format!(
                "{} faults within {:?}, the last: {fault}; its events are skipped for {backoff:?}",
                limits.max_faults, limits.fault_window
            ));
        } else if self.live.is_none() && self.restart.is_none() {
            // Rebuilt on another thread while the events go on.
            self.stats.restarts.fetch_add(1, Ordering::Relaxed);
            self.restart = Some(Restart::rebuild(self.recipe.clone()));
        }
    }

    /// Takes over from `old`, the version of this rule it replaces: its
    /// figures, the batches waiting for it, and its state, handed over on
    /// another thread (`snapshot` there, `restore` here) while the events
    /// for this rule wait in its backlog.
    pub fn take_over(&mut self, old: &mut LoadedRule) {
        self.stats = old.stats.clone();
        self.backlog.append(&mut old.backlog);
        self.owed_lost.append(&mut old.owed_lost);
        // A version that is restarting has no state to hand over.
        let old_live = old.live.take().map(|l| (old.recipe.clone(), l));
        if let Some(live) = self.live.take() {
            self.stats.restarts.fetch_add(1, Ordering::Relaxed);
            self.restart = Some(Restart::hand_over(old_live, self.recipe.clone(), live));
        }
    }

    /// Waits for an instance being made (at the end of a run).
    pub fn finish_restart(&mut self) {
        if let Some(restart) = self.restart.take() {
            match restart.wait() {
                Ok(live) => self.live = Some(live),
                Err(e) => {
                    let fault = e.into_fault();
                    self.record_fault(&fault, Instant::now(), 0);
                }
            }
        }
    }
}

/// The deadline of the metadata probe (instantiate, then `metadata`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
