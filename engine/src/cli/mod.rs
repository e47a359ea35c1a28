//! The `vigil` command line: one module per subcommand, over the library's
//! [`Daemon`](vigil_engine::daemon::Daemon).

pub mod containers;
pub mod events;
pub mod record;
pub mod replay;
pub mod rules;
pub mod run;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use vigil_engine::config::{Config, LogFormat, SourceKind};
use vigil_engine::event::EventKind;
use vigil_engine::pipeline::ReloadHandle;
use vigil_engine::sources::Stop;

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
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args, Clone)]
pub struct SourceArgs {
    /// Event source. auto: eBPF, else the kernel's process connector, else the replay file
    /// (--replay) as a fallback. Without --source, giving --replay selects replay.
    #[arg(long, value_enum)]
    pub source: Option<SourceKind>,
    /// Replay file (msgpack from `vigil record`, or JSON lines).
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Replay at the recorded pace instead of as fast as possible.
    #[arg(long)]
    pub realtime: bool,
}

#[derive(Subcommand)]
pub enum Command {
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
        /// Config file (TOML). Every key is optional; see docs/configuration.md.
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
    /// Print events as JSON lines, as rules see them, until SIGINT or --limit.
    ///
    /// The same source, enrichment and container runtime watchers as `run`,
    /// without rules: events carry their container's name, image and pod.
    Events {
        #[command(flatten)]
        source: SourceArgs,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
        /// Only events of this kind (repeatable; e.g. process-exec). Live
        /// sources then do less work for the others.
        #[arg(long = "kind", value_name = "KIND", value_parser = events::parse_kind)]
        kinds: Vec<EventKind>,
        /// Config file (its [source] and [log] sections apply).
        #[arg(long, value_name = "FILE", env = "VIGIL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Record events to a replay file (msgpack; JSON lines if FILE ends in .jsonl).
    ///
    /// Events are recorded as rules see them (container names, images and
    /// pods included), so a replay of the file gives rules the same context.
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
        /// Config file (its [source], [containers] and [log] sections apply).
        #[arg(long, value_name = "FILE", env = "VIGIL_CONFIG")]
        config: Option<PathBuf>,
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
pub enum RulesCommand {
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

/// The config at `path`, or the defaults.
pub fn load_config(path: Option<&Path>) -> Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

/// Logs to stderr at `log.level` (RUST_LOG overrides it), as text or JSON.
pub fn init_logging(config: &Config) {
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

/// The config at `path`, with logging started from it.
pub fn start(path: Option<&Path>) -> Result<Config> {
    let cfg = load_config(path)?;
    init_logging(&cfg);
    Ok(cfg)
}

impl SourceArgs {
    /// Applies the flags over `[source]`.
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(kind) = self.source {
            cfg.source.kind = kind;
        }
        if self.replay.is_some() {
            cfg.source.replay = self.replay.clone();
            if self.source.is_none() {
                cfg.source.kind = SourceKind::Replay;
            }
        }
        cfg.source.realtime |= self.realtime;
    }
}

/// SIGINT/SIGTERM stop (a second one exits at once); SIGHUP reloads.
pub fn handle_signals(stop: Stop, reload: Option<ReloadHandle>) -> Result<()> {
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
