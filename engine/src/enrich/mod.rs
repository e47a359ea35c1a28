//! The enrichment stage: what the engine adds to the raw events of a live
//! source before rules see them. One [`Enricher`] per live source (eBPF or
//! the proc connector), built by the daemon from the config and the
//! watchers' container cache:
//!
//! - [`process_tree`]: ancestry, and the exe/argv of processes that started
//!   before the daemon (kept current by the eBPF source's fork/exec/exit);
//! - [`cgroups`] and [`cgroup_path`]: each event's container and pod from
//!   its cgroup, v2 or, on v1 and hybrid hosts, v1 ([`hierarchies`]);
//! - [`containers`]: what the runtimes' watchers say of each container
//!   (name, image, labels, pod);
//! - [`hold`]: events of containers the watchers have not described yet
//!   wait briefly, so that rules see them described;
//! - [`users`]: an exec's user, group and login user names, from the
//!   process's own /etc/passwd and /etc/group;
//! - [`entered`]: a host-cgroup process in a container's mount namespace
//!   (nsenter, setns) is attributed to that container, marked.
//!
//! Replayed events carry the context they were recorded with.

pub mod cgroup_path;
pub mod cgroups;
pub mod containers;
pub mod entered;
pub mod hierarchies;
pub mod hold;
pub(crate) mod process_tree;
pub mod users;

use std::sync::Arc;

use vigil_event::Event;

use crate::config::EbpfConfig;
use cgroups::{CgroupIds, CgroupStats, Cgroups, Context};
use containers::ContainerCache;
use entered::Entered;
use hierarchies::Hierarchies;
use hold::{HoldLimits, HoldQueue, HoldStats};
use process_tree::ProcessTree;
use users::UserNames;

/// The enrichment of one live source's events.
pub struct Enricher {
    pub tree: ProcessTree,
    pub cgroups: Cgroups,
    /// The chosen v1 hierarchy's id and cgroups, on v1 and hybrid hosts.
    pub cgroups_v1: Option<(u32, Cgroups)>,
    /// The hierarchies found at start.
    hierarchies: Hierarchies,
    /// The watchers' descriptions, by container id (none: events carry the
    /// container ids their cgroups give, undescribed).
    containers: Option<Arc<ContainerCache>>,
    hold: HoldQueue,
    /// Held events a full queue let go, to send ahead of the next ones.
    released: Vec<Event>,
    users: UserNames,
    entered: Entered,
}

impl Enricher {
    /// An enricher with an empty tree and cgroup maps (see [`Self::scan`])
    /// for the host's cgroup hierarchies (v1 as `config` chooses), keeping
    /// exited processes and removed cgroups as `config` says.
    pub fn new(config: &EbpfConfig) -> Self {
        Self::empty(config).with_hierarchies(Hierarchies::detect(&config.cgroup_v1))
    }

    fn empty(config: &EbpfConfig) -> Self {
        Enricher {
            tree: ProcessTree::new(config.exited_grace, config.max_exited),
            cgroups: Cgroups::new(config.exited_grace.as_nanos() as u64),
            cgroups_v1: None,
            hierarchies: Hierarchies::default(),
            containers: None,
            hold: HoldQueue::new(HoldLimits::default()),
            released: Vec::new(),
            users: UserNames::default(),
            entered: Entered::new(),
        }
    }

    /// Describes containers from `cache`, holding (within `limits`) the
    /// events of those not described yet.
    pub fn with_containers(mut self, cache: Arc<ContainerCache>, limits: HoldLimits) -> Self {
        self.containers = Some(cache);
        self.hold = HoldQueue::new(limits);
        self
    }

    /// The container cache it describes from, if any.
    pub fn containers(&self) -> Option<&Arc<ContainerCache>> {
        self.containers.as_ref()
    }

    /// Resolves containers from `hierarchies` (see [`Self::scan`]): the v2
    /// one, and the chosen v1 one if any.
    fn with_hierarchies(mut self, hierarchies: Hierarchies) -> Self {
        self.cgroups_v1 = hierarchies.v1.as_ref().map(|h| (h.hierarchy_id, Cgroups::new(self.cgroups.grace_ns())));
        self.hierarchies = hierarchies;
        self
    }

    /// Fills the tree from /proc and the cgroup maps from the hierarchies'
    /// trees: what was there before the source started. Returns the
    /// processes found.
    pub fn scan(&mut self) -> usize {
        let processes = self.tree.scan_proc();
        match &self.hierarchies.v2 {
            Some(root) => {
                if let Err(e) = self.cgroups.scan(root) {
                    tracing::warn!(root = %root.display(), error = %e, "cannot scan the cgroup2 tree; containers are resolved from new cgroups only");
                }
            }
            None if self.cgroups_v1.is_none() => {
                tracing::warn!("no cgroup2 hierarchy mounted and no cgroup v1 one chosen: events carry no container")
            }
            None => {}
        }
        if let (Some(v1), Some((_, cgroups))) = (&self.hierarchies.v1, &mut self.cgroups_v1) {
            match &v1.mount {
                Some(root) => {
                    if let Err(e) = cgroups.scan(root) {
                        tracing::warn!(root = %root.display(), error = %e, "cannot scan the cgroup v1 tree; containers are resolved from new cgroups only");
                    }
                }
                None => tracing::warn!(
                    controller = %v1.controller,
                    "the chosen cgroup v1 hierarchy is not mounted here: containers started before the daemon are not resolved from it"
                ),
            }
        }
        processes
    }

