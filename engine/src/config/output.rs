//! `[output]`, `[alerts]` and `[metrics]`: where alerts go, how they are
//! shaped on the way, and the daemon's own figures.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Deserializer, Serialize};
use vigil_event::Priority;

use super::{ConfigError, invalid};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Alerts on stdout, as JSON lines (the default output).
    pub stdout: StdoutConfig,
    /// Append alerts to a file (off unless set).
    pub file: Option<FileConfig>,
    /// Webhooks, any number: `[[output.webhook]]`.
    pub webhook: Vec<WebhookConfig>,
    /// NATS JetStream streams, any number: `[[output.nats]]`.
    pub nats: Vec<super::NatsConfig>,
    /// Where webhook and NATS spools live (one file per output, named after it).
    /// Default: `/var/lib/vigil/spool` as root, else
    /// `$XDG_STATE_HOME/vigil/spool` or `~/.local/state/vigil/spool`.
    pub spool_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StdoutConfig {
    /// Print alerts to stdout as JSON lines.
    pub enabled: bool,
    /// Output fields to keep (see `output.webhook.fields`); empty: all.
    pub fields: Vec<String>,
}

impl Default for StdoutConfig {
    fn default() -> Self {
        StdoutConfig { enabled: true, fields: Vec::new() }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file; created if absent, appended to.
    pub path: PathBuf,
    /// `never` (the OS decides), `always` (after every batch of alerts), or
    /// `interval` (at most every `fsync_interval`).
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// With `fsync = "interval"`: the longest time between two fsyncs.
    #[serde(default = "default_fsync_interval", with = "humantime_serde")]
    pub fsync_interval: Duration,
    /// Rotate when the file would grow past this.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// Rotated files kept (`path.1` newest ... `path.N`).
    #[serde(default = "default_max_files")]
    pub max_files: u32,
    /// Output fields to keep (see `output.webhook.fields`); empty: all.
    #[serde(default)]
    pub fields: Vec<String>,
}

fn default_fsync_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_max_bytes() -> ByteSize {
    ByteSize::mib(100)
}
fn default_max_files() -> u32 {
    5
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    Never,
    Always,
    #[default]
    Interval,
}

/// One `[[output.webhook]]`: alerts POSTed as JSON, spooled on disk until
/// the receiver acknowledges them with a 2xx.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Names the output in logs and metrics, and its spool file. Required,
    /// unique; letters, digits, `-` and `_`.
    pub name: String,
    /// `http://` or `https://` URL. Required.
    pub url: String,
    /// Extra request headers (e.g. `Authorization`).
    pub headers: BTreeMap<String, String>,
    /// `vigil` (Vigil's alert JSON) or `falco` (Falco's JSON alert, as
    /// falcosidekick takes it).
    pub format: PayloadFormat,
    /// `batch`: a JSON array of alerts per request; `single`: one alert per
    /// request (what falcosidekick's `/` endpoint takes).
    pub mode: RequestMode,
    /// Most alerts in one request.
    pub max_alerts: usize,
    /// Most bytes of alerts in one request (before gzip). A larger single
    /// alert is still sent, alone.
    pub max_bytes: ByteSize,
    /// How long the first alert of a batch may wait for others.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Compress request bodies (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// Deadline of one request (connect, send, response).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Only alerts at least this severe (`debug` ... `emergency`).
    #[serde(deserialize_with = "priority_by_name")]
    pub min_priority: Priority,
    /// PEM file of the CA(s) to trust instead of the system's.
    pub ca_cert: Option<PathBuf>,
    /// PEM files of a client certificate and its key, for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// The key of `client_cert` (PEM).
    pub client_key: Option<PathBuf>,
    /// Secret for the `X-Vigil-Signature: sha256=<hex HMAC-SHA256 of the body>`
    /// header; or `hmac_secret_file`, a file holding it (e.g. a mounted
    /// Kubernetes Secret). No signature when neither is set.
    pub hmac_secret: Option<String>,
    /// A file holding the HMAC secret, instead of `hmac_secret`.
    pub hmac_secret_file: Option<PathBuf>,
    /// Bound of the on-disk spool; when full, the oldest alerts are dropped,
    /// counted, and reported by an `alerts-dropped` alert. The batch being
    /// delivered is never dropped (it may arrive), so the spool can exceed
    /// the bound by one batch (`max_alerts`, `max_bytes`).
    pub spool_max_bytes: ByteSize,
    /// First retry delay; doubles up to `retry_max`, each with up to 100%
    /// random jitter added (so the longest wait is twice `retry_max`).
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// The longest wait between two attempts (the wait doubles from
    /// `retry_initial`, plus up to 100% jitter).
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// At shutdown, how long to keep delivering before leaving the rest in
    /// the spool for the next start.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Output fields to keep: exact names, or prefixes ending in `*`
    /// (`container.*`). Empty: all.
    pub fields: Vec<String>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            name: String::new(),
            url: String::new(),
            headers: BTreeMap::new(),
            format: PayloadFormat::Vigil,
            mode: RequestMode::Batch,
            max_alerts: 1000,
            max_bytes: ByteSize::mib(1),
            max_delay: Duration::from_millis(500),
            gzip: false,
            timeout: Duration::from_secs(10),
            min_priority: Priority::Debug,
            ca_cert: None,
            client_cert: None,
            client_key: None,
            hmac_secret: None,
            hmac_secret_file: None,
            spool_max_bytes: ByteSize::mib(256),
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
            fields: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    #[default]
    Vigil,
    Falco,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RequestMode {
    #[default]
    Batch,
    Single,
}

/// Falco's priority names, any case; `info` for `informational`.
pub fn parse_priority(name: &str) -> Option<Priority> {
    let name = name.to_ascii_lowercase();
    if name == "info" {
        return Some(Priority::Informational);
    }
    Priority::ALL.into_iter().find(|p| format!("{p:?}").to_ascii_lowercase() == name)
}

pub(super) fn priority_by_name<'de, D: Deserializer<'de>>(d: D) -> Result<Priority, D::Error> {
    let name = String::deserialize(d)?;
    parse_priority(&name).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "unknown priority {name:?}; one of emergency, alert, critical, error, warning, notice, informational, debug"
        ))
    })
}

