//! Webhook outputs: alerts POSTed as JSON, delivered at least once.
//!
//! The output thread only encodes alerts and appends them to the output's
//! durable [`spool`](spool::Spool); a delivery task on the outputs runtime
//! reads the oldest alerts, sends them (batched, gzipped, signed), and
//! removes them once the receiver answers 2xx. Connection errors, timeouts,
//! 408, 429 (honouring `Retry-After`) and 5xx are retried with exponential
//! backoff and jitter, for as long as it takes; other 4xx answers are
//! permanent: logged with the response body, counted, and not retried. A
//! slow or dead receiver fills its own spool and nothing else: the rules
//! and the other outputs go on.

mod delivery;
pub(crate) mod payload;
pub(crate) mod spool;

use delivery::{Delivery, http_client, redacted_url};
pub use delivery::{MAX_RETRY_AFTER, WebhookStats};

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use backon::ExponentialBuilder;
use tokio::sync::{Notify, watch};

use super::fields::FieldSelection;
use super::{AlertBatch, Output, OutputError};
use crate::alert::{Alert, Priority, rfc3339_nanos};
use crate::config::{PayloadFormat, WebhookConfig};
use payload::Signer;
use spool::Spool;

/// The rule name of the alert reporting alerts dropped from a full spool.
pub const DROPPED_RULE: &str = "vigil-alerts-dropped";

/// A webhook output's handle, for metrics.
#[derive(Clone)]
pub struct WebhookHandle {
    pub name: String,
    pub stats: Arc<WebhookStats>,
    pub spool: Arc<Spool>,
}

pub struct WebhookOutput {
    label: String,
    /// The configured name (`label` is `webhook:<name>`).
    output: String,
    format: PayloadFormat,
    fields: FieldSelection,
    min_priority: Priority,
    hostname: String,
    spool: Arc<Spool>,
    stats: Arc<WebhookStats>,
    wake: Arc<Notify>,
    closing: watch::Sender<Option<Instant>>,
    drain_timeout: Duration,
    task: Option<tokio::task::JoinHandle<()>>,
    runtime: tokio::runtime::Handle,
}

