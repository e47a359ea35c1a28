//! The plugin host: loads WebAssembly rule components, sandboxes them, hands
//! them events and hot-reloads them.
//!
//! - [`host`]: the wasmtime engine, linkers, compile cache, host functions;
//! - [`watchdog`]: call deadlines, watched by a thread that sleeps until one is due;
//! - [`meta`]: what a rule is, as data (its metadata, limits, settings);
//! - [`policy`]: what the config gives each rule (limits, config, WASI grant);
//! - [`rule`]: one loaded rule (limits, faults, quarantine); [`stats`]: its figures;
//! - [`instance`]: making a rule's instance and handing its state over, off the dispatching thread;
//! - [`budget`]: CPU time and alerts a rule may spend per second;
//! - [`backlog`]: batches kept for a rule while it restarts;
//! - [`returned`]: what rules return (JSON), parsed under hard limits;
//! - [`ruledir`]: the rule directory and what changed in it;
//! - [`dispatch`]: routing events to rules and applying swaps;
//! - [`reload`]: the directory watcher and reloader thread.

pub mod backlog;
pub mod bounds;
pub mod budget;
pub(crate) mod cache;
pub mod dispatch;
pub mod host;
pub(crate) mod instance;
pub mod meta;
pub mod policy;
pub(crate) mod reload;
pub(crate) mod returned;
pub mod rule;
pub mod ruledir;
pub mod rulefiles;
pub mod stats;
pub mod trust;
pub(crate) mod warnings;
pub(crate) mod watchdog;

use std::path::PathBuf;

/// Errors of the plugin layer.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The wasmtime engine or linker could not be set up.
    #[error("cannot set up the WebAssembly engine: {0:#}")]
    Engine(#[source] wasmtime::Error),
    /// The rule directory could be changed by someone other than root or
    /// the daemon's user.
    #[error("rule directory {0} is not trusted: {1}")]
    UntrustedRuleDir(PathBuf, String),
    /// Not WebAssembly at all.
    #[error("not a WebAssembly binary (it does not start with \\0asm)")]
    NotWasm,
    /// Not a valid WebAssembly component.
    #[error("not a valid WebAssembly component: {0:#}")]
    Compile(#[source] wasmtime::Error),
    /// A component, but not a Vigil rule.
    #[error("not a Vigil rule: it does not export vigil:rules/detector (its exports: {})", if exports.is_empty() { "none".to_string() } else { exports.join(", ") })]
    NotARule { exports: Vec<String> },
    /// A Vigil rule for another interface version.
    #[error("built for {found}; this daemon speaks vigil:rules/detector@{}", host::INTERFACE_VERSION)]
    WrongVersion { found: String },
    /// Its imports or exports do not match the interface.
    #[error("does not match the rule interface: {0:#}")]
    Link(#[source] wasmtime::Error),
    /// Instantiation or `metadata` failed.
    #[error("failed to start: {0:#}")]
    Instantiate(#[source] wasmtime::Error),
    /// `metadata` returned something invalid.
    #[error("invalid metadata: {0}")]
    BadMetadata(String),
    /// `init` returned an error.
    #[error("refused its config: {0}")]
    InitRefused(String),
    /// `init` trapped or timed out.
    #[error("faulted in init: {0}")]
    InitFault(String),
    /// The rule directory cannot be read.
    #[error("rule directory {0}: {1}")]
    RuleDir(PathBuf, #[source] std::io::Error),
    /// The rule directory cannot be watched.
    #[error("cannot watch rule directory {0}: {1}")]
    Watch(PathBuf, #[source] notify::Error),
}
