//! Wires the stages together and runs them:
//!
//! ```text
//! source thread ──(bounded: batches of events)──▶ dispatch thread ──(bounded: alert batches and bytes)──▶ output thread
//!                                                 ▲    ▲
//! runtime watchers ──(bounded: lifecycle events)──┘    │
//!                         reloader thread ──(rule swaps)┘
//! ```
//!
//! A source that says so ([`Source::dispatches_inline`]: the eBPF source)
//! runs the rules on its own thread instead: each batch is dispatched where
//! it was decoded, with no hand-over and no second wake-up. The dispatcher
//! then sits behind a mutex that the pipeline's thread also takes for rule
//! swaps and lifecycle events (rare; the lock is otherwise uncontended).
//!
//! Shutdown is a drain: the source stops, the dispatcher handles what is
//! queued, the outputs write and flush what they got, then figures are logged.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, select};
use vigil_event::Event;

use crate::alert::{Alert, AlertBuilder};
use crate::config::Config;
use crate::metrics::Telemetry;
use crate::output::queue::{AlertSender, alert_queue};
use crate::output::shaping::Shaper;
use crate::output::{self, Output, OutputStats, Outputs};
use crate::plugin::PluginError;
use crate::plugin::dispatch::{Control, DispatchStats, Dispatcher};
use crate::plugin::host::PluginHost;
use crate::plugin::policy::RulePolicy;
use crate::plugin::reload::{Reloader, Request};
use crate::plugin::rule::RuleStats;
use crate::plugin::ruledir::RuleDir;
use crate::sources::{Closed, Consumer, EventSender, Interest, Source, SourceError, Stop};

/// Errors that stop the pipeline from starting or finishing cleanly.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Output(#[from] output::OutputError),
    #[error("no event source could start: {0}")]
    NoSource(String),
    #[error("cannot start thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the {0} thread panicked (a bug in Vigil); see the log above")]
    Panicked(&'static str),
}

/// A running source: join it for its outcome.
pub type SourceThread = JoinHandle<Result<(), SourceError>>;

/// A source started on its own thread.
pub struct RunningSource {
    /// Its batches of events.
    pub events: Receiver<Vec<Event>>,
    /// Where to hand batches back once done with them, to be freed on the
    /// source's thread (optional: a batch dropped elsewhere is fine too).
    pub spent: Sender<Vec<Event>>,
    pub thread: SourceThread,
}

/// Starts `source` on its own thread, sending into a bounded channel.
pub fn spawn_source(
    source: Box<dyn Source>,
    capacity: usize,
    stop: Stop,
    interest: Interest,
) -> Result<RunningSource, PipelineError> {
    start_source(source, capacity, None, stop, interest)
}

/// Starts `source` on its own thread, which hands each batch to `consumer`
/// itself and asks the kernel for `priority` (nice value and time slice,
/// see [`crate::sched`]). Returns once they are set. `events` carries no batch: it closes when the source has finished.
pub fn spawn_source_inline(
    source: Box<dyn Source>,
    consumer: Consumer,
    priority: crate::sched::Priority,
    stop: Stop,
    interest: Interest,
) -> Result<RunningSource, PipelineError> {
    start_source(source, 1, Some((consumer, priority)), stop, interest)
}

fn start_source(
    source: Box<dyn Source>,
    capacity: usize,
    inline: Option<(Consumer, crate::sched::Priority)>,
    stop: Stop,
    interest: Interest,
) -> Result<RunningSource, PipelineError> {
    let (tx, events) = crossbeam_channel::bounded(capacity);
    let (spent, spent_rx) = crossbeam_channel::bounded(capacity);
    let (started_tx, started) = crossbeam_channel::bounded::<()>(1);
    let name = source.name();
    let mut builder = std::thread::Builder::new().name(format!("vigil-src-{name}"));
    if inline.is_some() {
        // The rules run here: room for their Wasm stack (max_wasm_stack,
        // 1 MiB) and the host's frames, like a main thread's.
        builder = builder.stack_size(RULES_THREAD_STACK);
    }
    let thread = builder
        .spawn(move || {
            // Inline, `tx` only says, by closing, that the source is done.
            let (out, _open) = match inline {
                Some((consumer, priority)) => {
                    crate::sched::use_priority("dispatch", priority);
                    (EventSender::direct(consumer, name), Some(tx))
                }
                None => (EventSender::new(tx, name).with_spent(spent_rx), None),
            };
            drop(started_tx);
            let r = source.run(out, stop, interest);
            if let Err(e) = &r {
                tracing::error!(source = name, error = %e, "source stopped with an error");
            }
            r
        })
        .map_err(PipelineError::Thread)?;
    let _ = started.recv();
    Ok(RunningSource { events, spent, thread })
}

