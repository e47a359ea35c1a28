//! `vigil replay`: rules over a recorded file, alerts out, then exit.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use vigil_engine::config::{Config, SourceKind};
use vigil_engine::daemon::Daemon;

/// Rules over a recorded file, then exit.
pub fn replay(file: PathBuf, rules: PathBuf, config: Option<PathBuf>, realtime: bool) -> Result<ExitCode> {
    let mut cfg: Config = super::start(config.as_deref())?;
    cfg.source.kind = SourceKind::Replay;
    cfg.source.replay = Some(file);
    cfg.source.realtime = realtime;
    super::run::drive(Daemon::new(cfg).rules(rules, false), false)
}
