//! What every watcher shares: the [`Watcher`] trait, its own thread and
//! tokio runtime, reconnecting with backoff (logged once per outage, the
//! daemon keeps running), whether it is connected (for metrics and the hold
//! queue), and the lifecycle events it sends to rules.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use vigil_event::{Event, EventKind, Runtime};

use crate::enrich::containers::{ContainerCache, Known};
use crate::sources::{EventSender, Stop};

/// A container as listed: its description, its pod, and its state
/// (`running`, `exited`...).
pub type Listed = (vigil_event::Container, Option<vigil_event::Pod>, String);

/// One runtime's API, as a watcher sees it.
#[allow(async_fn_in_trait)] // run on the watcher's own current-thread runtime: no Send bound needed
pub trait Watcher: Send + 'static {
    /// The runtime expected at the endpoint (named in logs until it answers).
    fn runtime(&self) -> Runtime;
    /// The socket it talks to.
    fn endpoint(&self) -> &Path;
    /// Lists every container once (for `vigil containers`).
    async fn list(&self) -> Result<Vec<Listed>, WatchError>;
    /// Connects, lists every container into `watch.cache`, then follows
    /// the runtime's events until the stop (Ok) or an error (the caller
    /// reconnects with backoff).
    async fn follow(&mut self, watch: &mut WatchContext) -> Result<(), WatchError>;
}

/// A boxed error from a runtime's client.
pub type WatchError = Box<dyn std::error::Error + Send + Sync>;

/// A watcher's view of its runtime, shared with metrics.
#[derive(Debug)]
pub struct RuntimeStatus {
    pub endpoint: PathBuf,
    /// The runtime that answered last (the expected one until then).
    runtime: AtomicU8,
    up: AtomicBool,
}

impl RuntimeStatus {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn runtime(&self) -> Runtime {
        Runtime::from_index(self.runtime.load(Ordering::Relaxed))
    }
}

/// Where a watcher sends container lifecycle events (none in `vigil
/// containers` and tests that only want the cache).
pub struct Lifecycle {
    out: Option<EventSender>,
}

impl Lifecycle {
    pub fn new(out: Option<EventSender>) -> Self {
        Lifecycle { out }
    }

    /// Sends a lifecycle event of `kind` for `known`, at `time_ns` (0: now).
    /// A full pipeline drops it and reports the loss, as live sources do.
    pub fn send(&mut self, kind: EventKind, known: &Known, exit_code: Option<i32>, time_ns: u64) {
        self.send_with(kind, known, time_ns, |e| e.exit_code = exit_code);
    }

    /// [`Self::send`], with what `fill` adds to the event.
    pub fn send_with(&mut self, kind: EventKind, known: &Known, time_ns: u64, fill: impl FnOnce(&mut Event)) {
        let Some(out) = &mut self.out else { return };
        let mut e = Event::new(kind);
        e.time_ns = if time_ns == 0 { crate::time::now_ns() } else { time_ns };
        known.apply(&mut e);
        fill(&mut e);
        let _ = out.send_or_drop(vec![e]);
    }
}

/// What a watcher is handed.
pub struct WatchContext {
    pub cache: Arc<ContainerCache>,
    pub lifecycle: Lifecycle,
    pub stop: Stop,
    pub status: Arc<RuntimeStatus>,
    /// Where to resume following events after a reconnect (wall-clock ns of
    /// the first subscription, then of each event handled); `None` before it.
    pub resume_ns: Option<u64>,
    /// The newest event handled (ns), to skip those replayed again.
    pub last_event_ns: u64,
    down_since: Option<Instant>,
}

impl WatchContext {
    /// The connection is up, to `runtime`, and the cache holds `containers` of it.
    pub fn connected(&mut self, runtime: Runtime, containers: usize) {
        let s = &self.status;
        let before = s.runtime();
        if before != runtime {
            self.cache.set_connected(before, false);
            s.runtime.store(runtime as u8, Ordering::Relaxed);
        }
        s.up.store(true, Ordering::Relaxed);
        self.cache.set_connected(runtime, true);
        match self.down_since.take() {
            Some(since) => tracing::info!(
                runtime = runtime.name(), endpoint = %s.endpoint.display(), containers,
                down_s = since.elapsed().as_secs_f64(), "runtime reconnected; containers re-listed"
            ),
            None => {
                tracing::info!(runtime = runtime.name(), endpoint = %s.endpoint.display(), containers, "watching runtime")
            }
        }
    }

    /// The connection failed or broke; true when this starts a new outage.
    fn failed(&mut self, e: &WatchError) -> bool {
        let s = &self.status;
        s.up.store(false, Ordering::Relaxed);
        self.cache.set_connected(s.runtime(), false);
        if self.down_since.is_some() {
            return false;
        }
        tracing::warn!(
            runtime = s.runtime().name(), endpoint = %s.endpoint.display(), error = %crate::error_chain(&**e),
            "container runtime unavailable; retrying in the background"
        );
        self.down_since = Some(Instant::now());
        true
    }

    /// Sleeps up to `delay`, waking early on stop.
    pub async fn pause(&self, delay: Duration) {
        let until = Instant::now() + delay;
        while Instant::now() < until && !self.stop.is_stopped() {
            tokio::time::sleep(Duration::from_millis(50).min(until - Instant::now())).await;
        }
    }
}

/// Starts `watcher` on its own thread: it connects, lists, and follows
/// events until the stop (Ok) or an error (retried with backoff, 200 ms
/// growing to 2 s, reset for each new outage).
pub fn spawn<W: Watcher>(
    mut watcher: W,
    cache: Arc<ContainerCache>,
    lifecycle: Lifecycle,
    stop: Stop,
) -> std::io::Result<(std::thread::JoinHandle<()>, Arc<RuntimeStatus>)> {
    let runtime = watcher.runtime();
    let status = Arc::new(RuntimeStatus {
        endpoint: watcher.endpoint().to_path_buf(),
        runtime: AtomicU8::new(runtime as u8),
        up: AtomicBool::new(false),
    });
    let mut watch = WatchContext {
        cache,
        lifecycle,
        stop,
        status: status.clone(),
        resume_ns: None,
        last_event_ns: 0,
        down_since: None,
    };
    let thread = std::thread::Builder::new().name(format!("vigil-{}", runtime.name())).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(runtime = runtime.name(), error = %e, "cannot start the runtime watcher");
                return;
            }
        };
        rt.block_on(reconnecting(&mut watch, &mut watcher));
        watch.cache.set_connected(watch.status.runtime(), false);
    })?;
    Ok((thread, status))
}

async fn reconnecting<W: Watcher>(watch: &mut WatchContext, watcher: &mut W) {
    let from_start = || {
        ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(2))
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut backoff = from_start();
    while !watch.stop.is_stopped() {
        match watcher.follow(watch).await {
            Ok(()) => return,
            Err(e) => {
                if watch.failed(&e) {
                    backoff = from_start();
                }
                watch.pause(backoff.next().unwrap_or(Duration::from_secs(2))).await;
            }
        }
    }
}
