//! The packed encoding, version 1: how events cross from the host into a
//! rule. The layout is documented on `packed-batch` in `wit/rules.wit`.
//!
//! The host encodes each event once ([`encode_event`]) and assembles batches
//! from the records ([`assemble_batch`]); event records are
//! position-independent (their offsets are relative to the record), so one
//! record serves every batch it appears in. Rules read the batch through
//! [`BatchView`] / [`EventView`], which borrow from the bytes and decode only
//! the fields a rule asks for.

use crate::model::{Event, EventKind, Runtime};

/// First four bytes of a batch.
pub const MAGIC: [u8; 4] = *b"VGB2";
/// Size of an event record's fixed header.
pub const HEADER_LEN: usize = 288;

// Field offsets in the fixed header.
const KIND: usize = 0;
const FLAGS: usize = 1;
const RUNTIME: usize = 2;
const EXTRA_FLAGS: usize = 3;
const EXIT_CODE: usize = 4;
const ID: usize = 8;
const TIME: usize = 16;
const PID: usize = 24;
const TGID: usize = 28;
const PPID: usize = 32;
const UID: usize = 36;
const GID: usize = 40;
const CONTAINER_PID: usize = 44;
const START_TIME: usize = 48;
const CGROUP_ID: usize = 56;
const NAMESPACES: usize = 64;
const STARTED_AT: usize = 120;
const LOST_COUNT: usize = 128;
const CGROUP_EVENT_ID: usize = 136;
const STRINGS: usize = 144;
const LISTS: usize = 256;

// flags
const F_PROCESS: u8 = 1;
const F_CONTAINER: u8 = 2;
const F_POD: u8 = 4;
const F_CGROUP: u8 = 8;
const F_EXIT_CODE: u8 = 16;
const F_LOST: u8 = 32;
const F_ARGV_TRUNCATED: u8 = 64;
const F_PRIVILEGED: u8 = 128;
// extra flags
const X_POD_SANDBOX: u8 = 1;

/// The string slots, in layout order.
#[derive(Clone, Copy)]
#[repr(usize)]
enum Str {
    Comm = 0,
    Exe,
    Cwd,
    ContainerId,
    ContainerName,
    Image,
    ImageDigest,
    PodName,
    PodNamespace,
    PodUid,
    CgroupPath,
    LostReason,
}

/// The list slots, in layout order.
#[derive(Clone, Copy)]
#[repr(usize)]
enum List {
    Argv = 0,
    Ancestry,
    ContainerLabels,
    PodLabels,
}

const ANCESTOR_LEN: usize = 28;
const LABEL_LEN: usize = 16;

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
            self.put_ref(STRINGS + 8 * slot as usize, r);
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
        self.put_ref(LISTS + 8 * slot as usize, (off as u32, count as u32));
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

/// Why bytes are not a packed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header says.
    Truncated,
    /// Does not start with [`MAGIC`].
    BadMagic,
    /// An event offset points outside the batch.
    BadOffset(usize),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("packed batch is truncated"),
            DecodeError::BadMagic => f.write_str("not a packed batch (bad magic)"),
            DecodeError::BadOffset(i) => write!(f, "event {i} lies outside the batch"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A packed batch, validated enough that reading it never panics.
#[derive(Clone, Copy)]
pub struct BatchView<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> BatchView<'a> {
    /// Checks the batch header and that every event's fixed header lies
    /// within the bytes.
    pub fn new(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() < 8 {
            return Err(DecodeError::Truncated);
        }
        if bytes[..4] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let count = read_u32(bytes, 4) as usize;
        // Checked: on wasm32 `4 * count` could overflow.
        if count > (bytes.len() - 8) / 4 {
            return Err(DecodeError::Truncated);
        }
        let view = BatchView { bytes, count };
        for i in 0..count {
            let off = view.offset(i);
            if off.checked_add(HEADER_LEN).is_none_or(|end| end > bytes.len()) {
                return Err(DecodeError::BadOffset(i));
            }
        }
        Ok(view)
    }

    fn offset(&self, i: usize) -> usize {
        read_u32(self.bytes, 8 + 4 * i) as usize
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the batch has no events.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `i`th event.
    pub fn get(&self, i: usize) -> Option<EventView<'a>> {
        (i < self.count).then(|| EventView { rec: &self.bytes[self.offset(i)..] })
    }

    /// The events in order.
    pub fn iter(&self) -> impl Iterator<Item = EventView<'a>> + '_ {
        (0..self.count).filter_map(|i| self.get(i))
    }
}

