//! Vigil's daemon as a library: events come in from sources, sandboxed
//! WebAssembly rules decide, alerts go out to sinks.
//!
//! Layout, in pipeline order:
//! - [`sources`]: where events come from (eBPF, the proc connector, replay
//!   files; container runtimes plug in here) and the [`sources::Source`] seam;
//! - [`enrich`]: the process tree (ancestry), and the container and pod of
//!   each event (from cgroups and the runtimes' watchers);
//! - [`plugin`]: the WebAssembly rule host: loading, sandboxing, dispatch,
//!   hot reload;
//! - [`sinks`]: where alerts go (shaping, then stdout, file, webhooks through
//!   a durable spool) and the [`sinks::Sink`] seam;
//! - [`metrics`]: the stages' figures for Prometheus, health and readiness;
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
pub mod sched;
pub mod sinks;
pub mod sources;
pub mod time;

pub use vigil_event as event;

/// `e` and its causes, `: `-separated (a cause its error already quotes is
/// not repeated), for logs and error messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
