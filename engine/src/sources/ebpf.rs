//! Live process and cgroup events from Vigil's eBPF programs
//! (`engine-ebpf/`, embedded in the binary at build time).
//!
//! Opening the source reads the struct offsets the programs need from the
//! kernel's BTF, loads the programs with those offsets and the configured
//! ring buffer size, attaches them to the BTF tracepoints
//! `sched_process_{exec,fork,exit}` and `cgroup_{mkdir,rmdir}`, and only
//! then scans /proc into the process tree, so that no process falls in
//! between. BTF tracepoints attach by BTF id, not through tracefs, so
//! tracefs need not be mounted; it is mounted if absent all the same
//! (`source.ebpf.mount_tracefs`), for the tools operators use beside an
//! eBPF agent ([`tracefs`]).
//!
//! Running, it waits on the ring buffer with tokio (`AsyncFd`), decodes the
//! records into events (exec events get their ancestry from the tree), and
//! sends them in batches. The kernel's per-CPU drop counters are read every
//! 100 ms and at stop, and turned into `events-lost` events, one per
//! reason, so a drop is always visible. The kernel is told which kinds to send at all
//! (`source.ebpf.filter`). On stop the programs are detached first, then
//! the ring is drained and the counters read a last time: every event the
//! programs saw is either delivered or counted as lost.

mod offsets;
pub mod tracefs;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf, EbpfLoader, Endianness};
use tokio::io::unix::AsyncFd;
use vigil_ebpf_common::{
    CgroupEvent, EXEC_ARGS_TRUNCATED, ExecEvent, ExitEvent, ForkEvent, Header, Task, counter, filter,
    header as rec_header, kind as rec,
};
use vigil_event::{Cgroup, Event, EventKind, KindSet, Namespaces, Process};

pub use offsets::{HIDE_FIELD_ENV, VMLINUX_BTF, read_offsets};

use super::procfs::{MAX_ANCESTRY, cgroup2_mount, exit_code, read_link};
use super::{Closed, EventSender, Interest, Source, SourceError, Stop};
use crate::config::{EbpfConfig, KernelFilter};
use crate::enrich::cgroups::{CgroupStats, Cgroups};
use crate::enrich::containers::ContainerCache;
use crate::enrich::hold::{HoldLimits, HoldQueue, HoldStats};
use crate::enrich::process_tree::{ProcessTree, TreeStats};

/// `events-lost` reason: the ring buffer was full.
pub const LOST_RING_FULL: &str = "ebpf: ring buffer full";
/// `events-lost` reason: the kernel could not read the task.
pub const LOST_READ: &str = "ebpf: task unreadable";
/// `events-lost` reason: a record in the ring buffer was malformed.
pub const LOST_DECODE: &str = "ebpf: malformed record";

/// The programs, built by engine/build.rs; empty when built without bpf-linker.
static PROGRAMS_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vigil-ebpf"));

/// Each program, the tracepoint it attaches to (same name), and its kind.
const PROGRAMS: [(&str, u32); 5] = [
    ("sched_process_exec", rec::EXEC),
    ("sched_process_fork", rec::FORK),
    ("sched_process_exit", rec::EXIT),
    ("cgroup_mkdir", rec::CGROUP_MKDIR),
    ("cgroup_rmdir", rec::CGROUP_RMDIR),
];

/// Most events sent in one batch.
const MAX_BATCH: usize = 256;
/// How often the loop wakes up without events (stop requests, filter
/// changes, tree sweeps).
const TICK: Duration = Duration::from_millis(100);
/// With exit events filtered out, how often the tree is checked against /proc.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// True when this binary carries the eBPF programs.
pub fn built_in() -> bool {
    !PROGRAMS_OBJECT.is_empty()
}

fn unavailable(message: impl Into<String>) -> SourceError {
    SourceError::Unavailable("ebpf", message.into())
}

/// `e` and its causes, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = crate::error_chain(e);
    if out.contains("Operation not permitted") {
        out.push_str(" (loading eBPF programs needs root, or CAP_BPF and CAP_PERFMON)");
    }
    out
}

pub struct EbpfSource {
    bpf: Ebpf,
    ring: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    filter: Array<MapData, u32>,
    tree: ProcessTree,
    cgroups: Cgroups,
    containers: Option<Arc<ContainerCache>>,
    hold: HoldLimits,
    mode: KernelFilter,
    wakeup_delay: Duration,
    inline_dispatch: bool,
    /// How long loading, attaching and the /proc scan took.
    pub open_time: Duration,
    stats: EbpfStatsHandle,
}

