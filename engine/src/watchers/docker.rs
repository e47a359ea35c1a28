//! The Docker API watcher, for Docker and for Podman's Docker-compatible
//! API (bollard over a unix socket). At start and after every reconnect it
//! lists every container (running and stopped) and inspects each, so the
//! [`ContainerCache`] is complete; then it follows the container events:
//! inspecting on create and start, and sending each create, start, stop
//! (with the exit code) and delete to rules as a lifecycle event, and each
//! copy into or out of a container (`docker cp`) as `container-copy-in` /
//! `-out`. A network connect or disconnect inspects the container again (its
//! networks and addresses are part of its description). It also
//! answers lookups of containers the kernel showed before any event did.
//! Which runtime answers is read from its version, not assumed from the
//! socket's name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerInspectResponse, EventMessageTypeEnum, PortMap};
use bollard::query_parameters::{EventsOptions, ListContainersOptionsBuilder};
use futures_util::StreamExt;
use vigil_event::{Container, EventKind, Network, Port, Runtime};

use super::watcher::{Listed, WatchContext, WatchError, Watcher};
use crate::enrich::containers::{ContainerCache, Known, pod_from_labels};

/// The sockets tried when none is configured (the host's root first when
/// running in a pod with it mounted at /host).
pub const DOCKER_SOCKETS: [&str; 3] = ["/host/run/docker.sock", "/run/docker.sock", "/var/run/docker.sock"];

/// The Docker-compatible API at a socket; `expected` names the runtime in
/// logs until it answers.
pub struct DockerApi {
    socket: PathBuf,
    expected: Runtime,
}

impl DockerApi {
    pub fn new(socket: PathBuf, expected: Runtime) -> Self {
        DockerApi { socket, expected }
    }
}

impl Watcher for DockerApi {
    fn runtime(&self) -> Runtime {
        self.expected
    }

    fn endpoint(&self) -> &Path {
        &self.socket
    }

    async fn list(&self) -> Result<Vec<Listed>, WatchError> {
        Ok(list_at(&self.socket).await?)
    }

    async fn follow(&mut self, watch: &mut WatchContext) -> Result<(), WatchError> {
        follow(&self.socket, self.expected, watch).await
    }
}

