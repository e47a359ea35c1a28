//! Webhook outputs: alerts POSTed as JSON, delivered at least once.
//!
//! The sink thread only encodes alerts and appends them to the output's
//! durable [`spool`](spool::Spool); a delivery task on the outputs runtime
//! reads the oldest alerts, sends them (batched, gzipped, signed), and
//! removes them once the receiver answers 2xx. Connection errors, timeouts,
//! 408, 429 (honouring `Retry-After`) and 5xx are retried with exponential
//! backoff and jitter, for as long as it takes; other 4xx answers are
//! permanent: logged with the response body, counted, and not retried. A
//! slow or dead receiver fills its own spool and nothing else: the rules
//! and the other outputs go on.

pub mod payload;
pub mod spool;

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use tokio::sync::{Notify, watch};

use super::alert::{Alert, Priority, rfc3339_nanos};
use super::fields::FieldSelection;
use super::{AlertBatch, Sink, SinkError};
use crate::config::{PayloadFormat, RequestMode, WebhookConfig};
use payload::Signer;
use spool::{Record, Spool};

/// The longest `Retry-After` honoured; a receiver asking for more is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The rule name of the alert reporting alerts dropped from a full spool.
pub const DROPPED_RULE: &str = "vigil-alerts-dropped";

/// One webhook's figures.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Alerts written to the spool.
    pub spooled: AtomicU64,
    /// Alerts the receiver acknowledged.
    pub sent: AtomicU64,
    pub requests: AtomicU64,
    /// Failed attempts that will be retried.
    pub retries: AtomicU64,
    /// Alerts rejected for good (a 4xx other than 408/429).
    pub failed: AtomicU64,
    /// Alerts dropped from a full spool.
    pub dropped: AtomicU64,
    /// Alerts below `min_priority`, not sent.
    pub filtered: AtomicU64,
    /// Whether the last attempt succeeded.
    pub up: AtomicBool,
}

/// A webhook output's handle, for metrics.
#[derive(Clone)]
pub struct WebhookHandle {
    pub name: String,
    pub stats: Arc<WebhookStats>,
    pub spool: Arc<Spool>,
}