/// Where the source publishes its figures (every second, and at the end).
pub type EbpfStatsHandle = Arc<Mutex<Option<EbpfStats>>>;

/// What the source counted (published every second; final once it has stopped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EbpfStats {
    /// Events the programs saw (after the kernel filter), by record kind.
    pub seen: [u64; rec::COUNT as usize],
    /// Records decoded from the ring buffer.
    pub decoded: u64,
    pub lost_ring_full: u64,
    pub lost_read: u64,
    pub lost_decode: u64,
    /// Fork records sent brief (only the process tree wanted them).
    pub brief_forks: u64,
    pub tree: TreeStats,
    /// Container resolution: cgroups known, and lookups that found one or not.
    pub cgroups: CgroupStats,
    /// Events held until their container was described.
    pub hold: HoldStats,
}

impl EbpfStats {
    pub fn seen_total(&self) -> u64 {
        self.seen.iter().sum()
    }
}

impl EbpfSource {
    /// Loads and attaches the programs, then scans /proc. Fails with a
    /// clear error (and attaches nothing) when the kernel lacks what they
    /// need.
    pub fn open(config: &EbpfConfig) -> Result<Self, SourceError> {
        let started = Instant::now();
        if !built_in() {
            return Err(unavailable(
                "this vigil was built without its eBPF programs (bpf-linker was missing at build time; \
                 run ./scripts/setup.sh and rebuild)",
            ));
        }
        if config.mount_tracefs {
            tracefs::ensure();
        }
        let offsets = read_offsets(&config.btf)?;
        let btf = Btf::parse_file(&config.btf, Endianness::default())
            .map_err(|e| unavailable(format!("cannot parse kernel BTF {}: {}", config.btf.display(), chain(&e))))?;
        let mut bpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global("OFFSETS", &offsets, true)
            .map_max_entries("EVENTS", config.ring_buffer.as_u64() as u32)
            .load(PROGRAMS_OBJECT)
            .map_err(|e| unavailable(format!("loading the eBPF programs: {}", chain(&e))))?;
        let map = |bpf: &mut Ebpf, name: &str| {
            bpf.take_map(name).ok_or_else(|| unavailable(format!("the eBPF object has no map {name}")))
        };
        let mut filter = Array::<MapData, u32>::try_from(map(&mut bpf, "FILTER")?)
            .map_err(|e| unavailable(format!("FILTER map: {}", chain(&e))))?;
        filter.set(0, rec::ALL_MASK, 0).map_err(|e| unavailable(format!("FILTER map: {}", chain(&e))))?;
        let ring = RingBuf::try_from(map(&mut bpf, "EVENTS")?)
            .map_err(|e| unavailable(format!("EVENTS map: {}", chain(&e))))?;
        let counters = PerCpuArray::<MapData, u64>::try_from(map(&mut bpf, "COUNTERS")?)
            .map_err(|e| unavailable(format!("COUNTERS map: {}", chain(&e))))?;
        for (name, _) in PROGRAMS {
            let program: &mut BtfTracePoint = bpf
                .program_mut(name)
                .ok_or_else(|| unavailable(format!("the eBPF object has no program {name}")))?
                .try_into()
                .map_err(|e| unavailable(format!("program {name}: {}", chain(&e))))?;
            load_program(program, name, &btf)?;
            program.attach().map_err(|e| unavailable(format!("attaching program {name}: {}", chain(&e))))?;
        }
        let attached = started.elapsed();
        let mut tree = ProcessTree::new(config.exited_grace, config.max_exited);
        let scanned = tree.scan_proc();
        let mut cgroups = Cgroups::new(config.exited_grace.as_nanos() as u64);
        match cgroup2_mount() {
            Some(root) => {
                if let Err(e) = cgroups.scan(&root) {
                    tracing::warn!(root = %root.display(), error = %e, "cannot scan the cgroup2 tree; containers are resolved from new cgroups only");
                }
            }
            None => tracing::warn!("no cgroup2 hierarchy mounted: events carry no container"),
        }
        let open_time = started.elapsed();
        tracing::info!(
            attach_ms = attached.as_secs_f64() * 1e3,
            scan_ms = (open_time - attached).as_secs_f64() * 1e3,
            processes = scanned,
            cgroups = cgroups.len(),
            containers = cgroups.stats().containers,
            ring_buffer = %config.ring_buffer,
            "eBPF programs attached"
        );
        Ok(EbpfSource {
            bpf,
            ring,
            counters,
            filter,
            tree,
            cgroups,
            containers: None,
            hold: HoldLimits::default(),
            mode: config.filter,
            wakeup_delay: config.wakeup_delay,
            inline_dispatch: config.inline_dispatch,
            open_time,
            stats: Default::default(),
        })
    }

