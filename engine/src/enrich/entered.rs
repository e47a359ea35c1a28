//! Processes that entered a container from the host: `nsenter -t PID`, or
//! any tool calling `setns(2)` into a container's namespaces, stays in a
//! host cgroup, so its cgroup says "host". Its mount namespace says
//! otherwise: the events of a process in a container's mount namespace but
//! a host cgroup are attributed to that container, marked with the
//! container label `vigil.entered-via=setns`. (`docker exec`, `kubectl
//! exec` and the runtimes' own execs join the container's cgroup too: they
//! are the container's, unmarked.)
//!
//! The mount namespaces of containers are learned from their own events,
//! only once a runtime's watcher described the container (a cgroup merely
//! named like a container, e.g. in a user's delegated subtree, teaches
//! nothing), and from the first process of every described container
//! (`/proc/<pid>/ns/mnt`, the pid the runtime gave, checked to be in that
//! container's cgroup), so a container that has run nothing since the
//! daemon started is known too. Never the host's or the daemon's own
//! namespace: otherwise one fake container in the host's namespace would
//! turn every host process into it. At most [`MAX_NAMESPACES`] are kept.
//!
//! The eBPF source traces setns and unshare in the kernel and keeps each
//! process's namespaces current in the process tree, so every event after
//! the change (an exit, a fork) is attributed, not only the next exec.

use std::sync::Arc;

use std::os::unix::fs::MetadataExt;

use rustc_hash::{FxHashMap, FxHashSet};
use vigil_event::{Container, Event, Pod};

use super::cgroups::Context;
use super::containers::ContainerCache;

/// The container label that marks an event attributed through its namespaces.
pub const ENTERED_VIA_LABEL: &str = "vigil.entered-via";
/// Container mount namespaces kept at most (the map starts over past it).
pub const MAX_NAMESPACES: usize = 16_384;

/// Container mount namespaces, learned from the containers' own events.
pub struct Entered {
    /// The host's mount namespace (`/proc/1/ns/mnt`; 0 when unknown: some
    /// sandboxes deny even root a look at pid 1's namespaces) and the
    /// daemon's own: never learned as a container's.
    host_mnt: [u64; 2],
    by_mnt: FxHashMap<u64, Context>,
    /// The container cache's generation last learned from.
    cache_generation: Option<u64>,
    /// Containers (id, first process) already learned from.
    learned_ids: FxHashSet<(String, u32)>,
}

impl Entered {
    pub fn new() -> Self {
        let ino = |path: &str| std::fs::metadata(path).map_or(0, |m| m.ino());
        Self::with_hosts([ino("/proc/1/ns/mnt"), ino("/proc/self/ns/mnt")])
    }

    /// With `host_mnt` as the host's mount namespace (tests).
    pub fn with_host(host_mnt: u64) -> Self {
        Self::with_hosts([host_mnt, host_mnt])
    }

    fn with_hosts(host_mnt: [u64; 2]) -> Self {
        Entered { host_mnt, by_mnt: FxHashMap::default(), cache_generation: None, learned_ids: FxHashSet::default() }
    }

