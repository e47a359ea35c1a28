//! What the benchmarks share.

use std::path::{Path, PathBuf};

use vigil_engine::output::{AlertBatch, Output, OutputError};

/// Where the built rules are (`target/rules`, or under `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Discards alerts (the benchmarks measure the engine, not an output).
pub struct NullOutput;

impl Output for NullOutput {
    fn name(&self) -> &str {
        "null"
    }
    fn write(&mut self, _: &AlertBatch) -> Result<(), OutputError> {
        Ok(())
    }
}
