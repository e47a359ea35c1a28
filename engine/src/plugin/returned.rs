//! What rules return to the host, parsed from JSON under hard limits (see
//! `detector` in wit/rules.wit for why JSON and not WIT records): a rule
//! can make the host copy at most what its memory cap holds, once, and can
//! never make it keep more than these limits.

use serde::Deserialize;
use vigil_event::{EventKind, KindSet};

use super::meta::RuleMeta;
pub use crate::alert::RuleAlert;
use vigil_event::Priority;

/// Alerts kept from one call; the rest are dropped and counted.
pub const MAX_ALERTS_PER_CALL: usize = 10_000;
/// Alerts kept per event of the batch (at least [`MIN_ALERTS_PER_CALL`] a
/// call): a rule that says more about one event is flooding, and every
/// alert kept is built and queued with its event's context.
pub const MAX_ALERTS_PER_EVENT: usize = 4;
/// Alerts a call may return whatever the size of its batch.
pub const MIN_ALERTS_PER_CALL: usize = 16;
/// Bytes `on-batch` may return per event of the batch, beyond
/// [`MIN_RETURN_BYTES`]; a longer return is a fault, not parsed.
pub const MAX_RETURN_BYTES_PER_EVENT: usize = 16 << 10;
/// Bytes any call may return.
pub const MIN_RETURN_BYTES: usize = 64 << 10;

/// The alerts a call over `events` events may return.
pub fn max_alerts(events: usize) -> usize {
    events.saturating_mul(MAX_ALERTS_PER_EVENT).clamp(MIN_ALERTS_PER_CALL, MAX_ALERTS_PER_CALL)
}

/// The bytes a call over `events` events may return.
pub fn max_return_bytes(events: usize) -> usize {
    MIN_RETURN_BYTES.saturating_add(events.saturating_mul(MAX_RETURN_BYTES_PER_EVENT))
}
/// Longest message kept (bytes); longer ones are cut.
pub const MAX_MESSAGE: usize = 4096;
/// Most tags (and fields) kept per alert or rule.
pub const MAX_TAGS: usize = 32;
/// Longest tag, field key, id or version (bytes).
pub const MAX_NAME: usize = 128;
/// Longest field value or description (bytes).
pub const MAX_VALUE: usize = 4096;

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct AlertJson {
    #[serde(default)]
    rule: String,
    priority: String,
    message: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    fields: Vec<LabelJson>,
    event_index: u32,
}

#[derive(Deserialize)]
struct LabelJson {
    key: String,
    value: String,
}

#[derive(Deserialize)]
struct MetadataJson {
    id: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    description: String,
    subscriptions: Vec<String>,
    /// Absent in rules built before it existed: they get every event.
    #[serde(default, rename = "containers-only")]
    containers_only: bool,
    #[serde(default)]
    tags: Vec<String>,
    /// Interpreters of rule files say which dialects they read.
    #[serde(default)]
    interprets: Vec<String>,
    /// An interpreter instance's load report (after `init`).
    #[serde(default)]
    report: Option<vigil_rulelang::Report>,
}

/// Parses `on-batch`'s return for a batch of `events` events. Errors
/// describe what was wrong (a rule bug); a return longer than
/// [`max_return_bytes`] is one, before any parsing. `dropped` counts alerts
/// beyond [`max_alerts`].
pub fn parse_alerts(json: &str, events: usize) -> Result<(Vec<RuleAlert>, usize), String> {
    if json.is_empty() || json == "[]" {
        return Ok((Vec::new(), 0));
    }
    let limit = max_return_bytes(events);
    if json.len() > limit {
        return Err(format!("returned {} bytes for {events} events; the limit is {limit}", json.len()));
    }
    let raw: Vec<AlertJson> = serde_json::from_str(json).map_err(|e| format!("returned invalid alert JSON: {e}"))?;
    let keep = max_alerts(events);
    let dropped = raw.len().saturating_sub(keep);
    let mut alerts = Vec::with_capacity(raw.len().min(keep));
    for a in raw.into_iter().take(keep) {
        alerts.push(RuleAlert {
            rule: cut(a.rule, MAX_VALUE),
            priority: Priority::from_name(&a.priority)
                .ok_or_else(|| format!("unknown priority {:?}", cut(a.priority, 32)))?,
            message: cut(a.message, MAX_MESSAGE),
            tags: a.tags.into_iter().take(MAX_TAGS).map(|t| cut(t, MAX_NAME)).collect(),
            fields: a
                .fields
                .into_iter()
                .take(MAX_TAGS)
                .map(|l| (cut(l.key, MAX_NAME), cut(l.value, MAX_VALUE)))
                .collect(),
            event_index: a.event_index,
        });
    }
    Ok((alerts, dropped))
}