    /// The hierarchies it resolves containers from.
    pub fn hierarchies(&self) -> &Hierarchies {
        &self.hierarchies
    }

    /// Whether a cgroup2 hierarchy is mounted (not a v1 host).
    pub fn has_v2(&self) -> bool {
        self.hierarchies.v2.is_some()
    }

    /// A cgroup was made (`hierarchy_id` 0: v2) at `path`.
    pub fn cgroup_mkdir(&mut self, hierarchy_id: u32, id: u64, path: &str) {
        if let Some(cgroups) = self.cgroups_of(hierarchy_id) {
            cgroups.mkdir(id, path);
        }
    }

    /// A cgroup was removed at `now_ns` (boot clock).
    pub fn cgroup_rmdir(&mut self, hierarchy_id: u32, id: u64, now_ns: u64) {
        if let Some(cgroups) = self.cgroups_of(hierarchy_id) {
            cgroups.rmdir(id, now_ns);
        }
    }

    fn cgroups_of(&mut self, hierarchy_id: u32) -> Option<&mut Cgroups> {
        match &mut self.cgroups_v1 {
            _ if hierarchy_id == 0 => Some(&mut self.cgroups),
            Some((id, cgroups)) if *id == hierarchy_id => Some(cgroups),
            _ => None,
        }
    }

    /// Periodic work: frees exited processes and removed cgroups past their
    /// grace period.
    pub fn sweep(&mut self, now_ns: u64) {
        self.tree.sweep(now_ns);
        self.cgroups.sweep(now_ns);
        if let Some((_, cgroups)) = &mut self.cgroups_v1 {
            cgroups.sweep(now_ns);
        }
    }

    /// Attaches to `event` the container and pod of its cgroups (from the
    /// cgroup maps: the v2 cgroup's, else the v1 one's), then the runtime's
    /// description ([`Self::describe`]).
    pub fn contextualize(&mut self, ids: CgroupIds, mut event: Event) -> Option<Event> {
        self.name_users(&mut event);
        if ids.v2 != 0
            && let Some(ctx) = self.cgroups.get(ids.v2)
        {
            ctx.apply(&mut event);
        }
        if event.container.is_none()
            && ids.v1 != 0
            && let Some((_, cgroups)) = &mut self.cgroups_v1
            && let Some(ctx) = cgroups.get(ids.v1)
        {
            ctx.apply(&mut event);
        }
        self.describe_or_attribute(event)
    }

    /// Attaches `ctx` (a container and pod the source read itself, e.g.
    /// from /proc), then the runtime's description ([`Self::describe`]).
    pub fn contextualize_as(&mut self, ctx: &Context, mut event: Event) -> Option<Event> {
        self.name_users(&mut event);
        ctx.apply(&mut event);
        self.describe_or_attribute(event)
    }

    /// A container's event gets its description ([`Self::describe`]) and
    /// teaches its mount namespace; a host event in a known container's
    /// mount namespace is attributed to it ([`entered`]).
    fn describe_or_attribute(&mut self, mut event: Event) -> Option<Event> {
        if event.container.is_none() {
            if let Some(cache) = &self.containers
                && event.process.as_ref().is_some_and(|p| p.namespaces.mnt != 0)
            {
                self.entered.learn_from(cache);
            }
            self.entered.attribute(&mut event);
            return Some(event);
        }
        let event = self.describe(event)?;
        self.entered.learn(&event);
        Some(event)
    }

    /// Names an exec's users and group (other kinds keep ids only: their
    /// process's names are its exec's).
    fn name_users(&mut self, event: &mut Event) {
        if event.kind == vigil_event::EventKind::ProcessExec
            && let Some(p) = &mut event.process
        {
            self.users.fill(p, crate::time::boottime_ns());
        }
    }

    /// Adds the runtime's description of the event's container once its
    /// watcher has one. Until then (and while earlier events of it wait)
    /// the event is held, if a connected watcher will describe it: `None`.
    pub fn describe(&mut self, mut event: Event) -> Option<Event> {
        let (Some(cache), Some(c)) = (&self.containers, &event.container) else { return Some(event) };
        // A container nested in another: the host's runtimes did not make
        // it, and their container of the same id (if any) is another one.
        if c.labels.iter().any(|(k, v)| k == cgroups::UNVERIFIED_LABEL && v == cgroups::NESTED) {
            return Some(event);
        }
        let holding = self.hold.is_holding(&c.id);
        let known = if holding { None } else { cache.get(&c.id) };
        if let Some(k) = known {
            k.apply(&mut event);
        } else if holding || (cache.is_watched(c.runtime) && !cache.gave_up(&c.id)) {
            if !holding {
                cache.ask(c.runtime, &c.id);
            }
            let id = c.id.clone();
            self.hold.hold(&id, event, crate::time::boottime_ns(), &mut self.released);
            return None;
        }
        Some(event)
    }

