//! The daemon's config file (TOML), as plain data plus validation. Every
//! key is documented here: these doc comments are the reference
//! (docs/configuration.md is generated from them, and a test fails when it
//! drifts).
//! Unknown keys are errors, and [`Config::validate`] runs before anything
//! starts, so a broken config never half-starts the daemon.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

mod dispatch;
mod nats;
mod output;
mod rules;
mod source;
pub use dispatch::*;
pub use nats::*;
pub use output::*;
pub use rules::*;
pub use source::*;

/// Errors in the config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("config file {0}: {1}")]
    Parse(PathBuf, #[source] toml::de::Error),
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Rules: where they are, which are off, per-rule settings.
    pub rules: RulesConfig,
    /// Where events come from.
    pub source: SourceConfig,
    /// How rules are called: batching, limits, fault policy.
    pub dispatch: DispatchConfig,
    /// Where alerts go.
    pub output: OutputConfig,
    /// Rate limits, deduplication and redaction of alerts, before any output.
    pub alerts: AlertsConfig,
    /// The Prometheus endpoint and health checks.
    pub metrics: MetricsConfig,
    /// Container runtimes to watch for metadata.
    pub containers: ContainersConfig,
    /// The daemon's own log (to stderr).
    pub log: LogConfig,
    /// Directory for compiled rules (cache keyed by content hash). Default:
    /// `/var/cache/vigil` as root, else `$XDG_CACHE_HOME/vigil` or `~/.cache/vigil`.
    /// Set to "" to disable the cache.
    pub cache_dir: Option<PathBuf>,
}

/// `[containers]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainersConfig {
    /// Docker's API socket: a path, `auto` (the first of
    /// /host/run/docker.sock, /run/docker.sock, /var/run/docker.sock that
    /// exists) or `""` (none).
    pub docker_socket: String,
    /// Podman's API socket (`podman system service`): a path, `auto` (the
    /// first of /host/run/podman/podman.sock, /run/podman/podman.sock that
    /// exists) or `""` (none).
    pub podman_socket: String,
    /// The CRI socket of containerd or CRI-O: a path, `auto` (the first of
    /// /host/run/containerd/containerd.sock, /run/containerd/containerd.sock,
    /// /host/run/crio/crio.sock, /run/crio/crio.sock that exists) or `""`.
    pub cri_socket: String,
    /// How long an event of a container no runtime has described yet may
    /// wait for its description (`0s`: never wait). Past it, the event goes
    /// out with its container's id only, labelled `vigil.unresolved`.
    #[serde(with = "humantime_serde")]
    pub hold_timeout: Duration,
    /// Most events waiting so; past it the oldest go out unresolved.
    pub hold_max_events: usize,
}

