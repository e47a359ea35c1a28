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
    ContainerStatusRequest, ListContainersRequest, ListPodSandboxRequest, PodSandboxStatusRequest, VersionRequest,
};
use prost::Message;
use tonic::transport::Channel;
use vigil_event::{Container, EventKind, Pod, Port, Runtime};

mod status;

use super::watcher::{Listed, WatchContext, WatchError, Watcher};
use crate::enrich::containers::{Known, pod_from_labels};
use status::{container_of_status, runtime_of, sandbox_of_status};

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