// Every read is bounds-checked with checked arithmetic: bad bytes read as
// 0 or "", never a panic (also on wasm32, where usize is 32 bits).

fn read_u32(b: &[u8], at: usize) -> u32 {
    at.checked_add(4).and_then(|end| b.get(at..end)).map_or(0, |s| u32::from_le_bytes(s.try_into().unwrap()))
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    at.checked_add(8).and_then(|end| b.get(at..end)).map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap()))
}

/// Reads the string referenced at `at`; "" when out of bounds or not UTF-8.
fn read_str(rec: &[u8], at: usize) -> &str {
    let off = read_u32(rec, at) as usize;
    let len = read_u32(rec, at.saturating_add(4)) as usize;
    rec.get(off..off.saturating_add(len)).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("")
}

/// A list's (offset, count), the count cut to the entries the bytes hold,
/// so iteration stays in bounds and ends.
fn list_bounds(rec: &[u8], at: usize, entry_len: usize) -> (usize, usize) {
    let off = read_u32(rec, at) as usize;
    let count = read_u32(rec, at + 4) as usize;
    (off, count.min(rec.len().saturating_sub(off) / entry_len))
}

/// One event of a batch, borrowed. Accessors decode on demand.
#[derive(Clone, Copy)]
pub struct EventView<'a> {
    rec: &'a [u8],
}

impl<'a> EventView<'a> {
    fn flag(&self, f: u8) -> bool {
        self.rec[FLAGS] & f != 0
    }
    fn str(&self, slot: Str) -> &'a str {
        read_str(self.rec, STRINGS + 8 * slot as usize)
    }
    fn list(&self, slot: List, entry_len: usize) -> (usize, usize) {
        list_bounds(self.rec, LISTS + 8 * slot as usize, entry_len)
    }

    /// What happened. An unknown kind (from a newer host) reads as `None`.
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::from_index(self.rec[KIND])
    }
    /// The daemon's sequence number for this event.
    pub fn id(&self) -> u64 {
        read_u64(self.rec, ID)
    }
    /// Nanoseconds since the Unix epoch.
    pub fn time_ns(&self) -> u64 {
        read_u64(self.rec, TIME)
    }
    /// The process, for process events.
    pub fn process(&self) -> Option<ProcessView<'a>> {
        self.flag(F_PROCESS).then_some(ProcessView { ev: *self })
    }
    /// The container the event came from (or is about), when it came from one.
    pub fn container(&self) -> Option<ContainerView<'a>> {
        self.flag(F_CONTAINER).then_some(ContainerView { ev: *self })
    }
    /// The pod, when the container belongs to one.
    pub fn pod(&self) -> Option<PodView<'a>> {
        self.flag(F_POD).then_some(PodView { ev: *self })
    }
    /// The cgroup, for cgroup events: (id, path).
    pub fn cgroup(&self) -> Option<(u64, &'a str)> {
        self.flag(F_CGROUP).then(|| (read_u64(self.rec, CGROUP_EVENT_ID), self.str(Str::CgroupPath)))
    }
    /// Exit code, for process-exit and container-stop.
    pub fn exit_code(&self) -> Option<i32> {
        self.flag(F_EXIT_CODE).then(|| read_u32(self.rec, EXIT_CODE) as i32)
    }
    /// For events-lost: (count, reason).
    pub fn lost(&self) -> Option<(u64, &'a str)> {
        self.flag(F_LOST).then(|| (read_u64(self.rec, LOST_COUNT), self.str(Str::LostReason)))
    }
    /// True when the event comes from (or is about) a container.
    pub fn in_container(&self) -> bool {
        self.flag(F_CONTAINER)
    }
    /// True when the event is of `kind`.
    pub fn is(&self, kind: EventKind) -> bool {
        self.rec[KIND] == kind as u8
    }
    /// True when the process is its container's first process (its
    /// entrypoint), where running a shell script or a package manager is
    /// normal.
    pub fn is_entrypoint(&self) -> bool {
        match (self.container(), self.process()) {
            (Some(c), Some(p)) => c.pid() != 0 && c.pid() == p.tgid(),
            _ => false,
        }
    }
}

