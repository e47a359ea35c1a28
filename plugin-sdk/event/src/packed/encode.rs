//! Events into packed records and batches (the host's side).

use super::*;
use crate::model::Event;

/// Appends the packed record of `event` to `out`.
pub fn encode_event(event: &Event, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    let mut rec = Record { out, start };

    let mut flags = 0u8;
    let mut extra = 0u8;
    rec.put_u8(KIND, event.kind as u8);
    rec.put_u64(ID, event.id);
    rec.put_u64(TIME, event.time_ns);
    if let Some(code) = event.exit_code {
        flags |= F_EXIT_CODE;
        rec.put_u32(EXIT_CODE, code as u32);
    }
    if let Some(p) = &event.process {
        flags |= F_PROCESS;
        if p.argv_truncated {
            flags |= F_ARGV_TRUNCATED;
        }
        rec.put_u32(PID, p.pid);
        rec.put_u32(TGID, p.tgid);
        rec.put_u32(PPID, p.ppid);
        rec.put_u32(UID, p.uid);
        rec.put_u32(GID, p.gid);
        rec.put_u64(START_TIME, p.start_time_ns);
        rec.put_u64(CGROUP_ID, p.cgroup_id);
        for (i, ns) in p.namespaces.to_array().into_iter().enumerate() {
            rec.put_u64(NAMESPACES + 8 * i, ns);
        }
        rec.put_str(Str::Comm, &p.comm);
        rec.put_str(Str::Exe, &p.exe);
        rec.put_str(Str::Cwd, &p.cwd);
        rec.put_u32(LOGIN_UID, p.login_uid.unwrap_or(u32::MAX));
        rec.put_u32(SESSION_ID, p.session_id.unwrap_or(u32::MAX));
        let f = &p.exe_file;
        rec.put_u32(EXE_MODE, f.mode);
        rec.put_u64(EXE_INODE, f.inode);
        rec.put_u64(EXE_DEVICE, f.device);
        let mut pflags = 0;
        for (set, flag) in [
            (p.cwd_truncated, P_CWD_TRUNCATED),
            (f.upper_layer, P_EXE_UPPER_LAYER),
            (f.memfd, P_EXE_MEMFD),
            (f.unlinked, P_EXE_UNLINKED),
        ] {
            if set {
                pflags |= flag;
            }
        }
        if let Some(tty) = &p.tty {
            pflags |= P_TTY | if tty.pty { P_TTY_PTY } else { 0 };
            rec.put_u32(TTY, tty.device);
            rec.put_str(Str::TtyName, &tty.name);
        }
        rec.put_u32(PROCESS_FLAGS, pflags);
        rec.put_str(Str::Script, &p.script);
        rec.put_str(Str::User, &p.user);
        rec.put_str(Str::Group, &p.group);
        rec.put_str(Str::LoginUser, &p.login_user);
        let table = rec.list(List::Argv, p.argv.len(), 8);
        for (i, arg) in p.argv.iter().enumerate() {
            let r = rec.data(arg.as_bytes());
            rec.put_ref(table + 8 * i, r);
        }
        let table = rec.list(List::Ancestry, p.ancestry.len(), ANCESTOR_LEN);
        for (i, a) in p.ancestry.iter().enumerate() {
            let at = table + ANCESTOR_LEN * i;
            rec.put_u32(at, a.pid);
            let r = rec.data(a.comm.as_bytes());
            rec.put_ref(at + 4, r);
            let r = rec.data(a.exe.as_bytes());
            rec.put_ref(at + 12, r);
            let argv = rec.table(a.argv.len(), 8);
            for (j, arg) in a.argv.iter().enumerate() {
                let r = rec.data(arg.as_bytes());
                rec.put_ref(argv + 8 * j, r);
            }
            rec.put_ref(at + 20, (argv as u32, a.argv.len() as u32));
        }
    }
    if let Some(c) = &event.container {
        flags |= F_CONTAINER;
        if c.privileged {
            flags |= F_PRIVILEGED;
        }
        rec.put_u8(RUNTIME, c.runtime as u8);
        rec.put_u32(CONTAINER_PID, c.pid);
        rec.put_u64(STARTED_AT, c.started_at_ns);
        rec.put_str(Str::ContainerId, &c.id);
        rec.put_str(Str::ContainerName, &c.name);
        rec.put_str(Str::Image, &c.image);
        rec.put_str(Str::ImageDigest, &c.image_digest);
        rec.put_labels(List::ContainerLabels, &c.labels);
        rec.put_str(Str::NetworkMode, &c.network_mode);
        if let Some(root) = c.runs_as_root {
            rec.put_u32(CONTAINER_FLAGS, C_RUNS_AS_ROOT_KNOWN | if root { C_RUNS_AS_ROOT } else { 0 });
        }
        let table = rec.list(List::Networks, c.networks.len(), NETWORK_LEN);
        for (i, n) in c.networks.iter().enumerate() {
            let at = table + NETWORK_LEN * i;
            for (j, s) in [&n.name, &n.ip, &n.ipv6, &n.mac, &n.gateway].into_iter().enumerate() {
                let r = rec.data(s.as_bytes());
                rec.put_ref(at + 8 * j, r);
            }
            rec.put_u8(at + 40, n.prefix_len);
            rec.put_u8(at + 41, n.ipv6_prefix_len);
        }
        let table = rec.list(List::Ports, c.ports.len(), PORT_LEN);
        for (i, p) in c.ports.iter().enumerate() {
            let at = table + PORT_LEN * i;
            rec.put_u16(at, p.container_port);
            rec.put_u16(at + 2, p.host_port);
            let r = rec.data(p.protocol.as_bytes());
            rec.put_ref(at + 4, r);
            let r = rec.data(p.host_ip.as_bytes());
            rec.put_ref(at + 12, r);
        }
    }
    if let Some(p) = &event.pod {
        flags |= F_POD;
        if p.sandbox {
            extra |= X_POD_SANDBOX;
        }
        rec.put_str(Str::PodName, &p.name);
        rec.put_str(Str::PodNamespace, &p.namespace);
        rec.put_str(Str::PodUid, &p.uid);
        rec.put_labels(List::PodLabels, &p.labels);
        let table = rec.list(List::PodIps, p.ips.len(), 8);
        for (i, ip) in p.ips.iter().enumerate() {
            let r = rec.data(ip.as_bytes());
            rec.put_ref(table + 8 * i, r);
        }
    }
    if let Some(path) = &event.copy_path {
        rec.put_str(Str::CopyPath, path);
    }
    if event.truncated {
        extra |= X_TRUNCATED;
    }
    if let Some(c) = &event.cgroup {
        flags |= F_CGROUP;
        rec.put_u64(CGROUP_EVENT_ID, c.id);
        rec.put_str(Str::CgroupPath, &c.path);
    }
    if let Some(l) = &event.lost {
        flags |= F_LOST;
        rec.put_u64(LOST_COUNT, l.count);
        rec.put_str(Str::LostReason, &l.reason);
    }
    rec.put_u8(FLAGS, flags);
    rec.put_u8(EXTRA_FLAGS, extra);
}

