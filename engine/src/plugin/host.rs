//! The wasmtime side shared by every rule: one `Engine` (config, deadline
//! watchdog), the linkers rules are instantiated against, the on-disk cache of
//! compiled components, and the host functions rules import.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, OptLevel};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::PluginError;
use super::cache::CompileCache;
use super::watchdog::Watchdog;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "rule",
});

/// A rule file's identity: the sha256 of its bytes, in hex. Computed once per
/// file read and passed along (change detection, the compile cache).
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The interface this daemon speaks, as components name it.
pub const DETECTOR_INTERFACE: &str = "vigil:rules/detector";
/// Its version.
pub const INTERFACE_VERSION: &str = "0.2.2";

/// What a rule's store holds: its identity for logs, its memory limit, and
/// the WASI context it was granted (empty and unlinked unless granted).
pub struct HostState {
    pub rule_id: Arc<str>,
    pub memory_limit: usize,
    /// Bytes of linear memory the rule has, across its memories.
    memory_used: usize,
    /// Set when the rule tried to grow memory past its limit.
    pub memory_exceeded: bool,
    /// When the call in progress must have returned (see `watchdog`).
    call_due: super::watchdog::Deadline,
    /// Guest log lines allowed before the next refill (per second).
    log_budget: u32,
    log_window_start: std::time::Instant,
    logs_dropped: u64,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl super::watchdog::CallDue for HostState {
    fn call_due(&self) -> super::watchdog::Deadline {
        self.call_due
    }
    fn set_call_due(&mut self, due: super::watchdog::Deadline) {
        self.call_due = due;
    }
}

/// Guest log lines per second per rule; more are dropped and counted.
const LOG_LINES_PER_SEC: u32 = 50;
/// Longest guest log line kept (bytes).
const MAX_LOG_LINE: usize = 4096;

impl HostState {
    pub fn new(rule_id: Arc<str>, memory_limit: usize, wasi: WasiCtx) -> Self {
        HostState {
            rule_id,
            memory_limit,
            memory_used: 0,
            memory_exceeded: false,
            call_due: super::watchdog::Deadline::after(std::time::Duration::ZERO, crate::config::DeadlineClock::Wall),
            log_budget: LOG_LINES_PER_SEC,
            log_window_start: std::time::Instant::now(),
            logs_dropped: 0,
            wasi,
            table: ResourceTable::new(),
        }
    }
}

/// A component is several core instances; these bound how many memories,
/// tables and instances one rule may create (a Rust rule uses 1-3 of each).
const MAX_INSTANCES: usize = 16;
const MAX_TABLES: usize = 16;
const MAX_MEMORIES: usize = 8;
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for HostState {
    /// The cap is on the rule's total across all its memories.
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.memory_used.saturating_sub(current).saturating_add(desired);
        if total > self.memory_limit {
            self.memory_exceeded = true;
            wasmtime::bail!("rule exceeded its memory limit ({total} bytes in all, limit {})", self.memory_limit);
        }
        self.memory_used = total;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }
    fn tables(&self) -> usize {
        MAX_TABLES
    }
    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl vigil::rules::host::Host for HostState {
    fn log(&mut self, level: vigil::rules::host::LogLevel, message: String) {
        use vigil::rules::host::LogLevel;
        let now = std::time::Instant::now();
        if now.duration_since(self.log_window_start) >= Duration::from_secs(1) {
            if self.logs_dropped > 0 {
                tracing::warn!(rule = %self.rule_id, dropped = self.logs_dropped, "rule logged too much; lines dropped");
            }
            self.log_window_start = now;
            self.log_budget = LOG_LINES_PER_SEC;
            self.logs_dropped = 0;
        }
        if self.log_budget == 0 {
            self.logs_dropped += 1;
            return;
        }
        self.log_budget -= 1;
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("… (cut)");
        }
        // A rule's text cannot forge or garble the daemon's log lines.
        let message = crate::escape_controls(&message);
        let rule = &*self.rule_id;
        match level {
            LogLevel::Trace => tracing::trace!(target: "vigil::rule", rule, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "vigil::rule", rule, "{message}"),
            LogLevel::Info => tracing::info!(target: "vigil::rule", rule, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "vigil::rule", rule, "{message}"),
            LogLevel::Error => tracing::error!(target: "vigil::rule", rule, "{message}"),
        }
    }

    fn now_ns(&mut self) -> u64 {
        crate::time::now_ns()
    }
}

impl vigil::rules::types::Host for HostState {}

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
}

/// The shared wasmtime engine and everything rules are built with.
pub struct PluginHost {
    engine: Engine,
    /// Host interface only; anything else a rule imports traps when called.
    linker: Linker<HostState>,
    /// Host interface plus WASI p2, for rules the operator granted WASI.
    linker_wasi: Linker<HostState>,
    cache: Option<CompileCache>,
    watchdog: Arc<Watchdog>,
}