impl Default for ContainersConfig {
    fn default() -> Self {
        ContainersConfig {
            docker_socket: "auto".into(),
            podman_socket: "auto".into(),
            cri_socket: "auto".into(),
            hold_timeout: Duration::from_secs(2),
            hold_max_events: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `debug`, `vigil_engine=debug,warn`...
    /// `RUST_LOG` overrides it.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
    /// How often to log each rule's figures while running (`0s`: only at exit).
    #[serde(with = "humantime_serde")]
    pub stats_interval: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: LogFormat::Text, stats_interval: Duration::from_secs(300) }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse(path.to_path_buf(), e))?;
        config.validate()?;
        if let Some(why) = config.secrets_exposed_by(path) {
            tracing::warn!(path = %path.display(), "{why}");
        }
        Ok(config)
    }

    /// Checks what types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let d = &self.dispatch;
        if !(1..=4096).contains(&d.batch_size) {
            return Err(invalid("dispatch.batch_size", "must be between 1 and 4096"));
        }
        check_timeout("dispatch.call_timeout", d.call_timeout)?;
        if d.epoch_tick.is_some() {
            tracing::warn!(
                "dispatch.epoch_tick is ignored: call deadlines are watched to the clock, not counted in ticks; \
                 remove it from the config"
            );
        }
        check_memory("dispatch.memory_limit", d.memory_limit)?;
        check_cpu_budget("dispatch.cpu_budget", d.cpu_budget)?;
        if d.max_alerts_per_sec == 0 {
            return Err(invalid("dispatch.max_alerts_per_sec", "must be at least 1"));
        }
        if d.max_faults == 0 {
            return Err(invalid("dispatch.max_faults", "must be at least 1"));
        }
        if d.quarantine_initial.is_zero() || d.quarantine_max < d.quarantine_initial {
            return Err(invalid(
                "dispatch.quarantine_max",
                "must be at least dispatch.quarantine_initial, which must be > 0",
            ));
        }
        if self.source.channel_batches == 0 {
            return Err(invalid("source.channel_batches", "must be at least 1"));
        }
        let ring = self.source.ebpf.ring_buffer.as_u64();
        if !ring.is_power_of_two() || !(4096..=1 << 30).contains(&ring) {
            return Err(invalid("source.ebpf.ring_buffer", "must be a power of two between 4 KiB and 1 GiB"));
        }
        if self.source.ebpf.wakeup_delay > Duration::from_millis(100) {
            return Err(invalid("source.ebpf.wakeup_delay", "must be at most 100ms"));
        }
        if !(-20..=19).contains(&d.thread_nice) {
            return Err(invalid("dispatch.thread_nice", "must be between -20 and 19"));
        }
        if !d.thread_slice.is_zero() && !(crate::sched::MIN_SLICE..=crate::sched::MAX_SLICE).contains(&d.thread_slice) {
            return Err(invalid(
                "dispatch.thread_slice",
                "must be 0 (the kernel's default) or between 100us and 100ms",
            ));
        }
        if self.source.ebpf.max_exited == 0 {
            return Err(invalid("source.ebpf.max_exited", "must be at least 1"));
        }
        if self.source.kind == SourceKind::Replay && self.source.replay.is_none() {
            return Err(invalid("source.replay", "is required when source.kind = \"replay\""));
        }
        for entry in &self.rules.disable {
            let id = entry.strip_prefix("tag:").unwrap_or(entry);
            if id.is_empty() {
                return Err(invalid("rules.disable", format!("empty entry {entry:?}")));
            }
        }
        for (id, s) in &self.rules.settings {
            let key = |k: &str| format!("rules.settings.{id}.{k}");
            if !valid_rule_id(id) {
                return Err(invalid(format!("rules.settings.{id}"), "rule ids are lowercase letters, digits and '-'"));
            }
            if let Some(b) = s.cpu_budget {
                check_cpu_budget(&key("cpu_budget"), b)?;
            }
            if let Some(t) = s.call_timeout {
                check_timeout(&key("call_timeout"), t)?;
            }
            if let Some(m) = s.memory_limit {
                check_memory(&key("memory_limit"), m)?;
            }
            if let Some(w) = &s.wasi {
                for dir in &w.read_dirs {
                    if !dir.is_absolute() || !dir.is_dir() {
                        return Err(invalid(
                            key("wasi.read_dirs"),
                            format!("{} is not an existing absolute directory", dir.display()),
                        ));
                    }
                }
            }
        }
        self.output.validate()?;
        self.alerts.validate()?;
        if self.log.level.parse::<tracing_subscriber::EnvFilter>().is_err() {
            return Err(invalid("log.level", format!("{:?} is not a valid filter", self.log.level)));
        }
        Ok(())
    }

    /// What is wrong when the config file at `path` holds secrets (a
    /// webhook's inline HMAC secret or headers, credentials or a query
    /// string in its URL) and other users can read it; `None` when fine.
    pub fn secrets_exposed_by(&self, path: &Path) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let webhooks = self
            .output
            .webhook
            .iter()
            .filter(|w| w.hmac_secret.is_some() || !w.headers.is_empty() || w.url.contains('@') || w.url.contains('?'))
            .map(|w| format!("webhook {}", w.name));
        let nats = self.output.nats.iter().filter(|n| n.holds_secrets()).map(|n| format!("nats {}", n.name));
        let secrets: Vec<String> = webhooks.chain(nats).collect();
        let mode = std::fs::metadata(path).ok()?.mode();
        (!secrets.is_empty() && mode & 0o044 != 0).then(|| {
            format!(
                "the config file holds secrets ({}) and other users can read it (mode {:o}): chmod 600 it, \
                 or move them to files (hmac_secret_file, creds_file, nkey_seed_file)",
                secrets.join(", "),
                mode & 0o777
            )
        })
    }

    /// The compile cache directory, `None` when disabled.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        match &self.cache_dir {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p.clone()),
            None => Some(default_cache_dir()).filter(|p| !p.as_os_str().is_empty()),
        }
    }
}

fn check_timeout(key: &str, t: Duration) -> Result<(), ConfigError> {
    if t < Duration::from_millis(1) || t > Duration::from_secs(60) {
        return Err(invalid(key, "must be between 1ms and 60s"));
    }
    Ok(())
}

fn check_cpu_budget(key: &str, b: Duration) -> Result<(), ConfigError> {
    if (!b.is_zero() && b < Duration::from_millis(1)) || b > Duration::from_secs(1) {
        return Err(invalid(key, "must be 0 (no budget) or between 1ms and 1s (CPU time per second)"));
    }
    Ok(())
}

fn check_memory(key: &str, m: ByteSize) -> Result<(), ConfigError> {
    if m < ByteSize::mib(1) || m > ByteSize::gib(4) {
        return Err(invalid(key, "must be between 1MiB and 4GiB"));
    }
    Ok(())
}

fn default_cache_dir() -> PathBuf {
    // Never a shared directory like /tmp without a home: compiled code there would run in the daemon.
    daemon_dir("/var/cache/vigil", ("XDG_CACHE_HOME", "vigil"), ".cache/vigil").unwrap_or_default()
}

