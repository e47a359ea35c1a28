//! The owned event model: what sources produce, enrichment fills in, replay
//! files store and `vigil events` prints. Mirrors the records of
//! `wit/rules.wit`, field for field.

use std::sync::Arc;

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// What happened. The discriminants are the WIT `event-kind` case indexes
/// and the bit positions of [`KindSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[repr(u8)]
pub enum EventKind {
    ProcessExec = 0,
    ProcessFork = 1,
    ProcessExit = 2,
    CgroupMkdir = 3,
    CgroupRmdir = 4,
    ContainerCreate = 5,
    ContainerStart = 6,
    ContainerStop = 7,
    ContainerDelete = 8,
    EventsLost = 9,
    /// Since 0.2.2.
    ContainerCopyIn = 10,
    ContainerCopyOut = 11,
}

impl EventKind {
    /// Every kind, in WIT order.
    pub const ALL: [EventKind; 12] = [
        EventKind::ProcessExec,
        EventKind::ProcessFork,
        EventKind::ProcessExit,
        EventKind::CgroupMkdir,
        EventKind::CgroupRmdir,
        EventKind::ContainerCreate,
        EventKind::ContainerStart,
        EventKind::ContainerStop,
        EventKind::ContainerDelete,
        EventKind::EventsLost,
        EventKind::ContainerCopyIn,
        EventKind::ContainerCopyOut,
    ];

    /// The kind whose WIT case index is `index`.
    pub fn from_index(index: u8) -> Option<EventKind> {
        Self::ALL.get(index as usize).copied()
    }

    /// The kebab-case name used in WIT, JSON and config files.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::ProcessExec => "process-exec",
            EventKind::ProcessFork => "process-fork",
            EventKind::ProcessExit => "process-exit",
            EventKind::CgroupMkdir => "cgroup-mkdir",
            EventKind::CgroupRmdir => "cgroup-rmdir",
            EventKind::ContainerCreate => "container-create",
            EventKind::ContainerStart => "container-start",
            EventKind::ContainerStop => "container-stop",
            EventKind::ContainerDelete => "container-delete",
            EventKind::EventsLost => "events-lost",
            EventKind::ContainerCopyIn => "container-copy-in",
            EventKind::ContainerCopyOut => "container-copy-out",
        }
    }

    /// Parses [`EventKind::name`].
    pub fn from_name(name: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of event kinds as a bit mask: a rule's subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KindSet(pub u16);

impl KindSet {
    /// The empty set.
    pub const EMPTY: KindSet = KindSet(0);

    /// True when `kind` is in the set.
    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & (1 << kind as u8) != 0
    }

    /// Adds `kind`.
    pub fn insert(&mut self, kind: EventKind) {
        self.0 |= 1 << kind as u8;
    }

    /// The kinds in the set, in WIT order.
    pub fn iter(self) -> impl Iterator<Item = EventKind> {
        EventKind::ALL.into_iter().filter(move |k| self.contains(*k))
    }
}

impl FromIterator<EventKind> for KindSet {
    fn from_iter<I: IntoIterator<Item = EventKind>>(iter: I) -> Self {
        let mut set = KindSet::EMPTY;
        for kind in iter {
            set.insert(kind);
        }
        set
    }
}

/// How severe an alert is: Falco's scale, most severe first. Serialized as
/// Falco spells it (`"Warning"`); [`Priority::name`] is the WIT case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub enum Priority {
    /// The system is unusable.
    Emergency,
    /// Act immediately.
    Alert,
    /// Critical conditions.
    Critical,
    /// Error conditions.
    Error,
    /// Warning conditions.
    Warning,
    /// Normal but significant.
    Notice,
    /// Informational.
    Informational,
    /// Debugging.
    Debug,
}

impl Priority {
    /// Every priority, most severe first.
    pub const ALL: [Priority; 8] = [
        Priority::Emergency,
        Priority::Alert,
        Priority::Critical,
        Priority::Error,
        Priority::Warning,
        Priority::Notice,
        Priority::Informational,
        Priority::Debug,
    ];

    /// The WIT case name (`warning`), used in the JSON rules return.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Emergency => "emergency",
            Priority::Alert => "alert",
            Priority::Critical => "critical",
            Priority::Error => "error",
            Priority::Warning => "warning",
            Priority::Notice => "notice",
            Priority::Informational => "informational",
            Priority::Debug => "debug",
        }
    }

    /// Parses [`Priority::name`].
    pub fn from_name(name: &str) -> Option<Priority> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// The container runtime that manages a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[repr(u8)]
pub enum Runtime {
    #[default]
    Unknown = 0,
    Docker = 1,
    Containerd = 2,
    CriO = 3,
    Podman = 4,
}

