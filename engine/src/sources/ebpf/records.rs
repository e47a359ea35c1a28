//! Ring buffer records to events: each record's fixed fields read in
//! place, exec/fork/exit keeping the process tree current, and every event
//! passed through the enrichment stage (container, pod, runtime
//! description, hold queue).

use aya::maps::{MapData, RingBuf};
use vigil_ebpf_common::{
    CgroupEvent, ExitEvent, ForkEvent, Header, NamespacesEvent, Task, header as rec_header, kind as rec,
};
use vigil_event::{Cgroup, Event, EventKind, Namespaces, Process};

use super::exec::ExecRecord;
use crate::enrich::Enricher;
use crate::enrich::cgroups::CgroupIds;
use crate::proc::{MAX_ANCESTRY, ProcDir, exit_code};
use crate::sources::{Closed, EventSender, Interest, LossReason};

/// Each record kind and the event kind it becomes.
pub const RECORD_KINDS: [(u32, EventKind); 5] = [
    (rec::EXEC, EventKind::ProcessExec),
    (rec::FORK, EventKind::ProcessFork),
    (rec::EXIT, EventKind::ProcessExit),
    (rec::CGROUP_MKDIR, EventKind::CgroupMkdir),
    (rec::CGROUP_RMDIR, EventKind::CgroupRmdir),
];

/// The event kind of record kind `kind`.
pub fn event_kind(kind: u32) -> Option<EventKind> {
    RECORD_KINDS.iter().find(|(k, _)| *k == kind).map(|(_, e)| *e)
}

/// Most events sent in one batch.
pub const MAX_BATCH: usize = 256;

/// A ring buffer record too short for its kind, or of no known kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Records to events, through the enrichment stage (which keeps the
/// process tree current from them).
pub struct Decoder {
    pub enrich: Enricher,
    interest: Interest,
    /// Wall clock minus boot clock, in ns.
    boot_to_wall: u64,
    pub decoded: u64,
    pub malformed: u64,
    /// Brief fork records decoded (sent while only the tree wanted forks).
    pub brief_forks: u64,
    /// Namespace change records decoded (they update the tree; no event).
    pub namespace_changes: u64,
    /// Brief fork records a rule wanted whose process could no longer be
    /// read from /proc: reported as lost (`ebpf: task unreadable`).
    pub unreadable: u64,
    /// Of those, not reported yet.
    unreadable_unreported: u64,
}

impl Decoder {
    pub fn new(enrich: Enricher, interest: Interest) -> Self {
        let mut d = Decoder {
            enrich,
            interest,
            boot_to_wall: 0,
            decoded: 0,
            malformed: 0,
            brief_forks: 0,
            namespace_changes: 0,
            unreadable: 0,
            unreadable_unreported: 0,
        };
        d.tick();
        d
    }

    /// Periodic work: re-reads the clock offset (NTP steps the wall clock)
    /// and frees exited processes past their grace period.
    pub fn tick(&mut self) {
        self.boot_to_wall = crate::time::now_ns().saturating_sub(crate::time::boottime_ns());
        self.enrich.sweep(crate::time::boottime_ns());
    }

