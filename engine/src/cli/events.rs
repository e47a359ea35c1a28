//! `vigil events`: the events rules see, printed, from the daemon's own
//! source, enrichment and watchers.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use vigil_engine::daemon::Daemon;
use vigil_engine::event::{Event, EventKind, KindSet};

use super::SourceArgs;

/// Prints events as JSON lines.
pub fn events(
    source: &SourceArgs,
    limit: Option<u64>,
    kinds: &[EventKind],
    config: Option<PathBuf>,
) -> Result<ExitCode> {
    let mut cfg = super::start(config.as_deref())?;
    source.apply(&mut cfg);
    let mut out = std::io::stdout().lock();
    stream(Daemon::new(cfg), kinds, limit, None, |e| {
        serde_json::to_writer(&mut out, e)?;
        out.write_all(b"\n")?;
        Ok(())
    })
}

/// Hands `f` each event (numbered from 1) until `limit` events, `duration`,
/// a signal or the end of the source; exits 1 if the source failed.
pub(super) fn stream(
    daemon: Daemon,
    kinds: &[EventKind],
    limit: Option<u64>,
    duration: Option<Duration>,
    mut f: impl FnMut(&Event) -> Result<()>,
) -> Result<ExitCode> {
    let stop = daemon.stop_handle();
    super::handle_signals(stop.clone(), None)?;
    if let Some(d) = duration {
        // The stream wakes up to see the stop even when no event comes.
        std::thread::spawn(move || {
            std::thread::sleep(d);
            stop.stop();
        });
    }
    let start = Instant::now();
    let mut n = 0u64;
    let mut failed = None;
    let wanted: KindSet = kinds.iter().copied().collect();
    let source_error = daemon.stream(wanted, |batch| {
        for mut e in batch {
            n += 1;
            e.id = n;
            if let Err(err) = f(&e) {
                failed = Some(err);
                return ControlFlow::Break(());
            }
            if limit.is_some_and(|l| n >= l) || duration.is_some_and(|d| start.elapsed() >= d) {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(match source_error {
        Some(e) => {
            eprintln!("vigil: error: {}", vigil_engine::error_chain(&e));
            ExitCode::from(1)
        }
        None => ExitCode::SUCCESS,
    })
}

/// An event kind by its name, for `--kind`.
pub fn parse_kind(name: &str) -> Result<EventKind, String> {
    EventKind::from_name(name).ok_or_else(|| {
        let all: Vec<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
        format!("unknown event kind {name:?}; one of: {}", all.join(", "))
    })
}
