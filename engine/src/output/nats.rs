//! NATS JetStream outputs: alerts published to `<subject_prefix>.<host>.<priority>`,
//! delivered at least once through the output's spool (see
//! [`crate::output::spooled`]).
//!
//! A round publishes the oldest spooled alerts (up to `max_alerts`), each
//! with its id as `Nats-Msg-Id` (read from the record's head, not parsed
//! back from its JSON: [`split_head`]), then awaits every acknowledgement: the
//! round is delivered, and leaves the spool, only when JetStream stored all
//! of them. A server that is down, a stream that does not capture the
//! subject ("no responders"), a missing acknowledgement: the round is
//! retried with backoff. An alert sent twice (a retried round, a crash
//! between the acknowledgement and the spool's removal) is dropped by the
//! stream within its duplicate window.

use std::path::Path;

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;

use super::OutputError;
use super::delivery::{Outcome, Transport};
use super::spool::Record;
use super::spooled::{Spooled, SpooledOutput, split_head};
use crate::config::NatsConfig;

/// Publishes to one JetStream stream.
struct JetStream {
    js: jetstream::Context,
    /// `<subject_prefix>.<host>`.
    subject: String,
}

/// What the transport reads of an alert spooled as JSON alone (before
/// records had heads): its id (Vigil's `id`, Falco's `uuid`) and priority.
#[derive(serde::Deserialize, Default)]
struct JsonHead {
    #[serde(alias = "uuid")]
    id: Option<String>,
    priority: Option<String>,
}

/// Where a record goes: its priority as a subject token, its id (the
/// message id JetStream de-duplicates by), and the alert's JSON.
fn route(record: &Bytes) -> (String, Option<String>, Bytes) {
    if let Some((head, json)) = split_head(record) {
        let id = (!head.id.is_empty()).then(|| head.id.to_string());
        return (subject_token(head.priority), id, record.slice(json..));
    }
    let head: JsonHead = serde_json::from_slice(record).unwrap_or_default();
    (head.priority.as_deref().map_or_else(|| "unknown".to_string(), subject_token), head.id, record.clone())
}

impl Transport for JetStream {
    async fn send(&self, records: &[Record]) -> Outcome {
        let mut acks = Vec::with_capacity(records.len());
        for r in records {
            let (priority, id, payload) = route(&r.bytes);
            let mut headers = HeaderMap::new();
            if let Some(id) = &id {
                headers.insert("Nats-Msg-Id", id.as_str());
            }
            let subject = format!("{}.{priority}", self.subject);
            match self.js.publish_with_headers(subject, headers, payload).await {
                Ok(ack) => acks.push(ack),
                Err(e) => return Outcome::Retry { why: format!("publish: {e}"), after: None },
            }
        }
        for ack in acks {
            // A repeat (`duplicate`) is acknowledged too: JetStream has it once.
            match ack.await {
                Ok(_) => {}
                Err(e) => {
                    return Outcome::Retry {
                        why: format!(
                            "no acknowledgement from JetStream (is a stream capturing {}.>?): {e}",
                            self.subject
                        ),
                        after: None,
                    };
                }
            }
        }
        Outcome::Delivered
    }
}

/// `text` as one subject token: lowercase, and none of `.`, `*`, `>` or whitespace.
fn subject_token(text: &str) -> String {
    let t: String = text
        .chars()
        .map(|c| if c == '.' || c == '*' || c == '>' || c.is_whitespace() { '_' } else { c.to_ascii_lowercase() })
        .collect();
    if t.is_empty() { "unknown".into() } else { t }
}

/// The servers, for logs: without userinfo or query.
fn servers(cfg: &NatsConfig) -> String {
    cfg.servers.iter().map(|s| super::webhook::redacted_url(s)).collect::<Vec<_>>().join(", ")
}

