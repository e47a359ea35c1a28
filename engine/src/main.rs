//! `vigil`: the daemon and its tools. See `vigil --help`.
//!
//! Alerts go to stdout (JSON lines); the daemon's own log goes to stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use vigil_engine::config::{Config, LogFormat, SourceKind};
use vigil_engine::enrich::containers::ContainerCache;
use vigil_engine::event::{EventKind, KindSet};
use vigil_engine::metrics::{self, Telemetry};
use vigil_engine::pipeline::{self, Pipeline, ReloadHandle, reload_channel};
use vigil_engine::plugin::host::content_hash;
use vigil_engine::plugin::rule::{Loaded, LoadedRule};
use vigil_engine::plugin::rulefiles;
use vigil_engine::sinks::Sink;
use vigil_engine::sinks::alert::AlertBuilder;
use vigil_engine::sinks::fields::FieldSelection;
use vigil_engine::sinks::file::FileSink;
use vigil_engine::sinks::stdout::StdoutSink;
use vigil_engine::sinks::webhook::WebhookSink;
use vigil_engine::sources::replay::ReplayWriter;
use vigil_engine::sources::runtime::Lifecycle;
use vigil_engine::sources::{EventSender, Interest, Stop};
use vigil_engine::sources::{cri, docker};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Host runtime-security engine: kernel and container events, sandboxed WebAssembly rules, alerts.",
    long_about = "Vigil watches what processes do on this host, hands every event to detection rules \
                  (WebAssembly components, sandboxed and hot-reloaded from a directory), and writes \
                  the alerts they raise as JSON lines (stdout by default, Falco's field names).\n\n\
                  Logs go to stderr; RUST_LOG overrides the log level."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct SourceArgs {
    /// Event source. auto: eBPF, else the kernel's process connector, else the replay file
    /// (--replay) as a fallback. Without --source, giving --replay selects replay.
    #[arg(long, value_enum)]
    source: Option<SourceKind>,
    /// Replay file (msgpack from `vigil record`, or JSON lines).
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
    /// Replay at the recorded pace instead of as fast as possible.
    #[arg(long)]
    realtime: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: load the rules, follow events, print alerts until SIGINT/SIGTERM.
    ///
    /// The rule directory is watched: adding, replacing or removing a .wasm file swaps that
    /// rule without losing an event. SIGHUP re-reads the config and reloads every rule.
    Run {
        /// Directory of rule components (*.wasm). Overrides rules.dir in the config.
        #[arg(long, value_name = "DIR")]
        rules: Option<PathBuf>,
        #[command(flatten)]
        source: SourceArgs,
        /// Config file (TOML). Every key is optional; see the README's config reference.
        #[arg(long, value_name = "FILE", env = "VIGIL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run rules over a recorded file, print the alerts, exit.
    ///
    /// Exits 0 when the whole file was read, 1 if it is corrupt (alerts for the events
    /// before the damage are still printed).
    Replay {
        /// The replay file.
        file: PathBuf,
        /// Directory of rule components (*.wasm).
        #[arg(long, value_name = "DIR")]
        rules: PathBuf,
        /// Config file (TOML).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Keep the recorded pace.
        #[arg(long)]
        realtime: bool,
    },
    /// Print events as JSON lines (what rules would see), until SIGINT or --limit.
    Events {
        #[command(flatten)]
        source: SourceArgs,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
        /// Only events of this kind (repeatable; e.g. process-exec). Live
        /// sources then do less work for the others.
        #[arg(long = "kind", value_name = "KIND", value_parser = parse_kind)]
        kinds: Vec<EventKind>,
        /// Config file (its [source] and [log] sections apply).
        #[arg(long, value_name = "FILE", env = "VIGIL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Record events to a replay file (msgpack; JSON lines if FILE ends in .jsonl).
    Record {
        /// Where to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        source: SourceArgs,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
        /// Stop after this long (e.g. 30s, 5m).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
    },
    /// List the host's containers as Vigil sees them (runtime, id, name, image, pod, state, pid).
    ///
    /// Asks each runtime found (Docker, Podman, containerd or CRI-O, at
    /// containers.docker_socket, podman_socket, cri_socket). Exits 1 if no
    /// runtime answers.
    Containers {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Config file (its [containers] section applies).
        #[arg(long, value_name = "FILE", env = "VIGIL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Work with rule components.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate rule components and rule files (or every .wasm and .yaml in a directory).
    ///
    /// Components: a valid component, the interface version, metadata, and that `init`
    /// accepts its config. Rule files (Falco, Sigma: .yaml/.yml) are loaded together in the
    /// interpreter component, as the daemon loads them, and every rule is listed: loaded,
    /// unsupported (why), disabled or invalid, with its event kinds and priority.
    /// Exits 1 if a component, a whole rule file or a rule of one is invalid (a rule Vigil
    /// cannot evaluate is reported as unsupported, not as an error).
    Check {
        /// .wasm files, .yaml/.yml rule files, or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The interpreter component for rule files (default: declarative.wasm beside the
        /// files, in the rule directory, in rules/ beside the binary, or in target/rules).
        #[arg(long, value_name = "FILE")]
        interpreter: Option<PathBuf>,
        /// Config file whose per-rule settings to check against.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vigil: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    // Colours only on a terminal: journald and log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run { rules, source, config } => {
            let mut cfg = load_config(config.as_deref())?;
            init_logging(&cfg);
            apply_source_args(&mut cfg, &source);
            let rules_dir = rules
                .or_else(|| cfg.rules.dir.clone())
                .context("no rule directory: give --rules DIR or set rules.dir in the config")?;
            run_pipeline(cfg, rules_dir, true, config)
        }
        Command::Replay { file, rules, config, realtime } => {
            let mut cfg = load_config(config.as_deref())?;
            init_logging(&cfg);
            cfg.source.kind = SourceKind::Replay;
            cfg.source.replay = Some(file);
            cfg.source.realtime = realtime;
            run_pipeline(cfg, rules, false, None)
        }
        Command::Events { source, limit, kinds, config } => {
            let mut cfg = load_config(config.as_deref())?;
            init_logging(&cfg);
            apply_source_args(&mut cfg, &source);
            let mut out = std::io::stdout().lock();
            stream_events(&cfg, limit, None, &kinds, |e| {
                use std::io::Write;
                serde_json::to_writer(&mut out, e)?;
                out.write_all(b"\n")?;
                Ok(())
            })
        }
        Command::Record { out, source, limit, duration } => {
            let mut cfg = Config::default();
            init_logging(&cfg);
            apply_source_args(&mut cfg, &source);
            let mut writer = ReplayWriter::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
            let mut n = 0u64;
            let code = stream_events(&cfg, limit, duration, &[], |e| {
                n += 1;
                Ok(writer.write(e)?)
            })?;
            writer.finish()?;
            tracing::info!(events = n, file = %out.display(), "recorded");
            Ok(code)
        }
        Command::Containers { json, config } => {
            let cfg = load_config(config.as_deref())?;
            init_logging(&cfg);
            list_containers(&cfg, json)
        }
        Command::Rules { command: RulesCommand::Check { paths, config, json, interpreter } } => {
            let cfg = load_config(config.as_deref())?;
            init_logging(&cfg);
            let components = check_rules(&cfg, &paths, json)?;
            let files = check_rule_files(&cfg, &paths, interpreter.as_deref(), json)?;
            Ok(if components == ExitCode::SUCCESS { files } else { components })
        }
    }
}

fn apply_source_args(cfg: &mut Config, args: &SourceArgs) {
    if let Some(kind) = args.source {
        cfg.source.kind = kind;
    }
    if args.replay.is_some() {
        cfg.source.replay = args.replay.clone();
        if args.source.is_none() {
            cfg.source.kind = SourceKind::Replay;
        }
    }
    cfg.source.realtime |= args.realtime;
}

/// SIGINT/SIGTERM stop the pipeline (a second one exits at once); SIGHUP reloads.
fn handle_signals(stop: Stop, reload: Option<ReloadHandle>) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new().name("vigil-signals".into()).spawn(move || {
        for sig in signals.forever() {
            match sig {
                SIGHUP => match &reload {
                    Some(r) => {
                        tracing::info!("SIGHUP: reloading config and rules");
                        r.reload(None);
                    }
                    None => tracing::info!("SIGHUP ignored: nothing to reload"),
                },
                _ => {
                    if stop.is_stopped() {
                        tracing::warn!("second signal: exiting without draining");
                        std::process::exit(130);
                    }
                    tracing::info!(signal = sig, "stopping: draining queued events");
                    stop.stop();
                }
            }
        }
    })?;
    Ok(())
}

fn run_pipeline(cfg: Config, rules_dir: PathBuf, watch: bool, config_path: Option<PathBuf>) -> Result<ExitCode> {
    if !rules_dir.is_dir() {
        bail!("rule directory {} does not exist", rules_dir.display());
    }
    let telemetry = Telemetry::new();
    // Webhook deliveries and the metrics endpoint run here, off the pipeline's threads.
    let runtime = if !cfg.output.webhook.is_empty() || cfg.metrics.enabled {
        Some(vigil_engine::sinks::outputs_runtime().context("cannot start the outputs runtime")?)
    } else {
        None
    };
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if cfg.output.stdout.enabled {
        sinks.push(Box::new(StdoutSink::new(FieldSelection::new(&cfg.output.stdout.fields))));
    }
    if let Some(f) = &cfg.output.file {
        sinks.push(Box::new(FileSink::open(f)?));
    }
    if let Some(rt) = &runtime {
        let spool_dir = cfg.output.spool_dir();
        let hostname = AlertBuilder::from_host().hostname().to_string();
        for w in &cfg.output.webhook {
            let sink = WebhookSink::open(w, &spool_dir, &hostname, rt.handle().clone())?;
            telemetry.add_webhook(sink.handle());
            sinks.push(Box::new(sink));
        }
        if cfg.metrics.enabled {
            let addr = metrics::server::start(rt.handle(), cfg.metrics.listen, telemetry.clone())
                .with_context(|| format!("cannot listen on metrics.listen {}", cfg.metrics.listen))?;
            tracing::info!(%addr, "metrics endpoint listening (/metrics, /healthz, /readyz)");
        }
    }
    let stop = Stop::new();
    let (reload, reloads) = reload_channel();
    handle_signals(stop.clone(), watch.then_some(reload))?;
    let containers = ContainerCache::new();
    let (lifecycle_tx, lifecycle_rx) = pipeline::lifecycle_channel();
    // Runtime metadata is for live events (the eBPF source); a replay carries its own.
    let live = cfg.source.kind != SourceKind::Replay;
    let mut watchers = Vec::new();
    if live {
        let sockets = cfg.containers.sockets();
        if let Some(socket) = cfg.containers.cri_socket() {
            let events = EventSender::new(lifecycle_tx.clone(), "cri");
            let (thread, status) = cri::spawn(socket, containers.clone(), Lifecycle::new(Some(events)), stop.clone())?;
            telemetry.add_runtime(status);
            watchers.push(thread);
        } else if sockets.is_empty() {
            tracing::info!(
                "no container runtime socket found: events carry container ids from cgroups, without names or images"
            );
        }
        for (socket, runtime) in sockets {
            let events = EventSender::new(lifecycle_tx.clone(), runtime.name());
            let (thread, status) =
                docker::spawn(socket, runtime, containers.clone(), Lifecycle::new(Some(events)), stop.clone())?;
            telemetry.add_runtime(status);
            watchers.push(thread);
        }
    }
    drop(lifecycle_tx);
    let source = pipeline::open_source_with(&cfg.source, Some((containers, cfg.containers.hold_limits())))?;
    tracing::info!(source = source.name(), rules = %rules_dir.display(), "starting");
    let stop_watchers = stop.clone();
    let p = Pipeline {
        config: cfg,
        rules_dir,
        watch,
        sinks,
        stop,
        config_path,
        reloads: watch.then_some(reloads),
        telemetry,
    };
    let summary = p.run_with(source, lifecycle_rx)?;
    summary.log();
    stop_watchers.stop();
    for w in watchers {
        let _ = w.join();
    }
    if let Some(rt) = runtime {
        rt.shutdown_timeout(Duration::from_secs(1));
    }
    Ok(match summary.source_error {
        Some(e) => {
            eprintln!("vigil: error: {e}");
            ExitCode::from(1)
        }
        None => ExitCode::SUCCESS,
    })
}

fn list_containers(cfg: &Config, json: bool) -> Result<ExitCode> {
    let mut sockets: Vec<_> = cfg.containers.sockets().into_iter().map(|(s, _)| (s, false)).collect();
    sockets.extend(cfg.containers.cri_socket().map(|s| (s, true)));
    if sockets.is_empty() {
        eprintln!(
            "vigil: no container runtime socket found (set containers.docker_socket, podman_socket or cri_socket)"
        );
        return Ok(ExitCode::from(1));
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut listed = Vec::new();
    let mut failed = 0;
    for (socket, is_cri) in &sockets {
        let got = rt.block_on(async {
            if *is_cri {
                cri::connect(socket).await?.0.list().await
            } else {
                docker::list_at(socket).await.map_err(Into::into)
            }
        });
        match got {
            Ok(l) => listed.extend(l),
            Err(e) => {
                eprintln!(
                    "vigil: cannot list containers from {}: {}",
                    socket.display(),
                    vigil_engine::error_chain(&*e)
                );
                failed += 1;
            }
        }
    }
    if failed == sockets.len() {
        return Ok(ExitCode::from(1));
    }
    if json {
        for (c, pod, state) in &listed {
            let v = serde_json::json!({
                "runtime": c.runtime.name(), "id": c.id, "name": c.name, "image": c.image,
                "pod": pod.as_ref().map(|p| format!("{}/{}", p.namespace, p.name)),
                "state": state, "pid": c.pid, "privileged": c.privileged, "labels": c.labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            });
            println!("{v}");
        }
    } else {
        println!(
            "{:<10} {:<12} {:<24} {:<32} {:<24} {:<10} {:>7}",
            "RUNTIME", "ID", "NAME", "IMAGE", "POD", "STATE", "PID"
        );
        for (c, pod, state) in &listed {
            let pod = pod.as_ref().map_or("-".to_string(), |p| format!("{}/{}", p.namespace, p.name));
            println!(
                "{:<10} {:<12} {:<24} {:<32} {:<24} {:<10} {:>7}",
                c.runtime.name(),
                c.id.get(..12).unwrap_or(&c.id),
                c.name,
                c.image,
                pod,
                state,
                c.pid
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_kind(name: &str) -> Result<EventKind, String> {
    EventKind::from_name(name).ok_or_else(|| {
        let all: Vec<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
        format!("unknown event kind {name:?}; one of: {}", all.join(", "))
    })
}

/// Runs the configured source without rules, handing each event to `f`.
fn stream_events(
    cfg: &Config,
    limit: Option<u64>,
    duration: Option<Duration>,
    kinds: &[EventKind],
    mut f: impl FnMut(&vigil_engine::event::Event) -> Result<()>,
) -> Result<ExitCode> {
    let source = pipeline::open_source(&cfg.source)?;
    let stop = Stop::new();
    handle_signals(stop.clone(), None)?;
    let wanted: KindSet = kinds.iter().copied().collect();
    let interest = Interest::all();
    interest.0.store(wanted.0, std::sync::atomic::Ordering::Relaxed);
    let running = pipeline::spawn_source(source, cfg.source.channel_batches, stop.clone(), interest)?;
    let (rx, thread) = (running.events, running.thread);
    let start = Instant::now();
    let mut n = 0u64;
    'outer: loop {
        let batch = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(b) => b,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if duration.is_some_and(|d| start.elapsed() >= d) {
                    break;
                }
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        for mut e in batch {
            // Sources that cannot filter (replay) are filtered here; losses always show.
            if wanted != KindSet::EMPTY && !wanted.contains(e.kind) && e.kind != EventKind::EventsLost {
                continue;
            }
            n += 1;
            e.id = n;
            f(&e)?;
            if limit.is_some_and(|l| n >= l) || duration.is_some_and(|d| start.elapsed() >= d) {
                break 'outer;
            }
        }
    }
    stop.stop();
    drop(rx);
    let source_result = thread.join().unwrap_or(Ok(()));
    match source_result {
        Err(e) => {
            eprintln!("vigil: error: {e}");
            Ok(ExitCode::from(1))
        }
        Ok(()) => Ok(ExitCode::SUCCESS),
    }
}

/// `rules check` of the rule files among `paths` (nothing to do when there are none).
fn check_rule_files(cfg: &Config, paths: &[PathBuf], interpreter: Option<&Path>, json: bool) -> Result<ExitCode> {
    let files = rulefiles::rule_files_of(paths).context("cannot list rule files")?;
    if files.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let host = Pipeline::build_host(cfg)?;
    let candidates = rulefiles::interpreter_candidates(interpreter, paths, cfg.rules.dir.as_deref());
    let Some(found) = rulefiles::find_interpreter(&host, &candidates) else {
        let looked: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
        bail!(
            "no interpreter component for rule files (declarative.wasm, built by scripts/build-rules.sh); looked at: {}; say where with --interpreter",
            looked.join(", ")
        );
    };
    let policy = cfg.rule_policy();
    let report = rulefiles::check(&host, &found, &files, &|m| policy.resolve(m))?;
    let broken = rulefiles::print_report(&report, json);
    Ok(if broken > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn check_rules(cfg: &Config, paths: &[PathBuf], json: bool) -> Result<ExitCode> {
    let host = Pipeline::build_host(cfg)?;
    let policy = cfg.rule_policy();
    let files = rulefiles::wasm_files_of(paths).context("cannot list rule components")?;
    let mut failed = 0;
    for path in files {
        let bytes = std::fs::read(&path);
        let hash = bytes.as_deref().map(content_hash).unwrap_or_default();
        let result = bytes
            .as_deref()
            .map_err(|e| anyhow::anyhow!("cannot read it: {e}"))
            .and_then(|bytes| Ok(LoadedRule::load(&host, &path, bytes, &hash, &|m| policy.resolve(m))?));
        // A cache hit when the cache is on: the load above just compiled it.
        let imports = bytes.as_deref().ok().and_then(|b| host.compile(b, &hash).ok()).map(|(component, _)| {
            let granted = |id: &str| cfg.rules.settings.get(id).is_some_and(|s| s.wasi.is_some());
            (component, granted)
        });
        let (meta, status) = match result {
            Ok(Loaded::Rule(r)) => (Some(r.meta.clone()), "ok".to_string()),
            Ok(Loaded::Disabled(m)) => (Some(m), "ok (disabled by config)".to_string()),
            Ok(Loaded::Interpreter(m)) => (Some(m), "ok (the interpreter of rule files)".to_string()),
            Err(e) => {
                failed += 1;
                (None, format!("{e:#}"))
            }
        };
        let imports: Vec<(String, &str)> = match (&imports, &meta) {
            (Some((component, granted)), Some(m)) => host.imports(component, granted(&m.id)),
            (Some((component, _)), None) => host.imports(component, false),
            _ => Vec::new(),
        };
        if json {
            let v = serde_json::json!({
                "imports": imports.iter().map(|(name, status)| serde_json::json!({"name": name, "status": status})).collect::<Vec<_>>(),
                "path": path,
                "ok": meta.is_some(),
                "status": status,
                "id": meta.as_ref().map(|m| &m.id),
                "version": meta.as_ref().map(|m| &m.version),
                "description": meta.as_ref().map(|m| &m.description),
                "subscriptions": meta.as_ref().map(|m| m.subscriptions.iter().map(|k| k.name()).collect::<Vec<_>>()),
                "containers_only": meta.as_ref().map(|m| m.containers_only),
                "tags": meta.as_ref().map(|m| &m.tags),
            });
            println!("{v}");
        } else {
            match meta {
                Some(m) => {
                    println!("{}: {status}", path.display());
                    println!("  id:            {}", m.id);
                    println!("  version:       {}", m.version);
                    println!("  description:   {}", m.description);
                    let subs: Vec<_> = m.subscriptions.iter().map(|k| k.name()).collect();
                    println!("  subscriptions: {}", subs.join(", "));
                    let scope = if m.containers_only { "processes in containers" } else { "every process" };
                    println!("  scope:         {scope}");
                    println!("  tags:          {}", m.tags.join(", "));
                    println!("  imports:");
                    for (name, status) in &imports {
                        println!("    {name}: {status}");
                    }
                }
                None => println!("{}: INVALID: {status}", path.display()),
            }
        }
    }
    Ok(if failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