/// The process of an event.
#[derive(Clone, Copy)]
pub struct ProcessView<'a> {
    ev: EventView<'a>,
}

impl<'a> ProcessView<'a> {
    fn u32(&self, at: usize) -> u32 {
        read_u32(self.ev.rec, at)
    }
    /// Thread id.
    pub fn pid(&self) -> u32 {
        self.u32(PID)
    }
    /// Process (thread-group) id.
    pub fn tgid(&self) -> u32 {
        self.u32(TGID)
    }
    /// Parent's process id.
    pub fn ppid(&self) -> u32 {
        self.u32(PPID)
    }
    /// User id.
    pub fn uid(&self) -> u32 {
        self.u32(UID)
    }
    /// Group id.
    pub fn gid(&self) -> u32 {
        self.u32(GID)
    }
    /// Kernel task name.
    pub fn comm(&self) -> &'a str {
        self.ev.str(Str::Comm)
    }
    /// Executable path.
    pub fn exe(&self) -> &'a str {
        self.ev.str(Str::Exe)
    }
    /// Working directory ("" when unknown).
    pub fn cwd(&self) -> &'a str {
        self.ev.str(Str::Cwd)
    }
    /// Nanoseconds since boot.
    pub fn start_time_ns(&self) -> u64 {
        read_u64(self.ev.rec, START_TIME)
    }
    /// cgroup v2 id.
    pub fn cgroup_id(&self) -> u64 {
        read_u64(self.ev.rec, CGROUP_ID)
    }
    /// Namespace inodes in WIT order: pid, mnt, net, uts, ipc, user, cgroup.
    pub fn namespaces(&self) -> [u64; 7] {
        std::array::from_fn(|i| read_u64(self.ev.rec, NAMESPACES + 8 * i))
    }
    /// True when argv was cut by the source.
    pub fn argv_truncated(&self) -> bool {
        self.ev.flag(F_ARGV_TRUNCATED)
    }
    /// The arguments, argv[0] first.
    pub fn argv(&self) -> Strings<'a> {
        let (off, count) = self.ev.list(List::Argv, 8);
        Strings { rec: self.ev.rec, off, count, i: 0 }
    }
    /// The ancestors, parent first.
    pub fn ancestors(&self) -> Ancestors<'a> {
        let (off, count) = self.ev.list(List::Ancestry, ANCESTOR_LEN);
        Ancestors { rec: self.ev.rec, off, count, i: 0 }
    }
    /// The parent, when the source knows it.
    pub fn parent(&self) -> Option<AncestorView<'a>> {
        self.ancestors().next()
    }
    /// The executable's file name: `bash` for `/usr/bin/bash`.
    pub fn exe_basename(&self) -> &'a str {
        basename(self.exe())
    }
    /// The `i`th argument (argv[0] is the program as invoked).
    pub fn arg(&self, i: usize) -> Option<&'a str> {
        self.argv().nth(i)
    }
    /// The arguments after argv[0].
    pub fn args(&self) -> std::iter::Skip<Strings<'a>> {
        self.argv().skip(1)
    }
    /// True when some argument (after argv[0]) equals `needle`.
    pub fn argv_contains(&self, needle: &str) -> bool {
        self.args().any(|a| a == needle)
    }
    /// True when some argument (after argv[0]) contains `needle` as a substring.
    pub fn argv_contains_substr(&self, needle: &str) -> bool {
        self.args().any(|a| a.contains(needle))
    }
    /// The command line: argv joined by spaces (allocates; for messages).
    pub fn cmdline(&self) -> String {
        let mut s = String::new();
        for (i, a) in self.argv().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(a);
        }
        s
    }
    /// True when an ancestor's task name or executable file name is `name`.
    pub fn has_ancestor(&self, name: &str) -> bool {
        self.ancestors().any(|a| a.comm == name || basename(a.exe) == name)
    }
}

/// The file name of a path: what follows the last `/`.
pub(crate) fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Iterator over a packed list of strings.
#[derive(Clone, Debug)]
pub struct Strings<'a> {
    rec: &'a [u8],
    off: usize,
    count: usize,
    i: usize,
}

impl<'a> Iterator for Strings<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        if self.i >= self.count {
            return None;
        }
        let s = read_str(self.rec, self.off + 8 * self.i);
        self.i += 1;
        Some(s)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.count - self.i;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Strings<'_> {}