    /// Attaches runtime metadata from `cache` to events of known containers,
    /// holding (within `hold`) those of containers not described yet.
    pub fn with_containers(mut self, cache: Arc<ContainerCache>, hold: HoldLimits) -> Self {
        self.containers = Some(cache);
        self.hold = hold;
        self
    }

    /// Processes in the tree (after the /proc scan, before running).
    pub fn tree_len(&self) -> usize {
        self.tree.len()
    }

    /// Where the source publishes its counts: every second while it runs,
    /// and the final ones when it stops.
    pub fn stats(&self) -> EbpfStatsHandle {
        self.stats.clone()
    }
}

/// Loads one program. The verifier gives up with EAGAIN when a signal is
/// pending on the loading thread (a child exiting is enough: a busy parent
/// gets SIGCHLD after SIGCHLD). Signals are blocked on this thread while
/// loading (others take them; the rest wait), and a thread-directed signal
/// is retried, as libbpf does.
fn load_program(program: &mut BtfTracePoint, name: &str, btf: &Btf) -> Result<(), SourceError> {
    let _blocked = SignalsBlocked::here();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match program.load(name, btf) {
            Ok(()) => return Ok(()),
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && attempts < 20 =>
            {
                tracing::debug!(program = name, attempts, "verifier interrupted by a signal; loading again");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(unavailable(format!("loading program {name}: {}", chain(&e)))),
        }
    }
}

/// Every signal blocked on the calling thread until dropped.
struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    fn here() -> Self {
        // SAFETY: sigfillset and pthread_sigmask only write the sets given;
        // blocking signals on one thread is always allowed (SIGKILL and
        // SIGSTOP cannot be blocked and are not).
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            SignalsBlocked(old)
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `here` on the same thread.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

impl Source for EbpfSource {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn kernel_stats(&self) -> Option<EbpfStatsHandle> {
        Some(self.stats.clone())
    }

    fn dispatches_inline(&self) -> bool {
        self.inline_dispatch
    }

    fn run(self: Box<Self>, out: EventSender, stop: Stop, interest: Interest) -> Result<(), SourceError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| SourceError::Io("starting the eBPF source's runtime", e))?;
        runtime.block_on((*self).read_loop(out, stop, interest))
    }
}

impl EbpfSource {
    async fn read_loop(self, mut out: EventSender, stop: Stop, interest: Interest) -> Result<(), SourceError> {
        let EbpfSource {
            bpf,
            ring,
            counters,
            mut filter,
            tree,
            cgroups,
            containers,
            hold,
            mode,
            wakeup_delay,
            stats: stats_out,
            ..
        } = self;
        // SAFETY: the ring buffer owns its map fd, which stays open and the
        // same for as long as it lives, i.e. as long as the AsyncFd.
        let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| SourceError::Io("watching the eBPF ring buffer", e.into()))?;
        let mut decoder = Decoder::new(tree, cgroups, interest.clone());
        decoder.hold = HoldQueue::new(hold);
        let watchers = containers.clone();
        decoder.containers = containers;
        let mut drops = Drops::default();
        let mut tick = tokio::time::interval(TICK);
        // After a long busy read, one tick, not a burst of the missed ones.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // What the kernel sends: set now, then kept equal to what rules want
        // (checked at each wake-up: a rule that subscribes to forks should
        // get them in full as soon as possible).
        let mut mask = rec::ALL_MASK;
        let mut follow_rules = |mask: &mut u32| {
            let wanted = kernel_mask(&interest, mode);
            if wanted == *mask {
                return;
            }
            match filter.set(0, wanted, 0) {
                Ok(()) => {
                    tracing::debug!(mask = wanted, "eBPF kernel filter updated");
                    *mask = wanted;
                }
                Err(e) => tracing::warn!(error = %chain(&e), "cannot update the eBPF kernel filter"),
            }
        };
        follow_rules(&mut mask);
        let mut last_prune = Instant::now();
        let mut last_publish = Instant::now();
        let mut closed = false;