impl PluginHost {
    /// A host with the compile cache `config` names.
    pub fn for_config(config: &crate::config::Config) -> Result<Self, PluginError> {
        Self::new(&HostSettings { cache_dir: config.cache_dir() })
    }

    pub fn new(settings: &HostSettings) -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.cranelift_opt_level(OptLevel::Speed);
        // Deep recursion in a rule traps instead of taking the host stack.
        config.max_wasm_stack(1 << 20);
        let engine = Engine::new(&config).map_err(PluginError::Engine)?;

        let mut linker = Linker::new(&engine);
        Rule::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s).map_err(PluginError::Engine)?;
        let mut linker_wasi = linker.clone();
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker_wasi).map_err(PluginError::Engine)?;
        deny_blocking_poll(&mut linker_wasi).map_err(PluginError::Engine)?;

        let cache = settings.cache_dir.as_ref().and_then(|dir| match CompileCache::open(dir) {
            Ok(cache) => Some(cache),
            Err(why) => {
                // Compiled code from this directory runs natively in the
                // daemon: never trust one someone else can write.
                tracing::error!(dir = %dir.display(), "{why}; the compile cache is disabled");
                None
            }
        });

        let watchdog = Watchdog::start(engine.clone()).map_err(|e| PluginError::Engine(wasmtime::Error::from(e)))?;
        Ok(PluginHost { engine, linker, linker_wasi, cache, watchdog: Arc::new(watchdog) })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The watchdog every call into a rule arms.
    pub fn watchdog(&self) -> &Arc<Watchdog> {
        &self.watchdog
    }

    /// Compiles `bytes` (whose [`content_hash`] is `hash`), or loads the
    /// compiled form from the cache. Returns the component and whether it
    /// came from the cache.
    pub fn compile(&self, bytes: &[u8], hash: &str) -> Result<(Component, bool), PluginError> {
        if !bytes.starts_with(b"\0asm") {
            return Err(PluginError::NotWasm);
        }
        let Some(cache) = &self.cache else {
            return Ok((Component::new(&self.engine, bytes).map_err(PluginError::Compile)?, false));
        };
        let name = self.cache_name(hash);
        if let Some(compiled) = cache.load(&name) {
            // SAFETY: read through the cache directory opened at start, which
            // only this daemon's user can write (checked with every directory
            // above it), from a file of ours no one else can write; it holds
            // what `precompile_component` wrote for this exact engine
            // configuration (its compatibility hash is in the name).
            match unsafe { Component::deserialize(&self.engine, &compiled) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(dir = %cache.path().display(), file = name, error = %e, "compiled rule cache entry unusable; recompiling")
                }
            }
        }
        let compiled = self.engine.precompile_component(bytes).map_err(PluginError::Compile)?;
        // SAFETY: produced just above by this engine.
        let component = unsafe { Component::deserialize(&self.engine, &compiled) }.map_err(PluginError::Compile)?;
        if let Err(e) = cache.store(&name, &compiled) {
            tracing::warn!(dir = %cache.path().display(), file = name, error = %e, "cannot write compiled rule cache");
        }
        Ok((component, false))
    }

    /// The cache file of the component whose content hash is `content_hash`.
    fn cache_name(&self, content_hash: &str) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{content_hash}-{:016x}.cwasm", h.finish())
    }

    /// What `component` imports, and whether a rule gets it: the host
    /// interface always; WASI only when granted (`wasi`); anything else
    /// links but traps when called.
    pub fn imports(&self, component: &Component, wasi: bool) -> Vec<(String, &'static str)> {
        let ty = component.component_type();
        ty.imports(&self.engine)
            .map(|(name, _)| {
                let status = if name.starts_with("vigil:rules/") {
                    "provided"
                } else if !wasi && name.starts_with(INSECURE_SEED) {
                    "provided (a fixed seed)"
                } else if !wasi && name.starts_with(ENVIRONMENT) {
                    "provided (empty)"
                } else if !wasi && name.starts_with(RANDOM) {
                    "provided"
                } else if wasi && name.starts_with("wasi:") {
                    if name.starts_with("wasi:io/poll") { "granted (blocking calls trap)" } else { "granted" }
                } else {
                    "denied (traps if called)"
                };
                (name.to_string(), status)
            })
            .collect()
    }

    /// Checks the component exports a compatible `detector` and pre-links it.
    pub fn prepare(&self, component: &Component, wasi: bool) -> Result<RulePre<HostState>, PluginError> {
        check_world(&self.engine, component)?;
        let mut linker = if wasi { self.linker_wasi.clone() } else { self.linker.clone() };
        if !wasi {
            // Deny by default: imports we do not provide (the WASI a Rust std
            // pulls in) link, but trap if the rule ever calls them. Not with
            // WASI granted: the stubs are matched by exact version and would
            // shadow the semver-compatible WASI functions (a rule importing
            // wasi:filesystem@0.2.6 links to wasmtime's 0.2.12); there an
            // import we lack is a load error instead.
            provide_harmless(&mut linker, component).map_err(PluginError::Link)?;
            linker.define_unknown_imports_as_traps(component).map_err(PluginError::Link)?;
        }
        let pre = linker.instantiate_pre(component).map_err(PluginError::Link)?;
        RulePre::new(pre).map_err(PluginError::Link)
    }
}