/// Writes a batch to `out` (cleared first) from records previously written by
/// [`encode_event`] into `records`, each given as its byte range there.
pub fn assemble_batch<I>(records: &[u8], ranges: I, out: &mut Vec<u8>)
where
    I: ExactSizeIterator<Item = std::ops::Range<usize>> + Clone,
{
    out.clear();
    let count = ranges.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    let mut offset = 8 + 4 * count;
    for r in ranges.clone() {
        out.extend_from_slice(&(offset as u32).to_le_bytes());
        offset += r.len();
    }
    for r in ranges {
        out.extend_from_slice(&records[r]);
    }
}

/// Encodes `events` as one batch into `out` (cleared first). For one-off use;
/// the engine encodes once and assembles per subscription group.
pub fn encode_batch<'a>(events: impl IntoIterator<Item = &'a Event>, out: &mut Vec<u8>) {
    let mut records = Vec::new();
    let mut ranges = Vec::new();
    for e in events {
        let start = records.len();
        encode_event(e, &mut records);
        ranges.push(start..records.len());
    }
    assemble_batch(&records, ranges.into_iter(), out);
}

struct Record<'o> {
    out: &'o mut Vec<u8>,
    start: usize,
}

impl Record<'_> {
    fn put_u8(&mut self, at: usize, v: u8) {
        self.out[self.start + at] = v;
    }
    fn put_u16(&mut self, at: usize, v: u16) {
        let at = self.start + at;
        self.out[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn put_u32(&mut self, at: usize, v: u32) {
        let at = self.start + at;
        self.out[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, at: usize, v: u64) {
        let at = self.start + at;
        self.out[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
    /// Appends bytes to the variable part; returns (offset, len) in the record.
    fn data(&mut self, bytes: &[u8]) -> (u32, u32) {
        let off = self.out.len() - self.start;
        self.out.extend_from_slice(bytes);
        (off as u32, bytes.len() as u32)
    }
    fn put_ref(&mut self, at: usize, (off, len): (u32, u32)) {
        self.put_u32(at, off);
        self.put_u32(at + 4, len);
    }
    fn put_str(&mut self, slot: Str, s: &str) {
        if !s.is_empty() {
            let r = self.data(s.as_bytes());
            self.put_ref(slot.at(), r);
        }
    }
    /// Reserves a table of `count` entries of `entry_len` bytes for list
    /// `slot`; returns its offset in the record.
    /// Room for `count` entries of `entry_len` bytes; returns its offset.
    fn table(&mut self, count: usize, entry_len: usize) -> usize {
        let off = self.out.len() - self.start;
        self.out.resize(self.out.len() + count * entry_len, 0);
        off
    }
    fn list(&mut self, slot: List, count: usize, entry_len: usize) -> usize {
        let off = self.table(count, entry_len);
        self.put_ref(slot.at(), (off as u32, count as u32));
        off
    }
    fn put_labels(&mut self, slot: List, labels: &[(String, String)]) {
        let table = self.list(slot, labels.len(), LABEL_LEN);
        for (i, (k, v)) in labels.iter().enumerate() {
            let r = self.data(k.as_bytes());
            self.put_ref(table + LABEL_LEN * i, r);
            let r = self.data(v.as_bytes());
            self.put_ref(table + LABEL_LEN * i + 8, r);
        }
    }
}
