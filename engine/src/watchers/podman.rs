//! Podman, through its Docker-compatible API (`podman system service`):
//! the [`docker`](super::docker) watcher serves it, identifying it from the
//! API's version; Podman's events say `remove` where Docker says `destroy`,
//! and carry no `stop`, which the watcher takes into account. Here are the
//! sockets Podman listens on.

/// The sockets tried when none is configured: rootful Podman's service
/// socket, on the host's root (mounted at /host in a pod) first.
pub const PODMAN_SOCKETS: [&str; 2] = ["/host/run/podman/podman.sock", "/run/podman/podman.sock"];