        while !closed && !stop.is_stopped() {
            tokio::select! {
                guard = ring.readable_mut() => {
                    // Cleared first: a record committed from here on notifies again.
                    guard.map_err(|e| SourceError::Io("waiting on the eBPF ring buffer", e))?.clear_ready();
                    // While records keep coming, read them every
                    // `wakeup_delay` (a blocking sleep on this source's own
                    // thread, which on a busy host ends when the running task
                    // lets it run: a busy host would otherwise wake us once
                    // per event), without a trip through the I/O
                    // driver each time. Back to it when a read finds the
                    // ring empty (the next record wakes us), after a TICK
                    // so the tick gets its turn, or after each sleep while
                    // events wait for their container.
                    let busy_since = Instant::now();
                    loop {
                        follow_rules(&mut mask);
                        let before = decoder.decoded;
                        closed |= decoder.drain(ring.get_mut(), &mut out).is_err();
                        let read = decoder.decoded - before;
                        if read == 0 || closed || wakeup_delay.is_zero() || stop.is_stopped() {
                            break;
                        }
                        if read < MAX_BATCH as u64 {
                            std::thread::sleep(wakeup_delay);
                        }
                        if !decoder.hold.is_empty() || busy_since.elapsed() >= TICK {
                            break;
                        }
                    }
                }
                // A watcher described a container: let its held events go.
                _ = changed(watchers.as_deref()), if !decoder.hold.is_empty() => {
                    let mut batch = Vec::new();
                    decoder.release_held(&mut batch);
                    closed |= !batch.is_empty() && out.send_or_drop(batch).is_err();
                }
                _ = tick.tick() => {
                    closed |= decoder.drain(ring.get_mut(), &mut out).is_err();
                    follow_rules(&mut mask);
                    decoder.tick();
                    drops.report(&counters, &mut out);
                    if mask & (1 << rec::EXIT) == 0 && last_prune.elapsed() >= PRUNE_EVERY {
                        decoder.tree.prune_dead();
                        last_prune = Instant::now();
                    }
                    if last_publish.elapsed() >= PUBLISH_EVERY {
                        *stats_out.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot(&decoder, &drops, &counters));
                        last_publish = Instant::now();
                    }
                }
            }
        }

        // Detach first (dropping the programs closes their links), then
        // take everything they wrote and the last drops.
        drop(bpf);
        let _ = decoder.drain(ring.get_mut(), &mut out);
        if let Some(cache) = &watchers {
            let mut batch = Vec::new();
            decoder.hold.release_all(cache, crate::time::boottime_ns(), &mut batch);
            if !batch.is_empty() {
                let _ = out.send(batch);
            }
        }
        drops.report(&counters, &mut out);
        let _ = out.flush_lost();
        let stats = snapshot(&decoder, &drops, &counters);
        let seen = stats.seen;
        tracing::info!(
            seen_exec = seen[rec::EXEC as usize],
            seen_fork = seen[rec::FORK as usize],
            seen_exit = seen[rec::EXIT as usize],
            seen_cgroup_mkdir = seen[rec::CGROUP_MKDIR as usize],
            seen_cgroup_rmdir = seen[rec::CGROUP_RMDIR as usize],
            seen_total = stats.seen_total(),
            decoded = stats.decoded,
            lost_ring_full = stats.lost_ring_full,
            lost_read = stats.lost_read,
            lost_decode = stats.lost_decode,
            brief_forks = stats.brief_forks,
            tree_nodes = stats.tree.nodes,
            tree_freed = stats.tree.freed,
            tree_evicted = stats.tree.evicted,
            tree_peak = stats.tree.peak,
            cgroup_hits = stats.cgroups.hits,
            cgroup_misses = stats.cgroups.misses,
            held = stats.hold.held,
            held_timed_out = stats.hold.timed_out,
            held_overflowed = stats.hold.overflowed,
            "eBPF programs detached"
        );
        *stats_out.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
        Ok(())
    }
}

/// Completes when `cache` changes (never without one).
async fn changed(cache: Option<&ContainerCache>) {
    match cache {
        Some(c) => c.changed().await,
        None => std::future::pending().await,
    }
}