/// `[alerts]`: shaping applied to every alert before any output.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Alerts per second one rule may raise on average in one container
    /// (token bucket; the host's own processes count as one container): a
    /// noisy container cannot use up what another container's alerts need.
    /// 0: no limit. Alerts over the limit are dropped and counted.
    pub rule_rate: u32,
    /// How many alerts one rule may raise at once above `rule_rate`, in one
    /// container.
    pub rule_burst: u32,
    /// The same, for all rules together.
    pub global_rate: u32,
    /// The burst allowed above `global_rate`.
    pub global_burst: u32,
    /// Identical alerts (same rule, priority, message and fields, apart from
    /// the event's time, number and pids) within this window are folded:
    /// the first goes out, the others are counted, and the count goes out
    /// with the next one ("and N similar"). `0s`: off.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Regular expressions whose matches in alert messages and string fields
    /// (command lines above all) are replaced by `<redacted>`; where a
    /// pattern has a capture group, only the group is replaced.
    pub redact: Vec<String>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            rule_rate: 100,
            rule_burst: 1000,
            global_rate: 1000,
            global_burst: 10_000,
            dedup_window: Duration::from_secs(10),
            redact: default_redactions(),
        }
    }
}

/// Secrets commonly passed on command lines.
pub fn default_redactions() -> Vec<String> {
    [
        // key=value, key:value
        r"(?i)(?:password|passwd|pwd|secret|token|api[-_]?key|access[-_]?key|auth)[=:]([^\s&]+)",
        // --password value
        r"(?i)--?(?:password|passwd|secret|token|api[-_]?key|access[-_]?key)\s+(\S+)",
        // scheme://user:password@host
        r"://[^/\s:@]+:([^/\s@]+)@",
        // Authorization: Bearer xxx
        r"(?i)bearer\s+([A-Za-z0-9._~+/=-]+)",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// `[metrics]`: the Prometheus endpoint, with `/healthz` and `/readyz`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics`, `/healthz` and `/readyz` (off by default).
    pub enabled: bool,
    /// Address to listen on; loopback by default. Port 0 picks a free port
    /// (the log says which).
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: false, listen: SocketAddr::from(([127, 0, 0, 1], 9376)) }
    }
}

