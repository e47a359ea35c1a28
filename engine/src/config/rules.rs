//! `[rules]`: where rules come from, which to skip, and each rule's own
//! settings.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Directory of rule components (`*.wasm`), watched for changes.
    /// `--rules` overrides it.
    pub dir: Option<PathBuf>,
    /// Directories layered over `dir`, lowest first, also watched: a file
    /// in one replaces the file of the same name in `dir` or an earlier
    /// overlay, other files add rules. The image's bundled rules in `dir`,
    /// a ConfigMap over them. Each must exist; read at start.
    pub overlay_dirs: Vec<PathBuf>,
    /// Rules not to load: rule ids, or `tag:<tag>` for every rule with that tag.
    pub disable: Vec<String>,
    /// Per-rule settings, by rule id: `[rules.settings.<id>]`.
    pub settings: BTreeMap<String, RuleSettings>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleSettings {
    /// Load this rule even if `disable` names one of its tags (`true`), or
    /// never load it (`false`).
    pub enabled: Option<bool>,
    /// The rule's own config, any TOML value; passed to the rule's `init`
    /// as JSON.
    pub config: Option<toml::Value>,
    /// Deadline of one call, overriding `dispatch.call_timeout`.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Option<Duration>,
    /// CPU time per second, overriding `dispatch.cpu_budget`.
    #[serde(with = "humantime_serde")]
    pub cpu_budget: Option<Duration>,
    /// Memory cap, overriding `dispatch.memory_limit`.
    pub memory_limit: Option<ByteSize>,
    /// WASI access granted to this rule. Absent: none (deny by default).
    pub wasi: Option<WasiGrant>,
}

/// WASI access for one rule. Never network.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct WasiGrant {
    /// Let the rule write to the daemon's stderr (never stdout: that is the
    /// alert stream).
    pub stdio: bool,
    /// Environment variables the rule may read (names; values are the daemon's).
    pub env: Vec<String>,
    /// Host directories the rule may read, mounted at the same path, read-only.
    pub read_dirs: Vec<PathBuf>,
}

/// Whether `id` is a valid rule id: lowercase letters, digits and `-`, at
/// most 64 bytes, not starting or ending with `-`.
pub fn valid_rule_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.starts_with('-')
        && !id.ends_with('-')
}
