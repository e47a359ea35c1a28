//! Outputs that deliver at least once through a durable spool (webhooks,
//! NATS JetStream): the output thread only encodes alerts and appends them
//! to the output's [`Spool`]; a [`Delivery`] task on the outputs runtime
//! hands the oldest to the output's [`Transport`] and removes them once the
//! receiver acknowledged them. A slow or dead receiver fills its own spool
//! and nothing else: the rules and the other outputs go on.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use backon::ExponentialBuilder;
use tokio::sync::{Notify, watch};

use super::delivery::{Delivery, DeliveryStats, Transport};
use super::fields::FieldSelection;
use super::spool::{self, Dropped, Spool};
use super::webhook::payload;
use super::{AlertBatch, Output, OutputError};
use crate::alert::{Alert, Priority, rfc3339_nanos};
use crate::config::PayloadFormat;

/// The rule name of the alert reporting alerts dropped from a full spool.
pub const DROPPED_RULE: &str = "vigil-alerts-dropped";

/// What every spooled output is configured with.
pub struct Spooled<'a> {
    /// `webhook` or `nats`.
    pub kind: &'static str,
    pub name: &'a str,
    pub format: PayloadFormat,
    pub fields: &'a [String],
    pub min_priority: Priority,
    pub spool_max_bytes: u64,
    /// Most alerts and bytes handed to the transport at once.
    pub max_alerts: usize,
    pub max_bytes: u64,
    /// How long the first alert of a batch may wait for others.
    pub max_delay: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub drain_timeout: Duration,
    /// Records start with their [`Head`] (NATS: its transport routes by
    /// priority and id without parsing each alert's JSON back).
    pub heads: bool,
}

/// What a transport routes a record by: its alert's priority (its name,
/// `warning`) and id. A record with a head starts with [`HEAD`], the
/// priority, a NUL, the id and a NUL, then the alert's JSON; records
/// without one (webhooks', and those spooled before heads) are the JSON
/// alone, which never starts with that byte.
#[derive(Debug, PartialEq, Eq)]
pub struct Head<'a> {
    pub priority: &'a str,
    pub id: &'a str,
}

/// The first byte of a record with a [`Head`].
const HEAD: u8 = 0x01;

/// `json` as a record with `alert`'s head.
fn with_head(alert: &Alert, json: &[u8]) -> Vec<u8> {
    let priority = alert.priority.name();
    let mut record = Vec::with_capacity(3 + priority.len() + alert.id.len() + json.len());
    record.push(HEAD);
    record.extend_from_slice(priority.as_bytes());
    record.push(0);
    // An id is a UUID the daemon made; a NUL in one would end it early.
    record.extend(alert.id.bytes().filter(|b| *b != 0));
    record.push(0);
    record.extend_from_slice(json);
    record
}

/// A record's head, if it has one, and where its JSON starts.
pub fn split_head(record: &[u8]) -> Option<(Head<'_>, usize)> {
    let rest = record.strip_prefix(&[HEAD])?;
    let mut parts = rest.splitn(3, |b| *b == 0);
    let priority = std::str::from_utf8(parts.next()?).ok()?;
    let id = std::str::from_utf8(parts.next()?).ok()?;
    parts.next()?;
    Some((Head { priority, id }, 1 + priority.len() + 1 + id.len() + 1))
}

/// A spooled output's handle, for metrics.
#[derive(Clone)]
pub struct SpooledHandle {
    /// `webhook` or `nats`.
    pub kind: &'static str,
    pub name: String,
    pub stats: Arc<DeliveryStats>,
    pub spool: Arc<Spool>,
}

pub struct SpooledOutput {
    kind: &'static str,
    label: String,
    /// The configured name (`label` is `<kind>:<name>`).
    output: String,
    format: PayloadFormat,
    fields: FieldSelection,
    min_priority: Priority,
    hostname: String,
    spool: Arc<Spool>,
    stats: Arc<DeliveryStats>,
    wake: Arc<Notify>,
    closing: watch::Sender<Option<Instant>>,
    drain_timeout: Duration,
    task: Option<tokio::task::JoinHandle<()>>,
    runtime: tokio::runtime::Handle,
    reports: DropReports,
    heads: bool,
}

