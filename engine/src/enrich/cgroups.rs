//! cgroup id → path → container, for the eBPF source.
//!
//! A process's cgroup v2 id is the inode number of its cgroup's directory.
//! At start the cgroup2 tree is walked once; from then on the kernel's
//! `cgroup_mkdir`/`cgroup_rmdir` events keep the map current, so a
//! container's cgroup is known before its first process execs in it, and
//! that exec already carries the container. Removed cgroups stay for a
//! grace period for late events. What the path says (id, runtime, pod uid:
//! [`cgroup_path`](super::cgroup_path)) is resolved once per cgroup and
//! shared (`Arc`) by every event from it. What the runtimes say of the
//! container (name, image, labels, pod name) comes on top, from
//! [`containers`](super::containers).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use vigil_event::{Container, Pod};

use super::cgroup_path::container_of;

/// The label on a container that only its cgroup's name vouches for (the
/// value says why): in a subtree a user controls (`user-delegated-cgroup`;
/// a runtime's description, once a watcher has one, replaces it), or
/// under another container's cgroup (`nested-in-container`; never
/// described: the host's runtimes did not make it).
pub const UNVERIFIED_LABEL: &str = "vigil.unverified";
/// The value of [`UNVERIFIED_LABEL`] for a container nested in another.
pub const NESTED: &str = "nested-in-container";

/// A task's cgroup ids, as the eBPF programs read them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupIds {
    /// In the v2 hierarchy (the root's on a v1 host).
    pub v2: u64,
    /// In the chosen v1 hierarchy ([`super::hierarchies`]); 0: none.
    pub v1: u64,
}

/// A cgroup's context, shared by the events of its processes.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub container: Option<Arc<Container>>,
    pub pod: Option<Arc<Pod>>,
}

impl Context {
    /// Sets the event's container and pod.
    pub fn apply(&self, e: &mut vigil_event::Event) {
        e.container = self.container.clone();
        e.pod = self.pod.clone();
    }

    /// The context `path` names.
    pub fn of_path(path: &str) -> Context {
        match container_of(path) {
            None => Context::default(),
            Some(owner) => Context {
                container: Some(Arc::new(Container {
                    id: owner.id,
                    runtime: owner.runtime,
                    // Said until a runtime's watcher describes it (its description replaces this).
                    labels: if owner.nested {
                        vec![(UNVERIFIED_LABEL.to_string(), NESTED.to_string())]
                    } else if owner.delegated {
                        vec![(UNVERIFIED_LABEL.to_string(), "user-delegated-cgroup".to_string())]
                    } else {
                        Vec::new()
                    },
                    ..Default::default()
                })),
                pod: owner.pod_uid.map(|uid| Arc::new(Pod { uid, ..Default::default() })),
            },
        }
    }
}

/// Counts for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// cgroups known now.
    pub cgroups: usize,
    /// Of which belong to a container.
    pub containers: usize,
    /// Lookups of an id the map knew.
    pub hits: u64,
    /// Lookups of an id it did not know (the event goes out without context).
    pub misses: u64,
}

pub struct Cgroups {
    by_id: FxHashMap<u64, Context>,
    /// Removed cgroups with when they were removed (boot ns), oldest first.
    removed: VecDeque<(u64, u64)>,
    grace_ns: u64,
    hits: u64,
    misses: u64,
}

impl Cgroups {
    pub fn new(grace_ns: u64) -> Self {
        Cgroups { by_id: FxHashMap::default(), removed: VecDeque::new(), grace_ns, hits: 0, misses: 0 }
    }