    /// Whether events wait for their container's description.
    pub fn is_holding(&self) -> bool {
        !self.hold.is_empty() || !self.released.is_empty()
    }

    /// Moves what a full hold queue let go into `batch` (it came before
    /// whatever is added to `batch` next).
    pub fn take_released(&mut self, batch: &mut Vec<Event>) {
        batch.append(&mut self.released);
    }

    /// Adds to `batch` the held events that can go now (described, timed
    /// out, or of a runtime no longer watched).
    pub fn release_held(&mut self, batch: &mut Vec<Event>) {
        let from = batch.len();
        batch.append(&mut self.released);
        if let Some(cache) = &self.containers
            && !self.hold.is_empty()
        {
            self.hold.release(cache, crate::time::boottime_ns(), batch);
        }
        for e in &batch[from..] {
            self.entered.learn(e);
        }
    }

    /// Adds every held event to `batch`: the source is stopping.
    pub fn release_all(&mut self, batch: &mut Vec<Event>) {
        batch.append(&mut self.released);
        if let Some(cache) = &self.containers {
            self.hold.release_all(cache, crate::time::boottime_ns(), batch);
        }
    }

    /// Completes when a watcher describes a container (never without a cache).
    pub async fn described(&self) {
        match &self.containers {
            Some(c) => c.changed().await,
            None => std::future::pending().await,
        }
    }

    pub fn hold_stats(&self) -> HoldStats {
        self.hold.stats()
    }

    /// The cgroup maps' counts, v2 and v1 summed.
    pub fn cgroup_stats(&self) -> CgroupStats {
        let mut stats = self.cgroups.stats();
        if let Some((_, v1)) = &self.cgroups_v1 {
            let v1 = v1.stats();
            stats.cgroups += v1.cgroups;
            stats.containers += v1.containers;
            stats.hits += v1.hits;
            stats.misses += v1.misses;
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hierarchies::V1Hierarchy;
    use vigil_event::EventKind;

    const ID: &str = "3f2a9c1d7e8b4a6f5c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b";

    #[test]
    fn a_v1_cgroup_names_the_container_when_the_v2_one_does_not() {
        let v1 = V1Hierarchy { controller: "memory".into(), hierarchy_id: 4, mount: None };
        let hierarchies = Hierarchies { v2: None, v1_mounted: true, v1: Some(v1) };
        let mut e = Enricher::empty(&EbpfConfig::default()).with_hierarchies(hierarchies);
        // Ids are per hierarchy: the same id names other cgroups in each.
        e.cgroup_mkdir(0, 10, "/system.slice/cron.service");
        e.cgroup_mkdir(4, 10, &format!("/docker/{ID}"));
        e.cgroup_mkdir(6, 11, &format!("/docker/{}", "a".repeat(64)));
        let exec = || Event::new(EventKind::ProcessExec);
        let id_of = |e: Option<Event>| e.unwrap().container.map(|c| c.id.clone());
        assert_eq!(id_of(e.contextualize(CgroupIds { v2: 10, v1: 10 }, exec())), Some(ID.to_string()));
        assert_eq!(id_of(e.contextualize(CgroupIds { v2: 10, v1: 0 }, exec())), None, "v2 alone: the host");
        assert_eq!(id_of(e.contextualize(CgroupIds { v2: 1, v1: 11 }, exec())), None, "another hierarchy's");
        assert_eq!(e.cgroup_stats().containers, 1);
    }

    /// A process in container A that names a cgroup of its own after
    /// container B's id is not B: it carries the id, unverified, never B's
    /// description.
    #[test]
    fn a_container_nested_in_another_is_never_described_as_the_hosts() {
        let cache = containers::ContainerCache::new();
        let victim = vigil_event::Container { id: ID.into(), name: "payments".into(), ..Default::default() };
        cache.insert(victim, None);
        let mut e = Enricher::empty(&EbpfConfig::default()).with_containers(cache, HoldLimits::default());
        let outer = "a".repeat(64);
        e.cgroup_mkdir(0, 10, &format!("/system.slice/docker-{outer}.scope/docker-{ID}.scope"));
        e.cgroup_mkdir(0, 11, &format!("/system.slice/docker-{ID}.scope"));
        let exec = || Event::new(EventKind::ProcessExec);
        let fake = e.contextualize(CgroupIds { v2: 10, v1: 0 }, exec()).unwrap();
        let c = fake.container.unwrap();
        assert_eq!((c.id.as_str(), c.name.as_str()), (ID, ""), "not described as payments");
        assert!(c.labels.contains(&(cgroups::UNVERIFIED_LABEL.into(), cgroups::NESTED.into())), "{:?}", c.labels);
        let real = e.contextualize(CgroupIds { v2: 11, v1: 0 }, exec()).unwrap();
        assert_eq!(real.container.unwrap().name, "payments");
    }
}
