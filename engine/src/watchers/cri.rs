//! The CRI watcher: containerd (and CRI-O) through the Kubernetes Container
//! Runtime Interface v1 (tonic, the `k8s-cri` crate) for listing and
//! status, with pods from their sandboxes: name, namespace, uid, labels.
//! CRI's own event stream is not implemented by containerd 1.6, so
//! lifecycle comes from containerd's event service (`/containers/create`,
//! `/tasks/start`, `/tasks/exit`, `/containers/delete` in the `k8s.io`
//! namespace). CRI-O has no such service: its containers are re-listed
//! every few seconds instead, without lifecycle events.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use containerd_client::services::v1::SubscribeRequest;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::types::Envelope;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerStatusRequest, ContainerStatusResponse, ListContainersRequest, ListPodSandboxRequest,
    PodSandboxStatusRequest, PodSandboxStatusResponse, VersionRequest, VersionResponse,
};
use prost::Message;
use tonic::transport::Channel;
use vigil_event::{Container, EventKind, Pod, Port, Runtime};

use super::watcher::{Listed, WatchContext, WatchError, Watcher};
use crate::enrich::containers::{Known, pod_from_labels};

/// The sockets tried when none is configured (the host's root first when
/// running in a pod with it mounted at /host).
pub const CRI_SOCKETS: [&str; 4] = [
    "/host/run/containerd/containerd.sock",
    "/run/containerd/containerd.sock",
    "/host/run/crio/crio.sock",
    "/run/crio/crio.sock",
];

/// The containerd namespace CRI's containers live in.
const K8S_NAMESPACE: &str = "k8s.io";

/// The longest a CRI status call may take (the watcher waits on it).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How often CRI-O's containers are re-listed (it has no event service).
const RELIST_EVERY: Duration = Duration::from_secs(2);

/// The CRI API of containerd or CRI-O at a socket.
pub struct CriApi {
    socket: PathBuf,
}

impl CriApi {
    pub fn new(socket: PathBuf) -> Self {
        CriApi { socket }
    }
}

impl Watcher for CriApi {
    fn runtime(&self) -> Runtime {
        Runtime::Containerd
    }

    fn endpoint(&self) -> &Path {
        &self.socket
    }

    async fn list(&self) -> Result<Vec<Listed>, WatchError> {
        connect(&self.socket).await?.0.list().await
    }

    async fn follow(&mut self, watch: &mut WatchContext) -> Result<(), WatchError> {
        follow(&self.socket, watch).await
    }
}

/// A CRI client on `socket`, and the runtime behind it.
pub async fn connect(socket: &Path) -> Result<(Cri, Runtime), WatchError> {
    let channel = containerd_client::connect(socket).await?;
    let mut client = RuntimeServiceClient::new(channel.clone());
    let version = within(client.version(VersionRequest { version: "v1".into() })).await?.into_inner();
    let runtime = runtime_of(&version);
    Ok((Cri { client, channel, runtime, pods: HashMap::new() }, runtime))
}