/// How often the figures are published for metrics.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The source's figures now.
fn snapshot(decoder: &Decoder, drops: &Drops, counters: &PerCpuArray<MapData, u64>) -> EbpfStats {
    let counted = read_counters(counters);
    let mut seen = [0; rec::COUNT as usize];
    seen.copy_from_slice(&counted[counter::SEEN as usize..(counter::SEEN + rec::COUNT) as usize]);
    EbpfStats {
        seen,
        decoded: decoder.decoded,
        lost_ring_full: drops.ring_full,
        lost_read: drops.read + decoder.unreadable,
        lost_decode: decoder.malformed,
        brief_forks: decoder.brief_forks,
        tree: decoder.tree.stats(),
        cgroups: decoder.cgroups.stats(),
        hold: decoder.hold.stats(),
    }
}

/// The kinds the kernel should send: what rules want, plus, in `tree`
/// mode, exec/fork/exit for the process tree (forks brief when no rule
/// wants them: [`filter::FORK_BRIEF`]).
fn kernel_mask(interest: &Interest, mode: KernelFilter) -> u32 {
    let wanted = KindSet(interest.0.load(std::sync::atomic::Ordering::Relaxed));
    if wanted == KindSet::EMPTY {
        return rec::ALL_MASK;
    }
    let mut mask = 0;
    for (kind, bit) in [
        (EventKind::ProcessExec, rec::EXEC),
        (EventKind::ProcessFork, rec::FORK),
        (EventKind::ProcessExit, rec::EXIT),
        (EventKind::CgroupMkdir, rec::CGROUP_MKDIR),
        (EventKind::CgroupRmdir, rec::CGROUP_RMDIR),
    ] {
        if wanted.contains(kind) {
            mask |= 1 << bit;
        }
    }
    if mode == KernelFilter::Tree {
        if mask & 1 << rec::FORK == 0 {
            mask |= filter::FORK_BRIEF;
        }
        mask |= 1 << rec::EXEC | 1 << rec::FORK | 1 << rec::EXIT;
    }
    // cgroup changes are rare and keep container resolution current.
    mask | 1 << rec::CGROUP_MKDIR | 1 << rec::CGROUP_RMDIR
}

/// Sums of the per-CPU counters, by index.
fn read_counters(counters: &PerCpuArray<MapData, u64>) -> [u64; counter::COUNT as usize] {
    let mut out = [0; counter::COUNT as usize];
    for (i, slot) in out.iter_mut().enumerate() {
        if let Ok(values) = counters.get(&(i as u32), 0) {
            *slot = values.iter().sum();
        }
    }
    out
}

/// Kernel drop counts already reported.
#[derive(Default)]
struct Drops {
    ring_full: u64,
    read: u64,
}

impl Drops {
    fn report(&mut self, counters: &PerCpuArray<MapData, u64>, out: &mut EventSender) {
        let sum = |i: u32| counters.get(&i, 0).map_or(0, |v| v.iter().sum::<u64>());
        let (ring_full, read) = (sum(counter::LOST_RING_FULL), sum(counter::LOST_READ));
        out.report_lost_because(LOST_RING_FULL, ring_full.saturating_sub(self.ring_full));
        out.report_lost_because(LOST_READ, read.saturating_sub(self.read));
        self.ring_full = self.ring_full.max(ring_full);
        self.read = self.read.max(read);
    }
}

/// A ring buffer record too short for its kind, or of no known kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Records to events, keeping the process tree current.
pub struct Decoder {
    pub tree: ProcessTree,
    pub cgroups: Cgroups,
    /// Metadata from the runtime watchers, by container id.
    pub containers: Option<Arc<ContainerCache>>,
    /// Events of containers the watchers have not described yet.
    pub hold: HoldQueue,
    /// Held events let go by [`HoldQueue::hold`] itself (a full queue).
    released: Vec<Event>,
    interest: Interest,
    /// Wall clock minus boot clock, in ns.
    boot_to_wall: u64,
    pub decoded: u64,
    pub malformed: u64,
    /// Brief fork records decoded (sent while only the tree wanted forks).
    pub brief_forks: u64,
    /// Brief fork records a rule wanted whose process could no longer be
    /// read from /proc: reported as lost (`ebpf: task unreadable`).
    pub unreadable: u64,
    /// Of those, not reported yet.
    unreadable_unreported: u64,
}