    /// Learns the mount namespaces of the described containers not learned
    /// yet, from their first process, when the cache changed since the last
    /// time. Cheap when it did not (one atomic read).
    pub fn learn_from(&mut self, cache: &ContainerCache) {
        let generation = cache.generation();
        if self.cache_generation == Some(generation) {
            return;
        }
        self.cache_generation = Some(generation);
        if self.learned_ids.len() >= MAX_NAMESPACES {
            self.learned_ids.clear();
        }
        for known in cache.with_pids() {
            let c = &known.container;
            if !self.learned_ids.insert((c.id.clone(), c.pid)) {
                continue;
            }
            // The runtime's pid, if it is still that container's process
            // (a pid is reused once the container stops).
            let pid = c.pid;
            let in_it = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|cg| cg.contains(&c.id));
            let mnt = std::fs::metadata(format!("/proc/{pid}/ns/mnt")).map_or(0, |m| m.ino());
            if in_it {
                self.remember(mnt, c, known.pod.as_ref());
            }
        }
    }

    /// Notes the mount namespace of an event of a described container.
    pub fn learn(&mut self, e: &Event) {
        let (Some(p), Some(c)) = (&e.process, &e.container) else { return };
        self.remember(p.namespaces.mnt, c, e.pod.as_ref());
    }

    /// Notes `mnt` as the mount namespace of `c`, a described container.
    fn remember(&mut self, mnt: u64, c: &Arc<Container>, pod: Option<&Arc<Pod>>) {
        // Described by a runtime (it has a name), and not marked as
        // anything else (entered, unverified, unresolved).
        let vouched = !c.name.is_empty() && !c.labels.iter().any(|(k, _)| k.starts_with("vigil."));
        if mnt == 0 || self.host_mnt.contains(&mnt) || c.id.is_empty() || !vouched {
            return;
        }
        if self.by_mnt.get(&mnt).and_then(|ctx| ctx.container.as_ref()).is_some_and(|known| Arc::ptr_eq(known, c)) {
            return;
        }
        if self.by_mnt.len() >= MAX_NAMESPACES {
            self.by_mnt.clear();
        }
        self.by_mnt.insert(mnt, Context { container: Some(c.clone()), pod: pod.cloned() });
    }

    /// Attributes an event without a container whose process is in a
    /// known container's mount namespace to that container, marked; false
    /// when it is not.
    pub fn attribute(&self, e: &mut Event) -> bool {
        if e.container.is_some() {
            return false;
        }
        let Some(p) = &e.process else { return false };
        let Some(ctx) = self.by_mnt.get(&p.namespaces.mnt) else { return false };
        let Some(known) = &ctx.container else { return false };
        let mut container = (**known).clone();
        container.labels.push((ENTERED_VIA_LABEL.to_string(), "setns".to_string()));
        e.container = Some(Arc::new(container));
        e.pod = ctx.pod.clone();
        true
    }
}

impl Default for Entered {
    fn default() -> Self {
        Entered::new()
    }
}

#[cfg(test)]
mod tests {
    use vigil_event::{EventKind, Process};

    use super::*;

    fn exec_in(mnt: u64, container: Option<Arc<Container>>) -> Event {
        let mut p = Process { tgid: 10, ..Default::default() };
        p.namespaces.mnt = mnt;
        Event { process: Some(p), container, ..Event::new(EventKind::ProcessExec) }
    }

    #[test]
    fn a_host_process_in_a_containers_mount_namespace_is_attributed_and_marked() {
        let mut entered = Entered::with_host(1);
        let web = Arc::new(Container { id: "a".repeat(64), name: "web".into(), ..Default::default() });
        entered.learn(&exec_in(7, Some(web.clone())));

        let mut nsenter = exec_in(7, None);
        assert!(entered.attribute(&mut nsenter));
        let c = nsenter.container.unwrap();
        assert_eq!((c.id.as_str(), c.name.as_str()), (web.id.as_str(), "web"));
        assert!(c.labels.contains(&(ENTERED_VIA_LABEL.to_string(), "setns".to_string())));

        // The host's own namespace, an unknown one, and a container's own event: untouched.
        for mut e in [exec_in(1, None), exec_in(8, None), exec_in(7, Some(web.clone()))] {
            let before = e.container.clone();
            assert!(!entered.attribute(&mut e));
            assert_eq!(e.container, before);
        }
        // A marked event teaches nothing; the host namespace is never learned.
        let mut marked = exec_in(9, None);
        marked.container = Some(Arc::new(Container {
            id: "b".repeat(64),
            labels: vec![(ENTERED_VIA_LABEL.into(), "setns".into())],
            ..Default::default()
        }));
        entered.learn(&marked);
        entered.learn(&exec_in(1, Some(web)));
        assert!(!entered.attribute(&mut exec_in(9, None)) && !entered.attribute(&mut exec_in(1, None)));
        // A cgroup named like a container, never described (no name), or
        // unverified: teaches nothing.
        let fake = Arc::new(Container { id: "c".repeat(64), ..Default::default() });
        entered.learn(&exec_in(11, Some(fake)));
        let unverified = Arc::new(Container {
            id: "d".repeat(64),
            name: "x".into(),
            labels: vec![("vigil.unverified".into(), "user-delegated-cgroup".into())],
            ..Default::default()
        });
        entered.learn(&exec_in(12, Some(unverified)));
        assert!(!entered.attribute(&mut exec_in(11, None)) && !entered.attribute(&mut exec_in(12, None)));
    }
}