/// One ancestor of a process.
#[derive(Clone, Debug)]
pub struct AncestorView<'a> {
    /// Its process id.
    pub pid: u32,
    /// Its task name.
    pub comm: &'a str,
    /// Its executable path.
    pub exe: &'a str,
    /// What it last executed, with its arguments.
    pub argv: Strings<'a>,
}

/// Iterator over a process's ancestors, parent first.
#[derive(Clone)]
pub struct Ancestors<'a> {
    rec: &'a [u8],
    off: usize,
    count: usize,
    i: usize,
}

impl<'a> Iterator for Ancestors<'a> {
    type Item = AncestorView<'a>;
    fn next(&mut self) -> Option<AncestorView<'a>> {
        if self.i >= self.count {
            return None;
        }
        let at = self.off + ANCESTOR_LEN * self.i;
        self.i += 1;
        let (off, count) = list_bounds(self.rec, at + 20, 8);
        Some(AncestorView {
            pid: read_u32(self.rec, at),
            comm: read_str(self.rec, at + 4),
            exe: read_str(self.rec, at + 12),
            argv: Strings { rec: self.rec, off, count, i: 0 },
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.count - self.i;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Ancestors<'_> {}

/// Iterator over packed key/value labels.
#[derive(Clone)]
pub struct LabelsView<'a> {
    rec: &'a [u8],
    off: usize,
    count: usize,
    i: usize,
}

impl<'a> Iterator for LabelsView<'a> {
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<Self::Item> {
        if self.i >= self.count {
            return None;
        }
        let at = self.off + LABEL_LEN * self.i;
        self.i += 1;
        Some((read_str(self.rec, at), read_str(self.rec, at + 8)))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.count - self.i;
        (n, Some(n))
    }
}

impl ExactSizeIterator for LabelsView<'_> {}

fn labels<'a>(ev: &EventView<'a>, slot: List) -> LabelsView<'a> {
    let (off, count) = ev.list(slot, LABEL_LEN);
    LabelsView { rec: ev.rec, off, count, i: 0 }
}

/// The container of an event.
#[derive(Clone, Copy)]
pub struct ContainerView<'a> {
    ev: EventView<'a>,
}

impl<'a> ContainerView<'a> {
    /// Full id.
    pub fn id(&self) -> &'a str {
        self.ev.str(Str::ContainerId)
    }
    /// Name.
    pub fn name(&self) -> &'a str {
        self.ev.str(Str::ContainerName)
    }
    /// Image reference.
    pub fn image(&self) -> &'a str {
        self.ev.str(Str::Image)
    }
    /// Image digest ("" when unknown).
    pub fn image_digest(&self) -> &'a str {
        self.ev.str(Str::ImageDigest)
    }
    /// The runtime managing it.
    pub fn runtime(&self) -> Runtime {
        Runtime::from_index(self.ev.rec[RUNTIME])
    }
    /// Host pid of its first process (0 when unknown).
    pub fn pid(&self) -> u32 {
        read_u32(self.ev.rec, CONTAINER_PID)
    }
    /// True for privileged containers.
    pub fn privileged(&self) -> bool {
        self.ev.flag(F_PRIVILEGED)
    }
    /// Start time, nanoseconds since the Unix epoch (0 when not started).
    pub fn started_at_ns(&self) -> u64 {
        read_u64(self.ev.rec, STARTED_AT)
    }
    /// Its labels.
    pub fn labels(&self) -> LabelsView<'a> {
        labels(&self.ev, List::ContainerLabels)
    }
    /// The label `key`'s value.
    pub fn label(&self, key: &str) -> Option<&'a str> {
        self.labels().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
    /// The first 12 characters of the id, as `docker ps` shows it.
    pub fn short_id(&self) -> &'a str {
        let id = self.id();
        id.get(..12).unwrap_or(id)
    }
}

/// The pod of an event.
#[derive(Clone, Copy)]
pub struct PodView<'a> {
    ev: EventView<'a>,
}