/// Connects, lists, then follows events until the stop (Ok) or an error.
async fn follow(socket: &Path, expected: Runtime, watch: &mut WatchContext) -> Result<(), WatchError> {
    let docker = connect(socket)?;
    let runtime = identify(&docker).await?;
    if runtime != expected {
        tracing::info!(socket = %socket.display(), runtime = runtime.name(), "this socket is served by another runtime");
    }
    let mut lookups = watch.cache.watch(runtime);
    let mut lookups_in_flight = tokio::task::JoinSet::new();
    // Subscribe first, then list: nothing falls between the two. After a
    // reconnect, from where we were: what happened meanwhile reaches rules
    // (as far as the runtime still has it: a restarted dockerd keeps only
    // its own events since it started; Podman's event log keeps all).
    let mut filters = HashMap::new();
    filters.insert("type".to_string(), vec!["container".to_string(), "network".to_string()]);
    let since = watch.resume_ns.map(|ns| format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000));
    let options = EventsOptions { since, until: None, filters: Some(filters) };
    let subscribed_ns = crate::time::now_ns();
    let mut events = Box::pin(docker.events(Some(options)));
    let listed = list(&docker, runtime).await?;
    let count = listed.len();
    watch.cache.replace_all(runtime, listed.into_iter().map(|(c, pod, _state)| (c, pod)).collect());
    watch.connected(runtime, count);
    // Events replayed since the last one handled before the reconnect.
    let replay_until = watch.last_event_ns;
    watch.resume_ns.get_or_insert(subscribed_ns);
    loop {
        if watch.stop.is_stopped() {
            return Ok(());
        }
        watch.cache.sweep();
        let msg = tokio::select! {
            // Lookups first, and at once: events of the container wait on them.
            biased;
            Some(id) = lookups.recv() => {
                let docker = docker.clone();
                lookups_in_flight.spawn(async move {
                    let found = inspect(&docker, &id, runtime).await;
                    (id, found)
                });
                continue;
            }
            Some(Ok((id, found))) = lookups_in_flight.join_next() => {
                match found {
                    Ok((c, pod, _)) => watch.cache.insert_looked_up(c, pod),
                    Err(_) => watch.cache.give_up(&id),
                }
                continue;
            }
            m = events.next() => m,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if watch.stop.is_stopped() {
                    return Ok(());
                }
                continue;
            }
        };
        let msg = msg.ok_or("event stream ended")??;
        let (Some(action), Some(actor)) = (msg.action, msg.actor) else { continue };
        let Some(id) = actor.id else { continue };
        let attributes = actor.attributes.unwrap_or_default();
        let time_ns = msg.time_nano.unwrap_or(0).max(0) as u64;
        if time_ns <= replay_until {
            continue; // handled before the reconnect
        }
        watch.last_event_ns = watch.last_event_ns.max(time_ns);
        watch.resume_ns = Some(time_ns.max(watch.resume_ns.unwrap_or(0)));
        if msg.typ == Some(EventMessageTypeEnum::NETWORK) {
            // The actor is the network; the container is an attribute.
            if matches!(action.as_str(), "connect" | "disconnect")
                && let Some(container) = attributes.get("container")
            {
                inspect_into(&docker, container, runtime, &watch.cache).await;
            }
            continue;
        }
        match action.as_str() {
            "create" | "start" | "die" => {
                let (kind, exit_code) = match action.as_str() {
                    "create" => (EventKind::ContainerCreate, None),
                    "start" => (EventKind::ContainerStart, None),
                    _ => (EventKind::ContainerStop, attributes.get("exitCode").and_then(|c| c.parse().ok())),
                };
                // Podman's events can come after the container is gone
                // (its file event log is read late): then what we knew, or
                // what the event says.
                let known = match inspect_into(&docker, &id, runtime, &watch.cache).await {
                    Some(k) => k,
                    None => watch.cache.get(&id).unwrap_or_else(|| from_attributes(&id, runtime, &attributes)),
                };
                watch.lifecycle.send(kind, &known, exit_code, time_ns);
            }
            "rename" => {
                inspect_into(&docker, &id, runtime, &watch.cache).await;
            }
            // `docker cp` into a container (PUT .../archive), out of it (GET
            // .../archive; `copy` is the old API's). Docker 20.10 names no
            // path in these events; a runtime that does (attribute `path`)
            // has it carried.
            "extract-to-dir" | "archive-path" | "copy" => {
                let kind =
                    if action == "extract-to-dir" { EventKind::ContainerCopyIn } else { EventKind::ContainerCopyOut };
                let known = match watch.cache.get(&id) {
                    Some(k) => k,
                    None => inspect_into(&docker, &id, runtime, &watch.cache)
                        .await
                        .unwrap_or_else(|| from_attributes(&id, runtime, &attributes)),
                };
                let path = attributes.get("path").filter(|p| !p.is_empty()).cloned();
                watch.lifecycle.send_with(kind, &known, time_ns, |e| e.copy_path = path);
            }
            // Docker says destroy, Podman remove.
            "destroy" | "remove" => {
                let known = watch.cache.remove(&id).unwrap_or_else(|| from_attributes(&id, runtime, &attributes));
                watch.lifecycle.send(EventKind::ContainerDelete, &known, None, time_ns);
            }
            _ => {}
        }
    }
}

/// Docker or Podman, from what the API says it is.
async fn identify(docker: &Docker) -> Result<Runtime, bollard::errors::Error> {
    let version = docker.version().await?;
    let podman = version.components.unwrap_or_default().iter().any(|c| c.name.to_lowercase().contains("podman"));
    Ok(if podman { Runtime::Podman } else { Runtime::Docker })
}

