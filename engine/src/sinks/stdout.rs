//! Alerts to stdout, one JSON document per line. The only place the engine
//! writes to stdout.

use std::io::Write;

use super::{AlertBatch, Sink, SinkError};

pub struct StdoutSink {
    out: std::io::Stdout,
}

impl StdoutSink {
    pub fn new() -> Self {
        StdoutSink { out: std::io::stdout() }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> &str {
        "stdout"
    }

    fn write(&mut self, batch: &AlertBatch) -> Result<(), SinkError> {
        let mut out = self.out.lock();
        out.write_all(&batch.json_lines)
            .and_then(|()| out.flush())
            .map_err(|source| SinkError::Io { sink: "stdout".into(), source })
    }
}