/// Connects, lists, then follows events until the stop (Ok) or an error.
async fn follow(socket: &Path, watch: &mut WatchContext) -> Result<(), WatchError> {
    let (mut cri, runtime) = connect(socket).await?;
    let mut lookups = watch.cache.watch(runtime);
    // Subscribe first, then list: nothing falls between the two. (containerd
    // answers a subscription only with its first event: it runs apart.)
    let mut events = match runtime {
        Runtime::Containerd => Some(subscribe(cri.channel.clone())),
        _ => None,
    };
    let listed = cri.list().await?;
    let count = listed.len();
    watch.cache.replace_all(runtime, listed.into_iter().map(|(c, pod, _)| (c, pod)).collect());
    watch.connected(runtime, count);
    let mut relist = tokio::time::interval(RELIST_EVERY);
    let polling = events.is_none();
    loop {
        if watch.stop.is_stopped() {
            return Ok(());
        }
        watch.cache.sweep();
        let next = async {
            match &mut events {
                Some(subscription) => subscription.events.recv().await,
                None => std::future::pending().await,
            }
        };
        let envelope = tokio::select! {
            biased;
            Some(id) = lookups.recv() => {
                match cri.describe(&id).await {
                    Some((c, pod)) => watch.cache.insert_looked_up(c, pod),
                    None => watch.cache.give_up(&id),
                }
                continue;
            }
            e = next => e.ok_or("containerd's event stream ended")??,
            _ = relist.tick(), if polling => {
                let listed = cri.list().await?;
                watch.cache.replace_all(runtime, listed.into_iter().map(|(c, pod, _)| (c, pod)).collect());
                continue;
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if watch.stop.is_stopped() {
                    return Ok(());
                }
                continue;
            }
        };
        let Some(any) = envelope.event else { continue };
        let time_ns =
            envelope.timestamp.map_or(0, |t| (t.seconds.max(0) as u64) * 1_000_000_000 + t.nanos.max(0) as u64);
        use containerd_client::events as ev;
        let (id, kind, exit_code) = match envelope.topic.as_str() {
            "/containers/create" => (ev::ContainerCreate::decode(&*any.value)?.id, EventKind::ContainerCreate, None),
            "/tasks/start" => (ev::TaskStart::decode(&*any.value)?.container_id, EventKind::ContainerStart, None),
            "/tasks/exit" => {
                let exit = ev::TaskExit::decode(&*any.value)?;
                // An exec's exit is not the container's.
                if exit.id != exit.container_id {
                    continue;
                }
                (exit.container_id, EventKind::ContainerStop, Some(exit.exit_status as i32))
            }
            "/containers/delete" => {
                let id = ev::ContainerDelete::decode(&*any.value)?.id;
                let known = watch.cache.remove(&id).unwrap_or_else(|| bare(&id, runtime));
                watch.lifecycle.send(EventKind::ContainerDelete, &known, None, time_ns);
                cri.pods.remove(&id);
                continue;
            }
            _ => continue,
        };
        // containerd announces a CRI container before the CRI plugin has
        // recorded it: give the plugin a moment.
        let tries = if kind == EventKind::ContainerCreate { 10 } else { 1 };
        let mut described = None;
        for attempt in 0..tries {
            if watch.stop.is_stopped() {
                return Ok(());
            }
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            described = cri.describe(&id).await;
            if described.is_some() {
                break;
            }
        }
        let known = match described {
            Some((c, pod)) => watch.cache.insert(c, pod),
            None => watch.cache.get(&id).unwrap_or_else(|| bare(&id, runtime)),
        };
        watch.lifecycle.send(kind, &known, exit_code, time_ns);
    }
}

/// A container known by its id only (gone before it could be described).
fn bare(id: &str, runtime: Runtime) -> Known {
    Known { container: Arc::new(Container { id: id.to_string(), runtime, ..Default::default() }), pod: None }
}

/// `call`, or an error past [`CALL_TIMEOUT`].
async fn within<T>(call: impl std::future::Future<Output = Result<T, tonic::Status>>) -> Result<T, WatchError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => Ok(r?),
        Err(_) => Err("the CRI runtime did not answer in time".into()),
    }
}

/// containerd's events, received by a task of their own; it ends with the
/// subscription.
struct Subscription {
    events: tokio::sync::mpsc::UnboundedReceiver<Result<Envelope, tonic::Status>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn subscribe(channel: Channel) -> Subscription {
    let (tx, events) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let filters = vec![format!("namespace=={K8S_NAMESPACE}")];
        let mut stream = match EventsClient::new(channel).subscribe(SubscribeRequest { filters }).await {
            Ok(r) => r.into_inner(),
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        loop {
            let next = stream.message().await.transpose();
            let end = !matches!(next, Some(Ok(_)));
            if next.is_some_and(|e| tx.send(e).is_err()) || end {
                return;
            }
        }
    });
    Subscription { events, task }
}

/// A CRI client with the pods it has seen, by sandbox id.
pub struct Cri {
    client: RuntimeServiceClient<Channel>,
    channel: Channel,
    runtime: Runtime,
    pods: HashMap<String, Sandbox>,
}

/// What a pod's sandbox says that its containers share.
#[derive(Clone)]
struct Sandbox {
    pod: Pod,
    /// `host` (the node's network) or `pod`.
    network_mode: String,
    ports: Vec<Port>,
}