    /// Decodes everything in the ring, sending full batches as it goes.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>, out: &mut EventSender) -> Result<(), Closed> {
        let mut batch = Vec::new();
        while let Some(record) = ring.next() {
            let decoded = self.decode(&record);
            // What a full hold queue let go came before this record.
            self.enrich.take_released(&mut batch);
            match decoded {
                Ok(Some(event)) => batch.push(event),
                Ok(None) => {}
                Err(Malformed) => {
                    self.malformed += 1;
                    out.report_lost_because(LossReason::MalformedRecord, 1);
                }
            }
            drop(record);
            if batch.len() >= MAX_BATCH {
                out.send_or_drop(std::mem::take(&mut batch))?;
            }
        }
        out.report_lost_because(LossReason::TaskUnreadable, std::mem::take(&mut self.unreadable_unreported));
        self.enrich.release_held(&mut batch);
        if !batch.is_empty() {
            out.send_or_drop(batch)?;
        }
        Ok(())
    }

    /// One record: `Ok(None)` when it only updated the tree (no rule
    /// wants its kind), `Err` when it is malformed.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Option<Event>, Malformed> {
        let header: Header = read(bytes)?;
        self.decoded += 1;
        let time_ns = header.boot_ns.saturating_add(self.boot_to_wall);
        match header.kind {
            rec::EXEC => {
                let ev = ExecRecord::parse(bytes).ok_or(Malformed)?;
                let mut process = self.exec(&ev);
                // Read once: a rule loaded between two reads must not get
                // an exec without its ancestry.
                if !self.interest.wants(EventKind::ProcessExec) {
                    return Ok(None);
                }
                process.ancestry = self.enrich.tree.ancestry(ev.event.task.ppid, MAX_ANCESTRY);
                Ok(self.enrich.contextualize(
                    cgroup_ids(&ev.event.task),
                    Event { time_ns, process: Some(process), ..Event::new(EventKind::ProcessExec) },
                ))
            }
            rec::FORK => {
                let ev: ForkEvent = read(bytes)?;
                let t = &ev.task;
                let brief = header.flags & rec_header::BRIEF != 0;
                self.brief_forks += u64::from(brief);
                self.enrich.tree.fork(t.tgid, t.ppid, t.start_boot_ns, cgroup_ids(t), t.ns);
                if !self.interest.wants(EventKind::ProcessFork) {
                    return Ok(None);
                }
                let mut process = task_process(t);
                if let Some(node) = self.enrich.tree.get(t.tgid) {
                    process.exe = node.exe.to_string();
                    process.argv = node.argv.to_vec();
                    if brief {
                        // The kernel did not read it: the parent's, as the tree has it.
                        process.comm = node.comm.to_string();
                    }
                }
                if brief && !fill_from_proc(&mut process) {
                    // Neither the child nor its parent can be read any more:
                    // reported as lost, never sent as if it ran as root.
                    self.unreadable += 1;
                    self.unreadable_unreported += 1;
                    return Ok(None);
                }
                process.ancestry = self.enrich.tree.ancestry(t.ppid, MAX_ANCESTRY);
                // The child's v1 cgroup is its parent's, from the tree.
                let cgroups = self.enrich.tree.get(t.tgid).map_or(cgroup_ids(t), |n| n.cgroups);
                Ok(self.event(EventKind::ProcessFork, time_ns, cgroups, |e| e.process = Some(process)))
            }
            rec::EXIT => {
                let ev: ExitEvent = read(bytes)?;
                if !self.interest.wants(EventKind::ProcessExit) {
                    self.enrich.tree.exit(ev.tgid, header.boot_ns);
                    return Ok(None);
                }
                let mut process = Process { pid: ev.pid, tgid: ev.tgid, ..Default::default() };
                let mut cgroups = CgroupIds::default();
                if let Some(node) = self.enrich.tree.get(ev.tgid) {
                    process.ppid = node.ppid;
                    process.comm = node.comm.to_string();
                    process.exe = node.exe.to_string();
                    process.argv = node.argv.to_vec();
                    process.start_time_ns = node.start_ns;
                    process.cgroup_id = node.cgroups.v2;
                    process.namespaces = Namespaces::from_array(node.ns.map(u64::from));
                    cgroups = node.cgroups;
                }
                self.enrich.tree.exit(ev.tgid, header.boot_ns);
                Ok(self.event(EventKind::ProcessExit, time_ns, cgroups, |e| {
                    e.process = Some(process);
                    e.exit_code = Some(exit_code(ev.exit_code));
                }))
            }
            // Not an event of its own: the process's events from now on
            // (its exit, its forks' brief records) carry the namespaces it
            // joined, and so the container it entered.
            rec::NAMESPACES => {
                let ev: NamespacesEvent = read(bytes)?;
                self.namespace_changes += 1;
                self.enrich.tree.set_namespaces(ev.tgid, ev.ns);
                Ok(None)
            }
            rec::CGROUP_MKDIR | rec::CGROUP_RMDIR => {
                let ev: CgroupEvent = read(bytes)?;
                let kind = event_kind(header.kind).ok_or(Malformed)?;
                let path = lossy(&ev.path, ev.path_len as usize);
                // A removed cgroup lingers, so its rmdir event still resolves.
                if kind == EventKind::CgroupMkdir {
                    self.enrich.cgroup_mkdir(ev.hierarchy_id, ev.id, &path);
                } else {
                    self.enrich.cgroup_rmdir(ev.hierarchy_id, ev.id, header.boot_ns);
                }
                // Rules see one hierarchy's: v2's, or the v1 one's on a v1 host.
                let ids = match ev.hierarchy_id {
                    0 => CgroupIds { v2: ev.id, v1: 0 },
                    _ if self.enrich.has_v2() => return Ok(None),
                    _ => CgroupIds { v2: 0, v1: ev.id },
                };
                Ok(self.event(kind, time_ns, ids, |e| e.cgroup = Some(Cgroup { id: ev.id, path })))
            }
            _ => Err(Malformed),
        }
    }

    /// An event of `kind`, if a rule wants it, with the container and pod of
    /// its cgroups (none for the host or an unknown cgroup).
    fn event(
        &mut self,
        kind: EventKind,
        time_ns: u64,
        cgroups: CgroupIds,
        fill: impl FnOnce(&mut Event),
    ) -> Option<Event> {
        if !self.interest.wants(kind) {
            return None;
        }
        let mut event = Event { time_ns, ..Event::new(kind) };
        fill(&mut event);
        self.enrich.contextualize(cgroups, event)
    }

    /// The process of an exec record (without its ancestry); updates the tree.
    fn exec(&mut self, ev: &ExecRecord) -> Process {
        let mut process = task_process(&ev.event.task);
        ev.fill(&mut process);
        self.enrich.tree.exec(&process, ev.event.task.cgroup_v1_id);
        process
    }
}