/// A container known only from an event's attributes (removed before we
/// could inspect it).
fn from_attributes(id: &str, runtime: Runtime, attributes: &HashMap<String, String>) -> Known {
    let mut labels: Vec<(String, String)> = attributes
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "name" | "image" | "exitCode" | "containerExitCode" | "podId" | "path"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.sort();
    let pod = pod_from_labels(&labels).map(Arc::new);
    let container = Container {
        id: id.to_string(),
        name: attributes.get("name").cloned().unwrap_or_default(),
        image: attributes.get("image").cloned().unwrap_or_default(),
        runtime,
        labels,
        ..Default::default()
    };
    Known { container: Arc::new(container), pod }
}

/// Connects to the Docker API at `socket` (API 1.41, which dockerd 20.10
/// and Podman's compatible API speak).
pub fn connect(socket: &Path) -> Result<Docker, bollard::errors::Error> {
    let version = bollard::ClientVersion { major_version: 1, minor_version: 41 };
    Docker::connect_with_unix(&socket.to_string_lossy(), 10, &version)
}

/// Every container (running and stopped) of the runtime at `socket`,
/// inspected, with its pod and state.
async fn list_at(socket: &Path) -> Result<Vec<Listed>, bollard::errors::Error> {
    let docker = connect(socket)?;
    let runtime = identify(&docker).await?;
    list(&docker, runtime).await
}

async fn list(docker: &Docker, runtime: Runtime) -> Result<Vec<Listed>, bollard::errors::Error> {
    let listed = docker.list_containers(Some(ListContainersOptionsBuilder::new().all(true).build())).await?;
    let mut out = Vec::new();
    for c in listed {
        let Some(id) = c.id else { continue };
        // Gone between the list and the inspect: skip it.
        if let Ok(found) = inspect(docker, &id, runtime).await {
            out.push(found);
        }
    }
    Ok(out)
}

/// Inspects `id` into the cache; `None` if it is gone.
async fn inspect_into(docker: &Docker, id: &str, runtime: Runtime, cache: &ContainerCache) -> Option<Known> {
    match inspect(docker, id, runtime).await {
        Ok((c, pod, _)) => Some(cache.insert(c, pod)),
        Err(e) => {
            tracing::debug!(container = id, error = %e, "cannot inspect container");
            None
        }
    }
}

/// One container's metadata, pod and state.
async fn inspect(docker: &Docker, id: &str, runtime: Runtime) -> Result<Listed, bollard::errors::Error> {
    let info = docker.inspect_container(id, None).await?;
    Ok(describe(info, id, runtime))
}

/// What an inspect says: the container, its pod and its state.
fn describe(info: ContainerInspectResponse, id: &str, runtime: Runtime) -> Listed {
    let config = info.config.unwrap_or_default();
    let state = info.state.unwrap_or_default();
    let host = info.host_config.unwrap_or_default();
    let net = info.network_settings.unwrap_or_default();
    let started_at_ns = state
        .started_at
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(t.split('.').next().unwrap_or(t)).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    let mut labels: Vec<(String, String)> = config.labels.unwrap_or_default().into_iter().collect();
    labels.sort();
    let status = state.status.map(|s| s.to_string()).unwrap_or_default();
    let mut networks: Vec<Network> = net
        .networks
        .unwrap_or_default()
        .into_iter()
        .map(|(name, n)| Network {
            name,
            ip: n.ip_address.unwrap_or_default(),
            prefix_len: n.ip_prefix_len.unwrap_or(0).clamp(0, 128) as u8,
            ipv6: n.global_ipv6_address.unwrap_or_default(),
            ipv6_prefix_len: n.global_ipv6_prefix_len.unwrap_or(0).clamp(0, 128) as u8,
            mac: n.mac_address.unwrap_or_default(),
            gateway: n.gateway.unwrap_or_default(),
        })
        .collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    // Bound while running; as configured otherwise.
    let ports = ports_of(net.ports.filter(|p| !p.is_empty()).or(host.port_bindings));
    let container = Container {
        id: info.id.unwrap_or_else(|| id.to_string()),
        name: info.name.unwrap_or_default().trim_start_matches('/').to_string(),
        image: config.image.unwrap_or_default(),
        image_digest: info.image.unwrap_or_default(),
        runtime,
        labels,
        pid: state.pid.unwrap_or(0).max(0) as u32,
        privileged: host.privileged.unwrap_or(false),
        started_at_ns,
        network_mode: host.network_mode.unwrap_or_default(),
        networks,
        ports,
        runs_as_root: Some(user_is_root(config.user.as_deref().unwrap_or(""))),
    };
    let pod = pod_from_labels(&container.labels);
    (container, pod, status)
}