impl Cri {
    /// Every container and sandbox (running or not), described, with its
    /// pod and state.
    pub async fn list(&mut self) -> Result<Vec<Listed>, WatchError> {
        let sandboxes =
            within(self.client.list_pod_sandbox(ListPodSandboxRequest { filter: None })).await?.into_inner().items;
        let mut out = Vec::new();
        for s in sandboxes {
            if let Some((c, pod)) = self.describe_sandbox(&s.id).await {
                let state = if s.state == 0 { "ready" } else { "notready" };
                out.push((c, pod, state.to_string()));
            }
        }
        let containers =
            within(self.client.list_containers(ListContainersRequest { filter: None })).await?.into_inner();
        for c in containers.containers {
            if let Some((container, pod)) = self.describe(&c.id).await {
                let state = ["created", "running", "exited", "unknown"].get(c.state as usize).unwrap_or(&"unknown");
                out.push((container, pod, state.to_string()));
            }
        }
        Ok(out)
    }

    /// A container (or a pod's sandbox) and its pod; `None` if it is gone
    /// or the runtime does not answer in time.
    pub async fn describe(&mut self, id: &str) -> Option<(Container, Option<Pod>)> {
        let request = ContainerStatusRequest { container_id: id.to_string(), verbose: true };
        let response = match tokio::time::timeout(CALL_TIMEOUT, self.client.container_status(request)).await {
            Ok(Ok(r)) => r.into_inner(),
            // Not a container: a sandbox, perhaps.
            Ok(Err(_)) => return self.describe_sandbox(id).await,
            Err(_) => {
                tracing::debug!(container = id, "CRI ContainerStatus timed out");
                return None;
            }
        };
        let (mut container, sandbox_id) = container_of_status(response, self.runtime)?;
        if !self.pods.contains_key(&sandbox_id) {
            self.describe_sandbox(&sandbox_id).await;
        }
        let sandbox = self.pods.get(&sandbox_id);
        // Its pod's network: the sandbox holds it for every container.
        if let Some(s) = sandbox {
            container.network_mode = s.network_mode.clone();
            container.ports = s.ports.clone();
        }
        let pod = sandbox
            .map(|s| s.pod.clone())
            .or_else(|| pod_from_labels(&container.labels))
            .map(|p| Pod { sandbox: false, ..p });
        Some((container, pod))
    }

    /// A pod's sandbox as a container of its own (its pause process runs in
    /// a cgroup of its own), with the pod marked as the sandbox.
    async fn describe_sandbox(&mut self, id: &str) -> Option<(Container, Option<Pod>)> {
        if id.is_empty() {
            return None;
        }
        let request = PodSandboxStatusRequest { pod_sandbox_id: id.to_string(), verbose: true };
        let response = tokio::time::timeout(CALL_TIMEOUT, self.client.pod_sandbox_status(request)).await.ok()?.ok()?;
        let (container, pod) = sandbox_of_status(response.into_inner(), self.runtime)?;
        let network_mode = container.network_mode.clone();
        let ports = container.ports.clone();
        self.pods.insert(id.to_string(), Sandbox { pod: pod.clone(), network_mode, ports });
        Some((container, Some(pod)))
    }
}

/// The runtime a CRI `Version` answer names.
fn runtime_of(version: &VersionResponse) -> Runtime {
    if version.runtime_name.to_lowercase().contains("cri-o") { Runtime::CriO } else { Runtime::Containerd }
}

/// What a verbose `ContainerStatus` says: the container, and its sandbox's
/// id. containerd and CRI-O both put `{"sandboxID", "pid", "privileged",
/// ...}` as JSON under the `info` key; without it, pid and privileged are
/// unknown (0, false).
fn container_of_status(response: ContainerStatusResponse, runtime: Runtime) -> Option<(Container, String)> {
    let status = response.status?;
    let info: serde_json::Value =
        response.info.get("info").and_then(|i| serde_json::from_str(i).ok()).unwrap_or_default();
    let mut labels: Vec<(String, String)> = status.labels.into_iter().collect();
    labels.sort();
    let container = Container {
        id: status.id,
        name: status.metadata.map(|m| m.name).unwrap_or_default(),
        image: status.image.map(|i| i.image).unwrap_or_default(),
        image_digest: status.image_ref,
        runtime,
        labels,
        pid: info["pid"].as_u64().unwrap_or(0) as u32,
        privileged: info["privileged"].as_bool().unwrap_or(false),
        started_at_ns: status.started_at.max(0) as u64,
        // Its sandbox's, set by the caller.
        network_mode: "pod".into(),
        // The OCI spec the runtime made: the uid its process runs as.
        runs_as_root: info["runtimeSpec"]["process"]["user"]["uid"].as_u64().map(|uid| uid == 0),
        ..Default::default()
    };
    Some((container, info["sandboxID"].as_str().unwrap_or_default().to_string()))
}

