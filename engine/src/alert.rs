//! The alert as Vigil outputs it. Its JSON shape is Falco's (`output`,
//! `priority`, `rule`, `time`, `output_fields`, `hostname`, `source`,
//! `tags`), so falcosidekick and what sits behind it accept Vigil alerts,
//! plus `id` (unique, for deduplication by receivers) and `rule_version`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use vigil_event::{Event, EventKind};

pub use vigil_event::Priority;

/// An alert as a rule returned it, within the host's limits (see
/// `plugin::returned`), before the host adds the event's context.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleAlert {
    /// The rule name the alert gives (empty when none); honoured only for
    /// rule files' instances, whose alerts carry their rules' own names.
    pub rule: String,
    pub priority: Priority,
    pub message: String,
    pub tags: Vec<String>,
    pub fields: Vec<(String, String)>,
    pub event_index: u32,
}

/// The rule an alert is output under.
pub struct AlertingRule<'a> {
    /// The name in the alert's `rule`.
    pub name: String,
    pub version: &'a str,
    /// The rule's own tags, ahead of those the alert adds.
    pub tags: &'a [String],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique id (UUIDv7: time-ordered).
    pub id: String,
    /// The event's time, RFC 3339 with nanoseconds, UTC.
    pub time: String,
    pub rule: String,
    pub rule_version: String,
    pub priority: Priority,
    /// The rule's message.
    pub output: String,
    /// `syscall` for process and cgroup events, `container` for lifecycle events.
    pub source: String,
    pub hostname: String,
    pub tags: Vec<String>,
    /// Context derived from the event, in Falco's field names, plus the rule's own fields.
    pub output_fields: BTreeMap<String, Value>,
}

impl Alert {
    /// About the bytes it takes in memory (its strings; 16 per field that
    /// is not a string), for bounds on what waits.
    pub fn approx_bytes(&self) -> usize {
        let fields: usize = self
            .output_fields
            .iter()
            .map(|(k, v)| k.len() + 48 + if let Value::String(s) = v { s.len() } else { 16 })
            .sum();
        std::mem::size_of::<Alert>()
            + self.output.len()
            + self.rule.len()
            + self.id.len()
            + self.time.len()
            + self.tags.iter().map(|t| t.len() + 24).sum::<usize>()
            + fields
    }
}

/// Builds output alerts; holds what is the same for all of them.
#[derive(Debug, Clone)]
pub struct AlertBuilder {
    hostname: String,
}

