//! What each rule gets from the config: whether it loads, its limits, its
//! own config and its WASI grant, decided once its id and tags are known.

use wasmtime_wasi::{FsPerms, WasiCtx};

use super::meta::{Limits, RuleMeta, RuleSettingsResolved};
use crate::config::{Config, DispatchConfig, RulesConfig, WasiGrant};

/// The rule part of a [`Config`], resolved per rule.
#[derive(Debug, Clone)]
pub struct RulePolicy {
    rules: RulesConfig,
    dispatch: DispatchConfig,
}

impl Default for RulePolicy {
    fn default() -> Self {
        Self::new(&Config::default())
    }
}

impl RulePolicy {
    pub fn new(config: &Config) -> Self {
        let mut dispatch = config.dispatch.clone();
        if config.source.kind == crate::config::SourceKind::Replay && !config.source.realtime {
            // Replayed as fast as it reads, a rule's share of the time is
            // taken from no one, and a budget would make the alerts depend
            // on the machine's speed.
            dispatch.cpu_budget = std::time::Duration::ZERO;
        }
        RulePolicy { rules: config.rules.clone(), dispatch }
    }

    pub fn resolve(&self, meta: &RuleMeta) -> RuleSettingsResolved {
        let settings = self.rules.settings.get(&meta.id).cloned().unwrap_or_default();
        let disabled_by_list = self.rules.disable.iter().any(|entry| match entry.strip_prefix("tag:") {
            Some(tag) => meta.tags.iter().any(|t| t == tag),
            None => *entry == meta.id,
        });
        let enabled = settings.enabled.unwrap_or(!disabled_by_list);
        let d = &self.dispatch;
        let limits = Limits {
            call_timeout: settings.call_timeout.unwrap_or(d.call_timeout),
            deadline_clock: d.deadline_clock,
            cpu_budget: settings.cpu_budget.unwrap_or(d.cpu_budget),
            max_alerts_per_sec: d.max_alerts_per_sec,
            memory: settings.memory_limit.unwrap_or(d.memory_limit).as_u64() as usize,
            max_faults: d.max_faults,
            fault_window: d.fault_window,
            quarantine_initial: d.quarantine_initial,
            quarantine_max: d.quarantine_max,
        };
        let config_json = match &settings.config {
            Some(v) => serde_json::to_string(v).unwrap_or_else(|_| "{}".into()),
            None => "{}".into(),
        };
        RuleSettingsResolved { enabled, settings, limits, config_json }
    }
}

/// A WASI context giving exactly `grant` (clocks and random are always
/// present in WASI p2 contexts; no network is ever granted).
pub fn wasi_ctx(grant: &WasiGrant) -> wasmtime::Result<WasiCtx> {
    let mut b = WasiCtx::builder();
    // stderr only: stdout carries the alert stream, which a rule must not write into.
    if grant.stdio {
        b.inherit_stderr();
    }
    for name in &grant.env {
        if let Ok(v) = std::env::var(name) {
            b.env(name, v);
        }
    }
    for dir in &grant.read_dirs {
        let guest = dir.to_string_lossy();
        b.preopened_dir(dir, &*guest, FsPerms::ReadOnly)?;
    }
    Ok(b.build())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy(toml: &str) -> RulePolicy {
        let c: Config = toml::from_str(toml).unwrap();
        c.validate().unwrap();
        RulePolicy::new(&c)
    }

    fn meta(id: &str, tags: &[&str]) -> RuleMeta {
        RuleMeta { id: id.into(), tags: tags.iter().map(|t| t.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn per_rule_settings_override_the_dispatch_defaults() {
        let p = policy(
            r#"
            [rules.settings.discovery-burst]
            config = { threshold = 3, window_secs = 30 }
            call_timeout = "20ms"
            memory_limit = "16MiB"
            wasi = { stdio = true, env = ["TZ"] }
            [dispatch]
            call_timeout = "5ms"
            "#,
        );
        let r = p.resolve(&meta("discovery-burst", &[]));
        assert!(r.enabled);
        assert_eq!(r.config_json, r#"{"threshold":3,"window_secs":30}"#);
        assert_eq!(r.limits.call_timeout, Duration::from_millis(20));
        assert_eq!(r.limits.memory, 16 << 20);
        assert!(r.settings.wasi.unwrap().stdio);
        assert_eq!(p.resolve(&meta("other", &[])).limits.call_timeout, Duration::from_millis(5));
    }

    #[test]
    fn disable_by_id_and_tag_and_reenable() {
        let p = policy(
            r#"
            [rules]
            disable = ["tag:noisy", "a"]
            [rules.settings.c]
            enabled = true
            "#,
        );
        assert!(!p.resolve(&meta("a", &[])).enabled);
        assert!(!p.resolve(&meta("b", &["noisy"])).enabled);
        assert!(p.resolve(&meta("c", &["noisy"])).enabled);
        assert!(p.resolve(&meta("d", &["quiet"])).enabled);
    }
}
