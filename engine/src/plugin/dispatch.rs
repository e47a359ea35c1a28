//! The dispatcher: hands every event to the rules that subscribe to its
//! kind (and, for rules scoped to containers, carry a container), in order,
//! and turns what they return into output alerts.
//!
//! Per chunk of events (at most `batch_size`): each event a rule wants is
//! packed once; rules with the same subscriptions and scope share one
//! assembled batch; each rule gets one call per chunk it has events in. A
//! rule scoped to containers is not called for the host's own processes:
//! on a host whose load is its own processes, most calls are saved. Rule swaps (hot reload) are applied
//! between chunks, so every event is seen by exactly one version of a rule.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vigil_event::packed::{assemble_batch, encode_event};
use vigil_event::{Event, EventKind, KindSet};

use super::backlog::Waiting;
use super::bounds::Bounds;
use super::budget::Pressure;
use super::rule::{Fault, LoadedRule, RuleStats, lost_reason};
use crate::alert::{Alarm, Alert, AlertBuilder};
use crate::sources::{Interest, Wanted};

/// A change to the rule set, applied between batches.
pub enum Control {
    /// Add a rule, or replace the one loaded from the same file (its state is
    /// handed over) or with the same id.
    Upsert(Box<LoadedRule>),
    /// Remove the rule loaded from this file.
    Remove(PathBuf),
    /// Several changes applied together, between the same two batches.
    Batch(Vec<Control>),
    /// Something about the rules the daemon raises a Critical alert about
    /// (rule files that claim the same id).
    Alarm(Alarm),
}

/// Figures of the dispatcher itself.
#[derive(Debug, Default)]
pub struct DispatchStats {
    pub events: AtomicU64,
    /// Events by kind (indexed by `EventKind as usize`).
    pub by_kind: [AtomicU64; EventKind::ALL.len()],
    /// Events lost before the rules (summed from `events-lost` events), by reason.
    pub lost: Mutex<BTreeMap<String, u64>>,
    pub events_unrouted: AtomicU64,
    /// Events cut to the per-event bounds ([`super::bounds`]).
    pub events_truncated: AtomicU64,
    pub alerts: AtomicU64,
    pub swaps: AtomicU64,
    /// When the most recent swaps were applied (ns since the Unix epoch,
    /// oldest first, at most [`RECENT_SWAPS`]): reload latency is measured
    /// from these.
    pub recent_swaps_ns: Mutex<VecDeque<u64>>,
    /// What the running rule files loaded (for `vigil_rule_file_rules`).
    pub rule_files: Mutex<Option<Arc<super::meta::RuleFiles>>>,
}

/// The loaded rules' ids and figures, kept current as rules change (for metrics).
pub type RuleRegistry = Arc<Mutex<Vec<(String, Arc<RuleStats>)>>>;

/// Bytes of a packed batch at most: a chunk's events for a group are split
/// into batches of this size (an event alone may be larger, up to the
/// per-event bounds, ~0.5 MiB), far below a rule's memory cap.
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// How many swap times [`DispatchStats::recent_swaps_ns`] keeps.
pub const RECENT_SWAPS: usize = 32;

/// Rules that get the same events.
struct Group {
    kinds: KindSet,
    containers_only: bool,
    members: Vec<usize>,
}

impl Group {
    fn wants(&self, event: &Event) -> bool {
        self.kinds.contains(event.kind)
            && (!self.containers_only || event.container.is_some() || event.kind == EventKind::EventsLost)
    }
}

pub struct Dispatcher {
    rules: Vec<LoadedRule>,
    groups: Vec<Group>,
    batch_size: usize,
    next_id: u64,
    records: Vec<u8>,
    ranges: Vec<Range<usize>>,
    selected: Vec<usize>,
    batch: Vec<u8>,
    /// Alerts of the current chunk with their event's index and their
    /// rule's, put in event order, then rule order.
    pending: Vec<(usize, usize, Alert)>,
    /// Alerts about earlier events (from a backlog, or about events a rule
    /// did not see) and the daemon's own alarms, output ahead of the chunk's.
    late: Vec<Alert>,
    /// The kinds any rule wants, for sources that can filter at the source
    /// ([`Wanted::Nothing`] while no rule is loaded).
    interest: Interest,
    builder: AlertBuilder,
    stats: Arc<DispatchStats>,
    registry: RuleRegistry,
    bounds: Bounds,
    pressure: Pressure,
}

