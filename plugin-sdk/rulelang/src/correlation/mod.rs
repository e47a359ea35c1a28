//! Sigma correlation rules: `event_count`, `value_count`, `temporal` and
//! `temporal_ordered` over the Sigma rules of the loaded files (referenced
//! by `name` or `id`), per group of `group-by` values, within a sliding
//! `timespan` of event time.
//!
//! A correlation is evaluated as events arrive: each match of a referenced
//! rule updates its group, and when the group's count meets the condition
//! the correlation alerts on that event and the group starts over. State is
//! bounded: at most [`MAX_GROUPS`] groups per correlation (fewer for large
//! counts; the least recently active group goes first), counts up to
//! [`MAX_COUNT`], values kept as 128-bit hashes. Rules a correlation refers to
//! raise no alerts of their own unless it says `generate: true`.
//!
//! Vigil's extensions: `group-by` and `field`, like a Sigma rule's
//! detection, may also name Falco fields (`container.id`, `proc.name`,
//! `k8s.pod.name`); fields naming the host
//! (`ComputerName`, `Hostname`, `host.name`) group nothing, as one daemon
//! sees one host.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::fields::{EventCtx, Field, Value};

mod load;
pub use load::SigmaCorrelation;
pub(crate) use load::{Refs, add, parse, silence};

/// Most groups one correlation tracks.
pub const MAX_GROUPS: usize = 4096;
/// Largest count a condition may name.
pub const MAX_COUNT: u64 = 1000;
/// Most correlations loaded (with every rule set's files): each costs work
/// on every event its rules match.
pub const MAX_CORRELATIONS: usize = 64;
/// Most rules one correlation refers to, and fields it groups by.
pub const MAX_REFERENCES: usize = 32;
pub const MAX_GROUP_BY: usize = 8;
/// Most counted values an alert names, and the longest group value it shows
/// (bytes): an alert stays a few KB whatever the events hold.
const MAX_NAMED: usize = 8;
const MAX_GROUP_SHOWN: usize = 128;
/// Most entries (times, values of at most ~100 bytes) and groups all
/// correlations keep together: a few MB of the interpreter's memory, whatever
/// the rule files say and however many groups the events make. Past either,
/// the least recently active half of the groups goes.
pub const MAX_TOTAL_ENTRIES: usize = 1 << 16;
pub const MAX_TOTAL_GROUPS: usize = 1 << 14;
/// Longest value a `value_count` group keeps to name in its alert (bytes).
const MAX_SHOWN: usize = 64;
/// Longest `timespan`: 30 days.
const MAX_TIMESPAN_NS: u64 = 30 * 86_400 * 1_000_000_000;
/// `group-by` fields that name the host: constant for one daemon.
const HOST_NAMES: &[&str] = &["ComputerName", "Computer", "Hostname", "hostname", "host.name", "evt.hostname"];

/// The four correlation types of Sigma's specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    EventCount,
    ValueCount,
    Temporal,
    TemporalOrdered,
}

/// A count's condition: the count it must reach (`gte: n`, `gt: n - 1`).
/// Evaluated as events arrive, so upper bounds and exact counts, which need
/// the end of the window, are refused at load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Condition {
    at_least: Option<u64>,
}

impl Condition {
    fn holds(&self, n: u64) -> bool {
        self.at_least.is_none_or(|b| n >= b)
    }

    /// How many entries a group keeps: the count to reach decides.
    fn cap(&self) -> usize {
        self.at_least.unwrap_or(1) as usize
    }

    fn is_empty(&self) -> bool {
        self.at_least.is_none()
    }
}

/// A correlation, its references resolved.
#[derive(Debug, Clone)]
pub struct Correlation {
    pub name: String,
    pub priority: vigil_event::Priority,
    pub tags: Vec<String>,
    pub id: String,
    kind: Kind,
    /// The rules it counts (indexes in the rule set), each with the fields its group-by reads.
    rules: Vec<(u32, Vec<Option<Field>>)>,
    group_by: Vec<String>,
    field: Option<Field>,
    field_name: String,
    timespan_ns: u64,
    timespan: String,
    condition: Condition,
}

/// A correlation that met its condition on an event.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationMatch<'r> {
    pub name: &'r str,
    pub priority: vigil_event::Priority,
    pub tags: &'r [String],
    pub message: String,
    pub fields: Vec<(String, String)>,
}

/// One group's entries.
#[derive(Debug)]
enum Entries {
    /// Event times, oldest first.
    Times(VecDeque<u64>),
    /// Distinct values: 128-bit hash, when last seen, the value (cut to [`MAX_SHOWN`]).
    Values(Vec<(u128, u64, Box<str>)>),
    /// Per referenced rule: when it last matched (temporal), or the start of
    /// the latest chain that reached it (temporal_ordered).
    Steps(Vec<Option<u64>>),
}

