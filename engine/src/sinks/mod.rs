//! Where alerts go. Every sink gets the same alerts, already encoded once as
//! JSON lines ([`AlertBatch`]); a failing sink is logged and counted and
//! never stops the others or the pipeline.
//!
//! - [`alert`]: the output alert and how it is built from a rule's alert;
//! - [`stdout`]: JSON lines on stdout;
//! - [`file`]: JSON lines appended to a file, with fsync policy and rotation.

pub mod alert;
pub mod file;
pub mod stdout;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use alert::Alert;

/// Errors of the sink layer.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{sink}: {source}")]
    Io {
        sink: String,
        #[source]
        source: std::io::Error,
    },
}

/// Alerts, with their JSON-lines encoding made once for every sink.
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
}

/// A destination for alerts.
pub trait Sink: Send {
    /// For logs and figures.
    fn name(&self) -> &str;
    /// Delivers a batch.
    fn write(&mut self, batch: &AlertBatch) -> Result<(), SinkError>;
    /// Called when no alerts are pending and at shutdown.
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Per-sink figures.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub alerts: AtomicU64,
    pub failures: AtomicU64,
}

/// Delivers every batch from `rx` to every sink until `rx` closes, then flushes.
pub fn run_sinks(
    mut sinks: Vec<Box<dyn Sink>>,
    rx: crossbeam_channel::Receiver<Vec<Alert>>,
) -> Vec<(String, Arc<SinkStats>)> {
    let stats: Vec<Arc<SinkStats>> = sinks.iter().map(|_| Arc::new(SinkStats::default())).collect();
    while let Ok(alerts) = rx.recv() {
        let batch = AlertBatch::encode(alerts);
        for (sink, st) in sinks.iter_mut().zip(&stats) {
            match sink.write(&batch) {
                Ok(()) => {
                    st.alerts.fetch_add(batch.alerts.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    st.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(sink = sink.name(), error = %e, alerts = batch.alerts.len(), "sink failed to write alerts");
                }
            }
        }
        if rx.is_empty() {
            for sink in sinks.iter_mut() {
                if let Err(e) = sink.flush() {
                    tracing::error!(sink = sink.name(), error = %e, "sink failed to flush");
                }
            }
        }
    }
    for sink in sinks.iter_mut() {
        if let Err(e) = sink.flush() {
            tracing::error!(sink = sink.name(), error = %e, "sink failed to flush");
        }
    }
    sinks.iter().map(|s| s.name().to_string()).zip(stats).collect()
}
