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
//! nothing) and never the host's or the daemon's own namespace: otherwise
//! one fake container in the host's namespace would turn every host process
//! into it. A container that has run nothing since the daemon started is
//! not known yet; at most [`MAX_NAMESPACES`] are kept.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use vigil_event::Event;

use super::cgroups::Context;

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
}

impl Entered {
    pub fn new() -> Self {
        use std::os::unix::fs::MetadataExt;
        let ino = |path: &str| std::fs::metadata(path).map_or(0, |m| m.ino());
        Entered { host_mnt: [ino("/proc/1/ns/mnt"), ino("/proc/self/ns/mnt")], by_mnt: FxHashMap::default() }
    }

    /// With `host_mnt` as the host's mount namespace (tests).
    pub fn with_host(host_mnt: u64) -> Self {
        Entered { host_mnt: [host_mnt, host_mnt], by_mnt: FxHashMap::default() }
    }

    /// Notes the mount namespace of an event of a described container.
    pub fn learn(&mut self, e: &Event) {
        let (Some(p), Some(c)) = (&e.process, &e.container) else { return };
        let mnt = p.namespaces.mnt;
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
        self.by_mnt.insert(mnt, Context { container: Some(c.clone()), pod: e.pod.clone() });
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
    use vigil_event::{Container, EventKind, Process};

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