/// Stack of a thread that runs rules other than the main thread.
const RULES_THREAD_STACK: usize = 8 << 20;

/// The dispatcher and the way to the outputs.
struct Dispatching {
    dispatcher: Dispatcher,
    alerts: Vec<Alert>,
    /// `None` once the pipeline is done: the outputs then finish.
    to_outputs: Option<AlertSender>,
    stop: Stop,
}

impl Dispatching {
    /// Runs the rules over `batch` and hands their alerts to the outputs;
    /// without outputs, stops the pipeline.
    fn dispatch(&mut self, batch: &mut [Event]) -> Result<(), Closed> {
        self.dispatcher.dispatch(batch, &mut self.alerts);
        self.send()
    }

    /// Hands the rules that are restarting what waited for them, and the
    /// alerts to the outputs (at the end of a run).
    fn finish(&mut self) {
        self.dispatcher.finish(&mut self.alerts);
        let _ = self.send();
    }

    fn send(&mut self) -> Result<(), Closed> {
        if self.alerts.is_empty() {
            return Ok(());
        }
        let alerts = std::mem::take(&mut self.alerts);
        if self.to_outputs.as_ref().is_some_and(|tx| tx.send(alerts).is_ok()) {
            return Ok(());
        }
        tracing::error!("output thread is gone; stopping");
        self.stop.stop();
        Err(Closed)
    }
}

/// The dispatcher, whichever thread holds it last panicked or not (a
/// panic there is already reported by that thread's join).
fn lock(d: &Mutex<Dispatching>) -> MutexGuard<'_, Dispatching> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a run did, for logs and tests.
pub struct Summary {
    pub dispatch: Arc<DispatchStats>,
    pub rules: Vec<(String, Arc<RuleStats>)>,
    pub outputs: Vec<(String, Arc<OutputStats>)>,
    pub source_error: Option<SourceError>,
}

/// Logs each rule's figures.
fn log_rule_figures<'a>(rules: impl Iterator<Item = (&'a str, &'a RuleStats)>) {
    for (id, s) in rules {
        tracing::info!(
            rule = %id,
            events_in = s.events_in.load(Ordering::Relaxed),
            alerts_out = s.alerts_out.load(Ordering::Relaxed),
            faults = s.faults(),
            quarantines = s.quarantines.load(Ordering::Relaxed),
            skipped = s.events_skipped.load(Ordering::Relaxed),
            throttled = s.events_throttled.load(Ordering::Relaxed),
            restarts = s.restarts.load(Ordering::Relaxed),
            alerts_dropped = s.alerts_dropped.load(Ordering::Relaxed),
            time_ms = s.time_ns.load(Ordering::Relaxed) / 1_000_000,
            cpu_ms = s.cpu_ns.load(Ordering::Relaxed) / 1_000_000,
            "rule figures"
        );
    }
}

impl Summary {
    pub fn log(&self) {
        let d = &self.dispatch;
        tracing::info!(
            events = d.events.load(Ordering::Relaxed),
            alerts = d.alerts.load(Ordering::Relaxed),
            unrouted = d.events_unrouted.load(Ordering::Relaxed),
            "pipeline finished"
        );
        log_rule_figures(self.rules.iter().map(|(id, s)| (id.as_str(), &**s)));
        for (name, s) in &self.outputs {
            tracing::info!(output = %name, alerts = s.alerts.load(Ordering::Relaxed), failures = s.failures.load(Ordering::Relaxed), "output figures");
        }
    }
}