impl AlertBuilder {
    pub fn new(hostname: String) -> Self {
        AlertBuilder { hostname }
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// This host's name.
    pub fn from_host() -> Self {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Self::new(name)
    }

    pub fn build(&self, rule: AlertingRule, a: RuleAlert, event: &Event) -> Alert {
        // The rule's own tags first, then any the alert adds.
        let mut tags = rule.tags.to_vec();
        for t in a.tags {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        let mut f = event_fields(event);
        for (key, value) in a.fields {
            // A rule adds fields; it cannot overwrite the event's context.
            let key = if f.contains_key(&key) { format!("rule.{key}") } else { key };
            f.insert(key, Value::String(value));
        }
        Alert {
            id: uuid::Uuid::now_v7().to_string(),
            time: rfc3339_nanos(event.time_ns),
            rule: rule.name,
            rule_version: rule.version.to_string(),
            priority: a.priority,
            output: a.message,
            source: match event.kind {
                EventKind::ContainerCreate
                | EventKind::ContainerStart
                | EventKind::ContainerStop
                | EventKind::ContainerDelete
                | EventKind::ContainerCopyIn
                | EventKind::ContainerCopyOut => "container",
                _ => "syscall",
            }
            .into(),
            hostname: self.hostname.clone(),
            tags,
            output_fields: f,
        }
    }
}

/// Something the daemon itself raises an alert about (a rule quarantined,
/// rule files that claim the same id): Critical, source `internal`, tagged
/// `vigil`.
#[derive(Debug, Clone, PartialEq)]
pub struct Alarm {
    /// The alert's rule name, e.g. "Vigil rule quarantined".
    pub rule: &'static str,
    pub message: String,
    /// Extra `output_fields` (e.g. `vigil.rule.id`).
    pub fields: Vec<(&'static str, String)>,
}

impl AlertBuilder {
    /// The alert for `alarm`, now.
    pub fn alarm(&self, alarm: Alarm) -> Alert {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        Alert {
            id: uuid::Uuid::now_v7().to_string(),
            time: rfc3339_nanos(now),
            rule: alarm.rule.to_string(),
            rule_version: env!("CARGO_PKG_VERSION").to_string(),
            priority: Priority::Critical,
            output: crate::escape_controls(&alarm.message).into_owned(),
            source: "internal".into(),
            hostname: self.hostname.clone(),
            tags: vec!["vigil".into(), "self-protection".into()],
            output_fields: alarm.fields.into_iter().map(|(k, v)| (k.to_string(), Value::String(v))).collect(),
        }
    }
}

/// The event's context in Falco's field names.
pub fn event_fields(e: &Event) -> BTreeMap<String, Value> {
    let mut f = BTreeMap::new();
    let mut put = |k: &str, v: Value| {
        f.insert(k.to_string(), v);
    };
    put("evt.type", e.kind.name().into());
    put("evt.time", e.time_ns.into());
    put("evt.num", e.id.into());
    if let Some(p) = &e.process {
        put("proc.pid", p.tgid.into());
        put("proc.tid", p.pid.into());
        put("proc.ppid", p.ppid.into());
        put("proc.name", p.comm.clone().into());
        put("proc.exepath", p.exe.clone().into());
        put("proc.cmdline", p.argv.join(" ").into());
        if p.argv_truncated {
            put("proc.cmdline_truncated", true.into());
        }
        if !p.cwd.is_empty() {
            put("proc.cwd", p.cwd.clone().into());
        }
        if let Some(parent) = p.ancestry.first() {
            put("proc.pname", parent.comm.to_string().into());
            put("proc.pexepath", parent.exe.to_string().into());
            if !parent.argv.is_empty() {
                put("proc.pcmdline", parent.argv.join(" ").into());
            }
        }
        if !p.ancestry.is_empty() {
            let chain: Vec<Value> = p.ancestry.iter().map(|a| a.comm.to_string().into()).collect();
            put("proc.ancestors", chain.into());
        }
        put("user.uid", p.uid.into());
        put("group.gid", p.gid.into());
        let named = [("user.name", &p.user), ("group.name", &p.group), ("user.loginname", &p.login_user)];
        for (key, name) in named.into_iter().filter(|(_, n)| !n.is_empty()) {
            put(key, name.clone().into());
        }
        if let Some(uid) = p.login_uid {
            put("user.loginuid", uid.into());
        }
        if let Some(tty) = &p.tty {
            put("proc.tty", tty.device.into());
            put("proc.tty_name", tty.name.clone().into());
        }
        if !p.script.is_empty() {
            put("proc.script", p.script.clone().into());
        }
        let exe = &p.exe_file;
        for (key, set) in [
            ("proc.is_exe_upper_layer", exe.upper_layer),
            ("proc.is_exe_from_memfd", exe.memfd),
            ("proc.is_exe_unlinked", exe.unlinked),
        ] {
            if set {
                put(key, true.into());
            }
        }
    }
    if let Some(c) = &e.container {
        put("container.id", c.id.get(..12).unwrap_or(&c.id).into());
        put("container.full_id", c.id.clone().into());
        put("container.name", c.name.clone().into());
        put("container.image", c.image.clone().into());
        if !c.image_digest.is_empty() {
            put("container.image.digest", c.image_digest.clone().into());
        }
        put("container.type", c.runtime.name().into());
        put("container.privileged", c.privileged.into());
        if !c.network_mode.is_empty() {
            put("container.network_mode", c.network_mode.clone().into());
        }
        if let Some(ip) = c.networks.iter().map(|n| &n.ip).find(|ip| !ip.is_empty()) {
            put("container.ip", ip.clone().into());
        }
        if let Some(root) = c.runs_as_root {
            put("container.runs_as_root", root.into());
        }
    } else if e.process.is_some() {
        put("container.id", "host".into());
    }
    if let Some(p) = &e.pod {
        put("k8s.pod.name", p.name.clone().into());
        put("k8s.ns.name", p.namespace.clone().into());
        put("k8s.pod.uid", p.uid.clone().into());
        if let Some(ip) = p.ips.first() {
            put("k8s.pod.ip", ip.clone().into());
        }
    }
    if let Some(path) = &e.copy_path {
        put("container.copy_path", path.clone().into());
    }
    if let Some(code) = e.exit_code {
        put("evt.exit_code", code.into());
    }
    if let Some(l) = &e.lost {
        put("evt.lost_count", l.count.into());
        put("evt.lost_reason", l.reason.clone().into());
    }
    f
}

/// `2026-11-24T18:13:00.123456789Z`, Falco's time format.
pub fn rfc3339_nanos(ns: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falco_time_format() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339_nanos(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123456789Z");
    }

    #[test]
    fn priorities_serialize_as_falco_spells_them() {
        assert_eq!(serde_json::to_string(&Priority::Informational).unwrap(), "\"Informational\"");
    }
}