impl WebhookOutput {
    /// Opens the spool and starts delivering (alerts left from an earlier
    /// run go first). `runtime` runs the delivery task.
    pub fn open(
        cfg: &WebhookConfig,
        spool_dir: &Path,
        hostname: &str,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, OutputError> {
        let label = format!("webhook:{}", cfg.name);
        let setup = |message: String| OutputError::Setup { output: label.clone(), message };
        create_private_dir(spool_dir)
            .map_err(|e| setup(format!("cannot create spool directory {}: {e}", spool_dir.display())))?;
        let (spool, _) = Spool::open(&spool_dir.join(format!("{}.redb", cfg.name)), cfg.spool_max_bytes.as_u64())
            .map_err(|e| setup(e.to_string()))?;
        let client = http_client(cfg).map_err(setup)?;
        let signer = match (&cfg.hmac_secret, &cfg.hmac_secret_file) {
            (Some(s), _) => Some(Signer::new(s.as_bytes())),
            (None, Some(p)) => {
                let s = std::fs::read_to_string(p)
                    .map_err(|e| setup(format!("cannot read hmac_secret_file {}: {e}", p.display())))?;
                Some(Signer::new(s.trim_end_matches(['\n', '\r']).as_bytes()))
            }
            (None, None) => None,
        };
        let spool = Arc::new(spool);
        let stats = Arc::new(WebhookStats::default());
        let wake = Arc::new(Notify::new());
        let (closing, closing_rx) = watch::channel(None);
        let delivery = Delivery {
            label: label.clone(),
            url: cfg.url.clone(),
            mode: cfg.mode,
            max_alerts: cfg.max_alerts,
            max_bytes: cfg.max_bytes.as_u64(),
            max_delay: cfg.max_delay,
            gzip: cfg.gzip,
            backoff: ExponentialBuilder::new()
                .with_min_delay(cfg.retry_initial)
                .with_max_delay(cfg.retry_max)
                .with_jitter()
                .without_max_times(),
            client,
            signer,
            spool: spool.clone(),
            stats: stats.clone(),
            wake: wake.clone(),
            closing: closing_rx,
        };
        let task = runtime.spawn(delivery.run());
        tracing::info!(output = %label, url = %redacted_url(&cfg.url), format = ?cfg.format, mode = ?cfg.mode, spooled = spool.len(), "webhook output ready");
        Ok(WebhookOutput {
            label,
            output: cfg.name.clone(),
            format: cfg.format,
            fields: FieldSelection::new(&cfg.fields),
            min_priority: cfg.min_priority,
            hostname: hostname.to_string(),
            spool,
            stats,
            wake,
            closing,
            drain_timeout: cfg.drain_timeout,
            task: Some(task),
            runtime,
        })
    }

    pub fn handle(&self) -> WebhookHandle {
        WebhookHandle { name: self.output.clone(), stats: self.stats.clone(), spool: self.spool.clone() }
    }

    fn spool_error(&self, e: spool::SpoolError) -> OutputError {
        OutputError::Setup { output: self.label.clone(), message: e.to_string() }
    }

    /// Counts and reports alerts a full spool dropped, with an alert of its
    /// own. Room for that alert is made first (for the largest count it
    /// could carry), so the alerts it displaces are in its count too.
    fn report_dropped(&self, dropped: u64) -> Result<(), OutputError> {
        let encode = |n: u64| {
            payload::encode(&dropped_alert(&self.output, n, &self.hostname), self.format, &FieldSelection::default())
        };
        let room = self.spool.make_room(encode(u64::MAX).len() as u64).map_err(|e| self.spool_error(e))?;
        let dropped = dropped + room;
        self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
        tracing::error!(output = %self.label, dropped, spool_bytes = self.spool.bytes(), "webhook spool full: oldest alerts dropped (output.webhook.spool_max_bytes)");
        let again = self.spool.append([encode(dropped).as_slice()]).map_err(|e| self.spool_error(e))?;
        if again > 0 {
            // Only a bound smaller than a report gets here.
            self.stats.dropped.fetch_add(again, Ordering::Relaxed);
            tracing::error!(output = %self.label, dropped = again, "webhook spool too small for its own drop report: more alerts dropped, counted in metrics only");
        }
        self.stats.spooled.fetch_add(1, Ordering::Relaxed);
        Ok(())
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
        output: format!("webhook output {output}: spool full, the {dropped} oldest alerts were dropped undelivered"),
        source: "vigil".into(),
        hostname: hostname.into(),
        tags: vec!["vigil".into(), "alerts-dropped".into()],
        output_fields: fields,
    }
}

impl Output for WebhookOutput {
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
            records.push(if shared {
                Cow::Borrowed(line)
            } else {
                Cow::Owned(payload::encode(a, self.format, &self.fields))
            });
        }
        let filtered = batch.alerts.len() - records.len();
        if filtered > 0 {
            self.stats.filtered.fetch_add(filtered as u64, Ordering::Relaxed);
        }
        if records.is_empty() {
            return Ok(());
        }
        let dropped = self.spool.append(records.iter().map(|r| &**r)).map_err(|e| self.spool_error(e))?;
        self.stats.spooled.fetch_add(records.len() as u64, Ordering::Relaxed);
        if dropped > 0 {
            self.report_dropped(dropped)?;
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
            tracing::error!(output = %self.label, error = %e, "webhook delivery task failed");
        }
        if let Err(e) = self.spool.sync() {
            tracing::warn!(output = %self.label, error = %e, "cannot sync the spool");
        }
        let left = self.spool.len();
        if left > 0 {
            tracing::warn!(output = %self.label, alerts = left, "webhook output stopped with alerts in its spool; they are delivered at the next start");
        } else {
            tracing::info!(output = %self.label, sent = self.stats.sent.load(Ordering::Relaxed), "webhook output stopped; everything delivered");
        }
    }
}

impl Drop for WebhookOutput {
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
    fn dropped_alert_says_how_many() {
        let a = dropped_alert("siem", 42, "h");
        assert_eq!(a.rule, DROPPED_RULE);
        assert_eq!(a.output_fields["vigil.dropped"], 42);
        assert_eq!(a.priority, Priority::Critical);
    }
}
