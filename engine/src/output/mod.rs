//! Where alerts go. Alerts from the rules are shaped once ([`shaping`]:
//! redaction, folding of identical alerts, rate limits), encoded once as
//! JSON lines ([`AlertBatch`]), then handed to every output; a failing
//! output is logged and counted and never stops the others or the pipeline.
//!
//! - [`alert`]: the output alert and how it is built from a rule's alert;
//! - [`stdout`]: JSON lines on stdout;
//! - [`file`]: JSON lines appended to a file, with fsync policy and rotation;
//! - [`spooled`]: outputs delivered at least once through a durable [`spool`], by a
//!   [`delivery`] task: [`webhook`] (HTTP POSTs) and [`nats`] (NATS JetStream);
//! - [`webhook`]: HTTP POSTs;
//! - [`fields`]: per-output selection of alert fields;
//! - [`queue`]: the queue from the dispatcher, bounded in batches and bytes.

pub mod delivery;
pub(crate) mod fields;
pub(crate) mod file;
pub mod nats;
pub mod queue;
pub(crate) mod shaping;
pub(crate) mod spool;
pub mod spooled;
pub(crate) mod stdout;
pub mod webhook;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::alert::Alert;
use fields::FieldSelection;

use crate::config::PayloadFormat;
use shaping::Shaper;

/// Makes ring the process's TLS provider (reqwest and async-nats are built on
/// rustls without one), unless one is installed already.
pub(crate) fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Errors of the output layer.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{output}: {source}")]
    Io {
        output: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{output}: {message}")]
    Setup { output: String, message: String },
}

/// Alerts, with their JSON-lines encoding made once for every output.
pub struct AlertBatch {
    pub alerts: Vec<Alert>,
    /// One JSON document per alert, each followed by `\n`.
    pub json_lines: Vec<u8>,
}

impl AlertBatch {
    pub fn encode(alerts: Vec<Alert>) -> Self {
        let mut json_lines = Vec::with_capacity(alerts.len() * 512);
        for a in &alerts {
            serde_json::to_writer(&mut json_lines, a).expect("alerts serialize");
            json_lines.push(b'\n');
        }
        AlertBatch { alerts, json_lines }
    }

    /// JSON lines with only the selected fields (the shared encoding when all are).
    pub fn lines(&self, fields: &FieldSelection) -> Cow<'_, [u8]> {
        if fields.is_all() {
            return Cow::Borrowed(&self.json_lines);
        }
        let mut out = Vec::with_capacity(self.json_lines.len());
        for a in &self.alerts {
            out.extend(webhook::payload::encode(a, PayloadFormat::Vigil, fields));
            out.push(b'\n');
        }
        Cow::Owned(out)
    }
}

/// A destination for alerts.
pub trait Output: Send {
    /// For logs and figures.
    fn name(&self) -> &str;
    /// Delivers a batch.
    fn write(&mut self, batch: &AlertBatch) -> Result<(), OutputError>;
    /// Called when no alerts are pending and at shutdown.
    fn flush(&mut self) -> Result<(), OutputError> {
        Ok(())
    }
    /// At shutdown, after the last flush: finish what is in flight, within
    /// the output's own time bound.
    fn close(&mut self) {}
}

/// How much lower than the pipeline's threads the outputs runtime's threads
/// run (`nice`): under a CPU-bound load the rules keep the CPU and
/// deliveries catch up from the spool when there is room.
pub const OUTPUTS_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority by [`OUTPUTS_NICE`].
pub fn lower_thread_priority() {
    // SAFETY: setpriority has no memory preconditions; who = 0 is the
    // calling thread on Linux.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, OUTPUTS_NICE) };
}

/// The runtime for webhook deliveries and the metrics endpoint: one worker,
/// off the pipeline's threads, at a lower CPU priority ([`OUTPUTS_NICE`]).
pub fn outputs_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("vigil-out")
        .on_thread_start(lower_thread_priority)
        .enable_all()
        .build()
}

/// Per-output figures.
#[derive(Debug, Default)]
pub struct OutputStats {
    pub alerts: AtomicU64,
    pub failures: AtomicU64,
}

/// How often shaping windows are checked when no alerts come.
const TICK: Duration = Duration::from_millis(500);

/// Most alerts joined into one batch (alert lists are joined so that a
/// spool commits, and a file syncs, once for many).
const MAX_JOINED: usize = 8192;

/// How long the first alert of a batch waits for others. A spool commit
/// rewrites a B-tree path and the file syncs: once per dispatch chunk (a few
/// alerts) cost the pipeline ~20% on a 2-core host (BENCHMARKS.md).
const LINGER: Duration = Duration::from_millis(20);

/// The outputs and the shaping in front of them; runs on the output thread.
pub struct Outputs {
    outputs: Vec<Box<dyn Output>>,
    stats: Vec<Arc<OutputStats>>,
    shaper: Shaper,
}

impl Outputs {
    pub fn new(outputs: Vec<Box<dyn Output>>, shaper: Shaper) -> Self {
        let stats = outputs.iter().map(|_| Arc::new(OutputStats::default())).collect();
        Outputs { outputs, stats, shaper }
    }

    /// Each output's name and figures.
    pub fn stats(&self) -> Vec<(String, Arc<OutputStats>)> {
        self.outputs.iter().map(|s| s.name().to_string()).zip(self.stats.iter().cloned()).collect()
    }

    pub fn shaping_stats(&self) -> Arc<shaping::ShapingStats> {
        self.shaper.stats()
    }

    fn deliver(&mut self, alerts: Vec<Alert>) {
        if alerts.is_empty() {
            return;
        }
        let batch = AlertBatch::encode(alerts);
        for (output, st) in self.outputs.iter_mut().zip(&self.stats) {
            match output.write(&batch) {
                Ok(()) => {
                    st.alerts.fetch_add(batch.alerts.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    st.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(output = output.name(), error = %e, alerts = batch.alerts.len(), "output failed to write alerts");
                }
            }
        }
    }

    fn flush(&mut self) {
        for output in self.outputs.iter_mut() {
            if let Err(e) = output.flush() {
                tracing::error!(output = output.name(), error = %e, "output failed to flush");
            }
        }
    }

    /// Shapes and delivers every list of alerts from `rx` until it closes,
    /// then reports what shaping still held, flushes and closes every output.
    pub fn run(mut self, rx: queue::AlertReceiver) -> Vec<(String, Arc<OutputStats>)> {
        loop {
            match rx.recv_timeout(TICK) {
                Ok(mut alerts) => {
                    // Group commit: what comes within LINGER goes out together.
                    let until = Instant::now() + LINGER;
                    while alerts.len() < MAX_JOINED {
                        let left = until.saturating_duration_since(Instant::now());
                        match rx.recv_timeout(left) {
                            Ok(more) => alerts.extend(more),
                            Err(_) => break,
                        }
                    }
                    let shaped = self.shaper.shape(alerts, Instant::now());
                    self.deliver(shaped);
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
            let due = self.shaper.tick(Instant::now());
            self.deliver(due);
            if rx.is_empty() {
                self.flush();
            }
        }
        let last = self.shaper.finish();
        self.deliver(last);
        self.flush();
        for output in self.outputs.iter_mut() {
            output.close();
        }
        self.stats()
    }
}