impl Dispatcher {
    pub fn new(batch_size: usize, builder: AlertBuilder) -> Self {
        Dispatcher {
            rules: Vec::new(),
            groups: Vec::new(),
            batch_size: batch_size.max(1),
            next_id: 1,
            records: Vec::with_capacity(64 << 10),
            ranges: Vec::new(),
            selected: Vec::new(),
            batch: Vec::with_capacity(64 << 10),
            pending: Vec::new(),
            late: Vec::new(),
            interest: {
                let i = Interest::all();
                i.set(Wanted::Nothing);
                i
            },
            builder,
            stats: Arc::new(DispatchStats::default()),
            registry: RuleRegistry::default(),
            bounds: Bounds::default(),
            pressure: Pressure::default(),
        }
    }

    /// The dispatcher's figures, shared with metrics.
    pub fn stats(&self) -> &Arc<DispatchStats> {
        &self.stats
    }

    pub fn interest(&self) -> Interest {
        self.interest.clone()
    }

    /// The loaded rules' figures, kept current.
    pub fn rule_registry(&self) -> RuleRegistry {
        self.registry.clone()
    }

    pub fn rules(&self) -> &[LoadedRule] {
        &self.rules
    }

    /// Applies a rule-set change.
    pub fn apply(&mut self, control: Control) {
        self.apply_one(control);
        self.regroup();
        self.stats.swaps.fetch_add(1, Ordering::Relaxed);
        let mut recent = self.stats.recent_swaps_ns.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_SWAPS {
            recent.pop_front();
        }
        recent.push_back(crate::time::now_ns());
    }

    fn apply_one(&mut self, control: Control) {
        match control {
            Control::Batch(controls) => {
                for c in controls {
                    self.apply_one(c);
                }
            }
            Control::Alarm(alarm) => {
                tracing::error!(rule = alarm.rule, "{}", alarm.message);
                self.late.push(self.builder.alarm(alarm));
            }
            Control::Upsert(mut new) => {
                let same = self.rules.iter().position(|r| r.path == new.path || r.meta.id == new.meta.id);
                match same {
                    Some(i) => {
                        let old = &mut self.rules[i];
                        // Its state moves on another thread; figures describe
                        // the rule across its versions.
                        new.take_over(old);
                        tracing::info!(
                            rule = %new.meta.id,
                            old_version = %old.meta.version,
                            new_version = %new.meta.version,
                            path = %new.path.display(),
                            "rule replaced"
                        );
                        self.rules[i] = *new;
                    }
                    None => {
                        tracing::info!(rule = %new.meta.id, version = %new.meta.version, path = %new.path.display(), "rule loaded");
                        self.rules.push(*new);
                    }
                }
            }
            Control::Remove(path) => {
                if let Some(i) = self.rules.iter().position(|r| r.path == path) {
                    let old = self.rules.remove(i);
                    tracing::info!(rule = %old.meta.id, path = %path.display(), "rule removed");
                }
            }
        }
    }

    fn regroup(&mut self) {
        let pressed = self.pressure.pressed();
        self.rules.iter_mut().for_each(|r| r.set_pressed(pressed));
        self.groups.clear();
        for (i, rule) in self.rules.iter().enumerate() {
            let (kinds, containers_only) = (rule.meta.subscriptions, rule.meta.containers_only);
            match self.groups.iter_mut().find(|g| g.kinds == kinds && g.containers_only == containers_only) {
                Some(g) => g.members.push(i),
                None => self.groups.push(Group { kinds, containers_only, members: vec![i] }),
            }
        }
        let union = KindSet(self.groups.iter().fold(0, |m, g| m | g.kinds.0));
        self.interest.set(Wanted::Kinds(union));
        let ids = self.rules.iter().map(|r| (r.meta.id.clone(), r.stats.clone())).collect();
        *self.registry.lock().unwrap_or_else(|e| e.into_inner()) = ids;
        *self.stats.rule_files.lock().unwrap_or_else(|e| e.into_inner()) =
            self.rules.iter().find_map(|r| r.meta.files.clone());
    }

    /// Runs `events` through the rules; appends alerts to `out`.
    pub fn dispatch(&mut self, events: &mut [Event], out: &mut Vec<Alert>) {
        let started = std::time::Instant::now();
        self.dispatch_events(events, out);
        let now = std::time::Instant::now();
        if let Some(pressed) = self.pressure.record(now - started, now) {
            self.rules.iter_mut().for_each(|r| r.set_pressed(pressed));
            tracing::debug!(
                pressed,
                "dispatching thread pressure changed: rules over their CPU budget are throttled while it lasts"
            );
        }
    }