/// The stages of a run, built by [`crate::daemon::Daemon`].
pub(crate) struct Pipeline {
    pub config: Config,
    pub rules_dir: PathBuf,
    /// Watch the rule directory and honour SIGHUP.
    pub watch: bool,
    pub outputs: Vec<Box<dyn Output>>,
    pub stop: Stop,
    /// Where to re-read the config from on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// Reload requests (from the SIGHUP handler), when `watch` is on.
    pub reloads: Option<ReloadRequests>,
    /// Where the stages' figures are published (metrics, readiness).
    pub telemetry: Arc<Telemetry>,
}

/// A handle to ask a pipeline to reload (SIGHUP does this). Made before the
/// pipeline starts, so a SIGHUP during a slow start is queued, not fatal.
#[derive(Clone)]
pub struct ReloadHandle(Sender<Option<Config>>);

/// The pipeline's end of [`ReloadHandle`].
pub struct ReloadRequests(Receiver<Option<Config>>);

/// A connected pair.
pub fn reload_channel() -> (ReloadHandle, ReloadRequests) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (ReloadHandle(tx), ReloadRequests(rx))
}

impl ReloadHandle {
    /// Reload with `config`, or with the config file re-read when `None`.
    pub fn reload(&self, config: Option<Config>) {
        let _ = self.0.send(config);
    }
}