/// What a verbose `PodSandboxStatus` says: the sandbox as a container, and
/// its pod (metadata and the pod's labels).
fn sandbox_of_status(response: PodSandboxStatusResponse, runtime: Runtime) -> Option<(Container, Pod)> {
    let status = response.status?;
    let info: serde_json::Value =
        response.info.get("info").and_then(|i| serde_json::from_str(i).ok()).unwrap_or_default();
    let meta = status.metadata.unwrap_or_default();
    let mut labels: Vec<(String, String)> = status.labels.into_iter().collect();
    labels.sort();
    let ips = status
        .network
        .map(|n| {
            std::iter::once(n.ip)
                .chain(n.additional_ips.into_iter().map(|a| a.ip))
                .filter(|ip| !ip.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let host_network = status
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .is_some_and(|o| o.network == k8s_cri::v1::NamespaceMode::Node as i32);
    let pod = Pod { name: meta.name.clone(), namespace: meta.namespace, uid: meta.uid, sandbox: true, labels, ips };
    let container = Container {
        id: status.id,
        name: meta.name,
        image: info["image"].as_str().unwrap_or_default().to_string(),
        runtime,
        pid: info["pid"].as_u64().unwrap_or(0) as u32,
        started_at_ns: status.created_at.max(0) as u64,
        network_mode: if host_network { "host" } else { "pod" }.into(),
        ports: sandbox_ports(&info["config"]["port_mappings"]),
        ..Default::default()
    };
    Some((container, pod))
}

/// The pod's port mappings, from the sandbox config in a verbose status
/// (containerd and CRI-O: `{"protocol", "container_port", "host_port",
/// "host_ip"}`, the protocol as CRI's enum number or its name).
fn sandbox_ports(mappings: &serde_json::Value) -> Vec<Port> {
    let Some(list) = mappings.as_array() else { return Vec::new() };
    let port = |v: &serde_json::Value| v.as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
    list.iter()
        .filter(|m| m["host_port"].as_u64().unwrap_or(0) != 0)
        .map(|m| Port {
            container_port: port(&m["container_port"]),
            protocol: match &m["protocol"] {
                serde_json::Value::Number(n) => {
                    ["tcp", "udp", "sctp"].get(n.as_u64().unwrap_or(0) as usize).unwrap_or(&"tcp").to_string()
                }
                serde_json::Value::String(s) => s.to_lowercase(),
                _ => "tcp".into(),
            },
            host_ip: m["host_ip"].as_str().unwrap_or_default().to_string(),
            host_port: port(&m["host_port"]),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1::{ContainerMetadata, ContainerStatus, ImageSpec, PodSandboxMetadata, PodSandboxStatus};

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn status(info: Option<&str>) -> ContainerStatusResponse {
        ContainerStatusResponse {
            status: Some(ContainerStatus {
                id: "c".repeat(64),
                metadata: Some(ContainerMetadata { name: "app".into(), attempt: 0 }),
                state: 1,
                started_at: 1_763_000_000_000_000_000,
                image: Some(ImageSpec { image: "quay.io/shop/web:1.4".into(), ..Default::default() }),
                image_ref: "quay.io/shop/web@sha256:5d41402abc4b2a76b9719d911017c592".into(),
                labels: labels(&[("io.kubernetes.pod.name", "web-1"), ("io.kubernetes.pod.namespace", "shop")]),
                ..Default::default()
            }),
            info: info.map(|i| [("info".to_string(), i.to_string())].into_iter().collect()).unwrap_or_default(),
        }
    }

    #[test]
    fn runtimes_are_told_apart_by_their_version() {
        let v = |name: &str| VersionResponse { runtime_name: name.into(), ..Default::default() };
        assert_eq!(runtime_of(&v("containerd")), Runtime::Containerd);
        assert_eq!(runtime_of(&v("cri-o")), Runtime::CriO);
    }

    #[test]
    fn containerd_and_cri_o_container_statuses_read_alike() {
        // containerd 1.6's verbose info, and CRI-O's (same keys, other extras).
        let containerd =
            r#"{"sandboxID":"s1","pid":4242,"removing":false,"snapshotKey":"k","privileged":true,"runtimeSpec":{}}"#;
        let crio = r#"{"sandboxID":"s1","pid":4242,"runtimeSpec":{"ociVersion":"1.0.2"},"privileged":true}"#;
        for (runtime, info) in [(Runtime::Containerd, containerd), (Runtime::CriO, crio)] {
            let (c, sandbox) = container_of_status(status(Some(info)), runtime).unwrap();
            assert_eq!(sandbox, "s1");
            assert_eq!((c.name.as_str(), c.image.as_str(), c.runtime), ("app", "quay.io/shop/web:1.4", runtime));
            assert_eq!(c.image_digest, "quay.io/shop/web@sha256:5d41402abc4b2a76b9719d911017c592");
            assert_eq!((c.pid, c.privileged, c.started_at_ns), (4242, true, 1_763_000_000_000_000_000));
            assert_eq!(c.labels[0].0, "io.kubernetes.pod.name");
            assert_eq!(c.runs_as_root, None, "no process in the spec");
        }
        let spec = r#"{"sandboxID":"s1","runtimeSpec":{"process":{"user":{"uid":0,"gid":0}}}}"#;
        assert_eq!(container_of_status(status(Some(spec)), Runtime::Containerd).unwrap().0.runs_as_root, Some(true));
    }

    #[test]
    fn a_status_without_verbose_info_still_describes_the_container() {
        let (c, sandbox) = container_of_status(status(None), Runtime::CriO).unwrap();
        assert_eq!((c.name.as_str(), c.pid, c.privileged, sandbox.as_str()), ("app", 0, false, ""));
        // The pod then comes from the kubelet's labels.
        assert_eq!(pod_from_labels(&c.labels).unwrap().name, "web-1");
        assert!(container_of_status(ContainerStatusResponse::default(), Runtime::CriO).is_none());
    }

    #[test]
    fn a_sandbox_status_is_its_pod() {
        let response = PodSandboxStatusResponse {
            status: Some(PodSandboxStatus {
                id: "s".repeat(64),
                metadata: Some(PodSandboxMetadata {
                    name: "web-1".into(),
                    uid: "0f6c5d62-8d4c-4a51-9d7c-2b1f0f0b9a11".into(),
                    namespace: "shop".into(),
                    attempt: 0,
                }),
                created_at: 5,
                labels: labels(&[("app", "web")]),
                network: Some(k8s_cri::v1::PodSandboxNetworkStatus {
                    ip: "10.244.1.7".into(),
                    additional_ips: vec![k8s_cri::v1::PodIp { ip: "fd00:10:244:1::7".into() }],
                }),
                ..Default::default()
            }),
            info: [(
                "info".to_string(),
                r#"{"pid":77,"image":"registry.k8s.io/pause:3.9","config":{"port_mappings":[
                    {"protocol":1,"container_port":53,"host_port":5353,"host_ip":"127.0.0.1"},
                    {"container_port":80}]}}"#
                    .to_string(),
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let (c, pod) = sandbox_of_status(response, Runtime::CriO).unwrap();
        assert_eq!(pod.ips, ["10.244.1.7", "fd00:10:244:1::7"]);
        assert_eq!(c.network_mode, "pod");
        assert_eq!(
            c.ports,
            [Port { container_port: 53, protocol: "udp".into(), host_ip: "127.0.0.1".into(), host_port: 5353 }],
            "published mappings only"
        );
        assert_eq!((c.name.as_str(), c.image.as_str(), c.pid), ("web-1", "registry.k8s.io/pause:3.9", 77));
        assert_eq!((pod.name.as_str(), pod.namespace.as_str()), ("web-1", "shop"));
        assert_eq!(pod.uid, "0f6c5d62-8d4c-4a51-9d7c-2b1f0f0b9a11");
        assert!(pod.sandbox);
        assert_eq!(pod.labels, vec![("app".to_string(), "web".to_string())]);
    }
}
