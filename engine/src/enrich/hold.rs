//! Events of containers the runtimes have not described yet, held briefly.
//!
//! A container's cgroup is known from the kernel before its first process
//! execs, but its name, image and pod come from the runtime's API, which
//! may answer a little later. Rather than dispatch that first exec with
//! only an id, the source holds it (and every later event of the same
//! container, to keep their order) until the watcher describes the
//! container, for at most `hold_timeout` and `hold_max_events` events.
//! Past either bound the oldest go out as they are, with the label
//! `vigil.unresolved` on their container, and are counted.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use vigil_event::{Container, Event};

use super::containers::ContainerCache;
use crate::config::ContainersConfig;

/// The label on the container of an event released without the runtime's
/// description (its value says why: `timeout` or `overflow`).
pub const UNRESOLVED_LABEL: &str = "vigil.unresolved";

/// The bounds of the hold queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldLimits {
    pub timeout: Duration,
    pub max_events: usize,
}

impl HoldLimits {
    pub fn new(config: &ContainersConfig) -> Self {
        HoldLimits { timeout: config.hold_timeout, max_events: config.hold_max_events }
    }
}

impl Default for HoldLimits {
    fn default() -> Self {
        Self::new(&ContainersConfig::default())
    }
}

/// What the queue did, for logs, metrics and the coverage benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HoldStats {
    /// Events held.
    pub held: u64,
    /// Released with the runtime's description.
    pub resolved: u64,
    /// Released without it: the hold timed out, or the queue was full.
    pub timed_out: u64,
    pub overflowed: u64,
    /// Released without it because the watcher could not find the
    /// container (another instance's, e.g. another dockerd or rootless
    /// Podman).
    pub not_found: u64,
    /// Released as they were because the runtime's watcher disconnected,
    /// or because the source stopped.
    pub unwatched: u64,
    pub at_shutdown: u64,
    /// Held now.
    pub holding: usize,
    /// Hold times of released events: counts per bucket, bucket `i` holding
    /// times below 2^i µs (the last bucket takes the rest).
    pub hold_us: [u64; HOLD_BUCKETS],
}

pub const HOLD_BUCKETS: usize = 24;

impl HoldStats {
    /// The hold time (µs, a bucket's upper bound) below which `q` (0..1) of
    /// the released events were held; 0 when none was.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let total: u64 = self.hold_us.iter().sum();
        if total == 0 {
            return 0;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.hold_us.iter().enumerate() {
            seen += n;
            if seen >= want {
                return 1 << i;
            }
        }
        1 << (HOLD_BUCKETS - 1)
    }
}

struct Held {
    since_ns: u64,
    id: Arc<str>,
    event: Event,
}

pub struct HoldQueue {
    limits: HoldLimits,
    held: VecDeque<Held>,
    /// Held events per container id.
    per_container: HashMap<Arc<str>, usize>,
    stats: HoldStats,
}