/// Parses and validates `metadata`'s return.
pub fn parse_metadata(json: &str) -> Result<RuleMeta, String> {
    let m: MetadataJson = serde_json::from_str(json).map_err(|e| format!("metadata is not valid JSON: {e}"))?;
    if !crate::config::valid_rule_id(&m.id) {
        return Err(format!(
            "rule id {:?} must be 1-64 characters of lowercase letters, digits and '-'",
            cut(m.id, MAX_NAME)
        ));
    }
    let mut subscriptions = KindSet::EMPTY;
    for s in &m.subscriptions {
        let kind = EventKind::from_name(s)
            .ok_or_else(|| format!("rule {} subscribes to unknown event kind {:?}", m.id, cut(s.clone(), MAX_NAME)))?;
        subscriptions.insert(kind);
    }
    if subscriptions == KindSet::EMPTY {
        return Err(format!("rule {} subscribes to no event kind", m.id));
    }
    if m.tags.len() > MAX_TAGS || m.tags.iter().any(|t| t.len() > MAX_NAME) || m.version.len() > MAX_NAME {
        return Err(format!("rule {}: at most {MAX_TAGS} tags of {MAX_NAME} bytes, and a version of {MAX_NAME}", m.id));
    }
    Ok(RuleMeta {
        id: m.id,
        version: m.version,
        description: cut(m.description, MAX_VALUE),
        subscriptions,
        containers_only: m.containers_only,
        tags: m.tags,
        interprets: !m.interprets.is_empty(),
        files: m.report.map(|report| {
            let names = report
                .files
                .iter()
                .flat_map(|f| &f.rules)
                .filter(|r| r.status == vigil_rulelang::Status::Loaded)
                // Empty names and the daemon's own (vigil-alerts-dropped...) are not theirs to claim.
                .filter(|r| !r.name.is_empty() && !r.name.starts_with("vigil-"))
                .map(|r| r.name.clone())
                .collect();
            std::sync::Arc::new(super::meta::RuleFiles { report, names })
        }),
    })
}

/// `s` cut to at most `max` bytes, on a character boundary, marked with `…`.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max.saturating_sub('…'.len_utf8());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_parse_and_are_cut_to_limits() {
        let long = "é".repeat(5000);
        let json = format!(
            r#"[{{"rule":"x","priority":"warning","message":"{long}","tags":["a","b"],"fields":[{{"key":"k","value":"v"}}],"event-index":3}}]"#
        );
        let (alerts, dropped) = parse_alerts(&json, 1).unwrap();
        assert_eq!(dropped, 0);
        let a = &alerts[0];
        assert_eq!((a.priority, a.event_index), (Priority::Warning, 3));
        assert!(a.message.len() <= MAX_MESSAGE && a.message.ends_with('…'));
        assert_eq!(a.tags, ["a", "b"]);
        assert_eq!(a.fields, [("k".to_string(), "v".to_string())]);
        assert_eq!(parse_alerts("", 1).unwrap().0, []);
        assert_eq!(parse_alerts("[]", 1).unwrap().0, []);
    }

    #[test]
    fn too_many_alerts_are_dropped_and_counted() {
        let one = r#"{"priority":"notice","message":"m","event-index":0}"#;
        let json = format!("[{}]", vec![one; MAX_ALERTS_PER_CALL + 5].join(","));
        let (alerts, dropped) = parse_alerts(&json, 100_000).unwrap();
        assert_eq!((alerts.len(), dropped), (MAX_ALERTS_PER_CALL, 5));
        // Per event of the batch: 4 each, and 16 whatever the batch.
        let json = format!("[{}]", vec![one; 1000].join(","));
        assert_eq!(parse_alerts(&json, 10).unwrap().0.len(), 40);
        assert_eq!(parse_alerts(&json, 1).unwrap().0.len(), MIN_ALERTS_PER_CALL);
    }

    #[test]
    fn a_giant_return_is_refused_unparsed() {
        let giant = format!(r#"[{{"priority":"notice","message":"{}","event-index":0}}]"#, "x".repeat(1 << 20));
        let e = parse_alerts(&giant, 1).unwrap_err();
        assert!(e.contains("bytes for 1 events; the limit is"), "{e}");
        // The same is fine for a batch big enough to explain it.
        assert!(parse_alerts(&giant, 128).is_ok());
    }

    #[test]
    fn bad_output_is_an_error_not_a_panic() {
        for bad in ["{", "[1]", r#"[{"priority":"loud","message":"m","event-index":0}]"#, "null", "[{}]"] {
            assert!(parse_alerts(bad, 1).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_is_validated() {
        let m = parse_metadata(r#"{"id":"a-b","version":"1","description":"d","subscriptions":["process-exec","events-lost"],"tags":["t"]}"#).unwrap();
        assert!(m.subscriptions.contains(EventKind::ProcessExec) && m.subscriptions.contains(EventKind::EventsLost));
        assert!(!m.containers_only, "absent means every event");
        let scoped = parse_metadata(r#"{"id":"a","subscriptions":["process-exec"],"containers-only":true}"#).unwrap();
        assert!(scoped.containers_only);
        for bad in [
            r#"{"id":"A","subscriptions":["process-exec"]}"#,
            r#"{"id":"a","subscriptions":[]}"#,
            r#"{"id":"a","subscriptions":["syscall"]}"#,
            r#"{"id":"a"}"#,
            r#"{"id":"a","subscriptions":["process-exec"],"containers-only":"yes"}"#,
            "not json",
        ] {
            assert!(parse_metadata(bad).is_err(), "{bad}");
        }
    }
}