/// Published ports from a port map (`"80/tcp" → [host ip and port]`).
fn ports_of(map: Option<PortMap>) -> Vec<Port> {
    let mut ports = Vec::new();
    for (key, bindings) in map.unwrap_or_default() {
        let (port, protocol) = key.split_once('/').unwrap_or((&key, "tcp"));
        let Ok(container_port) = port.parse::<u16>() else { continue };
        for b in bindings.unwrap_or_default() {
            ports.push(Port {
                container_port,
                protocol: protocol.to_string(),
                host_ip: b.host_ip.unwrap_or_default(),
                host_port: b.host_port.and_then(|p| p.parse().ok()).unwrap_or(0),
            });
        }
    }
    ports.sort_by(|a, b| (a.container_port, &a.protocol, &a.host_ip).cmp(&(b.container_port, &b.protocol, &b.host_ip)));
    ports
}

/// Whether a container's `User` (`name`, `uid`, `uid:gid`, `name:group`;
/// empty: the image's default, root) runs as uid 0. A name other than
/// `root` is taken as not root: its uid is in the image's /etc/passwd.
fn user_is_root(user: &str) -> bool {
    let user = user.split(':').next().unwrap_or("");
    matches!(user, "" | "root" | "0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerConfig, EndpointSettings, HostConfig, NetworkSettings, PortBinding};

    #[test]
    fn an_inspect_describes_networks_ports_and_user() {
        let endpoint = EndpointSettings {
            ip_address: Some("10.88.0.5".into()),
            ip_prefix_len: Some(16),
            global_ipv6_address: Some("fd00::5".into()),
            global_ipv6_prefix_len: Some(64),
            mac_address: Some("02:42:0a:58:00:05".into()),
            gateway: Some("10.88.0.1".into()),
            ..Default::default()
        };
        let binding = |ip: &str, port: &str| PortBinding { host_ip: Some(ip.into()), host_port: Some(port.into()) };
        let ports = HashMap::from([
            ("80/tcp".to_string(), Some(vec![binding("127.0.0.1", "8080"), binding("::1", "8080")])),
            ("53/udp".to_string(), Some(vec![binding("", "5353")])),
            ("9000/tcp".to_string(), None), // exposed, not published
        ]);
        let info = ContainerInspectResponse {
            id: Some("c1".into()),
            config: Some(ContainerConfig { user: Some("1000:1000".into()), ..Default::default() }),
            host_config: Some(HostConfig { network_mode: Some("backend".into()), ..Default::default() }),
            network_settings: Some(NetworkSettings {
                networks: Some(HashMap::from([("backend".to_string(), endpoint)])),
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (c, _, _) = describe(info, "c1", Runtime::Docker);
        assert_eq!(c.network_mode, "backend");
        assert_eq!(
            c.networks,
            [Network {
                name: "backend".into(),
                ip: "10.88.0.5".into(),
                prefix_len: 16,
                ipv6: "fd00::5".into(),
                ipv6_prefix_len: 64,
                mac: "02:42:0a:58:00:05".into(),
                gateway: "10.88.0.1".into(),
            }]
        );
        let ports: Vec<_> =
            c.ports.iter().map(|p| (p.container_port, p.protocol.as_str(), p.host_ip.as_str(), p.host_port)).collect();
        assert_eq!(ports, [(53, "udp", "", 5353), (80, "tcp", "127.0.0.1", 8080), (80, "tcp", "::1", 8080)]);
        assert_eq!(c.runs_as_root, Some(false));
    }

    #[test]
    fn users_that_run_as_root() {
        for user in ["", "root", "0", "0:0", "root:wheel"] {
            assert!(user_is_root(user), "{user:?}");
        }
        for user in ["1000", "nobody", "1000:0", "app:root"] {
            assert!(!user_is_root(user), "{user:?}");
        }
    }
}