#[derive(Debug)]
struct Group {
    last_ns: u64,
    entries: Entries,
}

impl Group {
    fn len(&self) -> usize {
        match &self.entries {
            Entries::Times(t) => t.len(),
            Entries::Values(v) => v.len(),
            Entries::Steps(s) => s.len(),
        }
    }
}

/// The groups of every correlation of a rule set (the rule set itself is immutable).
#[derive(Debug, Default)]
pub struct CorrelationState {
    groups: Vec<HashMap<u128, Group>>,
    /// Entries in all groups.
    entries: usize,
    /// Which steps one event takes, per correlation (kept to reuse its allocation).
    positions: Vec<usize>,
}

/// Drops the groups of `groups` active before the median's last activity
/// (all of them if they are all as old): amortised over the insertions that
/// filled them. Returns how many entries went.
fn drop_older_half(groups: &mut [HashMap<u128, Group>]) -> usize {
    let mut times: Vec<u64> = groups.iter().flat_map(|g| g.values().map(|g| g.last_ns)).collect();
    if times.is_empty() {
        return 0;
    }
    let mid = times.len() / 2;
    let (_, cutoff, _) = times.select_nth_unstable(mid);
    let cutoff = *cutoff;
    let mut dropped = 0;
    for g in groups {
        g.retain(|_, g| {
            let keep = g.last_ns > cutoff;
            dropped += if keep { 0 } else { g.len() };
            keep
        });
        g.shrink_to_fit();
    }
    dropped
}

/// Two 64-bit SipHashes of `v`: its identity as a group or a counted value
/// (colliding on purpose would take about 2^64 tries).
fn hash(v: &impl Hash) -> u128 {
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        v.hash(&mut h);
        h.finish() as u128
    };
    half(0) << 64 | half(1)
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    &text[..text.floor_char_boundary(max)]
}

impl Correlation {
    /// The most groups this correlation keeps.
    fn max_groups(&self) -> usize {
        (MAX_TOTAL_ENTRIES / self.condition.cap().max(self.rules.len())).clamp(1, MAX_GROUPS)
    }

    /// Which of its referenced rules `rule` is, if any (each is referred to once).
    fn position(&self, rule: u32) -> Option<usize> {
        self.rules.iter().position(|(r, _)| *r == rule)
    }