impl Decoder {
    pub fn new(tree: ProcessTree, cgroups: Cgroups, interest: Interest) -> Self {
        let mut d = Decoder {
            tree,
            cgroups,
            containers: None,
            hold: HoldQueue::new(HoldLimits::default()),
            released: Vec::new(),
            interest,
            boot_to_wall: 0,
            decoded: 0,
            malformed: 0,
            brief_forks: 0,
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
        let now = crate::time::boottime_ns();
        self.tree.sweep(now);
        self.cgroups.sweep(now);
    }

    /// Decodes everything in the ring, sending full batches as it goes.
    fn drain(&mut self, ring: &mut RingBuf<MapData>, out: &mut EventSender) -> Result<(), Closed> {
        let mut batch = Vec::new();
        while let Some(record) = ring.next() {
            let decoded = self.decode(&record);
            // What a full hold queue let go came before this record.
            batch.append(&mut self.released);
            match decoded {
                Ok(Some(event)) => batch.push(event),
                Ok(None) => {}
                Err(Malformed) => {
                    self.malformed += 1;
                    out.report_lost_because(LOST_DECODE, 1);
                }
            }
            drop(record);
            if batch.len() >= MAX_BATCH {
                out.send_or_drop(std::mem::take(&mut batch))?;
            }
        }
        out.report_lost_because(LOST_READ, std::mem::take(&mut self.unreadable_unreported));
        self.release_held(&mut batch);
        if !batch.is_empty() {
            out.send_or_drop(batch)?;
        }
        Ok(())
    }

    /// Adds to `batch` the held events that can go now.
    pub fn release_held(&mut self, batch: &mut Vec<Event>) {
        batch.append(&mut self.released);
        if let Some(cache) = &self.containers
            && !self.hold.is_empty()
        {
            self.hold.release(cache, crate::time::boottime_ns(), batch);
        }
    }

    /// One record: `Ok(None)` when it only updated the tree (no rule
    /// wants its kind), `Err` when it is malformed.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Option<Event>, Malformed> {
        let header: Header = read(bytes)?;
        self.decoded += 1;
        let time_ns = header.boot_ns.saturating_add(self.boot_to_wall);
        match header.kind {
            rec::EXEC => {
                let ev = ExecRecord::parse(bytes)?;
                let mut process = self.exec(&ev);
                // Read once: a rule loaded between two reads must not get
                // an exec without its ancestry.
                if !self.interest.wants(EventKind::ProcessExec) {
                    return Ok(None);
                }
                process.ancestry = self.tree.ancestry(ev.task.ppid, MAX_ANCESTRY);
                Ok(self.contextualize(
                    ev.task.cgroup_id,
                    Event { time_ns, process: Some(process), ..Event::new(EventKind::ProcessExec) },
                ))
            }
            rec::FORK => {
                let ev: ForkEvent = read(bytes)?;
                let t = &ev.task;
                let brief = header.flags & rec_header::BRIEF != 0;
                self.brief_forks += u64::from(brief);
                self.tree.fork(t.tgid, t.ppid, t.start_boot_ns, t.cgroup_id);
                if !self.interest.wants(EventKind::ProcessFork) {
                    return Ok(None);
                }
                let mut process = task_process(t);
                if let Some(node) = self.tree.get(t.tgid) {
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
                process.ancestry = self.tree.ancestry(t.ppid, MAX_ANCESTRY);
                Ok(self.event(EventKind::ProcessFork, time_ns, t.cgroup_id, |e| e.process = Some(process)))
            }
            rec::EXIT => {
                let ev: ExitEvent = read(bytes)?;
                if !self.interest.wants(EventKind::ProcessExit) {
                    self.tree.exit(ev.tgid, header.boot_ns);
                    return Ok(None);
                }
                let mut process = Process { pid: ev.pid, tgid: ev.tgid, ..Default::default() };
                if let Some(node) = self.tree.get(ev.tgid) {
                    process.ppid = node.ppid;
                    process.comm = node.comm.to_string();
                    process.exe = node.exe.to_string();
                    process.argv = node.argv.to_vec();
                    process.start_time_ns = node.start_ns;
                    process.cgroup_id = node.cgroup_id;
                }
                self.tree.exit(ev.tgid, header.boot_ns);
                Ok(self.event(EventKind::ProcessExit, time_ns, process.cgroup_id, |e| {
                    e.process = Some(process);
                    e.exit_code = Some(exit_code(ev.exit_code));
                }))
            }
            rec::CGROUP_MKDIR | rec::CGROUP_RMDIR => {
                let ev: CgroupEvent = read(bytes)?;
                let kind =
                    if header.kind == rec::CGROUP_MKDIR { EventKind::CgroupMkdir } else { EventKind::CgroupRmdir };
                let path = lossy(&ev.path, ev.path_len as usize);
                // A removed cgroup lingers, so its rmdir event still resolves.
                if kind == EventKind::CgroupMkdir {
                    self.cgroups.mkdir(ev.id, &path);
                } else {
                    self.cgroups.rmdir(ev.id, header.boot_ns);
                }
                Ok(self.event(kind, time_ns, ev.id, |e| e.cgroup = Some(Cgroup { id: ev.id, path })))
            }
            _ => Err(Malformed),
        }
    }

    /// An event of `kind`, if a rule wants it, with the container and pod of
    /// the cgroup `cgroup_id` (none for the host or an unknown cgroup).
    fn event(&mut self, kind: EventKind, time_ns: u64, cgroup_id: u64, fill: impl FnOnce(&mut Event)) -> Option<Event> {
        if !self.interest.wants(kind) {
            return None;
        }
        let mut event = Event { time_ns, ..Event::new(kind) };
        fill(&mut event);
        self.contextualize(cgroup_id, event)
    }

    /// Attaches to `event` the container and pod of the cgroup `cgroup_id`,
    /// and the runtime's description of the container once its watcher has
    /// one. Until then (and while earlier events of it wait) the event is
    /// held, if a connected watcher will describe it: `None`.
    pub fn contextualize(&mut self, cgroup_id: u64, mut event: Event) -> Option<Event> {
        if cgroup_id == 0 {
            return Some(event);
        }
        let Some(ctx) = self.cgroups.get(cgroup_id) else { return Some(event) };
        ctx.apply(&mut event);
        if let (Some(cache), Some(c)) = (&self.containers, &event.container) {
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
        }
        Some(event)
    }

    /// The process of an exec record (without its ancestry); updates the tree.
    fn exec(&mut self, ev: &ExecRecord) -> Process {
        let t = &ev.task;
        let mut process = task_process(t);
        let mut exe = lossy(ev.filename, ev.filename_len as usize);
        if !exe.starts_with('/') {
            // A relative path as given to execve: the kernel's view is in /proc.
            let resolved = read_link(std::path::Path::new(&format!("/proc/{}/exe", t.tgid)));
            if !resolved.is_empty() {
                exe = resolved;
            }
        }
        process.exe = exe;
        let args = &ev.args[..(ev.args_len as usize).min(ev.args.len())];
        let args = args.strip_suffix(&[0]).unwrap_or(args);
        if !args.is_empty() {
            process.argv = args.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        }
        process.argv_truncated = ev.flags & EXEC_ARGS_TRUNCATED != 0;
        self.tree.exec(&process);
        process
    }
}

/// An exec record read in place: its fixed fields copied, its filename
/// and argv buffers (1.5 KiB) borrowed from the ring.
struct ExecRecord<'a> {
    task: Task,
    filename_len: u32,
    args_len: u32,
    flags: u32,
    filename: &'a [u8],
    args: &'a [u8],
}

