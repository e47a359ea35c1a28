//! The reading loop: waits on the ring buffer with tokio (`AsyncFd`),
//! decodes what is there, reads the kernel's drop counters every 100 ms and
//! turns them into `events-lost` events (one per reason), and publishes the
//! source's figures every second. On stop it detaches the programs first,
//! then drains the ring and reads the counters a last time: every event the
//! programs saw is delivered or counted as lost.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aya::maps::{MapData, PerCpuArray};
use tokio::io::unix::AsyncFd;
use vigil_ebpf_common::{counter, kind as rec};

use super::filter::KernelMask;
use super::load::Loaded;
use super::records::{Decoder, MAX_BATCH};
use crate::config::KernelFilter;
use crate::enrich::Enricher;
use crate::enrich::cgroups::CgroupStats;
use crate::enrich::hold::HoldStats;
use crate::enrich::process_tree::TreeStats;
use crate::sources::{EventSender, Interest, LossReason, SourceError, Stop};

/// How often the loop wakes up without events (stop requests, filter
/// changes, tree sweeps).
const TICK: Duration = Duration::from_millis(100);
/// With exit events filtered out, how often the tree is checked against /proc.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// What the reading loop runs with.
pub struct Reader {
    pub loaded: Loaded,
    pub enricher: Enricher,
    pub mode: KernelFilter,
    pub wakeup_delay: Duration,
    pub stats: EbpfStatsHandle,
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
    /// Namespace change records (setns, unshare): seen and decoded, but
    /// not events; they keep the process tree current.
    pub namespace_changes: u64,
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

impl Reader {
    /// Reads and decodes the ring until `stop`, then detaches and drains.
    pub async fn run(self, mut out: EventSender, stop: Stop, interest: Interest) -> Result<(), SourceError> {
        let Reader { loaded: Loaded { bpf, ring, counters, filter }, enricher, mode, wakeup_delay, stats: stats_out } =
            self;
        // SAFETY: the ring buffer owns its map fd, which stays open and the
        // same for as long as it lives, i.e. as long as the AsyncFd.
        let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| SourceError::Io("watching the eBPF ring buffer", e.into()))?;
        let mut decoder = Decoder::new(enricher, interest.clone());
        let mut drops = Drops::default();
        let mut tick = tokio::time::interval(TICK);
        // After a long busy read, one tick, not a burst of the missed ones.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // What the kernel sends: set now, then kept equal to what rules want
        // (checked at each wake-up: a rule that subscribes to forks should
        // get them in full as soon as possible).
        let mut mask = KernelMask::new(filter, mode);
        mask.follow(&interest);
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
                        mask.follow(&interest);
                        let before = decoder.decoded;
                        closed |= decoder.drain(ring.get_mut(), &mut out).is_err();
                        let read = decoder.decoded - before;
                        if read == 0 || closed || wakeup_delay.is_zero() || stop.is_stopped() {
                            break;
                        }
                        if read < MAX_BATCH as u64 {
                            std::thread::sleep(wakeup_delay);
                        }
                        if decoder.enrich.is_holding() || busy_since.elapsed() >= TICK {
                            break;
                        }
                    }
                }
                // A watcher described a container: let its held events go.
                _ = decoder.enrich.described(), if decoder.enrich.is_holding() => {
                    let mut batch = Vec::new();
                    decoder.enrich.release_held(&mut batch);
                    closed |= !batch.is_empty() && out.send_or_drop(batch).is_err();
                }
                _ = tick.tick() => {
                    closed |= decoder.drain(ring.get_mut(), &mut out).is_err();
                    mask.follow(&interest);
                    decoder.tick();
                    drops.report(&counters, &mut out);
                    if !mask.sends_exits() && last_prune.elapsed() >= PRUNE_EVERY {
                        decoder.enrich.tree.prune_dead();
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
        let mut held = Vec::new();
        decoder.enrich.release_all(&mut held);
        if !held.is_empty() {
            let _ = out.send(held);
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
            seen_namespaces = seen[rec::NAMESPACES as usize],
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
        namespace_changes: decoder.namespace_changes,
        tree: decoder.enrich.tree.stats(),
        cgroups: decoder.enrich.cgroup_stats(),
        hold: decoder.enrich.hold_stats(),
    }
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
        out.report_lost_because(LossReason::RingFull, ring_full.saturating_sub(self.ring_full));
        out.report_lost_because(LossReason::TaskUnreadable, read.saturating_sub(self.read));
        self.ring_full = self.ring_full.max(ring_full);
        self.read = self.read.max(read);
    }
}
