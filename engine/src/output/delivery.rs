//! The delivery task of a spooled output (a webhook, a NATS JetStream
//! stream): reads batches from the spool, hands them to its [`Transport`],
//! and removes them only once the receiver acknowledged them; retries with
//! exponential backoff and jitter (or after the delay the receiver asked
//! for), for as long as it takes.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::sync::{Notify, watch};

use super::spool::{Record, Spool};

/// The longest retry delay a receiver may ask for; one asking for more is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// One spooled output's figures.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Alerts written to the spool.
    pub spooled: AtomicU64,
    /// Alerts the receiver acknowledged.
    pub sent: AtomicU64,
    /// Attempts: requests, or publish rounds.
    pub requests: AtomicU64,
    /// Failed attempts that will be retried.
    pub retries: AtomicU64,
    /// Alerts rejected for good (a webhook's 4xx other than 408/429).
    pub failed: AtomicU64,
    /// Alerts dropped from a full spool.
    pub dropped: AtomicU64,
    /// Alerts below `min_priority`, not sent.
    pub filtered: AtomicU64,
    /// Whether the last attempt succeeded.
    pub up: AtomicBool,
}

/// How one attempt to deliver a batch ended.
pub enum Outcome {
    Delivered,
    /// Worth retrying; after this long if the receiver said so.
    Retry {
        why: String,
        after: Option<Duration>,
    },
    /// Rejected for good: counted as failed, logged, not retried.
    Rejected(String),
}

/// How a spooled output's alerts leave the host.
pub trait Transport: Send + Sync + 'static {
    /// Delivers `records` (encoded alerts, oldest first) and says how it went:
    /// [`Outcome::Delivered`] only once the receiver has them all.
    fn send(&self, records: &[Record]) -> impl Future<Output = Outcome> + Send;
}

/// The delivery task of one output.
pub struct Delivery<T> {
    pub label: String,
    pub max_alerts: usize,
    pub max_bytes: u64,
    pub max_delay: Duration,
    pub backoff: ExponentialBuilder,
    pub transport: T,
    pub spool: Arc<Spool>,
    pub stats: Arc<DeliveryStats>,
    pub wake: Arc<Notify>,
    /// `Some(deadline)` once the daemon is stopping.
    pub closing: watch::Receiver<Option<Instant>>,
}

impl<T: Transport> Delivery<T> {
    fn deadline(&self) -> Option<Instant> {
        *self.closing.borrow()
    }

    pub async fn run(mut self) {
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
            let (max_alerts, max_bytes) = (self.max_alerts, self.max_bytes);
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
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            match self.transport.send(&records).await {
                Outcome::Delivered => {
                    self.stats.sent.fetch_add(records.len() as u64, Ordering::Relaxed);
                    self.stats.up.store(true, Ordering::Relaxed);
                    if let Some((since, attempts)) = failing.take() {
                        tracing::info!(output = %self.label, failed_attempts = attempts, outage_s = since.elapsed().as_secs_f64(), spooled = self.spool.len(), "output delivering again");
                    }
                    backoff = self.backoff.build();
                    self.remove_through(last).await;
                }
                Outcome::Rejected(why) => {
                    self.stats.failed.fetch_add(records.len() as u64, Ordering::Relaxed);
                    self.stats.up.store(true, Ordering::Relaxed);
                    tracing::error!(output = %self.label, error = %why, alerts = records.len(), "the receiver rejected alerts for good; not retrying them");
                    self.remove_through(last).await;
                }
                Outcome::Retry { why, after } => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    self.stats.up.store(false, Ordering::Relaxed);
                    let delay =
                        after.map(|d| d.min(MAX_RETRY_AFTER)).or_else(|| backoff.next()).unwrap_or(MAX_RETRY_AFTER);
                    match &mut failing {
                        None => {
                            tracing::warn!(output = %self.label, error = %why, retry_in_ms = delay.as_millis() as u64, spooled = self.spool.len(), "delivery failed; alerts stay spooled and are retried");
                            failing = Some((Instant::now(), 1));
                        }
                        Some((_, n)) => {
                            *n += 1;
                            tracing::debug!(output = %self.label, error = %why, attempt = *n, retry_in_ms = delay.as_millis() as u64, "delivery failed again");
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
}

/// Returns when the daemon starts stopping (never, if the output is gone: the
/// task is aborted then).
async fn closing_changed(closing: &mut watch::Receiver<Option<Instant>>) {
    if closing.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}
