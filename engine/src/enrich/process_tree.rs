//! The host's processes as the daemon knows them: filled from a scan of
//! /proc at start (so processes older than the daemon have parents, exe,
//! argv), then kept current from fork, exec and exit events. Each exec's
//! ancestry is read from here.
//!
//! Memory stays bounded on a host that runs for weeks: an exited process is
//! kept for a grace period (late events about it still resolve), then freed;
//! and at most `max_exited` exited entries are kept at all, oldest freed
//! first, so a fork/exit storm cannot grow the tree beyond the live
//! processes (themselves bounded by the kernel's pid_max) plus that many.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use vigil_event::{Ancestor, Process};

use super::cgroups::CgroupIds;
use crate::proc::ProcDir;

/// One process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub ppid: u32,
    pub comm: Arc<str>,
    pub exe: Arc<str>,
    pub argv: Arc<[String]>,
    /// Nanoseconds since boot; tells a reused pid from the process before.
    pub start_ns: u64,
    /// Its cgroup ids (0 when unknown).
    pub cgroups: CgroupIds,
    /// Its namespaces' inode numbers, as `Namespaces::to_array` orders them
    /// (0 when unknown): from its exec or fork, then from every setns or
    /// unshare it made.
    pub ns: [u32; 7],
    pub exited: bool,
}

/// Counts for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Entries now.
    pub nodes: usize,
    /// Most entries at any time.
    pub peak: usize,
    /// Exited entries freed after their grace period.
    pub freed: u64,
    /// Exited entries freed early because `max_exited` was reached.
    pub evicted: u64,
    /// Processes looked up in /proc because no event had told of them.
    pub proc_lookups: u64,
}

pub struct ProcessTree {
    nodes: FxHashMap<u32, Node>,
    /// Exited processes, oldest first: (exit time in boot ns, pid, start_ns).
    exited: VecDeque<(u64, u32, u64)>,
    grace_ns: u64,
    max_exited: usize,
    stats: TreeStats,
}

/// Defaults: 5 s of grace, 65,536 exited entries at most.
impl Default for ProcessTree {
    fn default() -> Self {
        ProcessTree::new(Duration::from_secs(5), 65_536)
    }
}