    fn dispatch_events(&mut self, events: &mut [Event], out: &mut Vec<Alert>) {
        let mut by_kind = [0u64; EventKind::ALL.len()];
        let mut truncated = 0;
        for e in events.iter_mut() {
            e.id = self.next_id;
            self.next_id += 1;
            by_kind[e.kind as usize] += 1;
            if self.bounds.apply(e) {
                truncated += 1;
            }
            if let Some(lost) = &e.lost {
                let mut m = self.stats.lost.lock().unwrap_or_else(|e| e.into_inner());
                *m.entry(lost.reason.clone()).or_default() += lost.count;
            }
        }
        for (counter, n) in self.stats.by_kind.iter().zip(by_kind) {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.stats.events.fetch_add(events.len() as u64, Ordering::Relaxed);
        if truncated > 0 {
            let before = self.stats.events_truncated.fetch_add(truncated, Ordering::Relaxed);
            // The first, then every 10,000th: a host full of them says so
            // without flooding the log.
            if before == 0 || before / 10_000 != (before + truncated) / 10_000 {
                tracing::warn!(
                    total = before + truncated,
                    "events over the per-event bounds (labels, argv, ancestry, long strings) were cut and flagged `truncated`"
                );
            }
        }
        let before = out.len();
        out.append(&mut self.late);
        for chunk in events.chunks(self.batch_size) {
            self.dispatch_chunk(chunk, out);
        }
        self.stats.alerts.fetch_add((out.len() - before) as u64, Ordering::Relaxed);
    }

    fn dispatch_chunk(&mut self, chunk: &[Event], out: &mut Vec<Alert>) {
        // Pack each wanted event once.
        self.records.clear();
        self.ranges.clear();
        let mut unrouted = 0;
        for e in chunk {
            let start = self.records.len();
            if self.groups.iter().any(|g| g.wants(e)) {
                encode_event(e, &mut self.records);
            } else {
                unrouted += 1;
            }
            self.ranges.push(start..self.records.len());
        }
        if unrouted > 0 {
            self.stats.events_unrouted.fetch_add(unrouted, Ordering::Relaxed);
        }
        let mut selected = std::mem::take(&mut self.selected);
        for g in 0..self.groups.len() {
            let group = &self.groups[g];
            selected.clear();
            selected.extend(chunk.iter().enumerate().filter(|(_, e)| group.wants(e)).map(|(i, _)| i));
            // In batches of at most MAX_BATCH_BYTES (an event goes alone if
            // it is larger), so that no batch can exceed a rule's memory.
            let mut from = 0;
            while from < selected.len() {
                let (mut to, mut bytes) = (from, 0);
                while to < selected.len() {
                    let len = self.ranges[selected[to]].len();
                    if to > from && bytes + len > MAX_BATCH_BYTES {
                        break;
                    }
                    bytes += len;
                    to += 1;
                }
                let batch = &selected[from..to];
                assemble_batch(&self.records, batch.iter().map(|&i| self.ranges[i].clone()), &mut self.batch);
                for m in 0..self.groups[g].members.len() {
                    let r = self.groups[g].members[m];
                    self.call(r, batch, chunk);
                }
                from = to;
            }
        }
        self.selected = selected;
        // Rules run group by group; output follows the events' order, and
        // the rules' on one event.
        self.pending.sort_by_key(|(index, rule, _)| (*index, *rule));
        out.append(&mut self.late);
        out.extend(self.pending.drain(..).map(|(_, _, a)| a));
    }

    /// Calls rule `r` with the assembled batch of `chunk`'s events at
    /// `batch`: after the batches waiting for it and a report of what it
    /// did not see; into its backlog if it is restarting.
    fn call(&mut self, r: usize, batch: &[usize], chunk: &[Event]) {
        self.catch_up(r);
        let rule = &mut self.rules[r];
        if rule.backlog.is_empty() {
            match rule.admit(batch.len()) {
                Ok(()) => {}
                Err(Fault::Restarting) => return self.keep(r, batch, chunk),
                // Skipped (counted, owed to it as lost), or faulted.
                Err(_) => return self.raise_quarantine(r),
            }
            self.report_lost(r);
            let rule = &mut self.rules[r];
            match rule.run(&self.batch, batch.len()) {
                Ok(alerts) => {
                    for a in alerts {
                        let Some(&index) = batch.get(a.event_index as usize) else {
                            rule.stats.alerts_dropped.fetch_add(1, Ordering::Relaxed);
                            if rule.may_warn() {
                                tracing::warn!(rule = %rule.meta.id, index = a.event_index, "alert names an event outside its batch; dropped");
                            }
                            continue;
                        };
                        self.pending.push((
                            index,
                            r,
                            self.builder.build(rule.meta.alerting(&a.rule), a, &chunk[index]),
                        ));
                    }
                }
                // The report of lost events faulted it: the batch waits for its restart.
                Err(Fault::Restarting) => self.keep(r, batch, chunk),
                // Logged and counted by the rule.
                Err(_) => self.raise_quarantine(r),
            }
            return;
        }
        self.keep(r, batch, chunk);
    }

    /// Keeps the batch for rule `r`, restarting, in its backlog (or skips it if full).
    fn keep(&mut self, r: usize, batch: &[usize], chunk: &[Event]) {
        let rule = &mut self.rules[r];
        if !rule.backlog.push(&self.batch, batch.iter().map(|&i| &chunk[i])) {
            rule.skip(batch.len(), lost_reason::RESTARTING);
        }
    }

    /// Hands rule `r` the batches that waited for it, if it is ready.
    fn catch_up(&mut self, r: usize) {
        let rule = &mut self.rules[r];
        while let Some(Waiting { batch, events }) = rule.backlog.pop() {
            match rule.on_batch(&batch, events.len()) {
                Ok(alerts) => {
                    for a in alerts {
                        if let Some(event) = events.get(a.event_index as usize) {
                            self.late.push(self.builder.build(rule.meta.alerting(&a.rule), a, event));
                        } else {
                            rule.stats.alerts_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(Fault::Restarting) => {
                    rule.backlog.unpop(Waiting { batch, events });
                    return;
                }
                Err(_) => {}
            }
        }
        self.raise_quarantine(r);
    }

    /// Tells rule `r` (admitted to run now), if it wants `events-lost`,
    /// what it did not see since it was last told (quarantined, throttled,
    /// restarting).
    fn report_lost(&mut self, r: usize) {
        let rule = &mut self.rules[r];
        let owed = rule.take_owed_lost();
        if owed.is_empty() || !rule.meta.subscriptions.contains(EventKind::EventsLost) {
            return;
        }
        let events: Vec<Event> = owed
            .into_iter()
            .map(|(reason, count)| {
                let id = self.next_id;
                self.next_id += 1;
                Event {
                    id,
                    time_ns: crate::time::now_ns(),
                    lost: Some(vigil_event::Lost { count, reason: reason.into() }),
                    ..Event::new(EventKind::EventsLost)
                }
            })
            .collect();
        let mut packed = Vec::new();
        vigil_event::packed::encode_batch(events.iter(), &mut packed);
        if let Ok(alerts) = rule.run(&packed, events.len()) {
            for a in alerts {
                if let Some(event) = events.get(a.event_index as usize) {
                    self.late.push(self.builder.build(rule.meta.alerting(&a.rule), a, event));
                }
            }
        }
    }

    /// Raises the alert about rule `r`'s quarantine, if it was just quarantined.
    fn raise_quarantine(&mut self, r: usize) {
        let rule = &mut self.rules[r];
        if let Some(why) = rule.take_quarantine() {
            let alarm = Alarm {
                rule: "Vigil rule quarantined",
                message: format!("rule {} quarantined: {why}", rule.meta.id),
                fields: vec![
                    ("vigil.rule.id", rule.meta.id.clone()),
                    ("vigil.rule.path", rule.path.display().to_string()),
                ],
            };
            self.late.push(self.builder.alarm(alarm));
        }
    }

    /// At the end of a run: waits for the rules that are restarting and
    /// hands them what waited for them; appends the alerts to `out`.
    pub fn finish(&mut self, out: &mut Vec<Alert>) {
        for r in 0..self.rules.len() {
            self.rules[r].finish_restart();
            self.catch_up(r);
        }
        let before = out.len();
        out.append(&mut self.late);
        self.stats.alerts.fetch_add((out.len() - before) as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use vigil_event::Lost;

    use super::*;

    #[test]
    fn a_group_scoped_to_containers_gets_container_events_and_losses_only() {
        let exec = Event::new(EventKind::ProcessExec);
        let in_container = Event { container: Some(Default::default()), ..Event::new(EventKind::ProcessExec) };
        let lost = Event { lost: Some(Lost::default()), ..Event::new(EventKind::EventsLost) };
        let kinds: KindSet = [EventKind::ProcessExec, EventKind::EventsLost].into_iter().collect();
        let scoped = Group { kinds, containers_only: true, members: vec![] };
        let every = Group { kinds, containers_only: false, members: vec![] };
        assert!(!scoped.wants(&exec) && scoped.wants(&in_container) && scoped.wants(&lost));
        assert!(every.wants(&exec) && every.wants(&in_container) && every.wants(&lost));
        let exec_only =
            Group { kinds: [EventKind::ProcessExec].into_iter().collect(), containers_only: true, members: vec![] };
        assert!(!exec_only.wants(&lost), "subscriptions still decide first");
        assert!(!exec_only.wants(&Event { container: Some(Default::default()), ..Event::new(EventKind::ProcessFork) }));
    }
}