impl Runtime {
    /// The runtime whose WIT case index is `index` (unknown indexes are `Unknown`).
    pub fn from_index(index: u8) -> Runtime {
        match index {
            1 => Runtime::Docker,
            2 => Runtime::Containerd,
            3 => Runtime::CriO,
            4 => Runtime::Podman,
            _ => Runtime::Unknown,
        }
    }

    /// The kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Unknown => "unknown",
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
        }
    }
}

/// Namespace inode numbers (0 when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Namespaces {
    pub pid: u64,
    pub mnt: u64,
    pub net: u64,
    pub uts: u64,
    pub ipc: u64,
    pub user: u64,
    pub cgroup: u64,
}

impl Namespaces {
    /// In WIT order.
    pub fn to_array(&self) -> [u64; 7] {
        [self.pid, self.mnt, self.net, self.uts, self.ipc, self.user, self.cgroup]
    }

    /// From [`Namespaces::to_array`]'s order.
    pub fn from_array(a: [u64; 7]) -> Self {
        let [pid, mnt, net, uts, ipc, user, cgroup] = a;
        Namespaces { pid, mnt, net, uts, ipc, user, cgroup }
    }
}

/// One ancestor of a process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Ancestor {
    pub pid: u32,
    /// Shared (`Arc`) with the process tree, which hands the same ancestors
    /// to every exec below them.
    pub comm: Arc<str>,
    pub exe: Arc<str>,
    /// Its arguments, as of the event (what it last executed).
    pub argv: Arc<[String]>,
}

/// A process, as of the event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Process {
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub exe: String,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    pub cwd: String,
    pub start_time_ns: u64,
    pub cgroup_id: u64,
    pub namespaces: Namespaces,
    pub ancestry: Vec<Ancestor>,
    /// True when `cwd` was cut at the source's cap (its root-most part lost).
    pub cwd_truncated: bool,
    /// The script started through its `#!` line (then `exe` is the
    /// interpreter the kernel ran); empty otherwise.
    pub script: String,
    /// The file the kernel executed.
    pub exe_file: ExeFile,
    /// The controlling terminal; `None` without one.
    pub tty: Option<Tty>,
    /// The audit login uid: the user who logged in, kept across `su` and
    /// `sudo`; `None` when unset (daemons, containers) or unknown.
    pub login_uid: Option<u32>,
    /// The audit session id; `None` when unset or unknown.
    pub session_id: Option<u32>,
    /// Names of `uid`, `gid` and `login_uid` in the process's own
    /// /etc/passwd and /etc/group (its container's for a container
    /// process); empty when not found.
    pub user: String,
    pub group: String,
    pub login_user: String,
}

/// The file a process executed, as the kernel opened it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct ExeFile {
    /// Inode number (0 when unknown).
    pub inode: u64,
    /// Device of its filesystem, as `major << 32 | minor`.
    pub device: u64,
    /// Mode bits: file type, setuid (0o4000), setgid (0o2000), permissions.
    pub mode: u32,
    /// On an overlayfs upper layer: written or changed in the container
    /// after it started (a container's own image is the lower layers).
    pub upper_layer: bool,
    /// A memfd (`memfd_create`): never on any filesystem.
    pub memfd: bool,
    /// Deleted from its directory before or while running (not a memfd).
    pub unlinked: bool,
}

impl ExeFile {
    /// Set-user-id or set-group-id.
    pub fn setuid_or_setgid(&self) -> bool {
        self.mode & 0o6000 != 0
    }

    /// Run without a file on any filesystem: a memfd or an unlinked file.
    pub fn fileless(&self) -> bool {
        self.memfd || self.unlinked
    }
}

/// A controlling terminal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Tty {
    /// Device number as in /proc/<pid>/stat's `tty_nr` (and Falco's `proc.tty`).
    pub device: u32,
    /// E.g. `pts/3`, `tty1`, `ttyS0`.
    pub name: String,
    /// A pseudo-terminal (ssh, `docker exec -t`, `kubectl exec -t`, terminals).
    pub pty: bool,
}

