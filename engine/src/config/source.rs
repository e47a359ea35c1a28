//! `[source]`: where events come from, and the eBPF source's settings.

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// eBPF if it loads, else the proc connector, else `source.replay` as a fallback.
    #[default]
    Auto,
    /// Kernel events from Vigil's eBPF programs (root, a kernel with BTF).
    Ebpf,
    /// The netlink process connector, reading details from /proc.
    Proc,
    /// A recorded file.
    Replay,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// `auto`, `ebpf`, `proc` or `replay`.
    pub kind: SourceKind,
    /// Replay file, for `kind = "replay"` (and the `auto` fallback).
    pub replay: Option<PathBuf>,
    /// Replay at the recorded pace instead of as fast as possible.
    pub realtime: bool,
    /// Capacity, in batches, of the channel from sources to the dispatcher.
    /// Live sources drop (and report `events-lost`) when it is full.
    pub channel_batches: usize,
    /// The eBPF source.
    pub ebpf: EbpfConfig,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            kind: SourceKind::Auto,
            replay: None,
            realtime: false,
            channel_batches: 1024,
            ebpf: EbpfConfig::default(),
        }
    }
}

/// `[source.ebpf]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EbpfConfig {
    /// Size of the kernel ring buffer shared by all CPUs (a power of two,
    /// at least one page). Records take what they use: a typical exec with
    /// its fork and exit ~0.4 KiB (at most ~2.9 KiB), so the default holds
    /// about a second of a 10,000 execs/s storm. Events that find it full
    /// are counted and reported as `events-lost`.
    pub ring_buffer: ByteSize,
    /// What the kernel sends: `tree` (what rules subscribe to, plus the
    /// fork and exit events the process tree needs) or `rules` (only what
    /// rules subscribe to; the tree then learns processes from exec events
    /// and /proc, and finds exited ones by a periodic check of /proc).
    pub filter: KernelFilter,
    /// The kernel's BTF, where struct field offsets are read.
    pub btf: PathBuf,
    /// How long an exited process stays in the tree for late events.
    #[serde(with = "humantime_serde")]
    pub exited_grace: Duration,
    /// Most exited processes kept in the tree; the oldest go first.
    pub max_exited: usize,
    /// After a wake-up that found less than a full batch, how long to let
    /// events gather before waiting on the ring buffer again. A busy host
    /// otherwise wakes the reader once per event; this trades at most this
    /// much latency for far fewer wake-ups (figures in BENCHMARKS.md).
    /// 0 reads every event as soon as it is written.
    #[serde(with = "humantime_serde")]
    pub wakeup_delay: Duration,
    /// Run the rules on the thread that reads the ring buffer (true), or
    /// hand batches to a dispatch thread of its own (false). Inline, each
    /// batch costs one wake-up instead of two and the reader takes
    /// `dispatch.thread_slice`; a thread of its own decodes and dispatches
    /// in parallel (figures in BENCHMARKS.md).
    pub inline_dispatch: bool,
    /// Mount tracefs at /sys/kernel/tracing when no tracefs is mounted, as
    /// other eBPF agents do. Vigil's programs attach by BTF id and do not
    /// need it; tools that inspect tracing (bpftool, perf, bpftrace) do.
    pub mount_tracefs: bool,
    /// On cgroup v1 and hybrid hosts, the v1 controller whose hierarchy
    /// tells containers apart when the v2 cgroup does not (on v1 hosts,
    /// always): `auto` (the first mounted of memory, pids, cpu, cpuset,
    /// freezer, devices), `off`, or a controller's name (used even when
    /// mounted only in another mount namespace; then containers started
    /// before the daemon are not resolved from it). The kernel reads each
    /// task's cgroup in it at exec and fork.
    pub cgroup_v1: String,
}

impl Default for EbpfConfig {
    fn default() -> Self {
        EbpfConfig {
            ring_buffer: ByteSize::mib(4),
            filter: KernelFilter::Tree,
            btf: PathBuf::from("/sys/kernel/btf/vmlinux"),
            exited_grace: Duration::from_secs(5),
            max_exited: 65_536,
            wakeup_delay: Duration::from_micros(500),
            inline_dispatch: true,
            mount_tracefs: true,
            cgroup_v1: "auto".to_string(),
        }
    }
}

/// `source.ebpf.filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelFilter {
    Tree,
    Rules,
}
