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

/// `text` with its control characters (newlines, carriage returns, terminal
/// escapes) written as `\n`, `\u{1b}`..., for logging what a rule or a
/// remote peer supplied: it cannot forge or garble the daemon's log lines.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Returns the memory this thread freed to the OS now, instead of when it
/// next allocates: called after start-up's large transient work (parsing
/// the kernel's BTF, compiling rules) on the thread that did it. With
/// mimalloc as the allocator (the daemon's), this took the eBPF daemon's
/// idle RSS from ~118 MiB to ~62 MiB (BENCHMARKS.md); otherwise it does
/// nothing.
pub fn release_freed_memory() {
    // SAFETY: mi_collect takes no pointers; it is safe to call at any time
    // from any thread.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

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

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(super::escape_controls("plain ü"), "plain ü");
        assert_eq!(
            super::escape_controls("ok\n2026-12-07T00:00:00Z  INFO forged\r\u{1b}[2J"),
            "ok\\n2026-12-07T00:00:00Z  INFO forged\\r\\u{1b}[2J"
        );
    }
}