    /// Counts the match of its `pos`-th rule on the event in `ctx` (keeping
    /// `entries`, the count of all groups' entries, up to date); the alert if
    /// the group's count now meets the condition.
    fn observe(
        &self,
        pos: usize,
        ctx: &EventCtx<'_>,
        groups: &mut HashMap<u128, Group>,
        entries: &mut usize,
    ) -> Option<CorrelationMatch<'_>> {
        let now = ctx.view.time_ns();
        let span = self.timespan_ns;
        // Either way: an entry from after a clock step back ages too.
        let fresh = |t: u64| now.abs_diff(t) <= span;
        // The group's values (names only if it alerts).
        let values: Vec<String> = self.rules[pos].1.iter().flatten().map(|f| ctx.get(f).render()).collect();
        let key = hash(&values);
        // The counted value first: an event without one does not count.
        let value = match (&self.kind, &self.field) {
            (Kind::ValueCount, Some(f)) => match ctx.get(f) {
                Value::Missing => return None,
                v => {
                    let v = v.render();
                    Some((hash(&v), Box::from(cut(&v, MAX_SHOWN))))
                }
            },
            _ => None,
        };
        let is_new = !groups.contains_key(&key);
        if is_new && groups.len() >= self.max_groups() {
            *entries -= drop_older_half(std::slice::from_mut(groups));
        }
        let n = self.rules.len();
        let group = groups.entry(key).or_insert_with(|| Group {
            last_ns: now,
            entries: match self.kind {
                Kind::EventCount => Entries::Times(VecDeque::new()),
                Kind::ValueCount => Entries::Values(Vec::new()),
                Kind::Temporal | Kind::TemporalOrdered => Entries::Steps(vec![None; n]),
            },
        });
        // The latest event's time, even after a clock step back: a group
        // is as recent as its last event, for eviction.
        group.last_ns = now;
        if !is_new {
            *entries -= group.len();
        }
        let cap = self.condition.cap();
        let count = match &mut group.entries {
            Entries::Times(times) => {
                times.retain(|t| fresh(*t));
                times.push_back(now);
                while times.len() > cap {
                    times.pop_front();
                }
                times.len()
            }
            Entries::Values(seen) => {
                seen.retain(|(_, t, _)| fresh(*t));
                let (v, shown) = value.unwrap_or_default();
                match seen.iter_mut().find(|(h, _, _)| *h == v) {
                    Some((_, t, _)) => *t = (*t).max(now),
                    None => seen.push((v, now, shown)),
                }
                if seen.len() > cap
                    && let Some(i) = seen.iter().enumerate().min_by_key(|(_, (_, t, _))| *t).map(|(i, _)| i)
                {
                    seen.remove(i);
                }
                seen.len()
            }
            Entries::Steps(steps) => {
                for s in steps.iter_mut() {
                    if s.is_some_and(|t| !fresh(t)) {
                        *s = None;
                    }
                }
                if self.kind == Kind::Temporal {
                    steps[pos] = Some(now);
                } else if pos == 0 {
                    steps[0] = Some(now);
                } else if let Some(start) = steps[pos - 1] {
                    steps[pos] = Some(steps[pos].map_or(start, |s| s.max(start)));
                }
                match self.kind {
                    Kind::TemporalOrdered => steps.iter().take_while(|s| s.is_some()).count(),
                    _ => steps.iter().filter(|s| s.is_some()).count(),
                }
            }
        } as u64;
        let met = if self.condition.is_empty() { count == n as u64 } else { self.condition.holds(count) };
        if !met {
            *entries += group.len();
            return None;
        }
        // Start over: the next alert needs a new set of events (the group
        // goes, its buffers with it).
        let counted = match groups.remove(&key).map(|g| g.entries) {
            Some(Entries::Values(v)) => v.into_iter().map(|(_, _, shown)| shown).collect(),
            _ => Vec::new(),
        };
        let names = self.rules[pos].1.iter().zip(&self.group_by).filter(|(f, _)| f.is_some()).map(|(_, n)| n.clone());
        Some(self.alert(count, names.zip(values).collect(), counted))
    }

    fn alert(&self, count: u64, values: Vec<(String, String)>, counted: Vec<Box<str>>) -> CorrelationMatch<'_> {
        let mut named = counted.iter().take(MAX_NAMED).map(|v| &**v).collect::<Vec<_>>().join(", ");
        if counted.len() > MAX_NAMED {
            named.push_str(&format!(" and {} more", counted.len() - MAX_NAMED));
        }
        let counted = named;
        let values: Vec<(String, String)> =
            values.into_iter().map(|(k, v)| (k, cut(&v, MAX_GROUP_SHOWN).to_string())).collect();
        let what = match self.kind {
            Kind::EventCount => format!("{count} events"),
            Kind::ValueCount => format!("{count} distinct {}", self.field_name),
            Kind::Temporal => format!("{count} of {} rules", self.rules.len()),
            Kind::TemporalOrdered => format!("{count} rules in order"),
        };
        let by: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut message = format!("{} ({what} within {}", self.name, self.timespan);
        if !counted.is_empty() {
            message.push_str(&format!(": {counted}"));
        }
        if !by.is_empty() {
            message.push_str(&format!("; {}", by.join(" ")));
        }
        message.push(')');
        let mut fields = Vec::new();
        if !self.id.is_empty() {
            fields.push(("sigma.id".to_string(), self.id.clone()));
        }
        fields.push(("correlation.count".to_string(), count.to_string()));
        // The group's values, but those the daemon adds from the event anyway.
        fields.extend(values.into_iter().filter(|(k, _)| !crate::HOST_FIELDS.contains(&k.as_str())));
        CorrelationMatch { name: &self.name, priority: self.priority, tags: &self.tags, message, fields }
    }
}

impl CorrelationState {
    /// Counts one event's rule matches (`hits`, indexes in the rule set) for
    /// every correlation; the correlations they complete go to `out`.
    pub fn observe<'r>(
        &mut self,
        correlations: &'r [Correlation],
        hits: &[u32],
        ctx: &EventCtx<'_>,
        out: &mut Vec<CorrelationMatch<'r>>,
    ) {
        if hits.is_empty() {
            return;
        }
        if self.groups.len() < correlations.len() {
            self.groups.resize_with(correlations.len(), HashMap::new);
        }
        let positions = &mut self.positions;
        for (c, groups) in correlations.iter().zip(&mut self.groups) {
            positions.clear();
            positions.extend(hits.iter().filter_map(|&h| c.position(h)));
            // Last step first: one event matching two steps of an ordered
            // chain cannot take both.
            positions.sort_unstable_by(|a, b| b.cmp(a));
            for &pos in positions.iter() {
                out.extend(c.observe(pos, ctx, groups, &mut self.entries));
            }
        }
        if self.entries > MAX_TOTAL_ENTRIES || self.len() > MAX_TOTAL_GROUPS {
            self.entries -= drop_older_half(&mut self.groups);
        }
        debug_assert_eq!(self.entries, self.groups.iter().flat_map(|g| g.values().map(Group::len)).sum::<usize>());
    }

    /// How many groups all correlations keep.
    pub fn len(&self) -> usize {
        self.groups.iter().map(HashMap::len).sum()
    }

    /// How many entries (times, values, steps) all groups keep.
    pub fn entries(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
