//! Alerts to stdout, one JSON document per line. The only place the engine
//! writes to stdout.

use std::io::Write;

use super::fields::FieldSelection;
use super::{AlertBatch, Sink, SinkError};

pub struct StdoutSink {
    out: std::io::Stdout,
    fields: FieldSelection,
}

impl StdoutSink {
    pub fn new(fields: FieldSelection) -> Self {
        StdoutSink { out: std::io::stdout(), fields }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new(FieldSelection::default())
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> &str {
        "stdout"
    }

    fn write(&mut self, batch: &AlertBatch) -> Result<(), SinkError> {
        let lines = batch.lines(&self.fields);
        let mut out = self.out.lock();
        out.write_all(&lines)
            .and_then(|()| out.flush())
            .map_err(|source| SinkError::Io { sink: "stdout".into(), source })
    }
}