impl Pipeline {
    /// Runs until the source is exhausted or `stop` is set, also
    /// dispatching the container lifecycle events the runtime watchers send
    /// on `lifecycle`.
    pub fn run_with(
        self,
        source: Box<dyn Source>,
        mut lifecycle: Receiver<Vec<Event>>,
    ) -> Result<Summary, PipelineError> {
        let started = Instant::now();
        let host = Arc::new(PluginHost::for_config(&self.config)?);
        let policy = RulePolicy::new(&self.config);
        let mut dispatcher = Dispatcher::new(self.config.dispatch.batch_size, AlertBuilder::from_host());
        self.telemetry.set_dispatch(dispatcher.stats().clone(), dispatcher.rule_registry());
        let mut dir = RuleDir::new(&self.rules_dir).with_overlays(self.config.rules.overlay_dirs.clone());
        let (controls, report) = dir.scan(&host, &|m| policy.resolve(m))?;
        for c in controls {
            dispatcher.apply(c);
        }
        // Compiling or deserializing components freed much on this thread.
        crate::release_freed_memory();
        if dispatcher.rules().is_empty() {
            tracing::warn!(dir = %self.rules_dir.display(), failed = report.failed.len(), "no rules loaded: nothing can alert, and the sources build no process events until a rule is added");
        }
        tracing::info!(
            rules = dispatcher.rules().len(),
            failed = report.failed.len(),
            disabled = report.disabled.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "rules loaded"
        );

        let (control_tx, control_rx) = crossbeam_channel::unbounded::<Control>();
        // A closed channel is always ready in select!: use `never` instead.
        let mut reload_rx = self.reloads.map(|r| r.0).unwrap_or_else(crossbeam_channel::never);
        let reloader =
            if self.watch { Some(Reloader::spawn(host.clone(), dir, policy, control_tx.clone())?) } else { None };

        let (alert_tx, alert_rx) = alert_queue(1024);
        let outputs = Outputs::new(self.outputs, Shaper::new(&self.config.alerts));
        self.telemetry.set_outputs(outputs.stats(), outputs.shaping_stats());
        let output_thread = std::thread::Builder::new()
            .name("vigil-outputs".into())
            .spawn(move || outputs.run(alert_rx))
            .map_err(PipelineError::Thread)?;

        let interest = dispatcher.interest();
        let dispatch_stats = dispatcher.stats().clone();
        let dispatching = Arc::new(Mutex::new(Dispatching {
            dispatcher,
            alerts: Vec::new(),
            to_outputs: Some(alert_tx),
            stop: self.stop.clone(),
        }));
        let priority = self.config.dispatch.priority();
        let inline = source.dispatches_inline();
        let RunningSource { events: events_rx, spent, thread: source_thread } = if inline {
            let shared = dispatching.clone();
            let consumer: Consumer = Box::new(move |mut batch| lock(&shared).dispatch(&mut batch));
            spawn_source_inline(source, consumer, priority, self.stop.clone(), interest)?
        } else {
            let running = spawn_source(source, self.config.source.channel_batches, self.stop.clone(), interest)?;
            // Only now, once the other threads are started: they would inherit it.
            crate::sched::use_priority("dispatch", priority);
            running
        };
        tracing::info!(took_ms = started.elapsed().as_millis() as u64, inline, "pipeline running");
        self.telemetry.set_ready(true);

        let config_path = self.config_path.clone();
        let batch_size = self.config.dispatch.batch_size;
        let stats_interval = self.config.log.stats_interval;
        let stats_tick =
            if stats_interval.is_zero() { crossbeam_channel::never() } else { crossbeam_channel::tick(stats_interval) };
        // Inline, `events_rx` only closes when the source is done.
        loop {
            let mut reloads_closed = false;
            select! {
                recv(stats_tick) -> _ => {
                    let d = lock(&dispatching);
                    let s = d.dispatcher.stats();
                    tracing::info!(events = s.events.load(Ordering::Relaxed), alerts = s.alerts.load(Ordering::Relaxed), "figures so far");
                    log_rule_figures(d.dispatcher.rules().iter().map(|r| (r.meta.id.as_str(), &*r.stats)));
                },
                recv(events_rx) -> msg => match msg {
                    Ok(mut batch) => {
                        // Live sources send what they have at each wake-up, often a
                        // few events: join what else is queued so rules get full batches.
                        while batch.len() < batch_size {
                            match events_rx.try_recv() {
                                Ok(mut more) => {
                                    batch.append(&mut more);
                                    let _ = spent.try_send(more);
                                }
                                Err(_) => break,
                            }
                        }
                        let _ = lock(&dispatching).dispatch(&mut batch);
                        // Freed by the source's thread if it can take it back.
                        let _ = spent.try_send(batch);
                    }
                    Err(_) => break,
                },
                recv(lifecycle) -> msg => match msg {
                    Ok(mut batch) => {
                        let _ = lock(&dispatching).dispatch(&mut batch);
                    }
                    Err(_) => lifecycle = crossbeam_channel::never(),
                },
                recv(control_rx) -> msg => {
                    if let Ok(c) = msg {
                        lock(&dispatching).dispatcher.apply(c);
                    }
                },
                recv(reload_rx) -> msg => match (msg, &reloader) {
                    (Ok(new_config), Some(r)) => {
                        let new_config = new_config.or_else(|| reread(config_path.as_ref()));
                        r.request(Request::Reload(new_config.map(|c| RulePolicy::new(&c))));
                    }
                    (Ok(_), None) => tracing::info!("reload ignored: not watching rules"),
                    (Err(_), _) => reloads_closed = true,
                },
            }
            if reloads_closed {
                reload_rx = crossbeam_channel::never();
            }
        }
        self.telemetry.set_ready(false);
        drop(reloader);
        // Inline, a panic there may be the dispatcher's: the outputs still
        // get to finish what they have before it is reported.
        let source_result = source_thread.join();
        let rules = {
            let mut d = lock(&dispatching);
            // Apply swaps that raced with the end of the stream.
            while let Ok(c) = control_rx.try_recv() {
                d.dispatcher.apply(c);
            }
            d.finish();
            // The outputs finish what they got.
            d.to_outputs = None;
            d.dispatcher.rules().iter().map(|r| (r.meta.id.clone(), r.stats.clone())).collect()
        };
        let outputs = output_thread.join().map_err(|_| PipelineError::Panicked("output"))?;
        let source_panicked = if inline { "source and dispatch" } else { "source" };
        let source_error = source_result.map_err(|_| PipelineError::Panicked(source_panicked))?.err();
        Ok(Summary { dispatch: dispatch_stats, rules, outputs, source_error })
    }
}

fn reread(path: Option<&PathBuf>) -> Option<Config> {
    let path = path?;
    match Config::load(path) {
        Ok(c) => {
            tracing::info!(path = %path.display(), "config re-read");
            Some(c)
        }
        Err(e) => {
            tracing::error!(error = %e, "config reload failed; keeping the running config");
            None
        }
    }
}