impl HoldQueue {
    pub fn new(limits: HoldLimits) -> Self {
        HoldQueue { limits, held: VecDeque::new(), per_container: HashMap::new(), stats: HoldStats::default() }
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Whether events of container `id` are held (a later one must wait too).
    pub fn is_holding(&self, id: &str) -> bool {
        !self.per_container.is_empty() && self.per_container.contains_key(id)
    }

    /// Holds `event` of container `id`, seen at `now_ns` (boot clock). A
    /// full queue releases its oldest into `out`, unresolved.
    pub fn hold(&mut self, id: &str, event: Event, now_ns: u64, out: &mut Vec<Event>) {
        if self.limits.max_events == 0 || self.limits.timeout.is_zero() {
            out.push(event);
            return;
        }
        if self.held.len() >= self.limits.max_events
            && let Some(oldest) = self.held.pop_front()
        {
            self.stats.overflowed += 1;
            self.finish(oldest, now_ns, Some("overflow"), None, out);
        }
        let id: Arc<str> = match self.per_container.get_key_value(id) {
            Some((k, _)) => k.clone(),
            None => Arc::from(id),
        };
        *self.per_container.entry(id.clone()).or_default() += 1;
        self.stats.held += 1;
        self.held.push_back(Held { since_ns: now_ns, id, event });
    }

    /// Releases into `out` the held events whose container `cache` now
    /// describes (or whose runtime's watcher went away), and those held
    /// longer than the timeout, oldest first per container.
    pub fn release(&mut self, cache: &ContainerCache, now_ns: u64, out: &mut Vec<Event>) {
        if self.held.is_empty() {
            return;
        }
        let timeout_ns = self.limits.timeout.as_nanos() as u64;
        let mut kept = VecDeque::with_capacity(self.held.len());
        // Containers with an event still held: their later events wait too.
        let mut waiting: HashSet<Arc<str>> = HashSet::new();
        for h in std::mem::take(&mut self.held) {
            if waiting.contains(&h.id) {
                kept.push_back(h);
                continue;
            }
            let known = cache.get(&h.id);
            let runtime = h.event.container.as_ref().map(|c| c.runtime).unwrap_or_default();
            if known.is_some() {
                self.stats.resolved += 1;
                self.finish(h, now_ns, None, known, out);
            } else if !cache.is_watched(runtime) {
                self.stats.unwatched += 1;
                self.finish(h, now_ns, None, None, out);
            } else if cache.gave_up(&h.id) {
                self.stats.not_found += 1;
                self.finish(h, now_ns, Some("not-found"), None, out);
            } else if now_ns.saturating_sub(h.since_ns) >= timeout_ns {
                self.stats.timed_out += 1;
                cache.give_up(&h.id);
                self.finish(h, now_ns, Some("timeout"), None, out);
            } else {
                waiting.insert(h.id.clone());
                kept.push_back(h);
            }
        }
        self.held = kept;
    }

    /// Releases everything (at shutdown), as it is.
    pub fn release_all(&mut self, cache: &ContainerCache, now_ns: u64, out: &mut Vec<Event>) {
        for h in std::mem::take(&mut self.held) {
            let known = cache.get(&h.id);
            self.stats.resolved += u64::from(known.is_some());
            self.stats.at_shutdown += u64::from(known.is_none());
            let why = if known.is_some() { None } else { Some("shutdown") };
            self.finish(h, now_ns, why, known, out);
        }
    }

    fn finish(
        &mut self,
        h: Held,
        now_ns: u64,
        unresolved: Option<&str>,
        known: Option<super::containers::Known>,
        out: &mut Vec<Event>,
    ) {
        let Held { since_ns, id, mut event } = h;
        if let Some(n) = self.per_container.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.per_container.remove(&id);
            }
        }
        let us = now_ns.saturating_sub(since_ns) / 1_000;
        let bucket = (u64::BITS - us.leading_zeros()) as usize;
        self.stats.hold_us[bucket.min(HOLD_BUCKETS - 1)] += 1;
        match (known, unresolved) {
            (Some(k), _) => k.apply(&mut event),
            (None, Some(why)) => {
                if let Some(c) = &event.container {
                    let mut c: Container = (**c).clone();
                    c.labels.push((UNRESOLVED_LABEL.into(), why.into()));
                    event.container = Some(Arc::new(c));
                }
            }
            (None, None) => {}
        }
        out.push(event);
    }

    pub fn stats(&self) -> HoldStats {
        HoldStats { holding: self.held.len(), ..self.stats }
    }
}

#[cfg(test)]
mod tests {
    use vigil_event::{EventKind, Runtime};

    use super::*;

    fn exec_in(id: &str, n: u64) -> Event {
        let mut e = Event::new(EventKind::ProcessExec);
        e.id = n;
        e.container = Some(Arc::new(Container { id: id.into(), runtime: Runtime::Docker, ..Default::default() }));
        e
    }

    fn watched_cache() -> Arc<ContainerCache> {
        let cache = ContainerCache::new();
        cache.set_connected(Runtime::Docker, true);
        cache
    }

    fn described(id: &str) -> Container {
        Container { id: id.into(), name: format!("name-{id}"), runtime: Runtime::Docker, ..Default::default() }
    }

