//! Container metadata from the runtimes (name, image, labels, ...) and the
//! pod each belongs to, by container id, shared between the runtime
//! watchers that fill it and the source that attaches it to events.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use vigil_event::{Container, Labels, Pod, Runtime};

/// What a runtime told of a container, shared by every event from it.
#[derive(Debug, Clone)]
pub struct Known {
    pub container: Arc<Container>,
    pub pod: Option<Arc<Pod>>,
}

impl Known {
    /// Sets the event's container and, when known, its pod (an event may
    /// already carry the pod uid its cgroup path names).
    pub fn apply(&self, e: &mut vigil_event::Event) {
        e.container = Some(self.container.clone());
        if self.pod.is_some() {
            e.pod = self.pod.clone();
        }
    }
}

/// The cache, and what links it to the watchers: which runtimes are
/// watched and connected (events of their containers are worth holding
/// until described), lookups of containers seen before any watcher told of
/// them, and a wake-up for whoever holds events when something is added.
#[derive(Default)]
pub struct ContainerCache {
    by_id: RwLock<HashMap<String, Known>>,
    /// Per runtime (by WIT index): its watcher is connected.
    connected: [AtomicBool; RUNTIMES],
    /// Per runtime: where to ask its watcher about a container.
    lookups: Mutex<HashMap<Runtime, UnboundedSender<String>>>,
    /// Containers asked about and not yet described (asked once each).
    asked: Mutex<HashSet<String>>,
    /// Containers no watcher could describe (not found, or the hold timed
    /// out): their events are no longer held, until one is described.
    given_up: Mutex<HashSet<String>>,
    /// Removed containers, oldest first: described a while longer for the
    /// events the kernel sent before (and the runtime reported after).
    removed: Mutex<VecDeque<(Instant, String)>>,
    changed: Notify,
    /// Bumped by every description added.
    generation: AtomicU64,
}

/// How long a removed container stays described.
pub const REMOVED_LINGER: Duration = Duration::from_secs(5);

const RUNTIMES: usize = 5;

impl ContainerCache {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn get(&self, id: &str) -> Option<Known> {
        self.by_id.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    pub fn insert(&self, c: Container, pod: Option<Pod>) -> Known {
        let known = Known { container: Arc::new(c), pod: pod.map(Arc::new) };
        self.by_id.write().unwrap_or_else(|e| e.into_inner()).insert(known.container.id.clone(), known.clone());
        self.asked.lock().unwrap_or_else(|e| e.into_inner()).remove(&known.container.id);
        self.given_up.lock().unwrap_or_else(|e| e.into_inner()).remove(&known.container.id);
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
        known
    }

    /// Changes with every description added (to redo work that depends on
    /// the set of containers only when it changed).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The described containers whose first process's host pid is known.
    pub fn with_pids(&self) -> Vec<Known> {
        let by_id = self.by_id.read().unwrap_or_else(|e| e.into_inner());
        by_id.values().filter(|k| k.container.pid != 0).cloned().collect()
    }

    /// Inserts what a lookup found, unless the container is known already
    /// (an event described it since, more recently) or was removed.
    pub fn insert_looked_up(&self, c: Container, pod: Option<Pod>) {
        let removed = self.removed.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|(_, id)| *id == c.id);
        if !removed && self.get(&c.id).is_none() {
            self.insert(c, pod);
        }
    }

    /// No watcher can describe `id`: stop holding its events.
    pub fn give_up(&self, id: &str) {
        remember(&self.given_up, id);
        self.changed.notify_one();
    }

    /// Whether [`give_up`](Self::give_up) was said of `id` since it was last described.
    pub fn gave_up(&self, id: &str) -> bool {
        let given_up = self.given_up.lock().unwrap_or_else(|e| e.into_inner());
        !given_up.is_empty() && given_up.contains(id)
    }

    /// Marks `id` removed: it stays described for [`REMOVED_LINGER`], then
    /// [`sweep`](Self::sweep) forgets it. Returns what was known.
    pub fn remove(&self, id: &str) -> Option<Known> {
        let known = self.get(id)?;
        self.removed.lock().unwrap_or_else(|e| e.into_inner()).push_back((Instant::now(), id.to_string()));
        Some(known)
    }

    /// Forgets removed containers past their linger.
    pub fn sweep(&self) {
        let mut removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        while removed.front().is_some_and(|(at, _)| at.elapsed() >= REMOVED_LINGER) {
            if let Some((_, id)) = removed.pop_front() {
                self.by_id.write().unwrap_or_else(|e| e.into_inner()).remove(&id);
            }
        }
    }

    /// Replaces what is known of `runtime`'s containers with `listed` (a
    /// full listing): containers removed while a watcher was disconnected go.
    pub fn replace_all(&self, runtime: Runtime, listed: Vec<(Container, Option<Pod>)>) {
        let mut by_id = self.by_id.write().unwrap_or_else(|e| e.into_inner());
        by_id.retain(|_, k| k.container.runtime != runtime);
        by_id.extend(
            listed.into_iter().map(|(c, pod)| (c.id.clone(), Known { container: Arc::new(c), pod: pod.map(Arc::new) })),
        );
        drop(by_id);
        // A fresh listing: what was unknown may be asked about again.
        self.asked.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.given_up.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// A watcher of `runtime` starts: returns where lookups for it arrive.
    pub fn watch(&self, runtime: Runtime) -> UnboundedReceiver<String> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.lookups.lock().unwrap_or_else(|e| e.into_inner()).insert(runtime, tx);
        rx
    }

