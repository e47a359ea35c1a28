//! What a rule is, as data: what it says about itself ([`RuleMeta`], from
//! its `metadata` export, validated) and what the config gives it
//! ([`Limits`], [`RuleSettingsResolved`]).

use std::sync::Arc;
use std::time::Duration;

use vigil_event::KindSet;

use crate::config::RuleSettings;

/// What a rule says about itself, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleMeta {
    pub id: String,
    pub version: String,
    pub description: String,
    pub subscriptions: KindSet,
    /// Only events that carry a container (and `events-lost`) are sent.
    pub containers_only: bool,
    pub tags: Vec<String>,
    /// The component interprets rule files (`declarative.wasm`): it is not
    /// run as a rule itself, but instantiated with the directory's YAML files.
    pub interprets: bool,
    /// For an instance running rule files: what loaded, and the rule names
    /// its alerts may carry.
    pub files: Option<Arc<RuleFiles>>,
}

impl RuleMeta {
    /// The rule an alert that names `asked` is output under: rule files'
    /// alerts carry their rule's own name (Falco's `rule:`) when the
    /// instance loaded one of that name; every other alert, the rule's id.
    pub fn alerting(&self, asked: &str) -> crate::alert::AlertingRule<'_> {
        let name = match &self.files {
            Some(files) if files.names.contains(asked) => asked.to_string(),
            _ => self.id.clone(),
        };
        crate::alert::AlertingRule { name, version: &self.version, tags: &self.tags }
    }
}

/// What an interpreter instance loaded from the rule files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleFiles {
    pub report: vigil_rulelang::Report,
    /// Names of the loaded rules: an alert may name one of these as its rule.
    pub names: std::collections::HashSet<String>,
}

/// Limits and fault policy for one rule.
#[derive(Debug, Clone)]
pub struct Limits {
    pub call_timeout: Duration,
    /// What `call_timeout` counts.
    pub deadline_clock: crate::config::DeadlineClock,
    /// CPU time per second of wall time (see [`super::budget`]).
    pub cpu_budget: Duration,
    pub max_alerts_per_sec: u32,
    pub memory: usize,
    /// This many faults within `fault_window` quarantine the rule.
    pub max_faults: u32,
    pub fault_window: Duration,
    pub quarantine_initial: Duration,
    pub quarantine_max: Duration,
}

/// Settings for one rule once its id is known.
pub struct RuleSettingsResolved {
    pub enabled: bool,
    pub settings: RuleSettings,
    pub limits: Limits,
    pub config_json: String,
}
