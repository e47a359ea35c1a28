//! The container-runtime watchers: each runtime's API is one [`Watcher`]
//! ([`docker`] for Docker and [`podman`], [`cri`] for containerd and
//! CRI-O). They fill the [`ContainerCache`](crate::enrich::containers::ContainerCache) the enrichment stage reads, and
//! send container lifecycle events to rules.
//!
//! What every watcher shares is in [`watcher`]; here, which ones the config
//! names.

pub(crate) mod cri;
pub(crate) mod docker;
pub(crate) mod podman;
pub(crate) mod watcher;

use std::path::PathBuf;

use vigil_event::Runtime;

pub use cri::{CRI_SOCKETS, CriApi};
pub use docker::{DOCKER_SOCKETS, DockerApi};
pub use podman::PODMAN_SOCKETS;
pub use watcher::{Lifecycle, Listed, RuntimeStatus, WatchContext, WatchError, Watcher, spawn};

use crate::config::ContainersConfig;
/// The watchers the config names (sockets that exist when `auto`): the
/// Docker-API ones (Docker, Podman; one socket named twice, as
/// podman-docker's symlink does, is watched once), then CRI.
pub fn configured(config: &ContainersConfig) -> (Vec<docker::DockerApi>, Option<cri::CriApi>) {
    let mut docker_api: Vec<docker::DockerApi> = Vec::new();
    for (socket, runtime) in [
        (pick_socket(&config.docker_socket, &docker::DOCKER_SOCKETS), Runtime::Docker),
        (pick_socket(&config.podman_socket, &podman::PODMAN_SOCKETS), Runtime::Podman),
    ] {
        let Some(socket) = socket else { continue };
        let real = std::fs::canonicalize(&socket).unwrap_or_else(|_| socket.clone());
        if !docker_api
            .iter()
            .any(|w| std::fs::canonicalize(w.endpoint()).unwrap_or_else(|_| w.endpoint().into()) == real)
        {
            docker_api.push(docker::DockerApi::new(socket, runtime));
        }
    }
    let cri = pick_socket(&config.cri_socket, &cri::CRI_SOCKETS).map(cri::CriApi::new);
    (docker_api, cri)
}

/// A socket setting: a path, `auto` (the first of `candidates` that
/// exists) or `""` (none).
fn pick_socket(setting: &str, candidates: &[&str]) -> Option<PathBuf> {
    match setting {
        "" => None,
        "auto" => discover(candidates),
        p => Some(PathBuf::from(p)),
    }
}

/// The first of the socket paths `candidates` that exists.
pub fn discover(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}