    #[test]
    fn held_events_go_out_described_and_in_order_once_the_runtime_answers() {
        let cache = watched_cache();
        let mut q = HoldQueue::new(HoldLimits::default());
        let mut out = Vec::new();
        q.hold("a", exec_in("a", 1), 0, &mut out);
        q.hold("b", exec_in("b", 2), 0, &mut out);
        q.hold("a", exec_in("a", 3), 0, &mut out);
        assert!(q.is_holding("a") && q.is_holding("b"));
        q.release(&cache, 1_000, &mut out);
        assert!(out.is_empty());
        cache.insert(described("a"), None);
        q.release(&cache, 5_000_000, &mut out);
        assert_eq!(out.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 3]);
        assert!(out.iter().all(|e| e.container.as_ref().unwrap().name == "name-a"));
        assert!(!q.is_holding("a") && q.is_holding("b"));
        let s = q.stats();
        assert_eq!((s.held, s.resolved, s.holding), (3, 2, 1));
        // Held 5 ms: in the bucket below 2^13 µs.
        assert_eq!(s.quantile_us(0.5), 1 << 13);
    }

    #[test]
    fn past_the_timeout_events_go_out_marked_unresolved() {
        let cache = watched_cache();
        let mut q = HoldQueue::new(HoldLimits { timeout: Duration::from_millis(10), max_events: 10 });
        let mut out = Vec::new();
        q.hold("a", exec_in("a", 1), 0, &mut out);
        q.release(&cache, 9_000_000, &mut out);
        assert!(out.is_empty());
        q.release(&cache, 10_000_000, &mut out);
        let labels = &out[0].container.as_ref().unwrap().labels;
        assert_eq!(labels, &[(UNRESOLVED_LABEL.to_string(), "timeout".to_string())]);
        assert_eq!(q.stats().timed_out, 1);
        assert!(q.is_empty());
    }

    #[test]
    fn a_full_queue_lets_its_oldest_go_and_counts_it() {
        let mut q = HoldQueue::new(HoldLimits { timeout: Duration::from_secs(1), max_events: 2 });
        let mut out = Vec::new();
        for n in 1..=3 {
            q.hold("a", exec_in("a", n), 0, &mut out);
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].id, 1);
        assert_eq!(out[0].container.as_ref().unwrap().labels[0].1, "overflow");
        assert_eq!(q.stats().overflowed, 1);
        assert_eq!(q.stats().holding, 2);
    }

    #[test]
    fn a_watcher_that_goes_away_releases_its_containers_events() {
        let cache = watched_cache();
        let mut q = HoldQueue::new(HoldLimits::default());
        let mut out = Vec::new();
        q.hold("a", exec_in("a", 1), 0, &mut out);
        cache.set_connected(Runtime::Docker, false);
        q.release(&cache, 1, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].container.as_ref().unwrap().labels.is_empty());
    }

    #[test]
    fn a_container_no_watcher_can_find_goes_out_at_once_labelled() {
        let cache = watched_cache();
        let mut q = HoldQueue::new(HoldLimits::default());
        let mut out = Vec::new();
        q.hold("a", exec_in("a", 1), 0, &mut out);
        q.hold("a", exec_in("a", 2), 0, &mut out);
        cache.give_up("a");
        q.release(&cache, 1, &mut out);
        assert_eq!(out.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2]);
        assert!(out.iter().all(|e| e.container.as_ref().unwrap().labels[0].0 == UNRESOLVED_LABEL));
        assert_eq!(out[0].container.as_ref().unwrap().labels[0].1, "not-found");
        assert_eq!((q.stats().not_found, q.stats().timed_out), (2, 0));
        // Described after all: held again next time.
        cache.insert(described("a"), None);
        assert!(!cache.gave_up("a"));
    }

    #[test]
    fn zero_limits_hold_nothing() {
        let mut q = HoldQueue::new(HoldLimits { timeout: Duration::ZERO, max_events: 10 });
        let mut out = Vec::new();
        q.hold("a", exec_in("a", 1), 0, &mut out);
        assert_eq!(out.len(), 1);
        assert!(q.is_empty());
    }
}