pub struct WebhookSink {
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

impl WebhookSink {
    /// Opens the spool and starts delivering (alerts left from an earlier
    /// run go first). `runtime` runs the delivery task.
    pub fn open(
        cfg: &WebhookConfig,
        spool_dir: &Path,
        hostname: &str,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, SinkError> {
        let label = format!("webhook:{}", cfg.name);
        let setup = |message: String| SinkError::Setup { sink: label.clone(), message };
        std::fs::create_dir_all(spool_dir)
            .map_err(|e| setup(format!("cannot create spool directory {}: {e}", spool_dir.display())))?;
        let spool = Spool::open(&spool_dir.join(format!("{}.redb", cfg.name)), cfg.spool_max_bytes.as_u64())
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
        Ok(WebhookSink {
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

    fn spool_error(&self, e: spool::SpoolError) -> SinkError {
        SinkError::Setup { sink: self.label.clone(), message: e.to_string() }
    }

    /// Counts and reports alerts a full spool dropped, with an alert of its
    /// own. Room for that alert is made first (for the largest count it
    /// could carry), so the alerts it displaces are in its count too.
    fn report_dropped(&self, dropped: u64) -> Result<(), SinkError> {
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

impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.label
    }

    fn write(&mut self, batch: &AlertBatch) -> Result<(), SinkError> {
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

impl Drop for WebhookSink {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The URL without its credentials or query, for logs.
fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "<invalid>".into(),
    }
}

/// The HTTP client of one webhook: its timeout, headers, CA and client certificate.
fn http_client(cfg: &WebhookConfig) -> Result<reqwest::Client, String> {
    // reqwest is built without a default TLS provider: use ring's. Fails
    // harmlessly when already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (k, v) in &cfg.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k:?}: {e}"))?;
        let value = HeaderValue::from_str(v).map_err(|e| format!("header {k:?}: {e}"))?;
        headers.insert(name, value);
    }
    let mut b = reqwest::Client::builder()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
        .default_headers(headers)
        .pool_idle_timeout(Duration::from_secs(60));
    if let Some(ca) = &cfg.ca_cert {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read ca_cert {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("ca_cert {}: not PEM certificates: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("ca_cert {}: no certificate in it", ca.display()));
        }
        b = b.tls_certs_only(certs);
    }
    if let (Some(cert), Some(key)) = (&cfg.client_cert, &cfg.client_key) {
        let mut pem = std::fs::read(cert).map_err(|e| format!("cannot read client_cert {}: {e}", cert.display()))?;
        pem.push(b'\n');
        pem.extend(std::fs::read(key).map_err(|e| format!("cannot read client_key {}: {e}", key.display()))?);
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| format!("client_cert/client_key: {e}"))?;
        b = b.identity(id);
    }
    b.build().map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// How one request ended.
enum Outcome {
    Delivered,
    /// Worth retrying; after this long if the receiver said so.
    Retry {
        why: String,
        after: Option<Duration>,
    },
    /// Rejected for good.
    Rejected {
        status: StatusCode,
        body: String,
    },
}

/// The delivery task of one webhook.
struct Delivery {
    label: String,
    url: String,
    mode: RequestMode,
    max_alerts: usize,
    max_bytes: u64,
    max_delay: Duration,
    gzip: bool,
    backoff: ExponentialBuilder,
    client: reqwest::Client,
    signer: Option<Signer>,
    spool: Arc<Spool>,
    stats: Arc<WebhookStats>,
    wake: Arc<Notify>,
    /// `Some(deadline)` once the daemon is stopping.
    closing: watch::Receiver<Option<Instant>>,
}

impl Delivery {
    fn deadline(&self) -> Option<Instant> {
        *self.closing.borrow()
    }

    async fn run(mut self) {
        let mut backoff: ExponentialBackoff = self.backoff.build();
        // Since when, and how many attempts, the receiver has been failing.
        let mut failing: Option<(Instant, u64)> = None;
        loop {
            let deadline = self.deadline();
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if self.spool.is_empty() {
                if deadline.is_some() {
                    break;
                }
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = closing_changed(&mut self.closing) => {}
                }
                continue;
            }
            if deadline.is_none() && (self.spool.len() as usize) < self.max_alerts {
                self.gather().await;
            }
            let spool = self.spool.clone();
            let (max_alerts, max_bytes) =
                if self.mode == RequestMode::Single { (1, u64::MAX) } else { (self.max_alerts, self.max_bytes) };
            let records = match tokio::task::spawn_blocking(move || spool.peek(max_alerts, max_bytes)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::error!(output = %self.label, error = %e, "cannot read the spool; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => {
                    tracing::error!(output = %self.label, error = %e, "spool read panicked");
                    break;
                }
            };
            let Some(last) = records.last().map(|r| r.seq) else { continue };
            match self.send(&records).await {
                Outcome::Delivered => {
                    self.stats.sent.fetch_add(records.len() as u64, Ordering::Relaxed);
                    self.stats.up.store(true, Ordering::Relaxed);
                    if let Some((since, attempts)) = failing.take() {
                        tracing::info!(output = %self.label, failed_attempts = attempts, outage_s = since.elapsed().as_secs_f64(), spooled = self.spool.len(), "webhook delivering again");
                    }
                    backoff = self.backoff.build();
                    self.remove_through(last).await;
                }
                Outcome::Rejected { status, body } => {
                    self.stats.failed.fetch_add(records.len() as u64, Ordering::Relaxed);
                    self.stats.up.store(true, Ordering::Relaxed);
                    tracing::error!(output = %self.label, %status, response = %body, alerts = records.len(), "webhook rejected alerts; not retrying them (a 4xx other than 408/429 is permanent)");
                    self.remove_through(last).await;
                }
                Outcome::Retry { why, after } => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    self.stats.up.store(false, Ordering::Relaxed);
                    let delay =
                        after.map(|d| d.min(MAX_RETRY_AFTER)).or_else(|| backoff.next()).unwrap_or(MAX_RETRY_AFTER);
                    match &mut failing {
                        None => {
                            tracing::warn!(output = %self.label, error = %why, retry_in_ms = delay.as_millis() as u64, spooled = self.spool.len(), "webhook delivery failed; alerts stay spooled and are retried");
                            failing = Some((Instant::now(), 1));
                        }
                        Some((_, n)) => {
                            *n += 1;
                            tracing::debug!(output = %self.label, error = %why, attempt = *n, retry_in_ms = delay.as_millis() as u64, "webhook delivery failed again");
                        }
                    }
                    self.sleep_unless_stopping(delay).await;
                }
            }
        }
    }

    /// Lets a batch fill up: until `max_alerts` are spooled, `max_delay` has
    /// passed, or the daemon stops.
    async fn gather(&mut self) {
        let until = tokio::time::Instant::now() + self.max_delay;
        while (self.spool.len() as usize) < self.max_alerts && self.deadline().is_none() {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                _ = self.wake.notified() => {}
                _ = closing_changed(&mut self.closing) => return,
            }
        }
    }

    /// Waits `delay` (a retry delay: never cut short, the receiver may have
    /// asked for it), or until the drain deadline when stopping.
    async fn sleep_unless_stopping(&mut self, delay: Duration) {
        let until = tokio::time::Instant::now() + delay;
        loop {
            let until = match self.deadline() {
                Some(d) => until.min(tokio::time::Instant::from_std(d)),
                None => until,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                _ = closing_changed(&mut self.closing) => {}
            }
        }
    }

    async fn remove_through(&self, seq: u64) {
        let spool = self.spool.clone();
        match tokio::task::spawn_blocking(move || spool.remove_through(seq)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(output = %self.label, error = %e, "cannot remove delivered alerts from the spool; they will be sent again")
            }
            Err(e) => tracing::error!(output = %self.label, error = %e, "spool removal panicked"),
        }
    }

    async fn send(&self, records: &[Record]) -> Outcome {
        let mut body = payload::body(records.iter().map(|r| r.bytes.as_slice()), self.mode);
        let mut req = self.client.post(&self.url).header("x-vigil-alerts", records.len());
        if self.gzip {
            body = payload::gzip(&body);
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        if let Some(s) = &self.signer {
            req = req.header(payload::SIGNATURE_HEADER, s.sign(&body));
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Retry { why: crate::error_chain(&e), after: None },
        };
        let status = resp.status();
        if status.is_success() {
            return Outcome::Delivered;
        }
        let after = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let text = resp.text().await.unwrap_or_default();
        let body: String = text.chars().take(512).collect();
        if status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
        {
            Outcome::Retry { why: format!("HTTP {status}: {body}"), after }
        } else {
            Outcome::Rejected { status, body }
        }
    }
}

/// Returns when the daemon starts stopping (never, if the sink is gone: the
/// task is aborted then).
async fn closing_changed(closing: &mut watch::Receiver<Option<Instant>>) {
    if closing.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v.trim()).ok()?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn urls_in_logs_lose_their_secrets() {
        assert_eq!(redacted_url("https://u:pw@h.example/x?token=1"), "https://u@h.example/x");
    }

    #[test]
    fn dropped_alert_says_how_many() {
        let a = dropped_alert("siem", 42, "h");
        assert_eq!(a.rule, DROPPED_RULE);
        assert_eq!(a.output_fields["vigil.dropped"], 42);
        assert_eq!(a.priority, Priority::Critical);
    }
}