/// A directory of the daemon's: `as_root` when running as root, else
/// `$XDG_…/sub` or `~/home_sub`; `None` without a home.
fn daemon_dir(as_root: &str, (xdg, sub): (&str, &str), home_sub: &str) -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Some(PathBuf::from(as_root));
    }
    if let Some(x) = std::env::var_os(xdg).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join(sub));
    }
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(home_sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outputs read `min_priority` by its lowercase name alike.
    #[test]
    fn nats_and_webhook_outputs_read_min_priority_the_same_way() {
        let c: Config = toml::from_str(
            "[[output.nats]]\nname = \"n\"\nservers = [\"nats://127.0.0.1:4222\"]\nmin_priority = \"warning\"\n\
             [[output.webhook]]\nname = \"w\"\nurl = \"http://127.0.0.1:1/\"\nmin_priority = \"warning\"\n",
        )
        .unwrap();
        assert_eq!(c.output.nats[0].min_priority, vigil_event::Priority::Warning);
        assert_eq!(c.output.webhook[0].min_priority, vigil_event::Priority::Warning);
        assert!(toml::from_str::<Config>("[[output.nats]]\nname = \"n\"\nmin_priority = \"loud\"\n").is_err());
    }

    fn parse(s: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(s).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn empty_config_is_valid_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.dispatch.batch_size, 128);
        assert!(c.output.stdout.enabled);
    }

    #[test]
    fn full_config_parses() {
        let c = parse(
            r#"
            cache_dir = "/tmp/x"
            [rules]
            dir = "/etc/vigil/rules"
            disable = ["tag:noisy", "crypto-miner"]
            [rules.settings.discovery-burst]
            config = { threshold = 3, window_secs = 30 }
            call_timeout = "20ms"
            memory_limit = "16MiB"
            wasi = { stdio = true, env = ["TZ"] }
            [source]
            kind = "replay"
            replay = "x.jsonl"
            [dispatch]
            batch_size = 64
            call_timeout = "5ms"
            [output.file]
            path = "/tmp/alerts.json"
            fsync = "always"
            max_bytes = "10MiB"
            [log]
            level = "debug"
            format = "json"
            "#,
        )
        .unwrap();
        assert_eq!(c.rules.settings["discovery-burst"].call_timeout, Some(Duration::from_millis(20)));
        assert!(c.rules.settings["discovery-burst"].wasi.as_ref().unwrap().stdio);
    }

    #[test]
    fn a_config_with_secrets_readable_by_others_is_said() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vigil.toml");
        let text = "[[output.webhook]]\nname = \"siem\"\nurl = \"https://siem.example/in?token=x\"\n";
        std::fs::write(&path, text).unwrap();
        let c: Config = toml::from_str(text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let why = c.secrets_exposed_by(&path).expect("said");
        assert!(why.contains("siem") && why.contains("644"), "{why}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(c.secrets_exposed_by(&path), None);
        // No secret, no warning.
        let plain: Config =
            toml::from_str("[[output.webhook]]\nname = \"a\"\nurl = \"https://a.example/in\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(plain.secrets_exposed_by(&path), None);
    }

    #[test]
    fn the_retired_epoch_tick_still_loads_and_is_ignored() {
        let c = parse("[dispatch]\nepoch_tick = \"1ms\"").unwrap();
        assert_eq!(c.dispatch.epoch_tick, Some(Duration::from_millis(1)));
        assert_eq!(c.dispatch.call_timeout, DispatchConfig::default().call_timeout);
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("[dispatch]\nbatch_sise = 3").unwrap_err();
        assert!(e.contains("batch_sise"), "{e}");
        let e = parse("[dispatch]\nbatch_size = 0").unwrap_err();
        assert!(e.contains("dispatch.batch_size"), "{e}");
        let e = parse("[dispatch]\nthread_slice = \"1s\"").unwrap_err();
        assert!(e.contains("dispatch.thread_slice"), "{e}");
        let e = parse("[dispatch]\nthread_slice = \"50us\"").unwrap_err();
        assert!(e.contains("dispatch.thread_slice"), "{e}");
        assert!(parse("[dispatch]\nthread_slice = \"0s\"").is_ok());
        assert!(parse("[dispatch]\nthread_slice = \"2ms\"").is_ok());
        let e = parse("[dispatch]\nthread_nice = -21").unwrap_err();
        assert!(e.contains("dispatch.thread_nice"), "{e}");
        assert!(parse("[dispatch]\nthread_nice = 0").is_ok());
        let e = parse("[dispatch]\ncall_timeout = \"soon\"").unwrap_err();
        assert!(e.contains("call_timeout"), "{e}");
        let e = parse("[rules.settings.x]\nmemory_limit = \"1KiB\"").unwrap_err();
        assert!(e.contains("rules.settings.x.memory_limit"), "{e}");
        let e = parse("[source]\nkind = \"replay\"").unwrap_err();
        assert!(e.contains("source.replay"), "{e}");
        let e = parse("[output.file]\npath = \"/nonexistent-dir/a\"").unwrap_err();
        assert!(e.contains("output.file.path"), "{e}");
        let e = parse("[log]\nlevel = \"[[[\"").unwrap_err();
        assert!(e.contains("log.level"), "{e}");
    }
}