impl OutputConfig {
    /// The spool directory (see `spool_dir`).
    pub fn spool_dir(&self) -> PathBuf {
        const AS_ROOT: &str = "/var/lib/vigil/spool";
        if let Some(d) = &self.spool_dir {
            return d.clone();
        }
        super::daemon_dir(AS_ROOT, ("XDG_STATE_HOME", "vigil/spool"), ".local/state/vigil/spool")
            .unwrap_or_else(|| PathBuf::from(AS_ROOT))
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(f) = &self.file {
            if f.max_files == 0 {
                return Err(invalid("output.file.max_files", "must be at least 1"));
            }
            if f.max_bytes.as_u64() < 4096 {
                return Err(invalid("output.file.max_bytes", "must be at least 4KiB"));
            }
            let parent = f.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(invalid("output.file.path", format!("directory {} does not exist", parent.display())));
            }
        }
        let mut nats_names = std::collections::BTreeSet::new();
        for (i, n) in self.nats.iter().enumerate() {
            n.validate(i)?;
            if !nats_names.insert(n.name.as_str()) {
                return Err(invalid(
                    format!("output.nats[{i}].name"),
                    format!("{:?} is used by two NATS outputs", n.name),
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, w) in self.webhook.iter().enumerate() {
            let key = |k: &str| format!("output.webhook[{i}].{k}");
            if w.name.is_empty() || !w.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(invalid(key("name"), "required: letters, digits, '-' and '_'"));
            }
            if !names.insert(w.name.as_str()) {
                return Err(invalid(key("name"), format!("{:?} is used by two webhooks", w.name)));
            }
            match reqwest::Url::parse(&w.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                Ok(_) => return Err(invalid(key("url"), "must be an http:// or https:// URL with a host")),
                Err(e) => return Err(invalid(key("url"), format!("{:?}: {e}", w.url))),
            }
            for (h, v) in &w.headers {
                if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err()
                    || reqwest::header::HeaderValue::from_str(v).is_err()
                {
                    return Err(invalid(key("headers"), format!("{h:?} is not a valid header")));
                }
            }
            if !(1..=100_000).contains(&w.max_alerts) {
                return Err(invalid(key("max_alerts"), "must be between 1 and 100000"));
            }
            if w.max_bytes < ByteSize::kib(1) {
                return Err(invalid(key("max_bytes"), "must be at least 1KiB"));
            }
            if w.timeout.is_zero() {
                return Err(invalid(key("timeout"), "must be more than 0"));
            }
            if w.retry_initial.is_zero() || w.retry_max < w.retry_initial {
                return Err(invalid(key("retry_max"), "must be at least retry_initial, which must be > 0"));
            }
            if w.spool_max_bytes < ByteSize::mib(1) {
                return Err(invalid(key("spool_max_bytes"), "must be at least 1MiB"));
            }
            if w.client_cert.is_some() != w.client_key.is_some() {
                return Err(invalid(key("client_cert"), "client_cert and client_key go together"));
            }
            for (k, p) in [("ca_cert", &w.ca_cert), ("client_cert", &w.client_cert), ("client_key", &w.client_key)] {
                if let Some(p) = p
                    && !p.is_file()
                {
                    return Err(invalid(key(k), format!("{} is not a readable file", p.display())));
                }
            }
            if w.hmac_secret.is_some() && w.hmac_secret_file.is_some() {
                return Err(invalid(key("hmac_secret"), "give hmac_secret or hmac_secret_file, not both"));
            }
            if let Some(p) = &w.hmac_secret_file
                && !p.is_file()
            {
                return Err(invalid(key("hmac_secret_file"), format!("{} is not a readable file", p.display())));
            }
        }
        Ok(())
    }
}

impl AlertsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.rule_rate > 0 && self.rule_burst == 0 {
            return Err(invalid("alerts.rule_burst", "must be at least 1 when alerts.rule_rate is set"));
        }
        if self.global_rate > 0 && self.global_burst == 0 {
            return Err(invalid("alerts.global_burst", "must be at least 1 when alerts.global_rate is set"));
        }
        for (i, r) in self.redact.iter().enumerate() {
            if let Err(e) = regex::Regex::new(r) {
                return Err(invalid(format!("alerts.redact[{i}]"), e.to_string()));
            }
        }
        Ok(())
    }
}
