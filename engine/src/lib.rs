//! Vigil's daemon as a library: events come in from sources, sandboxed
//! WebAssembly rules decide, alerts go out to sinks.
//!
//! Layout, in pipeline order:
//! - [`sources`]: where events come from (replay files, the proc connector;
//!   eBPF and container runtimes plug in here) and the [`sources::Source`] seam;
//! - enrichment (container and pod context) is not in this build yet: events
//!   carry what their source knows;
//! - [`plugin`]: the WebAssembly rule host: loading, sandboxing, dispatch,
//!   hot reload;
//! - [`sinks`]: where alerts go (stdout, file) and the [`sinks::Sink`] seam;
//! - [`pipeline`]: the threads and channels that connect them;
//! - [`config`]: the config file, validated before anything starts.
//!
//! The event model and its packed wire form live in the `vigil-event` crate,
//! shared with the plugin SDK; the WIT package in `wit/` is the schema.

pub mod config;
pub mod enrich;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod sinks;
pub mod sources;
pub mod time;

pub use vigil_event as event;
