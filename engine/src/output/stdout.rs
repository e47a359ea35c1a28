//! Alerts to stdout, one JSON document per line. The only place the engine
//! writes to stdout.

use std::io::Write;

use super::fields::FieldSelection;
use super::{AlertBatch, Output, OutputError};

pub struct StdoutOutput {
    out: std::io::Stdout,
    fields: FieldSelection,
}

impl StdoutOutput {
    pub fn new(fields: FieldSelection) -> Self {
        StdoutOutput { out: std::io::stdout(), fields }
    }
}

impl Default for StdoutOutput {
    fn default() -> Self {
        Self::new(FieldSelection::default())
    }
}

impl Output for StdoutOutput {
    fn name(&self) -> &str {
        "stdout"
    }

    fn write(&mut self, batch: &AlertBatch) -> Result<(), OutputError> {
        let lines = batch.lines(&self.fields);
        let mut out = self.out.lock();
        out.write_all(&lines)
            .and_then(|()| out.flush())
            .map_err(|source| OutputError::Io { output: "stdout".into(), source })
    }
}
