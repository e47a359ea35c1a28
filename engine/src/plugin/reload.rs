//! The reloader: a thread that watches the rule directory and its overlays (notify), waits
//! for changes to settle, rescans, and sends the resulting swaps to the
//! dispatcher. Compilation happens here, never on the dispatch thread, so
//! events keep flowing while a new rule compiles.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use notify::{RecursiveMode, Watcher};

use super::PluginError;
use super::dispatch::Control;
use super::host::PluginHost;
use super::ruledir::RuleDir;
use crate::plugin::policy::RulePolicy;

/// Quiet time after the last change before rescanning: lets `cp` finish
/// and coalesces an editor's write-then-rename into one reload.
const SETTLE: Duration = Duration::from_millis(25);
/// Longest a stream of changes can postpone a rescan.
const MAX_SETTLE: Duration = Duration::from_millis(250);

/// Requests to the reloader.
pub enum Request {
    /// Rescan now (SIGHUP); with a new policy, reload every rule under it.
    Reload(Option<RulePolicy>),
}

pub struct Reloader {
    requests: Sender<Request>,
    stop: Sender<()>,
    thread: Option<JoinHandle<()>>,
    _watcher: notify::RecommendedWatcher,
}

impl Reloader {
    /// Starts watching `dir` (already scanned once by the caller).
    pub fn spawn(
        host: Arc<PluginHost>,
        mut dir: RuleDir,
        mut policy: RulePolicy,
        controls: Sender<Control>,
    ) -> Result<Reloader, PluginError> {
        let (fs_tx, fs_rx) = crossbeam_channel::unbounded::<()>();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if !matches!(ev.kind, notify::EventKind::Access(_)) => {
                let _ = fs_tx.send(());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "rule directory watch error"),
        })
        .map_err(|e| PluginError::Watch(dir.path().to_path_buf(), e))?;
        for layer in dir.layers() {
            watcher
                .watch(layer, RecursiveMode::NonRecursive)
                .map_err(|e| PluginError::Watch(layer.to_path_buf(), e))?;
        }

        let (req_tx, req_rx) = crossbeam_channel::unbounded::<Request>();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("vigil-reload".into())
            .spawn(move || {
                loop {
                    select! {
                        recv(fs_rx) -> msg => {
                            if msg.is_err() { break; }
                            settle(&fs_rx);
                            rescan(&host, &mut dir, &policy, &controls);
                        }
                        recv(req_rx) -> msg => match msg {
                            Ok(Request::Reload(new_policy)) => {
                                if let Some(p) = new_policy {
                                    policy = p;
                                    dir.forget();
                                }
                                tracing::info!("reloading rules");
                                rescan(&host, &mut dir, &policy, &controls);
                            }
                            Err(_) => break,
                        },
                        recv(stop_rx) -> _ => break,
                    }
                }
            })
            .map_err(|e| PluginError::Engine(wasmtime::Error::from(e)))?;
        Ok(Reloader { requests: req_tx, stop: stop_tx, thread: Some(thread), _watcher: watcher })
    }

    pub fn request(&self, r: Request) {
        let _ = self.requests.send(r);
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn settle(rx: &Receiver<()>) {
    let start = Instant::now();
    while rx.recv_timeout(SETTLE).is_ok() {
        if start.elapsed() > MAX_SETTLE {
            break;
        }
    }
}

fn rescan(host: &PluginHost, dir: &mut RuleDir, policy: &RulePolicy, controls: &Sender<Control>) {
    let started = Instant::now();
    match dir.scan(host, &|meta| policy.resolve(meta)) {
        Ok((changes, report)) => {
            let n = changes.len();
            if n > 0 && controls.send(Control::Batch(changes)).is_err() {
                return;
            }
            if n > 0 || !report.failed.is_empty() {
                tracing::info!(
                    loaded = ?report.loaded,
                    removed = report.removed.len(),
                    failed = report.failed.len(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "rule directory rescanned"
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot rescan rule directory"),
    }
}
