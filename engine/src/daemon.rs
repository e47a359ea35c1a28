//! The one wiring of the daemon: from a [`Config`], the event source with
//! its enrichment stage, the container runtimes' watchers, the rules, the
//! outputs, the metrics endpoint and the shutdown. `vigil run` and `vigil
//! replay` run it with rules ([`Daemon::run`]); `vigil events` and `vigil
//! record` run the same source, enrichment and watchers without rules
//! ([`Daemon::stream`]), so what they print is what rules see. Tests and
//! benches replace the source or the outputs, and nothing else.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, select};
use vigil_event::{Event, EventKind, KindSet};

use crate::alert::AlertBuilder;
use crate::config::{Config, SourceConfig, SourceKind};
use crate::enrich::Enricher;
use crate::enrich::containers::ContainerCache;
use crate::enrich::hold::HoldLimits;
use crate::metrics::Telemetry;
use crate::output::file::FileOutput;
use crate::output::stdout::StdoutOutput;
use crate::output::{Output, OutputError};
use crate::pipeline::{Pipeline, PipelineError, ReloadHandle, ReloadRequests, RunningSource, Summary};
use crate::sources::connector::ProcSource;
use crate::sources::ebpf::EbpfSource;
use crate::sources::replay::ReplaySource;
use crate::sources::{EventSender, Interest, Source, SourceError, Stop, Wanted};
use crate::watchers::{self, Lifecycle, Watcher};

