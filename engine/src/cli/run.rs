//! `vigil run`: the daemon, until a signal.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use vigil_engine::daemon::{Daemon, DaemonError};

use super::SourceArgs;

/// The daemon: rules from the directory (watched, SIGHUP reloads), until a signal.
pub fn run(rules: Option<PathBuf>, source: &SourceArgs, config: Option<PathBuf>) -> Result<ExitCode> {
    let mut cfg = super::start(config.as_deref())?;
    source.apply(&mut cfg);
    let rules_dir = rules.or_else(|| cfg.rules.dir.clone()).ok_or(DaemonError::NoRuleDir)?;
    drive(Daemon::new(cfg).rules(rules_dir, true).config_path(config), true)
}

/// Runs `daemon` with the signals wired; exits 1 if the source failed.
pub(super) fn drive(daemon: Daemon, reloads: bool) -> Result<ExitCode> {
    super::handle_signals(daemon.stop_handle(), reloads.then(|| daemon.reload_handle()))?;
    let summary = daemon.run()?;
    summary.log();
    Ok(match summary.source_error {
        Some(e) => {
            eprintln!("vigil: error: {}", vigil_engine::error_chain(&e));
            ExitCode::from(1)
        }
        None => ExitCode::SUCCESS,
    })
}