/// The client's options: authentication, TLS, the acknowledgement timeout.
async fn connect(cfg: &NatsConfig, label: &str) -> Result<async_nats::Client, String> {
    super::install_tls_provider();
    let mut o = async_nats::ConnectOptions::new()
        .name(format!("vigil {label}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .require_tls(cfg.tls_required);
    if let Some(path) = &cfg.creds_file {
        o = o.credentials_file(path).await.map_err(|e| format!("creds_file {}: {e}", path.display()))?;
    }
    if let Some(path) = &cfg.nkey_seed_file {
        let seed = std::fs::read_to_string(path).map_err(|e| format!("nkey_seed_file {}: {e}", path.display()))?;
        o = o.nkey(seed.trim().to_string());
    }
    if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
        o = o.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &cfg.token {
        o = o.token(token.clone());
    }
    if let Some(ca) = &cfg.ca_cert {
        o = o.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.client_cert, &cfg.client_key) {
        o = o.add_client_certificate(cert.clone(), key.clone());
    }
    let label = label.to_string();
    o = o.event_callback(move |event| {
        let label = label.clone();
        async move { tracing::info!(output = %label, %event, "NATS connection") }
    });
    o.connect(cfg.servers.clone()).await.map_err(|e| format!("cannot connect to {}: {e}", servers(cfg)))
}

/// Connects (in the background: a server down at the start is an outage
/// like any other, the alerts wait in the spool), opens the spool and
/// starts publishing (alerts left from an earlier run go first).
pub fn open(
    cfg: &NatsConfig,
    spool_dir: &Path,
    hostname: &str,
    runtime: tokio::runtime::Handle,
) -> Result<SpooledOutput, OutputError> {
    let label = format!("nats:{}", cfg.name);
    let setup = |message: String| OutputError::Setup { output: label.clone(), message };
    let client = runtime.block_on(connect(cfg, &label)).map_err(setup)?;
    // The context spawns its acknowledgement task on the runtime.
    let entered = runtime.enter();
    let mut js = jetstream::new(client);
    drop(entered);
    js.set_timeout(cfg.timeout);
    let subject = format!("{}.{}", cfg.subject_prefix, subject_token(hostname));
    let spooled = Spooled {
        kind: "nats",
        name: &cfg.name,
        format: cfg.format,
        fields: &cfg.fields,
        min_priority: cfg.min_priority,
        spool_max_bytes: cfg.spool_max_bytes.as_u64(),
        max_alerts: cfg.max_alerts,
        max_bytes: u64::MAX,
        max_delay: cfg.max_delay,
        retry_initial: cfg.retry_initial,
        retry_max: cfg.retry_max,
        drain_timeout: cfg.drain_timeout,
        heads: true,
    };
    let transport = JetStream { js, subject: subject.clone() };
    let output = SpooledOutput::start(&spooled, transport, spool_dir, hostname, runtime)?;
    tracing::info!(output = %label, servers = %servers(cfg), subject = %format!("{subject}.<priority>"), spooled = output.spooled(), "NATS JetStream output ready");
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records with a head route without parsing their JSON; records
    /// spooled as JSON alone (by an older version) are read as before.
    #[test]
    fn records_route_by_their_head_or_their_json() {
        let json = br#"{"id":"0193","priority":"Error","output":"x"}"#;
        let (priority, id, payload) = route(&Bytes::from_static(json));
        assert_eq!((priority.as_str(), id.as_deref(), &payload[..]), ("error", Some("0193"), &json[..]));
        let falco = br#"{"uuid":"77","priority":"Notice"}"#;
        let (priority, id, _) = route(&Bytes::from_static(falco));
        assert_eq!((priority.as_str(), id.as_deref()), ("notice", Some("77")));
        let mut headed = b"\x01warning\0abc\0".to_vec();
        headed.extend_from_slice(json);
        let (priority, id, payload) = route(&Bytes::from(headed));
        assert_eq!((priority.as_str(), id.as_deref(), &payload[..]), ("warning", Some("abc"), &json[..]));
        let (priority, id, _) = route(&Bytes::from_static(b"not json"));
        assert_eq!((priority.as_str(), id), ("unknown", None));
    }

    #[test]
    fn host_names_and_priorities_become_single_subject_tokens() {
        assert_eq!(subject_token("node-1.example.com"), "node-1_example_com");
        assert_eq!(subject_token("Critical"), "critical");
        assert_eq!(subject_token("a b*>"), "a_b__");
        assert_eq!(subject_token(""), "unknown");
    }
}