impl ProcessTree {
    pub fn new(grace: Duration, max_exited: usize) -> Self {
        ProcessTree {
            nodes: FxHashMap::default(),
            exited: VecDeque::new(),
            grace_ns: grace.as_nanos() as u64,
            max_exited: max_exited.max(1),
            stats: TreeStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn get(&self, pid: u32) -> Option<&Node> {
        self.nodes.get(&pid)
    }

    pub fn stats(&self) -> TreeStats {
        TreeStats { nodes: self.nodes.len(), ..self.stats }
    }

    /// Adds every process in /proc; returns how many.
    pub fn scan_proc(&mut self) -> usize {
        let mut n = 0;
        for pid in crate::proc::pids() {
            if let Some(node) = node_from_proc(pid) {
                self.nodes.insert(pid, node);
                n += 1;
                self.stats.peak = self.stats.peak.max(self.nodes.len());
            }
        }
        n
    }

    /// A process forked `pid` from `ppid`: it runs its parent's program.
    /// `ns`: the child's namespaces, all 0 when not read (a brief fork
    /// record): then its parent's; so is a v1 cgroup id of 0.
    pub fn fork(&mut self, pid: u32, ppid: u32, start_ns: u64, mut cgroups: CgroupIds, ns: [u32; 7]) {
        let (comm, exe, argv, parent_ns, parent_v1) = match self.nodes.get(&ppid) {
            Some(p) => (p.comm.clone(), p.exe.clone(), p.argv.clone(), p.ns, p.cgroups.v1),
            None => (Arc::from(""), Arc::from(""), Arc::from(Vec::new()), [0; 7], 0),
        };
        let ns = if ns == [0; 7] { parent_ns } else { ns };
        if cgroups.v1 == 0 {
            cgroups.v1 = parent_v1;
        }
        self.nodes.insert(pid, Node { ppid, comm, exe, argv, start_ns, cgroups, ns, exited: false });
        self.stats.peak = self.stats.peak.max(self.nodes.len());
    }

    /// `process` executed a new program; `cgroup_v1_id`: its cgroup in the
    /// chosen v1 hierarchy (0: none).
    pub fn exec(&mut self, process: &Process, cgroup_v1_id: u64) {
        let node = Node {
            ppid: process.ppid,
            comm: Arc::from(process.comm.as_str()),
            exe: Arc::from(process.exe.as_str()),
            argv: Arc::from(process.argv.as_slice()),
            start_ns: process.start_time_ns,
            cgroups: CgroupIds { v2: process.cgroup_id, v1: cgroup_v1_id },
            ns: process.namespaces.to_array().map(|n| n as u32),
            exited: false,
        };
        self.nodes.insert(process.tgid, node);
        self.stats.peak = self.stats.peak.max(self.nodes.len());
    }

    /// `pid` changed namespaces (setns, unshare): they are now `ns`.
    pub fn set_namespaces(&mut self, pid: u32, ns: [u32; 7]) {
        if let Some(node) = self.nodes.get_mut(&pid) {
            node.ns = ns;
        }
    }

    /// `pid` exited at `now_ns` (boot time): kept for the grace period.
    pub fn exit(&mut self, pid: u32, now_ns: u64) {
        let Some(node) = self.nodes.get_mut(&pid) else { return };
        if node.exited {
            return;
        }
        node.exited = true;
        self.exited.push_back((now_ns, pid, node.start_ns));
        while self.exited.len() > self.max_exited {
            if self.free_oldest_exited() {
                self.stats.evicted += 1;
            }
        }
    }

    /// Frees exited entries whose grace period is over at `now_ns`.
    pub fn sweep(&mut self, now_ns: u64) {
        while let Some(&(at, _, _)) = self.exited.front() {
            if now_ns.saturating_sub(at) < self.grace_ns {
                break;
            }
            if self.free_oldest_exited() {
                self.stats.freed += 1;
            }
        }
    }

    /// Pops the oldest exited entry and frees its node unless the pid now
    /// belongs to a newer process. True when a node was freed.
    fn free_oldest_exited(&mut self) -> bool {
        let Some((_, pid, start)) = self.exited.pop_front() else { return false };
        match self.nodes.get(&pid) {
            Some(node) if node.exited && node.start_ns == start => {
                self.nodes.remove(&pid);
                true
            }
            _ => false,
        }
    }

    /// Frees entries of processes that are gone without an exit event (for
    /// when exit events are filtered out in the kernel). Costs one stat of
    /// /proc per entry.
    pub fn prune_dead(&mut self) {
        let before = self.nodes.len();
        self.nodes.retain(|pid, node| node.exited || crate::proc::exists(*pid));
        self.stats.freed += (before - self.nodes.len()) as u64;
    }

    /// The ancestry starting at `ppid`, parent first, at most `max` deep.
    /// A parent no event told of is looked up in /proc (and kept).
    pub fn ancestry(&mut self, mut ppid: u32, max: usize) -> Vec<Ancestor> {
        let mut out = Vec::new();
        while ppid != 0 && out.len() < max {
            if !self.nodes.contains_key(&ppid) {
                self.stats.proc_lookups += 1;
                match node_from_proc(ppid) {
                    Some(node) => {
                        self.nodes.insert(ppid, node);
                    }
                    None => break,
                }
            }
            let node = &self.nodes[&ppid];
            out.push(Ancestor { pid: ppid, comm: node.comm.clone(), exe: node.exe.clone(), argv: node.argv.clone() });
            if node.ppid == ppid {
                break;
            }
            ppid = node.ppid;
        }
        out
    }
}

/// What /proc tells of `pid`, or `None` when it is gone.
pub fn node_from_proc(pid: u32) -> Option<Node> {
    let dir = ProcDir::open(pid)?;
    let stat = dir.stat()?;
    let (argv, _) = dir.argv();
    Some(Node {
        ppid: stat.ppid,
        comm: Arc::from(stat.comm),
        exe: Arc::from(dir.exe()),
        argv: Arc::from(argv),
        start_ns: stat.start_ns,
        cgroups: CgroupIds::default(),
        ns: dir.namespaces().to_array().map(|n| n as u32),
        exited: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    trait Exec {
        fn exec_(&mut self, pid: u32, ppid: u32, start: u64, comm: &str, exe: &str, argv: &[String]);
    }
    impl Exec for ProcessTree {
        fn exec_(&mut self, pid: u32, ppid: u32, start: u64, comm: &str, exe: &str, argv: &[String]) {
            let p = Process {
                pid,
                tgid: pid,
                ppid,
                start_time_ns: start,
                comm: comm.into(),
                exe: exe.into(),
                argv: argv.to_vec(),
                ..Default::default()
            };
            self.exec(&p, 0);
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn fork_inherits_the_parents_image_and_exec_replaces_it() {
        let mut t = ProcessTree::default();
        t.exec_(10, 1, 5, "bash", "/bin/bash", &["bash".into()]);
        t.fork(11, 10, 6, CgroupIds::default(), [0; 7]);
        assert_eq!(&*t.get(11).unwrap().exe, "/bin/bash");
        t.exec_(11, 10, 6, "ls", "/bin/ls", &["ls".into(), "-l".into()]);
        let anc = t.ancestry(11, 8);
        assert_eq!(anc[0].pid, 11);
        assert_eq!(&*anc[0].exe, "/bin/ls");
        assert_eq!(anc[1].pid, 10);
        assert_eq!(&*anc[1].comm, "bash");
    }

    #[test]
    fn exited_entries_live_for_the_grace_period_then_go() {
        let mut t = ProcessTree::new(Duration::from_secs(5), 100);
        t.exec_(10, 0, 1, "a", "/a", &[]);
        t.exit(10, 100 * S);
        t.sweep(104 * S);
        assert!(t.get(10).is_some(), "still in grace");
        t.sweep(105 * S);
        assert!(t.get(10).is_none());
        assert_eq!(t.stats().freed, 1);
    }

    #[test]
    fn a_reused_pid_is_not_freed_by_the_old_exit() {
        let mut t = ProcessTree::new(Duration::from_secs(1), 100);
        t.exec_(10, 0, 1, "old", "/old", &[]);
        t.exit(10, 10 * S);
        t.fork(10, 0, 2, CgroupIds::default(), [0; 7]); // pid reused by a new process
        t.sweep(20 * S);
        assert_eq!(t.get(10).unwrap().start_ns, 2);
    }

    #[test]
    fn a_fork_exit_storm_stays_bounded() {
        let mut t = ProcessTree::new(Duration::from_secs(3600), 1000);
        t.exec_(1, 0, 0, "init", "/sbin/init", &[]);
        for i in 0..100_000u32 {
            let pid = 1000 + i;
            t.fork(pid, 1, i as u64, CgroupIds::default(), [0; 7]);
            t.exit(pid, i as u64);
        }
        assert!(t.len() <= 1 + 1000, "{}", t.len());
        assert_eq!(t.stats().evicted, 99_000);
    }

    #[test]
    fn ancestry_stops_at_loops_and_depth() {
        let mut t = ProcessTree::default();
        t.exec_(5, 5, 0, "self-parent", "/x", &[]);
        assert_eq!(t.ancestry(5, 8).len(), 1);
        for pid in 100..120 {
            t.exec_(pid, pid - 1, 0, "p", "/p", &[]);
        }
        assert_eq!(t.ancestry(119, 8).len(), 8);
    }

    #[test]
    fn prune_dead_frees_processes_gone_from_proc() {
        let mut t = ProcessTree::default();
        let me = std::process::id();
        t.exec_(me, 1, 0, "me", "/me", &[]);
        t.exec_(u32::MAX - 1, 1, 0, "gone", "/gone", &[]); // no such pid
        t.prune_dead();
        assert!(t.get(me).is_some());
        assert!(t.get(u32::MAX - 1).is_none());
        assert_eq!(t.stats().freed, 1);
    }

    #[test]
    fn unknown_parents_are_read_from_proc() {
        let mut t = ProcessTree::default();
        let me = std::process::id();
        let anc = t.ancestry(me, 8);
        assert_eq!(anc[0].pid, me);
        assert!(!anc[0].exe.is_empty());
        assert!(t.stats().proc_lookups >= 1);
        assert!(t.scan_proc() > 1);
    }
}
