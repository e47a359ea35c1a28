//! The enrichment stage: what the engine adds to the raw events of a live
//! source before rules see them. One [`Enricher`] per live source (eBPF or
//! the proc connector), built by the daemon from the config and the
//! watchers' container cache:
//!
//! - [`process_tree`]: ancestry, and the exe/argv of processes that started
//!   before the daemon (kept current by the eBPF source's fork/exec/exit);
//! - [`cgroups`] and [`cgroup_path`]: each event's container and pod from
//!   its cgroup;
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
pub mod hold;
pub(crate) mod process_tree;
pub mod users;

use std::sync::Arc;

use vigil_event::Event;

use crate::config::EbpfConfig;
use cgroups::{CgroupStats, Cgroups, Context};
use containers::ContainerCache;
use entered::Entered;
use hold::{HoldLimits, HoldQueue, HoldStats};
use process_tree::ProcessTree;
use users::UserNames;

/// The enrichment of one live source's events.
pub struct Enricher {
    pub tree: ProcessTree,
    pub cgroups: Cgroups,
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
    /// An enricher with an empty tree and cgroup map (see [`Self::scan`]),
    /// keeping exited processes and removed cgroups as `config` says.
    pub fn new(config: &EbpfConfig) -> Self {
        Enricher {
            tree: ProcessTree::new(config.exited_grace, config.max_exited),
            cgroups: Cgroups::new(config.exited_grace.as_nanos() as u64),
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

    /// Fills the tree from /proc and the cgroup map from the cgroup2
    /// hierarchy: what was there before the source started. Returns the
    /// processes found.
    pub fn scan(&mut self) -> usize {
        let processes = self.tree.scan_proc();
        match crate::proc::cgroup2_mount() {
            Some(root) => {
                if let Err(e) = self.cgroups.scan(&root) {
                    tracing::warn!(root = %root.display(), error = %e, "cannot scan the cgroup2 tree; containers are resolved from new cgroups only");
                }
            }
            None => tracing::warn!("no cgroup2 hierarchy mounted: events carry no container"),
        }
        processes
    }

    /// Periodic work: frees exited processes and removed cgroups past their
    /// grace period.
    pub fn sweep(&mut self, now_ns: u64) {
        self.tree.sweep(now_ns);
        self.cgroups.sweep(now_ns);
    }

    /// Attaches to `event` the container and pod of the cgroup `cgroup_id`
    /// (from the cgroup map), then the runtime's description ([`Self::describe`]).
    pub fn contextualize(&mut self, cgroup_id: u64, mut event: Event) -> Option<Event> {
        self.name_users(&mut event);
        if cgroup_id != 0
            && let Some(ctx) = self.cgroups.get(cgroup_id)
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

    pub fn cgroup_stats(&self) -> CgroupStats {
        self.cgroups.stats()
    }
}