    /// Walks the cgroup tree mounted at `root` (v2, or one v1 hierarchy:
    /// its directories' inode numbers are its cgroups' ids too).
    pub fn scan(&mut self, root: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let mut dirs = vec![(root.to_path_buf(), String::new())];
        self.by_id.insert(std::fs::metadata(root)?.ino(), Context::default());
        while let Some((dir, rel)) = dirs.pop() {
            // A cgroup can vanish while we walk: skip it.
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if !meta.is_dir() {
                    continue;
                }
                let path = format!("{rel}/{}", entry.file_name().to_string_lossy());
                self.by_id.insert(meta.ino(), Context::of_path(&path));
                dirs.push((entry.path(), path));
            }
        }
        Ok(())
    }

    /// A cgroup was created (`path` relative to the hierarchy's root).
    pub fn mkdir(&mut self, id: u64, path: &str) {
        self.by_id.insert(id, Context::of_path(path));
    }

    /// A cgroup was removed at `now_ns` (boot clock): kept for the grace period.
    pub fn rmdir(&mut self, id: u64, now_ns: u64) {
        self.removed.push_back((now_ns, id));
    }

    /// Forgets cgroups removed more than the grace period ago.
    pub fn sweep(&mut self, now_ns: u64) {
        while let Some(&(at, id)) = self.removed.front() {
            if now_ns.saturating_sub(at) < self.grace_ns {
                break;
            }
            self.removed.pop_front();
            self.by_id.remove(&id);
        }
    }

    /// The context of the cgroup `id`; `None` if unknown.
    pub fn get(&mut self, id: u64) -> Option<&Context> {
        match self.by_id.get(&id) {
            Some(c) => {
                self.hits += 1;
                Some(c)
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// How long removed cgroups are kept, in ns.
    pub fn grace_ns(&self) -> u64 {
        self.grace_ns
    }

    /// cgroups known.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn stats(&self) -> CgroupStats {
        CgroupStats {
            cgroups: self.by_id.len(),
            containers: self.by_id.values().filter(|c| c.container.is_some()).count(),
            hits: self.hits,
            misses: self.misses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_event::Runtime;

    const ID: &str = "3f2a9c1d7e8b4a6f5c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b";

    #[test]
    fn mkdir_resolves_and_rmdir_lingers_for_the_grace_period() {
        let mut c = Cgroups::new(1_000);
        c.mkdir(7, &format!("/docker/{ID}"));
        c.mkdir(8, "/system.slice/cron.service");
        let ctx = c.get(7).unwrap();
        let container = ctx.container.as_ref().unwrap();
        assert_eq!((container.id.as_str(), container.runtime), (ID, Runtime::Docker));
        assert!(c.get(8).unwrap().container.is_none(), "host");
        assert!(c.get(9).is_none());
        c.rmdir(7, 10_000);
        c.sweep(10_500);
        assert!(c.get(7).is_some(), "within the grace period");
        c.sweep(11_000);
        assert!(c.get(7).is_none());
        assert_eq!(c.stats(), CgroupStats { cgroups: 1, containers: 0, hits: 3, misses: 2 });
    }

    #[test]
    fn a_container_only_its_users_cgroup_vouches_for_is_labelled_unverified() {
        let id = "b".repeat(64);
        let fake =
            Context::of_path(&format!("/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{id}.scope"));
        let c = fake.container.unwrap();
        assert_eq!(c.id, id);
        assert_eq!(c.labels, [(UNVERIFIED_LABEL.to_string(), "user-delegated-cgroup".to_string())]);
        let real = Context::of_path(&format!("/system.slice/docker-{id}.scope"));
        assert!(real.container.unwrap().labels.is_empty());
    }

    #[test]
    fn events_of_one_cgroup_share_its_context() {
        let mut c = Cgroups::new(1_000);
        c.mkdir(7, &format!("/kubepods/besteffort/pod6b1c7f0e-3a2d-4c5b-9e8f-1a2b3c4d5e6f/{ID}"));
        let a = c.get(7).unwrap().clone();
        let b = c.get(7).unwrap().clone();
        assert!(Arc::ptr_eq(a.container.as_ref().unwrap(), b.container.as_ref().unwrap()));
        assert_eq!(a.pod.unwrap().uid, "6b1c7f0e-3a2d-4c5b-9e8f-1a2b3c4d5e6f");
    }

    #[test]
    fn scans_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("docker").join(ID);
        std::fs::create_dir_all(&deep).unwrap();
        let mut c = Cgroups::new(1_000);
        c.scan(dir.path()).unwrap();
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(&deep).unwrap().ino();
        assert_eq!(c.get(ino).unwrap().container.as_ref().unwrap().id, ID);
        assert_eq!(c.stats().cgroups, 3);
    }
}