/// Errors that keep the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("no rule directory: give --rules DIR or set rules.dir in the config")]
    NoRuleDir,
    #[error("rule directory {0} does not exist")]
    MissingRuleDir(PathBuf),
    #[error("cannot start the outputs runtime")]
    OutputsRuntime(#[source] std::io::Error),
    #[error("cannot listen on metrics.listen {0}")]
    Metrics(std::net::SocketAddr, #[source] std::io::Error),
    #[error("cannot start a runtime watcher thread")]
    Watcher(#[source] std::io::Error),
}

/// The daemon, configured; [`run`](Self::run) or [`stream`](Self::stream) it.
pub struct Daemon {
    config: Config,
    /// Where SIGHUP re-reads the config from.
    config_path: Option<PathBuf>,
    rules_dir: Option<PathBuf>,
    /// Watch the rule directory and honour reloads.
    watch: bool,
    /// Replace the configured outputs (tests, benches).
    outputs: Option<Vec<Box<dyn Output>>>,
    /// Replace the configured source (tests, benches).
    source: Option<Box<dyn Source>>,
    stop: Stop,
    telemetry: Arc<Telemetry>,
    reload: ReloadHandle,
    reloads: ReloadRequests,
}

impl Daemon {
    pub fn new(config: Config) -> Self {
        let (reload, reloads) = crate::pipeline::reload_channel();
        Daemon {
            rules_dir: config.rules.dir.clone(),
            config,
            config_path: None,
            watch: false,
            outputs: None,
            source: None,
            stop: Stop::new(),
            telemetry: Telemetry::new(),
            reload,
            reloads,
        }
    }

    /// Rules from `dir` (overriding `rules.dir`); with `watch`, changes to
    /// it and reload requests swap rules while running.
    pub fn rules(mut self, dir: PathBuf, watch: bool) -> Self {
        self.rules_dir = Some(dir);
        self.watch = watch;
        self
    }

    /// Where a reload re-reads the config from.
    pub fn config_path(mut self, path: Option<PathBuf>) -> Self {
        self.config_path = path;
        self
    }

    /// Alerts go to `outputs` instead of the configured outputs.
    pub fn with_outputs(mut self, outputs: Vec<Box<dyn Output>>) -> Self {
        self.outputs = Some(outputs);
        self
    }

    /// Events come from `source` instead of the configured one (no
    /// watchers are started for it).
    pub fn with_source(mut self, source: Box<dyn Source>) -> Self {
        self.source = Some(source);
        self
    }

    /// Stops the daemon, which then drains what is queued.
    pub fn stop_handle(&self) -> Stop {
        self.stop.clone()
    }

    /// Asks the daemon to reload its config and rules (SIGHUP).
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// Where the stages' figures are published.
    pub fn telemetry(&self) -> Arc<Telemetry> {
        self.telemetry.clone()
    }

    /// Runs the rules over the source's events until it ends or is stopped,
    /// delivering their alerts.
    pub fn run(mut self) -> Result<Summary, DaemonError> {
        let rules_dir = self.rules_dir.take().ok_or(DaemonError::NoRuleDir)?;
        for dir in std::iter::once(&rules_dir).chain(&self.config.rules.overlay_dirs) {
            if !dir.is_dir() {
                return Err(DaemonError::MissingRuleDir(dir.clone()));
            }
        }
        // Webhook deliveries and the metrics endpoint run here, off the pipeline's threads.
        let outputs_runtime = if !self.config.output.webhook.is_empty()
            || !self.config.output.nats.is_empty()
            || self.config.metrics.enabled
        {
            Some(crate::output::outputs_runtime().map_err(DaemonError::OutputsRuntime)?)
        } else {
            None
        };
        let outputs = match self.outputs.take() {
            Some(s) => s,
            None => self.configured_outputs(outputs_runtime.as_ref())?,
        };
        if let (Some(rt), true) = (&outputs_runtime, self.config.metrics.enabled) {
            let listen = self.config.metrics.listen;
            let addr = crate::metrics::server::start(rt.handle(), listen, self.telemetry.clone())
                .map_err(|e| DaemonError::Metrics(listen, e))?;
            tracing::info!(%addr, "metrics endpoint listening (/metrics, /healthz, /readyz)");
        }
        let live = self.start_live()?;
        tracing::info!(source = live.source.name(), rules = %rules_dir.display(), overlays = ?self.config.rules.overlay_dirs, "starting");
        let pipeline = Pipeline {
            config: self.config,
            rules_dir,
            watch: self.watch,
            outputs,
            stop: self.stop.clone(),
            config_path: self.config_path,
            reloads: self.watch.then_some(self.reloads),
            telemetry: self.telemetry,
        };
        let summary = pipeline.run_with(live.source, live.lifecycle);
        self.stop.stop();
        join_watchers(live.watchers);
        if let Some(rt) = outputs_runtime {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
        Ok(summary?)
    }

    /// Runs the source, its enrichment and the watchers without rules,
    /// handing `f` each batch of events of `kinds` (all when empty; losses
    /// always), container lifecycle events included, until the source ends,
    /// the daemon is stopped or `f` breaks. Returns the source's error.
    pub fn stream(
        mut self,
        kinds: KindSet,
        mut f: impl FnMut(Vec<Event>) -> ControlFlow<()>,
    ) -> Result<Option<SourceError>, DaemonError> {
        let live = self.start_live()?;
        let source_name = live.source.name();
        let interest = Interest::all();
        if kinds != KindSet::EMPTY {
            interest.set(Wanted::Kinds(kinds));
        }
        let running = crate::pipeline::spawn_source(
            live.source,
            self.config.source.channel_batches,
            self.stop.clone(),
            interest,
        )?;
        let RunningSource { events, thread, .. } = running;
        tracing::info!(source = source_name, "streaming events");
        let mut lifecycle = live.lifecycle;
        let keep = |e: &Event| kinds.contains(e.kind) || e.kind == EventKind::EventsLost;
        // Wakes up to see a stop while the source is quiet.
        let tick = crossbeam_channel::tick(Duration::from_millis(200));
        loop {
            let mut batch = select! {
                recv(events) -> b => match b {
                    Ok(b) => b,
                    Err(_) => break,
                },
                recv(lifecycle) -> b => match b {
                    Ok(b) => b,
                    Err(_) => {
                        lifecycle = crossbeam_channel::never();
                        continue;
                    }
                },
                recv(tick) -> _ => {
                    if self.stop.is_stopped() {
                        break;
                    }
                    continue;
                },
            };
            // Sources that cannot filter (replay) are filtered here.
            if kinds != KindSet::EMPTY {
                batch.retain(keep);
            }
            if !batch.is_empty() && f(batch).is_break() {
                break;
            }
        }
        self.stop.stop();
        drop(events);
        let result = thread.join().unwrap_or(Ok(()));
        join_watchers(live.watchers);
        Ok(result.err())
    }

    /// The outputs `[output]` configures.
    fn configured_outputs(
        &self,
        runtime: Option<&tokio::runtime::Runtime>,
    ) -> Result<Vec<Box<dyn Output>>, DaemonError> {
        let out = &self.config.output;
        let mut outputs: Vec<Box<dyn Output>> = Vec::new();
        if out.stdout.enabled {
            outputs.push(Box::new(StdoutOutput::new(crate::output::fields::FieldSelection::new(&out.stdout.fields))));
        }
        if let Some(f) = &out.file {
            outputs.push(Box::new(FileOutput::open(f)?));
        }
        if let Some(rt) = runtime {
            let spool_dir = out.spool_dir();
            let hostname = AlertBuilder::from_host().hostname().to_string();
            for w in &out.webhook {
                let output = crate::output::webhook::open(w, &spool_dir, &hostname, rt.handle().clone())?;
                self.telemetry.add_spooled(output.handle());
                outputs.push(Box::new(output));
            }
            for n in &out.nats {
                let output = crate::output::nats::open(n, &spool_dir, &hostname, rt.handle().clone())?;
                self.telemetry.add_spooled(output.handle());
                outputs.push(Box::new(output));
            }
        }
        Ok(outputs)
    }

    /// The source, and for a live one its enrichment and the watchers that
    /// feed it.
    fn start_live(&mut self) -> Result<Live, DaemonError> {
        if let Some(source) = self.source.take() {
            return Ok(Live { source, watchers: Vec::new(), lifecycle: crossbeam_channel::never() });
        }
        // A replay carries the context it was recorded with.
        let live = self.config.source.kind != SourceKind::Replay;
        let cache = ContainerCache::new();
        let (lifecycle_tx, lifecycle) = crossbeam_channel::bounded(LIFECYCLE_BATCHES);
        let watchers = if live { self.start_watchers(&cache, &lifecycle_tx)? } else { Vec::new() };
        drop(lifecycle_tx);
        let hold = HoldLimits::new(&self.config.containers);
        let enricher = || Enricher::new(&self.config.source.ebpf).with_containers(cache.clone(), hold);
        let source = open_source(&self.config.source, enricher, &self.telemetry)?;
        self.telemetry.set_source(source.name());
        Ok(Live { source, watchers, lifecycle })
    }

    fn start_watchers(
        &self,
        cache: &Arc<ContainerCache>,
        lifecycle: &Sender<Vec<Event>>,
    ) -> Result<Vec<JoinHandle<()>>, DaemonError> {
        let (docker_api, cri) = watchers::configured(&self.config.containers);
        if docker_api.is_empty() && cri.is_none() {
            tracing::info!(
                "no container runtime socket found: events carry container ids from cgroups, without names or images"
            );
        }
        let mut threads = Vec::new();
        let mut started = |spawned: std::io::Result<(JoinHandle<()>, Arc<watchers::RuntimeStatus>)>| {
            let (thread, status) = spawned.map_err(DaemonError::Watcher)?;
            self.telemetry.add_runtime(status);
            threads.push(thread);
            Ok::<_, DaemonError>(())
        };
        let events_of = |name: &'static str| Lifecycle::new(Some(EventSender::new(lifecycle.clone(), name)));
        if let Some(cri) = cri {
            started(watchers::spawn(cri, cache.clone(), events_of("cri"), self.stop.clone()))?;
        }
        for w in docker_api {
            let name = w.runtime().name();
            started(watchers::spawn(w, cache.clone(), events_of(name), self.stop.clone()))?;
        }
        Ok(threads)
    }
}

/// Lifecycle events queued (in batches of one) before watchers drop them.
const LIFECYCLE_BATCHES: usize = 1024;

/// A started source and what feeds its enrichment.
struct Live {
    source: Box<dyn Source>,
    watchers: Vec<JoinHandle<()>>,
    /// The watchers' container lifecycle events.
    lifecycle: Receiver<Vec<Event>>,
}

fn join_watchers(watchers: Vec<JoinHandle<()>>) {
    for w in watchers {
        let _ = w.join();
    }
}

/// Chooses and opens the event source; a live one gets an enricher from
/// `enricher`. `auto`: eBPF, else the proc connector, else the replay
/// file as a last resort.
pub fn open_source(
    config: &SourceConfig,
    enricher: impl Fn() -> Enricher,
    telemetry: &Telemetry,
) -> Result<Box<dyn Source>, DaemonError> {
    let ebpf = || {
        let s = EbpfSource::open(&config.ebpf, enricher()).map_err(SourceError::Ebpf)?;
        telemetry.set_kernel(s.stats());
        Ok::<_, SourceError>(s)
    };
    let replay_source = |why: &str| match &config.replay {
        Some(p) => Ok(Box::new(ReplaySource::new(p.clone(), config.realtime)) as Box<dyn Source>),
        None => Err(PipelineError::NoSource(format!("{why}; give --replay FILE to use the replay source")).into()),
    };
    match config.kind {
        SourceKind::Replay => replay_source("the replay source needs a file"),
        SourceKind::Proc => Ok(Box::new(ProcSource::open(enricher())?)),
        SourceKind::Ebpf => Ok(Box::new(ebpf()?)),
        SourceKind::Auto => {
            let ebpf = match ebpf() {
                Ok(s) => return Ok(Box::new(s)),
                Err(e) => e,
            };
            tracing::warn!(error = %ebpf, "eBPF source unavailable; falling back to the proc connector");
            match ProcSource::open(enricher()) {
                Ok(s) => Ok(Box::new(s)),
                Err(e) => {
                    tracing::warn!(error = %e, "proc connector unavailable; falling back to the replay file");
                    replay_source(&format!("{ebpf}; {e}"))
                }
            }
        }
    }
}
