//! Which cgroup hierarchies tell a process's container on this host.
//!
//! - **v2** (`cgroup2` at /sys/fs/cgroup): a task's v2 cgroup id says it all.
//! - **hybrid** (v1 controllers, plus `cgroup2` at /sys/fs/cgroup/unified):
//!   runtimes put containers in the v1 controllers' hierarchies and, most
//!   of them, in the unified one too; some do not.
//! - **v1** (no `cgroup2` mounted: older RHEL/CentOS, Amazon Linux 2): every
//!   task's v2 id is the root's, so only a v1 hierarchy tells containers
//!   apart.
//!
//! On v1 and hybrid hosts one v1 controller's hierarchy is chosen
//! (`source.ebpf.cgroup_v1`): the eBPF programs read each task's cgroup id
//! in it beside the v2 id, and report its mkdir/rmdir; an event whose v2
//! cgroup names no container is resolved from its v1 cgroup with the same
//! path parser. A named hierarchy (`name=systemd`) has no controller state
//! to read from a task, so a controller's is chosen.

use std::path::PathBuf;

use procfs::process::MountInfo;

/// Controllers tried in this order by `auto`: every runtime makes a cgroup
/// per container in each (kubelet requires `memory`, `pids`, `cpu`).
pub const PREFERRED_V1: [&str; 6] = ["memory", "pids", "cpu", "cpuset", "freezer", "devices"];

/// The host's kind of cgroup setup, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    V2,
    Hybrid,
    V1,
    /// No cgroup hierarchy mounted: events carry no container.
    None,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::V2 => "v2",
            Layout::Hybrid => "hybrid",
            Layout::V1 => "v1",
            Layout::None => "none",
        })
    }
}

/// The chosen v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// Its controller, e.g. `memory`.
    pub controller: String,
    /// Its id, as in /proc/cgroups and the kernel's `cgroup_root.hierarchy_id`.
    pub hierarchy_id: u32,
    /// Where it is mounted in the daemon's mount namespace, to walk at start
    /// (`None`: mounted elsewhere only; cgroups made before start are unknown).
    pub mount: Option<PathBuf>,
}

/// What was found at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchies {
    /// Where `cgroup2` is mounted.
    pub v2: Option<PathBuf>,
    /// Whether any v1 controller hierarchy is mounted here.
    pub v1_mounted: bool,
    pub v1: Option<V1Hierarchy>,
}

impl Hierarchies {
    /// Reads /proc/self/mountinfo and /proc/cgroups. `choice` is
    /// `source.ebpf.cgroup_v1`: `auto`, `off`, or a controller's name.
    pub fn detect(choice: &str) -> Self {
        let controllers = procfs::cgroups().map(|c| c.0).unwrap_or_default();
        let controllers: Vec<(String, u32)> =
            controllers.into_iter().filter(|c| c.enabled).map(|c| (c.name, c.hierarchy)).collect();
        let found = Self::from(&crate::proc::mounts(), &controllers, choice);
        if found.v1.is_none() && !matches!(choice, "auto" | "off") {
            tracing::warn!(
                controller = choice,
                "source.ebpf.cgroup_v1 names no cgroup v1 hierarchy of this host (see /proc/cgroups): cgroup v1 is not read"
            );
        }
        found
    }

    /// [`Self::detect`] from a mount table and the (controller, hierarchy
    /// id) pairs of /proc/cgroups.
    pub fn from(mounts: &[MountInfo], controllers: &[(String, u32)], choice: &str) -> Self {
        let v2 = crate::proc::first_of(mounts, &["cgroup2"]);
        let mount_of = |controller: &str| {
            mounts
                .iter()
                .find(|m| m.fs_type == "cgroup" && m.super_options.contains_key(controller))
                .map(|m| m.mount_point.clone())
        };
        let v1_mounted = mounts
            .iter()
            .any(|m| m.fs_type == "cgroup" && controllers.iter().any(|(c, _)| m.super_options.contains_key(c)));
        let hierarchy = |controller: &str| {
            controllers.iter().find(|(c, id)| c == controller && *id != 0).map(|(c, id)| V1Hierarchy {
                controller: c.clone(),
                hierarchy_id: *id,
                mount: mount_of(c),
            })
        };
        let v1 = match choice {
            "off" => None,
            "auto" => PREFERRED_V1.iter().find_map(|c| hierarchy(c).filter(|h| h.mount.is_some())),
            named => hierarchy(named),
        };
        Hierarchies { v2, v1_mounted, v1 }
    }

    pub fn layout(&self) -> Layout {
        match (self.v2.is_some(), self.v1_mounted) {
            (true, false) => Layout::V2,
            (true, true) => Layout::Hybrid,
            (false, true) => Layout::V1,
            (false, false) => Layout::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proc::parse_mountinfo;

    fn controllers(list: &[(&str, u32)]) -> Vec<(String, u32)> {
        list.iter().map(|(c, id)| (c.to_string(), *id)).collect()
    }

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
        32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
        35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
        40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n\
        41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";

    #[test]
    fn a_hybrid_host_reads_the_memory_hierarchy() {
        let h = Hierarchies::from(&parse_mountinfo(HYBRID), &controllers(&[("cpu", 1), ("memory", 4)]), "auto");
        assert_eq!(h.layout(), Layout::Hybrid);
        assert_eq!(h.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let v1 = h.v1.unwrap();
        assert_eq!((v1.controller.as_str(), v1.hierarchy_id), ("memory", 4));
        assert_eq!(v1.mount, Some(PathBuf::from("/sys/fs/cgroup/memory")));
    }

    #[test]
    fn a_v1_host_without_the_unified_hierarchy() {
        let v1_only: String = HYBRID.lines().filter(|l| !l.contains("cgroup2")).map(|l| format!("{l}\n")).collect();
        let h = Hierarchies::from(&parse_mountinfo(&v1_only), &controllers(&[("cpu", 1), ("memory", 4)]), "cpu");
        assert_eq!(h.layout(), Layout::V1);
        assert_eq!(h.v1.unwrap().hierarchy_id, 1, "the controller asked for");
    }

    #[test]
    fn a_v2_host_or_off_chooses_none() {
        let v2 = parse_mountinfo("30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let h = Hierarchies::from(&v2, &controllers(&[("cpu", 0), ("memory", 0)]), "auto");
        assert_eq!((h.layout(), h.v1), (Layout::V2, None));
        let off = Hierarchies::from(&parse_mountinfo(HYBRID), &controllers(&[("memory", 4)]), "off");
        assert_eq!(off.v1, None);
        assert_eq!(Hierarchies::from(&[], &[], "auto").layout(), Layout::None);
    }

    #[test]
    fn a_controller_mounted_elsewhere_only_is_used_without_a_walk() {
        let v2 = parse_mountinfo("30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let h = Hierarchies::from(&v2, &controllers(&[("freezer", 6)]), "freezer");
        assert_eq!(h.v1, Some(V1Hierarchy { controller: "freezer".into(), hierarchy_id: 6, mount: None }));
        assert_eq!(Hierarchies::from(&v2, &controllers(&[("freezer", 6)]), "auto").v1, None, "auto wants it here");
    }
}