impl<'a> PodView<'a> {
    /// Pod name.
    pub fn name(&self) -> &'a str {
        self.ev.str(Str::PodName)
    }
    /// Pod namespace.
    pub fn namespace(&self) -> &'a str {
        self.ev.str(Str::PodNamespace)
    }
    /// Pod uid.
    pub fn uid(&self) -> &'a str {
        self.ev.str(Str::PodUid)
    }
    /// True for the pod's sandbox (pause) container.
    pub fn sandbox(&self) -> bool {
        self.ev.rec[EXTRA_FLAGS] & X_POD_SANDBOX != 0
    }
    /// Its labels.
    pub fn labels(&self) -> LabelsView<'a> {
        labels(&self.ev, List::PodLabels)
    }
    /// The label `key`'s value.
    pub fn label(&self, key: &str) -> Option<&'a str> {
        self.labels().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use std::sync::Arc;

    fn full_event() -> Event {
        Event {
            id: 42,
            time_ns: 1_700_000_000_000_000_000,
            kind: EventKind::ProcessExec,
            process: Some(Process {
                pid: 10,
                tgid: 11,
                ppid: 12,
                uid: 1000,
                gid: 1001,
                comm: "bash".into(),
                exe: "/usr/bin/bash".into(),
                argv: vec!["bash".into(), "-c".into(), "echo ü".into()],
                argv_truncated: true,
                cwd: "/root".into(),
                start_time_ns: 99,
                cgroup_id: 4242,
                namespaces: Namespaces::from_array([1, 2, 3, 4, 5, 6, 7]),
                ancestry: vec![
                    Ancestor {
                        pid: 12,
                        comm: "sshd".into(),
                        exe: "/usr/sbin/sshd".into(),
                        argv: Arc::from(["sshd:".to_string(), "alice".to_string()]),
                    },
                    Ancestor { pid: 1, comm: "init".into(), exe: "/sbin/init".into(), argv: Arc::from([]) },
                ],
            }),
            container: Some(Arc::new(Container {
                id: "a".repeat(64),
                name: "web".into(),
                image: "nginx:1.25".into(),
                image_digest: "sha256:abc".into(),
                runtime: Runtime::Podman,
                labels: vec![("app".into(), "web".into()), ("tier".into(), "front".into())],
                pid: 77,
                privileged: true,
                started_at_ns: 5,
            })),
            pod: Some(Arc::new(Pod {
                name: "web-0".into(),
                namespace: "prod".into(),
                uid: "uid-1".into(),
                sandbox: true,
                labels: vec![("k".into(), "v".into())],
            })),
            cgroup: Some(Cgroup { id: 8, path: "/docker/x".into() }),
            exit_code: Some(-9),
            lost: Some(Lost { count: 3, reason: "ring".into() }),
        }
    }

    #[test]
    fn every_field_round_trips() {
        let e = full_event();
        let mut buf = Vec::new();
        encode_batch([&e, &Event::new(EventKind::ProcessFork)], &mut buf);
        let batch = BatchView::new(&buf).unwrap();
        assert_eq!(batch.len(), 2);
        let v = batch.get(0).unwrap();
        assert_eq!(v.kind(), Some(EventKind::ProcessExec));
        assert_eq!(v.id(), 42);
        assert_eq!(v.time_ns(), e.time_ns);
        assert_eq!(v.exit_code(), Some(-9));
        assert_eq!(v.lost(), Some((3, "ring")));
        assert_eq!(v.cgroup(), Some((8, "/docker/x")));
        let p = v.process().unwrap();
        assert_eq!((p.pid(), p.tgid(), p.ppid(), p.uid(), p.gid()), (10, 11, 12, 1000, 1001));
        assert_eq!((p.comm(), p.exe(), p.cwd()), ("bash", "/usr/bin/bash", "/root"));
        assert_eq!(p.argv().collect::<Vec<_>>(), ["bash", "-c", "echo ü"]);
        assert!(p.argv_truncated());
        assert_eq!(p.start_time_ns(), 99);
        assert_eq!(p.cgroup_id(), 4242);
        assert_eq!(p.namespaces(), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(p.exe_basename(), "bash");
        assert!(!v.is_entrypoint());
        assert_eq!(p.cmdline(), "bash -c echo ü");
        assert!(p.argv_contains("-c") && !p.argv_contains("bash") && p.argv_contains_substr("echo"));
        assert!(p.has_ancestor("sshd") && p.has_ancestor("init") && !p.has_ancestor("bash"));
        assert_eq!(p.arg(2), Some("echo ü"));
        assert!(v.in_container() && v.is(EventKind::ProcessExec));
        let anc: Vec<_> = p.ancestors().collect();
        assert_eq!(anc.len(), 2);
        assert_eq!((anc[1].pid, anc[1].comm, anc[1].exe, anc[1].argv.len()), (1, "init", "/sbin/init", 0));
        assert_eq!(anc[0].argv.clone().collect::<Vec<_>>(), ["sshd:", "alice"]);
        let c = v.container().unwrap();
        assert_eq!(c.id(), "a".repeat(64));
        assert_eq!((c.name(), c.image(), c.image_digest()), ("web", "nginx:1.25", "sha256:abc"));
        assert_eq!(c.runtime(), Runtime::Podman);
        assert_eq!((c.pid(), c.privileged(), c.started_at_ns()), (77, true, 5));
        assert_eq!(c.labels().collect::<Vec<_>>(), [("app", "web"), ("tier", "front")]);
        assert_eq!((c.label("tier"), c.label("nope"), c.short_id()), (Some("front"), None, "aaaaaaaaaaaa"));
        let pod = v.pod().unwrap();
        assert_eq!((pod.name(), pod.namespace(), pod.uid(), pod.sandbox()), ("web-0", "prod", "uid-1", true));
        assert_eq!(pod.labels().collect::<Vec<_>>(), [("k", "v")]);

        let bare = batch.get(1).unwrap();
        assert_eq!(bare.kind(), Some(EventKind::ProcessFork));
        assert!(bare.process().is_none() && bare.container().is_none() && bare.pod().is_none());
        assert!(bare.exit_code().is_none() && bare.lost().is_none() && bare.cgroup().is_none());
        assert!(batch.get(2).is_none());
    }

    #[test]
    fn records_are_position_independent() {
        let e = full_event();
        let mut records = vec![0xAA; 13]; // junk before the record
        let start = records.len();
        encode_event(&e, &mut records);
        let end = records.len();
        let mut a = Vec::new();
        assemble_batch(&records, [start..end, start..end].into_iter(), &mut a);
        let batch = BatchView::new(&a).unwrap();
        for v in batch.iter() {
            assert_eq!(v.process().unwrap().exe(), "/usr/bin/bash");
            assert_eq!(v.pod().unwrap().name(), "web-0");
        }
    }

    #[test]
    fn bad_bytes_are_refused_not_panicked_on() {
        assert_eq!(BatchView::new(b"VGB").err(), Some(DecodeError::Truncated));
        assert_eq!(BatchView::new(b"XXXX\0\0\0\0").err(), Some(DecodeError::BadMagic));
        let mut buf = Vec::new();
        encode_batch([&full_event()], &mut buf);
        for cut in 0..buf.len() {
            // Truncations that keep every header are readable: strings cut
            // off read as "", never a panic.
            if let Ok(b) = BatchView::new(&buf[..cut]) {
                for v in b.iter() {
                    let p = v.process().unwrap();
                    let _ = (p.exe(), p.argv().count(), p.ancestors().count());
                    let _ = v.container().map(|c| c.labels().count());
                }
            }
        }
        // Offsets pointing past the end.
        let mut bad = buf.clone();
        bad[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(BatchView::new(&bad).err(), Some(DecodeError::BadOffset(0)));
    }

    #[test]
    fn huge_counts_are_cut_to_what_the_bytes_hold() {
        let mut buf = Vec::new();
        encode_batch([&full_event()], &mut buf);
        // The batch's event count.
        let mut bad = buf.clone();
        bad[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(BatchView::new(&bad).err(), Some(DecodeError::Truncated));
        // Each list's count.
        let header = 8 + 4;
        for slot in 0..4 {
            let mut bad = buf.clone();
            let at = header + LISTS + 8 * slot + 4;
            bad[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            let batch = BatchView::new(&bad).unwrap();
            let v = batch.get(0).unwrap();
            let p = v.process().unwrap();
            assert!(p.argv().count() < 1000 && p.ancestors().count() < 1000);
            assert!(v.container().unwrap().labels().count() < 1000 && v.pod().unwrap().labels().count() < 1000);
        }
    }

    #[test]
    fn empty_batch() {
        let mut buf = Vec::new();
        encode_batch([], &mut buf);
        let b = BatchView::new(&buf).unwrap();
        assert!(b.is_empty());
    }
}