    /// Marks `runtime`'s watcher connected (its containers' events are
    /// held until described) or not (they go out with the cgroup's ids).
    pub fn set_connected(&self, runtime: Runtime, up: bool) {
        self.connected[runtime as usize % RUNTIMES].store(up, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Whether a connected watcher will describe `runtime`'s containers.
    pub fn is_watched(&self, runtime: Runtime) -> bool {
        self.connected[runtime as usize % RUNTIMES].load(Ordering::Relaxed)
    }

    /// Asks `runtime`'s watcher about container `id`, once (the first sight
    /// of a container its events did not describe yet).
    pub fn ask(&self, runtime: Runtime, id: &str) {
        if !remember(&self.asked, id) {
            return;
        }
        if let Some(tx) = self.lookups.lock().unwrap_or_else(|e| e.into_inner()).get(&runtime) {
            let _ = tx.send(id.to_string());
        }
    }

    /// Completes when a container is added or a watcher connects or goes.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// How many containers are known.
    pub fn len(&self) -> usize {
        self.by_id.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Most ids kept in the sets of containers asked about or given up: ids of
/// containers never described would otherwise pile up on a host running for
/// weeks. Past it the set starts again (each such container is asked about,
/// or held, once more).
const MAX_REMEMBERED: usize = 16_384;

/// Adds `id` to `set` (emptied first when full); false if it was there.
fn remember(set: &Mutex<HashSet<String>>, id: &str) -> bool {
    let mut set = set.lock().unwrap_or_else(|e| e.into_inner());
    if set.contains(id) {
        return false;
    }
    if set.len() >= MAX_REMEMBERED {
        set.clear();
    }
    set.insert(id.to_string())
}

/// The label a kubelet puts on every container of a pod.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";

/// The pod a container's Kubernetes labels name (as a kubelet sets them, on
/// Docker or through CRI), with no pod labels: those are on the sandbox.
pub fn pod_from_labels(labels: &Labels) -> Option<Pod> {
    let label = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let name = label(POD_NAME)?;
    // containerd marks sandboxes itself; dockershim did with its own label.
    let sandbox = label("io.cri-containerd.kind").as_deref() == Some("sandbox")
        || label("io.kubernetes.docker.type").as_deref() == Some("podsandbox");
    Some(Pod {
        name,
        namespace: label(POD_NAMESPACE).unwrap_or_default(),
        uid: label(POD_UID).unwrap_or_default(),
        sandbox,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, runtime: Runtime) -> (Container, Option<Pod>) {
        (Container { id: id.into(), runtime, ..Default::default() }, None)
    }

    #[test]
    fn a_relisting_forgets_what_is_gone_from_that_runtime_only() {
        let cache = ContainerCache::new();
        let (a, _) = container("a", Runtime::Docker);
        cache.insert(a, None);
        let (p, _) = container("p", Runtime::Podman);
        cache.insert(p, None);
        cache.replace_all(Runtime::Docker, vec![container("b", Runtime::Docker)]);
        assert!(cache.get("a").is_none());
        assert!(cache.get("b").is_some());
        assert!(cache.get("p").is_some());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_removed_container_stays_described_until_swept_past_its_linger() {
        let cache = ContainerCache::new();
        let (a, _) = container("a", Runtime::Docker);
        cache.insert(a, None);
        assert!(cache.remove("a").is_some());
        cache.sweep();
        assert!(cache.get("a").is_some(), "late events still resolve");
        cache.removed.lock().unwrap()[0].0 -= REMOVED_LINGER;
        cache.sweep();
        assert!(cache.get("a").is_none());
        assert!(cache.remove("a").is_none());
    }

    #[test]
    fn the_sets_of_undescribed_ids_stay_bounded() {
        let cache = ContainerCache::new();
        for i in 0..MAX_REMEMBERED + 10 {
            cache.give_up(&format!("{i:064x}"));
        }
        assert!(cache.given_up.lock().unwrap().len() <= MAX_REMEMBERED);
        assert!(cache.gave_up(&format!("{:064x}", MAX_REMEMBERED + 9)));
    }

    #[test]
    fn kubelet_labels_name_the_pod() {
        let labels: Labels = [
            (POD_NAME, "web-1"),
            (POD_NAMESPACE, "shop"),
            (POD_UID, "0f6c5d62-8d4c-4a51-9d7c-2b1f0f0b9a11"),
            ("io.cri-containerd.kind", "sandbox"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let pod = pod_from_labels(&labels).unwrap();
        assert_eq!((pod.name.as_str(), pod.namespace.as_str()), ("web-1", "shop"));
        assert_eq!(pod.uid, "0f6c5d62-8d4c-4a51-9d7c-2b1f0f0b9a11");
        assert!(pod.sandbox);
        assert!(pod_from_labels(&vec![("app".into(), "x".into())]).is_none());
    }
}
