//! One webhook's delivery task: reads batches from the spool, posts them
//! (batched or one alert per request, gzip, signed), and removes them only
//! once the receiver acknowledged them; retries with backoff, honouring
//! `Retry-After`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use tokio::sync::{Notify, watch};

use super::payload::Signer;
use super::spool::{Record, Spool};
use crate::config::{RequestMode, WebhookConfig};

/// The longest `Retry-After` honoured; a receiver asking for more is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

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

/// The HTTP client of one webhook: its timeout, headers, CA and client certificate.
pub(super) fn http_client(cfg: &WebhookConfig) -> Result<reqwest::Client, String> {
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
pub(super) struct Delivery {
    pub(super) label: String,
    pub(super) url: String,
    pub(super) mode: RequestMode,
    pub(super) max_alerts: usize,
    pub(super) max_bytes: u64,
    pub(super) max_delay: Duration,
    pub(super) gzip: bool,
    pub(super) backoff: ExponentialBuilder,
    pub(super) client: reqwest::Client,
    pub(super) signer: Option<Signer>,
    pub(super) spool: Arc<Spool>,
    pub(super) stats: Arc<WebhookStats>,
    pub(super) wake: Arc<Notify>,
    /// `Some(deadline)` once the daemon is stopping.
    pub(super) closing: watch::Receiver<Option<Instant>>,
}

impl Delivery {
    fn deadline(&self) -> Option<Instant> {
        *self.closing.borrow()
    }

    pub(super) async fn run(mut self) {
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
        let mut body = super::payload::body(records.iter().map(|r| r.bytes.as_slice()), self.mode);
        let mut req = self.client.post(&self.url).header("x-vigil-alerts", records.len());
        if self.gzip {
            body = super::payload::gzip(&body);
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        if let Some(s) = &self.signer {
            req = req.header(super::payload::SIGNATURE_HEADER, s.sign(&body));
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            // Without the URL: its query string and userinfo may hold secrets.
            Err(e) => return Outcome::Retry { why: crate::error_chain(&e.without_url()), after: None },
        };
        let status = resp.status();
        if status.is_success() {
            return Outcome::Delivered;
        }
        let after = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let text = resp.text().await.unwrap_or_default();
        // The receiver's text, cut and escaped: it goes into the daemon's log.
        let body: String = crate::escape_controls(&text.chars().take(512).collect::<String>()).into_owned();
        if status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
        {
            Outcome::Retry { why: format!("HTTP {status}: {body}"), after }
        } else {
            Outcome::Rejected { status, body }
        }
    }
}

/// Returns when the daemon starts stopping (never, if the output is gone: the
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

/// The URL without its credentials or query, for logs.
pub(super) fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "<invalid>".into(),
    }
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
}