/// The interface Rust's `HashMap` seeds itself from on wasip2.
const INSECURE_SEED: &str = "wasi:random/insecure-seed@";
/// The interface language runtimes read their environment from at start
/// (CPython, as componentize-py builds it, on its first call).
const ENVIRONMENT: &str = "wasi:cli/environment@";
/// Random bytes (CPython seeds its string hashing from them).
const RANDOM: &str = "wasi:random/random@";
/// Most random bytes one call gets (a rule cannot make the host allocate more).
const MAX_RANDOM_BYTES: u64 = 1 << 16;

/// What a rule may have without a WASI grant, because it tells it nothing
/// of the host: `insecure-seed` answers a constant (a rule's hash maps work:
/// serde's YAML and JSON maps use them), the environment is empty (no
/// variables, no arguments, no working directory), random bytes are the
/// operating system's (at most 64 KiB a call).
fn provide_harmless(linker: &mut Linker<HostState>, component: &Component) -> wasmtime::Result<()> {
    let engine = linker.engine().clone();
    for (name, _) in component.component_type().imports(&engine) {
        if name.starts_with(INSECURE_SEED) {
            let mut instance = linker.instance(name)?;
            instance
                .func_wrap("insecure-seed", |_, (): ()| Ok(((0x5649_4749_4c00_0001u64, 0x7275_6c65_7300_0002u64),)))?;
        } else if name.starts_with(ENVIRONMENT) {
            let mut instance = linker.instance(name)?;
            instance.func_wrap("get-environment", |_, (): ()| Ok((Vec::<(String, String)>::new(),)))?;
            instance.func_wrap("get-arguments", |_, (): ()| Ok((Vec::<String>::new(),)))?;
            instance.func_wrap("initial-cwd", |_, (): ()| Ok((None::<String>,)))?;
        } else if name.starts_with(RANDOM) {
            let mut instance = linker.instance(name)?;
            instance.func_wrap("get-random-bytes", |_, (len,): (u64,)| {
                let mut bytes = vec![0u8; len.min(MAX_RANDOM_BYTES) as usize];
                getrandom::fill(&mut bytes).map_err(|e| wasmtime::format_err!("no random bytes: {e}"))?;
                Ok((bytes,))
            })?;
            instance.func_wrap("get-random-u64", |_, (): ()| {
                Ok((getrandom::u64().map_err(|e| wasmtime::format_err!("no random bytes: {e}"))?,))
            })?;
        }
    }
    Ok(())
}

/// WASI's `poll` and `pollable.block` wait inside host code, where epoch
/// deadlines cannot interrupt them: a granted rule could hang the dispatch
/// thread (`std::thread::sleep` compiles to them). They trap instead.
fn deny_blocking_poll(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_POLL)?;
    for name in ["poll", "[method]pollable.block"] {
        poll.func_new(name, |_, _, _, _| {
            Err(wasmtime::format_err!("rules may not block in WASI poll (the call deadline could not stop it)"))
        })?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// The WASI poll interface wasmtime-wasi provides (components importing any
/// compatible 0.2.x link to it).
const WASI_POLL: &str = "wasi:io/poll@0.2.12";

/// A clear error for components that are not rules of our interface version.
fn check_world(engine: &Engine, component: &Component) -> Result<(), PluginError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_string()).collect();
    let Some(found) = exports.iter().find(|n| n.starts_with(DETECTOR_INTERFACE)) else {
        return Err(PluginError::NotARule { exports });
    };
    let version = found.split_once('@').map(|(_, v)| v).unwrap_or("");
    if !compatible_version(version, INTERFACE_VERSION) {
        return Err(PluginError::WrongVersion { found: found.clone() });
    }
    Ok(())
}

/// Semver compatibility as the component model links it: same major, and
/// for 0.x the same minor.
fn compatible_version(theirs: &str, ours: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let mut it = v.split('.');
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    match (parse(theirs), parse(ours)) {
        (Some((maj, min)), Some((our_maj, our_min))) => maj == our_maj && (maj != 0 || min == our_min),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::compatible_version;

    #[test]
    fn interface_versions() {
        assert!(compatible_version("0.1.0", "0.1.0"));
        assert!(compatible_version("0.1.7", "0.1.0"));
        assert!(!compatible_version("0.2.0", "0.1.0"));
        assert!(!compatible_version("1.0.0", "0.1.0"));
        assert!(compatible_version("1.4.0", "1.0.0"));
        assert!(!compatible_version("2.0.0", "1.0.0"));
        assert!(!compatible_version("", "0.1.0"));
        assert!(!compatible_version("x.y", "0.1.0"));
    }
}
