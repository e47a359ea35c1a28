//! Vigil's daemon as a library: events come in from sources, sandboxed
//! WebAssembly rules decide, alerts go out to outputs.
//!
//! Layout, in pipeline order:
//! - [`sources`]: where raw events come from (eBPF, the proc connector,
//!   replay files) and the [`sources::Source`] seam;
//! - [`enrich`]: the enrichment stage every live source applies: process
//!   tree (ancestry), container and pod from cgroups, the runtimes'
//!   descriptions, the hold queue;
//! - [`watchers`]: the container runtimes' watchers (Docker, Podman,
//!   containerd, CRI-O) that feed enrichment and send lifecycle events;
//! - [`plugin`]: the WebAssembly rule host: loading, sandboxing, dispatch,
//!   hot reload;
//! - [`alert`]: the alert, as rules return it and as it goes out;
//! - [`outputs`]: where alerts go (shaping, then stdout, file, webhooks through
//!   a durable spool) and the [`output::Output`] seam;
//! - [`metrics`]: the stages' figures for Prometheus, health and readiness;
//! - [`pipeline`]: the threads and channels that connect them;
//! - [`daemon`]: the one wiring of all of them from a [`config::Config`];
//! - [`config`]: the config file as plain data, validated before anything
//!   starts; [`proc`]: the /proc readers.
//!
//! The event model and its packed wire form live in the `vigil-event` crate,
//! shared with the plugin SDK; the WIT package in `wit/` is the schema.

pub mod alert;
pub mod config;
pub mod daemon;
pub mod enrich;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod plugin;
pub mod proc;
pub mod sched;
pub mod sources;
pub mod time;
pub mod watchers;

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
