//! Batches read in place (the rule's side): views that borrow from the
//! bytes and decode only the fields a rule asks for.

use super::lists::*;
use super::*;
use crate::model::{EventKind, Runtime};

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
        read_str(self.rec, slot.at())
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
    /// Part of the event was cut to the daemon's per-event bounds (labels,
    /// argv, ancestry, long strings; since 0.2.2).
    pub fn truncated(&self) -> bool {
        self.rec[EXTRA_FLAGS] & X_TRUNCATED != 0
    }

    /// The path a `container-copy-in`/`-out` copied, inside the container
    /// (since 0.2.2).
    pub fn copy_path(&self) -> Option<&'a str> {
        let path = self.str(Str::CopyPath);
        (!path.is_empty()).then_some(path)
    }

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
    /// True when the working directory was cut (its root-most part lost).
    pub fn cwd_truncated(&self) -> bool {
        self.flags() & P_CWD_TRUNCATED != 0
    }
    /// The script started through its `#!` line (then [`exe`](Self::exe)
    /// is its interpreter); "" otherwise.
    pub fn script(&self) -> &'a str {
        self.ev.str(Str::Script)
    }
    /// The executed file's inode number (0 when unknown).
    pub fn exe_inode(&self) -> u64 {
        read_u64(self.ev.rec, EXE_INODE)
    }
    /// The device of its filesystem, `major << 32 | minor`.
    pub fn exe_device(&self) -> u64 {
        read_u64(self.ev.rec, EXE_DEVICE)
    }
    /// Its mode bits (type, setuid 0o4000, setgid 0o2000, permissions).
    pub fn exe_mode(&self) -> u32 {
        self.u32(EXE_MODE)
    }
    /// Set-user-id or set-group-id executable.
    pub fn exe_setuid_or_setgid(&self) -> bool {
        self.exe_mode() & 0o6000 != 0
    }
    /// On an overlayfs upper layer: written or changed in the container
    /// after it started (drift from its image).
    pub fn exe_upper_layer(&self) -> bool {
        self.flags() & P_EXE_UPPER_LAYER != 0
    }
    /// Executed from a memfd.
    pub fn exe_memfd(&self) -> bool {
        self.flags() & P_EXE_MEMFD != 0
    }
    /// Executed from a file deleted from its directory (not a memfd).
    pub fn exe_unlinked(&self) -> bool {
        self.flags() & P_EXE_UNLINKED != 0
    }
    /// Fileless: a memfd or an unlinked file.
    pub fn exe_fileless(&self) -> bool {
        self.flags() & (P_EXE_MEMFD | P_EXE_UNLINKED) != 0
    }
    /// The controlling terminal's device (`tty_nr` encoding) and name
    /// (`pts/3`); `None` without one.
    pub fn tty(&self) -> Option<(u32, &'a str)> {
        (self.flags() & P_TTY != 0).then(|| (self.u32(TTY), self.ev.str(Str::TtyName)))
    }
    /// True when the controlling terminal is a pseudo-terminal (ssh,
    /// `docker exec -t`, `kubectl exec -t`): an interactive session.
    pub fn tty_is_pty(&self) -> bool {
        self.flags() & P_TTY_PTY != 0
    }
    /// The audit login uid, kept across `su` and `sudo`; `None` when unset.
    pub fn login_uid(&self) -> Option<u32> {
        Some(self.u32(LOGIN_UID)).filter(|u| *u != u32::MAX)
    }
    /// The audit session id; `None` when unset.
    pub fn session_id(&self) -> Option<u32> {
        Some(self.u32(SESSION_ID)).filter(|u| *u != u32::MAX)
    }
    /// The user name of `uid` in the process's own /etc/passwd ("" when unknown).
    pub fn user(&self) -> &'a str {
        self.ev.str(Str::User)
    }
    /// The group name of `gid` in the process's own /etc/group ("" when unknown).
    pub fn group(&self) -> &'a str {
        self.ev.str(Str::Group)
    }
    /// The user name of the login uid ("" when unknown).
    pub fn login_user(&self) -> &'a str {
        self.ev.str(Str::LoginUser)
    }
    fn flags(&self) -> u32 {
        self.u32(PROCESS_FLAGS)
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
        Entries::at(self.ev.rec, List::Argv.at())
    }
    /// The ancestors, parent first.
    pub fn ancestors(&self) -> Ancestors<'a> {
        Entries::at(self.ev.rec, List::Ancestry.at())
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

fn labels<'a>(ev: &EventView<'a>, slot: List) -> LabelsView<'a> {
    Entries::at(ev.rec, slot.at())
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
    /// How it is networked (`bridge`, `host`, `none`, `container:<id>`,
    /// a network's name, `pod`); empty when unknown (since 0.2.2).
    pub fn network_mode(&self) -> &'a str {
        self.ev.str(Str::NetworkMode)
    }

    /// The networks it is attached to (since 0.2.2).
    pub fn networks(&self) -> NetworksView<'a> {
        Entries::at(self.ev.rec, List::Networks.at())
    }

    /// Its published ports (since 0.2.2).
    pub fn ports(&self) -> PortsView<'a> {
        Entries::at(self.ev.rec, List::Ports.at())
    }

    /// Whether its processes run as uid 0 by its config; `None` when
    /// unknown (since 0.2.2).
    pub fn runs_as_root(&self) -> Option<bool> {
        let flags = read_u32(self.ev.rec, CONTAINER_FLAGS);
        (flags & C_RUNS_AS_ROOT_KNOWN != 0).then_some(flags & C_RUNS_AS_ROOT != 0)
    }

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
    /// The pod's IP addresses, the primary first (CRI; since 0.2.2).
    pub fn ips(&self) -> Strings<'a> {
        Entries::at(self.ev.rec, List::PodIps.at())
    }

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