impl<'a> ExecRecord<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, Malformed> {
        use std::mem::offset_of;
        if bytes.len() < size_of::<ExecEvent>() {
            return Err(Malformed);
        }
        let at = |offset: usize| &bytes[offset..];
        Ok(ExecRecord {
            task: read(at(offset_of!(ExecEvent, task)))?,
            filename_len: read(at(offset_of!(ExecEvent, filename_len)))?,
            args_len: read(at(offset_of!(ExecEvent, args_len)))?,
            flags: read(at(offset_of!(ExecEvent, flags)))?,
            filename: &at(offset_of!(ExecEvent, filename))[..vigil_ebpf_common::FILENAME_LEN],
            args: &at(offset_of!(ExecEvent, args))[..vigil_ebpf_common::ARGS_LEN],
        })
    }
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
        let dir = std::path::PathBuf::from(format!("/proc/{pid}"));
        if let Some((uid, gid)) = super::procfs::read_ids(&dir) {
            (process.uid, process.gid) = (uid, gid);
            process.namespaces = super::procfs::read_namespaces(&dir);
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

/// A `T` from the start of `bytes`, which must be long enough.
fn read<T: Copy>(bytes: &[u8]) -> Result<T, Malformed> {
    if bytes.len() < size_of::<T>() {
        return Err(Malformed);
    }
    // SAFETY: the length is checked; T is a plain `#[repr(C)]` record of
    // integers and byte arrays, valid for any bit pattern.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const T) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_record(pid: u32, ppid: u32, filename: &str, args: &[&str]) -> Vec<u8> {
        // SAFETY: all-zero is a valid ExecEvent.
        let mut ev: ExecEvent = unsafe { std::mem::zeroed() };
        ev.header.kind = rec::EXEC;
        ev.header.boot_ns = 1;
        ev.task =
            Task { pid, tgid: pid, ppid, uid: 1000, comm: *b"sh\0\0\0\0\0\0\0\0\0\0\0\0\0\0", ..Default::default() };
        ev.filename[..filename.len()].copy_from_slice(filename.as_bytes());
        ev.filename_len = filename.len() as u32;
        let mut n = 0;
        for a in args {
            ev.args[n..n + a.len()].copy_from_slice(a.as_bytes());
            n += a.len() + 1;
        }
        ev.args_len = n as u32;
        // SAFETY: a plain record viewed as its bytes.
        unsafe { std::slice::from_raw_parts(&ev as *const ExecEvent as *const u8, size_of::<ExecEvent>()) }.to_vec()
    }

    #[test]
    fn decodes_exec_with_argv_and_ancestry_from_the_tree() {
        let mut d = Decoder::new(ProcessTree::default(), Cgroups::new(1_000_000_000), Interest::all());
        let bash = Process { tgid: 4_000_000, comm: "bash".into(), exe: "/bin/bash".into(), ..Default::default() };
        d.tree.exec(&bash);
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
        let mut d = Decoder::new(ProcessTree::default(), Cgroups::new(1_000_000_000), Interest::all());
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
        interest.0.store(KindSet::from_iter([EventKind::ProcessExec]).0, std::sync::atomic::Ordering::Relaxed);
        let mut d = Decoder::new(ProcessTree::default(), Cgroups::new(1_000_000_000), interest.clone());
        let fork = ForkEvent {
            header: Header { kind: rec::FORK, ..Default::default() },
            task: Task { pid: 4_000_100, tgid: 4_000_100, ppid: 1, ..Default::default() },
        };
        // SAFETY: a plain record viewed as its bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts(&fork as *const ForkEvent as *const u8, size_of::<ForkEvent>()) };
        assert_eq!(d.decode(bytes), Ok(None));
        assert!(d.tree.get(4_000_100).is_some());
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
        assert!(d.tree.get(4_000_100).is_some_and(|n| n.exited), "kept for its grace period, marked exited");
        let cgroups = 1 << rec::CGROUP_MKDIR | 1 << rec::CGROUP_RMDIR;
        assert_eq!(kernel_mask(&interest, KernelFilter::Rules), 1 << rec::EXEC | cgroups);
        assert_eq!(kernel_mask(&interest, KernelFilter::Tree), 0b111 | cgroups | filter::FORK_BRIEF);
        assert_eq!(kernel_mask(&Interest::all(), KernelFilter::Rules), rec::ALL_MASK);
        assert_eq!(kernel_mask(&Interest::all(), KernelFilter::Tree), rec::ALL_MASK, "forks in full when unknown");
        // No rule loaded: only what the tree and container resolution need.
        let nothing = Interest(std::sync::Arc::new(std::sync::atomic::AtomicU16::new(Interest::NOTHING)));
        assert_eq!(kernel_mask(&nothing, KernelFilter::Tree), 0b111 | cgroups | filter::FORK_BRIEF);
        assert_eq!(kernel_mask(&nothing, KernelFilter::Rules), cgroups);
        assert!(!nothing.wants(EventKind::ProcessExec) && !nothing.wants(EventKind::EventsLost));
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
        let mut d = Decoder::new(ProcessTree::default(), Cgroups::new(1_000_000_000), Interest::all());
        // This test's own process stands for a child whose record came brief.
        let me = std::process::id();
        let bash = Process { tgid: 4_000_200, comm: "bash".into(), exe: "/bin/bash".into(), ..Default::default() };
        d.tree.exec(&bash);
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