/// A task's cgroup ids.
fn cgroup_ids(t: &Task) -> CgroupIds {
    CgroupIds { v2: t.cgroup_id, v1: t.cgroup_v1_id }
}

/// The fields of a [`Task`] as a process (without exe, argv, ancestry).
fn task_process(t: &Task) -> Process {
    Process {
        pid: t.pid,
        tgid: t.tgid,
        ppid: t.ppid,
        uid: t.uid,
        gid: t.gid,
        comm: lossy(&t.comm, t.comm.len()),
        start_time_ns: t.start_boot_ns,
        cgroup_id: t.cgroup_id,
        namespaces: Namespaces::from_array(t.ns.map(u64::from)),
        ..Default::default()
    }
}

/// Fills what a brief fork record lacks (uid, gid, namespaces) from
/// /proc: the child's, else its parent's, which a fork inherits. False when
/// neither can be read any more.
fn fill_from_proc(process: &mut Process) -> bool {
    for pid in [process.tgid, process.ppid] {
        if let Some(dir) = ProcDir::open(pid)
            && let Some((uid, gid)) = dir.ids()
        {
            (process.uid, process.gid) = (uid, gid);
            process.namespaces = dir.namespaces();
            return true;
        }
    }
    false
}

/// The text of a NUL-terminated (or `len`-long) byte field.
fn lossy(bytes: &[u8], len: usize) -> String {
    let bytes = &bytes[..len.min(bytes.len())];
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A record from the start of `bytes`, which must be long enough.
fn read<T: Copy + vigil_ebpf_common::Records>(bytes: &[u8]) -> Result<T, Malformed> {
    vigil_ebpf_common::from_bytes(bytes).ok_or(Malformed)
}

#[cfg(test)]
mod tests {
    use vigil_event::KindSet;

    use super::*;
    use crate::sources::Wanted;

    fn enricher() -> Enricher {
        Enricher::new(&crate::config::EbpfConfig::default())
    }

    fn exec_record(pid: u32, ppid: u32, filename: &str, args: &[&str]) -> Vec<u8> {
        let mut ev = vigil_ebpf_common::ExecEvent::default();
        ev.header.kind = rec::EXEC;
        ev.header.boot_ns = 1;
        ev.task =
            Task { pid, tgid: pid, ppid, uid: 1000, comm: *b"sh\0\0\0\0\0\0\0\0\0\0\0\0\0\0", ..Default::default() };
        let mut data = filename.as_bytes().to_vec();
        ev.filename_len = filename.len() as u32;
        for a in args {
            data.extend_from_slice(a.as_bytes());
            data.push(0);
        }
        ev.args_len = (data.len() - filename.len()) as u32;
        // The executed file, as the kernel walks it: leaf first.
        let exe: Vec<&str> = filename.split('/').filter(|p| !p.is_empty()).rev().collect();
        for part in exe {
            data.extend_from_slice(part.as_bytes());
            data.push(0);
            ev.exe_len += part.len() as u32 + 1;
        }
        // SAFETY: a plain record viewed as its bytes.
        let mut bytes = unsafe {
            std::slice::from_raw_parts(&ev as *const _ as *const u8, size_of::<vigil_ebpf_common::ExecEvent>())
        }
        .to_vec();
        bytes.extend_from_slice(&data);
        bytes
    }

    #[test]
    fn decodes_exec_with_argv_and_ancestry_from_the_tree() {
        let mut d = Decoder::new(enricher(), Interest::all());
        let bash = Process { tgid: 4_000_000, comm: "bash".into(), exe: "/bin/bash".into(), ..Default::default() };
        d.enrich.tree.exec(&bash, 0);
        let e = d.decode(&exec_record(4_000_001, 4_000_000, "/bin/ls", &["ls", "-l", "/tmp"])).unwrap().unwrap();
        let p = e.process.unwrap();
        assert_eq!(p.exe, "/bin/ls");
        assert_eq!(p.argv, ["ls", "-l", "/tmp"]);
        assert_eq!(p.comm, "sh");
        assert_eq!(&*p.ancestry[0].exe, "/bin/bash");
        assert!(e.time_ns > 1_000_000_000);
    }

    #[test]
    fn short_and_unknown_records_are_malformed_not_panics() {
        let mut d = Decoder::new(enricher(), Interest::all());
        let rec = exec_record(1, 0, "/x", &[]);
        for cut in [0, 3, 16, 100, rec.len() - 1] {
            assert!(d.decode(&rec[..cut]).is_err());
        }
        let mut unknown = rec.clone();
        unknown[0] = 99;
        assert!(d.decode(&unknown).is_err());
    }

    #[test]
    fn unwanted_kinds_update_the_tree_without_events() {
        let interest = Interest::all();
        interest.set(Wanted::Kinds(KindSet::from_iter([EventKind::ProcessExec])));
        let mut d = Decoder::new(enricher(), interest.clone());
        let fork = ForkEvent {
            header: Header { kind: rec::FORK, ..Default::default() },
            task: Task { pid: 4_000_100, tgid: 4_000_100, ppid: 1, ..Default::default() },
        };
        // SAFETY: a plain record viewed as its bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts(&fork as *const ForkEvent as *const u8, size_of::<ForkEvent>()) };
        assert_eq!(d.decode(bytes), Ok(None));
        assert!(d.enrich.tree.get(4_000_100).is_some());
        let exit = ExitEvent {
            header: Header { kind: rec::EXIT, ..Default::default() },
            pid: 4_000_100,
            tgid: 4_000_100,
            ..Default::default()
        };
        // SAFETY: a plain record viewed as its bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts(&exit as *const ExitEvent as *const u8, size_of::<ExitEvent>()) };
        assert_eq!(d.decode(bytes), Ok(None));
        assert!(d.enrich.tree.get(4_000_100).is_some_and(|n| n.exited), "kept for its grace period, marked exited");
    }

    fn fork_record(tgid: u32, ppid: u32, flags: u32) -> Vec<u8> {
        let fork = ForkEvent {
            header: Header { kind: rec::FORK, flags, boot_ns: 1 },
            task: Task { pid: tgid, tgid, ppid, ..Default::default() },
        };
        // SAFETY: a plain record viewed as its bytes.
        unsafe { std::slice::from_raw_parts(&fork as *const ForkEvent as *const u8, size_of::<ForkEvent>()) }.to_vec()
    }

    #[test]
    fn a_brief_fork_a_rule_wants_gets_its_credentials_from_proc_or_counts_as_lost() {
        let mut d = Decoder::new(enricher(), Interest::all());
        // This test's own process stands for a child whose record came brief.
        let me = std::process::id();
        let bash = Process { tgid: 4_000_200, comm: "bash".into(), exe: "/bin/bash".into(), ..Default::default() };
        d.enrich.tree.exec(&bash, 0);
        let p = d.decode(&fork_record(me, 4_000_200, rec_header::BRIEF)).unwrap().unwrap().process.unwrap();
        assert_eq!((p.tgid, p.ppid), (me, 4_000_200));
        assert_eq!((p.comm.as_str(), p.exe.as_str()), ("bash", "/bin/bash"), "the parent's image");
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let uid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(p.uid, uid, "read from /proc, not left 0");
        assert_ne!(p.namespaces.mnt, 0);
        assert_eq!(d.brief_forks, 1);

        // A full record keeps the comm the kernel read.
        let mut full = fork_record(me, 4_000_200, 0);
        let comm = std::mem::offset_of!(ForkEvent, task) + std::mem::offset_of!(Task, comm);
        full[comm..comm + 6].copy_from_slice(b"worker");
        assert_eq!(d.decode(&full).unwrap().unwrap().process.unwrap().comm, "worker");
        assert_eq!(d.brief_forks, 1);

        // Gone, and its parent too: not sent as root, counted as unreadable.
        assert_eq!(d.decode(&fork_record(4_000_201, 4_000_202, rec_header::BRIEF)), Ok(None));
        assert_eq!((d.brief_forks, d.unreadable), (2, 1));
    }
}
