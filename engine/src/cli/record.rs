//! `vigil record`: the events rules see, written to a replay file (their
//! container context included, so a replay gives rules the same).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use vigil_engine::daemon::Daemon;
use vigil_engine::sources::replay::ReplayWriter;

use super::SourceArgs;

/// Records events to a replay file.
pub fn record(
    file: &Path,
    source: &SourceArgs,
    limit: Option<u64>,
    duration: Option<Duration>,
    config: Option<PathBuf>,
) -> Result<ExitCode> {
    let mut cfg = super::start(config.as_deref())?;
    source.apply(&mut cfg);
    let mut writer = ReplayWriter::create(file).with_context(|| format!("cannot create {}", file.display()))?;
    let mut n = 0u64;
    let code = super::events::stream(Daemon::new(cfg), &[], limit, duration, |e| {
        n += 1;
        Ok(writer.write(e)?)
    })?;
    writer.finish()?;
    tracing::info!(events = n, file = %file.display(), "recorded");
    Ok(code)
}