impl SpooledOutput {
    /// Opens the output's spool in `spool_dir` and starts delivering through
    /// `transport` on `runtime` (alerts left from an earlier run go first).
    pub fn start<T: Transport>(
        cfg: &Spooled<'_>,
        transport: T,
        spool_dir: &Path,
        hostname: &str,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, OutputError> {
        let label = format!("{}:{}", cfg.kind, cfg.name);
        let setup = |message: String| OutputError::Setup { output: label.clone(), message };
        create_private_dir(spool_dir)
            .map_err(|e| setup(format!("cannot create spool directory {}: {e}", spool_dir.display())))?;
        // Webhooks keep their spool's name of before (`<name>.redb`).
        let file = match cfg.kind {
            "webhook" => format!("{}.redb", cfg.name),
            kind => format!("{kind}-{}.redb", cfg.name),
        };
        let (spool, _) = Spool::open(&spool_dir.join(file), cfg.spool_max_bytes).map_err(|e| setup(e.to_string()))?;
        let spool = Arc::new(spool);
        let stats = Arc::new(DeliveryStats::default());
        let wake = Arc::new(Notify::new());
        let (closing, closing_rx) = watch::channel(None);
        let delivery = Delivery {
            label: label.clone(),
            max_alerts: cfg.max_alerts,
            max_bytes: cfg.max_bytes,
            max_delay: cfg.max_delay,
            backoff: ExponentialBuilder::new()
                .with_min_delay(cfg.retry_initial)
                .with_max_delay(cfg.retry_max)
                .with_jitter()
                .without_max_times(),
            transport,
            spool: spool.clone(),
            stats: stats.clone(),
            wake: wake.clone(),
            closing: closing_rx,
        };
        let task = runtime.spawn(delivery.run());
        Ok(SpooledOutput {
            kind: cfg.kind,
            label,
            output: cfg.name.to_string(),
            format: cfg.format,
            fields: FieldSelection::new(cfg.fields),
            min_priority: cfg.min_priority,
            hostname: hostname.to_string(),
            spool,
            stats,
            wake,
            closing,
            drain_timeout: cfg.drain_timeout,
            task: Some(task),
            runtime,
            reports: DropReports::default(),
            heads: cfg.heads,
        })
    }

    /// Alerts waiting in the spool.
    pub fn spooled(&self) -> u64 {
        self.spool.len()
    }

    pub fn handle(&self) -> SpooledHandle {
        SpooledHandle {
            kind: self.kind,
            name: self.output.clone(),
            stats: self.stats.clone(),
            spool: self.spool.clone(),
        }
    }

    fn spool_error(&self, e: spool::SpoolError) -> OutputError {
        OutputError::Setup { output: self.label.clone(), message: e.to_string() }
    }

    /// Counts and reports alerts a full spool dropped, with an alert of its
    /// own. Room for that alert is made first (for the largest count it
    /// could carry), so the alerts it displaces are in its count too; so
    /// are the counts of earlier reports that were dropped undelivered.
    fn report_dropped(&mut self, dropped: Dropped) -> Result<(), OutputError> {
        let encode = |n: u64| {
            let alert = dropped_alert(&self.label, n, &self.hostname);
            let json = payload::encode(&alert, self.format, &FieldSelection::default());
            if self.heads { with_head(&alert, &json) } else { json }
        };
        let room = self.spool.make_room(encode(u64::MAX).len() as u64).map_err(|e| self.spool_error(e))?;
        let (fresh, carried) = self.reports.take(dropped);
        let (room_fresh, room_carried) = self.reports.take(room);
        let fresh = fresh + room_fresh;
        let count = fresh + carried + room_carried;
        self.stats.dropped.fetch_add(fresh, Ordering::Relaxed);
        tracing::error!(output = %self.label, dropped = count, spool_bytes = self.spool.bytes(), "spool full: oldest alerts dropped (the output's spool_max_bytes)");
        let appended = self.spool.append([encode(count).as_slice()]).map_err(|e| self.spool_error(e))?;
        self.reports.add(appended.first, count);
        if appended.dropped.count > 0 {
            // Only a bound smaller than a report gets here.
            let (again, _) = self.reports.take(appended.dropped);
            self.stats.dropped.fetch_add(again, Ordering::Relaxed);
            tracing::error!(output = %self.label, dropped = again, "spool too small for its own drop report: more alerts dropped, counted in metrics only");
        }
        self.stats.spooled.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The drop reports an output appended to its spool, by sequence number,
/// with the alerts each counts: a later drop that takes a report undelivered
/// carries its count into the next report.
#[derive(Default)]
struct DropReports(BTreeMap<u64, u64>);

impl DropReports {
    fn add(&mut self, seq: u64, count: u64) {
        self.0.insert(seq, count);
    }

    /// Splits a drop into the alerts it took (`.0`) and the alerts counted
    /// by the drop reports it took (`.1`), forgetting those reports and the
    /// ones before it: those were delivered, or are in flight and so never
    /// dropped.
    fn take(&mut self, dropped: Dropped) -> (u64, u64) {
        if dropped.count == 0 {
            return (0, 0);
        }
        let later = self.0.split_off(&(dropped.last + 1));
        let taken = std::mem::replace(&mut self.0, later);
        let (mut reports, mut carried) = (0, 0);
        for (_, count) in taken.range(dropped.first..) {
            reports += 1;
            carried += count;
        }
        (dropped.count - reports, carried)
    }
}

/// The alert saying a spool dropped alerts.
fn dropped_alert(output: &str, dropped: u64, hostname: &str) -> Alert {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("vigil.output".to_string(), output.into());
    fields.insert("vigil.dropped".to_string(), dropped.into());
    Alert {
        id: uuid::Uuid::now_v7().to_string(),
        time: rfc3339_nanos(crate::time::now_ns()),
        rule: DROPPED_RULE.into(),
        rule_version: env!("CARGO_PKG_VERSION").into(),
        priority: Priority::Critical,
        output: format!("output {output}: spool full, the {dropped} oldest alerts were dropped undelivered"),
        source: "vigil".into(),
        hostname: hostname.into(),
        tags: vec!["vigil".into(), "alerts-dropped".into()],
        output_fields: fields,
    }
}

impl Output for SpooledOutput {
    fn name(&self) -> &str {
        &self.label
    }

    fn write(&mut self, batch: &AlertBatch) -> Result<(), OutputError> {
        // Vigil's format with every field is the batch's own JSON line: reuse it.
        let shared = self.format == PayloadFormat::Vigil && self.fields.is_all();
        let lines = batch.json_lines.split(|b| *b == b'\n');
        let mut records: Vec<Cow<'_, [u8]>> = Vec::with_capacity(batch.alerts.len());
        for (a, line) in batch.alerts.iter().zip(lines) {
            if a.priority > self.min_priority {
                continue;
            }
            let json =
                if shared { Cow::Borrowed(line) } else { Cow::Owned(payload::encode(a, self.format, &self.fields)) };
            records.push(if self.heads { Cow::Owned(with_head(a, &json)) } else { json });
        }
        let filtered = batch.alerts.len() - records.len();
        if filtered > 0 {
            self.stats.filtered.fetch_add(filtered as u64, Ordering::Relaxed);
        }
        if records.is_empty() {
            return Ok(());
        }
        let appended = self.spool.append(records.iter().map(|r| &**r)).map_err(|e| self.spool_error(e))?;
        self.stats.spooled.fetch_add(records.len() as u64, Ordering::Relaxed);
        if appended.dropped.count > 0 {
            self.report_dropped(appended.dropped)?;
        }
        self.wake.notify_one();
        Ok(())
    }

    fn close(&mut self) {
        let Some(task) = self.task.take() else { return };
        let deadline = Instant::now() + self.drain_timeout;
        let _ = self.closing.send(Some(deadline));
        self.wake.notify_one();
        if let Err(e) = self.runtime.block_on(task) {
            tracing::error!(output = %self.label, error = %e, "delivery task failed");
        }
        if let Err(e) = self.spool.sync() {
            tracing::warn!(output = %self.label, error = %e, "cannot sync the spool");
        }
        let left = self.spool.len();
        if left > 0 {
            tracing::warn!(output = %self.label, alerts = left, "output stopped with alerts in its spool; they are delivered at the next start");
        } else {
            tracing::info!(output = %self.label, sent = self.stats.sent.load(Ordering::Relaxed), "output stopped; everything delivered");
        }
    }
}

impl Drop for SpooledOutput {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Creates `dir` (and its parents) with owner-only permissions (0700) for
/// what this creates: spooled alerts can hold secrets.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_read_back_and_a_json_record_has_none() {
        let alert = dropped_alert("nats:bus", 3, "h");
        let json = br#"{"id":"x"}"#;
        let record = with_head(&alert, json);
        let (head, at) = split_head(&record).unwrap();
        assert_eq!(head, Head { priority: "critical", id: &alert.id });
        assert_eq!(&record[at..], json);
        assert_eq!(split_head(json), None);
        // Damaged heads are no heads: no NULs, no JSON after them, not UTF-8.
        assert_eq!(split_head(b"\x01warning"), None);
        assert_eq!(split_head(b"\x01warning\0id"), None);
        assert_eq!(split_head(b"\x01\xff\0id\0{}"), None);
        assert_eq!(split_head(b"\x01warning\0\0{}").unwrap().0, Head { priority: "warning", id: "" });
    }

    #[test]
    fn dropped_alert_says_how_many() {
        let a = dropped_alert("webhook:siem", 42, "h");
        assert_eq!(a.rule, DROPPED_RULE);
        assert_eq!(a.output_fields["vigil.dropped"], 42);
        assert_eq!(a.priority, Priority::Critical);
    }

    /// A report dropped before it was delivered hands its count on: the
    /// next report counts its alerts, not the report as one alert.
    #[test]
    fn a_dropped_report_carries_its_count_into_the_next() {
        let mut reports = DropReports::default();
        // Records 1-10 dropped; the report (seq 21) counts them.
        assert_eq!(reports.take(Dropped { count: 10, first: 1, last: 10 }), (10, 0));
        reports.add(21, 10);
        // A second drop takes 11-25, the first report among them.
        assert_eq!(reports.take(Dropped { count: 15, first: 11, last: 25 }), (14, 10));
        reports.add(40, 24);
        reports.add(50, 3);
        // A drop before a report leaves it; the reports before a drop are forgotten.
        assert_eq!(reports.take(Dropped { count: 5, first: 41, last: 45 }), (5, 0));
        assert_eq!(reports.0.keys().copied().collect::<Vec<_>>(), [50]);
        assert_eq!(reports.take(Dropped::default()), (0, 0));
    }
}
