//! `[[output.nats]]`: alerts published to a NATS JetStream stream.

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use super::{ConfigError, PayloadFormat, invalid};
use vigil_event::Priority;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Names the output in logs and metrics, and its spool file
    /// (`nats-<name>.redb`). Required, unique; letters, digits, `-` and `_`.
    pub name: String,
    /// The servers' URLs (`nats://host:4222`, or `tls://host:4222` for TLS).
    /// Required; the client reconnects to any of them.
    pub servers: Vec<String>,
    /// Alerts are published to `<subject_prefix>.<hostname>.<priority>`
    /// (e.g. `vigil.alerts.node-1.critical`); a JetStream stream must
    /// capture that subject (e.g. `vigil.alerts.>`). An alert leaves the
    /// spool only once JetStream acknowledged it; each carries its id as
    /// `Nats-Msg-Id`, so the stream drops a repeat within its
    /// duplicate window.
    pub subject_prefix: String,
    /// `vigil` (Vigil's alert JSON) or `falco` (Falco's JSON alert).
    pub format: PayloadFormat,
    /// Only alerts at least this severe (`debug` ... `emergency`).
    #[serde(deserialize_with = "super::output::priority_by_name")]
    pub min_priority: Priority,
    /// Output fields to keep (see `output.webhook.fields`); empty: all.
    pub fields: Vec<String>,
    /// A credentials file (JWT and nkey seed, as `nsc` writes it).
    pub creds_file: Option<PathBuf>,
    /// A file holding an nkey seed (`SU...`), for nkey authentication.
    pub nkey_seed_file: Option<PathBuf>,
    /// User and password authentication: the user.
    pub user: Option<String>,
    /// Its password (keep the config 0600, or use `creds_file`).
    pub password: Option<String>,
    /// Token authentication.
    pub token: Option<String>,
    /// PEM file of the CA(s) to trust for TLS instead of the system's.
    pub ca_cert: Option<PathBuf>,
    /// PEM files of a client certificate and its key, for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// The key of `client_cert` (PEM).
    pub client_key: Option<PathBuf>,
    /// Refuse to talk to a server without TLS.
    pub tls_required: bool,
    /// Most alerts published before their acknowledgements are awaited.
    pub max_alerts: usize,
    /// How long the first alert of a round may wait for others.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// How long to wait for JetStream's acknowledgement of a round.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Bound of the on-disk spool (as for webhooks).
    pub spool_max_bytes: ByteSize,
    /// First retry delay; doubles up to `retry_max`, with jitter.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// The longest wait between two attempts (plus up to 100% jitter).
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// At shutdown, how long to keep publishing before leaving the rest in
    /// the spool for the next start.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            name: String::new(),
            servers: Vec::new(),
            subject_prefix: "vigil.alerts".into(),
            format: PayloadFormat::Vigil,
            min_priority: Priority::Debug,
            fields: Vec::new(),
            creds_file: None,
            nkey_seed_file: None,
            user: None,
            password: None,
            token: None,
            ca_cert: None,
            client_cert: None,
            client_key: None,
            tls_required: false,
            max_alerts: 1000,
            max_delay: Duration::from_millis(20),
            timeout: Duration::from_secs(5),
            spool_max_bytes: ByteSize::mib(256),
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

impl NatsConfig {
    /// Whether the config file itself holds a secret of this output.
    pub fn holds_secrets(&self) -> bool {
        self.password.is_some() || self.token.is_some() || self.servers.iter().any(|s| s.contains('@'))
    }

    pub(super) fn validate(&self, i: usize) -> Result<(), ConfigError> {
        let key = |k: &str| format!("output.nats[{i}].{k}");
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(invalid(key("name"), "required: letters, digits, '-' and '_'"));
        }
        if self.servers.is_empty() {
            return Err(invalid(key("servers"), "required: at least one nats:// or tls:// URL"));
        }
        for s in &self.servers {
            match reqwest::Url::parse(s) {
                Ok(u) if matches!(u.scheme(), "nats" | "tls") && u.host().is_some() => {}
                _ => return Err(invalid(key("servers"), format!("{s:?} is not a nats:// or tls:// URL with a host"))),
            }
        }
        let valid_token = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_graphic() && !"*>.".contains(c));
        if !self.subject_prefix.split('.').all(valid_token) {
            return Err(invalid(key("subject_prefix"), "dot-separated tokens without spaces, '*' or '>'"));
        }
        if !(1..=100_000).contains(&self.max_alerts) {
            return Err(invalid(key("max_alerts"), "must be between 1 and 100000"));
        }
        if self.timeout.is_zero() {
            return Err(invalid(key("timeout"), "must be more than 0"));
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(invalid(key("client_cert"), "client_cert and client_key go together"));
        }
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            return Err(invalid(key("retry_max"), "must be at least retry_initial, which must be > 0"));
        }
        Ok(())
    }
}