impl Tty {
    /// The `tty_nr` encoding of a device (the kernel's `new_encode_dev`).
    pub fn encode(major: u32, minor: u32) -> u32 {
        (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
    }

    /// The terminal of device `major:minor`, named as under /dev.
    pub fn of(major: u32, minor: u32, pty: bool) -> Tty {
        let name = match (major, minor) {
            (136..=143, _) => format!("pts/{}", (major - 136) * 256 + minor),
            (4, 0..=63) => format!("tty{minor}"),
            (4, _) => format!("ttyS{}", minor - 64),
            (5, 0) => "tty".into(),
            (5, 1) => "console".into(),
            (5, 2) => "ptmx".into(),
            _ => format!("{major}:{minor}"),
        };
        Tty { device: Tty::encode(major, minor), name, pty: pty || (136..=143).contains(&major) }
    }
}

/// A key/value label.
pub type Labels = Vec<(String, String)>;

/// A container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: String,
    pub image_digest: String,
    pub runtime: Runtime,
    #[cfg_attr(feature = "serde", serde(with = "label_map"))]
    pub labels: Labels,
    pub pid: u32,
    pub privileged: bool,
    pub started_at_ns: u64,
    // Since 0.2.2: its network, as the runtime describes it.
    /// `bridge`, `host`, `none`, `container:<id>`, a network's name, or
    /// `pod` (a CRI container: its pod's network); empty when unknown.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "String::is_empty"))]
    pub network_mode: String,
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Vec::is_empty"))]
    pub networks: Vec<Network>,
    /// Published ports.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Vec::is_empty"))]
    pub ports: Vec<Port>,
    /// Whether its processes run as uid 0 by its config (`None`: unknown).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub runs_as_root: Option<bool>,
}

/// A network a container is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Network {
    pub name: String,
    /// IPv4 address (empty: none) and prefix length.
    pub ip: String,
    pub prefix_len: u8,
    /// IPv6 address (empty: none) and prefix length.
    pub ipv6: String,
    pub ipv6_prefix_len: u8,
    pub mac: String,
    pub gateway: String,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Port {
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The host address it is bound on (empty: all).
    pub host_ip: String,
    pub host_port: u16,
}

/// A Kubernetes pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub sandbox: bool,
    #[cfg_attr(feature = "serde", serde(with = "label_map"))]
    pub labels: Labels,
    /// Since 0.2.2: the pod's IP addresses (CRI), the first the primary.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Vec::is_empty"))]
    pub ips: Vec<String>,
}

/// A cgroup (for cgroup events).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Cgroup {
    pub id: u64,
    pub path: String,
}

/// Dropped events (for `events-lost`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Lost {
    pub count: u64,
    pub reason: String,
}

/// One event. Container and pod are shared (`Arc`) because the enricher
/// attaches the same cached metadata to every event of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Event {
    /// Sequence number, assigned by the daemon when the event enters the pipeline.
    #[cfg_attr(feature = "serde", serde(default))]
    pub id: u64,
    /// Nanoseconds since the Unix epoch.
    #[cfg_attr(feature = "serde", serde(default))]
    pub time_ns: u64,
    pub kind: EventKind,
    #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "Option::is_none"))]
    pub process: Option<Process>,
    #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "Option::is_none"))]
    pub container: Option<Arc<Container>>,
    #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "Option::is_none"))]
    pub pod: Option<Arc<Pod>>,
    #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "Option::is_none"))]
    pub cgroup: Option<Cgroup>,
    #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "Option::is_none"))]
    pub exit_code: Option<i32>,
    #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "Option::is_none"))]
    pub lost: Option<Lost>,
    /// Since 0.2.2: the path a `container-copy-in`/`-out` copied, inside
    /// the container.
    #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "Option::is_none"))]
    pub copy_path: Option<String>,
    /// Since 0.2.2: part of the event was cut to the daemon's per-event
    /// bounds (labels, argv, ancestry, long strings).
    #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "std::ops::Not::not"))]
    pub truncated: bool,
}

impl Event {
    /// An event of `kind` with nothing attached.
    pub fn new(kind: EventKind) -> Self {
        Event {
            id: 0,
            time_ns: 0,
            kind,
            process: None,
            container: None,
            pod: None,
            cgroup: None,
            exit_code: None,
            lost: None,
            copy_path: None,
            truncated: false,
        }
    }

    /// An `events-lost` event.
    pub fn lost(count: u64, reason: impl Into<String>, time_ns: u64) -> Self {
        Event { time_ns, lost: Some(Lost { count, reason: reason.into() }), ..Event::new(EventKind::EventsLost) }
    }
}

/// Labels as a JSON/msgpack map, in the order given (which is sorted by key
/// wherever the engine builds them).
#[cfg(feature = "serde")]
mod label_map {
    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(labels: &super::Labels, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(labels.len()))?;
        for (k, v) in labels {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<super::Labels, D::Error> {
        struct LabelVisitor;
        impl<'de> Visitor<'de> for LabelVisitor {
            type Value = super::Labels;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of string labels")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut labels = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    labels.push((k, v));
                }
                labels.sort();
                Ok(labels)
            }
        }
        d.deserialize_map(LabelVisitor)
    }
}
