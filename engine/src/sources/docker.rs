//! The Docker watcher: keeps the [`ContainerCache`] current from dockerd's
//! API (bollard over its unix socket). At start and after every reconnect it
//! lists every container (running and stopped) and inspects each, so the
//! cache is complete; then it follows dockerd's container events, inspecting
//! on create/start and forgetting on destroy. A daemon that goes away is
//! retried with backoff, logged once per outage; Vigil keeps running.
//!
//! Not in this build: lifecycle events to rules, Podman's and containerd's
//! watchers, and holding events of containers not yet known.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bollard::Docker;
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use futures_util::StreamExt;
use vigil_event::{Container, Runtime};

use super::Stop;
use crate::enrich::containers::ContainerCache;

/// The sockets tried when none is configured (the host's root first when
/// running in a pod with it mounted at /host).
pub const DOCKER_SOCKETS: [&str; 3] = ["/host/run/docker.sock", "/run/docker.sock", "/var/run/docker.sock"];

/// The first of [`DOCKER_SOCKETS`] that exists.
pub fn discover() -> Option<PathBuf> {
    DOCKER_SOCKETS.iter().map(PathBuf::from).find(|p| p.exists())
}

/// Starts watching `socket` on its own thread until `stop`.
pub fn spawn(socket: PathBuf, cache: Arc<ContainerCache>, stop: Stop) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("vigil-docker".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the Docker watcher");
                return;
            }
        };
        rt.block_on(watch(&socket, &cache, &stop));
    })
}

async fn watch(socket: &Path, cache: &ContainerCache, stop: &Stop) {
    let backoff_from_start = || {
        ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(2))
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut backoff = backoff_from_start();
    let mut down_since = None;
    while !stop.is_stopped() {
        match follow(socket, cache, stop, &mut down_since).await {
            Ok(()) => return,
            Err(e) => {
                if down_since.is_none() {
                    // A new outage: retry quickly again.
                    backoff = backoff_from_start();
                    tracing::warn!(socket = %socket.display(), error = %crate::error_chain(&e), "Docker unavailable; retrying in the background");
                    down_since = Some(std::time::Instant::now());
                }
                let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                // Sleep in short steps so a stop is noticed.
                let until = std::time::Instant::now() + delay;
                while std::time::Instant::now() < until && !stop.is_stopped() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Connects, lists, then follows events until `stop` (Ok) or an error.
async fn follow(
    socket: &Path,
    cache: &ContainerCache,
    stop: &Stop,
    down_since: &mut Option<std::time::Instant>,
) -> Result<(), bollard::errors::Error> {
    let docker = connect(socket)?;
    docker.ping().await?;
    // Subscribe first, then list: nothing falls between the two.
    let mut filters = HashMap::new();
    filters.insert("type", vec!["container"]);
    let mut events = Box::pin(docker.events(Some(EventsOptionsBuilder::new().filters(&filters).build())));
    let listed: Vec<Container> = list(&docker).await?.into_iter().map(|(c, _state)| c).collect();
    let known = listed.len();
    cache.replace_all(Runtime::Docker, listed);
    match down_since.take() {
        Some(since) => {
            tracing::info!(socket = %socket.display(), containers = known, down_s = since.elapsed().as_secs_f64(), "Docker reconnected; containers re-listed")
        }
        None => tracing::info!(socket = %socket.display(), containers = known, "watching Docker"),
    }
    loop {
        let msg = tokio::select! {
            m = events.next() => m,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if stop.is_stopped() {
                    return Ok(());
                }
                continue;
            }
        };
        let Some(msg) = msg else {
            return Err(bollard::errors::Error::IOError { err: std::io::Error::other("event stream ended") });
        };
        let msg = msg?;
        let (Some(action), Some(id)) = (msg.action, msg.actor.and_then(|a| a.id)) else { continue };
        match action.as_str() {
            "create" | "start" | "die" | "rename" => {
                inspect_into(&docker, &id, cache).await;
            }
            "destroy" | "remove" => cache.remove(&id),
            _ => {}
        }
    }
}

/// Connects to the Docker API at `socket` (API 1.41, which dockerd 20.10
/// and Podman's compatible API speak).
pub fn connect(socket: &Path) -> Result<Docker, bollard::errors::Error> {
    let version = bollard::ClientVersion { major_version: 1, minor_version: 41 };
    Docker::connect_with_unix(&socket.to_string_lossy(), 10, &version)
}

/// Every container (running and stopped), inspected, with its state.
pub async fn list(docker: &Docker) -> Result<Vec<(Container, String)>, bollard::errors::Error> {
    let listed = docker.list_containers(Some(ListContainersOptionsBuilder::new().all(true).build())).await?;
    let mut out = Vec::new();
    for c in listed {
        let Some(id) = c.id else { continue };
        // Gone between the list and the inspect: skip it.
        if let Ok(found) = inspect(docker, &id).await {
            out.push(found);
        }
    }
    Ok(out)
}

/// Inspects `id` into the cache; false if it is gone.
async fn inspect_into(docker: &Docker, id: &str, cache: &ContainerCache) -> bool {
    match inspect(docker, id).await {
        Ok((c, _)) => {
            cache.insert(c);
            true
        }
        Err(e) => {
            tracing::debug!(container = id, error = %e, "cannot inspect container");
            false
        }
    }
}

/// One container's metadata and state.
async fn inspect(docker: &Docker, id: &str) -> Result<(Container, String), bollard::errors::Error> {
    let info = docker.inspect_container(id, None).await?;
    let config = info.config.unwrap_or_default();
    let state = info.state.unwrap_or_default();
    let started_at_ns = state
        .started_at
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(t.split('.').next().unwrap_or(t)).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    let mut labels: Vec<(String, String)> = config.labels.unwrap_or_default().into_iter().collect();
    labels.sort();
    let status = state.status.map(|s| s.to_string()).unwrap_or_default();
    let container = Container {
        id: info.id.unwrap_or_else(|| id.to_string()),
        name: info.name.unwrap_or_default().trim_start_matches('/').to_string(),
        image: config.image.unwrap_or_default(),
        image_digest: info.image.unwrap_or_default(),
        runtime: Runtime::Docker,
        labels,
        pid: state.pid.unwrap_or(0).max(0) as u32,
        privileged: info.host_config.and_then(|h| h.privileged).unwrap_or(false),
        started_at_ns,
    };
    Ok((container, status))
}
